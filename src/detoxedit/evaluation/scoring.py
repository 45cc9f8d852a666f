"""metrics.json: every registered metric per variant (vanilla / edited), with bootstrap 95% intervals.

Everything is recomputed from the judged records in generations.jsonl (and general.jsonl), so the
numbers can always be checked against the replies they came from. Which metrics exist is the
registry's business (`detoxedit.metrics`); this module only feeds each metric the records it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from detoxedit.metrics import MetricSpec, bootstrap_ci, metric_specs, per_category

logger = logging.getLogger(__name__)

TABLE_METRICS: tuple[str, ...] = tuple(s.name for s in metric_specs(in_paper=True))
"""The columns of the paper's Table 1, in order (the registered metrics the paper has)."""


def metric_entry(spec: MetricSpec, records: Sequence[dict], n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95", "n"}: the metric on `records`; the interval resamples the metric's own units."""
    units = spec.units(records)
    if len(units) == 0:
        return {"value": None, "ci95": None, "n": 0}
    low, high = bootstrap_ci(range(len(units)), stat=lambda rows: spec.aggregate(units[rows.astype(int)]),
                             n_resamples=n_resamples, seed=seed)
    return {"value": spec.aggregate(units), "ci95": [low, high], "n": len(units)}


def variant_metrics(sources: dict[str, Sequence[dict]], n_resamples: int = 1000, seed: int = 0) -> dict[str, dict]:
    """Every registered metric whose records are present: `sources` maps a record source
    ("generations", "general") to one variant's records."""
    return {spec.name: metric_entry(spec, sources[spec.records], n_resamples, seed)
            for spec in metric_specs() if sources.get(spec.records)}


def summarize(
    generations: Sequence[dict], general: Sequence[dict] = (), n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The content of metrics.json: per variant, the metrics and the per-category table."""
    variants: dict[str, Any] = {}
    for variant in ("vanilla", "edited"):
        records = [r for r in generations if r["variant"] == variant]
        if not records:
            continue
        sources = {"generations": records, "general": [r for r in general if r["variant"] == variant]}
        variants[variant] = {
            "n_items": len({str(r["item_id"]) for r in records}),
            "metrics": variant_metrics(sources, n_resamples, seed),
            "per_category": per_category(records),
        }
    return {"variants": variants, "note": "DG_Avg averages the four DG metrics only (DS is not included)."}
