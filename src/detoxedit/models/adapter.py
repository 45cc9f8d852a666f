"""Architecture adapters: find decoder layers, attention, MLP projections, final norm and LM head.

Modules are found from the model's own structure, never from its name: the decoder layers are the
longest ModuleList of identical blocks; in each block the MLP is the child holding a pair of
projections hidden -> d_ff and d_ff -> hidden (the down-projection is the d_ff -> hidden one); the
final norm is the last norm beside the layers; the head is `get_output_embeddings()`. GPT-2's
Conv1D stores its weight as (in, out) rather than nn.Linear's (out, in); `LinearView` hides that.

An architecture that discovery cannot read is declared once with `declare_architecture`.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from detoxedit.errors import ArchitectureError

_DECLARED: dict[str, "ArchitectureSpec"] = {}


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths: `layers`, `final_norm`, `lm_head` from the model root; the rest inside a layer."""

    layers: str
    attention: str
    mlp: str
    up_proj: str
    down_proj: str
    final_norm: str
    lm_head: str
    gate_proj: str | None = None


def declare_architecture(model_class: str, spec: ArchitectureSpec) -> None:
    """Declares the module paths of a model class (its Python class name) that discovery cannot read.

    Example: declare_architecture("MyForCausalLM", ArchitectureSpec(layers="backbone.blocks",
    attention="attn", mlp="ffn", up_proj="ffn.w_in", down_proj="ffn.w_out",
    final_norm="backbone.norm_out", lm_head="head")).
    """
    _DECLARED[model_class] = spec


@dataclass(frozen=True)
class LinearView:
    """A projection seen as y = x @ W.T + b with W of shape (out, in), whatever its storage."""

    module: nn.Module

    @property
    def transposed(self) -> bool:
        """True for Conv1D, whose parameter is stored (in, out)."""
        return isinstance(self.module, Conv1D)

    @property
    def weight(self) -> nn.Parameter:
        return self.module.weight

    @property
    def in_features(self) -> int:
        return self.weight.shape[0] if self.transposed else self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1] if self.transposed else self.weight.shape[0]

    def weight_in_out(self) -> torch.Tensor:
        """The weight as (in, out), so that y = x @ W_io + b for both storages."""
        return self.weight if self.transposed else self.weight.T

    def to_param_layout(self, delta_in_out: torch.Tensor) -> torch.Tensor:
        """Converts an (in, out) delta into the parameter's own storage layout."""
        return delta_in_out if self.transposed else delta_in_out.T

    def to_in_out(self, delta_param: torch.Tensor) -> torch.Tensor:
        """Converts a delta in the parameter's layout into (in, out)."""
        return delta_param if self.transposed else delta_param.T


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D))


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


class ModelAdapter:
    """Standard names for one model's modules (TransformerLens-style), resolved once."""

    def __init__(self, model: nn.Module, spec: ArchitectureSpec | None = None) -> None:
        self.model = model
        self.spec = spec or _DECLARED.get(type(model).__name__) or discover_architecture(model)
        self._check_paths()

    def _check_paths(self) -> None:
        """Fails early, naming the path, when a declared or discovered path does not exist."""
        try:
            _get(self.model, self.spec.final_norm)
            _get(self.model, self.spec.lm_head)
            first = self.layers[0]
            for path in (self.spec.attention, self.spec.mlp, self.spec.up_proj, self.spec.down_proj):
                _get(first, path)
        except (AttributeError, IndexError) as err:
            raise ArchitectureError(f"{type(self.model).__name__}: bad module path in {self.spec}: {err}") from err

    @property
    def layers(self) -> nn.ModuleList:
        return _get(self.model, self.spec.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.down_proj(0).out_features

    def layer(self, index: int) -> nn.Module:
        return self.layers[index]

    def attention(self, index: int) -> nn.Module:
        return _get(self.layers[index], self.spec.attention)

    def mlp(self, index: int) -> nn.Module:
        return _get(self.layers[index], self.spec.mlp)

    def down_proj(self, index: int) -> LinearView:
        return LinearView(_get(self.layers[index], self.spec.down_proj))

    def up_proj(self, index: int) -> LinearView:
        return LinearView(_get(self.layers[index], self.spec.up_proj))

    def gate_proj(self, index: int) -> LinearView | None:
        if self.spec.gate_proj is None:
            return None
        return LinearView(_get(self.layers[index], self.spec.gate_proj))

    @property
    def final_norm(self) -> nn.Module:
        return _get(self.model, self.spec.final_norm)

    @property
    def lm_head(self) -> nn.Module:
        return _get(self.model, self.spec.lm_head)

    def down_proj_name(self, index: int) -> str:
        """Full parameter name of a layer's down-projection weight, as in `model.state_dict()`."""
        return f"{self.spec.layers}.{index}.{self.spec.down_proj}.weight"

    def describe(self) -> dict[str, str | int | None]:
        """The mapping as plain values, for `detoxedit info` and run folders."""
        return {"model_class": type(self.model).__name__, "num_layers": self.num_layers, **asdict(self.spec)}


_ADAPTERS: "weakref.WeakKeyDictionary[nn.Module, ModelAdapter]" = weakref.WeakKeyDictionary()


def get_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for `model` (declared mapping first, else discovered), resolved once per model.

    Discovery walks every module of the model; edit loops ask for the adapter at every step, so the
    result is kept for the model's lifetime (a later `declare_architecture` for its class wins).
    """
    declared = _DECLARED.get(type(model).__name__)
    adapter = _ADAPTERS.get(model)
    if adapter is None or (declared is not None and adapter.spec is not declared):
        adapter = _ADAPTERS[model] = ModelAdapter(model)
    return adapter


def discover_architecture(model: nn.Module) -> ArchitectureSpec:
    """Reads the module paths from the model's structure; raises ArchitectureError naming what is missing."""
    name = type(model).__name__
    layers_path = _find_layers(model)
    block = _get(model, layers_path)[0]
    mlp_path, up, gate, down = _find_mlp(block, name)
    return ArchitectureSpec(
        layers=layers_path,
        attention=_find_attention(block, mlp_path, name),
        mlp=mlp_path,
        up_proj=up,
        down_proj=down,
        gate_proj=gate,
        final_norm=_find_final_norm(model, layers_path),
        lm_head=_find_lm_head(model),
    )


def _missing(model_name: str, what: str) -> ArchitectureError:
    return ArchitectureError(
        f"{model_name}: could not find {what} from the model's structure; declare the module paths with "
        "detoxedit.models.adapter.declare_architecture(model_class, ArchitectureSpec(...))"
    )


def _find_layers(model: nn.Module) -> str:
    """The longest ModuleList whose children are all the same class: the decoder blocks."""
    best, best_len = None, 0
    for path, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > best_len:
            if len({type(child) for child in module}) == 1:
                best, best_len = path, len(module)
    if best is None:
        raise _missing(type(model).__name__, "the decoder layers (a ModuleList of identical blocks)")
    return best


def _linears(module: nn.Module) -> Iterator[tuple[str, LinearView]]:
    for path, child in module.named_modules():
        if _is_linear(child):
            yield path, LinearView(child)


def _find_mlp(block: nn.Module, model_name: str) -> tuple[str, str, str | None, str]:
    """The child of a block holding up (hidden -> d_ff, or fused 2*d_ff) and down (d_ff -> hidden) projections."""
    for child_name, child in block.named_children():
        found = _match_projections(child)
        if found is not None:
            up, gate, down = found
            join = lambda p: f"{child_name}.{p}" if p else child_name  # noqa: E731
            return child_name, join(up), (join(gate) if gate else None), join(down)
    raise _missing(model_name, "the MLP (a child with hidden->d_ff and d_ff->hidden projections)")


def _match_projections(mlp: nn.Module) -> tuple[str, str | None, str] | None:
    views = list(_linears(mlp))
    for down_path, down in views:
        hidden, d_ff = down.out_features, down.in_features
        if d_ff <= hidden:
            continue
        ups = [p for p, v in views if v.in_features == hidden and v.out_features in (d_ff, 2 * d_ff)]
        if not ups:
            continue
        gates = [p for p in ups if "gate" in p.rsplit(".", 1)[-1]]
        plain = [p for p in ups if p not in gates]
        up = plain[0] if plain else ups[0]
        return up, (gates[0] if gates and gates[0] != up else None), down_path
    return None


def _find_attention(block: nn.Module, mlp_path: str, model_name: str) -> str:
    """The child (other than the MLP and norms) that holds linear projections: the attention block."""
    for child_name, child in block.named_children():
        if child_name == mlp_path or _is_norm(child):
            continue
        if "attn" in child_name.lower() or "attention" in type(child).__name__.lower() or any(_linears(child)):
            return child_name
    raise _missing(model_name, "the attention block")


def _find_final_norm(model: nn.Module, layers_path: str) -> str:
    """The last norm module that sits beside the decoder layers in their parent."""
    parent_path = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    parent = _get(model, parent_path)
    norms = [name for name, child in parent.named_children() if _is_norm(child)]
    if not norms:
        raise _missing(type(model).__name__, f"the final norm beside {layers_path!r}")
    return f"{parent_path}.{norms[-1]}" if parent_path else norms[-1]


def _find_lm_head(model: nn.Module) -> str:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for path, module in model.named_modules():
        if module is head and path:
            return path
    raise _missing(type(model).__name__, "the LM head (get_output_embeddings())")
