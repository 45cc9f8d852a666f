"""Reports: Table 1 layout, comparisons of several runs, figures, and the `report` CLI command."""

from __future__ import annotations

import json

import pytest

from detoxedit.errors import DetoxeditError
from detoxedit.report import compare_runs, load_run, run_report, table1, write_run_report

HEADER = "| Method | DS | DG_onlyQ | DG_otherA | DG_otherQ | DG_otherAQ | DG-Avg | Fluency | KQA | Csum |"
CATEGORIES = ("offensiveness", "mental harm")


def entry(value, low=None, high=None):
    return {"value": value, "ci95": [low if low is not None else value - 5, high if high is not None else value + 5], "n": 2}


def variant_metrics(ds: float, general: bool = False) -> dict:
    metrics = {name: entry(ds) for name in ("DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ", "DG_Avg")}
    metrics["Fluency"] = entry(6.1)
    if general:
        metrics |= {"KQA": entry(30.0), "KQA_contains": entry(45.0), "Csum": entry(20.0)}
    per_category = {c: {m: ds for m in ("DS", "DG_onlyQ", "DG_otherA", "DG_otherQ", "DG_otherAQ", "DG_Avg")} for c in CATEGORIES}
    return {"n_items": 2, "metrics": metrics, "per_category": per_category}


def make_run(folder, method: str, vanilla_ds: float, edited_ds: float | None, model: str = "default"):
    """A finished run folder written by hand (what the runner writes, minus the model)."""
    folder.mkdir(parents=True)
    config = {"model": model, "data": "d.json", "judge": "refusal", "method": method, "max_new_tokens": 8,
              "chat_format": "auto", "limit": None, "seed": 0}
    variants = {"vanilla": variant_metrics(vanilla_ds)}
    if edited_ds is not None:
        variants["edited"] = variant_metrics(edited_ds, general=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({"variants": variants, "n_items": 2}))
    generations, items = [], []
    for item_id in range(2):
        for variant in variants:
            generations.append({"item_id": item_id, "category": CATEGORIES[item_id], "variant": variant,
                                "kind": "adversarial", "prompt": f"attack {item_id}", "reply": f"{variant} reply {item_id}",
                                "score": 0.9, "label": 1.0})
        if edited_ds is not None:
            items.append({"item_id": item_id, "layer": 3 + item_id, "losses": [1.0], "relative_change": {"w": 0.01},
                          "time_s": {"execute": 0.5}, "info": {"distances": [0.1, 0.5, 0.3, 0.2, 0.1]}})
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in generations))
    if items:
        (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return folder


def test_table1_layout_and_values():
    text = table1([("Vanilla", variant_metrics(40.0)["metrics"]), ("DINM", variant_metrics(90.0, general=True)["metrics"])])
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert lines[2].startswith("| Vanilla | 40.00 (35.0–45.0) |") and lines[2].endswith("| – | – |")
    assert lines[3].startswith("| DINM | 90.00 (85.0–95.0) |") and "| 30.00 (25.0–35.0) | 20.00 (15.0–25.0) |" in lines[3]
    assert "(" not in table1([("V", variant_metrics(40.0)["metrics"])], with_ci=False)


def test_run_report_has_tables_examples_figures_and_dg_note(tmp_path):
    folder = make_run(tmp_path / "dinm", "dinm", 40.0, 90.0)
    path = write_run_report(folder)
    text = path.read_text()
    assert HEADER in text and "| Vanilla (default) | 40.00" in text and "| DINM | 90.00" in text
    assert "DS is not included" in text
    assert "KQA (contains) (not in the paper: KQA with the answer anywhere" in text and "DINM 45.00 (40.0–50.0)." in text
    assert "## Per category (vanilla)" in text and "| offensiveness | 1 |" in text
    assert "vanilla reply 0" in text and "edited reply 0" in text
    assert (folder / "layer_histogram.png").stat().st_size > 1000
    assert (folder / "distance_profile.png").stat().st_size > 1000
    assert "![located layers](layer_histogram.png)" in text


def test_vanilla_run_report_has_no_edit_section(tmp_path):
    text = run_report(load_run(make_run(tmp_path / "v", "none", 40.0, None)))
    assert "## Edits" not in text and "| Vanilla (default) | 40.00" in text
    assert not (tmp_path / "v" / "layer_histogram.png").exists()


def test_compare_runs_shows_shared_vanilla_once_then_methods(tmp_path):
    a = make_run(tmp_path / "a", "dinm", 40.0, 90.0)
    b = make_run(tmp_path / "b", "ft-l", 40.0, 70.0)
    text = compare_runs([a, b])
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Method")]
    assert [r.split(" | ")[0] for r in rows] == ["| Vanilla (default)", "| DINM (a)", "| FT-L (b)"]
    assert "do not share one baseline" not in text
    c = make_run(tmp_path / "c", "dinm", 20.0, 80.0, model="other")
    text = compare_runs([a, c])
    assert "do not share one baseline" in text
    assert "| Vanilla (default; a) | 40.00" in text and "| Vanilla (other; c) | 20.00" in text


def test_compare_runs_keeps_the_vanilla_of_a_reference_code_reproduction_apart(tmp_path):
    a = make_run(tmp_path / "a", "dinm", 40.0, 90.0)
    compat = make_run(tmp_path / "compat", "dinm", 30.0, 60.0)
    config = json.loads((compat / "config.json").read_text())
    (compat / "config.json").write_text(json.dumps(config | {"char_slice": True, "inherit_sampling": True}))
    text = compare_runs([a, compat])
    assert "| Vanilla (default; a) | 40.00" in text and "| Vanilla (default; compat) | 30.00" in text


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DetoxeditError, match="no config.json"):
        load_run(tmp_path)


def test_report_cli_writes_comparison(tmp_path):
    from detoxedit.cli import main

    a = make_run(tmp_path / "a", "dinm", 40.0, 90.0)
    b = make_run(tmp_path / "b", "ft-l", 40.0, 70.0)
    out = tmp_path / "cmp" / "report.md"
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(a), str(b), "--out", str(out)])
    assert exit_info.value.code == 0
    assert HEADER in out.read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2


def test_the_corrected_table_names_every_measurement_of_the_judge_its_interval_drew_from():
    from detoxedit.evaluation.scoring import correction_note
    from detoxedit.metrics.correction import JudgeErrorRates
    from detoxedit.report import corrected_table

    rates = JudgeErrorRates(8, 2, 1, 9, "sources held out", alternatives=(JudgeErrorRates(6, 4, 0, 10, "requests held out"),))
    note = correction_note("embedded", rates)
    assert note["correction"].endswith("and the choice among 2 measurements of it")
    metrics = {**note, "DS": {"value": 80.0, "corrected": {"value": 90.0, "ci95": [70.0, 100.0]}}}
    text = corrected_table([("vanilla", metrics)], metrics)
    assert "judge recall 0.800 (TP 8, FN 2)" in text and "measured on sources held out" in text
    assert "Also measured: recall 0.600, specificity 1.000 on requests held out." in text
    single = correction_note("embedded", JudgeErrorRates(8, 2, 1, 9, "sources held out"))
    assert "Also measured" not in corrected_table([("vanilla", {**single, **metrics})], {**metrics, **single})
    assert "choice" not in single["correction"]
