"""Merges the two labelling passes and the adjudications into one label file per source.

    python data/labels/assemble.py SOURCE --candidates DIR --passes A_DIR B_DIR --adjudicated FILE \
        --data-root ../shared/data --out data/labels

For each reply: `pass_a`, `pass_b` (the two independent readings), `label` (theirs when they agree,
else the adjudicated one), `adjudicated`, `grey` (either pass marked it, or it was adjudicated) and
the notes. The prompt is stored as a reference (`prompt_ref`) unless it is the project's own, and
long passages the reply copies from its prompt or its SafeEdit item's reference replies are stored
as references too (`detoxedit.judges.labels.encode_reply`), so no data set text is committed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detoxedit.judges.labels import DataRoot, encode_reply, resolve_reply

OWN_DATA = ("everyday_prompts.yaml", "questions.yaml")  # data/labels/ and the built-in benchmark's questions
KEPT = ("id", "source", "model", "chat_format", "system_prompt", "temperature", "max_new_tokens", "method")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_pass(folder: Path, source: str) -> dict[str, dict]:
    return {r["id"]: r for path in sorted(folder.glob(f"{source}.part*.jsonl")) for r in read_jsonl(path)}


def assemble(source: str, candidates: Path, pass_a: Path, pass_b: Path, adjudicated: Path | None,
             data_root: Path) -> tuple[list[dict], dict[str, int]]:
    replies = read_jsonl(candidates / f"{source}.candidates.jsonl")
    a, b = read_pass(pass_a, source), read_pass(pass_b, source)
    decided = {r["id"]: r for r in read_jsonl(adjudicated)} if adjudicated and adjudicated.is_file() else {}
    root, out = DataRoot(data_root), []
    counts = {"n": 0, "agree": 0, "disagree": 0, "unsafe": 0, "grey": 0}
    for reply in replies:
        rid = reply["id"]
        if rid not in a or rid not in b:
            raise SystemExit(f"{source}: {rid} lacks a label from pass {'A' if rid not in a else 'B'}")
        la, lb = int(a[rid]["label"]), int(b[rid]["label"])
        if la != lb and rid not in decided:
            raise SystemExit(f"{source}: {rid} has A={la}, B={lb} and no adjudication")
        label = la if la == lb else int(decided[rid]["label"])
        record = {k: reply.get(k) for k in KEPT}
        record |= _prompt_and_reply(reply, root)
        record |= {"label": label, "pass_a": la, "pass_b": lb, "adjudicated": la != lb,
                   "grey": bool(a[rid].get("grey") or b[rid].get("grey") or la != lb),
                   "notes": [n for n in (a[rid].get("note"), b[rid].get("note"), decided.get(rid, {}).get("note")) if n]}
        out.append(record)
        counts["n"] += 1
        counts["agree" if la == lb else "disagree"] += 1
        counts["unsafe"] += label
        counts["grey"] += record["grey"]
    return out, counts


def _prompt_and_reply(reply: dict, root: DataRoot) -> dict:
    ref = reply["prompt_ref"]
    if ref["data"] in OWN_DATA:  # the project's own writing: stored as text
        return {"prompt": reply["prompt"], "reply": reply["reply"], "prompt_source": ref["data"]}
    fields = root.fields(ref, reply["id"])
    if fields["prompt"] != reply["prompt"]:
        raise SystemExit(f"{reply['id']}: its reference resolves to another prompt than the one answered")
    encoded = encode_reply(reply["reply"], fields)
    assert resolve_reply(encoded, fields, reply["id"]) == reply["reply"]
    return {"prompt_ref": ref, "reply": encoded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("--candidates", type=Path, required=True)
    parser.add_argument("--passes", type=Path, nargs=2, required=True)
    parser.add_argument("--adjudicated", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    records, counts = assemble(args.source, args.candidates, *args.passes, args.adjudicated, args.data_root)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / f"{args.source}.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(json.dumps({"source": args.source, **counts}))


if __name__ == "__main__":
    main()
