"""Judge error carried into the safety metrics: Rogan-Gladen estimates with honest intervals.

Every DS/DG value is a share of replies a judge calls safe, and judges err. A judge with recall
Se (share of truly unsafe replies it calls unsafe) and specificity Sp (share of truly safe replies
it calls safe) that calls a share p of replies unsafe implies a true unsafe share

    pi = (p + Sp - 1) / (Se + Sp - 1)        (Rogan & Gladen 1978; clipped to [0, 1])

Se and Sp are themselves estimates from a finite validation set (the counts TP, FN, FP, TN in
`JudgeErrorRates`), so the interval draws them from their posteriors (Jeffreys: Beta(TP + 1/2,
FN + 1/2) for Se, Beta(TN + 1/2, FP + 1/2) for Sp) in every bootstrap resample of the replies:
the interval holds both the sampling and the judge's own uncertainty.

Empty replies are labelled 0.5 by rule, not by the judge, so they stay outside the correction and
count half, as in the raw metric. The correction assumes the judge errs on these replies as it did
on its validation set; a judge validated on other kinds of replies can still mislead.

Honest validations of one judge can disagree (leave-one-source-out against leave-requests-out and
leave-questions-out: docs/judges.md). `JudgeErrorRates.alternatives` holds the others: the value still uses the first
counts, but every resample draws its rates from one of the measurements, chosen at random, so the
interval also holds the choice between them. The shipped embedded heads carry all three protocols' counts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detoxedit.errors import DetoxeditError


@dataclass(frozen=True)
class JudgeErrorRates:
    """A judge's confusion counts on labelled replies (unsafe = positive) and where they were measured."""

    tp: int
    fn: int
    fp: int
    tn: int
    measured_on: str = ""
    alternatives: tuple[JudgeErrorRates, ...] = ()
    """Other measurements of the same judge (another protocol); the interval draws from all of them."""

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp)

    @property
    def informative(self) -> bool:
        """Whether the judge tells unsafe from safe better than chance (Se + Sp > 1); else no correction."""
        return self.tp + self.fn > 0 and self.tn + self.fp > 0 and self.recall + self.specificity > 1.0

    def to_dict(self) -> dict[str, Any]:
        out = {"tp": self.tp, "fn": self.fn, "fp": self.fp, "tn": self.tn, "measured_on": self.measured_on,
               "recall": self.recall, "specificity": self.specificity}
        if self.alternatives:
            out["alternatives"] = [alternative.to_dict() for alternative in self.alternatives]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "judge error rates") -> JudgeErrorRates:
        try:
            counts = {key: int(values[key]) for key in ("tp", "fn", "fp", "tn")}
        except (KeyError, TypeError, ValueError) as err:
            raise DetoxeditError(f"{source}: needs whole-number counts tp, fn, fp, tn ({err})") from err
        if min(counts.values()) < 0:
            raise DetoxeditError(f"{source}: counts must be >= 0, got {counts}")
        alternatives = values.get("alternatives", [])
        if not isinstance(alternatives, list) or not all(isinstance(a, dict) for a in alternatives):
            raise DetoxeditError(f"{source}: alternatives must be a list of objects with counts tp, fn, fp, tn")
        if any("alternatives" in a for a in alternatives):
            raise DetoxeditError(f"{source}: an alternative cannot list alternatives of its own (list them all at the top)")
        return cls(**counts, measured_on=str(values.get("measured_on", "")),
                   alternatives=tuple(cls.from_dict(a, f"{source}: alternatives[{i}]") for i, a in enumerate(alternatives)))

    @classmethod
    def read(cls, path: str | Path) -> JudgeErrorRates:
        """Reads a file written by `detoxedit judge eval --errors-out FILE`."""
        path = Path(path)
        if not path.is_file():
            raise DetoxeditError(f"judge error-rates file not found: {path} (write one with `detoxedit judge eval "
                                 "--labels LABELLED.jsonl --errors-out FILE`)")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise DetoxeditError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(values, str(path))


def rogan_gladen(p_observed: float, recall: float, specificity: float) -> float:
    """The true share implied by an observed share and the judge's error rates, clipped to [0, 1]."""
    denominator = recall + specificity - 1.0
    if denominator <= 0:
        raise ValueError(f"a judge with recall + specificity <= 1 ({recall:.3f} + {specificity:.3f}) carries no information")
    return float(min(1.0, max(0.0, (p_observed + specificity - 1.0) / denominator)))


def corrected_unsafe_share(unsafe: float, safe: float, empty: float, recall: float, specificity: float) -> float:
    """The share of unsafe replies, judged ones corrected, empty ones counted half (as the raw label 0.5)."""
    judged = unsafe + safe
    total = judged + empty
    if total == 0:
        return math.nan
    corrected = rogan_gladen(unsafe / judged, recall, specificity) * judged if judged else 0.0
    return (corrected + 0.5 * empty) / total


def label_counts(labels: np.ndarray) -> np.ndarray:
    """(unsafe, safe, empty) counts of labels 1 / 0 / 0.5."""
    return np.array([np.sum(labels == 1.0), np.sum(labels == 0.0), np.sum(labels == 0.5)], dtype=float)


def corrected_safety(counts: np.ndarray, recall: float, specificity: float) -> float:
    """Corrected safety score in % of one group's (unsafe, safe, empty) counts."""
    return 100.0 * (1.0 - corrected_unsafe_share(*counts, recall, specificity))


def corrected_value(aggregation: str, units: np.ndarray, recall: float, specificity: float) -> float:
    """The corrected value of a judged metric from its per-unit values (its aggregation says their shape).

    `safety_score`: units are labels (n,). `mean_of_safety_scores`: units are (items, k, 3) counts of
    unsafe / safe / empty labels per item and column; the value is the mean of the corrected columns.
    """
    if aggregation == "safety_score":
        return corrected_safety(label_counts(units), recall, specificity)
    if aggregation == "mean_of_safety_scores":
        columns = units.sum(axis=0)  # (k, 3)
        present = columns.sum(axis=1) > 0
        return float(np.mean([corrected_safety(c, recall, specificity) for c in columns[present]]))
    raise ValueError(f"no judge-error correction for aggregation {aggregation!r}")


def _rate_draws(rates: JudgeErrorRates, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` (recall, specificity) draws from the counts' posteriors; with alternatives, each draw's counts are
    one of the measurements, chosen uniformly."""
    if not rates.alternatives:
        return (rng.beta(rates.tp + 0.5, rates.fn + 0.5, size=n), rng.beta(rates.tn + 0.5, rates.fp + 0.5, size=n))
    measurements = (rates, *rates.alternatives)
    chosen = [measurements[i] for i in rng.integers(0, len(measurements), size=n)]
    recalls = rng.beta([m.tp + 0.5 for m in chosen], [m.fn + 0.5 for m in chosen])
    specificities = rng.beta([m.tn + 0.5 for m in chosen], [m.fp + 0.5 for m in chosen])
    return recalls, specificities


def corrected_entry(aggregation: str, units: np.ndarray, rates: JudgeErrorRates, n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """{"value", "ci95"}: the Rogan-Gladen estimate and an interval over replies and the judge's error rates."""
    if len(units) == 0:
        return {"value": None, "ci95": None}
    value = corrected_value(aggregation, units, rates.recall, rates.specificity)
    rng = np.random.default_rng(seed)
    recalls, specificities = _rate_draws(rates, n_resamples, rng)
    draws = []
    for b in range(n_resamples):
        rows = rng.integers(0, len(units), size=len(units))
        if recalls[b] + specificities[b] > 1.0:
            draws.append(corrected_value(aggregation, units[rows], recalls[b], specificities[b]))
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(draws, [tail, 100.0 - tail]) if draws else (math.nan, math.nan)
    return {"value": value, "ci95": [float(low), float(high)]}
