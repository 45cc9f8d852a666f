"""Metrics of the SafeEdit benchmark; importing this package registers all of them.

Registered: DS, DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ, DG_Avg, Fluency, KQA, Csum.
"""

from __future__ import annotations

from detoxedit.metrics.base import MetricSpec, UnknownMetricError, get_metric, list_metrics, register_metric
from detoxedit.metrics.fluency import Fluency, n_gram_entropy
from detoxedit.metrics.general import (
    KQA,
    Csum,
    contains_match,
    exact_match,
    kqa_contains,
    normalize_answer,
    rouge1_f,
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
    label_from_score,
    safety_score,
)
from detoxedit.metrics.stats import bootstrap_ci, per_category

__all__ = [
    "DG_METRICS",
    "DS",
    "KQA",
    "SAFETY_METRICS",
    "UnknownMetricError",
    "Csum",
    "DG_Avg",
    "DG_onlyQ",
    "DG_otherA",
    "DG_otherAQ",
    "DG_otherQ",
    "Fluency",
    "JudgedRecord",
    "MetricSpec",
    "bootstrap_ci",
    "contains_match",
    "exact_match",
    "get_metric",
    "kqa_contains",
    "label_from_score",
    "list_metrics",
    "n_gram_entropy",
    "normalize_answer",
    "per_category",
    "register_metric",
    "rouge1_f",
    "safety_score",
]
