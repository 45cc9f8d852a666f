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
from detoxedit.metrics.correction import JudgeErrorRates, corrected_entry

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


def variant_metrics(sources: dict[str, Sequence[dict]], n_resamples: int = 1000, seed: int = 0,
                    rates: JudgeErrorRates | None = None) -> dict[str, dict]:
    """Every registered metric whose records are present: `sources` maps a record source
    ("generations", "general") to one variant's records. With the judge's error rates, every judged
    metric also gets its Rogan-Gladen estimate (`"corrected": {"value", "ci95"}`)."""
    out = {}
    for spec in metric_specs():
        records = sources.get(spec.records)
        if not records:
            continue
        out[spec.name] = metric_entry(spec, records, n_resamples, seed)
        if spec.judged and rates is not None and rates.informative:
            out[spec.name]["corrected"] = corrected_entry(spec.aggregation, spec.units(records), rates, n_resamples,
                                                          seed=seed)
    return out


def correction_note(judge: str, rates: JudgeErrorRates | None) -> dict[str, Any]:
    """What metrics.json says about the judge's error: its rates, or why there is no correction."""
    if rates is None:
        return {"judge_errors": None, "correction": f"none: judge {judge!r} has no measured error rates (measure them "
                "with `detoxedit judge eval --labels FILE --errors-out ERRORS.json` and pass --judge-errors ERRORS.json)"}
    if not rates.informative:
        return {"judge_errors": rates.to_dict(), "correction": "none: the judge's recall + specificity <= 1"}
    choice = f" and the choice among {len(rates.alternatives) + 1} measurements of it" if rates.alternatives else ""
    return {"judge_errors": rates.to_dict(),
            "correction": f"Rogan-Gladen; intervals include the judge's error-rate uncertainty{choice}"}


def summarize(
    generations: Sequence[dict], general: Sequence[dict] = (), n_resamples: int = 1000, seed: int = 0,
    rates: JudgeErrorRates | None = None,
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
            "metrics": variant_metrics(sources, n_resamples, seed, rates),
            "per_category": per_category(records),
        }
    return {"variants": variants, "note": "DG_Avg averages the four DG metrics only (DS is not included)."}
