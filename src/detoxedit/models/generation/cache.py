"""The fast engine's KV caches: one buffer preallocated for the whole generation, kept in tiers.

`PreallocatedLayer` writes keys and values in place instead of concatenating at every step;
`TieredLayer` keeps rows of similar prompt lengths in buffers of their own (`kernels.TieredKV`).
Both stand in for transformers' `DynamicLayer`, so the model's own attention code runs unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from detoxedit.models.generation.kernels import TieredKV, tiered_kv_supported


class PreallocatedLayer(DynamicLayer):
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
            self._keys, self._values = (resized(t, end, self.length) for t in (self._keys, self._values))
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

    def copy_prefix(self, first: int, end: int, source: "PreallocatedLayer", source_row: int, length: int) -> None:
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
        (gather, then into a buffer of full capacity) every time a row finished, a large share of the
        decoding time in the profile (benchmarks/README.md). Here only the rows above the first finished one move, once each.
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


def resized(filled: torch.Tensor, capacity: int, length: int) -> torch.Tensor:
    """A (rows, heads, capacity, dim) buffer whose first `length` positions hold `filled`'s."""
    out = filled.new_empty((filled.shape[0], filled.shape[1], capacity, filled.shape[3]))
    out[:, :, :length] = filled[:, :, :length]
    return out


def preallocatable(model: PreTrainedModel, capacity: int) -> bool:
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


def tiers_apply(model: PreTrainedModel, capacity: int) -> bool:
    """Whether the fast engine keeps a batch's KV cache in tiers (see `kernels.TieredKV`)."""
    return tiered_kv_supported(model) and preallocatable(model, capacity)


class TieredLayer(DynamicLayer):
    """One layer's KV for decoding, kept in tiers of rows with similar prompt lengths.

    Each tier is a `PreallocatedLayer` left-padded to its own longest prompt (width w); the batch
    stands for one cache left-padded to the widest tier (W), so a tier's first key is global key
    W - w. `update` writes each tier's rows and returns `TieredKV` keys and values, which the
    decoding attention of `kernels.skip_padded_keys` reads tier by tier. Rows are the tiers' rows in
    order; finished rows leave their tier, and empty tiers leave the layer.
    """

    def __init__(self, tiers: Sequence[PreallocatedLayer], width: int) -> None:
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


def tiered_cache(model: PreTrainedModel, tiers: Sequence[DynamicCache], width: int) -> DynamicCache:
    """One cache over the rows of several prefilled tier caches, in order; `width` is the longest prompt."""
    cache = DynamicCache(config=model.config)
    cache.layers = [TieredLayer([tier.layers[i] for tier in tiers], width) for i in range(len(cache.layers))]
    return cache


def preallocated_cache(model: PreTrainedModel, rows: int, capacity: int) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer(capacity, rows) for _ in cache.layers]
    return cache
