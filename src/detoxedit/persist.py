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
from typing import Any, Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.files import WriteError, atomic_write_text, check_writable_folder, disk_error_message
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
    meta = _read_json_file(meta_path, "the delta's metadata") if meta_path.is_file() else {}
    return deltas, meta


def _read_json_file(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a file a user passes along; damage is a one-line error naming the file."""
    from detoxedit.files import read_text_file

    try:
        value = json.loads(read_text_file(path, what))
    except ValueError as err:
        raise DetoxeditError(f"{path} ({what}) is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise DetoxeditError(f"{path} ({what}) must hold a JSON object, not {type(value).__name__}")
    return value


def _fitted_run_delta(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The one edit a global method fitted in a run folder, with the run's config as its metadata."""
    from detoxedit.provenance import base_identity

    saved = torch.load(folder / FITTED_EDIT, map_location="cpu", weights_only=True)  # no pickled code runs
    if not saved.get("deltas"):
        raise DetoxeditError(f"{folder}: the fitted edit changes no weights (a prompt-side method such as "
                             "self-reminder); there is no model to save, its prompts are in the run's items.jsonl")
    config = _read_json_file(folder / "config.json", "the run's config")
    recorded = (_read_json_file(folder / "inputs.json", "the run's inputs") if (folder / "inputs.json").is_file()
                else {}).get("model") or {}
    base = recorded.get("base") or base_identity(config.get("model", ""))  # recorded when the run was made
    meta = {"base_model": base.get("spec", config.get("model")), "base_model_sha256": base.get("sha256"),
            "made_on_edits": [e.get("delta_sha256") for e in recorded.get("edits", [])],
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
    carried = [e.get("delta_sha256") for e in (read_provenance(model_spec) or {}).get("edits", [])]
    made_on = [d for d in meta.get("made_on_edits") or [] if d]
    missing = [d for d in made_on if d not in carried]
    if missing:
        problems.append(f"the delta was made on a model carrying {len(made_on)} earlier edit(s), {len(missing)} of which "
                        f"{model_spec} lacks; applied alone it gives a model nobody made or evaluated (apply those first)")
    for edit in (read_provenance(model_spec) or {}).get("edits", []):
        if edit.get("delta_sha256") == digest:
            problems.append(f"{model_spec} already has this delta applied ({edit.get('method')} on item "
                            f"{edit.get('item_id')}, by `detoxedit {edit.get('made_by')}`); applying it again doubles the edit")
    base_sha = meta.get("base_model_sha256")
    model_base = base_identity(model_spec)
    if base_sha and model_base.get("sha256") and base_sha != model_base["sha256"]:
        problems.append(f"the delta was made on base model {meta.get('base_model')!r} (weights {base_sha[:12]}), "
                        f"but {model_spec!r} is based on {model_base.get('spec')!r} (weights {model_base['sha256'][:12]})")
    elif not base_sha and meta.get("base_model") not in (None, model_base.get("spec")):
        logger.warning("the delta was made on base model %r, applied here to %r", meta["base_model"], model_spec)
    return problems


def check_save_folder(folder: str | Path, overwrite: bool, inputs: Sequence[str | Path] = ()) -> Path:
    """The resolved --save folder (a symlink is followed, so the model lands in its target), after checking:
    a non-empty folder is refused unless `overwrite` (it may hold a run or another model), a folder that
    is one of the command's own `inputs` (the model or delta it reads) always, and the folder that will
    hold the staging copy must be writable. Call before loading any model."""
    folder = Path(folder).expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise DetoxeditError(f"--save {folder} is a file; give a folder")
    for given in inputs:
        source = Path(given).expanduser()
        if source.exists() and (folder == source.resolve() or folder in source.resolve().parents):
            raise DetoxeditError(f"--save {folder} is where this command reads {given} from; give another folder")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        names = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise DetoxeditError(f"--save {folder} is not empty ({shown}); give a new folder, or --overwrite to replace "
                             "its whole content")
    check_writable_folder(folder if folder.is_dir() else folder.parent, what="the folder of --save")
    return folder


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yields a staging folder; on success its content becomes `folder`'s whole content, on error it is removed.

    A new target is staged beside it and renamed into place (atomic). An existing target (overwrite,
    or an empty mount point, which cannot be renamed) is staged inside it; the old entries are removed
    and the staged ones moved in only once everything is written.
    """
    folder = Path(folder).resolve()
    _remove_stale_staging(folder)
    inside = folder.is_dir()
    staging = (folder / f"{STAGING}{os.getpid()}") if inside else folder.with_name(f".{folder.name}{STAGING}{os.getpid()}")
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        message = _disk_full_message(err, folder)
        if message:
            raise WriteError(message) from err
        raise
    if not inside:
        staging.rename(folder)
        return
    for entry in folder.iterdir():
        if entry != staging:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in staging.iterdir():
        entry.rename(folder / entry.name)
    staging.rmdir()


STAGING = ".detoxedit-staging"


def _remove_stale_staging(folder: Path) -> None:
    """Staging folders that a killed save left (named by this module, with a process id)."""
    stale = list(folder.parent.glob(f".{folder.name}{STAGING}*")) + (list(folder.glob(f"{STAGING}*")) if folder.is_dir() else [])
    for path in stale:
        if path.name.rsplit("staging", 1)[-1].isdigit():
            shutil.rmtree(path, ignore_errors=True)


def _disk_full_message(err: BaseException, folder: Path) -> str | None:
    """safetensors reports a full disk as its own error type, not OSError: recognise it by its text."""
    if isinstance(err, OSError):
        return disk_error_message(err, folder)
    text = str(err)
    if "No space left" in text or "os error 28" in text:
        return f"cannot write {folder}: the disk is full; free space or choose another folder"
    return None


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
