"""What a run read, by content: the digest of each input file and of each SafeEdit item it evaluates.

A run folder is resumed only when its results still describe the inputs. Paths say nothing about
that (a file edited in place keeps its path; a copy elsewhere is the same data), so the resolved
config leaves input paths out of the comparison (`evaluation.config.PATH_KEYS`) and `inputs.json` in the folder holds
their contents' digests instead: per file, and per item (so a refusal can name the items that changed).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from detoxedit.data import SafeEditItem

INPUTS_FILE = "inputs.json"
ADDED_LATER = frozenset({"overrefusal", "model"})
"""Inputs of tasks that only add records: a folder without them is resumed, and the task computed."""
_SHOWN = 8  # item ids named per kind of change


def item_digest(item: SafeEditItem) -> str:
    """Digest of everything an item holds (prompts, references, category, attack, constraint)."""
    text = json.dumps(item.to_json(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_digest(source: str | None) -> str | None:
    """SHA-256 of a local file's bytes; None for no file or a non-file source (hf:...)."""
    if not source or not Path(source).is_file():
        return None
    digest = hashlib.sha256()
    with Path(source).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_inputs(cfg: Any, items: Sequence[SafeEditItem], train_items: Sequence[SafeEditItem]) -> dict[str, Any]:
    """The content record of a run's inputs (written as inputs.json)."""
    record: dict[str, Any] = {
        "data": {"sha256": file_digest(cfg.data), "items": {str(i.id): item_digest(i) for i in items}},
    }
    if cfg.train:
        record["train"] = {"sha256": file_digest(cfg.train), "items": {str(i.id): item_digest(i) for i in train_items}}
    for key in ("triviaqa", "xsum", "judge_errors"):
        if getattr(cfg, key, None):
            record[key] = {"sha256": file_digest(getattr(cfg, key))}
    if getattr(cfg, "overrefusal", None):
        from detoxedit.data.overrefusal import overrefusal_path

        record["overrefusal"] = {"sha256": file_digest(str(overrefusal_path(cfg.overrefusal)))}
    record["model"] = model_identity(cfg.model)
    return record


def model_identity(spec: str) -> dict[str, Any]:
    """The model's weights by content (SHA-256 of its GGUF or weight files, memoized by size and mtime;
    None for a hub id), so a model changed in place is not resumed; and its base, for saved deltas."""
    from detoxedit.provenance import base_identity, edits_summary, weights_sha256

    return {"sha256": weights_sha256(spec), "base": base_identity(spec),
            "edits": [{"delta_sha256": e.get("delta_sha256"), "method": e.get("method")} for e in edits_summary(spec)]}


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences that make the old results stale (empty: the same inputs).

    Items are compared by id and digest, so an edit to an item outside the evaluated sample does
    not block a resume; a changed general-ability or judge-error file does.
    """
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key) or {}, new.get(key) or {}
        if "items" in before or "items" in after:
            changes += _item_changes(key, before.get("items", {}), after.get("items", {}))
        elif not before and key in ADDED_LATER:
            continue  # a task the old run did not have: the resumed run computes it
        elif before.get("sha256") != after.get("sha256"):
            flag = "--" + key.replace("_", "-")
            changes.append(f"{flag} file contents changed" if before and after else f"{flag} {'added' if after else 'removed'}")
    return changes


def _item_changes(key: str, before: dict[str, str], after: dict[str, str]) -> list[str]:
    changed = [i for i in after if i in before and before[i] != after[i]]
    added = [i for i in after if i not in before]
    removed = [i for i in before if i not in after]
    parts = []
    for what, ids in (("changed", changed), ("new", added), ("gone", removed)):
        if ids:
            shown = ", ".join(ids[:_SHOWN]) + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")
            parts.append(f"--{key.replace('_', '-')}: {len(ids)} item(s) {what} ({shown})")
    return parts
