"""The decoding loop both engines share: pick a token, drop finished rows, extend the mask, one forward.

An engine only decides how the prompts are prefilled into a KV cache; from the first token on,
every engine decodes with `decode`, so their greedy outputs agree token for token.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Sequence

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache

from detoxedit.models.generation.options import Sampling


def left_pad(batch: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids):] = 1
    return input_ids, mask  # (batch, width) each


def forward_kwargs(model: PreTrainedModel, cache: DynamicCache) -> dict:
    """Keyword names differ across transformers versions: `cache` (>= 5.2x) or `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    kwargs = {"cache" if "cache" in params else "past_key_values": cache}
    if "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1  # only the last position's logits: (batch, 1, vocab), not (batch, seq, vocab)
    return kwargs


def decode(model, cache, logits, mask, last_pos, rows, max_new_tokens, stops, sampling, generator, row_context):
    """The token loop after the prefill: pick, drop finished rows, extend the mask, one forward."""
    extra = forward_kwargs(model, cache)
    device = mask.device
    active = torch.arange(len(rows))  # positions in the batch of the rows still running
    outputs: list[list[int]] = [[] for _ in range(len(rows))]
    for step in range(max_new_tokens):
        next_ids = pick(logits, sampling, generator)  # (active,)
        for row, token in zip(active.tolist(), next_ids.tolist()):
            outputs[row].append(token)
        keep = ~torch.isin(next_ids.cpu(), stops)
        if step == max_new_tokens - 1 or not keep.any():
            break
        if not keep.all():
            kept = keep.nonzero().squeeze(1)
            cache.batch_select_indices(kept.to(device))
            active, next_ids, mask, last_pos = active[kept], next_ids[kept.to(device)], mask[kept], last_pos[kept]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        last_pos = last_pos + 1
        logits = forward_last(model, next_ids[:, None], mask, last_pos[:, None], rows[active], row_context, extra)
    return outputs


def forward_last(model, input_ids, mask, positions, rows, row_context, extra) -> torch.Tensor:
    """One forward pass; returns last-position logits (rows, vocab)."""
    context = row_context(rows) if row_context is not None else contextlib.nullcontext()
    with context:
        out = model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
        )
    return out.logits[:, -1, :].float()


def pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
    """Argmax, or seeded temperature/top-p sampling when asked for."""
    if not sampling.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / max(sampling.temperature, 1e-5), dim=-1).cpu()
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cut = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(logits.device)
