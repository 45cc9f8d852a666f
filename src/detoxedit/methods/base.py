"""The edit-method interface (ROME-style): `execute` returns deltas, `apply_deltas` adds them.

Every method (DINM, FT-L, and later SFT, DPO, Ext-Sub, MEND, ...) is one module with a flat config
dataclass and a subclass of `EditMethod`, registered by name in `METHODS`. The runner only sees this
interface, so adding a method never touches the runner.

Contract:
    * `execute(model, tokenizer, item)` leaves every weight of `model` bit-identical and returns an
      `Edit`: parameter name -> delta (in the parameter's own storage layout) plus a record.
    * `apply_deltas` adds the deltas in place and returns the original tensors; `restore_weights`
      copies them back and verifies a checksum of each restored tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn

from detoxedit.config import config_from_dict
from detoxedit.errors import DetoxeditError
from detoxedit.registry import Registry


class RestoreError(DetoxeditError):
    """A restored weight does not match its original: the model can no longer be trusted."""


@dataclass
class Edit:
    """The outcome of one `execute`: what to add to which weights, and how it was found.

    Attributes:
        deltas: parameter name (as in `model.named_parameters()`) -> delta, same shape and layout.
        layer: the edited (located) layer, if the method edits one layer.
        losses: loss per optimisation step.
        info: JSON-serialisable extras (distance profile, timings, loss parts, ...).
        system_prompt: for prompt-side methods (e.g. Self-Reminder): the prompt to generate with.
    """

    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    layer: int | None = None
    losses: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None

    def relative_change(self, model: nn.Module) -> dict[str, float]:
        """||delta|| / ||W|| per edited parameter (Frobenius norms)."""
        params = dict(model.named_parameters())
        return {name: float(d.norm() / params[name].detach().norm().clamp_min(1e-12)) for name, d in self.deltas.items()}


class EditMethod(ABC):
    """Base class: holds the method's config; subclasses implement `execute`."""

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    @abstractmethod
    def execute(self, model: nn.Module, tokenizer: Any, item: Any) -> Edit:
        """Computes the edit for one SafeEdit item; must leave `model` bit-identical."""

    def start_run(self, finished: Sequence[dict[str, Any]] = ()) -> None:
        """Called once before a run edits its first item (methods with per-run state reset it here).

        `finished` holds the items.jsonl records of items a resumed run already did, in run order, so
        that per-run state (the compat mode's first-item layer) survives a kill and resume.
        """


METHODS: Registry[type[EditMethod]] = Registry("method")


def build_method(name: str, values: dict[str, Any] | None = None) -> EditMethod:
    """Instantiates a registered method from config values (preset merged with overrides)."""
    import detoxedit.methods  # noqa: F401  (registers the built-in methods)

    cls = METHODS.get(name)
    config = config_from_dict(cls.config_class, dict(values or {}), source=f"method {name!r} config")
    return cls(config)


def weight_checksum(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes: equal iff bit-identical."""
    data = tensor.detach().contiguous().cpu()
    if data.dtype == torch.bfloat16:
        data = data.view(torch.int16)
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


@torch.no_grad()
def apply_deltas(model: nn.Module, deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Adds the deltas in place; returns copies of the original tensors (for `restore_weights`)."""
    params = dict(model.named_parameters())
    missing = sorted(set(deltas) - set(params))
    if missing:
        raise DetoxeditError(f"deltas name parameters the model does not have: {missing}")
    originals = {name: params[name].detach().clone() for name in deltas}
    for name, delta in deltas.items():
        params[name].add_(delta.to(params[name].device, params[name].dtype))
    return originals


@torch.no_grad()
def restore_weights(model: nn.Module, originals: dict[str, torch.Tensor], context: str = "") -> None:
    """Copies the originals back and verifies each restored tensor's checksum; a mismatch aborts."""
    params = dict(model.named_parameters())
    for name, original in originals.items():
        params[name].copy_(original)
        if weight_checksum(params[name]) != weight_checksum(original):
            raise RestoreError(f"{context}restored weight {name} does not match its original checksum")


@contextlib.contextmanager
def applied(model: nn.Module, deltas: dict[str, torch.Tensor], context: str = "") -> Iterator[None]:
    """Within the block the deltas are applied; afterwards the originals are back, even on error."""
    originals = apply_deltas(model, deltas)
    try:
        yield
    finally:
        restore_weights(model, originals, context)
