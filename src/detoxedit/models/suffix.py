"""Cached-prefix forward: run only the layers at and above an edited layer.

When only layer L's weights change between optimisation steps, layers 0..L-1 compute the same
thing every step for a fixed input. `SuffixForward` computes their output once (no grad) and then,
for every step, runs the model's own forward with layers 0..L-1 temporarily replaced by a stub that
returns that cached output. The model itself still builds the masks, position ids and rotary
embeddings, so this works for any architecture whose decoder loop calls its layers in order, with
no per-family code. The real layers are always put back, even when the forward raises.

The edited layer L itself is cached too when only one of its projections changes (DINM and FT-L
tune the MLP down-projection): its attention and the other MLP matrices see the same input at
every step, so its output is computed once and each step adds only `x @ (W' - W)`
(`_EditedLayer`; checked to be valid for the model first, see `SuffixForward`).

Only the positions whose logits are needed go through the LM head (`logits_to_keep`), which for a
large vocabulary saves as much as the skipped layers.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any, Iterator

import torch
from torch import nn
from torch.func import functional_call
from transformers import modeling_utils
from transformers.pytorch_utils import Conv1D

from detoxedit.models.adapter import LinearView, get_adapter
from detoxedit.models.hooks import hooked, run_until, trace

logger = logging.getLogger(__name__)


class _CachedLayer(nn.Module):
    """Stands in for a decoder layer; returns the cached output of layer L-1 whatever it is given."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


def capture_layer_output(model: nn.Module, layer: int, inputs: dict[str, torch.Tensor]) -> Any:
    """The output of decoder layer `layer` for `inputs`, exactly as the layer returned it (detached)."""
    return run_until(model, get_adapter(model).layers[layer], inputs)


@contextlib.contextmanager
def layers_replaced(layers: nn.ModuleList, count: int, output: Any, *, edited: nn.Module | None = None) -> Iterator[None]:
    """Within the block, layers 0..count-1 are a stub returning `output` (and layer `count` is
    `edited` when given); the real ones come back after, even on error."""
    originals = [layers[i] for i in range(count + (edited is not None))]
    stub = _CachedLayer(output)
    try:
        for i in range(count):
            layers[i] = stub
        if edited is not None:
            layers[count] = edited
        yield
    finally:
        for i, module in enumerate(originals):
            layers[i] = module


# transformers versions with `slice_logits_to_keep` also take a tensor of positions for `logits_to_keep`.
_KEEP_ACCEPTS_POSITIONS = hasattr(modeling_utils, "slice_logits_to_keep")


def accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class _EditedLayer(nn.Module):
    """Stands in for the edited layer: its cached output plus the change the new weight makes.

    Valid when the layer's output is its down-projection's output plus terms that do not depend on
    that projection's weight (a residual connection: Llama, Mistral, Qwen2, GPT-2, ...), which
    `SuffixForward` checks numerically before using it. Then for a new weight W' = W + D,
    output(W') = output(W) + x @ D_io, with x the projection's (cached) input.
    """

    def __init__(self, output: Any, projection_input: torch.Tensor, view: LinearView) -> None:
        super().__init__()
        self.output, self.projection_input, self.view = output, projection_input, view
        self.original = view.weight.detach()
        self.weight: torch.Tensor | None = None  # set per call by `SuffixForward.logits`

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.weight is None:
            return self.output
        change = self.projection_input @ self.view.to_in_out(self.weight - self.original)  # (batch, seq, out)
        return _with_first(self.output, _first(self.output) + change)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_first(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class SuffixForward:
    """Forward passes of one fixed input that only recompute what a changed weight affects.

    With `param_name` (a Linear/Conv1D weight inside decoder layer `layer`, e.g. its MLP
    down-projection), the edited layer itself is cached too: its output and the projection's input
    are computed once, and each call adds only `x @ (W' - W)`; the attention and the other MLP
    matrices of that layer never run again. This needs the layer to be additive in the
    projection's output, which is checked once with a small random change; layers that are not
    (e.g. a norm after the MLP, as in Gemma 2) run whole at every call. When the logits of only some
    positions are asked for, the last decoder layer's MLP runs at those positions only (see
    `_last_mlp_only_at`). Equal to the full forward up to float rounding (the change is added to the
    cached output rather than summed afresh).

    Args:
        model: the causal LM (left unchanged: stubs are swapped in only during a call).
        layer: the lowest layer whose weights may change between calls.
        inputs: model inputs (input_ids, attention_mask, ...), fixed for all calls.
        enabled: False runs the full model every call (the reference path for tests).
        param_name: the weight that `logits(weight=...)` substitutes; None: nothing substituted.
        prefix: layer `layer - 1`'s output for `inputs` if already computed (e.g. by localisation),
            exactly as the layer returned it; it is then not computed again.
    """

    def __init__(
        self, model: nn.Module, layer: int, inputs: dict[str, torch.Tensor], *, enabled: bool = True,
        param_name: str | None = None, prefix: Any = None,
    ) -> None:
        self.model = model
        self.layer = layer
        self.inputs = inputs
        self.param_name = param_name
        adapter = get_adapter(model)
        self.layers = adapter.layers
        # The last layer's MLP, when it lies above the edited layer (see `_last_mlp_only_at`).
        self._last_mlp = adapter.mlp(adapter.num_layers - 1) if layer < adapter.num_layers - 1 else None
        self.cached = None
        if enabled and layer > 0:
            self.cached = prefix if prefix is not None else capture_layer_output(model, layer - 1, inputs)
        self.edited = self._cache_edited_layer() if enabled and param_name is not None else None
        self._keep_supported = accepts_logits_to_keep(model)

    def _cache_edited_layer(self) -> _EditedLayer | None:
        """The edited layer as cached output + change, or None when the layer is not additive."""
        module_name = self.param_name.rpartition(".")[0]
        projection = self.model.get_submodule(module_name)
        layer_module = self.layers[self.layer]
        if not isinstance(projection, (nn.Linear, Conv1D)) or not any(m is projection for m in layer_module.modules()):
            return None
        view = LinearView(projection)
        output, x = self._layer_output(projection)
        weight = view.weight_in_out().detach()
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)).to(weight.device, weight.dtype)
        probe = noise * weight.float().std().clamp_min(1e-6).to(weight.dtype)  # a change as large as the weight
        probed, _ = self._layer_output(projection, add=probe)
        expected = _first(output) + x @ probe
        error = (_first(probed) - expected).norm() / (_first(probed) - _first(output)).norm().clamp_min(1e-30)
        if not torch.isfinite(error) or error > 1e-3:
            logger.debug("layer %d is not additive in %s (relative error %.2g): it runs whole", self.layer, self.param_name, error)
            return None
        return _EditedLayer(output, x, view)

    def _layer_output(self, projection: nn.Module, add: torch.Tensor | None = None) -> tuple[Any, torch.Tensor]:
        """(output of the edited layer, input of `projection`), optionally with x @ `add` added to its output."""
        def plus_change(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            return out + args[0] @ add

        context = (layers_replaced(self.layers, self.layer, self.cached) if self.cached is not None
                   else contextlib.nullcontext())
        change = hooked(projection, forward=plus_change) if add is not None else contextlib.nullcontext()
        with context, trace(projection) as seen, change:
            output = run_until(self.model, self.layers[self.layer], self.inputs)
        return output, seen.input

    def logits(self, keep_last: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the last `keep_last` positions, (batch, keep_last, vocab).

        Args:
            weight: a replacement for `param_name`'s weight (e.g. the copy being trained); None
                runs the model as it is.
        """
        return self._run(keep_last, weight)[:, -keep_last:]

    def predicting_logits(self, count: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the `count` positions that predict the last `count` tokens, (batch, count, vocab).

        Why not `logits(count + 1)[:, :-1]`: the head then runs one position more, on a strided slice
        of the hidden states (a batched matmul, slower than one matrix product here), and the slice's
        backward writes a zero-filled (count + 1) x vocab gradient at every step.
        """
        seq = self.inputs["input_ids"].shape[-1]
        if self._keep_supported and _KEEP_ACCEPTS_POSITIONS:
            positions = torch.arange(seq - count - 1, seq - 1, device=self.inputs["input_ids"].device)
            return self._run(positions, weight)
        return self._run(count + 1, weight)[:, -count - 1:-1]

    def _run(self, keep: int | torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        """The forward with the cached parts stubbed in; logits of `keep` (a count, or positions) or all."""
        extra = {"logits_to_keep": keep} if self._keep_supported else {}
        last_mlp = self._last_mlp_only_at(keep) if self._keep_supported else contextlib.nullcontext()
        if self.edited is not None:
            self.edited.weight = weight
            try:
                with layers_replaced(self.layers, self.layer, self.cached, edited=self.edited), last_mlp:
                    return self.model(**self.inputs, use_cache=False, **extra).logits
            finally:
                self.edited.weight = None
        run = self.model
        if weight is not None:
            run = lambda **kw: functional_call(self.model, {self.param_name: weight}, args=(), kwargs=kw)  # noqa: E731
        context = (layers_replaced(self.layers, self.layer, self.cached) if self.cached is not None
                   else contextlib.nullcontext())
        with context, last_mlp:
            return run(**self.inputs, use_cache=False, **extra).logits

    def _last_mlp_only_at(self, keep: int | torch.Tensor) -> contextlib.AbstractContextManager:
        """Within the block, the last decoder layer's MLP runs only at the positions whose logits are kept.

        Why: the last layer's output at any other position reaches nothing (no layer above reads it,
        and the head skips it), so its MLP there is wasted. With the located layer just below the top
        (layer 28 of 30 on the default model) that MLP over the prompt is a visible part of a step
        (benchmarks/README.md has the A/B timings; the deltas were bit-identical). Keys and values of the last layer still
        come from every position (its attention is untouched). The MLP is position-wise, so the kept
        positions get the same numbers; the others get zeros.
        """
        if self._last_mlp is None:  # the last layer is the edited (cached) one
            return contextlib.nullcontext()
        seq = self.inputs["input_ids"].shape[-1]
        positions = keep if isinstance(keep, torch.Tensor) else torch.arange(max(seq - keep, 0), seq)
        return _positions_only(self._last_mlp, positions.to(self.inputs["input_ids"].device), seq)


@contextlib.contextmanager
def _positions_only(module: nn.Module, positions: torch.Tensor, seq: int) -> Iterator[None]:
    """Within the block, position-wise `module` computes only `positions` of its (batch, seq, d) input;
    its output is zero elsewhere. Calls with other shapes pass through."""

    narrowed: list[bool] = []

    def narrow(mod: nn.Module, args: tuple) -> tuple | None:
        x = args[0] if args else None
        narrowed[:] = [isinstance(x, torch.Tensor) and x.dim() == 3 and x.shape[1] == seq]
        return (x.index_select(1, positions), *args[1:]) if narrowed[0] else None

    def widen(mod: nn.Module, args: tuple, out: Any) -> Any:
        if not narrowed[0]:
            return out
        hidden = _first(out)
        full = hidden.new_zeros((hidden.shape[0], seq, hidden.shape[2])).index_copy(1, positions, hidden)
        return _with_first(out, full)

    with hooked(module, pre=narrow, forward=widen):
        yield
