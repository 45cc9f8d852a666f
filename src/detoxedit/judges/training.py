"""Training and evaluating embedded-judge heads: `detoxedit judge train` and `detoxedit judge eval` call these.

Two kinds of training data: SafeEdit files (each item gives its `safe generation` as a safe example
and its `unsafe generation` as an unsafe one) and hand-labelled JSONL (`{"text": ..., "label": 0|1}`,
optionally `"item"` to keep one item's replies together when splitting). SafeEdit's reference replies
alone teach a head that "not a polished refusal" means unsafe, which is wrong for a small model's
rambling; labelled replies of the model being judged fix that (see docs/judges.md).

The held-out split is by group (a SafeEdit question, or a label's `item`), so near-identical replies
to one question never sit on both sides.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from detoxedit.errors import DetoxeditError
from detoxedit.judges.base import EMPTY_SCORE, is_empty
from detoxedit.judges.embedded import ENCODER_NAME, FeatureExtractor, Head, check_feature_names

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = ("generator:27", "refusal_phrases")  # the shipped head's recipe (heads/NOTE.md)
DEFAULT_C = 0.03


@dataclass(frozen=True)
class Example:
    """One labelled reply; `group` keeps related replies on one side of the split."""

    text: str
    label: int  # 1 unsafe, 0 safe
    group: str
    source: str
    hand_labelled: bool = False


def examples_from_safeedit(path: str | Path) -> list[Example]:
    """Two examples per item: its safe generation (0) and its unsafe generation (1)."""
    from detoxedit.data import load_safeedit

    examples = []
    for item in load_safeedit(path):
        group = "q:" + item.question.strip().lower()
        for text, label in ((item.safe_generation, 0), (item.unsafe_generation, 1)):
            if not is_empty(text):
                examples.append(Example(text, label, group, str(path)))
    return examples


def examples_from_labels(path: str | Path) -> list[Example]:
    """Reads `{"text": str, "label": 0|1}` per line (extra keys allowed; `item` groups replies)."""
    path = Path(path)
    if not path.is_file():
        raise DetoxeditError(f"labels file not found: {path}")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        record = _parse_label_line(line, path, number)
        group = f"{path.name}:{record.get('item', number)}"
        examples.append(Example(record["text"], int(record["label"]), group, str(path), hand_labelled=True))
    return examples


def _parse_label_line(line: str, path: Path, number: int) -> dict:
    """One labels line, or an error naming the file, the line and what is wrong."""
    record = parse_text_line(line, path, number)
    if record.get("label") not in (0, 1, True, False):
        raise DetoxeditError(f'{path}:{number}: "label" must be 0 (safe) or 1 (unsafe), got {record.get("label")!r}')
    return record


def parse_text_line(line: str, path: Path, number: int) -> dict:
    """One `{"text": ...}` JSONL line, or an error naming the file and the line."""
    try:
        record = json.loads(line)
    except ValueError as err:
        raise DetoxeditError(f"{path}:{number}: not valid JSON ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise DetoxeditError(f'{path}:{number}: expected a JSON object with a string "text"')
    return record


def split_by_group(examples: Sequence[Example], holdout: float, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """Holds out about `holdout` of the groups of each source (so every source is in both parts)."""
    if not 0 <= holdout < 1:
        raise DetoxeditError(f"--holdout must be in [0, 1), got {holdout}")
    held: set[str] = set()
    for source in sorted({e.source for e in examples}):
        groups = sorted({e.group for e in examples if e.source == source})
        random.Random(f"{seed}:{source}").shuffle(groups)
        held.update(groups[: round(len(groups) * holdout)])
    return [e for e in examples if e.group not in held], [e for e in examples if e.group in held]


@dataclass
class HeadConfig:
    """How a head is fitted. `hidden=0` is logistic regression; otherwise one ReLU layer of that width."""

    hidden: int = 0
    c: float = DEFAULT_C  # inverse L2 strength on standardised features (logistic); alpha = 1 / c for the MLP
    label_weight: float = 1.0  # weight of hand-labelled replies relative to SafeEdit references
    balanced: bool = True  # weight classes inversely to their frequency
    seed: int = 0
    features: tuple[str, ...] = DEFAULT_FEATURES


def sample_weights(examples: Sequence[Example], config: HeadConfig) -> np.ndarray:
    """Per-example weights: hand labels scaled by `label_weight`, classes balanced if asked."""
    w = np.array([config.label_weight if e.hand_labelled else 1.0 for e in examples])
    if config.balanced:
        y = np.array([e.label for e in examples])
        for cls in (0, 1):
            mass = w[y == cls].sum()
            if mass > 0:
                w[y == cls] *= w.sum() / (2 * mass)
    return w / w.mean()


def fit_head(x: np.ndarray, y: np.ndarray, weights: np.ndarray, config: HeadConfig) -> Head:
    """Fits logistic regression or a one-hidden-layer MLP on standardised features; exports plain arrays.

    Standardising lets one `c` suit blocks of very different scales (hidden states vs. 0/1 bits);
    the mean and scale are folded into the first layer, so the saved head takes raw features.
    """
    if len(set(y.tolist())) < 2:
        raise DetoxeditError("training data needs both safe (0) and unsafe (1) examples")
    mean, scale = x.mean(0), x.std(0) + 1e-6  # (d,), (d,)
    z = (x - mean) / scale
    if config.hidden == 0:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=config.c, max_iter=5000)
        model.fit(z, y, sample_weight=weights)
        weights_, biases = [model.coef_.T.copy()], [model.intercept_.copy()]
    else:
        from sklearn.neural_network import MLPClassifier

        model = MLPClassifier(hidden_layer_sizes=(config.hidden,), alpha=1.0 / config.c, max_iter=2000,
                              random_state=config.seed, early_stopping=False)
        model.fit(z, y, sample_weight=weights)
        weights_, biases = [w.copy() for w in model.coefs_], [b.copy() for b in model.intercepts_]
    biases[0] = biases[0] - (mean / scale) @ weights_[0]  # (out,)
    weights_[0] = weights_[0] / scale[:, None]  # (d, out)
    return Head(weights_, biases, tuple(config.features))


@dataclass
class Agreement:
    """Agreement of judge labels with reference labels (1 unsafe); empty replies are skipped."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0

    @property
    def n(self) -> int:
        return self.tp + self.fn + self.fp + self.tn

    @property
    def accuracy(self) -> float:
        return (self.tp + self.tn) / self.n if self.n else float("nan")

    @property
    def recall(self) -> float:
        """Share of truly unsafe replies the judge calls unsafe."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        """Share of truly safe replies the judge calls safe."""
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "accuracy": self.accuracy, "recall_unsafe": self.recall, "specificity": self.specificity,
                "tp": self.tp, "fn": self.fn, "fp": self.fp, "tn": self.tn}


def agreement(truth: Sequence[int], predicted: Sequence[float]) -> Agreement:
    """Counts the confusion matrix; predictions of 0.5 (empty replies) are left out."""
    result = Agreement()
    for t, p in zip(truth, predicted):
        if p == EMPTY_SCORE:
            continue
        if t == 1:
            result.tp += p == 1
            result.fn += p == 0
        else:
            result.fp += p == 1
            result.tn += p == 0
    return result


@dataclass
class TrainingReport:
    """What `train_head` measured and wrote; also saved in the head's meta.json."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    heldout: dict[str, dict[str, float | int]] = field(default_factory=dict)
    threshold: float = 0.5
    heldout_groups: list[str] = field(default_factory=list)


def count_by_source(examples: Sequence[Example]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for e in examples:
        entry = counts.setdefault(e.source, {"safe": 0, "unsafe": 0})
        entry["unsafe" if e.label else "safe"] += 1
    return counts


def evaluate_head(head: Head, x: np.ndarray, examples: Sequence[Example], threshold: float) -> dict[str, dict]:
    """Held-out agreement per source file (with the head's refusal guard, as the judge scores)."""
    predicted = (np.asarray(head.score_texts([e.text for e in examples], x)) >= threshold).astype(float)
    out = {}
    for source in sorted({e.source for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.source == source]
        out[source] = agreement([examples[i].label for i in idx], predicted[idx].tolist()).as_dict()
    return out


def train_head(
    data_files: Sequence[str | Path],
    label_files: Sequence[str | Path] = (),
    *,
    config: HeadConfig = HeadConfig(),
    holdout: float = 0.3,
    threshold: float = 0.5,
    refit: bool = True,
    refusal_guard: bool = True,
    extractor: FeatureExtractor | None = None,
    cache: str | Path | None = None,
) -> tuple[Head, TrainingReport]:
    """Fits a head on a split, reports held-out agreement, then (if `refit`) refits on everything.

    The returned head's meta records the training files, counts, held-out numbers, threshold and
    whether the refusal guard is on (`detoxedit.judges.guard`; the held-out numbers include it).
    """
    examples = [e for f in data_files for e in examples_from_safeedit(f)]
    examples += [e for f in label_files for e in examples_from_labels(f)]
    if not examples:
        raise DetoxeditError("no training data: give --data SAFEEDIT.json and/or --labels LABELS.jsonl")
    check_feature_names(config.features)
    texts = [e.text for e in examples]
    x_all = cached_features(texts, config.features, extractor or FeatureExtractor(), cache)
    index = {id(e): i for i, e in enumerate(examples)}
    train, test = split_by_group(examples, holdout, config.seed)
    report = TrainingReport(count_by_source(examples), threshold=threshold,
                            heldout_groups=sorted({e.group for e in test}))
    if test:
        head = _fit(examples, x_all, index, train, config)
        head.meta = {"refusal_guard": refusal_guard}
        report.heldout = evaluate_head(head, x_all[[index[id(e)] for e in test]], test, threshold)
    if refit or not test:
        head = _fit(examples, x_all, index, examples if refit else train, config)
    head.threshold = threshold
    head.meta = {"training_files": [str(f) for f in data_files], "label_files": [str(f) for f in label_files],
                 "counts": report.counts, "holdout": holdout, "heldout": report.heldout, "refit_on_all": refit,
                 "refusal_guard": refusal_guard,
                 **feature_sources(config.features),
                 "head": {"hidden": config.hidden, "c": config.c, "label_weight": config.label_weight,
                          "balanced": config.balanced, "seed": config.seed}}
    return head, report


def _fit(examples, x_all, index, part, config) -> Head:
    rows = [index[id(e)] for e in part]
    y = np.array([e.label for e in part])
    return fit_head(x_all[rows], y, sample_weights(part, config), config)


def feature_sources(features: Sequence[str]) -> dict[str, str]:
    """What the head's features come from, for meta.json (the judge loads `generator` lazily)."""
    sources = {}
    if "embedding" in features:
        sources["encoder"] = ENCODER_NAME
    if any(f.startswith("generator:") for f in features):
        sources["generator"] = "default"
    return sources


def cached_features(texts: Sequence[str], features: Sequence[str], extractor: FeatureExtractor,
                    cache: str | Path | None = None) -> np.ndarray:
    """Features of `texts`; with `cache`, replies already stored there are not encoded again.

    A head needs one forward pass of the generator per reply; the cache makes retraining with another
    `--c` or label file cost only the new replies. The cache is an .npz (`features`, `keys` = sha256 of
    each text, `rows`); a cache written for another feature list is started over.
    """
    if cache is None:
        return extractor.features(texts, features)
    cache, spec = Path(cache), "|".join(features)
    stored = _read_cache(cache, spec)
    keys = [_text_key(t) for t in texts]
    missing = {k: t for k, t in zip(keys, texts) if k not in stored}  # each new text once
    logger.info("feature cache %s: %d of %d replies cached", cache, len(texts) - len(missing), len(texts))
    if missing:
        rows = extractor.features(list(missing.values()), features)
        stored.update(zip(missing, rows))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=np.array(spec), keys=np.array(list(stored)),
                 rows=np.stack(list(stored.values())).astype(np.float32))
    return np.stack([stored[k] for k in keys]).astype(np.float32)


def _read_cache(cache: Path, spec: str) -> dict[str, np.ndarray]:
    if not cache.is_file():
        return {}
    with np.load(cache, allow_pickle=False) as arrays:
        if str(arrays["features"]) != spec:
            logger.warning("feature cache %s holds %s, not %s: starting it over", cache, arrays["features"], spec)
            return {}
        return dict(zip(arrays["keys"].tolist(), arrays["rows"]))


def _text_key(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()
