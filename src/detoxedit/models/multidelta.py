"""Per-row weight deltas: several items' edits generated in ONE batch, each row with its own weights.

An edit changes one matrix (or a few) of the model. To evaluate many edits without applying them one
at a time, every edited projection gets a forward hook that adds `x_row @ Δ_row` to the output of the
rows whose item edited it:

    y_row = x_row @ W + b + x_row @ Δ_row      (Δ in (in, out) layout, see `LinearView.to_in_out`)

All other layers are shared, so one batched `generate` evaluates `k` edited models for the price of one
forward pass plus one small matmul per edit (rows grouped by owner; deltas never copied per row). Rows may have deltas on different layers (grouped per module);
rows without a delta add nothing. The model's weights are never touched.

Numerics: in float32 the replies equal those of applying each edit in turn (`applied`), token for
token (tested on CPU; also seen on an H100). In bfloat16/float16 they can differ: `applied` rounds
W + Δ to the weight dtype, which loses most of a small Δ (bf16 keeps ~3 significant digits), while
the hook adds x @ Δ separately and keeps it.

Usage:
    owners = [item_index_of_prompt[i] for i in range(len(prompts))]   # -1 for rows without an edit
    generate(model, tok, prompts, row_context=RowDeltas(model, [e.deltas for e in edits], owners))
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from detoxedit.errors import DetoxeditError
from detoxedit.models.adapter import LinearView
from detoxedit.models.hooks import hooked_all

logger = logging.getLogger(__name__)


def linear_of(model: nn.Module, param_name: str) -> LinearView | None:
    """The projection whose `.weight` is `param_name`, or None for anything else (bias, norm, ...)."""
    module_name, _, leaf = param_name.rpartition(".")
    if leaf != "weight":
        return None
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return None
    return LinearView(module) if isinstance(module, (nn.Linear, Conv1D)) else None


def supports_row_deltas(model: nn.Module, deltas: Mapping[str, torch.Tensor]) -> bool:
    """True when every delta is on a Linear/Conv1D weight, which is what the hooks can add per row."""
    return all(linear_of(model, name) is not None for name in deltas)


class _ModuleDeltas:
    """The (in, out) deltas of one projection, one per owner, and the rows each applies to."""

    def __init__(self, view: LinearView, deltas: dict[int, torch.Tensor]) -> None:
        weight = view.weight
        self.deltas = {o: view.to_in_out(d.to(weight.device, weight.dtype)).contiguous() for o, d in deltas.items()}
        self._last: tuple[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    def groups(self, owners: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(batch positions of one owner's rows, that owner's delta (in, out))] for owners with a delta here.

        Rows are grouped by owner so each delta is used in place (one matmul per owner), never
        copied per row. The rows stay the same for many decoding steps, so the last grouping is kept.
        """
        key = tuple(owners)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        by_owner: dict[int, list[int]] = {}
        for position, owner in enumerate(owners):
            if owner in self.deltas:
                by_owner.setdefault(owner, []).append(position)
        groups = []
        for owner, positions in by_owner.items():
            delta = self.deltas[owner]
            groups.append((torch.tensor(positions, dtype=torch.long, device=delta.device), delta))
        self._last = (key, groups)
        return groups


class RowDeltas:
    """A `row_context` for `generate`: adds each row's own deltas via forward hooks.

    Args:
        model: the (unchanged) model.
        deltas: one dict per owner (e.g. per item): parameter name -> delta in the parameter's layout.
        row_owner: for each prompt index given to `generate`, its owner's index in `deltas`, or -1.
    """

    def __init__(self, model: nn.Module, deltas: Sequence[Mapping[str, torch.Tensor]], row_owner: Sequence[int]) -> None:
        self.model = model
        self.row_owner = torch.tensor(list(row_owner), dtype=torch.long)
        if len(self.row_owner) and int(self.row_owner.max()) >= len(deltas):
            raise ValueError(f"row_owner names owner {int(self.row_owner.max())} but only {len(deltas)} delta sets given")
        self.modules = self._group_by_module(deltas)

    def _group_by_module(self, deltas: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, tuple[nn.Module, _ModuleDeltas]]:
        per_param: dict[str, dict[int, torch.Tensor]] = {}
        for owner, owner_deltas in enumerate(deltas):
            for name, delta in owner_deltas.items():
                per_param.setdefault(name, {})[owner] = delta
        grouped = {}
        for name, by_owner in per_param.items():
            view = linear_of(self.model, name)
            if view is None:
                raise DetoxeditError(f"per-row deltas support Linear/Conv1D weights only, not {name!r}; "
                                     "use batched_edits=False for this method")
            grouped[name] = (view.module, _ModuleDeltas(view, by_owner))
        return grouped

    def __call__(self, rows: torch.Tensor) -> contextlib.AbstractContextManager:
        return self._hooked(rows)

    def row_keys(self, rows: torch.Tensor) -> list[int]:
        """Rows of one owner run under the same weights, so `generate` may share their prompt prefixes."""
        return self.row_owner[rows.cpu()].tolist()

    @contextlib.contextmanager
    def _hooked(self, rows: torch.Tensor) -> Iterator[None]:
        """Hooks for one forward pass over `rows` (original prompt indices, in batch order)."""
        owners = self.row_owner[rows.cpu()]  # (batch,)
        hooks = [(module, _row_hook(owners, stacked), None) for module, stacked in self.modules.values()]
        with hooked_all((module, hook, None) for module, hook, _ in hooks if hook is not None):
            yield


def _row_hook(owners: torch.Tensor, stacked: _ModuleDeltas):
    """A forward hook adding x[rows] @ Δ[owner] for each owner that edited this module."""
    groups = stacked.groups(owners.tolist())
    if not groups:
        return None

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]  # (batch, seq, in)
        for index, delta in groups:
            extra = x.index_select(0, index) @ delta  # (rows of this owner, seq, out)
            output = output.index_add(0, index, extra.to(output.dtype))
        return output

    return hook
