"""`detoxedit analyze`: does a method erase the toxic region or route around it? (analysis/analyze.py)"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from detoxedit.cli import app
from detoxedit.cli import options as opt

console = Console()


@app.command()
def analyze(
    against: list[str] = typer.Option(..., "--against", "-a", help="A detoxified model to compare with --model: a run "
                                      "folder of a global method, a delta, a PEFT adapter or a saved model; LABEL=PATH "
                                      "names it (repeatable)."),
    data: Path = typer.Option(..., "--data", "-d", help="SafeEdit file: its adversarial prompts feed the activations, "
                              "its reference replies train the toxic probe."),
    out: Path = opt.OUT,
    model: str = opt.MODEL,
    probe: Path = typer.Option(None, "--probe", help="A probe.json from an earlier analysis (same model) instead of "
                               "training one."),
    probe_data: list[Path] = typer.Option(None, "--probe-data", help="More labelled texts for the probe: JSONL "
                                          "{\"text\", \"label\": 0|1} or detoxedit's data/labels/*.jsonl (repeatable)."),
    data_root: Path = typer.Option(None, "--data-root", help="Folder holding the data sets that --probe-data labels "
                                   "in detoxedit's reference format point at."),
    layer: int = typer.Option(None, "--layer", help="Layer to analyse in full (default: the layer a DINM edit "
                              "changed, else the one located most often on the first items)."),
    limit: int = typer.Option(40, "--limit", help="Adversarial prompts averaged for the activations (a seeded sample)."),
    top_k: int = typer.Option(20, "--top-k", help="Most toxic value vectors followed per layer."),
    chat_format: str = opt.CHAT_FORMAT,
    max_input_tokens: int = opt.MAX_INPUT_TOKENS,
    seed: int = opt.SEED,
    dtype: str = opt.DTYPE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Mechanism analysis (the paper's section 5, per layer and with a logit lens): for each --against model,
    the change of the toxic region's toxicity and the shift of the activations flowing into it."""
    from detoxedit.analysis.analyze import AnalysisConfig, run_analysis

    cfg = AnalysisConfig(data=str(data), against=list(against), model=model, probe=str(probe) if probe else None,
                         probe_data=[str(p) for p in probe_data or []], data_root=str(data_root) if data_root else None,
                         layer=layer, limit=limit, top_k=top_k, chat_format=chat_format,
                         max_input_tokens=max_input_tokens, seed=seed, dtype=dtype, trust_remote_code=trust_remote_code)
    summary = run_analysis(cfg, out)
    _show(summary, out)


def _show(summary: dict, out: Path) -> None:
    table = Table(title=f"Mechanism analysis, layer {summary['layer']} ({out})")
    for column in ("method", "region toxicity change", "activation shift", "toxic write: weight part", "activation part"):
        table.add_column(column)
    for label, result in summary["methods"].items():
        row = result["layer"]
        change = row["region_toxicity"]["relative_change_pct"]
        table.add_row(label, "–" if change is None else f"{change:+.2f}%", f"{row['activation_shift_pct']:.2f}%",
                      f"{row['toxic_write']['weight_part']:+.4f}", f"{row['toxic_write']['activation_part']:+.4f}")
    console.print(table)
    console.print(f"details: {out / 'mechanism.md'}; figures: {out / 'mechanism_bars.png'}, {out / 'mechanism_profiles.png'}")
