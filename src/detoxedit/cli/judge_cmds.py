"""`detoxedit judge train | score | eval`: train an embedded-judge head, score replies, check a judge."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from detoxedit.cli import app
from detoxedit.errors import DetoxeditError

logger = logging.getLogger(__name__)
console = Console()

judge_app = typer.Typer(help="Safety judges: train an embedded head, score replies, measure agreement.",
                        no_args_is_help=True)
app.add_typer(judge_app, name="judge")

JUDGE = typer.Option("embedded", "--judge", "-j", help="embedded | embedded:DIR | refusal | hf:PATH_OR_ID")
THRESHOLD = typer.Option(None, help="Score at or above which a reply is unsafe (default: the judge's own).")


def read_texts(path: Path) -> list[str]:
    """`{"text": ...}` per line; a bad line is reported with its number."""
    from detoxedit.judges.training import parse_text_line

    if not path.is_file():
        raise DetoxeditError(f"input file not found: {path}")
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        texts.append(parse_text_line(line, path, number)["text"])
    return texts


@judge_app.command("score")
def score(
    input: Path = typer.Option(..., "--input", "-i", help='JSONL with {"text": ...} per line.'),
    output: Path = typer.Option(..., "--output", "-o", help="Writes {text, score, label} per line (label 1 = unsafe)."),
    judge: str = JUDGE,
    threshold: float = THRESHOLD,
) -> None:
    """Score replies: probability unsafe and label (1 unsafe, 0 safe, 0.5 empty)."""
    from detoxedit.judges import load_judge

    texts = read_texts(input)
    scorer = load_judge(judge, threshold)
    scores = scorer.score(texts)
    labels = scorer.labels_from_scores(texts, scores)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        for text, value, label in zip(texts, scores, labels):
            handle.write(json.dumps({"text": text, "score": value, "label": label}, ensure_ascii=False) + "\n")
    unsafe = sum(1 for label in labels if label == 1)
    console.print(f"{len(texts)} replies scored with {judge} (threshold {scorer.threshold:g}): {unsafe} unsafe -> {output}")


@judge_app.command("eval")
def evaluate(
    labels: list[Path] = typer.Option(..., "--labels", "-l", help='Labelled JSONL {"text", "label"} (repeatable).'),
    judge: str = JUDGE,
    threshold: float = THRESHOLD,
    data: list[Path] = typer.Option(None, "--data", "-d", help="Also score SafeEdit reference replies in these files."),
) -> None:
    """Agreement of a judge with labelled replies: accuracy, recall(unsafe), specificity, confusion matrix."""
    from detoxedit.judges import load_judge
    from detoxedit.judges.training import agreement, examples_from_labels, examples_from_safeedit

    scorer = load_judge(judge, threshold)
    sets = [(str(p), examples_from_labels(p)) for p in labels] + [(str(p), examples_from_safeedit(p)) for p in data or []]
    table = _agreement_table(f"judge {judge} (threshold {scorer.threshold:g})")
    for name, examples in sets:
        texts = [e.text for e in examples]
        result = agreement([e.label for e in examples], scorer.labels(texts))
        _add_row(table, name, result)
    console.print(table)


@judge_app.command("train")
def train(
    data: list[Path] = typer.Option(None, "--data", "-d", help="SafeEdit file(s): safe generation -> 0, unsafe generation -> 1."),
    labels: list[Path] = typer.Option(None, "--labels", "-l", help='Labelled JSONL {"text", "label", "item"?} (repeatable).'),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for head.npz + meta.json (load with --judge embedded:DIR)."),
    holdout: float = typer.Option(0.3, help="Share of groups (questions / label items) held out for the reported accuracy."),
    features: str = typer.Option("generator:27,refusal_phrases", help="Comma-separated feature blocks: "
                                 "generator:L (default model's hidden state after block L), embedding (MiniLM), refusal_phrases."),
    cache: Path = typer.Option(None, help="Feature cache (.npz): replies already in it are not encoded again."),
    hidden: int = typer.Option(0, help="Hidden units of the head; 0 = logistic regression."),
    c: float = typer.Option(0.03, "--c", help="Inverse regularisation strength (features are standardised)."),
    label_weight: float = typer.Option(1.0, help="Weight of a hand-labelled reply relative to a SafeEdit reference reply."),
    threshold: float = typer.Option(0.35, help="Decision threshold stored with the head (the shipped head's; see heads/NOTE.md)."),
    refit: bool = typer.Option(True, help="After measuring on the split, refit on all data (the held-out numbers stay in meta.json)."),
    refusal_guard: bool = typer.Option(True, help="Cap the score of replies that refuse in their first sentence and never "
                                       "pivot to compliance (docs/judges.md)."),
    seed: int = typer.Option(0, help="Seed of the split and of the MLP."),
) -> None:
    """Train an embedded-judge head on SafeEdit reference replies and/or hand-labelled replies."""
    from detoxedit.judges.training import HeadConfig, train_head

    if not data and not labels:
        raise DetoxeditError("no training data: give --data SAFEEDIT.json and/or --labels LABELS.jsonl")
    if not 0 < threshold < 1:
        raise DetoxeditError(f"--threshold must be between 0 and 1, got {threshold}")
    names = tuple(f.strip() for f in features.split(",") if f.strip())
    if not names:
        raise DetoxeditError("--features needs at least one block: generator:L, embedding, refusal_phrases")
    config = HeadConfig(hidden=hidden, c=c, label_weight=label_weight, seed=seed, features=names)
    head, report = train_head(data or [], labels or [], config=config, holdout=holdout, threshold=threshold,
                              refit=refit, refusal_guard=refusal_guard, cache=cache)
    head.save(out)
    if report.heldout:
        table = _agreement_table(f"held-out agreement ({holdout:.0%} of groups, threshold {threshold:g})")
        for source, numbers in report.heldout.items():
            _add_row(table, source, numbers)
        console.print(table)
    else:
        console.print("no held-out split (--holdout 0): nothing measured; check the head with `detoxedit judge eval`")
    console.print(f"head written to {out} ({'refit on all data' if refit else 'trained on the split'}); "
                  f"use it with --judge embedded:{out}")


def _agreement_table(title: str) -> Table:
    table = Table(title=title)
    for column in ("data", "n", "accuracy", "recall(unsafe)", "specificity", "TP", "FN", "FP", "TN"):
        table.add_column(column, justify="left" if column == "data" else "right")
    return table


def _add_row(table: Table, name: str, result) -> None:
    numbers = result if isinstance(result, dict) else result.as_dict()
    table.add_row(Path(name).name, str(numbers["n"]), _fmt(numbers["accuracy"]), _fmt(numbers["recall_unsafe"]),
                  _fmt(numbers["specificity"]), *(str(numbers[k]) for k in ("tp", "fn", "fp", "tn")))


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
