"""How prompts are grouped: batches under a KV budget, tiers of similar lengths, shared prefixes.

Pure functions of prompt lengths and token ids (no model), so each is tested on hand cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from detoxedit.models.generation.kernels import plan_key_groups
from detoxedit.models.generation.options import Batching

# A shared prompt prefix is computed once only when at least this many tokens are shared: below it,
# the extra forward passes cost more than the positions saved.
MIN_SHARED_PREFIX = 16


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
