"""Batched generation: greedy by default, left padding, KV cache, length-sorted batches.

Why not plain `model.generate`? Three things the paper's protocol needs that it makes awkward:
greedy must mean greedy (a checkpoint's `generation_config` may switch sampling on silently, which is
how the reference code's replies became random); finished rows should stop costing compute
(finished rows are dropped from the batch and from the KV cache); and per-row forward contexts
(e.g. several items' edited weights in one batch) need the list of rows still running at each step.

Replies are cut from the generated token ids, never by character counts, and come back in input order.

Two engines decode the same way and differ in the prefill and the KV cache (see `generate_ids`):
"fast" (default) runs the prompts without a single pad position into a cache preallocated for the
whole generation, and runs a prompt prefix that several rows with the same weights share (a
jailbreak template) once; "simple" runs one left-padded batch into a growing DynamicCache. Greedy outputs
of both equal one-at-a-time HF `generate` (tests/unit/test_generation_fast.py); timings and the
profile behind the design are in benchmarks/README.md.
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
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from detoxedit.models.chat import ChatFormat
from detoxedit.models.kernels import TieredKV, generation_kernels, plan_key_groups, tiered_kv_supported

logger = logging.getLogger(__name__)

# Turn-end markers of common chat templates; used as stop tokens when the tokenizer has them.
_CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

# A callable given the original indices of the rows still running (1-D LongTensor); it returns a
# context manager inside which the model's forward pass is run for exactly those rows. It may also
# have a method `row_keys(rows) -> list` saying which rows run under the same weights (equal keys):
# only such rows share the computation of a common prompt prefix. Without it, no two rows share.
RowContext = Callable[[torch.Tensor], ContextManager]

# A shared prompt prefix is computed once only when at least this many tokens are shared: below it,
# the extra forward passes cost more than the positions saved.
MIN_SHARED_PREFIX = 16

ENGINES = ("fast", "simple")


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. The default is greedy; sampling only when asked, and seeded."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Batching:
    """How prompts are grouped: a batch's KV cache positions stay under the token budget (see `plan_batches`)."""

    token_budget: int = 24_576
    max_batch_size: int = 64
    share_prefixes: bool = True  # fast engine: a prompt prefix shared by rows with the same weights runs once


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


def plan_batches(lengths: Sequence[int], max_new_tokens: int, batching: Batching, tiered: bool = False) -> list[list[int]]:
    """Groups indices, longest first, so each batch's KV positions stay under the token budget.

    A batch's KV positions are rows * (its longest prompt + new tokens) for one padded cache, or,
    with `tiered` (the fast engine's cache in tiers of similar lengths, see `plan_tiers`), the sum
    of that over its tiers.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        candidate = [lengths[i] for i in current] + [lengths[index]]
        positions = (tier_positions(candidate, max_new_tokens) if tiered
                     else len(candidate) * (candidate[0] + max_new_tokens))
        if current and (positions > batching.token_budget or len(current) >= batching.max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


# A tier of the KV cache costs a prefill of its own and an attention call per layer and decoding
# step; a split into tiers must save at least this many KV positions per extra tier. It also keeps
# rows that share a long template (similar lengths) in one tier, where their prefix is shared.
TIER_OVERHEAD_POSITIONS = 2048


def plan_tiers(lengths: Sequence[int], overhead: int | None = None) -> list[tuple[int, int]]:
    """Splits prompt lengths sorted longest first into tiers [lo, hi) with the fewest KV positions.

    Each tier is left-padded to its own longest prompt, so a tier costs rows * (its first length)
    plus `overhead` (default `TIER_OVERHEAD_POSITIONS`): the same dynamic programme as the decoding
    attention's key groups.
    """
    overhead = TIER_OVERHEAD_POSITIONS if overhead is None else overhead
    width = lengths[0] if lengths else 0
    groups = plan_key_groups([width - length for length in lengths], width, overhead) if len(lengths) > 1 else None
    return [(0, len(lengths))] if groups is None else [(lo, hi) for lo, hi, _ in groups]


def tier_positions(lengths: Sequence[int], max_new_tokens: int) -> int:
    """KV positions of a batch whose lengths are sorted longest first, kept in `plan_tiers` tiers."""
    return sum((hi - lo) * (lengths[lo] + max_new_tokens) for lo, hi in plan_tiers(lengths))


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
    engine: str = "fast",
) -> list[str]:
    """Generates one reply per user message, in input order.

    Args:
        prompts: user messages; rendered with `chat` (a ChatFormat or a mode name such as "raw").
        max_input_tokens: prompts longer than this keep their last tokens.
        row_context: see `RowContext`; rows are indices into `prompts`.
        engine: see `generate_ids`.
    """
    fmt = chat if isinstance(chat, ChatFormat) else ChatFormat(tokenizer, chat, system_prompt)
    encoded = [truncate_left(fmt.encode(p), max_input_tokens) for p in prompts]
    token_lists = generate_ids(
        model, tokenizer, encoded, max_new_tokens,
        sampling=sampling, batching=batching, progress=progress, row_context=row_context,
        engine=engine,
    )
    stops = stop_token_ids(model, tokenizer)
    return [fmt.cut_reply(decode_reply(tokenizer, ids, stops)) for ids in token_lists]


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
    engine: str = "fast",
) -> list[list[int]]:
    """The engine: new token ids per prompt (including a final stop token when one was produced).

    Args:
        engine: "fast" (default) prefills without pad positions into a preallocated KV cache (see
            `_prefill_staircase`); "simple" prefills one left-padded batch into a growing DynamicCache.
            Both decode the same way. "simple" stays for comparison, and is what models whose KV
            layers are not plain (sliding windows) always get.
    """
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("every prompt must have at least one token")
    if engine not in ENGINES:
        raise ValueError(f"unknown generation engine {engine!r}; choose one of {', '.join(ENGINES)}")
    stops = torch.tensor(sorted(stop_token_ids(model, tokenizer)), dtype=torch.long)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])
    generator = torch.Generator().manual_seed(sampling.seed)
    results: list[list[int]] = [[] for _ in prompt_ids]
    lengths = [len(ids) for ids in prompt_ids]
    tiered = engine == "fast" and _tiers_apply(model, max(lengths) + max_new_tokens)
    batches = plan_batches(lengths, max_new_tokens, batching, tiered)
    with tqdm(total=len(prompt_ids), desc="generate", unit="reply", disable=not progress or len(batches) < 2) as bar:
        for batch in batches:
            rows = torch.tensor(batch, dtype=torch.long)
            new_ids = _generate_batch(
                model, [prompt_ids[i] for i in batch], rows, max_new_tokens, stops, pad_id,
                sampling, generator, row_context, engine, batching.share_prefixes,
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
    engine: str = "fast",
    share_prefixes: bool = True,
) -> list[list[int]]:
    """Greedy/sampled decoding of one batch; finished rows leave the batch and the cache."""
    fast = engine == "fast" and _preallocatable(model, max(map(len, batch)) + max_new_tokens)
    with generation_kernels(model) if fast else contextlib.nullcontext():
        if fast:
            order, cache, logits, last_pos = _prefill_fast(model, batch, rows, max_new_tokens, row_context, pad_id,
                                                           share_prefixes and not sampling.do_sample)
            _, mask = _left_pad([batch[i] for i in order], pad_id)
            cache_rows = rows[order]
            mask = mask.to(logits.device)
        else:
            order = None
            cache, logits, mask, last_pos = _prefill_padded(model, batch, rows, pad_id, row_context)
            cache_rows = rows
        outputs = _decode(model, cache, logits, mask, last_pos, cache_rows, max_new_tokens, stops, sampling, generator,
                          row_context)
    if order is None:
        return outputs
    in_order: list[list[int]] = [[] for _ in batch]
    for position, index in enumerate(order):
        in_order[index] = outputs[position]
    return in_order


def _prefill_fast(model, batch, rows, max_new_tokens, row_context, pad_id, share: bool):
    """The fast engine's prefill: per tier of similar prompt lengths (`plan_tiers`, when the model's
    attention reads tiers), a staircase with shared prefixes (`plan_prefill`, when `share`; sampled
    draws follow the row order, which sharing changes, so sampling does not share).

    Returns (cache row order as indices into `batch`, cache, last-position logits, last positions).
    """
    by_length = sorted(range(len(batch)), key=lambda i: (-len(batch[i]), i))
    tiers = [(0, len(batch))]
    if _tiers_apply(model, len(batch[by_length[0]]) + max_new_tokens):
        tiers = plan_tiers([len(batch[i]) for i in by_length])
    order: list[int] = []
    caches, logits, last_pos = [], [], []
    for lo, hi in tiers:
        members = by_length[lo:hi]
        tier_rows = rows[members]
        keys = _row_keys(row_context, tier_rows) if share else list(range(len(members)))
        plan = plan_prefill([batch[i] for i in members], keys)
        ordered = [batch[members[i]] for i in plan.order]
        cache, tier_logits, _, tier_last = _prefill_staircase(
            model, ordered, tier_rows[plan.order], plan.segments, max_new_tokens, row_context, pad_id)
        order += [members[i] for i in plan.order]
        caches.append(cache)
        logits.append(tier_logits)
        last_pos.append(tier_last)
    cache = caches[0] if len(caches) == 1 else _tiered_cache(model, caches, len(batch[by_length[0]]))
    return order, cache, torch.cat(logits), torch.cat(last_pos)


def _row_keys(row_context: RowContext | None, rows: torch.Tensor) -> list:
    """Which rows run under the same weights (see `RowContext`): all of them without a row context."""
    if row_context is None:
        return [0] * len(rows)
    keys = getattr(row_context, "row_keys", None)
    return list(keys(rows)) if keys is not None else list(range(len(rows)))


def _decode(model, cache, logits, mask, last_pos, rows, max_new_tokens, stops, sampling, generator, row_context):
    """The token loop after the prefill: pick, drop finished rows, extend the mask, one forward."""
    extra = forward_kwargs(model, cache)
    device = mask.device
    active = torch.arange(len(rows))  # positions in the batch of the rows still running
    outputs: list[list[int]] = [[] for _ in range(len(rows))]
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


def _prefill_padded(model, batch, rows, pad_id, row_context):
    """The simple prefill: one left-padded forward over the whole batch, into a DynamicCache."""
    device = next(model.parameters()).device
    input_ids, mask = (t.to(device) for t in _left_pad(batch, pad_id))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, width)
    cache = DynamicCache(config=model.config)
    logits = _forward(model, input_ids, mask, positions, rows, row_context, forward_kwargs(model, cache))
    return cache, logits, mask, positions[:, -1]


# ---------------------------------------------------------------- the fast engine: staircase prefill, preallocated KV


class _PreallocatedLayer(DynamicLayer):
    """One layer's KV in a buffer sized for the whole generation: `update` writes in place.

    DynamicLayer concatenates at every step, copying the whole cache (all layers x rows x prompt): at
    32 rows of 1,000-token prompts that is ~3 GB of memory traffic per generated token. Here keys and
    values are views of the first `rows` rows and `length` positions of a (batch, kv_heads, capacity,
    head_dim) buffer, allocated at the first update (which must hold every row); attention reads the
    same numbers, so outputs are unchanged.
    """

    def __init__(self, capacity: int, total_rows: int | None = None) -> None:
        super().__init__()
        self.capacity, self.total_rows = capacity, total_rows
        self.first, self.rows, self.length = 0, 0, 0  # the window attention sees: rows first.. first+rows

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        rows = self.total_rows or key_states.shape[0]
        # Empty, not zeros: attention only reads positions below `length`, each written first (prefill,
        # shared-prefix copies) or zeroed by `left_align` (pad slots: masked, but kept finite for the kernels).
        self._keys = key_states.new_empty((rows, key_states.shape[1], self.capacity, key_states.shape[3]))
        self._values = value_states.new_empty((rows, value_states.shape[1], self.capacity, value_states.shape[3]))
        self.is_initialized = True

    def _views(self) -> None:
        rows = slice(self.first, self.first + self.rows)
        self.keys = self._keys[rows, :, : self.length]  # (rows, kv_heads, length, head_dim)
        self.values = self._values[rows, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[-2]:  # more tokens than planned for: grow (never happens in `generate`)
            self._keys, self._values = (_resized(t, end, self.length) for t in (self._keys, self._values))
        rows = slice(self.first, self.first + key_states.shape[0])
        self._keys[rows, :, self.length:end] = key_states
        self._values[rows, :, self.length:end] = value_states
        self.rows = key_states.shape[0]
        self.length = end
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def window(self, first: int, rows: int, length: int) -> None:
        """Prefill: the next forward runs rows first..first+rows, which hold positions 0..length-1 (no copy)."""
        self.first, self.rows, self.length = first, rows, length
        if self.is_initialized:
            self._views()

    def copy_prefix(self, first: int, end: int, source: "_PreallocatedLayer", source_row: int, length: int) -> None:
        """Rows first..end-1 get positions 0..length-1 of `source`'s row `source_row` (a shared prefix)."""
        if not self.is_initialized:
            self.lazy_initialization(source._keys[:1], source._values[:1])
        self._keys[first:end, :, :length] = source._keys[source_row, :, :length]
        self._values[first:end, :, :length] = source._values[source_row, :, :length]

    def left_align(self, lengths: Sequence[int]) -> None:
        """Prefill wrote row r at positions 0..len_r-1; decoding wants it left-padded to the widest."""
        width = max(lengths)
        self.first, self.rows, self.length = 0, self._keys.shape[0], width
        for row, length in enumerate(lengths):
            if length < width:
                for buffer in (self._keys, self._values):
                    buffer[row, :, width - length:width] = buffer[row, :, :length].clone()
                    buffer[row, :, :width - length] = 0.0  # masked out; zeros keep the kernels finite
        self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps rows `indices` (finished rows leave the cache) by moving them down in place.

        Why in place: gathering the kept rows into a new buffer copied the whole filled cache twice
        (gather, then into a buffer of full capacity) every time a row finished, a third of the decode
        time in the profile. Here only the rows above the first finished one move, once each.
        """
        kept = [self.first + int(row) for row in indices.tolist()]
        if kept == sorted(kept):
            for new, old in enumerate(kept):
                if new != old:  # new < old: the destination row has already been moved, or is dropped
                    self._keys[new, :, : self.length] = self._keys[old, :, : self.length]
                    self._values[new, :, : self.length] = self._values[old, :, : self.length]
        else:  # a reordering (never from `_decode`): gather first, then write
            for buffer, view in ((self._keys, self.keys), (self._values, self.values)):
                buffer[: len(kept), :, : self.length] = view.index_select(0, indices.to(view.device))
        self.first, self.rows = 0, len(kept)
        self._views()


def _resized(filled: torch.Tensor, capacity: int, length: int) -> torch.Tensor:
    """A (rows, heads, capacity, dim) buffer whose first `length` positions hold `filled`'s."""
    out = filled.new_empty((filled.shape[0], filled.shape[1], capacity, filled.shape[3]))
    out[:, :, :length] = filled[:, :, :length]
    return out


def _preallocatable(model: PreTrainedModel, capacity: int) -> bool:
    """Whether the fast engine's cache fits the model: plain KV layers, or sliding windows wider than
    `capacity` (prompt + new tokens), which never slide. Others (recurrent, windows that would slide)
    use the simple engine."""
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - an exotic config: the simple engine handles it
        return False
    return bool(layers) and all(
        type(layer) is DynamicLayer
        or (type(layer) is DynamicSlidingWindowLayer and layer.sliding_window >= capacity)
        for layer in layers
    )


def _tiers_apply(model: PreTrainedModel, capacity: int) -> bool:
    """Whether the fast engine keeps a batch's KV cache in tiers (see `kernels.TieredKV`)."""
    return tiered_kv_supported(model) and _preallocatable(model, capacity)


class _TieredLayer(DynamicLayer):
    """One layer's KV for decoding, kept in tiers of rows with similar prompt lengths.

    Each tier is a `_PreallocatedLayer` left-padded to its own longest prompt (width w); the batch
    stands for one cache left-padded to the widest tier (W), so a tier's first key is global key
    W - w. `update` writes each tier's rows and returns `TieredKV` keys and values, which the
    decoding attention of `kernels.skip_padded_keys` reads tier by tier. Rows are the tiers' rows in
    order; finished rows leave their tier, and empty tiers leave the layer.
    """

    def __init__(self, tiers: Sequence[_PreallocatedLayer], width: int) -> None:
        super().__init__()
        self.tiers = list(tiers)
        self.length = width  # the widest tier's prompt width, then + 1 per decoding step
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[TieredKV, TieredKV]:
        self.length += key_states.shape[-2]
        keys, values, lo = [], [], 0
        for tier in self.tiers:
            hi = lo + tier.rows
            tier_keys, tier_values = tier.update(key_states[lo:hi], value_states[lo:hi])
            offset = self.length - tier_keys.shape[-2]
            keys.append((lo, hi, offset, tier_keys))
            values.append((lo, hi, offset, tier_values))
            lo = hi
        shape = (lo, key_states.shape[1], self.length, key_states.shape[3])
        return TieredKV(tuple(keys), shape), TieredKV(tuple(values), shape)

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps rows `indices` (sorted): each tier keeps its own, and tiers left empty are dropped."""
        kept = indices.tolist()
        tiers, lo = [], 0
        for tier in self.tiers:
            hi = lo + tier.rows
            local = [row - lo for row in kept if lo <= row < hi]
            if local:
                if len(local) < tier.rows:
                    tier.batch_select_indices(torch.tensor(local, dtype=torch.long))
                tiers.append(tier)
            lo = hi
        self.tiers = tiers


def _tiered_cache(model: PreTrainedModel, tiers: Sequence[DynamicCache], width: int) -> DynamicCache:
    """One cache over the rows of several prefilled tier caches, in order; `width` is the longest prompt."""
    cache = DynamicCache(config=model.config)
    cache.layers = [_TieredLayer([tier.layers[i] for tier in tiers], width) for i in range(len(cache.layers))]
    return cache


@dataclass(frozen=True)
class PrefillPlan:
    """How a batch is prefilled: cache row r holds prompt `order[r]`; each segment (lo, hi, start) is
    a run of cache rows, longest prompt first, prefilled as one staircase from position `start`. A
    segment with start > 0 shares its rows' first `start` tokens, computed once and copied in."""

    order: list[int]
    segments: list[tuple[int, int, int]]


def plan_prefill(batch: Sequence[list[int]], keys: Sequence, min_shared: int = MIN_SHARED_PREFIX) -> PrefillPlan:
    """Groups prompts that share a long prefix under the same weights (equal `keys`).

    Why: SafeEdit inputs reuse a few long jailbreak templates with different questions, so many
    prompts in a batch share hundreds of leading tokens. Prompts sorted by (key, tokens) put those
    next to each other, and `_best_groups` splits that order into the runs that save the most
    positions (so a long shared template is not cut down to a short common header). Rows in no
    run form one plain staircase from position 0.
    """
    key_ids = {key: number for number, key in enumerate(dict.fromkeys(keys))}
    by_content = sorted(range(len(batch)), key=lambda i: (key_ids[keys[i]], batch[i]))
    groups = _best_groups([batch[i] for i in by_content], [key_ids[keys[i]] for i in by_content], min_shared)
    alone = [by_content[lo] for lo, hi, _ in groups if hi - lo == 1]
    runs = [([by_content[k] for k in range(lo, hi)], shared) for lo, hi, shared in groups if hi - lo > 1]
    runs = ([(alone, 0)] if alone else []) + runs
    order: list[int] = []
    segments: list[tuple[int, int, int]] = []
    for members, shared in runs:
        members = sorted(members, key=lambda i: (-len(batch[i]), i))  # the staircase wants longest first
        segments.append((len(order), len(order) + len(members), shared))
        order += members
    return PrefillPlan(order, segments)


def _best_groups(prompts: Sequence[list[int]], keys: Sequence[int], min_shared: int) -> list[tuple[int, int, int]]:
    """Splits sorted prompts into runs [lo, hi) sharing `shared` leading tokens, saving the most positions.

    A run of m prompts sharing s tokens saves (m - 1) * s positions; a dynamic programme over the
    sorted order finds the best split (n <= max_batch_size, so O(n^2) is nothing). Shared prefixes
    stop one token short of a run's shortest prompt, so every row still computes its last position.
    """
    common = [0] + [_common_prefix(a, b) if ka == kb else 0
                    for a, b, ka, kb in zip(prompts, prompts[1:], keys, keys[1:])]  # with the previous prompt
    n = len(prompts)
    best, start, shared_by = [0] * (n + 1), [0] * (n + 1), [0] * (n + 1)  # for the first j prompts: saving, last run
    for j in range(1, n + 1):
        best[j], start[j], shared_by[j] = best[j - 1], j - 1, 0  # prompt j-1 alone
        shared = len(prompts[j - 1]) - 1
        for i in range(j - 1, 0, -1):  # the run i-1 .. j-1
            shared = min(shared, common[i], len(prompts[i - 1]) - 1)
            if shared < min_shared:
                break
            if best[i - 1] + (j - i) * shared > best[j]:
                best[j], start[j], shared_by[j] = best[i - 1] + (j - i) * shared, i - 1, shared
    groups, hi = [], n
    while hi > 0:
        groups.append((start[hi], hi, shared_by[hi]))
        hi = start[hi]
    return groups[::-1]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    length = 0
    for x, y in zip(a, b):
        if x != y:
            break
        length += 1
    return length


def _preallocated_cache(model: PreTrainedModel, rows: int, capacity: int) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [_PreallocatedLayer(capacity, rows) for _ in cache.layers]
    return cache


def _prefill_staircase(model, batch, rows, segments, max_new_tokens, row_context, pad_id):
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
    cache = _preallocated_cache(model, len(batch), max(lengths) + max_new_tokens)
    _shared_prefixes(model, cache, batch, rows, segments, row_context)
    extra = forward_kwargs(model, cache)
    logits: torch.Tensor | None = None  # (batch, vocab) once the first chunk has run
    for lo, hi, start in segments:
        logits = _staircase(model, cache, extra, batch[lo:hi], lo, start, rows[lo:hi], row_context, logits, len(batch))
    for layer in cache.layers:
        layer.left_align(lengths)
    _, mask = _left_pad(batch, pad_id)
    last_pos = torch.tensor([length - 1 for length in lengths], dtype=torch.long, device=device)
    return cache, logits, mask.to(device), last_pos


def _shared_prefixes(model, cache, batch, rows, segments, row_context) -> None:
    """Runs each segment's shared prefix once (all prefixes as one staircase, one row each, in a
    scratch cache) and copies its keys and values into every row of the segment."""
    shared = [(lo, hi, start) for lo, hi, start in segments if start > 0]
    if not shared:
        return
    shared.sort(key=lambda segment: -segment[2])  # longest prefix first
    scratch = _preallocated_cache(model, len(shared), shared[0][2])
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
        chunk_logits = _forward(model, chunk, mask, positions, rows[:count], row_context, extra)  # (count, vocab)
        if logits is None:
            logits = chunk_logits.new_empty((total_rows, chunk_logits.shape[-1]))
        finished = [row for row in range(count) if lengths[row] == end]
        logits[[lo + row for row in finished]] = chunk_logits[finished]
        start = end
    return logits


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
