"""Persisting edits: a detoxified model as a standard checkpoint, and the edit alone as a delta file.

A saved model folder is an ordinary Hugging Face checkpoint (safetensors + tokenizer), loadable
by `load_model(DIR)` or any HF tool, plus the delta that made it:

    DIR/config.json, model.safetensors, tokenizer files ...   the edited model
    DIR/delta.safetensors                                      the changed tensors (param name -> delta)
    DIR/delta.json                                             base model spec, item id, layer, method + config

The delta (a few MB for one down-projection) can be re-applied to the base model with
`apply_delta_file`, so sharing an edit does not require sharing the whole model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.methods.base import Edit, applied, apply_deltas
from detoxedit.models.loading import drop_quantization_config

logger = logging.getLogger(__name__)

DELTA_TENSORS = "delta.safetensors"
DELTA_META = "delta.json"
FORMAT_VERSION = 1


def save_delta(edit: Edit, folder: str | Path, meta: dict[str, Any]) -> Path:
    """Writes the edit's deltas (delta.safetensors) and what produced them (delta.json)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: delta.detach().contiguous().cpu() for name, delta in edit.deltas.items()}
    save_file(tensors, str(folder / DELTA_TENSORS))
    record = {"format_version": FORMAT_VERSION, "layer": edit.layer, "losses": edit.losses,
              "shapes": {name: list(t.shape) for name, t in tensors.items()}, **meta}
    (folder / DELTA_META).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return folder / DELTA_TENSORS


def load_delta(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a delta: `path` is a saved folder or its delta.safetensors; the JSON beside it is optional."""
    path = Path(path)
    tensors_path = path / DELTA_TENSORS if path.is_dir() else path
    if not tensors_path.is_file():
        raise DetoxeditError(f"delta file not found: {tensors_path} (give a folder written by `detoxedit edit --save` or its {DELTA_TENSORS})")
    try:
        deltas = load_file(str(tensors_path))
    except Exception as err:  # safetensors raises its own error types
        raise DetoxeditError(f"{tensors_path}: not a readable safetensors file ({err})") from err
    meta_path = tensors_path.with_name(DELTA_META)
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return deltas, meta


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


def save_model(model: nn.Module, tokenizer: Any, folder: str | Path) -> Path:
    """Saves `model` as a standard safetensors checkpoint with its tokenizer."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    drop_quantization_config(model)  # a GGUF-dequantised model is plain float but still claims quantization
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_edited_model(model: nn.Module, tokenizer: Any, edit: Edit, folder: str | Path, meta: dict[str, Any]) -> Path:
    """Saves the model with `edit` applied, plus the delta; `model` itself is left as it was."""
    check_deltas(model, edit.deltas, source="edit")
    with applied(model, edit.deltas, context="saving the edited model: "):
        save_model(model, tokenizer, folder)
    save_delta(edit, folder, meta)
    logger.info("Saved the edited model and its delta to %s", folder)
    return Path(folder)
