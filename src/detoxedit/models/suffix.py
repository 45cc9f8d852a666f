"""Cached-prefix forward: run only the layers at and above an edited layer.

When only layer L's weights change between optimisation steps, layers 0..L-1 compute the same
thing every step for a fixed input. `SuffixForward` computes their output once (no grad) and then,
for every step, runs the model's own forward with layers 0..L-1 temporarily replaced by a stub that
returns that cached output. The model itself still builds the masks, position ids and rotary
embeddings, so this works for any architecture whose decoder loop calls its layers in order, with
no per-family code. The real layers are always put back, even when the forward raises.

Only the positions whose logits are needed go through the LM head (`logits_to_keep`), which for a
large vocabulary saves as much as the skipped layers.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Iterator

import torch
from torch import nn

from detoxedit.models.adapter import get_adapter


class _StopForward(Exception):
    """Raised by the capture hook: nothing above the captured layer needs computing."""


class _CachedLayer(nn.Module):
    """Stands in for a decoder layer; returns the cached output of layer L-1 whatever it is given."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


def _detach(value: Any) -> Any:
    """Detaches a layer output: a tensor, or (older transformers) a tuple whose first entry is one."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detach(v) for v in value)
    return value


def capture_layer_output(model: nn.Module, layer: int, inputs: dict[str, torch.Tensor]) -> Any:
    """The output of decoder layer `layer` for `inputs`, exactly as the layer returned it (detached)."""
    captured: dict[str, Any] = {}

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        captured["output"] = _detach(output)
        raise _StopForward

    handle = get_adapter(model).layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "output" not in captured:
        raise RuntimeError(f"{type(model).__name__}: layer {layer} was never called during the forward pass")
    return captured["output"]


@contextlib.contextmanager
def layers_replaced(layers: nn.ModuleList, count: int, output: Any) -> Iterator[None]:
    """Within the block, layers 0..count-1 are a stub returning `output`; the real ones come back after."""
    originals = [layers[i] for i in range(count)]
    stub = _CachedLayer(output)
    try:
        for i in range(count):
            layers[i] = stub
        yield
    finally:
        for i, module in enumerate(originals):
            layers[i] = module


def accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class SuffixForward:
    """Forward passes of one fixed input that only recompute layers >= `layer`.

    Args:
        model: the causal LM (left unchanged: stubs are swapped in only during a call).
        layer: the lowest layer whose weights may change between calls.
        inputs: model inputs (input_ids, attention_mask, ...), fixed for all calls.
        enabled: False runs the full model every call (the reference path for tests).
    """

    def __init__(self, model: nn.Module, layer: int, inputs: dict[str, torch.Tensor], *, enabled: bool = True) -> None:
        self.model = model
        self.layer = layer
        self.inputs = inputs
        self.layers = get_adapter(model).layers
        self.cached = capture_layer_output(model, layer - 1, inputs) if enabled and layer > 0 else None
        self._keep_supported = accepts_logits_to_keep(model)

    def logits(self, keep_last: int, call: Any = None) -> torch.Tensor:
        """Logits of the last `keep_last` positions, (batch, keep_last, vocab).

        Args:
            call: optional replacement for `model.__call__` (e.g. a `functional_call` wrapper
                that substitutes an edited weight); it is given the model's keyword inputs.
        """
        run = call or self.model
        extra = {"logits_to_keep": keep_last} if self._keep_supported else {}
        context = (layers_replaced(self.layers, self.layer, self.cached) if self.cached is not None
                   else contextlib.nullcontext())
        with context:
            out = run(**self.inputs, use_cache=False, **extra)
        return out.logits[:, -keep_last:]
