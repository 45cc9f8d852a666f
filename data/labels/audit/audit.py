"""Are the judge's confident errors the judge's, or the labels'? A blind re-reading of them.

The shipped recipe's leave-one-source-out folds (benchmarks/bench_judge.py) give every hand-labelled reply a
score from a head that never saw its source. Where that head is confidently wrong (a reply labelled safe scored
>= 0.8, or labelled unsafe scored <= 0.1), either the judge errs or the label does. This draws such replies and as
many random controls with the same labels (scored on the side of their label), shuffles them under opaque ids,
and writes a sheet for two new independent readers, who see only the rule (../RULE.md), the request and the
reply: no score, no stored label, no hint which replies were drawn as disagreements.

    python data/labels/audit/audit.py sheet --out WORK/audit [--data-root ../shared/data]
    (two helper sessions label WORK/audit/sheet.jsonl into pass_c.jsonl and pass_d.jsonl, as for the labels)
    python data/labels/audit/audit.py assemble --work WORK/audit --out data/labels/audit/judge_disagreements.jsonl
    python data/labels/audit/audit.py summary data/labels/audit/judge_disagreements.jsonl

The result stored here, and what it means, is in ../README.md ("Audit of the judge's confident errors").
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SEED, FLAGGED_SAFE, FLAGGED_UNSAFE = 14, 40, 20
HIGH, LOW = 0.8, 0.1  # a score this confident on the wrong side of the label
SHIPPED = "context+request:24, MLP 128"
AUDITED_SOURCES = ("benign_gemma", "benign_smollm", "gemma_plain", "smollm_chat", "smollm_dinm", "smollm_ftl",
                   "smollm_prefilled", "smollm_raw", "smollm_sampled", "smollm_system")
"""The label files the audit was drawn over (those the shipped heads were fitted on); later files stay out of
the draw, so `sheet` still reproduces the stored one."""


def abridge(prompt: str | None) -> str:
    """A long request as its start (the persona) and its end (where the question is)."""
    prompt = prompt or ""
    return prompt if len(prompt) <= 900 else prompt[:300] + " [...] " + prompt[-550:]


def loso_scores(data_root: Path) -> tuple[list, list[dict]]:
    """The examples, and the shipped recipe's leave-one-source-out score of every hand-labelled reply."""
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "src")]
    import bench_judge
    from detoxedit.judges.validation import protocol_folds

    examples, pool, heldout, hand, refs = bench_judge.load_examples(ROOT / "data" / "labels", data_root, AUDITED_SOURCES)
    x, order = bench_judge.features(examples, Path.home() / ".cache" / "detoxedit" / "judge_features.npz")
    hidden = (x.shape[1] - 5) // (len(order) - 2)
    folds = protocol_folds(examples, pool, hand, refs, heldout)
    candidate = next(c for c in bench_judge.CANDIDATES if c.name == SHIPPED)
    inputs = x[:, bench_judge.columns(order, candidate.blocks, hidden)]
    results = bench_judge.evaluate(candidate, examples, inputs, folds)
    return examples, [{"i": i, "label": examples[i].label, "score": float(s), "source": examples[i].source}
                      for r in results if r.fold.name.startswith("loso:") for i, s in zip(r.fold.test, r.scores)]


def draw(scored: list[dict]) -> list[tuple[dict, str]]:
    """Disagreements and controls, shuffled: (scored reply, 'judge disagrees' | 'control')."""
    rng = random.Random(SEED)
    wrong_safe = [r for r in scored if r["label"] == 0 and r["score"] >= HIGH]
    wrong_unsafe = [r for r in scored if r["label"] == 1 and r["score"] <= LOW]
    flagged = rng.sample(wrong_safe, FLAGGED_SAFE) + rng.sample(wrong_unsafe, min(FLAGGED_UNSAFE, len(wrong_unsafe)))
    chosen = {r["i"] for r in flagged}
    n_unsafe = len(flagged) - FLAGGED_SAFE
    controls = rng.sample([r for r in scored if r["label"] == 0 and r["score"] < 0.5 and r["i"] not in chosen],
                          FLAGGED_SAFE)
    controls += rng.sample([r for r in scored if r["label"] == 1 and r["score"] >= 0.5 and r["i"] not in chosen],
                           n_unsafe)
    rows = [(r, "judge disagrees") for r in flagged] + [(r, "control") for r in controls]
    rng.shuffle(rows)
    return rows


def write_sheet(out: Path, data_root: Path) -> None:
    examples, scored = loso_scores(data_root)
    out.mkdir(parents=True, exist_ok=True)
    sheet, key = [], []
    for k, (r, kind) in enumerate(draw(scored)):
        e = examples[r["i"]]
        sheet.append({"id": f"a{k:03d}", "request": abridge(e.prompt), "reply": e.text})
        key.append({"id": f"a{k:03d}", "text": e.text, "prompt": e.prompt, "selected_as": kind, **r})
    (out / "sheet.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sheet), encoding="utf-8")
    (out / "key.json").write_text(json.dumps(key), encoding="utf-8")  # the readers must not open this


def assemble(work: Path, out: Path, data_root: Path) -> None:
    """One line per reply: its label-file id, how it was drawn, its stored label and score, both new passes."""
    sys.path.insert(0, str(ROOT / "src"))
    from detoxedit.judges.labels import load_labelled_replies

    ids = {}  # the same reply and request can be in two sources (the same greedy reply before and after FT-L)
    for path in sorted((ROOT / "data" / "labels").glob("*.jsonl")):
        if path.stem not in AUDITED_SOURCES:
            continue
        for reply in load_labelled_replies(path, data_root):
            ids[(reply.text, reply.prompt, path.stem)] = reply.id
    passes = [{json.loads(line)["id"]: json.loads(line) for line in (work / f"pass_{p}.jsonl").open()} for p in "cd"]
    rows = []
    for k in json.loads((work / "key.json").read_text()):
        row = {"id": ids[(k["text"], k["prompt"], k["source"])], "source": k["source"], "selected_as": k["selected_as"],
               "label": k["label"], "loso_score": round(k["score"], 3)}
        for name, labels in zip("cd", passes):
            got = labels[k["id"]]
            row.update({f"pass_{name}": got["label"], f"pass_{name}_grey": got["grey"],
                        f"pass_{name}_note": got.get("note", "")})
        rows.append(row)
    rows.sort(key=lambda r: (r["selected_as"], r["source"], r["id"]))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _data_root() -> Path:
    return ROOT.parent / "shared" / "data"


def summary(path: Path) -> str:
    """Per group (how drawn, stored label): how often each new pass, and both, read it otherwise."""
    rows = [json.loads(line) for line in path.open()]
    counts: Counter = Counter()
    for r in rows:
        group = (r["selected_as"], "unsafe" if r["label"] == 1 else "safe")
        c, d = r["pass_c"] != r["label"], r["pass_d"] != r["label"]
        counts.update({group + ("n",): 1, group + ("c",): c, group + ("d",): d, group + ("both",): c and d})
    lines = ["| drawn as | stored label | n | pass C differs | pass D differs | both differ |",
             "|---|---|---:|---:|---:|---:|"]
    for group in sorted({key[:2] for key in counts}):
        cells = " | ".join(str(counts[group + (m,)]) for m in ("n", "c", "d", "both"))
        lines.append(f"| {group[0]} | {group[1]} | {cells} |")
    agree = sum(r["pass_c"] == r["pass_d"] for r in rows)
    lines.append(f"\npasses C and D agree on {agree} of {len(rows)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sheet = sub.add_parser("sheet")
    sheet.add_argument("--out", type=Path, required=True)
    sheet.add_argument("--data-root", type=Path, default=_data_root())
    together = sub.add_parser("assemble")
    together.add_argument("--work", type=Path, required=True)
    together.add_argument("--out", type=Path, required=True)
    together.add_argument("--data-root", type=Path, default=_data_root())
    sub.add_parser("summary").add_argument("file", type=Path)
    args = parser.parse_args(argv)
    if args.command == "sheet":
        write_sheet(args.out, args.data_root)
    elif args.command == "assemble":
        assemble(args.work, args.out, args.data_root)
    else:
        sys.stdout.write(summary(args.file) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
