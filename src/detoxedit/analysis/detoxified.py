"""What a detoxified model changed, as deltas on its base model, whatever form it was saved in.

`detoxedit analyze --against X` accepts:
- a run folder of a global method (`run --method sft|dpo|dinm-global ... --out RUN`: its fitted edit);
- a delta folder or file (`edit --save`, `delta.safetensors`);
- a PEFT adapter folder (`adapter_config.json`): PEFT's own delta of every adapted weight;
- a saved model folder (`edit --save-model`, `apply-delta --save`, any Hugging Face checkpoint of the
  same architecture): every parameter that differs from the base model.

Deltas rather than a second model: the analysis reads the base model, then the same model with the
deltas added (and removed again), so two models never sit in memory and both readings share every
unchanged weight bit for bit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.persist import DELTA_TENSORS, FITTED_EDIT, check_deltas, load_delta

logger = logging.getLogger(__name__)


def parse_against(value: str) -> tuple[str, str]:
    """`LABEL=PATH` or `PATH` (the label is then the folder's name)."""
    label, sep, path = value.partition("=")
    if sep and label and not Path(value).exists():
        return label, path
    return Path(value).name or value, value


def detoxified_deltas(spec: str, model: nn.Module, *, trust_remote_code: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The deltas that turn `model` (the base) into the detoxified model `spec`, and what is known of them."""
    path = Path(spec)
    if not path.exists():
        raise DetoxeditError(f"--against {spec}: no such file or folder (give a run folder of a global method, a delta, "
                             "a PEFT adapter or a saved model)")
    if path.is_file() or (path / FITTED_EDIT).is_file() or (path / DELTA_TENSORS).is_file():
        deltas, meta = load_delta(path)
    elif (path / "adapter_config.json").is_file():
        deltas, meta = adapter_deltas(model, path), {"method": "adapter"}
    elif (path / "items.jsonl").is_file():
        raise DetoxeditError(f"--against {spec}: a run folder of a per-item method edits every test item on its own, so "
                             "there is no one detoxified model; save one edit with `detoxedit edit --save`, or analyse "
                             "a global method's run (--method dinm-global, sft, dpo)")
    elif (path / "config.json").is_file():
        deltas, meta = saved_model_deltas(model, path, trust_remote_code=trust_remote_code), {"method": "saved model"}
    else:
        raise DetoxeditError(f"--against {spec}: not a run folder, delta, PEFT adapter or saved model "
                             f"(none of {FITTED_EDIT}, {DELTA_TENSORS}, adapter_config.json, config.json in it)")
    check_deltas(model, deltas, source=f"--against {spec}")
    return deltas, meta


def adapter_deltas(model: nn.Module, folder: Path) -> dict[str, torch.Tensor]:
    """PEFT's delta for every adapted weight of `model`; the model is left as it was found."""
    from peft import PeftModel

    from detoxedit.methods._trl import lora_deltas

    try:
        wrapped = PeftModel.from_pretrained(model, str(folder))
    except Exception as err:  # PEFT raises many types for a bad or foreign adapter
        raise DetoxeditError(f"--against {folder}: not a PEFT adapter of this model ({err})") from err
    try:
        return lora_deltas(wrapped)
    finally:
        wrapped.unload()  # takes the LoRA layers out again, leaving the base modules


def saved_model_deltas(model: nn.Module, folder: Path, *, trust_remote_code: bool = False) -> dict[str, torch.Tensor]:
    """saved - base for every parameter that differs (the saved model must have the base's architecture)."""
    from detoxedit.methods._trl import full_deltas
    from detoxedit.models import load_model

    other, _ = load_model(str(folder), dtype=next(model.parameters()).dtype, trust_remote_code=trust_remote_code)
    if type(other) is not type(model):
        raise DetoxeditError(f"--against {folder}: a {type(other).__name__}, but the base model is a {type(model).__name__}")
    shapes = {name: tuple(p.shape) for name, p in other.named_parameters()}
    wrong = [name for name, p in model.named_parameters() if shapes.get(name) != tuple(p.shape)]
    if wrong:
        raise DetoxeditError(f"--against {folder}: {len(wrong)} parameters differ in name or shape from the base model "
                             f"(first: {wrong[0]}); is it a model of another size?")
    deltas = full_deltas(model, other)
    logger.info("--against %s: %d parameters differ from the base model", folder, len(deltas))
    return deltas
