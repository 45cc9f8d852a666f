"""Shared optimisation for single-layer tuning methods (DINM, FT-L).

Both methods tune one layer's MLP down-projection with Adam for a few steps on
`edit_weight * NLL(target reply | input) + kl_weight * KL(original || edited)`; FT-L simply has no
KL term. The model's parameter is never modified: the loop trains a detached copy W' of the target
weight and substitutes it for the real one in each forward (`torch.func.functional_call`). The
result is `W' - W`, in the parameter's own layout.

Layers below the edited one never change, so by default their output is computed once per input
(`SuffixForward`; for the edit input it is taken from the localisation pass, which ran the same
sequence), and so is the edited layer's own attention and MLP input: each step runs only the
edited projection, the layers above it and the LM head at the target positions.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from detoxedit.config import check, option
from detoxedit.errors import DetoxeditError
from detoxedit.locate import LOCATE_VARIANTS, Localisation, locate_toxic_layer
from detoxedit.methods.base import Edit
from detoxedit.models.adapter import get_adapter
from detoxedit.models.chat import CHAT_MODES, ChatFormat
from detoxedit.models.generation import truncate_left
from detoxedit.models.suffix import SuffixForward

logger = logging.getLogger(__name__)


@dataclass
class SingleLayerConfig:
    """Fields shared by the single-layer tuning methods."""

    layer: int | None = option(None, "Layer to edit; None locates the toxic layer for each item.")
    locate_variant: str = option("mean", "Localisation variant: mean | normalized | easyedit.")
    steps: int = option(10, "Adam steps.")
    lr: float = option(5e-4, "Adam learning rate.")
    loss_threshold: float | None = option(None, "Stop early once the loss falls below this; None never stops early.")
    norm_constraint: float | None = option(None, "Clamp each entry's change to [-x, x] after every step (L-inf); None: no clamp.")
    chat_format: str = option("auto", "How inputs are rendered: auto | template | plain | raw.")
    max_input_tokens: int | None = option(1000, "Longer inputs keep their last tokens.")
    fast_prefix: bool = option(True, "Compute the layers below the edited one once, not at every step (same result, faster).")
    seed: int = option(0, "Seed for any randomness during the edit.")

    def __post_init__(self) -> None:
        check(self.layer is None or self.layer >= 0, f"layer must be >= 0 or None, got {self.layer}")
        check(self.locate_variant in LOCATE_VARIANTS, f"locate_variant must be one of {LOCATE_VARIANTS}, got {self.locate_variant!r}")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.loss_threshold is None or self.loss_threshold >= 0, f"loss_threshold must be >= 0 or None, got {self.loss_threshold}")
        check(self.norm_constraint is None or self.norm_constraint > 0, f"norm_constraint must be > 0 or None, got {self.norm_constraint}")
        check(self.chat_format in CHAT_MODES, f"chat_format must be one of {CHAT_MODES}, got {self.chat_format!r}")
        check(self.max_input_tokens is None or self.max_input_tokens >= 1, f"max_input_tokens must be >= 1 or None, got {self.max_input_tokens}")


def down_projections(model: nn.Module) -> list[str]:
    """Every layer's MLP down-projection weight: where the single-layer methods may write."""
    adapter = get_adapter(model)
    return [adapter.down_proj_name(layer) for layer in range(adapter.num_layers)]


@dataclass(frozen=True)
class Example:
    """One input sequence whose last `target_len` tokens are scored; (1, seq) ids."""

    input_ids: torch.Tensor
    target_len: int


def encode_example(fmt: ChatFormat, message: str, reply: str, max_input_tokens: int | None, what: str,
                   end_of_turn: bool = False) -> Example:
    """Renders `message` with the chat format and appends the reply's tokens (sliced by ids, not chars);
    `end_of_turn` appends the token the generator stops at, so that the reply is learnt as a whole turn."""
    prompt = truncate_left(fmt.encode(message), max_input_tokens)
    target = fmt.encode_reply(reply)
    if not target:
        raise DetoxeditError(f"{what}: the reply to train on is empty")
    if end_of_turn:
        target = target + fmt.end_of_reply_ids()
    return Example(torch.tensor([prompt + target], dtype=torch.long), len(target))


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentences(text: str, count: int | None) -> str:
    """The first `count` sentences of `text` (split after . ! ? followed by white space); None: all of it.

    A shorter edit target is one of the remedies for looping replies measured in docs/degeneration.md.
    """
    if count is None:
        return text
    return " ".join(_SENTENCE_END.split(text.strip())[:count])


@dataclass
class Objective:
    """The loss for one item: weighted NLL of the edit target, plus an optional KL constraint.

    Args:
        kl_grad: False computes the KL under no_grad (the reference's defect: it then has no effect).
    """

    model: nn.Module
    param_name: str
    layer: int
    edit: Example
    kl: Example | None = None
    edit_weight: float = 1.0
    kl_weight: float = 0.0
    kl_grad: bool = True
    fast_prefix: bool = True
    edit_prefix: Any = None  # layer `layer - 1`'s output for the edit input, if localisation computed it
    unlikelihood_weight: float = 0.0  # weight of `repetition_unlikelihood` on the edit target; 0: off
    _runs: dict[str, SuffixForward] = field(default_factory=dict, init=False, repr=False)
    _kl_probs: torch.Tensor | None = field(default=None, init=False, repr=False)  # the original's probabilities
    _kl_neg_entropy: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        device = next(self.model.parameters()).device
        examples = {"edit": self.edit, **({"kl": self.kl} if self.kl is not None and self.kl_weight else {})}
        for key, example in examples.items():
            ids = example.input_ids.to(device)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            prefix = self.edit_prefix if key == "edit" else None
            self._runs[key] = SuffixForward(self.model, self.layer, inputs, enabled=self.fast_prefix,
                                            param_name=self.param_name, prefix=prefix)
        if "kl" in self._runs:
            with torch.no_grad():
                base = F.log_softmax(self._target_logits("kl", None), dim=-1)  # (1, answer, vocab)
                self._kl_probs = base.exp()
                self._kl_neg_entropy = (self._kl_probs * base).sum(-1)  # (1, answer): sum p log p, fixed

    def _target_logits(self, key: str, weight: torch.Tensor | None) -> torch.Tensor:
        """Logits at the positions that predict the example's target tokens, (1, target, vocab), float32."""
        example = self.edit if key == "edit" else self.kl
        return self._runs[key].predicting_logits(example.target_len, weight).float()  # (1, target, vocab)

    def parts(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss parts for the trained copy `weight`: nll (edit target), kl, and total.

        The KL term is computed at the first step too, although its exact value and gradient are 0
        there: skipping it changed the deltas by up to 6e-3 relative (benchmarks/README.md), since
        Adam's first step divides each gradient element by its own size and so amplifies rounding.
        """
        logits = self._target_logits("edit", weight)
        targets = self.edit.input_ids[:, -self.edit.target_len:].to(logits.device)  # (1, target)
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        parts = {"nll": nll, "loss": self.edit_weight * nll}
        if self.unlikelihood_weight:
            parts["unlikelihood"] = repetition_unlikelihood(logits, targets)
            parts["loss"] = parts["loss"] + self.unlikelihood_weight * parts["unlikelihood"]
        if self._kl_probs is not None:
            with contextlib.nullcontext() if self.kl_grad else torch.no_grad():
                edited = F.log_softmax(self._target_logits("kl", weight), dim=-1)  # (1, answer, vocab)
                kl = (self._kl_neg_entropy - (self._kl_probs * edited).sum(-1)).mean()  # sum p (log p - log q)
            parts["kl"] = kl
            parts["loss"] = parts["loss"] + self.kl_weight * kl
        return parts


def repetition_unlikelihood(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token-level unlikelihood against repetition (Welleck et al. 2020): at each target position, the mean
    over positions of -sum log(1 - p(c)) over the tokens c the target already used before that position
    (except the token that is correct there). It lowers the odds of repeating earlier words while the NLL
    still teaches the reply itself. logits (1, T, vocab), targets (1, T)."""
    probs = logits.float().softmax(dim=-1)[0]  # (T, vocab)
    tokens = targets[0].to(probs.device)  # (T,)
    length = tokens.shape[0]
    earlier = torch.tril(torch.ones(length, length, dtype=torch.bool, device=probs.device), diagonal=-1).nonzero()
    seen = torch.zeros_like(probs, dtype=torch.bool)  # (T, vocab): [t, c] c occurs in tokens[:t]
    seen[earlier[:, 0], tokens[earlier[:, 1]]] = True
    seen[torch.arange(length, device=probs.device), tokens] = False
    penalty = -torch.log1p(-probs.clamp(max=1 - 1e-6)) * seen  # (T, vocab)
    return penalty.sum() / length


@dataclass
class TuningResult:
    """The trained change (parameter layout) and the loop's record; `seconds` covers the steps only."""

    delta: torch.Tensor
    losses: list[float]
    parts: list[dict[str, float]]
    steps_run: int
    seconds: float


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """No parameter records gradients inside the block (the trained copy is separate); flags restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def tune(
    objective: Objective,
    *,
    steps: int,
    lr: float,
    norm_constraint: float | None,
    loss_threshold: float | None,
    context: str,
) -> TuningResult:
    """Adam on a detached copy of the target weight; the model's own parameter is never touched.

    Raises:
        DetoxeditError: a loss is NaN or infinite (naming `context`, i.e. the item, and the step).
    """
    start = time.perf_counter()
    original = dict(objective.model.named_parameters())[objective.param_name].detach()
    weight = original.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=lr, weight_decay=0.0)
    losses: list[float] = []
    parts_log: list[dict[str, float]] = []
    with frozen(objective.model):
        for step in tqdm(range(steps), desc=f"edit {context}", unit="step", leave=False, disable=None):
            parts = objective.parts(weight)
            loss = parts["loss"]
            _check_finite(loss, context, step)
            losses.append(loss.item())
            parts_log.append({k: v.item() for k, v in parts.items()})
            if loss_threshold is not None and losses[-1] < loss_threshold:
                break
            optimizer.zero_grad()
            (weight.grad,) = torch.autograd.grad(loss, [weight])
            optimizer.step()
            if norm_constraint is not None:
                with torch.no_grad():
                    weight.copy_(torch.clamp(weight, original - norm_constraint, original + norm_constraint))
    delta = (weight.detach() - original).clone()
    if not torch.isfinite(delta).all():
        raise DetoxeditError(f"{context}: the edit produced non-finite weights after step {len(losses) - 1}; lower lr")
    return TuningResult(delta, losses, parts_log, len(losses), time.perf_counter() - start)


def _check_finite(loss: torch.Tensor, context: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise DetoxeditError(
            f"{context}: loss is {loss.item()} at step {step}; the edit diverged (lower lr, or set norm_constraint)"
        )


def resolve_layer(
    config: SingleLayerConfig, model: nn.Module, tokenizer: Any, item: Any, fmt: ChatFormat, variant: str
) -> tuple[int, Localisation | None]:
    """The configured layer, else the item's located toxic layer (checked against the model's depth)."""
    num_layers = get_adapter(model).num_layers
    if config.layer is not None:
        if config.layer >= num_layers:
            raise DetoxeditError(f"layer {config.layer} does not exist: {type(model).__name__} has layers 0..{num_layers - 1}")
        return config.layer, None
    found = locate_toxic_layer(model, tokenizer, item, variant=variant, chat=fmt, max_input_tokens=config.max_input_tokens,
                               keep_safe_row=config.fast_prefix and variant != "easyedit")
    return found.layer, found


def run_single_layer_edit(
    model: nn.Module,
    layer: int,
    edit: Example,
    config: SingleLayerConfig,
    context: str,
    *,
    kl: Example | None = None,
    edit_weight: float = 1.0,
    kl_weight: float = 0.0,
    kl_grad: bool = True,
    loss_threshold: float | None = None,
    found: Localisation | None = None,
    unlikelihood_weight: float = 0.0,
) -> tuple[str, TuningResult]:
    """Builds the objective for `layer`'s down-projection and tunes it; returns (param name, result).

    `found`: the item's localisation; when it kept the safe row's layer outputs and `edit` is that
    same sequence, the edit reuses them instead of running the layers below `layer` again.
    """
    param_name = get_adapter(model).down_proj_name(layer)
    prefix = found.safe_row.prefix_for(edit.input_ids, layer) if found is not None and found.safe_row else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        objective = Objective(model, param_name, layer, edit, kl, edit_weight, kl_weight, kl_grad, config.fast_prefix,
                              edit_prefix=prefix, unlikelihood_weight=unlikelihood_weight)
        result = tune(objective, steps=config.steps, lr=config.lr, norm_constraint=config.norm_constraint,
                      loss_threshold=loss_threshold, context=context)
    logger.debug("%s: layer %d, %d steps, loss %.4f -> %.4f", context, layer, result.steps_run, result.losses[0], result.losses[-1])
    return param_name, result


def make_edit(
    method: str, name: str, layer: int, result: TuningResult, found: Localisation | None, start: float, **extra: Any
) -> Edit:
    """The `Edit` record both methods return: the delta, per-step losses, and how they were found."""
    info = {
        "method": method, "steps_run": result.steps_run, "seconds": time.perf_counter() - start,
        "tune_seconds": result.seconds, "loss_parts": result.parts, "located": found is not None,
        "locate_variant": found.variant if found else None, "distances": found.distances if found else None,
        **extra,
    }
    return Edit(deltas={name: result.delta}, layer=layer, losses=result.losses, info=info)
