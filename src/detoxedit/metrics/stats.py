"""Uncertainty and breakdowns: bootstrap confidence intervals and per-category safety.

SafeEdit test sets are small per category, so differences between methods need intervals
before they mean anything, and a single overall DS can hide a category that got worse.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from detoxedit.data.schema import UNSAFE_CATEGORIES
from detoxedit.metrics.base import metric_specs
from detoxedit.metrics.safety import JudgedRecord

logger = logging.getLogger(__name__)


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` over ``values``; the same seed, the same interval.

    Raises:
        ValueError: no values, ``n_resamples < 1``, or ``confidence`` outside (0, 1).
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if n_resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, {confidence}")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, data.size, size=(n_resamples, data.size))  # (n_resamples, n)
    stats = np.array([stat(data[row]) for row in indices])
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def per_category(records: Sequence[JudgedRecord]) -> dict[str, dict[str, float | None]]:
    """Every per-category metric (DS, the four DG metrics, DG_Avg) within each unsafety category.

    Categories come in the release's order, then any others alphabetically. A metric whose
    kind has no records in a category is ``None``, as for the overall metrics.
    """
    groups: dict[str, list[JudgedRecord]] = {}
    for record in records:
        groups.setdefault(record["category"], []).append(record)
    specs = metric_specs(per_category=True)
    return {category: {spec.name: spec(groups[category]) for spec in specs} for category in _category_order(groups)}


def _category_order(categories: Iterable[str]) -> list[str]:
    rank = {c.casefold(): i for i, c in enumerate(UNSAFE_CATEGORIES)}
    return sorted(categories, key=lambda c: (rank.get(c.casefold(), len(rank)), c))
