"""The shipped judge's reported figures come from replies it was not trained on.

data/labels/judge_validation.json is written by the command that trained the shipped head (docs/judges.md).
For every reported fold it holds the keys of the replies measured and a digest of the replies fitted on. This
rebuilds each fold from the label files and the user's data, checks that it is the fold the numbers came from,
and that no reply measured in it (nor any copy of its text) was fitted on in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detoxedit.judges.embedded import SHIPPED_HEAD, Head
from detoxedit.judges.training import example_key
from detoxedit.judges.validation import build_protocol, digest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "data" / "labels" / "judge_validation.json"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(RECORD.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def protocol(record, shared_data):
    inputs = record["inputs"]
    return build_protocol([shared_data / "safeedit" / name for name in inputs["safeedit"]],
                          [ROOT / "data" / "labels" / name for name in inputs["labels"]],
                          [shared_data / "xstest" / name for name in inputs["xstest"]], shared_data)


def keys(examples, rows) -> list[str]:
    return [example_key(examples[i].text, examples[i].prompt)[:16] for i in rows]


@pytest.mark.parametrize("head", ["main", "reply_only"])
def test_every_reported_fold_is_disjoint_from_its_training_replies(record, protocol, head):
    folds = protocol.folds()
    reported = record["heads"][head]["folds"]
    assert [f["name"] for f in reported] == [f.name for f in folds]
    for fold, stored in zip(folds, reported):
        test, train = keys(protocol.examples, fold.test), keys(protocol.examples, fold.train)
        assert sorted(stored["test_keys"]) == sorted(test), fold.name  # the numbers were measured on these replies
        assert stored["train_digest"] == digest(train), fold.name  # ... by a head fitted on exactly these
        assert not set(test) & set(train), fold.name
        test_texts = {protocol.examples[i].text for i in fold.test}
        assert not any(protocol.examples[i].text in test_texts for i in fold.train), fold.name
    heldout = set(keys(protocol.examples, protocol.heldout))
    assert heldout and not heldout & set(keys(protocol.examples, protocol.pool))  # XSTest's test side never fitted


def test_the_shipped_heads_carry_the_recorded_validation(record):
    for head, folder in (("main", SHIPPED_HEAD), ("reply_only", SHIPPED_HEAD / "reply_only")):
        shipped = Head.load(folder)
        numbers = {f["name"]: {k: f[k] for k in ("tp", "fn", "fp", "tn")} for f in record["heads"][head]["folds"]}
        assert {name: {k: v[k] for k in ("tp", "fn", "fp", "tn")} for name, v in shipped.meta["validation"].items()} == numbers
        counts = lambda values: {k: values[k] for k in ("tp", "fn", "fp", "tn")}  # noqa: E731
        rates = shipped.meta["error_rates"]
        assert counts(rates) == counts(record["heads"][head]["pooled_loso"])
        assert [counts(a) for a in rates["alternatives"]] == [counts(record["heads"][head][f"pooled_{protocol}"])
                                                              for protocol in ("requests", "questions")]
