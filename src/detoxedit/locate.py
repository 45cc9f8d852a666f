"""Toxic-layer localisation (DINM step 1): the layer where safe and unsafe replies differ most.

DINM edits one layer per item: the one whose hidden states separate the item's safe reply from
its unsafe reply the most. This module finds it with one batched forward pass and nothing else:
it reads the model, never changes it, and never writes the result into a config (the reference
code does, which is how every later item came to reuse the first item's layer).

Variants:
    mean        each reply follows the item's adversarial prompt (rendered with the chat
                format); per layer, the L2 distance between the two replies' mean-pooled
                hidden states at the reply positions.
    normalized  `mean` divided by the mean hidden-state norm at that layer. Residual-stream
                norms grow with depth, so raw distances favour late layers; this compares
                layers on a common scale.
    easyedit    what the reference does: the two replies alone (no prompt), tokenized as a
                padded pair with the tokenizer's own settings; per layer, the L2 (Frobenius)
                distance between the whole padded hidden-state matrices, pad positions
                included. The reference scans `hidden_states[1:]` and subtracts one from the
                winning index, so layer i is scored by `hidden_states[i + 1]`, i.e. layer i's
                output; we reproduce exactly that.

Layer i is scored by its output, `hidden_states[i + 1]` (layers numbered 0..num_layers-1 as in
the adapter). Hugging Face applies the final norm to the last entry of `hidden_states`. `mean`
and `easyedit` use that entry as it is, as the reference does (on SmolLM2-135M the post-norm
distance is small, so the last layer is effectively never chosen; with its pre-norm output it
would always be, since its norm is the largest). `normalized` reads the last layer's own output
before the final norm: a norm layer would make its scale-free distance incomparable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.models.adapter import get_adapter
from detoxedit.models.chat import ChatFormat
from detoxedit.models.generation import truncate_left
from detoxedit.models.hooks import trace_all
from detoxedit.models.suffix import accepts_logits_to_keep

logger = logging.getLogger(__name__)

LOCATE_VARIANTS = ("mean", "normalized", "easyedit")


@dataclass(frozen=True)
class SafeRowStates:
    """What the localisation pass computed for `prompt + safe reply`, kept for the edit that follows.

    DINM's edit trains on exactly that sequence, and the layers below the edited one never change,
    so their outputs here are the edit's cached prefix: reusing them saves one forward pass per item.
    They come from a forward over this row alone, as `capture_layer_output` would run it, so the
    edit is bit-identical with or without the reuse.
    """

    input_ids: list[int]
    layer_outputs: tuple[Any, ...]  # each decoder layer's output as the layer returned it (detached)

    def prefix_for(self, input_ids: torch.Tensor, layer: int) -> Any | None:
        """Layer `layer - 1`'s output when `input_ids` (1, seq) is this row, else None."""
        if layer < 1 or input_ids.shape[0] != 1 or input_ids[0].tolist() != self.input_ids:
            return None
        return self.layer_outputs[layer - 1]


@dataclass(frozen=True)
class Localisation:
    """The located layer and the per-layer distance profile it was chosen from."""

    layer: int
    distances: list[float]
    variant: str
    safe_row: SafeRowStates | None = field(default=None, repr=False, compare=False)


def locate_toxic_layer(
    model: nn.Module,
    tokenizer: Any,
    item: Any,
    *,
    variant: str = "mean",
    chat: ChatFormat | str = "auto",
    max_input_tokens: int | None = None,
    keep_safe_row: bool = False,
) -> Localisation:
    """Finds the layer whose hidden states separate `item`'s safe and unsafe replies the most.

    Args:
        item: a SafeEditItem (uses adversarial_prompt, safe_generation, unsafe_generation).
        variant: "mean", "normalized" or "easyedit" (see the module docstring).
        chat: chat format (or mode name) for rendering the adversarial prompt; unused by "easyedit".
        max_input_tokens: longer prompts keep their last tokens.
        keep_safe_row: also return the safe row's per-layer outputs (`Localisation.safe_row`), for
            an edit on the same sequence to reuse; "mean" and "normalized" only.
    """
    if variant not in LOCATE_VARIANTS:
        raise DetoxeditError(f"unknown localisation variant {variant!r}; choose one of {', '.join(LOCATE_VARIANTS)}")
    num_layers = get_adapter(model).num_layers
    safe_row = None
    if variant == "easyedit":
        distances = _easyedit_distances(model, tokenizer, item)
    else:
        fmt = chat if isinstance(chat, ChatFormat) else ChatFormat(tokenizer, chat)
        distances, safe_row = _pooled_distances(model, fmt, item, normalize=variant == "normalized",
                                                max_input_tokens=max_input_tokens, keep_safe_row=keep_safe_row)
    if len(distances) != num_layers:
        raise DetoxeditError(f"{type(model).__name__}: got {len(distances)} hidden-state layers, expected {num_layers}")
    layer = int(torch.tensor(distances).argmax())
    logger.debug("item %s: toxic layer %d (%s)", getattr(item, "id", "?"), layer, variant)
    return Localisation(layer=layer, distances=distances, variant=variant, safe_row=safe_row)


def _layer_states(
    model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, *, pre_norm_last: bool
) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
    """Per-layer states for scoring, each (batch, seq, hidden) float, and the layers' raw outputs.

    Hugging Face applies the final norm to the last entry of `hidden_states`. With `pre_norm_last`,
    the last layer's own output is read instead, so every layer is scored on the same footing; the
    norm otherwise rescales only the last layer's distance. The raw outputs (as each layer returned
    them, detached) are what a cached-prefix edit can reuse. Hooks are removed before returning.
    """
    device = next(model.parameters()).device
    # Only hidden states are scored: the LM head over every position would cost as much as ~8 layers.
    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    with trace_all(list(get_adapter(model).layers)) as seen, torch.no_grad():
        out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                    use_cache=False, **extra)
    raw = [record.output for record in seen]
    states = list(out.hidden_states[1:])
    if pre_norm_last:
        states[-1] = raw[-1][0] if isinstance(raw[-1], tuple) else raw[-1]
    return tuple(h.float() for h in states), tuple(raw)


def _pooled_distances(
    model: nn.Module, fmt: ChatFormat, item: Any, *, normalize: bool, max_input_tokens: int | None,
    keep_safe_row: bool = False,
) -> tuple[list[float], SafeRowStates | None]:
    """Mean-pooled reply-position distance per layer (optionally divided by the layer's mean norm).

    The two rows run as two forwards, not one padded pair: the cost is the same (no pad positions),
    and the safe row's pass is then exactly the one DINM's edit needs (see `SafeRowStates`).
    """
    prompt = truncate_left(fmt.encode(item.adversarial_prompt), max_input_tokens)
    replies = [fmt.encode_reply(item.safe_generation), fmt.encode_reply(item.unsafe_generation)]
    if not all(replies):
        raise DetoxeditError(f"item {item.id}: safe or unsafe generation is empty; cannot locate the toxic layer")
    pooled, raw_safe = [], None
    for index, reply in enumerate(replies):
        row = torch.tensor([prompt + reply], dtype=torch.long)  # (1, seq)
        states, raw = _layer_states(model, row, torch.ones_like(row), pre_norm_last=normalize)
        pooled.append([(h[0, len(prompt):].mean(0), h[0, len(prompt):].norm(dim=-1).mean()) for h in states])
        if index == 0 and keep_safe_row:
            raw_safe = SafeRowStates(prompt + reply, raw)
        del raw
    distances = []
    for (safe_mean, safe_norm), (unsafe_mean, unsafe_norm) in zip(*pooled):
        distance = (safe_mean - unsafe_mean).norm()
        if normalize:
            distance = distance / ((safe_norm + unsafe_norm) / 2).clamp_min(1e-12)
        distances.append(float(distance))
    return distances, raw_safe


def _easyedit_distances(model: nn.Module, tokenizer: Any, item: Any) -> list[float]:
    """The reference's profile: replies alone, padded as a pair, distance over the whole sequence."""
    batch = tokenizer([item.safe_generation, item.unsafe_generation], return_tensors="pt", padding=True, truncation=True)
    states, _ = _layer_states(model, batch["input_ids"], batch["attention_mask"], pre_norm_last=False)
    return [float(torch.dist(h[0], h[1], p=2)) for h in states]
