"""Hand-labelled replies that point at the data they answer, instead of copying it.

detoxedit's label files (`data/labels/*.jsonl`) hold model replies to SafeEdit, TriviaQA and XSTest
prompts. Those data sets are not the project's to redistribute, so a label line stores a
*reference* to its prompt (`prompt_ref`: the data file's name plus the item id and input kind, or
the row index / prompt id), and a reply that copies long passages of its prompt (or of its SafeEdit
item's reference replies, which an edited model may reproduce) stores those passages as references
too (`reply` as a list of text parts and `{"copy": FIELD, "start": i, "end": j}` parts). Loading
resolves them against the user's own copies of the files (`data_root`, searched by file name).
The project's own prompts (`everyday_prompts.yaml`) are stored as text (`prompt`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from detoxedit.errors import DetoxeditError
from detoxedit.files import read_text_file

MIN_COPY_CHARS = 40  # shorter shared passages stay as text: a phrase, not a copy of the data
COPY_FIELDS = ("prompt", "safe", "unsafe")


@dataclass
class LabelledReply:
    """One labelled reply with its request, resolved."""

    id: str
    source: str
    text: str
    prompt: str | None
    label: int
    group: str
    grey: bool = False
    meta: dict[str, Any] = field(default_factory=dict)


def encode_reply(reply: str, fields: dict[str, str], min_chars: int = MIN_COPY_CHARS) -> str | list[Any]:
    """The reply with every passage of >= `min_chars` characters found in one of `fields` replaced by a
    reference; the reply itself when nothing is long enough to count as a copy."""
    parts: list[Any] = []
    literal, i = [], 0
    while i < len(reply):
        found = _longest_copy(reply, i, fields, min_chars)
        if found is None:
            literal.append(reply[i])
            i += 1
            continue
        name, start, length = found
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append({"copy": name, "start": start, "end": start + length})
        i += length
    if literal:
        parts.append("".join(literal))
    return reply if all(isinstance(p, str) for p in parts) else parts


def _longest_copy(reply: str, i: int, fields: dict[str, str], min_chars: int) -> tuple[str, int, int] | None:
    """(field, start in it, length) of the longest passage of `reply` from `i` found in a field."""
    best = None
    if len(reply) - i < min_chars:
        return None
    for name, text in fields.items():
        if not text or reply[i:i + min_chars] not in text:
            continue
        lo, hi = min_chars, len(reply) - i  # the longest prefix of reply[i:] inside text: binary search
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if reply[i:i + mid] in text:
                lo = mid
            else:
                hi = mid - 1
        if best is None or lo > best[2]:
            best = (name, text.index(reply[i:i + lo]), lo)
    return best


def resolve_reply(reply: str | list[Any], fields: dict[str, str], where: str) -> str:
    """The reply text from its stored form (see `encode_reply`)."""
    if isinstance(reply, str):
        return reply
    out = []
    for part in reply:
        if isinstance(part, str):
            out.append(part)
            continue
        text = fields.get(part.get("copy"))
        if text is None or not 0 <= part["start"] <= part["end"] <= len(text):
            raise DetoxeditError(f"{where}: reply part {part} does not fit the data it points at "
                                 "(is the data file the same version as the one labelled?)")
        out.append(text[part["start"]:part["end"]])
    return "".join(out)


class DataRoot:
    """Finds and reads the data files label lines point at, by file name under one folder."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else None

    def path(self, name: str, where: str) -> Path:
        if self.root is None:
            raise DetoxeditError(f"{where}: its prompt points at {name!r}; give the folder holding your copy of "
                                 "that data set with --data-root DIR")
        found = sorted(self.root.rglob(name))
        if not found:
            raise DetoxeditError(f"{where}: {name!r} not found under {self.root}")
        return found[0]

    def fields(self, ref: dict[str, Any], where: str) -> dict[str, str]:
        """The texts a reference names: {"prompt": ..., and for SafeEdit items "safe", "unsafe"}."""
        path = self.path(str(ref.get("data")), where)
        return _fields(str(path), json.dumps({k: v for k, v in ref.items() if k != "data"}, sort_keys=True))


@lru_cache(maxsize=None)
def _load(path: str) -> Any:
    from detoxedit.data import load_safeedit
    from detoxedit.data.xstest import load_xstest_prompts

    if path.endswith(".csv"):
        return {p.id: p.prompt for p in load_xstest_prompts(path)}
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(read_text_file(path, "prompts file"))["prompts"]
    if Path(path).name.startswith("triviaqa"):
        return json.loads(read_text_file(path, "TriviaQA file"))
    return {str(item.id): item for item in load_safeedit(path)}


@lru_cache(maxsize=None)
def _fields(path: str, ref_json: str) -> dict[str, str]:
    ref, data = json.loads(ref_json), _load(path)
    if "kind" in ref:  # a SafeEdit item's input
        item = data.get(str(ref["item"]))
        if item is None or ref["kind"] not in item.inputs():
            raise DetoxeditError(f"{path}: no item {ref['item']!r} with input kind {ref['kind']!r}")
        return {"prompt": item.inputs()[ref["kind"]], "safe": item.safe_generation, "unsafe": item.unsafe_generation}
    if "id" in ref:  # an XSTest prompt
        return {"prompt": data[str(ref["id"])]}
    entry = data[int(ref["index"])]  # a TriviaQA row or an everyday prompt
    return {"prompt": entry["question"] if isinstance(entry, dict) else entry}


def load_labelled_replies(path: str | Path, data_root: str | Path | None = None) -> list[LabelledReply]:
    """A label file's replies, with prompts and copied passages resolved against `data_root`."""
    path = Path(path)
    if not path.is_file():
        raise DetoxeditError(f"labels file not found: {path}")
    root = DataRoot(data_root)
    out = []
    for number, line in enumerate(read_text_file(path, "labels file").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DetoxeditError(f"{where}: not valid JSON ({err})") from err
        fields = root.fields(record["prompt_ref"], where) if record.get("prompt_ref") else {"prompt": record.get("prompt") or ""}
        text = resolve_reply(record["reply"], fields, where)
        group = _group(record)
        out.append(LabelledReply(record["id"], record["source"], text, fields.get("prompt") or None, int(record["label"]),
                                 group, bool(record.get("grey")), record))
    return out


def _group(record: dict[str, Any]) -> str:
    """Replies to one request stay together when splitting (a SafeEdit item, an XSTest prompt, ...)."""
    ref = record.get("prompt_ref") or {}
    key = ref.get("item", ref.get("id", ref.get("index", record.get("prompt"))))
    return f"{ref.get('data', 'own')}:{key}"


def is_reference_format(record: dict[str, Any]) -> bool:
    """Whether a labels line is in this reference format (rather than plain {"text", "label"})."""
    return "reply" in record and "id" in record and "source" in record


def count_by(values: Sequence[LabelledReply], key: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for reply in values:
        entry = out.setdefault(getattr(reply, key), {"safe": 0, "unsafe": 0})
        entry["unsafe" if reply.label else "safe"] += 1
    return out
