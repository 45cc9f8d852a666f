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
from detoxedit.files import read_text_file
from detoxedit.judges.base import EMPTY_SCORE, is_empty
from detoxedit.judges.embedded import Head
from detoxedit.judges.features import ENCODER_NAME, FeatureExtractor, check_feature_names, reads_request

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = ("generator:27", "refusal_phrases")  # the shipped head's recipe (heads/NOTE.md)
DEFAULT_C = 0.03


@dataclass(frozen=True)
class Example:
    """One labelled reply (with its request, when known); `group` keeps related replies on one side of a split."""

    text: str
    label: int  # 1 unsafe, 0 safe
    group: str
    source: str
    hand_labelled: bool = False
    prompt: str | None = None


def examples_from_safeedit(path: str | Path) -> list[Example]:
    """Two examples per item: its safe generation (0) and its unsafe generation (1), each answering the
    item's adversarial prompt."""
    from detoxedit.data import load_safeedit

    examples = []
    for item in load_safeedit(path):
        group = "q:" + item.question.strip().lower()
        for text, label in ((item.safe_generation, 0), (item.unsafe_generation, 1)):
            if not is_empty(text):
                examples.append(Example(text, label, group, str(path), prompt=item.adversarial_prompt))
    return examples


def examples_from_labels(path: str | Path, data_root: str | Path | None = None) -> list[Example]:
    """Labelled replies: plain lines `{"text", "label": 0|1, "prompt"?, "item"?}` (`item` groups replies),
    or detoxedit's reference format (`data/labels/*.jsonl`: prompts and copied passages resolved
    against `data_root`; each line's `source` becomes the example's source)."""
    from detoxedit.judges.labels import is_reference_format, load_labelled_replies

    path = Path(path)
    if not path.is_file():
        raise DetoxeditError(f"labels file not found: {path}")
    text = read_text_file(path, "labels file")
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and _starts_reference_format(lines[0], is_reference_format):
        return [Example(r.text, r.label, r.group, r.source, hand_labelled=True, prompt=r.prompt)
                for r in load_labelled_replies(path, data_root)]
    examples = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = _parse_label_line(line, path, number)
        group = f"{path.name}:{record.get('item', number)}"
        prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else None
        examples.append(Example(record["text"], int(record["label"]), group, str(path), hand_labelled=True, prompt=prompt))
    return examples


def _starts_reference_format(line: str, check) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and check(record)


def examples_from_xstest(paths: Sequence[str | Path], split: str | None = None) -> list[Example]:
    """XSTest's human-labelled completions (`data.xstest`): full compliance with a harmful prompt is
    unsafe (1), refusals and every reply to a harmless prompt are safe (0); partial refusals of
    harmful prompts are left out. `split` ("train"/"test") keeps one side of the fixed prompt split."""
    from detoxedit.data.xstest import load_xstest_completions, split_of

    examples = []
    for path in paths:
        for c in load_xstest_completions(path):
            if c.safety_label is None or (split and split_of(c.prompt) != split) or is_empty(c.completion):
                continue
            kind = "unsafe-prompt" if c.prompt_is_unsafe else "safe-prompt"
            examples.append(Example(c.completion, c.safety_label, f"xstest:{kind}:{c.prompt}", f"xstest:{c.model}",
                                    hand_labelled=True, prompt=c.prompt))
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
    balanced: bool = True  # reweight the classes toward balance (see `sample_weights`)
    balance_sources: bool = False  # give every source (label file, reference file, XSTest) the same total weight
    seed: int = 0
    features: tuple[str, ...] = DEFAULT_FEATURES


def sample_weights(examples: Sequence[Example], config: HeadConfig) -> np.ndarray:
    """Per-example weights: hand labels scaled by `label_weight`, sources and classes balanced if asked.

    `balance_sources` keeps one large source (1,090 sampled replies) from outweighing small ones; measured in
    docs/judges.md (it raises recall on the SafeEdit references and lowers it on XSTest).

    `balanced` scales the safe class to half the total weight, then the unsafe class to half of the new total.
    When unsafe replies are rare this leaves the unsafe class below the safe class's weight (0.60 of it on the
    shipped pool of 4,889 replies, 500 unsafe): a soft balance, which the shipped heads were fitted with. An
    exact balance was measured and lowered specificity and XSTest recall (docs/judges.md), so the soft one stays."""
    w = np.array([config.label_weight if e.hand_labelled else 1.0 for e in examples])
    if config.balance_sources:
        sources = np.array([e.source for e in examples])
        for source in set(sources.tolist()):
            w[sources == source] /= w[sources == source].sum()
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

    def __add__(self, other: Agreement) -> Agreement:
        """Pooled counts of two sets of replies."""
        return Agreement(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp, self.tn + other.tn)

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

    def as_dict(self) -> dict[str, float | int | None]:
        """The counts and ratios; a ratio with no replies to count (no unsafe reply: no recall) is None,
        so that the JSON it is written to stays standard (no NaN)."""
        ratios = {"accuracy": self.accuracy, "recall_unsafe": self.recall, "specificity": self.specificity}
        return {"n": self.n, **{k: None if v != v else v for k, v in ratios.items()},
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
    data_root: str | Path | None = None,
) -> tuple[Head, TrainingReport]:
    """Fits a head on a split, reports held-out agreement, then (if `refit`) refits on everything.

    The returned head's meta records the training files, counts, held-out numbers, threshold and
    whether the refusal guard is on (`detoxedit.judges.guard`; the held-out numbers include it).
    """
    examples = [e for f in data_files for e in examples_from_safeedit(f)]
    examples += [e for f in label_files for e in examples_from_labels(f, data_root)]
    if not examples:
        raise DetoxeditError("no training data: give --data SAFEEDIT.json and/or --labels LABELS.jsonl")
    check_feature_names(config.features)
    texts = [e.text for e in examples]
    x_all = cached_features(texts, config.features, extractor or FeatureExtractor(), cache, [e.prompt for e in examples])
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
                          "balanced": config.balanced, "balance_sources": config.balance_sources, "seed": config.seed}}
    return head, report


def _fit(examples, x_all, index, part, config) -> Head:
    rows = [index[id(e)] for e in part]
    y = np.array([e.label for e in part])
    return fit_head(x_all[rows], y, sample_weights(part, config), config)


def feature_sources(features: Sequence[str]) -> dict[str, str]:
    """What the head's features come from, for meta.json (the judge loads `generator` lazily)."""
    from detoxedit.judges.features import parse_block

    sources = {}
    if "embedding" in features:
        sources["encoder"] = ENCODER_NAME
    if any(f == "copy" or parse_block(f) is not None for f in features):
        sources["generator"] = "default"
    return sources


def cached_features(texts: Sequence[str], features: Sequence[str], extractor: FeatureExtractor,
                    cache: str | Path | None = None, prompts: Sequence[str | None] | None = None,
                    chunk: int = 256) -> np.ndarray:
    """Features of `texts` (answering `prompts`); with `cache`, replies already stored there are not
    encoded again.

    A head needs one forward pass of the generator per reply; the cache makes retraining with another
    `--c` or label file cost only the new replies. The cache is an .npz (`features`, `keys`, `rows`);
    a reply's key covers its request when the features read it. A cache written for another feature
    list is started over. New replies are encoded in chunks and saved after each, so an interrupted
    extraction keeps what it computed.
    """
    prompts = list(prompts) if prompts is not None else [None] * len(texts)
    if cache is None:
        return extractor.features(texts, features, prompts)
    cache, spec = Path(cache), "|".join(features)
    stored = _read_cache(cache, spec)
    with_request = reads_request(features)
    keys = [example_key(t, p if with_request else None) for t, p in zip(texts, prompts)]
    missing = {k: (t, p) for k, t, p in zip(keys, texts, prompts) if k not in stored}  # each new reply once
    logger.info("feature cache %s: %d of %d replies cached", cache, len(texts) - len(missing), len(texts))
    pending = list(missing.items())
    for start in range(0, len(pending), chunk):
        part = pending[start:start + chunk]
        rows = extractor.features([t for _, (t, _) in part], features, [p for _, (_, p) in part])
        stored.update(zip([k for k, _ in part], rows))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, features=np.array(spec), keys=np.array(list(stored)),
                 rows=np.stack(list(stored.values())).astype(np.float32))
        logger.info("feature cache %s: %d of %d new replies encoded", cache, min(start + chunk, len(pending)), len(pending))
    return np.stack([stored[k] for k in keys]).astype(np.float32)


def _read_cache(cache: Path, spec: str) -> dict[str, np.ndarray]:
    if not cache.is_file():
        return {}
    with np.load(cache, allow_pickle=False) as arrays:
        if str(arrays["features"]) != spec:
            logger.warning("feature cache %s holds %s, not %s: starting it over", cache, arrays["features"], spec)
            return {}
        return dict(zip(arrays["keys"].tolist(), arrays["rows"]))


def example_key(text: str, prompt: str | None = None) -> str:
    """sha256 of a reply (and its request, when given): the identity of a labelled example."""
    import hashlib

    payload = text if prompt is None else f"{text}\x1f{prompt}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
