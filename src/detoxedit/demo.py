"""`detoxedit demo`: the whole idea in one command, on a laptop, with nothing to download.

The default model (SmolLM2-135M-Instruct) answers the jailbreaks of the built-in benchmark's test
split; DINM edits it from one instance per item (edit -> evaluate -> restore); the edited model
refuses, while its trivia answers and summaries (KQA, Csum) barely move. The demo is an ordinary
run of the one runner (`detoxedit.runner.run_protocol`), so its folder is a normal run folder that
`detoxedit report` reads; this module only chooses the settings and prints the story.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detoxedit.config import option

logger = logging.getLogger(__name__)

@dataclass
class DemoSettings:
    """What the demo runs; the defaults keep it to a few minutes on two CPU cores."""

    out: Path = option(Path("runs/demo"), "Run folder (overwritten).")
    limit: int | None = option(8, "Test items to edit (a seeded sample; None: the whole test split).")
    max_new_tokens: int = option(64, "New tokens per reply to a safety input (64: as the benchmark was built).")
    general_limit: int | None = option(None, "Trivia questions and summaries for KQA/Csum (None: all 50 and 20).")
    overrefusal_limit: int | None = option(60, "Over-refusal prompts, a seeded sample of the built-in set (None: all).")
    judge: str | None = option(None, "Safety judge; None: the embedded judge if its head ships, else refusal.")
    device: str = option("cpu", "Torch device.")
    seed: int = option(0, "Seed of the item sample.")
    examples: int = option(3, "Before/after reply pairs to print.")
    progress: bool = option(True, "Show progress bars.")

    @classmethod
    def with_overrides(cls, **values: Any) -> DemoSettings:
        """Defaults, replaced by the values that are not None (how the CLI passes unset options)."""
        return dataclasses.replace(cls(), **{k: v for k, v in values.items() if v is not None})


def default_judge() -> str:
    """`embedded` when its trained head ships with the package, else the `refusal` baseline."""
    from detoxedit.judges.embedded import HEAD_WEIGHTS, SHIPPED_HEAD

    if (SHIPPED_HEAD / HEAD_WEIGHTS).is_file():
        return "embedded"
    logger.warning("No trained head for the embedded judge in %s; the demo uses the refusal judge", SHIPPED_HEAD)
    return "refusal"


def dinm_settings() -> tuple[dict[str, Any], str | None]:
    """DINM values of the default model's preset (DINM's defaults, with a warning, if none names it)."""
    from detoxedit.settings import resolve_settings

    settings = resolve_settings("dinm", "default")
    if settings.preset is None:
        logger.warning("No shipped preset names the default model; DINM runs with its default hyperparameters")
    return settings.method_config, settings.preset


def demo_config(settings: DemoSettings):
    """The `RunConfig` of the demo: DINM on the built-in test split, with KQA/Csum on the mini sets."""
    from detoxedit.data.builtin import TRIVIA, XSUM, benchmark_path
    from detoxedit.evaluation.config import RunConfig

    values, preset = dinm_settings()
    n_general = settings.general_limit
    return RunConfig(
        data=str(benchmark_path("test")), model="default", device=settings.device, limit=settings.limit,
        seed=settings.seed, judge=settings.judge or default_judge(), method="dinm", method_config=values,
        preset=preset, max_new_tokens=settings.max_new_tokens, general=True, triviaqa=str(TRIVIA), xsum=str(XSUM),
        n_triviaqa=n_general or 50, n_xsum=n_general or 20, kqa_max_new_tokens=16, csum_max_new_tokens=48,
        doc_max_tokens=384, bootstrap=200, progress=settings.progress, n_overrefusal=settings.overrefusal_limit,
    )


def run_demo(settings: DemoSettings, console: Any = None) -> dict[str, Any]:
    """Run the demo into ``settings.out`` and print its tables and examples; returns metrics.json's content."""
    from rich.console import Console

    from detoxedit.runner import run_protocol

    console = console or Console()
    cfg = demo_config(settings)
    console.print(f"[bold]detoxedit demo[/]: DINM on {cfg.data} (limit {cfg.limit}), judge {cfg.judge}, "
                  f"preset {cfg.preset}", highlight=False)
    start = time.perf_counter()
    result = run_protocol(cfg, settings.out, overwrite=True)
    seconds = time.perf_counter() - start
    for table in metrics_tables(result.metrics):
        console.print(table)
    console.print(_correction_line(result.metrics, Path(settings.out)), highlight=False)
    for table in reply_tables(Path(settings.out), settings.examples):
        console.print(table)
    console.print(f"Run folder: {settings.out} (report.md, metrics.json, generations.jsonl); "
                  f"wall time {seconds:.0f} s", highlight=False)
    return result.metrics


def metrics_tables(metrics: dict[str, Any]) -> list[Any]:
    """Before (vanilla) and after (DINM) rows of every registered metric: the per-category safety
    metrics (DS, DG) in one table, the same corrected for the judge's error in a second (when the run
    has corrected values), the other measures of the safety replies (Fluency, degeneration) in a
    third, general ability (KQA, Csum, ...) in a fourth.

    Narrow tables rather than one wide one, so that no header is cut in an 80-column terminal.
    """
    from detoxedit.metrics import metric_specs

    variants = metrics.get("variants", {})
    n_items = variants.get("vanilla", {}).get("n_items", "?")
    safety = metric_specs(per_category=True)
    replies = [s for s in metric_specs(records="generations") if s not in safety]
    general = metric_specs(records="general")
    corrected = _before_after(variants, safety, "The same, corrected for the judge's error (%)", part="corrected")
    return [
        _before_after(variants, safety, f"Safety before and after DINM ({n_items} test items, %)"),
        *([corrected] if corrected.row_count else []),
        _before_after(variants, replies, "Replies: Fluency (n-gram entropy); shares that loop (%)",
                      caption="Degenerate: mostly repetition; Safe but degenerate: of the replies judged safe"),
        _before_after(variants, general, "General ability (%)",
                      caption="after DINM: KQA/Csum of the model edited from one instance; KQA is exact "
                              "match (the paper's), KQA (contains): the answer anywhere in the reply"),
    ]


def _before_after(variants: dict[str, Any], specs: list[Any], title: str, caption: str | None = None,
                  part: str | None = None) -> Any:
    """Rows before / after DINM / change of `specs`' values (or of their `part`, e.g. "corrected");
    no rows when no metric has that part."""
    from rich.table import Table

    table = Table(title=title, caption=caption, min_width=len(title) + 4)
    table.add_column("model", no_wrap=True)
    for spec in specs:
        table.add_column(spec.column, justify="right", no_wrap=True)
    before = [_value(variants.get("vanilla", {}), s.name, part) for s in specs]
    after = [_value(variants.get("edited", {}), s.name, part) for s in specs]
    if part and all(value is None for value in before + after):
        return table
    digits = [1 if s.aggregation != "mean" else 2 for s in specs]
    table.add_row("before", *map(_fmt, before, digits))
    table.add_row("after DINM", *map(_fmt, after, digits))
    table.add_row("change", *map(_fmt_change, before, after, digits))
    return table


def _value(variant: dict[str, Any], metric: str, part: str | None = None) -> float | None:
    entry = variant.get("metrics", {}).get(metric) or {}
    return (entry.get(part) or {}).get("value") if part else entry.get("value")


def _correction_line(metrics: dict[str, Any], folder: Path) -> str:
    """Why the corrected table says what it says: the judge's measured error rates, or why there are none."""
    from detoxedit.metrics import metric_specs

    rates = metrics.get("judge_errors")
    corrected = [_value(v, s.name, "corrected") for v in metrics.get("variants", {}).values()
                 for s in metric_specs(per_category=True)]
    if not rates or all(value is None for value in corrected):
        return f"Judge error: {metrics.get('correction', 'not measured')}."
    others = rates.get("alternatives", [])
    also = (f" The intervals also hold the judge's other measurements ("
            + "; ".join(f"recall {a['recall']:.2f}, specificity {a['specificity']:.2f}" for a in others) + ")."
            if others else "")
    return (f"Corrected: DS/DG estimated for the judge's measured error (recall {rates['recall']:.2f}, specificity "
            f"{rates['specificity']:.2f}; Rogan-Gladen, docs/judges.md); intervals in {folder / 'report.md'}.{also}")


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fmt_change(before: float | None, after: float | None, digits: int) -> str:
    return "–" if before is None or after is None else f"{after - before:+.{digits}f}"


def pick_examples(generations: list[dict[str, Any]], n: int) -> list[tuple[dict, dict]]:
    """Up to ``n`` (vanilla, edited) adversarial reply pairs: flipped unsafe -> safe ones first, and among
    those one per unsafe category before a second of any (several items often share one question)."""
    by_key = {(r["variant"], str(r["item_id"]), r["kind"]): r for r in generations}
    pairs = [(by_key[("vanilla", item_id, "adversarial")], r) for (variant, item_id, kind), r in by_key.items()
             if variant == "edited" and kind == "adversarial" and ("vanilla", item_id, "adversarial") in by_key]
    seen: dict[tuple[bool, str], int] = {}
    ranked = []
    for pair in pairs:
        flipped = pair[0]["label"] == 1.0 and pair[1]["label"] == 0.0
        repeat = seen.get((flipped, pair[0]["category"]), 0)
        seen[(flipped, pair[0]["category"])] = repeat + 1
        ranked.append(((not flipped, repeat), pair))
    ranked.sort(key=lambda entry: entry[0])  # stable: plan order within a rank
    return [pair for _, pair in ranked[:n]]


def reply_tables(folder: Path, n: int) -> list[Any]:
    """One small table per example: the attack, the reply before and after the edit, with labels."""
    from rich.table import Table

    from detoxedit.evaluation.records import read_jsonl

    tables = []
    for before, after in pick_examples(read_jsonl(folder / "generations.jsonl"), n):
        table = Table(title=f"Item {before['item_id']} ({before['category']})", show_header=False, expand=True)
        table.add_column(style="bold", width=14)
        table.add_column(overflow="fold")
        table.add_row("attack", _clip(before["prompt"], 240))
        table.add_row(f"before ({_label(before)})", _clip(before["reply"], 300))
        table.add_row(f"after ({_label(after)})", _clip(after["reply"], 300))
        tables.append(table)
    return tables


def _label(record: dict[str, Any]) -> str:
    return {1.0: "unsafe", 0.0: "safe"}.get(record["label"], "empty")


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


# ---------------------------------------------------------------- the general setting


GENERAL_METHODS = ("self-reminder", "dinm-global", "sft", "dpo")
"""The general setting's methods, each fitted once on the built-in train split (dinm-global: from one instance)."""


def general_configs(settings: DemoSettings) -> list[Any]:
    """One `RunConfig` per method of the general setting: fitted on the built-in train split, evaluated
    on the same test items as the per-item demo (the splits share no question)."""
    from detoxedit.data.builtin import benchmark_path
    from detoxedit.settings import resolve_settings

    base = demo_config(settings)
    configs = []
    for method in GENERAL_METHODS:
        resolved = resolve_settings(method, "default")
        configs.append(dataclasses.replace(base, method=resolved.method, method_config=resolved.method_config,
                                           preset=resolved.preset, train=str(benchmark_path("train"))))
    return configs


def run_general_demo(settings: DemoSettings, console: Any = None) -> str:
    """Every method of the general setting into ``settings.out/<method>``, then their Table 3 (with
    training cost) printed and written to ``settings.out/table3.md``; returns the Markdown."""
    from rich.console import Console

    from detoxedit.files import atomic_write_text
    from detoxedit.judges.base import load_judge
    from detoxedit.models import load_model
    from detoxedit.report import general_setting_report
    from detoxedit.runner import run_protocol

    console = console or Console()
    configs = general_configs(settings)
    judge = load_judge(configs[0].judge)
    model, tokenizer = load_model("default", device=settings.device)
    folders = []
    for cfg in configs:
        console.print(f"[bold]general setting[/]: {cfg.method} fitted on {cfg.train}", highlight=False)
        start = time.perf_counter()
        run_protocol(cfg, Path(settings.out) / cfg.method, overwrite=True, model=model, tokenizer=tokenizer, judge=judge)
        logger.info("%s: %.0f s (fit and evaluation)", cfg.method, time.perf_counter() - start)
        folders.append(Path(settings.out) / cfg.method)
    text = general_setting_report(folders)
    atomic_write_text(Path(settings.out) / "table3.md", text)
    console.print(text, markup=False, highlight=False, soft_wrap=True)
    return text
