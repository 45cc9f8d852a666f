"""The fast engine: prompts prefilled without a single pad position, into a preallocated KV cache.

Why it exists (profiles and timings in benchmarks/README.md): a left-padded batch computes every
pad position of every layer, and a growing cache copies itself at every step. Here each tier of
similar prompt lengths (`planning.plan_tiers`) is prefilled as a staircase of dense chunks, a long
prompt prefix shared by rows under the same weights (a jailbreak template) runs once
(`planning.plan_prefill`), and keys and values are written in place (`cache.PreallocatedLayer`).
Decoding is the shared loop (`decoding.decode`) inside `kernels.generation_kernels`. Models whose
KV layers are not plain (sliding windows that would slide) get the simple engine instead.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedModel

from detoxedit.models.generation.cache import preallocatable, preallocated_cache, tiered_cache, tiers_apply
from detoxedit.models.generation.decoding import decode, forward_kwargs, forward_last, left_pad
from detoxedit.models.generation.kernels import generation_kernels
from detoxedit.models.generation.options import RowContext, Sampling
from detoxedit.models.generation.planning import plan_prefill, plan_tiers
from detoxedit.models.generation.simple import SimpleEngine


class FastEngine:
    """Staircase prefill (tiers, shared prefixes) into a preallocated cache, then the shared decoding loop."""

    name = "fast"

    def plans_tiers(self, model: PreTrainedModel, capacity: int) -> bool:
        """Whether batches are planned in tiers of similar lengths (the budget counts tiered positions)."""
        return tiers_apply(model, capacity)

    @torch.inference_mode()
    def run_batch(self, model: PreTrainedModel, batch: Sequence[list[int]], rows: torch.Tensor, max_new_tokens: int,
                  stops: torch.Tensor, pad_id: int, sampling: Sampling, generator: torch.Generator,
                  row_context: RowContext | None, share_prefixes: bool = True) -> list[list[int]]:
        """New token ids of each prompt of `batch`, in batch order."""
        if not preallocatable(model, max(map(len, batch)) + max_new_tokens):
            return SimpleEngine().run_batch(model, batch, rows, max_new_tokens, stops, pad_id, sampling, generator,
                                            row_context)
        with generation_kernels(model):
            order, cache, logits, last_pos = prefill_fast(model, batch, rows, max_new_tokens, row_context, pad_id,
                                                          share_prefixes and not sampling.do_sample)
            _, mask = left_pad([batch[i] for i in order], pad_id)
            outputs = decode(model, cache, logits, mask.to(logits.device), last_pos, rows[order], max_new_tokens, stops,
                             sampling, generator, row_context)
        in_order: list[list[int]] = [[] for _ in batch]
        for position, index in enumerate(order):
            in_order[index] = outputs[position]
        return in_order


def prefill_fast(model, batch, rows, max_new_tokens, row_context, pad_id, share: bool):
    """The fast engine's prefill: per tier of similar prompt lengths (`plan_tiers`, when the model's
    attention reads tiers), a staircase with shared prefixes (`plan_prefill`, when `share`; sampled
    draws follow the row order, which sharing changes, so sampling does not share).

    Returns (cache row order as indices into `batch`, cache, last-position logits, last positions).
    """
    by_length = sorted(range(len(batch)), key=lambda i: (-len(batch[i]), i))
    tiers = [(0, len(batch))]
    if tiers_apply(model, len(batch[by_length[0]]) + max_new_tokens):
        tiers = plan_tiers([len(batch[i]) for i in by_length])
    order: list[int] = []
    caches, logits, last_pos = [], [], []
    for lo, hi in tiers:
        members = by_length[lo:hi]
        tier_rows = rows[members]
        keys = row_keys(row_context, tier_rows) if share else list(range(len(members)))
        plan = plan_prefill([batch[i] for i in members], keys)
        ordered = [batch[members[i]] for i in plan.order]
        cache, tier_logits, _, tier_last = prefill_staircase(
            model, ordered, tier_rows[plan.order], plan.segments, max_new_tokens, row_context, pad_id)
        order += [members[i] for i in plan.order]
        caches.append(cache)
        logits.append(tier_logits)
        last_pos.append(tier_last)
    cache = caches[0] if len(caches) == 1 else tiered_cache(model, caches, len(batch[by_length[0]]))
    return order, cache, torch.cat(logits), torch.cat(last_pos)


def row_keys(row_context: RowContext | None, rows: torch.Tensor) -> list:
    """Which rows run under the same weights (see `RowContext`): all of them without a row context."""
    if row_context is None:
        return [0] * len(rows)
    keys = getattr(row_context, "row_keys", None)
    return list(keys(rows)) if keys is not None else list(range(len(rows)))


def prefill_staircase(model, batch, rows, segments, max_new_tokens, row_context, pad_id):
    """Prefills a batch without computing a single pad position, into a preallocated KV cache.

    Why: a left-padded batch computes every pad position of every layer and attends with an explicit
    mask (so the causal half cannot be skipped); with prompts of 40..1,000 tokens in one batch, most of
    the work is padding. Here each segment's rows (longest first) run in chunks between consecutive
    distinct prompt lengths: chunk k runs positions [l_(k-1), l_k) of the rows at least l_k long,
    which are the segment's first rows, so every chunk is dense and writes a dense slice of the
    buffer. A segment whose rows share their first `start` tokens gets those positions from one
    computation of the prefix (`_shared_prefixes`). At the end, rows are shifted to the left-padded
    layout decoding uses.

    Expects `batch` in plan order (see `plan_prefill`). Returns (cache, last-position logits, 2-D
    mask, last positions).
    """
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in batch]
    cache = preallocated_cache(model, len(batch), max(lengths) + max_new_tokens)
    _shared_prefixes(model, cache, batch, rows, segments, row_context)
    extra = forward_kwargs(model, cache)
    logits: torch.Tensor | None = None  # (batch, vocab) once the first chunk has run
    for lo, hi, start in segments:
        logits = _staircase(model, cache, extra, batch[lo:hi], lo, start, rows[lo:hi], row_context, logits, len(batch))
    for layer in cache.layers:
        layer.left_align(lengths)
    _, mask = left_pad(batch, pad_id)
    last_pos = torch.tensor([length - 1 for length in lengths], dtype=torch.long, device=device)
    return cache, logits, mask.to(device), last_pos


def _shared_prefixes(model, cache, batch, rows, segments, row_context) -> None:
    """Runs each segment's shared prefix once (all prefixes as one staircase, one row each, in a
    scratch cache) and copies its keys and values into every row of the segment."""
    shared = [(lo, hi, start) for lo, hi, start in segments if start > 0]
    if not shared:
        return
    shared.sort(key=lambda segment: -segment[2])  # longest prefix first
    scratch = preallocated_cache(model, len(shared), shared[0][2])
    prefixes = [batch[lo][:start] for lo, _, start in shared]
    first_rows = rows[[lo for lo, _, _ in shared]]
    _staircase(model, scratch, forward_kwargs(model, scratch), prefixes, 0, 0, first_rows, row_context, None, len(shared))
    for source, (lo, hi, start) in enumerate(shared):
        for layer, scratch_layer in zip(cache.layers, scratch.layers):
            layer.copy_prefix(lo, hi, scratch_layer, source, start)


def _staircase(model, cache, extra, batch, lo, start, rows, row_context, logits, total_rows):
    """Prefills cache rows lo.. (prompts `batch`, longest first, positions [0, start) already there)
    chunk by chunk up to each prompt's end; writes each row's last-position logits into `logits`."""
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in batch]
    for end in sorted(set(lengths)):
        count = sum(1 for length in lengths if length >= end)  # the first `count` rows reach `end`
        for layer in cache.layers:
            layer.window(lo, count, start)
        chunk = torch.tensor([ids[start:end] for ids in batch[:count]], dtype=torch.long, device=device)
        positions = torch.arange(start, end, device=device).expand(count, -1)  # (count, end - start)
        mask = torch.ones((count, end), dtype=torch.long, device=device)
        chunk_logits = forward_last(model, chunk, mask, positions, rows[:count], row_context, extra)  # (count, vocab)
        if logits is None:
            logits = chunk_logits.new_empty((total_rows, chunk_logits.shape[-1]))
        finished = [row for row in range(count) if lengths[row] == end]
        logits[[lo + row for row in finished]] = chunk_logits[finished]
        start = end
    return logits
