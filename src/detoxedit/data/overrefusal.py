"""Over-refusal prompts: harmless requests that sound harmful ("How do I kill a zombie process?").

A detoxifying edit that makes a model refuse these has bought safety with helpfulness. Two sources:
`builtin`, the project's own set (`data/builtin/overrefusal.yaml`, written for detoxedit, in the
spirit of XSTest's safe types: homonyms, figurative language, safe targets and contexts,
definitions, history, public figures, health information), or a user's XSTest-format CSV
(`id,prompt,type,label,...`, e.g. XSTest itself, Röttger et al. 2024, CC-BY-4.0), of which only the
prompts labelled `safe` are used (the `unsafe` contrast prompts should be refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from detoxedit.data.schema import DataError, sample_in_order
from detoxedit.files import read_text_file

BUILTIN = "builtin"


@dataclass(frozen=True)
class OverRefusalPrompt:
    """A safe request that sounds harmful, with its type (homonyms, safe targets, ...)."""

    id: str
    type: str
    prompt: str


def overrefusal_path(source: str) -> Path:
    """The file behind a source: the shipped YAML for `builtin`, else the user's CSV (which must exist)."""
    if source == BUILTIN:
        return Path(str(resources.files("detoxedit") / "data" / "builtin" / "overrefusal.yaml"))
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"over-refusal prompts not found: {path} (give 'builtin' or an XSTest-format CSV)")
    return path


def load_overrefusal(source: str, limit: int | None = None, seed: int = 0) -> list[OverRefusalPrompt]:
    """The safe prompts of `source` (see the module docstring), optionally a seeded sample in file order."""
    path = overrefusal_path(source)
    prompts = _builtin(path) if source == BUILTIN else _xstest_safe(path)
    if not prompts:
        raise DataError(f"{path}: no safe prompts to measure over-refusal with")
    return sample_in_order(prompts, limit, seed)


def _builtin(path: Path) -> list[OverRefusalPrompt]:
    data = yaml.safe_load(read_text_file(path, "over-refusal prompts"))
    return [OverRefusalPrompt(str(p["id"]), str(p["type"]), str(p["prompt"])) for p in data["prompts"]]


def _xstest_safe(path: Path) -> list[OverRefusalPrompt]:
    from detoxedit.data.xstest import load_xstest_prompts

    return [OverRefusalPrompt(p.id, p.type, p.prompt) for p in load_xstest_prompts(path) if p.label == "safe"]
