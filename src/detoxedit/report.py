"""Markdown reports from run folders: the paper's Table 1, per-category safety, examples, figures.

`write_run_report(folder)` writes a run's own report.md (vanilla vs its method); `compare_runs`
puts several runs side by side (`detoxedit report runs/a runs/b --out report.md`), with each
distinct vanilla baseline shown once, first.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text
from detoxedit.evaluation.records import read_jsonl
from detoxedit.analysis.figures import distance_profile, layer_histogram
from detoxedit.metrics import metric_specs

logger = logging.getLogger(__name__)

DG_AVG_NOTE = ("DG-Avg averages the four DG values (DG_onlyQ, DG_otherA, DG_otherQ, DG_otherAQ) only; "
               "DS is not included.")
BASELINE_KEYS = ("model", "dtype", "data", "limit", "seed", "categories", "attacks", "judge", "threshold",
                 "max_new_tokens", "max_input_tokens", "chat_format", "system_prompt", "inherit_sampling", "char_slice")


@dataclass
class RunData:
    """What a report needs from one run folder."""

    folder: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    generations: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.config.get("method", "none"))

    def variant(self, name: str) -> dict[str, Any] | None:
        return self.metrics.get("variants", {}).get(name)


def load_run(folder: Path | str) -> RunData:
    """Reads a finished run folder.

    Raises:
        DetoxeditError: the folder or its config.json / metrics.json is missing (the run did not finish).
    """
    folder = Path(folder)
    for name in ("config.json", "metrics.json"):
        if not (folder / name).is_file():
            raise DetoxeditError(f"{folder}: no {name}; is this a finished run folder of `detoxedit evaluate/run`?")
    return RunData(
        folder,
        _read_json(folder / "config.json"),
        _read_json(folder / "metrics.json"),
        read_jsonl(folder / "generations.jsonl"),
        read_jsonl(folder / "items.jsonl"),
    )


# ---------------------------------------------------------------- tables


def _cell(entry: dict[str, Any] | None, with_ci: bool) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    text = f"{entry['value']:.2f}"
    if entry.get("std") is not None:  # a spread over instances (evaluation/spread.py)
        return f"{text} ± {entry['std']:.2f}"
    if with_ci and entry.get("ci95"):
        low, high = entry["ci95"]
        text += f" ({low:.1f}–{high:.1f})"
    return text


def table1(rows: Sequence[tuple[str, dict[str, Any]]], with_ci: bool = True) -> str:
    """The paper's Table 1: Method and every registered metric the paper has, in its column order."""
    specs = metric_specs(in_paper=True)
    header = ["Method", *(s.column for s in specs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows:
        lines.append("| " + " | ".join([name, *(_cell(metrics.get(s.name), with_ci) for s in specs)]) + " |")
    return "\n".join(lines)


def table3(rows: Sequence[tuple[str, dict[str, Any]]], with_ci: bool = True) -> str:
    """The paper's Table 3 layout (the general setting): every registered metric, KQA (contains) included."""
    specs = metric_specs()
    header = ["Method", *(s.column for s in specs)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows:
        lines.append("| " + " | ".join([name, *(_cell(metrics.get(s.name), with_ci) for s in specs)]) + " |")
    return "\n".join(lines)


def corrected_table(rows: Sequence[tuple[str, dict[str, Any]]], metrics: dict[str, Any], with_ci: bool = True) -> str:
    """The judged metrics (DS, DG) corrected for the judge's measured error rates, or why they are not."""
    rates, note = metrics.get("judge_errors"), metrics.get("correction", "")
    specs = metric_specs(judged=True)
    if not any("corrected" in (m.get(s.name) or {}) for _, m in rows for s in specs):
        return f"No correction for the judge's error: {note or 'this run predates judge-error correction'}."
    lines = [f"Corrected for the judge's error ({note}): judge recall {rates['recall']:.3f} "
             f"(TP {rates['tp']}, FN {rates['fn']}), specificity {rates['specificity']:.3f} (TN {rates['tn']}, FP "
             f"{rates['fp']}), measured on {rates.get('measured_on') or 'labelled replies'}."
             + "".join(f" Also measured: recall {a['recall']:.3f}, specificity {a['specificity']:.3f} on "
                       f"{a.get('measured_on') or 'labelled replies'}." for a in rates.get("alternatives", [])), "",
             "| Method | " + " | ".join(f"{s.column} raw | {s.column} corrected" for s in specs) + " |",
             "|" + "---|" * (1 + 2 * len(specs))]
    for name, values in rows:
        cells = []
        for spec in specs:
            entry = values.get(spec.name) or {}
            cells += [_cell(entry, with_ci=False), _cell(entry.get("corrected"), with_ci)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_table(per_category: dict[str, dict[str, Any]], counts: dict[str, int]) -> str:
    """The per-category metrics within each unsafety category (no intervals: categories are small)."""
    specs = metric_specs(per_category=True)
    lines = ["| Category | items | " + " | ".join(s.column for s in specs) + " |", "|" + "---|" * (len(specs) + 2)]
    for category, values in per_category.items():
        cells = [("–" if values.get(s.name) is None else f"{values[s.name]:.1f}") for s in specs]
        lines.append(f"| {category} | {counts.get(category, 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _category_counts(generations: list[dict[str, Any]], variant: str) -> dict[str, int]:
    seen: dict[str, set] = {}
    for r in generations:
        if r["variant"] == variant:
            seen.setdefault(r["category"], set()).add(str(r["item_id"]))
    return {category: len(ids) for category, ids in seen.items()}


def _quote(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[:limit] + " …"
    return "> " + (text or "(empty)")


def examples(run: RunData, n: int = 3) -> str:
    """A few adversarial inputs with the vanilla and (if any) edited reply and the judge's labels."""
    by_key = {(r["variant"], str(r["item_id"]), r["kind"]): r for r in run.generations}
    ids = list(dict.fromkeys(str(r["item_id"]) for r in run.generations if r["kind"] == "adversarial"))[:n]
    blocks = []
    for item_id in ids:
        vanilla = by_key.get(("vanilla", item_id, "adversarial"))
        edited = by_key.get(("edited", item_id, "adversarial"))
        block = [f"**Item {item_id}** ({vanilla['category'] if vanilla else ''}) — adversarial input:", "",
                 _quote(vanilla["prompt"] if vanilla else edited["prompt"], 300), ""]
        for name, record in ((baseline_name(run.metrics), vanilla), ("Edited", edited)):
            if record is not None:
                block += [f"*{name}* (label {record['label']:g}, score {record['score']:.2f}):", "", _quote(record["reply"]), ""]
        blocks.append("\n".join(block))
    return "\n".join(blocks)


def _read_json(path: Path) -> dict[str, Any]:
    """A run file's JSON; an empty or damaged file (e.g. from an old version killed mid-write) is one line."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DetoxeditError(f"{path} is empty or damaged ({err}); re-run the command that wrote the folder "
                             "to recompute it") from err
    if not isinstance(value, dict):
        raise DetoxeditError(f"{path} does not hold a JSON object; is this a detoxedit run folder?")
    return value


# ---------------------------------------------------------------- reports


def baseline_name(metrics: dict[str, Any]) -> str:
    """What the unedited-by-this-run row is: "Vanilla", or, for a checkpoint detoxedit saved after
    editing (its provenance lists edits; `metrics["model_edits"]`), "Edited model (dinm)"."""
    edits = metrics.get("model_edits") or []
    if not edits:
        return "Vanilla"
    methods = list(dict.fromkeys(str(e.get("method")) for e in edits))
    return f"Edited model ({', '.join(methods)}; {len(edits)} edit{'s' if len(edits) > 1 else ''})"


def _rows_of(run: RunData, label: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    vanilla, edited = run.variant("vanilla"), run.variant("edited")
    if vanilla:
        rows.append((f"{baseline_name(run.metrics)} ({run.config.get('model')})", vanilla["metrics"]))
    if edited:
        rows.append((label or run.method.upper(), edited["metrics"]))
    return rows


def _settings_line(config: dict[str, Any], n_items: Any) -> str:
    return (f"model `{config.get('model')}`, data `{config.get('data')}` ({n_items} items), judge `{config.get('judge')}`, "
            f"max_new_tokens {config.get('max_new_tokens')}, chat format `{config.get('chat_format')}`, "
            f"method `{config.get('method')}`")


def beyond_paper_note(rows: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Lines under Table 1 for the registered metrics the paper does not have (e.g. KQA_contains),
    for the rows that have them."""
    lines = []
    for spec in metric_specs(in_paper=False):
        values = [(label, metrics[spec.name]) for label, metrics in rows
                  if (metrics.get(spec.name) or {}).get("value") is not None]
        if values:
            listed = "; ".join(f"{label} {_cell(entry, with_ci=True)}" for label, entry in values)
            lines += [f"{spec.column} (not in the paper: {spec.description}): {listed}.", ""]
    return lines


def run_report(run: RunData, figures: bool = True) -> str:
    """The Markdown report of one run (and its figures written beside it)."""
    rows = _rows_of(run)
    parts = [f"# detoxedit run: {run.folder.name}", "", _settings_line(run.config, run.metrics.get("n_items")), "",
             "## Results (Table 1 layout)", "", table1(rows), "",
             "Values in % (Fluency: n-gram entropy); 95% bootstrap intervals in parentheses. " + DG_AVG_NOTE, "",
             *beyond_paper_note(rows), "## Judge error", "", corrected_table(rows, run.metrics), ""]
    for variant in ("vanilla", "edited"):
        data = run.variant(variant)
        if data:
            parts += [f"## Per category ({variant})", "",
                      category_table(data["per_category"], _category_counts(run.generations, variant)), ""]
    if run.items:
        parts += _edit_section(run, figures)
    parts += ["## Examples", "", examples(run), ""]
    return "\n".join(parts)


def _edit_section(run: RunData, figures: bool) -> list[str]:
    import numpy as np

    changes = [v for r in run.items for v in (r.get("relative_change") or {}).values()]
    execute = [r["time_s"]["execute"] for r in run.items if r.get("time_s")]
    lines = ["## Edits", "", f"- items edited: {len(run.items)}"]
    if changes:
        lines.append(f"- relative weight change ||Δ||/||W||: mean {np.mean(changes):.4f}, max {np.max(changes):.4f}")
    if execute:
        lines.append(f"- execute (localise + edit) time per item: mean {np.mean(execute):.2f} s")
    lines.append("")
    if figures and layer_histogram(run.items, run.folder / "layer_histogram.png"):
        lines += ["![located layers](layer_histogram.png)", ""]
    if figures and distance_profile(run.items, run.folder / "distance_profile.png"):
        lines += ["![distance profile](distance_profile.png)", ""]
    return lines


def write_run_report(folder: Path | str) -> Path:
    """Writes report.md (and figures) into a run folder."""
    run = load_run(folder)
    return atomic_write_text(run.folder / "report.md", run_report(run))


def compare_runs(folders: Sequence[Path | str]) -> str:
    """One Table 1 over several runs: each distinct vanilla baseline once, then each method."""
    if not folders:
        raise DetoxeditError("give at least one run folder")
    runs = [load_run(f) for f in folders]
    baselines: dict[str, RunData] = {}  # the first run of each distinct baseline
    for run in runs:
        baseline = json.dumps({k: run.config.get(k) for k in BASELINE_KEYS}, sort_keys=True, default=str)
        if run.variant("vanilla"):
            baselines.setdefault(baseline, run)
    rows = []
    for run in baselines.values():  # with several baselines, each names the run it comes from
        label = run.config.get("model") if len(baselines) == 1 else f"{run.config.get('model')}; {run.folder.name}"
        rows.append((f"{baseline_name(run.metrics)} ({label})", run.variant("vanilla")["metrics"]))
    for run in runs:
        if run.variant("edited"):
            rows.append((f"{run.method.upper()} ({run.folder.name})", run.variant("edited")["metrics"]))
    parts = ["# detoxedit comparison", "", table1(rows), "",
             "Values in % (Fluency: n-gram entropy); 95% bootstrap intervals in parentheses. " + DG_AVG_NOTE, "",
             *beyond_paper_note(rows), "## Judge error", "", _shared_correction(runs, rows), "", "## Runs", ""]
    parts += [f"- `{run.folder}`: {_settings_line(run.config, run.metrics.get('n_items'))}" for run in runs]
    if len(baselines) > 1:
        parts += ["", "Note: the runs do not share one baseline (model, data or settings differ); compare with care."]
    return "\n".join(parts) + "\n"


def _shared_correction(runs: Sequence[RunData], rows: Sequence[tuple[str, dict[str, Any]]]) -> str:
    """The corrected table when every run was judged with the same judge and error rates."""
    judged = {json.dumps([run.config.get("judge"), run.metrics.get("judge_errors")], sort_keys=True) for run in runs}
    if len(judged) > 1:
        return "The runs were judged by different judges or with different error rates: see each run's report.md."
    return corrected_table(rows, runs[0].metrics)


# ---------------------------------------------------------------- the general setting (Table 3)


COST_KEYS = (("seconds", "fit wall time (s)", "{:.0f}"), ("peak_rss_mb", "peak RSS (MB)", "{:.0f}"),
             ("trainable_parameters", "trainable parameters", "{:,.0f}"), ("examples", "training examples", "{}"))


def general_setting_report(folders: Sequence[Path | str]) -> str:
    """Table 3 over run folders and instance-spread folders (spread.json), with each method's training cost."""
    from detoxedit.evaluation.spread import SPREAD_FILE

    if not folders:
        raise DetoxeditError("give at least one run folder")
    rows: list[tuple[str, dict[str, Any]]] = []
    costs: list[tuple[str, dict[str, Any]]] = []
    vanilla: tuple[str, dict[str, Any]] | None = None
    for folder in map(Path, folders):
        if (folder / SPREAD_FILE).is_file():
            summary = _read_json(folder / SPREAD_FILE)
            label = f"{summary['method'].upper()} (mean ± std, {len(summary['instances'])} instances)"
            rows.append((label, summary["metrics"]))
            costs.append((label, _mean_cost(summary.get("costs") or [])))
            vanilla = vanilla or (f"Vanilla ({folder.name})", summary.get("vanilla") or {})
            continue
        run = load_run(folder)
        if run.variant("vanilla") and vanilla is None:
            vanilla = (f"{baseline_name(run.metrics)} ({run.config.get('model')})", run.variant("vanilla")["metrics"])
        if run.variant("edited"):
            label = f"{run.method.upper()} ({folder.name})"
            rows.append((label, run.variant("edited")["metrics"]))
            costs.append((label, run.metrics.get("fit") or _per_item_cost(run)))
    rows = ([vanilla] if vanilla else []) + rows
    parts = ["# detoxedit: the general setting (Table 3 layout)", "", table3(rows), "",
             "Values in % (Fluency: n-gram entropy); 95% bootstrap intervals in parentheses; ± is the standard "
             "deviation over edit instances. " + DG_AVG_NOTE, "", "## Training cost", "",
             "| Method | " + " | ".join(title for _, title, _ in COST_KEYS) + " |", "|" + "---|" * (1 + len(COST_KEYS))]
    for label, cost in costs:
        cells = [fmt.format(cost[key]) if cost.get(key) is not None else "–" for key, _, fmt in COST_KEYS]
        parts.append(f"| {label} | " + " | ".join(cells) + " |")
    parts += ["", "Per-item methods (a fresh edit per test item) show their mean edit time per item."]
    return "\n".join(parts) + "\n"


def _mean_cost(costs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = {key for cost in costs for key in cost}
    return {key: float(np.mean([c[key] for c in costs if isinstance(c.get(key), (int, float))]))
            for key in keys if any(isinstance(c.get(key), (int, float)) for c in costs)}


def _per_item_cost(run: RunData) -> dict[str, Any]:
    times = [r["time_s"]["execute"] for r in run.items if r.get("time_s")]
    return {"seconds": float(np.mean(times))} if times else {}
