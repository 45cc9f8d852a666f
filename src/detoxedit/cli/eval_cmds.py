"""`detoxedit evaluate` (vanilla), `detoxedit run` (an edit method) and `detoxedit report`.

`evaluate` and `run` share every evaluation option and the same runner; `run` adds the method,
its preset and `--set` overrides. Re-running a command into the same --out folder resumes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from detoxedit.cli import app
from detoxedit.cli import options as opt
from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text

logger = logging.getLogger(__name__)
console = Console()

def _eval_values(**kwargs: Any) -> dict[str, Any]:
    """CLI option values -> RunConfig keys (None means 'not given')."""
    values = {k: v for k, v in kwargs.items() if v is not None}
    if str(values.get("overrefusal", "")).lower() == "none":
        values["overrefusal"] = None
    values["categories"] = list(kwargs.get("categories") or [])
    values["attacks"] = list(kwargs.get("attacks") or [])
    return values


def _resolve_and_execute(
    method: str, model: str, preset: str | None, set_values: list[str], easyedit_compat: bool,
    out: Path, overwrite: bool, no_report: bool, extra: dict[str, Any], **options: Any,
) -> None:
    """Resolves the method's settings (`detoxedit.settings`), fills generation defaults from the preset, runs."""
    from detoxedit.settings import resolve_settings

    settings = resolve_settings(method, model, preset, set_values, easyedit_compat)
    for key in ("max_new_tokens", "max_input_tokens"):
        if options[key] is None:
            options[key] = settings.generation.get(key)
    values = _eval_values(model=model, **options) | extra
    values |= {"method": settings.method, "method_config": settings.method_config, "preset": settings.preset}
    _execute(values, out, overwrite, not no_report)


def _execute(values: dict[str, Any], out: Path, overwrite: bool, report: bool) -> None:
    from detoxedit.evaluation.config import RunConfig
    from detoxedit.config import config_from_dict
    from detoxedit.runner import run_protocol

    instances = values.pop("instances", None)
    cfg = config_from_dict(RunConfig, values, source="run options")
    if instances is not None:
        _execute_spread(cfg, out, instances, overwrite, report)
        return
    result = run_protocol(cfg, out, overwrite=overwrite, report=report)
    _print_summary(result.metrics, out)


def _execute_spread(cfg: Any, out: Path, instances: int, overwrite: bool, report: bool) -> None:
    from detoxedit.evaluation.spread import run_spread

    if instances < 1:
        raise DetoxeditError(f"--instances must be at least 1, got {instances}")
    summary = run_spread(cfg, out, instances, overwrite=overwrite, report=report)
    console.print((out / "spread.md").read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(summary['instances'])} instance runs in {out}/instance-*/; summary in {out}/spread.md", highlight=False)


def _print_summary(metrics: dict[str, Any], out: Path) -> None:
    from detoxedit.report import baseline_name, corrected_table, table1

    names = {"vanilla": baseline_name(metrics), "edited": str(metrics.get("method", "edited")).upper()}
    rows = [(names[name], data["metrics"]) for name, data in metrics.get("variants", {}).items()]
    console.print(table1(rows, with_ci=False), markup=False, highlight=False, soft_wrap=True)
    console.print(corrected_table(rows, metrics), markup=False, highlight=False, soft_wrap=True)
    console.print(f"results in {out}/ (report.md, metrics.json, generations.jsonl)", highlight=False)


@app.command()
def evaluate(
    data: str = opt.DATA,
    out: Path = opt.OUT,
    model: str = opt.MODEL,
    preset: str = opt.PRESET,
    judge: str = opt.JUDGE,
    threshold: float = opt.THRESHOLD,
    judge_errors: str = opt.JUDGE_ERRORS,
    max_new_tokens: int = opt.RUN_MAX_NEW_TOKENS,
    max_input_tokens: int = opt.RUN_MAX_INPUT_TOKENS,
    limit: int = opt.LIMIT,
    seed: int = opt.SEED,
    category: list[str] = opt.CATEGORY,
    attack: list[str] = opt.ATTACK,
    general: bool = opt.GENERAL,
    triviaqa: str = opt.TRIVIAQA,
    xsum: str = opt.XSUM,
    n_triviaqa: int = opt.N_TRIVIAQA,
    n_xsum: int = opt.N_XSUM,
    overrefusal: str = opt.OVERREFUSAL,
    n_overrefusal: int = opt.N_OVERREFUSAL,
    chat_format: str = opt.CHAT_FORMAT,
    system_prompt: str = opt.SYSTEM_PROMPT,
    token_budget: int = opt.TOKEN_BUDGET,
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
    overwrite: bool = opt.OVERWRITE,
    no_report: bool = opt.NO_REPORT,
) -> None:
    """Evaluate the unedited model on SafeEdit (DS, DG, Fluency; KQA/Csum with --general)."""
    _resolve_and_execute(
        "none", model, preset, [], False, out, overwrite, no_report, {},
        data=data, judge=judge, threshold=threshold, judge_errors=judge_errors, max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens,
        limit=limit, seed=seed, categories=category, attacks=attack,
        general=general, triviaqa=triviaqa, xsum=xsum, n_triviaqa=n_triviaqa, n_xsum=n_xsum,
        overrefusal=overrefusal, n_overrefusal=n_overrefusal,
        chat_format=chat_format, system_prompt=system_prompt, token_budget=token_budget, dtype=dtype, device=device,
        trust_remote_code=trust_remote_code,
    )


@app.command("run")
def run_method(
    method: str = typer.Option(..., "--method", help="Method: dinm, ft-l, self-reminder, none, ..."),
    data: str = opt.DATA,
    out: Path = opt.OUT,
    train: str = typer.Option(None, "--train", help="SafeEdit file of training items, for methods that fit on data."),
    instances: int = typer.Option(None, "--instances", help="Run the method from this many training instances, one "
                                  "at a time, each evaluated on the whole test set (OUT/instance-K/), and report mean "
                                  "± std, best and worst (OUT/spread.md); e.g. --method dinm-global --instances 3."),
    drop_overlap: bool = typer.Option(False, "--drop-overlap", help="Drop the test items whose question or adversarial "
                                      "input occurs in --train (otherwise such data is refused)."),
    model: str = opt.MODEL,
    preset: str = opt.PRESET,
    set_values: list[str] = opt.SET_VALUES,
    easyedit_compat: bool = typer.Option(False, "--easyedit-compat", help="Reproduce the reference code "
                                         "(EasyEdit), defects included: sampling from generation_config, replies cut by "
                                         "characters, and the method's own easyedit_compat mode."),
    items_per_batch: int = opt.ITEMS_PER_BATCH,
    judge: str = opt.JUDGE,
    threshold: float = opt.THRESHOLD,
    judge_errors: str = opt.JUDGE_ERRORS,
    max_new_tokens: int = opt.RUN_MAX_NEW_TOKENS,
    max_input_tokens: int = opt.RUN_MAX_INPUT_TOKENS,
    limit: int = opt.LIMIT,
    seed: int = opt.SEED,
    category: list[str] = opt.CATEGORY,
    attack: list[str] = opt.ATTACK,
    general: bool = opt.GENERAL,
    triviaqa: str = opt.TRIVIAQA,
    xsum: str = opt.XSUM,
    n_triviaqa: int = opt.N_TRIVIAQA,
    n_xsum: int = opt.N_XSUM,
    overrefusal: str = opt.OVERREFUSAL,
    n_overrefusal: int = opt.N_OVERREFUSAL,
    chat_format: str = opt.CHAT_FORMAT,
    system_prompt: str = opt.SYSTEM_PROMPT,
    token_budget: int = opt.TOKEN_BUDGET,
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
    overwrite: bool = opt.OVERWRITE,
    no_report: bool = opt.NO_REPORT,
) -> None:
    """Evaluate a method: per-item methods edit from the original model for each item (restored after),
    global methods are fitted once (on --train) and every item is evaluated on the result."""
    extra = {"items_per_batch": items_per_batch, "inherit_sampling": easyedit_compat, "char_slice": easyedit_compat,
             "train": train, "drop_overlap": drop_overlap, "instances": instances}
    _resolve_and_execute(
        method, model, preset, set_values or [], easyedit_compat, out, overwrite, no_report, extra,
        data=data, judge=judge, threshold=threshold, judge_errors=judge_errors, max_new_tokens=max_new_tokens, max_input_tokens=max_input_tokens,
        limit=limit, seed=seed, categories=category, attacks=attack,
        general=general, triviaqa=triviaqa, xsum=xsum, n_triviaqa=n_triviaqa, n_xsum=n_xsum,
        overrefusal=overrefusal, n_overrefusal=n_overrefusal,
        chat_format=chat_format, system_prompt=system_prompt, token_budget=token_budget, dtype=dtype, device=device,
        trust_remote_code=trust_remote_code,
    )


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders (one: its own report; several: side by side)."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the Markdown here (default: print it)."),
    table3: bool = typer.Option(False, "--table3", help="The general setting's layout (the paper's Table 3): every "
                                "metric, instance spreads (folders of `run --instances`) as mean ± std, training cost."),
) -> None:
    """Markdown report (the paper's Table 1 layout) of one or more run folders."""
    from detoxedit.report import compare_runs, general_setting_report, load_run, run_report

    if table3:
        text = general_setting_report(runs)
    else:
        # figures are written beside the run only for a written report: printing never writes to a run folder
        text = run_report(load_run(runs[0]), figures=out is not None) if len(runs) == 1 else compare_runs(runs)
    if out is None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)  # never wrap Markdown table rows
        return
    if out.is_dir():
        raise DetoxeditError(f"--out {out} is a folder; give a file name such as {out / 'report.md'}")
    atomic_write_text(out, text)
    console.print(f"wrote {out}", highlight=False)


@app.command("select")
def select_instance(
    candidates: str = typer.Option(..., "--candidates", help="SafeEdit file of candidate edit instances."),
    validate: str = typer.Option(..., "--validate", help="SafeEdit file of validation items each edited model is scored on."),
    out: Path = opt.OUT,
    method: str = typer.Option("dinm-global", "--method", help="A method that edits from named instances."),
    n_candidates: int = typer.Option(None, "--n-candidates", help="A seeded sample of this many candidates (default: all)."),
    limit: int = typer.Option(10, help="Validation items (a seeded sample)."),
    n_overrefusal: int = typer.Option(30, "--n-overrefusal", help="Built-in over-refusal prompts per edited model."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="New tokens per reply."),
    model: str = opt.MODEL,
    preset: str = opt.PRESET,
    set_values: list[str] = opt.SET_VALUES,
    judge: str = opt.JUDGE,
    seed: int = opt.SEED,
    drop_overlap: bool = typer.Option(False, "--drop-overlap", help="Drop validation items that occur among the candidates."),
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
    overwrite: bool = opt.OVERWRITE,
) -> None:
    """Choose the edit instance: edit from each candidate, score each edited model cheaply on validation items
    (DS, DG-Avg, over-refusal, degeneration), rank them (OUT/spread.md); run the winner with --set instance_ids=[ID]."""
    from detoxedit.data import load_safeedit

    count = n_candidates or len(load_safeedit(candidates))
    extra = {"train": candidates, "drop_overlap": drop_overlap, "instances": count, "n_overrefusal": n_overrefusal}
    _resolve_and_execute(
        method, model, preset, set_values or [], False, out, overwrite, True, extra,
        data=validate, judge=judge, threshold=None, judge_errors=None, max_new_tokens=max_new_tokens,
        max_input_tokens=None, limit=limit, seed=seed, categories=None, attacks=None, general=False, triviaqa=None,
        xsum=None, n_triviaqa=None, n_xsum=None, overrefusal="builtin", chat_format="auto", system_prompt=None,
        token_budget=None, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
    )
    summary = json.loads((out / "spread.json").read_text(encoding="utf-8"))
    best = summary["ranking"][0] if summary.get("ranking") else None
    if best is not None:
        console.print(f"chosen instance: training item {best['instance']} (score {best['score']:.1f}); use it with "
                      f"`detoxedit run --method {method} --train {candidates} --set instance_ids=[{best['instance']}]`",
                      highlight=False, markup=False)
