"""Where a saved model came from: its base model (by file hash), every delta applied to it, and how each was made.

Every model folder detoxedit writes (`edit --save`, `apply-delta --save`) holds `detoxedit.json`
and a model card (`README.md`) built from it:

    {"format_version": 1, "detoxedit_version": ..., "created": ...,
     "base_model": {"spec": "default", "sha256": <GGUF or weight files' hash>},
     "edits": [{"delta_sha256": ..., "method": "dinm", "method_config": {...}, "preset": ...,
                "item_file": ..., "item_file_sha256": ..., "item_id": ..., "layer": ..., "made_by": "edit"}]}

A model made from a model that already has a record inherits its base and its earlier edits, so
the record always reads "this base, plus these deltas, in this order". `apply-delta` uses it to
refuse applying a delta twice or to another base model; the runner uses it to label an edited
checkpoint evaluated on its own as what it is rather than as "Vanilla".
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from detoxedit import __version__
from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text

PROVENANCE_FILE = "detoxedit.json"
MODEL_CARD = "README.md"
FORMAT_VERSION = 1


def deltas_sha256(deltas: dict[str, torch.Tensor]) -> str:
    """A digest of the delta tensors themselves (names, dtypes, shapes, bytes), whatever file held them."""
    digest = hashlib.sha256()
    for name in sorted(deltas):
        tensor = deltas[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        raw = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
        digest.update(raw.numpy().tobytes())
    return digest.hexdigest()


def read_provenance(spec: str | Path) -> dict[str, Any] | None:
    """The record of a model folder written by detoxedit; None for any other model spec."""
    path = Path(spec).expanduser() / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DetoxeditError(f"{path} is unreadable ({err}); the model's provenance is unknown") from err
    return record if isinstance(record, dict) else None


def base_identity(spec: str) -> dict[str, Any]:
    """The unedited model behind `spec`: an embedded model or a .gguf by its file's SHA-256, a local
    checkpoint by its weight files' hashes, a detoxedit model folder by the base its record names."""
    record = read_provenance(spec)
    if record is not None and isinstance(record.get("base_model"), dict):
        return dict(record["base_model"])
    return {"spec": _as_written(spec), "sha256": weights_sha256(spec)}


def _as_written(spec: str) -> str:
    """A local path made absolute (meaningful from any folder); embedded names and hub ids as they are."""
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def weights_sha256(spec: str) -> str | None:
    """SHA-256 over the model's weight files (memoized by path, size and mtime); None for a hub id."""
    from detoxedit.models.loading import EMBEDDED_MODELS, embedded_gguf_path, file_sha256

    if spec in EMBEDDED_MODELS:
        return file_sha256(embedded_gguf_path(spec))
    path = Path(spec).expanduser()
    if path.is_file():
        return file_sha256(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file_sha256(file)}|".encode())
    return digest.hexdigest()


def edit_entry(deltas: dict[str, torch.Tensor], meta: dict[str, Any], made_by: str) -> dict[str, Any]:
    """One edit of the record: the delta's digest and what produced it (a delta's delta.json fields)."""
    keep = ("method", "preset", "method_config", "item_file", "item_file_sha256", "item_id", "layer")
    return {"delta_sha256": deltas_sha256(deltas), **{k: meta.get(k) for k in keep if k in meta}, "made_by": made_by}


def new_record(base_spec: str, edit: dict[str, Any]) -> dict[str, Any]:
    """The record of a model made from `base_spec` by one more edit (inheriting an earlier record)."""
    earlier = read_provenance(base_spec) or {}
    return {
        "format_version": FORMAT_VERSION,
        "detoxedit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "base_model": base_identity(base_spec),
        "edits": [*earlier.get("edits", []), edit],
    }


def write_provenance(folder: Path, record: dict[str, Any]) -> None:
    """detoxedit.json and the model card README.md, each written atomically."""
    atomic_write_text(folder / PROVENANCE_FILE, json.dumps(record, indent=2, default=str) + "\n")
    atomic_write_text(folder / MODEL_CARD, model_card(record))


def model_card(record: dict[str, Any]) -> str:
    """A Hugging Face style model card: what this model is, how it was made, how to load it."""
    base = record.get("base_model", {})
    lines = [
        "---", "tags:", "- detoxedit", "- knowledge-editing", "- detoxification", "---", "",
        f"# {base.get('spec')} detoxified by knowledge editing", "",
        f"This model is `{base.get('spec')}` (weights SHA-256 `{base.get('sha256')}`) with the "
        f"{len(record.get('edits', []))} edit(s) below added to its weights by "
        f"detoxedit {record.get('detoxedit_version')} on {record.get('created')}.", "",
        "| # | method | item | layer | delta SHA-256 | made by |", "|---|---|---|---|---|---|",
    ]
    for number, edit in enumerate(record.get("edits", []), 1):
        item = f"{edit.get('item_file')}:{edit.get('item_id')}" if edit.get("item_id") is not None else "-"
        lines.append(f"| {number} | {edit.get('method')} | {item} | {edit.get('layer')} | "
                     f"`{str(edit.get('delta_sha256'))[:16]}` | {edit.get('made_by')} |")
    lines += [
        "", "Each edit's hyperparameters are in `detoxedit.json`; the last edit alone is in `delta.safetensors`",
        "(when present) and re-applies to the base model with `detoxedit apply-delta`.", "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(\"PATH\")", "tokenizer = AutoTokenizer.from_pretrained(\"PATH\")",
        "```", "",
        "## Limits", "",
        "An edit made from few instances reduces unsafe replies to inputs like them; it is not a guarantee of",
        "safety. Evaluate it on your own data (`detoxedit evaluate --model PATH`) before relying on it.", "",
    ]
    return "\n".join(lines)


def edits_summary(spec: str) -> list[dict[str, Any]]:
    """The edits a model spec carries (empty for a model detoxedit did not write)."""
    try:
        record = read_provenance(spec)
    except DetoxeditError:
        return []
    return list((record or {}).get("edits", []))
