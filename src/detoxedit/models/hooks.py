"""Hooks as context managers that always clean up (TransformerLens / nethook style).

Every place that reads or changes what a module computes goes through these, so no hook can
outlive its block, even when the forward pass raises:

    with trace(layer) as seen:                 # what `layer` received and returned (detached)
        model(**inputs)
    seen.output, seen.input

    with trace_all(layers) as seen:            # one Trace per module, in order
        model(**inputs)

    output = run_until(model, layer, inputs)   # the forward stops as soon as `layer` has returned

    with hooked(module, forward=fn, pre=fn2):  # plain hooks for the block (fn may change the output)
        model(**inputs)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn


def detach_output(value: Any) -> Any:
    """Detaches a layer output: a tensor, or (older transformers) a tuple whose first entry is one."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(detach_output(v) for v in value)
    return value


@contextlib.contextmanager
def hooked(module: nn.Module, *, forward: Callable | None = None, pre: Callable | None = None) -> Iterator[None]:
    """Within the block, `forward(module, args, output)` and/or `pre(module, args)` hook `module`."""
    with hooked_all([(module, forward, pre)]):
        yield


@contextlib.contextmanager
def hooked_all(hooks: Iterable[tuple[nn.Module, Callable | None, Callable | None]]) -> Iterator[None]:
    """Several (module, forward hook, pre hook) at once; all removed after the block, even on error."""
    handles = []
    try:
        for module, forward, pre in hooks:
            if pre is not None:
                handles.append(module.register_forward_pre_hook(pre))
            if forward is not None:
                handles.append(module.register_forward_hook(forward))
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Trace:
    """What a traced module saw in its last call inside the block: first positional input and output."""

    input: torch.Tensor | None = None
    output: Any = None


@contextlib.contextmanager
def trace_all(modules: Sequence[nn.Module], *, detach: bool = True) -> Iterator[list[Trace]]:
    """One `Trace` per module (in order), filled by the forward passes run inside the block."""
    traces = [Trace() for _ in modules]

    def keeper(record: Trace) -> Callable:
        def keep(module: nn.Module, args: tuple, output: Any) -> None:
            record.input = (args[0].detach() if detach else args[0]) if args else None
            record.output = detach_output(output) if detach else output
        return keep

    with hooked_all((module, keeper(record), None) for module, record in zip(modules, traces)):
        yield traces


@contextlib.contextmanager
def trace(module: nn.Module, *, detach: bool = True) -> Iterator[Trace]:
    """A `Trace` of one module's last call inside the block."""
    with trace_all([module], detach=detach) as (record,):
        yield record


class _StopForward(Exception):
    """Raised by `run_until`'s hook: nothing after the module needs computing."""


def run_until(model: nn.Module, module: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
    """Runs `model(**inputs)` without grad until `module` returns; its output, detached.

    Why stop: a layer's output needs only the layers below it; the rest of the model (and the
    vocabulary projection, which can cost as much as several layers) would be wasted work.
    """

    def stop(mod: nn.Module, args: tuple, output: Any) -> None:
        raise _StopForward

    with trace(module) as seen, hooked(module, forward=stop):
        try:
            with torch.no_grad():
                model(**inputs, use_cache=False)
        except _StopForward:
            pass
    if seen.output is None:
        raise RuntimeError(f"{type(model).__name__}: {type(module).__name__} was never called during the forward pass")
    return seen.output
