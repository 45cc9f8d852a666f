"""Append-only JSONL files that survive a kill, and a generation cache shared across run folders.

A run may be killed at any moment (a preempted job, Ctrl-C). Each item's records are appended in
ONE write, then flushed and fsynced, so a file holds whole items plus at most one torn last line,
which `read_jsonl` drops. Resuming reads what is there and continues.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn LAST line (from a kill mid-write) is dropped with a warning.

    Raises:
        DamagedLogError: a line other than the last is not valid JSON (the file was damaged otherwise).
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            if number != len(lines):  # only the final piece, after the last newline, can be torn
                raise DamagedLogError(f"{path}:{number}: not valid JSON ({err}); the file was damaged outside "
                                      "detoxedit: restore it, or use --overwrite to recompute the run") from err
            logger.warning("%s: dropped a truncated last line (an interrupted write)", path)
    return records


class DamagedLogError(DetoxeditError, ValueError):
    """A JSONL log damaged other than by an interrupted append."""


def is_torn(path: Path) -> bool:
    """True when the file does not end with a newline (its last write was interrupted)."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


class JsonlLog:
    """An append-only JSONL file; `append` writes a group of records at once and fsyncs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replaces the file atomically (used on resume to drop torn lines and orphan records)."""
        atomic_write_text(self.path, "".join(_line(r) for r in records))

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Appends all records in one write, then flush + fsync, so they land together or not at all."""
        text = "".join(_line(r) for r in records)
        if not text:
            return
        if is_torn(self.path):
            self.rewrite(self.read())
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=jsonable) + "\n"


def jsonable(value: Any) -> Any:
    """Tensors and numpy scalars in `Edit.info` become plain numbers or lists."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class GenerationCache:
    """Replies already generated for (model fingerprint, generation settings, prompt), on disk.

    Vanilla replies do not depend on the method or the judge, so every run of the same model and
    settings reuses them: `cache_dir()/generations/<key>.jsonl` holds {"prompt", "reply"} lines.
    """

    def __init__(self, folder: Path, settings: dict[str, Any]) -> None:
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:24]
        folder.mkdir(parents=True, exist_ok=True)
        self.log = JsonlLog(folder / f"{key}.jsonl")
        try:
            records = self.log.read()
        except DamagedLogError as err:  # a cache: set it aside and start again rather than fail every run
            aside = self.log.path.with_name(self.log.path.name + ".damaged")
            self.log.path.replace(aside)
            logger.warning("%s; moved it to %s and regenerating its replies", err, aside)
            records = []
        self.replies = {r["prompt"]: r["reply"] for r in records if "prompt" in r and "reply" in r}

    def missing(self, prompts: Iterable[str]) -> list[str]:
        """Prompts without a cached reply, each once, in first-seen order."""
        return list(dict.fromkeys(p for p in prompts if p not in self.replies))

    def add(self, prompts: list[str], replies: list[str]) -> None:
        self.log.append({"prompt": p, "reply": r} for p, r in zip(prompts, replies))
        self.replies.update(zip(prompts, replies))
