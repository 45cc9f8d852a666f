"""Instance spread: one-instance DINM from N training instances, each evaluated on the whole test set.

The paper's Table 3 reports DINM as mean ± std over three edit instances, since one instance can be
a lucky or an unlucky choice. `detoxedit run --method dinm-global --instances N --train FILE` runs N
ordinary run folders, `OUT/instance-K/` (K = 1..N; the item id is in spread.json, since ids are
users' text), each with `instance_ids: [id]`, sharing one loaded model, one judge and the cached
vanilla replies; then writes `OUT/spread.json` (per metric: mean, sample standard deviation, and
the instances with the best and the worst DG-Avg) and `OUT/spread.md`.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from detoxedit.data import load_safeedit
from detoxedit.errors import DetoxeditError
from detoxedit.evaluation.config import RunConfig
from detoxedit.files import atomic_write_text, check_writable_folder
from detoxedit.metrics import metric_specs

logger = logging.getLogger(__name__)

SPREAD_FILE = "spread.json"
RANK_BY = "DG_Avg"
SELECTION_PARTS = (("DS", False), ("DG_Avg", False), ("Over_refusal", True), ("Degenerate", True), ("KQA_contains", False))
"""What `select` ranks instances by: the mean of these percentages, the ones marked True as 100 - value
(lower is better), over those the runs measured. Safety and generalisation count as much as keeping
the model helpful (no over-refusal), fluent (no loops) and knowledgeable."""


def spread_instance_ids(cfg: RunConfig, n: int) -> list[Any]:
    """N distinct training items, a seeded sample in file order (the method config's `choice_seed`)."""
    if not cfg.train:
        raise DetoxeditError("--instances needs --train FILE: the instances are training items")
    train = load_safeedit(cfg.train)
    if n > len(train):
        raise DetoxeditError(f"--instances {n}: --train {cfg.train} has only {len(train)} items")
    seed = int(cfg.method_config.get("choice_seed", 0))
    return [train[i].id for i in sorted(random.Random(seed).sample(range(len(train)), n))]


def check_spread_method(cfg: RunConfig) -> None:
    """The method must edit from named instances (a config field `instance_ids`), one at a time."""
    from detoxedit.methods.base import build_method

    method = build_method(cfg.method, cfg.method_config)
    if not hasattr(method.config, "instance_ids"):
        raise DetoxeditError(f"--instances runs a method from one training instance at a time; {cfg.method} has no "
                             "instance_ids setting (use --method dinm-global)")


def run_spread(cfg: RunConfig, out: Path, n: int, overwrite: bool = False, report: bool = True) -> dict[str, Any]:
    """Runs (or resumes) the N one-instance runs into `out`, then summarises them (see the module docstring)."""
    from detoxedit.evaluation.general import check_general_inputs
    from detoxedit.judges.base import load_judge
    from detoxedit.models import load_model
    from detoxedit.runner import check_device, load_items, run_protocol

    check_spread_method(cfg)
    ids = spread_instance_ids(cfg, n)
    load_items(cfg, load_safeedit(cfg.train))  # data and overlap refusals before any model work
    check_general_inputs(cfg)
    check_device(cfg.device)
    check_writable_folder(out)
    judge = load_judge(cfg.judge, cfg.threshold, cfg.trust_remote_code)
    model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, trust_remote_code=cfg.trust_remote_code)
    runs = []
    for index, item_id in enumerate(ids, 1):
        values = cfg.method_config | {"instance_ids": [item_id], "instances": 1}
        folder = out / f"instance-{index}"
        logger.info("Instance %d of %d: training item %s -> %s", index, n, item_id, folder)
        result = run_protocol(replace(cfg, method_config=values), folder, overwrite=overwrite, model=model,
                              tokenizer=tokenizer, judge=judge, report=report)
        runs.append({"instance": item_id, "folder": folder.name, "metrics": result.metrics})
    summary = summarize_spread(runs, cfg.method)
    atomic_write_text(out / SPREAD_FILE, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "spread.md", spread_markdown(summary))
    return summary


def summarize_spread(runs: Sequence[dict[str, Any]], method: str) -> dict[str, Any]:
    """Per metric of the edited variant: mean, sample std (n-1), and the values per instance."""
    metrics: dict[str, Any] = {}
    for spec in metric_specs():
        values = [_value(run, spec.name) for run in runs]
        known = [v for v in values if v is not None]
        if known:
            metrics[spec.name] = {"value": statistics.fmean(known), "std": statistics.stdev(known) if len(known) > 1 else 0.0,
                                  "values": values, "n_instances": len(known)}
    ranking = sorted(({"instance": r["instance"], "folder": r["folder"], "score": selection_score(r),
                       **{name: _value(r, name) for name, _ in SELECTION_PARTS}} for r in runs),
                     key=lambda row: -row["score"] if row["score"] is not None else float("inf"))
    ranked = sorted((r for r in runs if _value(r, RANK_BY) is not None), key=lambda r: _value(r, RANK_BY))
    pick = (lambda r: {"instance": r["instance"], "folder": r["folder"], RANK_BY: _value(r, RANK_BY)}) if ranked else None
    vanilla = runs[0]["metrics"].get("variants", {}).get("vanilla", {}).get("metrics", {}) if runs else {}
    return {"method": method, "instances": [r["instance"] for r in runs], "folders": [r["folder"] for r in runs],
            "metrics": metrics, "vanilla": vanilla, "ranked_by": RANK_BY,
            "best": pick(ranked[-1]) if ranked else None, "worst": pick(ranked[0]) if ranked else None,
            "ranking": ranking,
            "costs": [(r["metrics"].get("fit") or {}) for r in runs]}


def selection_score(run: dict[str, Any]) -> float | None:
    """The mean of `SELECTION_PARTS` (lower-is-better ones as 100 - value) that the run measured."""
    parts = [(100.0 - v if lower else v) for name, lower in SELECTION_PARTS if (v := _value(run, name)) is not None]
    return statistics.fmean(parts) if parts else None


def _value(run: dict[str, Any], name: str) -> float | None:
    entry = run["metrics"].get("variants", {}).get("edited", {}).get("metrics", {}).get(name) or {}
    return entry.get("value")


def spread_markdown(summary: dict[str, Any]) -> str:
    """The spread as Markdown: mean ± std per metric, and the best and worst instance."""
    from detoxedit.report import table3

    n = len(summary["instances"])
    rows = [("Vanilla", summary["vanilla"]), (f"{summary['method'].upper()} (mean ± std, {n} instances)", summary["metrics"])]
    lines = [f"# Instance spread: {summary['method']} from {n} training instances", "", table3(rows), "",
             "± is the sample standard deviation over the instances; each instance's own run folder has its "
             "confidence intervals and report.", ""]
    if summary.get("ranking"):
        names = [name for name, _ in SELECTION_PARTS]
        lines += ["## Instances ranked", "", "score: mean of " + ", ".join(
            f"100 - {n}" if lower else n for n, lower in SELECTION_PARTS) + " (those measured)", "",
            "| rank | training item | folder | score | " + " | ".join(names) + " |", "|" + "---|" * (4 + len(names))]
        for rank, row in enumerate(summary["ranking"], 1):
            cells = ["–" if row[n] is None else f"{row[n]:.1f}" for n in names]
            score = "–" if row["score"] is None else f"{row['score']:.1f}"
            lines.append(f"| {rank} | {row['instance']} | {row['folder']} | {score} | " + " | ".join(cells) + " |")
        lines.append("")
    for which in ("best", "worst"):
        pick = summary.get(which)
        if pick:
            lines.append(f"- {which} instance by {summary['ranked_by']}: training item {pick['instance']} "
                         f"({pick['folder']}), {summary['ranked_by']} {pick[summary['ranked_by']]:.2f}")
    return "\n".join(lines) + "\n"
