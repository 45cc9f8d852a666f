"""Batched generation: greedy by default, left padding, KV cache, length-sorted batches.

Why not plain `model.generate`? Three things the paper's protocol needs that it makes awkward:
greedy must mean greedy (a checkpoint's `generation_config` may switch sampling on silently, which is
how the reference code's replies became random); finished rows should stop costing compute
(finished rows are dropped from the batch and from the KV cache); and per-row forward contexts
(e.g. several items' edited weights in one batch) need the list of rows still running at each step.

Replies are cut from the generated token ids, never by character counts, and come back in input order.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicCache

from detoxedit.models.chat import ChatFormat

logger = logging.getLogger(__name__)

# Turn-end markers of common chat templates; used as stop tokens when the tokenizer has them.
_CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

# A callable given the original indices of the rows still running (1-D LongTensor); it returns a
# context manager inside which the model's forward pass is run for exactly those rows.
RowContext = Callable[[torch.Tensor], ContextManager]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. The default is greedy; sampling only when asked, and seeded."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Batching:
    """How prompts are grouped: rows * (prompt length + new tokens) stays under the token budget."""

    token_budget: int = 24_576
    max_batch_size: int = 64


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """EOS ids from the tokenizer and the generation config, plus chat turn-end tokens it knows."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, config_eos):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _CHAT_END_TOKENS if token in vocab)
    return ids


def truncate_left(ids: list[int], max_tokens: int | None) -> list[int]:
    """Keeps the END of a prompt: the question and the assistant header sit at the end."""
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    return ids[-max_tokens:]


def plan_batches(lengths: Sequence[int], max_new_tokens: int, batching: Batching) -> list[list[int]]:
    """Groups indices, longest first, so each batch's padded size stays under the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = (lengths[current[0]] if current else lengths[index]) + max_new_tokens
        if current and ((len(current) + 1) * width > batching.token_budget or len(current) >= batching.max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    *,
    chat: ChatFormat | str = "auto",
    system_prompt: str | None = None,
    max_input_tokens: int | None = 1024,
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    progress: bool = True,
    row_context: RowContext | None = None,
) -> list[str]:
    """Generates one reply per user message, in input order.

    Args:
        prompts: user messages; rendered with `chat` (a ChatFormat or a mode name such as "raw").
        max_input_tokens: prompts longer than this keep their last tokens.
        row_context: see `RowContext`; rows are indices into `prompts`.
    """
    fmt = chat if isinstance(chat, ChatFormat) else ChatFormat(tokenizer, chat, system_prompt)
    encoded = [truncate_left(fmt.encode(p), max_input_tokens) for p in prompts]
    token_lists = generate_ids(
        model, tokenizer, encoded, max_new_tokens,
        sampling=sampling, batching=batching, progress=progress, row_context=row_context,
    )
    return [decode_reply(tokenizer, ids, stop_token_ids(model, tokenizer)) for ids in token_lists]


def decode_reply(tokenizer: PreTrainedTokenizerBase, ids: list[int], stop_ids: set[int]) -> str:
    """Decodes generated ids up to (not including) the first stop token."""
    for position, token in enumerate(ids):
        if token in stop_ids:
            ids = ids[:position]
            break
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[list[int]],
    max_new_tokens: int,
    *,
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    progress: bool = True,
    row_context: RowContext | None = None,
) -> list[list[int]]:
    """The engine: new token ids per prompt (including a final stop token when one was produced)."""
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("every prompt must have at least one token")
    stops = torch.tensor(sorted(stop_token_ids(model, tokenizer)), dtype=torch.long)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])
    generator = torch.Generator().manual_seed(sampling.seed)
    results: list[list[int]] = [[] for _ in prompt_ids]
    batches = plan_batches([len(ids) for ids in prompt_ids], max_new_tokens, batching)
    with tqdm(total=len(prompt_ids), desc="generate", unit="reply", disable=not progress or len(batches) < 2) as bar:
        for batch in batches:
            rows = torch.tensor(batch, dtype=torch.long)
            new_ids = _generate_batch(
                model, [prompt_ids[i] for i in batch], rows, max_new_tokens, stops, pad_id,
                sampling, generator, row_context,
            )
            for index, ids in zip(batch, new_ids):
                results[index] = ids
            bar.update(len(batch))
    return results


def _left_pad(batch: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
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


@torch.inference_mode()
def _generate_batch(
    model: PreTrainedModel,
    batch: Sequence[list[int]],
    rows: torch.Tensor,
    max_new_tokens: int,
    stops: torch.Tensor,
    pad_id: int,
    sampling: Sampling,
    generator: torch.Generator,
    row_context: RowContext | None,
) -> list[list[int]]:
    """Greedy/sampled decoding of one batch; finished rows leave the batch and the cache."""
    device = next(model.parameters()).device
    input_ids, mask = (t.to(device) for t in _left_pad(batch, pad_id))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, width)
    cache = DynamicCache(config=model.config)
    extra = forward_kwargs(model, cache)
    active = torch.arange(len(batch))  # positions in `batch` of the rows still running
    outputs: list[list[int]] = [[] for _ in batch]
    logits = _forward(model, input_ids, mask, positions, rows[active], row_context, extra)
    last_pos = positions[:, -1]
    for step in range(max_new_tokens):
        next_ids = _pick(logits, sampling, generator)  # (active,)
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
        logits = _forward(model, next_ids[:, None], mask, last_pos[:, None], rows[active], row_context, extra)
    return outputs


def _forward(model, input_ids, mask, positions, rows, row_context, extra) -> torch.Tensor:
    """One forward pass; returns last-position logits (rows, vocab)."""
    context = row_context(rows) if row_context is not None else contextlib.nullcontext()
    with context:
        out = model(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra
        )
    return out.logits[:, -1, :].float()


def _pick(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> torch.Tensor:
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
