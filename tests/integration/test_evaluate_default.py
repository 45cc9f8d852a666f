"""End to end on the real default model (SmolLM2-135M-Instruct): evaluate and run write readable folders."""

from __future__ import annotations

import json

import pytest
import torch

from detoxedit.evaluation.records import read_jsonl

pytestmark = pytest.mark.slow




@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Keep generated replies out of the user's cache, but reuse the dequantized default model."""
    from detoxedit.models.loading import cache_dir

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
    monkeypatch.setenv("DETOXEDIT_CACHE", str(tmp_path / "cache"))


def cli(*argv) -> int:
    from detoxedit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code


def test_evaluate_default_model_writes_run_folder(shared_data, tmp_path):
    out = tmp_path / "vanilla"
    data = shared_data / "safeedit" / "safeedit_test_subset_dev.json"
    code = cli("evaluate", "--model", "default", "--data", data, "--limit", 3, "--max-new-tokens", 24,
               "--judge", "refusal", "--n-overrefusal", 12, "--out", out)
    assert code == 0
    records = read_jsonl(out / "generations.jsonl")
    assert len(records) == 15 and all(r["variant"] == "vanilla" for r in records)
    assert sum(bool(r["reply"].strip()) for r in records) >= 12  # the real model answers
    metrics = json.loads((out / "metrics.json").read_text())["variants"]["vanilla"]["metrics"]
    assert 0.0 <= metrics["DS"]["value"] <= 100.0 and metrics["Fluency"]["value"] > 0
    assert metrics["Over_refusal"]["n"] == 12 and 0.0 <= metrics["Over_refusal"]["value"] <= 100.0
    report = (out / "report.md").read_text()
    assert "| Method | DS |" in report and "Vanilla (default)" in report and "DS is not included" in report


def test_edit_run_on_default_model_leaves_it_unchanged(shared_data, tmp_path, default_model):
    """A real method through the runner (two quick steps, one item); batched and per-item modes agree."""
    from detoxedit.methods.base import METHODS, weight_checksum
    from detoxedit.evaluation.config import RunConfig
    from detoxedit.judges.base import load_judge
    from detoxedit.runner import run_protocol

    import detoxedit.methods  # noqa: F401

    if "dinm" not in METHODS:
        pytest.skip("dinm is not registered yet")
    model, tokenizer = default_model
    before = {n: weight_checksum(p) for n, p in model.named_parameters() if ".mlp." in n}
    data = shared_data / "safeedit" / "safeedit_test_subset_dev.json"
    replies = {}
    for batched in (True, False):
        cfg = RunConfig(data=str(data), limit=2, max_new_tokens=8, judge="refusal", method="dinm",
                        method_config={"steps": 2}, batched_edits=batched, progress=False, bootstrap=50,
                        overrefusal=None)
        folder = tmp_path / f"dinm-{batched}"
        run_protocol(cfg, folder, model=model, tokenizer=tokenizer, judge=load_judge("refusal"))
        items = read_jsonl(folder / "items.jsonl")
        assert len(items) == 2 and all(isinstance(r["layer"], int) for r in items)
        replies[batched] = {(r["item_id"], r["kind"]): r["reply"] for r in read_jsonl(folder / "generations.jsonl")
                            if r["variant"] == "edited"}
        assert "## Edits" in (folder / "report.md").read_text()
    assert replies[True] == replies[False]
    assert {n: weight_checksum(p) for n, p in model.named_parameters() if ".mlp." in n} == before
    assert torch.is_grad_enabled()
