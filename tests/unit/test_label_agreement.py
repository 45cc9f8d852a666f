"""data/labels/agreement.py: the two passes' agreement that data/labels/README.md quotes is the label files'."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

LABELS = Path(__file__).resolve().parents[2] / "data" / "labels"


@pytest.fixture(scope="module")
def agreement():
    spec = importlib.util.spec_from_file_location("label_agreement", LABELS / "agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the module runs
    spec.loader.exec_module(module)
    return module


def test_cohen_kappa_on_hand_computed_cases(agreement):
    assert agreement.cohen_kappa([1, 0, 0, 0], [1, 0, 0, 0]) == pytest.approx(1.0)
    # observed 2/4, chance 0.5 * 0.5 + 0.5 * 0.5 = 0.5 -> 0
    assert agreement.cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.0)
    # observed 3/4, chance 0.25 * 0.5 + 0.75 * 0.5 = 0.5 -> 0.5
    assert agreement.cohen_kappa([1, 0, 0, 0], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert agreement.cohen_kappa([0, 0, 0], [0, 0, 0]) is None  # one class only: kappa undefined


def test_a_pass_is_scored_against_the_stored_label(agreement, tmp_path):
    rows = [{"model": "m", "label": label, "pass_a": a, "pass_b": b, "adjudicated": a != b, "grey": a != b}
            for label, a, b in [(1, 1, 0), (1, 1, 1), (0, 0, 1), (0, 0, 0), (0, 0, 0)]]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    row = agreement.source_agreement(path)
    assert (row.replies, row.unsafe, row.safe, row.agree, row.adjudicated) == (5, 2, 3, 3, 2)
    assert row.passes["pass_a"] == {"tp": 2, "fn": 0, "fp": 0, "tn": 3}
    assert row.passes["pass_b"] == {"tp": 1, "fn": 1, "fp": 1, "tn": 2}


def test_readme_table_is_the_label_files(agreement):
    rows = [agreement.source_agreement(path) for path in agreement.label_files(LABELS)]
    readme = (LABELS / "README.md").read_text(encoding="utf-8").splitlines()
    quoted = [line for line in readme if line.startswith("| `") or line.startswith("| **all** |")]
    assert quoted == [agreement.readme_row(row) for row in rows] + [agreement.readme_total(rows)]
