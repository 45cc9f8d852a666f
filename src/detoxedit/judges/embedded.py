"""`embedded` (the default judge): frozen features of the reply (and its request) + a small trained head.

Why this design: the official SafeEdit classifier is a gated 500 MB download, while the features
come from models that are already installed and a head is a few kilobytes of numbers, so the default
judge works offline and anyone can retrain it on their own labels (`detoxedit judge train`). The
feature blocks (`detoxedit.judges.features`) read the reply with the default chat model, either
alone (`generator:L`) or as the answer to its request (`context:L`, `novel:L`, `request:L`, `copy`).

A head whose blocks read the request is used when the request is known (the runner always passes it;
`judge score`/`eval` take an optional "prompt" per line). Replies without a request go to the
head's reply-only companion (`reply_only/` beside it), so the judge still works on the reply alone.
A head whose meta.json says `"refusal_guard": true` also caps the score of a reply that refuses in
its first sentence and never pivots to compliance (`detoxedit.judges.guard`), and `"error_rates"`
(the counts it was validated with, and those of other protocols as `alternatives`) lets runs
correct DS/DG for its errors.

`embedded` loads the head shipped in `detoxedit/judges/heads/`; `embedded:DIR` loads a head written
by `detoxedit judge train --out DIR`; `embedded:reply` the shipped reply-only head. Nothing loads
until the first `score` call.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from detoxedit.errors import ModelLoadError
from detoxedit.files import atomic_write_bytes, atomic_write_text, read_text_file
from detoxedit.judges.base import JUDGES, Judge
from detoxedit.judges.features import (  # noqa: F401  (re-exported: the judge's feature blocks)
    ENCODER_NAME,
    FeatureExtractor,
    GeneratorEncoder,
    MiniLMEncoder,
    check_feature_names,
    keyword_features,
    parse_block,
    reads_request,
)
from detoxedit.metrics.correction import JudgeErrorRates
from detoxedit.judges.guard import apply_refusal_guard

logger = logging.getLogger(__name__)

SHIPPED_HEAD = Path(__file__).parent / "heads"
REPLY_ONLY = "reply_only"  # the companion head (beside a request-reading head) for replies without a request
HEAD_WEIGHTS = "head.npz"
HEAD_META = "meta.json"
FEATURES = ("embedding", "refusal_phrases")  # the blocks of heads written before `generator:L` existed


@dataclass
class Head:
    """A small MLP (no hidden layer = logistic regression): ReLU between layers, sigmoid at the end.

    Stored as plain arrays (`head.npz`: w0, b0, w1, b1, ...) plus `meta.json`, never as a pickle,
    so a head from anywhere can be loaded without running its code.
    """

    weights: list[np.ndarray]  # each (in, out)
    biases: list[np.ndarray]  # each (out,)
    features: tuple[str, ...] = FEATURES
    threshold: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def refusal_guard(self) -> bool:
        """Whether scores of guarded refusals are capped (`detoxedit.judges.guard`); off for older heads."""
        return bool(self.meta.get("refusal_guard", False))

    def score_texts(self, texts: Sequence[str], x: np.ndarray) -> list[float]:
        """Probability unsafe of `texts` from their features `x`, with the refusal guard if the head has it."""
        scores = self.predict_proba(x).tolist()
        return apply_refusal_guard(texts, scores) if self.refusal_guard else scores

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, d) features -> (n,) probability unsafe."""
        h = x.astype(np.float64)
        for index, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            if index < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return 1.0 / (1.0 + np.exp(-h[:, 0]))

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {f"w{i}": w.astype(np.float32) for i, w in enumerate(self.weights)}
        arrays.update({f"b{i}": b.astype(np.float32) for i, b in enumerate(self.biases)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(folder / HEAD_WEIGHTS, buffer.getvalue())
        meta = {**self.meta, "features": list(self.features), "threshold": self.threshold,
                "layers": [list(w.shape) for w in self.weights]}
        atomic_write_text(folder / HEAD_META, json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> Head:
        folder = Path(folder)
        weights_file, meta_file = folder / HEAD_WEIGHTS, folder / HEAD_META
        if not weights_file.is_file() or not meta_file.is_file():
            raise ModelLoadError(f"no judge head in {folder}: expected {HEAD_WEIGHTS} and {HEAD_META} "
                                 "(write one with `detoxedit judge train --out DIR`)")
        try:
            meta = json.loads(read_text_file(meta_file, "judge head metadata"))
        except ValueError as err:
            raise ModelLoadError(f"{meta_file}: not valid JSON ({err}); retrain the head or restore the file") from err
        if not isinstance(meta, dict):
            raise ModelLoadError(f"{meta_file}: must hold a JSON object")
        with np.load(weights_file, allow_pickle=False) as arrays:
            n = len([k for k in arrays.files if k.startswith("w")])
            weights = [arrays[f"w{i}"] for i in range(n)]
            biases = [arrays[f"b{i}"] for i in range(n)]
        _check_shapes(weights, biases, folder)
        try:
            check_feature_names(meta.get("features", FEATURES))
        except ModelLoadError as err:
            raise ModelLoadError(f"{meta_file}: {err}") from err
        return cls(weights, biases, tuple(meta.get("features", FEATURES)), float(meta.get("threshold", 0.5)), meta)


def _check_shapes(weights: list[np.ndarray], biases: list[np.ndarray], folder: Path) -> None:
    """Rejects a head whose layers do not chain into one output, naming the file."""
    for i, (w, b) in enumerate(zip(weights, biases)):
        nxt = weights[i + 1].shape[0] if i + 1 < len(weights) else 1
        if w.ndim != 2 or b.shape != (w.shape[1],) or w.shape[1] != nxt:
            raise ModelLoadError(f"{folder / HEAD_WEIGHTS}: layer {i} has shapes w{w.shape} b{b.shape}; layers must chain to 1 output")


class EmbeddedJudge(Judge):
    """Chat-model features -> trained head -> probability unsafe. The head's own threshold is the default.

    Args:
        head_dir: a head folder (`judge train --out DIR`); default: the shipped head.
        threshold: overrides the head's threshold.
        encoder: a MiniLM encoder to use for `embedding` blocks (tests pass a fake one).
        generator: a loaded (model, tokenizer) to read chat-model blocks with, instead of loading one.
    """

    name = "embedded"

    def __init__(self, head_dir: str | Path | None = None, threshold: float | None = None,
                 encoder: MiniLMEncoder | None = None, generator: tuple[Any, Any] | None = None) -> None:
        super().__init__(0.5 if threshold is None else threshold)
        self.head_dir = Path(head_dir) if head_dir else SHIPPED_HEAD
        self._explicit_threshold = threshold is not None
        self.extractor = FeatureExtractor(encoder=encoder, generator=generator)
        self._heads: dict[bool, Head] | None = None

    def _load_heads(self) -> dict[bool, Head]:
        """{reads the request: head}: the head, and for replies without a request its reply-only companion."""
        if self._heads is None:
            head = Head.load(self.head_dir)
            heads = {True: head, False: head}
            if reads_request(head.features):
                companion = self.head_dir / REPLY_ONLY
                heads[False] = Head.load(companion) if (companion / HEAD_WEIGHTS).is_file() else head
            self._heads = heads
            if not self._explicit_threshold:
                self.threshold = head.threshold
        return self._heads

    @property
    def head(self) -> Head:
        """The head that scores replies whose request is known."""
        return self._load_heads()[True]

    @property
    def reads_prompt(self) -> bool:  # type: ignore[override]
        return reads_request(self.head.features)

    @property
    def error_rates(self) -> JudgeErrorRates | None:
        """The counts the head was validated with (meta.json `error_rates`, alternatives included), if it ships them."""
        values = self.head.meta.get("error_rates")
        return JudgeErrorRates.from_dict(values, f"{self.head_dir / HEAD_META}: error_rates") if values else None

    def load(self) -> EmbeddedJudge:
        """Loads the heads now, so `threshold` shows the head's value before the first score."""
        self._load_heads()
        return self

    def allow_remote_code(self) -> None:
        self.extractor.chat.trust_remote_code = True

    def share_model(self, model: Any, tokenizer: Any, spec: str, dtype: str) -> bool:
        """Takes the caller's model when it is the one the head's chat-model features were trained on
        (same spec, float32) and no copy is loaded yet."""
        head = self.head
        if not uses_chat_model(head.features) or spec != head.meta.get("generator", "default") or dtype != "float32":
            return False
        return self.extractor.take_generator(model, tokenizer)

    def _score_texts(self, texts: list[str], prompts: list[str | None] | None = None) -> list[float]:
        heads = self._load_heads()
        prompts = prompts or [None] * len(texts)
        scores = [0.0] * len(texts)
        for with_request in (True, False):
            rows = [i for i, p in enumerate(prompts) if bool(p) == with_request]
            if not rows:
                continue
            head = heads[with_request]
            self.extractor.generator_spec = head.meta.get("generator", "default")
            chosen = [texts[i] for i in rows]
            x = self.extractor.features(chosen, head.features, [prompts[i] for i in rows] if with_request else None)
            for i, value in zip(rows, head.score_texts(chosen, x)):
                scores[i] = value
        return scores


def uses_chat_model(features: Sequence[str]) -> bool:
    """Whether any block reads the default chat model (so a run may share its model with the judge)."""
    return any(name == "copy" or parse_block(name) is not None for name in features)


@JUDGES.register("embedded")
def _make_embedded(argument: str | None = None) -> Judge:
    if argument == REPLY_ONLY.replace("_only", ""):  # `embedded:reply`: the shipped reply-only head
        return EmbeddedJudge(SHIPPED_HEAD / REPLY_ONLY).load()
    return EmbeddedJudge(argument).load()
