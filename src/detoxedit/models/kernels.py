"""Faster kernels for the shapes generation runs, with the same maths: two scoped switches.

1. `few_row_linear`: `F.linear(x, W)` computes `x @ W^T`. With few rows in `x` (a decoding step has one row per
sequence; the last chunks of a staircase prefill have a handful of positions), the CPU BLAS that
PyTorch uses here runs it far below memory speed: on this project's 2-core machine the whole default
model (30 layers and the LM head, weights not in cache) took 64 ms a step for 4 rows, while the same
products written as `(W @ x^T)^T` took 31 ms; for 16..64 rows the second form was 0-25% faster
(benchmarks/README.md has the tables; this machine's timings vary by 10-20% from run to run). Both
forms compute the same dot products; here they gave bit-identical results, and greedy replies were
identical in every check.

`few_row_linear()` switches every `F.linear` call with at most `max_rows` rows to the second form
for the duration of a block, whatever the architecture: it intercepts the function, not a module
type. Layers that do not call `F.linear` (GPT-2's Conv1D) keep their own kernel.

2. `skip_padded_keys`: in a decoding step every row attends over the batch's whole left-padded
cache, so a 40-token prompt decoded beside a 1,000-token one reads ~1,000 masked keys per layer and
step (in the runner's first 5-item batch, 74% of the keys read were padding, and attention was a
third of the decoding time). Inside the block, a decoding step's attention runs per group of
neighbouring rows, each over the keys from its first non-pad position on: 10-12% less time per
decoding step there. Masked keys have weight zero, so only the rounding of the softmax sums can differ.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# Up to this many rows the second form was as fast or faster in every measurement; from ~100 rows on
# it was sometimes slower (250 rows: 541 against 418 ms a model step in one run).
FEW_ROWS = 64


def few_row_linear(max_rows: int = FEW_ROWS) -> TorchFunctionMode:
    """A context manager: inside it, `F.linear(x, W, b)` over at most `max_rows` rows runs as `(W @ x^T)^T + b`."""
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
        if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] == 0:
            return None
        rows = x.numel() // x.shape[-1]
        if rows == 0 or rows > self.max_rows or x.dtype != weight.dtype:
            return None
        out = torch.mm(weight, x.reshape(rows, x.shape[-1]).t()).t()  # (rows, out)
        if bias is not None:
            out = out + bias
        return out.contiguous().view(*x.shape[:-1], weight.shape[0])


@contextlib.contextmanager
def generation_kernels(model: torch.nn.Module) -> Iterator[None]:
    """Both switches, for the fast engine's prefill and decoding of one batch."""
    with few_row_linear(), skip_padded_keys(model):
        yield


# A group's attention call costs about as much as this many extra (row, key) pairs read.
GROUP_OVERHEAD_KEYS = 256


@contextlib.contextmanager
def skip_padded_keys(model: torch.nn.Module) -> Iterator[None]:
    """Inside the block, decoding steps of `model` attend only over non-pad keys (see module doc).

    Applies to models on PyTorch's SDPA attention (the transformers default on CPU); others run
    as they are. The switch is the transformers attention registry's `sdpa` entry, replaced for
    the block only and always put back.
    """
    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa":
        yield
        return
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    local = ALL_ATTENTION_FUNCTIONS._local_mapping
    before = local.get("sdpa")
    ALL_ATTENTION_FUNCTIONS["sdpa"] = _RowGroupedAttention(ALL_ATTENTION_FUNCTIONS["sdpa"])
    try:
        yield
    finally:
        if before is None:
            local.pop("sdpa", None)
        else:
            local["sdpa"] = before


class _RowGroupedAttention:
    """Wraps an attention function: a decoding step (one query per row, a boolean mask) runs per
    row group over each group's non-pad keys; every other call passes through unchanged."""

    def __init__(self, attend: Callable[..., tuple[torch.Tensor, Any]]) -> None:
        self.attend = attend
        self._plan_for: torch.Tensor | None = None  # the mask the cached plan belongs to (held, so never reused)
        self._plan: list[tuple[int, int, int]] | None = None

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        groups = self._groups(query, key, attention_mask)
        if groups is None:
            return self.attend(module, query, key, value, attention_mask, **kwargs)
        outputs = [
            self.attend(module, query[lo:hi], key[lo:hi, :, start:], value[lo:hi, :, start:],
                        attention_mask[lo:hi, :, :, start:], **kwargs)[0]
            for lo, hi, start in groups
        ]
        return torch.cat(outputs, dim=0), None

    def _groups(self, query, key, mask) -> list[tuple[int, int, int]] | None:
        """(first row, end row, first key) per group, or None to run the call as it is."""
        decoding = (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.dim() == 4
                    and query.shape[2] == 1 and mask.shape[0] == query.shape[0] > 1 and mask.shape[-1] == key.shape[2])
        if not decoding:
            return None
        if mask is not self._plan_for:  # one plan per step: every layer gets the same mask object
            self._plan_for, self._plan = mask, plan_key_groups(first_keys(mask), mask.shape[-1], GROUP_OVERHEAD_KEYS)
        return self._plan


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

