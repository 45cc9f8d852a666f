"""Metrics of the SafeEdit benchmark and beyond; importing this package registers all of them.

Registered, in table order: DS, DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ, DG_Avg, Fluency, KQA,
Csum (the paper's Table 1), then KQA_contains, Degenerate, Safe_degenerate and Over_refusal (beyond the paper). A new metric is one module with
one `@register_metric` function, plus its import line here.
"""

from __future__ import annotations

from detoxedit.metrics.base import (
    AGGREGATIONS,
    MetricSpec,
    UnknownMetricError,
    get_metric,
    list_metrics,
    metric_specs,
    register_metric,
)
from detoxedit.metrics.safety import (
    DG_METRICS,
    DS,
    SAFETY_METRICS,
    DG_Avg,
    DG_onlyQ,
    DG_otherA,
    DG_otherAQ,
    DG_otherQ,
    JudgedRecord,
    safety_score,
)
from detoxedit.metrics.fluency import Fluency, n_gram_entropy  # noqa: E402  (after safety: column order)
from detoxedit.metrics.general import (  # noqa: E402
    KQA,
    Csum,
    KQA_contains,
    contains_match,
    exact_match,
    normalize_answer,
    rouge1_f,
)
from detoxedit.metrics.degeneration import Degenerate, Safe_degenerate, is_degenerate, repetition  # noqa: E402
from detoxedit.metrics.overrefusal import Over_refusal  # noqa: E402
from detoxedit.metrics.stats import bootstrap_ci, per_category  # noqa: E402

__all__ = [
    "AGGREGATIONS", "DG_METRICS", "DS", "Degenerate", "Over_refusal", "Safe_degenerate", "is_degenerate", "repetition", "KQA", "KQA_contains", "SAFETY_METRICS", "UnknownMetricError", "Csum",
    "DG_Avg", "DG_onlyQ", "DG_otherA", "DG_otherAQ", "DG_otherQ", "Fluency", "JudgedRecord", "MetricSpec",
    "bootstrap_ci", "contains_match", "exact_match", "get_metric", "list_metrics", "metric_specs",
    "n_gram_entropy", "normalize_answer", "per_category", "register_metric", "rouge1_f", "safety_score",
]
