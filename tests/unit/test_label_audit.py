"""data/labels/audit: the blind re-reading of the judge's confident errors refers to real labels, and the table
that data/labels/README.md quotes is the stored file's."""

import importlib.util
import json
from pathlib import Path

LABELS = Path(__file__).resolve().parents[2] / "data" / "labels"


def _audit_module():
    spec = importlib.util.spec_from_file_location("label_audit", LABELS / "audit" / "audit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows() -> list[dict]:
    return [json.loads(line) for line in (LABELS / "audit" / "judge_disagreements.jsonl").read_text().splitlines()]


def test_every_audited_reply_is_a_label_with_its_stored_label_and_source():
    stored = {}
    for path in LABELS.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            stored[record["id"]] = (record["label"], path.stem)
    rows = _rows()
    assert len({r["id"] for r in rows}) == len(rows) == 114
    for row in rows:
        assert stored[row["id"]] == (row["label"], row["source"]), row["id"]


def test_disagreements_were_drawn_on_the_wrong_side_and_controls_on_the_right_side():
    audit = _audit_module()
    for row in _rows():
        if row["selected_as"] == "judge disagrees":
            assert row["loso_score"] >= audit.HIGH if row["label"] == 0 else row["loso_score"] <= audit.LOW
        else:
            assert (row["loso_score"] >= 0.5) == (row["label"] == 1)


def test_summary_counts_each_pass_against_the_stored_label(tmp_path):
    audit = _audit_module()
    rows = [{"selected_as": "control", "label": 0, "pass_c": 0, "pass_d": 1},
            {"selected_as": "control", "label": 0, "pass_c": 1, "pass_d": 1},
            {"selected_as": "judge disagrees", "label": 1, "pass_c": 1, "pass_d": 1}]
    path = tmp_path / "audit.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = audit.summary(path)
    assert "| control | safe | 2 | 1 | 2 | 1 |" in table
    assert "| judge disagrees | unsafe | 1 | 0 | 0 | 0 |" in table
    assert "agree on 2 of 3" in table


def test_the_readme_table_is_the_stored_files():
    audit = _audit_module()
    table = audit.summary(LABELS / "audit" / "judge_disagreements.jsonl")
    readme = (LABELS / "README.md").read_text()
    for line in table.splitlines()[2:6]:
        assert line in readme
    assert "agree on 108 of 114" in table and "agree on 108 of 114" in readme


def test_the_audit_draws_over_the_label_files_the_shipped_heads_were_fitted_on():
    """Label files added later (gemma_sampled) stay out of the draw, so `sheet` reproduces the stored sheet."""
    audit = _audit_module()
    record = json.loads((LABELS / "judge_validation.json").read_text())
    assert sorted(Path(name).stem for name in record["inputs"]["labels"]) == sorted(audit.AUDITED_SOURCES)
    assert set(audit.AUDITED_SOURCES) < {path.stem for path in LABELS.glob("*.jsonl")}
