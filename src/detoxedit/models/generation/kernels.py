"""Faster kernels for the shapes generation runs, with the same maths: two scoped switches.

1. `few_row_linear` (CPU only): `F.linear(x, W)` computes `x @ W^T`. With few rows in `x` (a
decoding step has one row per sequence; the last chunks of a staircase prefill have a handful of
positions), the CPU BLAS that PyTorch uses runs it far below memory speed, while the same products
written as `(W @ x^T)^T` run several times faster, for some row counts only. `weight_first_rows`
encodes the table measured on this project's CPU (benchmarks/README.md has the numbers), so it is
applied on CPU devices only; on a GPU every call keeps `F.linear`. It intercepts the function, not
a module type, so it works for every architecture that calls `F.linear` (GPT-2's Conv1D keeps its
own kernel). Both forms compute the same dot products.

2. `skip_padded_keys`: in a decoding step every row attends over the batch's whole left-padded
cache, so a 40-token prompt decoded beside a 1,000-token one reads ~1,000 masked keys per layer and
step. Inside the block, a decoding step's attention runs per group of neighbouring rows, each over
the keys from its first non-pad position on. Masked keys have weight zero, so only the rounding of
the softmax sums can differ. The same attention reads keys kept in tiers (`TieredKV`): the fast
engine's cache for rows of very different prompt lengths. It is registered with transformers'
public attention interface (`AttentionInterface.register`, with the SDPA mask) under its own name,
and the model's attention implementation is switched to it for the block only.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Above this many rows `F.linear` was as fast in every measurement (benchmarks/README.md, the row-count sweep).
FEW_ROWS = 64


def weight_first_rows(rows: int, max_rows: int = FEW_ROWS) -> int | None:
    """How many rows to compute `(W @ x^T)^T` with (zero rows appended), or None to keep `F.linear`.

    The table measured on this project's CPU BLAS (benchmarks/README.md): one row is padded to two, 2-9 rows
    and multiples of 8 take the second form, other counts keep `F.linear`.
    """
    if rows < 1 or rows > max_rows:
        return None
    if rows == 1:
        return 2
    return rows if rows <= 9 or rows % 8 == 0 else None


def few_row_linear(max_rows: int = FEW_ROWS) -> TorchFunctionMode:
    """A context manager: inside it, `F.linear(x, W, b)` runs as `(W @ x^T)^T + b` for the row counts
    `weight_first_rows` picks (at most `max_rows`)."""
    return _WeightFirstLinear(max_rows)


class _WeightFirstLinear(TorchFunctionMode):
    """The mode behind `few_row_linear` (a TorchFunctionMode sees every torch function call in its block)."""

    def __init__(self, max_rows: int = FEW_ROWS) -> None:
        super().__init__()
        self.max_rows = max_rows

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear:
            out = self._weight_first(*args, **kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)

    def _weight_first(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor | None:
        """`(W @ x^T)^T + b`, laid out like F.linear's result; None when the call does not qualify."""
        if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] == 0 or x.dtype != weight.dtype:
            return None
        rows = x.numel() // x.shape[-1]
        padded = weight_first_rows(rows, self.max_rows)
        if padded is None:
            return None
        flat = x.reshape(rows, x.shape[-1])
        if padded > rows:  # the zero rows only change which BLAS kernel runs; their outputs are dropped
            flat = torch.cat([flat, flat.new_zeros((padded - rows, flat.shape[1]))])
        out = torch.mm(weight, flat.t())[:, :rows].t()  # (rows, out)
        if bias is not None:
            out = out + bias
        return out.contiguous().view(*x.shape[:-1], weight.shape[0])


@contextlib.contextmanager
def generation_kernels(model: torch.nn.Module) -> Iterator[None]:
    """Both switches, for the fast engine's prefill and decoding of one batch (few-row products on CPU only)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    with few_row_linear() if on_cpu else contextlib.nullcontext(), skip_padded_keys(model):
        yield


# A group's attention call costs about as much as this many extra (row, key) pairs read.
GROUP_OVERHEAD_KEYS = 256


GROUPED_ATTENTION = "detoxedit_grouped_sdpa"
"""The name `skip_padded_keys` registers its attention under (transformers' AttentionInterface)."""


@contextlib.contextmanager
def skip_padded_keys(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, decoding steps of `model` attend only over non-pad keys (see module doc).

    Applies to models on PyTorch's SDPA attention (the transformers default on CPU); others run
    as they are. The model's attention implementation is switched to the grouped one for the block
    and always switched back.
    """
    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        yield
        return
    _register_grouped_attention()
    model.set_attn_implementation(GROUPED_ATTENTION)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")


def _register_grouped_attention() -> None:
    """Registers the grouped attention (with the SDPA mask it expects) once per process."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if GROUPED_ATTENTION not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(GROUPED_ATTENTION, _RowGroupedAttention(sdpa_attention_forward))
        AttentionMaskInterface.register(GROUPED_ATTENTION, sdpa_mask)


@dataclass(frozen=True)
class TieredKV:
    """A decoding step's keys (or values) kept in tiers of rows instead of one padded tensor.

    Why: a batch's KV cache padded to its longest prompt wastes most of its memory when 40-token and
    1,000-token prompts decode together (3x in the runner's first 5-item batch), and that memory is
    what limits the batch size. The fast engine keeps rows of similar prompt length in one buffer
    each (`cache.TieredLayer`); `parts` holds, per tier, its rows lo..hi of the batch, the
    global key position of the tier's first key (`offset`: the tier is left-padded to a narrower
    width than the batch), and the tier's tensor (rows, kv_heads, keys, head_dim). `shape` is that
    of the padded tensor the tiers stand for. Only `skip_padded_keys`'s attention accepts it.
    """

    parts: tuple[tuple[int, int, int, torch.Tensor], ...]
    shape: tuple[int, int, int, int]


def tiered_kv_supported(model: torch.nn.Module) -> bool:
    """Whether the model's decoding attention goes through `skip_padded_keys`, which reads `TieredKV`
    (an SDPA model, or one inside that block already)."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None) in ("sdpa", GROUPED_ATTENTION)


class _RowGroupedAttention:
    """Wraps an attention function: a decoding step (one query per row, a boolean mask) runs per
    row group over each group's non-pad keys; keys in tiers (`TieredKV`) run tier by tier, each
    tier grouped the same way; every other call passes through unchanged."""

    def __init__(self, attend: Callable[..., tuple[torch.Tensor, Any]]) -> None:
        self.attend = attend
        self._plan_for: torch.Tensor | None = None  # the step's mask the plans belong to (held, so never reused)
        self._plans: dict[tuple[int, int, int], list[tuple[int, int, int]] | None] = {}

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        if attention_mask is not self._plan_for:  # one set of plans per step: every layer gets the same mask object
            self._plan_for, self._plans = attention_mask, {}
        if isinstance(key, TieredKV):
            outputs = [
                self._grouped(module, query[lo:hi], keys, values, _mask_from(attention_mask, lo, hi, offset),
                              (lo, hi, offset), **kwargs)
                for (lo, hi, offset, keys), (_, _, _, values) in zip(key.parts, value.parts)
            ]
            return torch.cat(outputs, dim=0), None
        return self._grouped(module, query, key, value, attention_mask, (0, query.shape[0], 0), **kwargs), None

    def _grouped(self, module, query, key, value, mask, tier, **kwargs) -> torch.Tensor:
        groups = self._groups(query, key, mask, tier)
        if groups is None:
            return self.attend(module, query, key, value, mask, **kwargs)[0]
        outputs = [
            self.attend(module, query[lo:hi], key[lo:hi, :, start:], value[lo:hi, :, start:],
                        mask[lo:hi, :, :, start:], **kwargs)[0]
            for lo, hi, start in groups
        ]
        return torch.cat(outputs, dim=0)

    def _groups(self, query, key, mask, tier) -> list[tuple[int, int, int]] | None:
        """(first row, end row, first key) per group of this tier's rows, or None to run the call as it is."""
        decoding = (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.dim() == 4
                    and query.shape[2] == 1 and mask.shape[0] == query.shape[0] > 1 and mask.shape[-1] == key.shape[2])
        if not decoding:
            return None
        if tier not in self._plans:
            self._plans[tier] = plan_key_groups(first_keys(mask), mask.shape[-1], GROUP_OVERHEAD_KEYS)
        return self._plans[tier]


def _mask_from(mask: torch.Tensor | None, lo: int, hi: int, offset: int) -> torch.Tensor | None:
    """Rows lo..hi of a 4-D attention mask, from key `offset` on (a tier's keys)."""
    return None if mask is None else mask[lo:hi, :, :, offset:]


def first_keys(mask: torch.Tensor) -> list[int]:
    """Each row's first attended key in a (rows, 1, 1, keys) boolean decoding mask."""
    attended = mask[:, 0, -1, :]
    return attended.int().argmax(dim=-1).tolist()


def plan_key_groups(firsts: list[int], keys: int, overhead: int = GROUP_OVERHEAD_KEYS) -> list[tuple[int, int, int]] | None:
    """Splits rows (in order) into groups reading keys min(first)..keys-1, fewest (row, key) pairs
    plus `overhead` per group; None when one group over all keys is best (nothing to skip).

    A dynamic programme over the row order: groups stay contiguous, so the slices are views.
    """
    n = len(firsts)
    best = [0] + [None] * n  # best[j]: cost of rows 0..j-1
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        lowest = keys
        for i in range(j - 1, -1, -1):  # the group i..j-1
            lowest = min(lowest, firsts[i])
            cost = best[i] + overhead + (j - i) * (keys - lowest)
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    groups, hi = [], n
    while hi > 0:
        lo = cut[hi]
        groups.append((lo, hi, min(firsts[lo:hi])))
        hi = lo
    groups.reverse()
    if len(groups) == 1 and groups[0][2] == 0:
        return None
    return groups

