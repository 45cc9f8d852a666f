"""The edit-method interface (ROME-style): `execute` returns deltas, `apply_deltas` adds them.

Every method (DINM, FT-L, Self-Reminder, and later SFT, DPO, Ext-Sub, MEND, ...) is one module with
a flat config dataclass and a subclass of `EditMethod`, registered by name in `METHODS`. The runner
only sees this interface, so adding a method never touches the runner.

Lifecycle (the runner calls these, in this order, once per run):
    1. `prepare(model, tokenizer, train_items, finished)`: the training data (`--train FILE`, may be
       empty) and the records of items a resumed run already finished. Per-run state starts here.
    2. `scope == PER_ITEM` (DINM, FT-L, MEND): `execute(model, tokenizer, item)` for each test item;
       the runner evaluates that item with the edit and restores the model (edit -> evaluate -> restore).
       `scope == GLOBAL` (SFT, DPO, Ext-Sub, Self-Reminder, one-instance DINM): `fit(model, tokenizer,
       train_items)` once; every test item is evaluated with that one edit.
    `changes_model = False` (the vanilla `none`) tells the runner that evaluating the method is
    evaluating the base model, so there is nothing beyond the vanilla replies to compute.

Contract:
    * `execute` / `fit` leave every weight of `model` bit-identical and return an `Edit`: parameter
      name -> delta (in the parameter's own storage layout), prompt-side changes, and a record.
    * `writes(model)` names every parameter the method may change; the runner checksums them before
      the first edit and verifies them after each batch.
    * `apply_deltas` adds the deltas in place and returns the original tensors; `restore_weights`
      copies them back and verifies a checksum of each restored tensor.
"""

from __future__ import annotations

import contextlib
import hashlib
from abc import ABC
from dataclasses import dataclass, field
from pathlib import Path
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
        system_prompt: for prompt-side methods (e.g. Self-Reminder): the system prompt to generate with.
        user_suffix: for prompt-side methods: text appended (after a blank line) to every user message.
    """

    deltas: dict[str, torch.Tensor] = field(default_factory=dict)
    layer: int | None = None
    losses: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    user_suffix: str | None = None

    def wrap(self, message: str) -> str:
        """The user message as this edit sends it (with `user_suffix`, if any)."""
        return f"{message}\n\n{self.user_suffix}" if self.user_suffix else message

    def relative_change(self, model: nn.Module) -> dict[str, float]:
        """||delta|| / ||W|| per edited parameter (Frobenius norms)."""
        params = dict(model.named_parameters())
        return {name: float(d.norm() / params[name].detach().norm().clamp_min(1e-12)) for name, d in self.deltas.items()}


PER_ITEM, GLOBAL = "per_item", "global"
SCOPES = (PER_ITEM, GLOBAL)


class EditMethod(ABC):
    """Base class: holds the method's config; subclasses implement `execute` (per item) or `fit` (global)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    scope: ClassVar[str] = PER_ITEM
    changes_model: ClassVar[bool] = True

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.work_dir: Path | None = None
        """A folder of the run where the method may keep state that must survive a kill (training
        checkpoints, to resume from); set by the runner before `prepare`, None outside a run."""

    @classmethod
    def compat_values(cls) -> dict[str, Any]:
        """Config values that reproduce the reference code (EasyEdit), for `--easyedit-compat`; none by default."""
        return {}

    def prepare(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any] = (),
                finished: Sequence[dict[str, Any]] = ()) -> None:
        """Called once per run before the first edit (per-run state starts here).

        Args:
            train_items: the run's training data (`--train FILE`); empty when none was given.
            finished: the items.jsonl records of items a resumed run already did, in run order, so
                that per-run state (the compat mode's first-item layer) survives a kill and resume.
        """

    def execute(self, model: nn.Module, tokenizer: Any, item: Any) -> Edit:
        """Per-item methods: the edit for one SafeEdit item; must leave `model` bit-identical."""
        raise NotImplementedError(f"method {self.name!r} has scope {self.scope!r} and no per-item execute")

    def fit(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any]) -> Edit:
        """Global methods: the one edit every test item is evaluated with; must leave `model` bit-identical."""
        raise NotImplementedError(f"method {self.name!r} has scope {self.scope!r} and no fit")

    def writes(self, model: nn.Module) -> list[str]:
        """Names of the parameters this method may change (checksummed by the runner); default: all of them."""
        return [name for name, _ in model.named_parameters()]


METHODS: Registry[type[EditMethod]] = Registry("method")


def build_method(name: str, values: dict[str, Any] | None = None) -> EditMethod:
    """Instantiates a registered method (by name or alias) from config values, typed by its config class."""
    import detoxedit.methods  # noqa: F401  (registers the built-in methods)

    cls = METHODS.get(name)
    config = config_from_dict(cls.config_class, dict(values or {}), source=f"method {METHODS.canonical(name)!r} config")
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
