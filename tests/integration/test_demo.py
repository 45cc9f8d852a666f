"""`detoxedit demo` end to end on the real default model, with small limits so it stays quick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detoxedit.demo import DemoSettings, demo_config, pick_examples

pytestmark = pytest.mark.slow


def test_demo_runs_and_writes_its_folder(tmp_path: Path, capsys) -> None:
    from detoxedit.cli import main

    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(out), "--limit", "2", "--max-new-tokens", "6", "--general-limit", "2"])
    assert exit_info.value.code == 0
    for name in ("config.json", "generations.jsonl", "items.jsonl", "general.jsonl", "metrics.json", "report.md"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["n_items"] == 2 and metrics["method"] == "dinm"
    assert {"vanilla", "edited"} <= set(metrics["variants"])
    edited = metrics["variants"]["edited"]["metrics"]
    assert edited["DS"]["value"] is not None and edited["KQA"]["n"] == 2 and edited["Csum"]["n"] == 2
    printed = capsys.readouterr().out
    assert "after DINM" in printed and "DG-Avg" in printed and "Run folder" in printed
    flat = " ".join(printed.split())  # rich wraps long lines
    assert "The intervals also hold the judge's other measurements (recall" in flat  # the shipped alternatives


def test_the_correction_line_names_every_measurement_the_intervals_hold(tmp_path: Path) -> None:
    from detoxedit.demo import _correction_line

    rates = {"recall": 0.8, "specificity": 0.75, "alternatives": [{"recall": 0.6, "specificity": 0.9}]}
    metrics = {"judge_errors": rates, "variants": {"vanilla": {"metrics": {"DS": {"corrected": {"value": 50.0}}}}}}
    line = _correction_line(metrics, tmp_path)
    assert "recall 0.80, specificity 0.75" in line and "other measurements (recall 0.60, specificity 0.90)" in line
    del rates["alternatives"]
    assert "other measurements" not in _correction_line(metrics, tmp_path)
    metrics = {"judge_errors": None, "correction": "none: judge 'refusal' has no measured error rates", "variants": {}}
    assert _correction_line(metrics, tmp_path) == "Judge error: none: judge 'refusal' has no measured error rates."


def test_demo_config_uses_the_builtin_test_split_and_mini_sets() -> None:
    cfg = demo_config(DemoSettings(limit=3, judge="refusal"))
    assert cfg.data.endswith("safeedit_builtin_test.json") and cfg.method == "dinm"
    assert cfg.general and cfg.triviaqa.endswith("trivia.json") and cfg.xsum.endswith("xsum.json")
    assert cfg.limit == 3 and cfg.judge == "refusal"


def test_pick_examples_prefers_flipped_items_then_new_categories() -> None:
    def record(variant: str, item: int, label: float, category: str = "a") -> dict:
        return {"variant": variant, "item_id": item, "kind": "adversarial", "label": label, "category": category}

    generations = [record("vanilla", 0, 1.0), record("edited", 0, 1.0),
                   record("vanilla", 1, 1.0), record("edited", 1, 0.0)]
    pairs = pick_examples(generations, 1)
    assert pairs[0][0]["item_id"] == 1 and pairs[0][1]["label"] == 0.0
    generations = [record(v, i, label, c) for i, c in enumerate("aab") for v, label in (("vanilla", 1.0), ("edited", 0.0))]
    assert [before["item_id"] for before, _ in pick_examples(generations, 3)] == [0, 2, 1]


def test_metrics_tables_show_before_after_and_lenient_kqa() -> None:
    from rich.console import Console

    from detoxedit.demo import metrics_tables

    metrics = {"variants": {v: {"n_items": 2, "metrics": {"DS": {"value": ds}, "KQA": {"value": 0.0},
                                                          "KQA_contains": {"value": kqa}}}
                            for v, ds, kqa in [("vanilla", 0.0, 100.0), ("edited", 100.0, 0.0)]}}
    console = Console(width=100, record=True)
    for table in metrics_tables(metrics):
        console.print(table)
    text = console.export_text()
    assert "+100.0" in text and "KQA (contains)" in text and "-100.0" in text
    assert "corrected" not in text  # no judge error rates: no corrected table
    metrics["variants"]["vanilla"]["metrics"]["DS"]["corrected"] = {"value": 12.5, "ci95": [0.0, 30.0]}
    console = Console(width=100, record=True)
    for table in metrics_tables(metrics):
        console.print(table)
    text = console.export_text()
    assert "corrected for the judge's error" in text and "12.5" in text


def test_every_metric_header_of_the_demo_fits_an_80_column_terminal() -> None:
    from rich.console import Console

    from detoxedit.demo import metrics_tables
    from detoxedit.metrics import metric_specs

    metrics = {"variants": {v: {"n_items": 2, "metrics": {s.name: {"value": 50.0} for s in metric_specs()}}
                            for v in ("vanilla", "edited")}}
    console = Console(width=80, record=True)
    for table in metrics_tables(metrics):
        console.print(table)
    text = console.export_text()
    assert all(spec.column in text for spec in metric_specs())
    assert max(len(line) for line in text.splitlines()) <= 80
