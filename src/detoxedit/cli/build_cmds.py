"""`detoxedit build` (construct a SafeEdit-format benchmark) and `detoxedit demo` (the README's main job)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from detoxedit.cli import app
from detoxedit.cli import options as opt
from detoxedit.errors import DetoxeditError

console = Console()


def parse_splits(text: str) -> tuple[float, float, float]:
    """``"0.6,0.2,0.2"`` -> (0.6, 0.2, 0.2); a clear error for anything else."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as err:
        raise DetoxeditError(f"--splits {text!r}: expected three numbers train,val,test, e.g. 0.6,0.2,0.2") from err
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise DetoxeditError(f"--splits {text!r}: expected three non-negative numbers train,val,test, e.g. 0.6,0.2,0.2")
    return values  # type: ignore[return-value]


@app.command()
def build(
    out: Path = typer.Option(..., "--out", "-o",
                             help="Output base name: FILE.json writes FILE_train.json, FILE_val.json, FILE_test.json."),
    questions: Path = typer.Option(None, help="Harmful questions by category (YAML); default: the built-in set."),
    templates: Path = typer.Option(None, help="Jailbreak templates with one {question} slot (YAML); default: built-in."),
    refusals: Path = typer.Option(None, help="Refusal templates per category (YAML); default: built-in."),
    knowledge: Path = typer.Option(None, help="Benign {prompt, answer} pairs (YAML); default: built-in."),
    model: str = opt.MODEL,
    judge: str = typer.Option("embedded", help="Judge that keeps a reply only if unsafe: embedded | refusal | hf:PATH."),
    seed: int = typer.Option(0, help="Seed of every choice (splits, templates, generalisation inputs)."),
    splits: str = typer.Option("0.6,0.2,0.2", help="Train,val,test fractions of each category's questions."),
    per_question: int = typer.Option(25, help="Templates tried per question (bounds generation cost; capped at the "
                                     "number of templates; 25 = every built-in one)."),
    max_new_tokens: int = typer.Option(64, help="New tokens per generated reply."),
    reviewed: Path = typer.Option(None, help="YAML of replies read and found not unsafe (dropped whatever the judge "
                                  "says); default: the built-in review when every source is the built-in one."),
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Build a SafeEdit-format benchmark: questions x templates, the model's own unsafe replies, splits by question.

    With every option at its default this rebuilds the shipped benchmark
    (detoxedit/data/builtin/safeedit_builtin_{train,val,test}.json) byte for byte on CPU.
    """
    from detoxedit.data import build as pipeline
    from detoxedit.data import builtin
    from detoxedit.files import check_writable_folder
    from detoxedit.judges import load_judge
    from detoxedit.models import load_model

    config = _build_config(seed, splits, per_question, max_new_tokens)
    sources = pipeline.load_sources(questions or builtin.QUESTIONS, templates or builtin.TEMPLATES,
                                    refusals or builtin.REFUSALS, knowledge or builtin.KNOWLEDGE)
    pipeline.plan_candidates(sources, config, str(questions or builtin.QUESTIONS))  # fail before loading
    builtin_sources = not any((questions, templates, refusals, knowledge))
    review_file = reviewed or (builtin.REVIEWED if builtin_sources else None)
    not_unsafe = pipeline.load_reviewed(review_file) if review_file else {}
    safety_judge = load_judge(judge, trust_remote_code=trust_remote_code)
    check_writable_folder(Path(out).parent, what="the folder of --out")
    lm, tokenizer = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    result = pipeline.build_benchmark(sources, lm, tokenizer, safety_judge, config, not_unsafe=not_unsafe)
    paths = pipeline.write_splits(result, out)
    _print_build_summary(result, paths)


def _build_config(seed: int, splits: str, per_question: int, max_new_tokens: int):
    from detoxedit.data.build import BuildConfig
    from detoxedit.errors import ConfigError

    try:
        return BuildConfig(seed=seed, splits=parse_splits(splits), per_question=per_question,
                           max_new_tokens=max_new_tokens)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _print_build_summary(result, paths: dict[str, Path]) -> None:
    table = Table(title="Built benchmark")
    table.add_column("split")
    table.add_column("items", justify="right")
    table.add_column("file")
    for split, path in paths.items():
        table.add_row(split, str(len(result.splits[split])), str(path))
    console.print(table)
    dropped = ", ".join(f"{c}: {n}" for c, n in result.dropped_by_category.items()) or "none"
    console.print(f"{result.candidates} adversarial inputs; {result.dropped} dropped ({dropped}): "
                  f"{result.dropped - result.rejected_by_reading} whose reply the judge found safe or empty, "
                  f"{result.rejected_by_reading} that reading found not unsafe.", highlight=False)


@app.command()
def demo(
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (results, tables, config); default runs/demo, "
                             "or runs/demo-general with --setting general (one run folder per method inside)."),
    limit: int = typer.Option(None, help="Test items to edit, a seeded sample (default 8; 0: the whole test split)."),
    max_new_tokens: int = typer.Option(None, help="New tokens per safety reply (default 64, as the benchmark was built)."),
    general_limit: int = typer.Option(None, help="Trivia and summary items for KQA/Csum (default: all)."),
    judge: str = typer.Option(None, help="Safety judge (default: embedded, else refusal if no head is shipped)."),
    setting: str = typer.Option("per-item", help="per-item: DINM edits from each test item (the paper's Table 1); "
                                "general: self-reminder, one-instance DINM, SFT and DPO each fitted once on the "
                                "built-in train split, side by side (the paper's Table 3)."),
    device: str = opt.DEVICE,
) -> None:
    """Show the whole idea on the default model: it answers jailbreaks, DINM edits it from one instance, it refuses."""
    from detoxedit.demo import DemoSettings, run_demo, run_general_demo

    if setting not in ("per-item", "general"):
        raise DetoxeditError(f"--setting must be per-item or general, got {setting!r}")
    out = out or Path("runs/demo-general" if setting == "general" else "runs/demo")
    settings = DemoSettings.with_overrides(out=out, limit=limit, max_new_tokens=max_new_tokens,
                                           general_limit=general_limit, judge=judge, device=device)
    if limit == 0:
        settings.limit = None
    if setting == "general":
        run_general_demo(settings, console=console)
    else:
        run_demo(settings, console=console)
