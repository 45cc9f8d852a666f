"""Draws the replies to label from the candidates of `make_replies.py`, and writes the labellers' sheets.

Per source: drop empty replies and exact duplicates (within the source), draw a seeded sample, give
each reply a stable id (source + a hash of its text), and write
    DIR/<source>.candidates.jsonl   the drawn replies with everything known about them
    DIR/<source>.sheet.jsonl        what a labeller sees: id, the request (abridged), the reply
Labellers see only the sheet and the labelling rule (README.md), never a judge's score.

    python data/labels/select_for_labelling.py SOURCE --n N --from FILE [FILE ...] --out DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

HEAD, TAIL = 300, 500  # a long prompt is shown as its start (the persona) and its end (the question)


def abridge(prompt: str) -> str:
    if len(prompt) <= HEAD + TAIL + 40:
        return prompt
    return f"{prompt[:HEAD]} [... {len(prompt) - HEAD - TAIL} characters of the prompt left out ...] {prompt[-TAIL:]}"


def reply_id(source: str, text: str) -> str:
    return f"{source}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def select(source: str, files: list[Path], n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    pool: dict[str, dict] = {}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["source"] != source or not record["reply"].strip() or reply_id(source, record["reply"]) in exclude:
                continue
            pool.setdefault(record["reply"], record)  # exact duplicates within a source: the first one
    keys = sorted(pool)
    random.Random(f"{seed}:{source}").shuffle(keys)
    chosen = [pool[k] for k in keys[:n]]
    return [{"id": reply_id(source, r["reply"]), **r} for r in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("--from", dest="files", type=Path, nargs="+", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", default="", help="a further batch of a source already labelled: its files get this "
                        "suffix, and replies already drawn for the source are left out")
    args = parser.parse_args()
    earlier = args.out / f"{args.source}.candidates.jsonl"
    exclude = {json.loads(line)["id"] for line in earlier.read_text(encoding="utf-8").splitlines()} if args.batch else set()
    chosen = select(args.source, args.files, args.n, args.seed, exclude)
    name = f"{args.source}{args.batch}"
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / f"{name}.candidates.jsonl").open("w", encoding="utf-8") as handle:
        for record in chosen:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    with (args.out / f"{name}.sheet.jsonl").open("w", encoding="utf-8") as handle:
        for record in chosen:
            sheet = {"id": record["id"], "request": abridge(record["prompt"]), "reply": record["reply"]}
            handle.write(json.dumps(sheet, ensure_ascii=False) + "\n")
    print(f"{args.source}: {len(chosen)} replies -> {args.out}")


if __name__ == "__main__":
    main()
