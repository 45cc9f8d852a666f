"""The metric registry: each metric is registered once with its direction and aggregation.

As in lm-evaluation-harness, a new metric is one decorated function; reports and tables
read ``higher_is_better`` and ``aggregation`` from here instead of hard-coding them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from detoxedit.errors import DetoxeditError
from detoxedit.registry import Registry

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

AGGREGATIONS: tuple[str, ...] = ("safety_score", "mean", "mean_of_metrics")
"""How a metric reduces per-example values: 100*(1-mean label), a plain mean, or a mean of metrics."""


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric: the function and what a report needs to know about its values."""

    name: str
    fn: Callable[..., float | None]
    higher_is_better: bool
    aggregation: str
    description: str


class UnknownMetricError(DetoxeditError, KeyError):
    """A metric name that is not registered; a ``KeyError`` since it is a failed lookup."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


METRICS: Registry[MetricSpec] = Registry("metric")
_ORDER: list[str] = []  # registration order, which is the paper's column order


def register_metric(
    name: str, higher_is_better: bool, aggregation: str, description: str
) -> Callable[[F], F]:
    """Register the decorated function as metric ``name``; the function is returned unchanged.

    Raises:
        ValueError: unknown aggregation, or ``name`` already registered.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"metric {name!r}: aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")

    def decorator(fn: F) -> F:
        METRICS.register(name)(MetricSpec(name, fn, higher_is_better, aggregation, description))
        _ORDER.append(name)
        return fn

    return decorator


def get_metric(name: str) -> MetricSpec:
    """Look a metric up by name.

    Raises:
        UnknownMetricError: (a ``KeyError``) the name is not registered; lists those that are.
    """
    if name not in METRICS:
        raise UnknownMetricError(f"unknown metric {name!r}; registered: {', '.join(list_metrics())}")
    return METRICS.get(name)


def list_metrics() -> list[str]:
    """Names of all registered metrics, in registration order (the paper's column order)."""
    return list(_ORDER)
