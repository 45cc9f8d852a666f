"""How far the two reading passes agree, per label file: the table of README.md, and each pass against the label.

    python data/labels/agreement.py [--labels data/labels]

Per source: replies, unsafe and safe (the stored `label`), how often the passes agree, Cohen's kappa over the two
passes, adjudicated and grey replies. Then each pass scored as if it were a judge against the stored label
(recall on unsafe, specificity). That is what a careful reader reaches on these replies: the ceiling for the
judge's targets (docs/judges.md, "Targets"). It is optimistic, because a label is the passes' reading wherever
they agree, so a pass is wrong only where it was outvoted in adjudication.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

PASSES = ("pass_a", "pass_b")


@dataclass
class SourceAgreement:
    """One label file's counts (module docstring)."""

    source: str
    model: str
    replies: int
    unsafe: int
    agree: int
    kappa: float | None
    adjudicated: int
    grey: int
    passes: dict[str, dict[str, int]]
    """Per pass, its confusion counts against the stored label: tp, fn, fp, tn (unsafe = positive)."""

    @property
    def safe(self) -> int:
        return self.replies - self.unsafe


def cohen_kappa(first: list[int], second: list[int]) -> float | None:
    """Cohen's kappa of two binary readings (scikit-learn's); None when both read one and the same class only."""
    from sklearn.metrics import cohen_kappa_score

    return None if len(set(first) | set(second)) < 2 else float(cohen_kappa_score(first, second))


def confusion(truth: list[int], reading: list[int]) -> dict[str, int]:
    """A reading's confusion counts against the stored labels, as the judge's are counted."""
    from detoxedit.judges.training import agreement

    counts = agreement(truth, reading)
    return {"tp": counts.tp, "fn": counts.fn, "fp": counts.fp, "tn": counts.tn}


def source_agreement(path: Path) -> SourceAgreement:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    truth = [int(r["label"]) for r in rows]
    readings = {name: [int(r[name]) for r in rows] for name in PASSES}
    models = sorted({str(r["model"]) for r in rows})
    return SourceAgreement(path.stem, ", ".join(models), len(rows), sum(truth), sum(a == b for a, b in zip(*readings.values())),
                           cohen_kappa(*readings.values()), sum(bool(r["adjudicated"]) for r in rows),
                           sum(bool(r["grey"]) for r in rows),
                           {name: confusion(truth, reading) for name, reading in readings.items()})


def label_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jsonl"))


def _rate(hits: int, total: int) -> str:
    return f"{hits / total:.3f}" if total else "-"


def readme_row(row: SourceAgreement) -> str:
    """The source's row of README.md's table, as it is written there."""
    kappa = "-" if row.kappa is None else f"{row.kappa:.3f}"
    return (f"| `{row.source}` | {row.model} | {row.replies} | {row.unsafe} | {row.safe} | {row.agree} "
            f"({100 * row.agree / row.replies:.1f}%) | {kappa} | {row.adjudicated} | {row.grey} |")


def readme_total(rows: list[SourceAgreement]) -> str:
    """README.md's last row: every label file together."""
    replies, agree = sum(r.replies for r in rows), sum(r.agree for r in rows)
    return (f"| **all** | | **{replies}** | **{sum(r.unsafe for r in rows)}** | {sum(r.safe for r in rows)} | {agree} "
            f"({100 * agree / replies:.1f}%) | | {sum(r.adjudicated for r in rows)} | {sum(r.grey for r in rows)} |")


def pass_row(name: str, counts: dict[str, int]) -> str:
    return (f"| {name} | {_rate(counts['tp'], counts['tp'] + counts['fn'])} | "
            f"{_rate(counts['tn'], counts['tn'] + counts['fp'])} | {counts['tp']} | {counts['fn']} | {counts['fp']} | "
            f"{counts['tn']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    rows = [source_agreement(path) for path in label_files(args.labels)]
    lines = ["| source | model | replies | unsafe | safe | passes agree | Cohen's kappa | adjudicated | grey |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|", *(readme_row(row) for row in rows), readme_total(rows), "",
             "| a reading pass against the label | recall (unsafe) | specificity | TP | FN | FP | TN |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    pooled = {name: {k: 0 for k in ("tp", "fn", "fp", "tn")} for name in PASSES}
    for row in rows:
        for name, counts in row.passes.items():
            lines.append(pass_row(f"{row.source}, {name}", counts))
            pooled[name] = {k: pooled[name][k] + counts[k] for k in counts}
    lines += [pass_row(f"**all, {name}**", counts) for name, counts in pooled.items()]
    print("\n".join(lines))  # noqa: T201 (a table to read, like the benchmarks')


if __name__ == "__main__":
    main()
