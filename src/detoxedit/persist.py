"""Persisting edits: a detoxified model as a standard checkpoint, and the edit alone as a delta file.

A saved model folder is an ordinary Hugging Face checkpoint (safetensors + tokenizer), loadable
by `load_model(DIR)` or any HF tool, plus the delta that made it and its provenance:

    DIR/config.json, model.safetensors, tokenizer files ...   the edited model
    DIR/delta.safetensors                                      the changed tensors (param name -> delta)
    DIR/delta.json                                             base model spec + hash, item, layer, method + config
    DIR/detoxedit.json, DIR/README.md                          provenance and model card (`provenance.py`)

The delta (a few MB for one down-projection) can be re-applied to the base model with
`apply_delta_file`, so sharing an edit does not require sharing the whole model. A folder is
written into a staging folder beside it and renamed into place when complete, so a kill or a
full disk never leaves half a model; a non-empty target folder is refused unless overwriting.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text, check_writable_folder
from detoxedit.methods.base import Edit, applied, apply_deltas
from detoxedit.models.loading import drop_quantization_config

logger = logging.getLogger(__name__)

DELTA_TENSORS = "delta.safetensors"
DELTA_META = "delta.json"
FITTED_EDIT = "fitted_edit.pt"  # a global method's edit in its run folder (runner.py)
FORMAT_VERSION = 1


def save_delta(edit: Edit, folder: str | Path, meta: dict[str, Any]) -> Path:
    """Writes the edit's deltas (delta.safetensors) and what produced them (delta.json)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: delta.detach().contiguous().cpu() for name, delta in edit.deltas.items()}
    save_file(tensors, str(folder / DELTA_TENSORS))
    record = {"format_version": FORMAT_VERSION, "layer": edit.layer, "losses": edit.losses,
              "shapes": {name: list(t.shape) for name, t in tensors.items()}, **meta}
    atomic_write_text(folder / DELTA_META, json.dumps(record, indent=2, default=str) + "\n")
    return folder / DELTA_TENSORS


def load_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a delta: `path` is a saved folder or its delta.safetensors (the JSON beside it is optional),
    or a run folder of a global method (`run --method sft ... --out RUN`: its fitted_edit.pt)."""
    path = Path(path)
    if path.is_dir() and (path / FITTED_EDIT).is_file() and not (path / DELTA_TENSORS).is_file():
        return _fitted_run_delta(path)
    tensors_path = path / DELTA_TENSORS if path.is_dir() else path
    if not tensors_path.is_file():
        raise DetoxeditError(f"delta file not found: {tensors_path} (give a folder written by `detoxedit edit --save`, "
                             f"its {DELTA_TENSORS}, or the run folder of a global method)")
    try:
        deltas = load_file(str(tensors_path))
    except Exception as err:  # safetensors raises its own error types
        raise DetoxeditError(f"{tensors_path}: not a readable safetensors file ({err})") from err
    meta_path = tensors_path.with_name(DELTA_META)
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return deltas, meta


def _fitted_run_delta(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The one edit a global method fitted in a run folder, with the run's config as its metadata."""
    from detoxedit.provenance import base_identity

    saved = torch.load(folder / FITTED_EDIT, map_location="cpu", weights_only=True)  # no pickled code runs
    if not saved.get("deltas"):
        raise DetoxeditError(f"{folder}: the fitted edit changes no weights (a prompt-side method such as "
                             "self-reminder); there is no model to save, its prompts are in the run's items.jsonl")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    meta = {"base_model": config.get("model"), "base_model_sha256": base_identity(config.get("model", "")).get("sha256"),
            "method": config.get("method"), "preset": config.get("preset"), "method_config": config.get("method_config"),
            "item_file": config.get("train"), "layer": saved.get("layer"), "run_folder": str(folder)}
    return saved["deltas"], meta


def check_deltas(model: nn.Module, deltas: dict[str, torch.Tensor], source: str = "delta") -> None:
    """Every delta must name a parameter of `model` and match its shape; lists all mismatches."""
    params = dict(model.named_parameters())
    problems = []
    for name, delta in deltas.items():
        if name not in params:
            problems.append(f"  {name}: no such parameter in {type(model).__name__}")
        elif tuple(delta.shape) != tuple(params[name].shape):
            problems.append(f"  {name}: delta shape {tuple(delta.shape)} != parameter shape {tuple(params[name].shape)}")
    if problems:
        raise DetoxeditError(f"{source} does not fit this model (is it the same base model?):\n" + "\n".join(problems))


def apply_delta_file(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Adds a saved delta to `model` in place (after checking names and shapes); returns its metadata."""
    deltas, meta = load_delta(path)
    check_deltas(model, deltas, source=str(path))
    apply_deltas(model, deltas)
    return meta


def delta_conflicts(deltas: dict[str, torch.Tensor], meta: dict[str, Any], model_spec: str) -> list[str]:
    """Why applying this delta to `model_spec` is probably a mistake: it is already applied there
    (the model's detoxedit.json lists its digest), or it was made on another base model (hashes differ)."""
    from detoxedit.provenance import base_identity, deltas_sha256, read_provenance

    problems = []
    digest = deltas_sha256(deltas)
    for edit in (read_provenance(model_spec) or {}).get("edits", []):
        if edit.get("delta_sha256") == digest:
            problems.append(f"{model_spec} already has this delta applied ({edit.get('method')} on item "
                            f"{edit.get('item_id')}, by `detoxedit {edit.get('made_by')}`); applying it again doubles the edit")
    made_on = meta.get("base_model_sha256")
    model_base = base_identity(model_spec)
    if made_on and model_base.get("sha256") and made_on != model_base["sha256"]:
        problems.append(f"the delta was made on base model {meta.get('base_model')!r} (weights {made_on[:12]}), "
                        f"but {model_spec!r} is based on {model_base.get('spec')!r} (weights {model_base['sha256'][:12]})")
    elif not made_on and meta.get("base_model") not in (None, model_base.get("spec")):
        logger.warning("the delta was made on base model %r, applied here to %r", meta["base_model"], model_spec)
    return problems


def check_save_folder(folder: str | Path, overwrite: bool) -> Path:
    """Refuses a non-empty target (it may hold a run or another model) unless `overwrite`; checks that
    the folder beside which the model is staged can be written. Call before loading any model."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DetoxeditError(f"--save {folder} is a file; give a folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        names = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise DetoxeditError(f"--save {folder} is not empty ({shown}); give a new folder, or --overwrite to replace "
                             "its whole content")
    check_writable_folder(folder.parent, what="the folder of --save")
    return folder


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yields a staging folder beside `folder`; on success it replaces `folder` (whole), on error it is removed."""
    folder = Path(folder)
    for stale in folder.parent.glob(f".{folder.name}.staging*"):  # left by a killed save of the same folder
        shutil.rmtree(stale, ignore_errors=True)
    staging = folder.with_name(f".{folder.name}.staging{os.getpid()}")
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        retired = folder.with_name(f".{folder.name}.replaced{os.getpid()}")
        folder.rename(retired)
        staging.rename(folder)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(folder)


def save_model(model: nn.Module, tokenizer: Any, folder: str | Path) -> Path:
    """Saves `model` as a standard safetensors checkpoint with its tokenizer (into `folder` as it is)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drop_quantization_config(model)  # a GGUF-dequantised model is plain float but still claims quantization
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_applied_model(model: nn.Module, tokenizer: Any, folder: str | Path, record: dict[str, Any]) -> Path:
    """Saves a model (its delta already added) with its provenance record, staged then renamed into place."""
    from detoxedit.provenance import write_provenance

    with staged_folder(folder) as staging:
        save_model(model, tokenizer, staging)
        write_provenance(staging, record)
    return Path(folder)


def save_edited_model(model: nn.Module, tokenizer: Any, edit: Edit, folder: str | Path, meta: dict[str, Any],
                      record: dict[str, Any] | None = None) -> Path:
    """Saves the model with `edit` applied, plus the delta and the provenance `record` (default: built
    from `meta["base_model"]`); `model` itself is left as it was. The folder appears only once complete."""
    from detoxedit.provenance import edit_entry, new_record, write_provenance

    if record is None:
        record = new_record(str(meta.get("base_model", "unknown")), edit_entry(edit.deltas, meta, made_by="edit"))
    check_deltas(model, edit.deltas, source="edit")
    with staged_folder(folder) as staging:
        with applied(model, edit.deltas, context="saving the edited model: "):
            save_model(model, tokenizer, staging)
        save_delta(edit, staging, meta)
        write_provenance(staging, record)
    logger.info("Saved the edited model, its delta and its provenance to %s", folder)
    return Path(folder)
