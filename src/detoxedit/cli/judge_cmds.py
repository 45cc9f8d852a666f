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
from detoxedit.cli import options as opt
from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text

logger = logging.getLogger(__name__)
console = Console()

judge_app = typer.Typer(help="Safety judges: train an embedded head, score replies, measure agreement.",
                        no_args_is_help=True)
app.add_typer(judge_app, name="judge")

JUDGE = opt.JUDGE
THRESHOLD = opt.THRESHOLD
DATA_ROOT = typer.Option(None, "--data-root", help="Folder holding your copies of the data sets that labels in detoxedit's "
                         "reference format point at (SafeEdit, TriviaQA, XSTest files; found by name).")


def read_texts(path: Path) -> tuple[list[str], list[str | None]]:
    """`{"text": ..., "prompt"?: ...}` per line: the replies and their requests (None where absent)."""
    from detoxedit.files import read_text_file
    from detoxedit.judges.training import parse_text_line

    if not path.is_file():
        raise DetoxeditError(f"input file not found: {path}")
    texts, prompts = [], []
    for number, line in enumerate(read_text_file(path, "input file").splitlines(), 1):
        if not line.strip():
            continue
        record = parse_text_line(line, path, number)
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise DetoxeditError(f'{path}:{number}: "prompt" must be a string (the request the reply answers)')
        texts.append(record["text"])
        prompts.append(prompt)
    return texts, prompts


@judge_app.command("score")
def score(
    input: Path = typer.Option(..., "--input", "-i", help='JSONL with {"text": ..., "prompt"?: ...} per line.'),
    output: Path = typer.Option(..., "--output", "-o", help="Writes {text, score, label} per line (label 1 = unsafe)."),
    judge: str = JUDGE,
    threshold: float = THRESHOLD,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Score replies: probability unsafe and label (1 unsafe, 0 safe, 0.5 empty). A line's "prompt" (the
    request the reply answers) is read by judges that use it; without it they judge the reply alone."""
    from detoxedit.judges import load_judge

    texts, prompts = read_texts(input)
    scorer = load_judge(judge, threshold, trust_remote_code)
    scores = scorer.score(texts, prompts)
    labels = scorer.labels_from_scores(texts, scores)
    atomic_write_text(output, "".join(json.dumps({"text": text, "score": value, "label": label}, ensure_ascii=False) + "\n"
                                      for text, value, label in zip(texts, scores, labels)))
    unsafe = sum(1 for label in labels if label == 1)
    console.print(f"{len(texts)} replies scored with {judge} (threshold {scorer.threshold:g}): {unsafe} unsafe -> {output}")


@judge_app.command("eval")
def evaluate(
    labels: list[Path] = typer.Option(None, "--labels", "-l", help='Labelled JSONL {"text", "label", "prompt"?} or '
                                      "detoxedit's reference format (repeatable)."),
    judge: str = JUDGE,
    threshold: float = THRESHOLD,
    data: list[Path] = typer.Option(None, "--data", "-d", help="Also score SafeEdit reference replies in these files."),
    xstest: list[Path] = typer.Option(None, "--xstest", help="Also score XSTest labelled completions (CSV; repeatable)."),
    xstest_split: str = typer.Option(None, "--xstest-split", help="Only XSTest prompts of this side of the fixed split: "
                                     "train | test."),
    data_root: Path = DATA_ROOT,
    errors_out: Path = typer.Option(None, "--errors-out", help="Write the pooled confusion counts of --labels as the "
                                    "judge's error rates (JSON for `run/evaluate --judge-errors`)."),
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Agreement of a judge with labelled replies: accuracy, recall(unsafe), specificity, confusion matrix."""
    from detoxedit.judges import load_judge
    from detoxedit.judges.training import Agreement, agreement, examples_from_labels, examples_from_safeedit, examples_from_xstest
    from detoxedit.metrics.correction import JudgeErrorRates

    if not (labels or data or xstest):
        raise DetoxeditError("nothing to evaluate on: give --labels FILE, --data SAFEEDIT.json or --xstest FILE")
    if xstest_split not in (None, "train", "test"):
        raise DetoxeditError(f"--xstest-split must be train or test, got {xstest_split!r}")
    scorer = load_judge(judge, threshold, trust_remote_code)
    sets = [(str(p), examples_from_labels(p, data_root)) for p in labels or []]
    sets += [(str(p), examples_from_safeedit(p)) for p in data or []]
    sets += [(f"XSTest {xstest_split or 'all'} ({len(xstest)} files)", examples_from_xstest(xstest, xstest_split))] if xstest else []
    table = _agreement_table(f"judge {judge} (threshold {scorer.threshold:g})")
    labelled = Agreement()
    for name, examples in sets:
        result = agreement([e.label for e in examples], scorer.labels([e.text for e in examples], [e.prompt for e in examples]))
        _add_row(table, name, result)
        if name in {str(p) for p in labels or []}:
            labelled += result
    console.print(table)
    if errors_out is not None:
        if not labels:
            raise DetoxeditError("--errors-out needs --labels: error rates come from hand-labelled replies")
        rates = JudgeErrorRates(labelled.tp, labelled.fn, labelled.fp, labelled.tn,
                                measured_on=", ".join(str(p) for p in labels))
        atomic_write_text(errors_out, json.dumps(rates.to_dict(), indent=2) + "\n")
        console.print(f"error rates (recall {rates.recall:.3f}, specificity {rates.specificity:.3f}) -> {errors_out}; "
                      f"pass it to run/evaluate with --judge-errors {errors_out}")


@judge_app.command("train")
def train(
    data: list[Path] = typer.Option(None, "--data", "-d", help="SafeEdit file(s): safe generation -> 0, unsafe generation -> 1."),
    labels: list[Path] = typer.Option(None, "--labels", "-l", help='Labelled JSONL {"text", "label", "prompt"?, "item"?} or '
                                      "detoxedit's reference format (repeatable)."),
    xstest: list[Path] = typer.Option(None, "--xstest", help="XSTest labelled completions (CSV, repeatable): their train "
                                      "prompts are fitted on, their test prompts only measured (with --validate)."),
    data_root: Path = DATA_ROOT,
    out: Path = typer.Option(..., "--out", "-o", help="Folder for head.npz + meta.json (load with --judge embedded:DIR)."),
    validate: bool = typer.Option(False, "--validate", help="Measure the recipe by leave-one-source-out, on the SafeEdit "
                                  "references, on XSTest's test prompts, by leave-requests-out and leave-questions-out "
                                  "(docs/judges.md), instead of one random split; the head ships the hand-label "
                                  "protocols' error rates."),
    validation_out: Path = typer.Option(None, help="With --validate: write every fold's numbers and keys here (JSON)."),
    holdout: float = typer.Option(0.3, help="Without --validate: share of groups (questions / label items) held out."),
    features: str = typer.Option("generator:27,refusal_phrases", help="Comma-separated feature blocks (docs/judges.md): "
                                 "generator:L, context:L, novel:L, request:L, copy, embedding, refusal_phrases."),
    reply_only_features: str = typer.Option(None, help="With request-reading --features: also train the companion head "
                                            "for replies without a request (written to OUT/reply_only)."),
    cache: Path = typer.Option(None, help="Feature cache (.npz): replies already in it are not encoded again."),
    hidden: int = typer.Option(0, help="Hidden units of the head; 0 = logistic regression."),
    c: float = typer.Option(0.03, "--c", help="Inverse regularisation strength (features are standardised)."),
    label_weight: float = typer.Option(1.0, help="Weight of a hand-labelled reply relative to a SafeEdit reference reply."),
    balance_sources: bool = typer.Option(False, "--balance-sources", help="Give every source (each label file, "
                                         "reference file and XSTest file) the same total weight (docs/judges.md)."),
    threshold: float = typer.Option(0.5, help="Decision threshold stored with the head."),
    refit: bool = typer.Option(True, help="After measuring on the split, refit on all data (the held-out numbers stay in meta.json)."),
    refusal_guard: bool = typer.Option(True, help="Cap the score of replies that refuse in their first sentence and never "
                                       "pivot to compliance (docs/judges.md)."),
    seed: int = typer.Option(0, help="Seed of the split and of the MLP."),
) -> None:
    """Train an embedded-judge head on SafeEdit reference replies, hand-labelled replies and XSTest completions."""
    from detoxedit.judges.training import HeadConfig, train_head

    if not data and not labels:
        raise DetoxeditError("no training data: give --data SAFEEDIT.json and/or --labels LABELS.jsonl")
    if not 0 < threshold < 1:
        raise DetoxeditError(f"--threshold must be between 0 and 1, got {threshold}")
    config = HeadConfig(hidden=hidden, c=c, label_weight=label_weight, balance_sources=balance_sources, seed=seed,
                        features=_feature_names(features))
    if validate:
        _train_validated(data or [], labels or [], xstest or [], data_root, config, threshold, refusal_guard, cache, out,
                         validation_out, _feature_names(reply_only_features) if reply_only_features else None)
        return
    head, report = train_head(data or [], labels or [], config=config, holdout=holdout, threshold=threshold,
                              refit=refit, refusal_guard=refusal_guard, cache=cache, data_root=data_root)
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


def _feature_names(text: str) -> tuple[str, ...]:
    names = tuple(f.strip() for f in text.split(",") if f.strip())
    if not names:
        raise DetoxeditError("--features needs at least one block: generator:L, context:L, copy, embedding, refusal_phrases, ...")
    from detoxedit.judges.features import check_feature_names

    check_feature_names(names)
    return names


def _train_validated(data, labels, xstest, data_root, config, threshold, refusal_guard, cache, out, validation_out,
                     reply_only) -> None:
    """The protocol of `judges.validation`: every fold measured, then the head fitted on the whole pool."""
    import dataclasses

    from detoxedit.judges.embedded import REPLY_ONLY
    from detoxedit.judges.features import FeatureExtractor
    from detoxedit.judges.training import cached_features, feature_sources
    from detoxedit.judges.validation import build_protocol, validate_and_fit

    protocol = build_protocol(data, labels, xstest, data_root)
    texts = [e.text for e in protocol.examples]
    heads = [("main", out, config, [e.prompt for e in protocol.examples])]
    if reply_only:
        heads.append(("reply_only", out / REPLY_ONLY, dataclasses.replace(config, features=reply_only), None))
    records = {}
    for name, folder, head_config, prompts in heads:
        x = cached_features(texts, head_config.features, FeatureExtractor(), _cache_for(cache, folder != out), prompts)
        recipe = {"features": list(head_config.features), "c": head_config.c, "hidden": head_config.hidden,
                  "threshold": threshold, "label_weight": head_config.label_weight,
                  **({"balance_sources": True} if head_config.balance_sources else {})}  # absent: the shipped recipes
        head, record = validate_and_fit(protocol, x, head_config, threshold, refusal_guard, recipe)
        head.meta |= {"training_files": [str(f) for f in data], "label_files": [str(f) for f in labels],
                      "xstest_files": [str(f) for f in xstest], "head": recipe, **feature_sources(head_config.features)}
        head.save(folder)
        records[name] = record
        table = _agreement_table(f"{folder}: validation (threshold {threshold:g})")
        for fold in record["folds"]:
            _add_row(table, fold["name"], fold)
        _add_row(table, "pooled leave-one-source-out", record["pooled_loso"])
        _add_row(table, "pooled leave-requests-out", record["pooled_requests"])
        if record["pooled_questions"]["n"]:
            _add_row(table, "pooled leave-questions-out", record["pooled_questions"])
        console.print(table)
    if validation_out is not None:
        inputs = {"safeedit": [Path(f).name for f in data], "labels": [Path(f).name for f in labels],
                  "xstest": [Path(f).name for f in xstest]}
        validation_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(validation_out, json.dumps({"inputs": inputs, "heads": records}, indent=1) + "\n")
    console.print(f"head written to {out} (fitted on the whole pool); use it with --judge embedded:{out}")


def _cache_for(cache: Path | None, companion: bool) -> Path | None:
    return cache.with_name(cache.stem + "-reply-only.npz") if cache is not None and companion else cache


def _agreement_table(title: str) -> Table:
    table = Table(title=title)
    for column in ("data", "n", "accuracy", "recall(unsafe)", "specificity", "TP", "FN", "FP", "TN"):
        if column == "data":
            table.add_column(column, overflow="fold")  # fold rather than cut: the names tell the folds apart
        else:
            table.add_column(column, justify="right")
    return table


def _add_row(table: Table, name: str, result) -> None:
    numbers = result if isinstance(result, dict) else result.as_dict()
    table.add_row(Path(name).name, str(numbers["n"]), _fmt(numbers["accuracy"]), _fmt(numbers["recall_unsafe"]),
                  _fmt(numbers["specificity"]), *(str(numbers[k]) for k in ("tp", "fn", "fp", "tn")))


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
