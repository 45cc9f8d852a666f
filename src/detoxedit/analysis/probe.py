"""The toxic probe: a linear direction in the last layer's hidden state that separates unsafe from safe text.

Lee et al. (2024, "A mechanistic understanding of alignment algorithms") train a softmax probe on
the last layer's residual stream, averaged over a comment's tokens, on Jigsaw toxic comments with a
9:1 split; its toxic row is the "toxic direction" that the mechanism analysis compares value
vectors with. Jigsaw is not available offline, so the probe here is trained on the labelled texts
the project has: the SafeEdit reference replies of the data file (safe 0, unsafe 1), and any
labelled replies a user gives (`{"text", "label"}` JSONL or detoxedit's `data/labels/*.jsonl`).

A two-class softmax probe and a logistic regression are the same model (the softmax depends only
on the difference of the two rows), so the probe is an L2-regularised logistic regression on
standardised features; its direction, mapped back to the hidden-state space, is `w / scale`.
Replies to one request stay on one side of the held-out split (`split_by_group`), so the held-out
accuracy is not inflated by near-duplicate texts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text, read_text_file
from detoxedit.judges.training import Example, agreement, count_by_source, split_by_group

logger = logging.getLogger(__name__)

PROBE_FILE = "probe.json"


@dataclass
class ToxicProbe:
    """A unit toxic direction in the last layer's hidden-state space, with how well it separates held-out text."""

    direction: list[float]  # (d_model,), unit norm; positive means "more unsafe"
    bias: float = 0.0  # the fitted intercept (standardised feature space), for the record; the analysis uses the direction
    held_out: dict[str, Any] = field(default_factory=dict)  # accuracy, recall, specificity, n
    trained_on: dict[str, Any] = field(default_factory=dict)  # examples per source and label

    @property
    def vector(self) -> torch.Tensor:
        return torch.tensor(self.direction, dtype=torch.float32)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path, hidden_size: int | None = None) -> ToxicProbe:
        """A saved probe; refuses one whose size does not match the model's hidden size."""
        path = Path(path)
        try:
            data = json.loads(read_text_file(path, "toxic probe"))
            probe = cls(**data)
        except (ValueError, TypeError) as err:
            raise DetoxeditError(f"{path}: not a toxic probe written by `detoxedit analyze` ({err})") from err
        if hidden_size is not None and len(probe.direction) != hidden_size:
            raise DetoxeditError(f"{path}: the probe has {len(probe.direction)} dimensions but the model's hidden "
                                 f"size is {hidden_size} (was it trained on another model?)")
        return probe


def pooled_last_hidden(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 16,
                       max_tokens: int = 128, progress: bool = False) -> np.ndarray:
    """Each text's last-layer hidden state (the final norm's output, as Hugging Face's last `hidden_states`
    entry), averaged over its tokens: (n, d_model).

    Texts are encoded alone (no chat template), as the probe of Lee et al. reads comments, and cut to
    `max_tokens`. The forward stops at the final norm: the vocabulary projection would cost more than
    the rest of a small model and is not needed.
    """
    from tqdm.auto import tqdm

    from detoxedit.models.adapter import get_adapter
    from detoxedit.models.hooks import run_until

    final_norm = get_adapter(model).final_norm
    encoded = [tokenizer(t if t.strip() else " ")["input_ids"][:max_tokens] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))  # similar lengths share a batch: less padding
    pooled = np.zeros((len(texts), get_adapter(model).hidden_size), dtype=np.float32)
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="probe features", unit="batch", disable=not progress):
        rows = order[start:start + batch_size]
        input_ids, mask = _right_pad([encoded[i] for i in rows], tokenizer.pad_token_id or 0)
        states = run_until(model, final_norm, {"input_ids": input_ids, "attention_mask": mask}).float()  # (batch, seq, d_model)
        weights = mask.unsqueeze(-1).to(states.dtype)  # (batch, seq, 1)
        pooled[rows] = ((states * weights).sum(1) / weights.sum(1).clamp(min=1)).numpy()
    return pooled


def _right_pad(batch: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding: every real token keeps the position it has alone, so pooling over the mask is exact."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[row, :len(ids)] = 1
    return input_ids, mask  # (batch, width) each


def fit_probe(features: np.ndarray, labels: Sequence[int], c: float = 1.0, seed: int = 0) -> tuple[np.ndarray, float, Any]:
    """A balanced logistic regression on standardised features; (unit direction in raw space, bias, model)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    if len(set(y.tolist())) < 2:
        raise DetoxeditError("the toxic probe needs both safe (0) and unsafe (1) texts; the probe data has one class only")
    scaler = StandardScaler().fit(features)
    clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit(scaler.transform(features), y)
    raw = clf.coef_[0] / scaler.scale_  # w.(x - mu)/s = (w/s).x + const
    direction = raw / np.linalg.norm(raw)
    return direction, float(clf.intercept_[0]), (scaler, clf)


def train_probe(model: nn.Module, tokenizer: Any, examples: Sequence[Example], *, holdout: float = 0.1,
                seed: int = 0, progress: bool = False) -> ToxicProbe:
    """Fits the probe on all but a held-out tenth of the request groups, measures it there, then refits on all."""
    if len(examples) < 4:
        raise DetoxeditError(f"the toxic probe needs labelled texts; got {len(examples)} (give --probe-data or a "
                             "--data file with safe and unsafe reference replies)")
    features = pooled_last_hidden(model, tokenizer, [e.text for e in examples], progress=progress)
    index = {id(e): i for i, e in enumerate(examples)}
    train, test = split_by_group(examples, holdout, seed)
    held_out: dict[str, Any] = {}
    if test and len({e.label for e in train}) == 2:
        rows = [index[id(e)] for e in train]
        _, _, (scaler, clf) = fit_probe(features[rows], [e.label for e in train], seed=seed)
        scores = clf.predict_proba(scaler.transform(features[[index[id(e)] for e in test]]))[:, 1]
        held_out = agreement([e.label for e in test], [int(s >= 0.5) for s in scores]).as_dict()
        logger.info("Toxic probe, held-out accuracy %.3f on %d texts (%d request groups)", held_out["accuracy"],
                    len(test), len({e.group for e in test}))
    direction, bias, _ = fit_probe(features, [e.label for e in examples], seed=seed)
    return ToxicProbe(direction=direction.astype(float).tolist(), bias=bias, held_out=held_out,
                      trained_on={"examples": len(examples), "by_source": count_by_source(examples),
                                  "holdout": holdout, "seed": seed})


def probe_examples(data_files: Sequence[str | Path], label_files: Sequence[str | Path] = (),
                   data_root: str | Path | None = None) -> list[Example]:
    """Labelled texts for the probe: SafeEdit reference replies of `data_files`, plus users' label files."""
    from detoxedit.judges.training import examples_from_labels, examples_from_safeedit

    examples: list[Example] = []
    for path in data_files:
        examples += examples_from_safeedit(path)
    for path in label_files:
        examples += examples_from_labels(path, data_root)
    return examples
