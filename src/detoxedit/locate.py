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
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from detoxedit.errors import DetoxeditError
from detoxedit.models.adapter import get_adapter
from detoxedit.models.chat import ChatFormat
from detoxedit.models.generation import truncate_left

logger = logging.getLogger(__name__)

LOCATE_VARIANTS = ("mean", "normalized", "easyedit")


@dataclass(frozen=True)
class Localisation:
    """The located layer and the per-layer distance profile it was chosen from."""

    layer: int
    distances: list[float]
    variant: str


def locate_toxic_layer(
    model: nn.Module,
    tokenizer: Any,
    item: Any,
    *,
    variant: str = "mean",
    chat: ChatFormat | str = "auto",
    max_input_tokens: int | None = None,
) -> Localisation:
    """Finds the layer whose hidden states separate `item`'s safe and unsafe replies the most.

    Args:
        item: a SafeEditItem (uses adversarial_prompt, safe_generation, unsafe_generation).
        variant: "mean", "normalized" or "easyedit" (see the module docstring).
        chat: chat format (or mode name) for rendering the adversarial prompt; unused by "easyedit".
        max_input_tokens: longer prompts keep their last tokens.
    """
    if variant not in LOCATE_VARIANTS:
        raise DetoxeditError(f"unknown localisation variant {variant!r}; choose one of {', '.join(LOCATE_VARIANTS)}")
    num_layers = get_adapter(model).num_layers
    if variant == "easyedit":
        distances = _easyedit_distances(model, tokenizer, item)
    else:
        fmt = chat if isinstance(chat, ChatFormat) else ChatFormat(tokenizer, chat)
        distances = _pooled_distances(model, fmt, item, normalize=variant == "normalized", max_input_tokens=max_input_tokens)
    if len(distances) != num_layers:
        raise DetoxeditError(f"{type(model).__name__}: got {len(distances)} hidden-state layers, expected {num_layers}")
    layer = int(torch.tensor(distances).argmax())
    logger.debug("item %s: toxic layer %d (%s)", getattr(item, "id", "?"), layer, variant)
    return Localisation(layer=layer, distances=distances, variant=variant)


def _layer_states(
    model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, *, pre_norm_last: bool
) -> tuple[torch.Tensor, ...]:
    """Decoder-layer outputs `hidden_states[1:]`, each (batch, seq, hidden), without grad.

    Hugging Face applies the final norm to the last entry. With `pre_norm_last`, the last layer's
    own output is read instead (a forward hook, removed before returning), so every layer is
    scored on the same footing; the norm otherwise rescales only the last layer's distance.
    """
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    hook = None
    if pre_norm_last:
        keep = lambda module, args, out: captured.append(out[0] if isinstance(out, tuple) else out)  # noqa: E731
        hook = get_adapter(model).layers[-1].register_forward_hook(keep)
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, use_cache=False)
    finally:
        if hook is not None:
            hook.remove()
    states = list(out.hidden_states[1:])
    if pre_norm_last:
        states[-1] = captured[-1]
    return tuple(h.float() for h in states)


def _pooled_distances(
    model: nn.Module, fmt: ChatFormat, item: Any, *, normalize: bool, max_input_tokens: int | None
) -> list[float]:
    """Mean-pooled reply-position distance per layer (optionally divided by the layer's mean norm)."""
    prompt = truncate_left(fmt.encode(item.adversarial_prompt), max_input_tokens)
    replies = [fmt.encode_reply(item.safe_generation), fmt.encode_reply(item.unsafe_generation)]
    if not all(replies):
        raise DetoxeditError(f"item {item.id}: safe or unsafe generation is empty; cannot locate the toxic layer")
    rows = [prompt + reply for reply in replies]
    input_ids, mask = _right_pad(rows, fmt.tokenizer.pad_token_id or 0)  # (2, width)
    spans = [slice(len(prompt), len(row)) for row in rows]
    distances = []
    for states in _layer_states(model, input_ids, mask, pre_norm_last=normalize):
        safe, unsafe = states[0, spans[0]], states[1, spans[1]]  # (reply_len, hidden) each
        distance = (safe.mean(0) - unsafe.mean(0)).norm()
        if normalize:
            scale = (safe.norm(dim=-1).mean() + unsafe.norm(dim=-1).mean()) / 2
            distance = distance / scale.clamp_min(1e-12)
        distances.append(float(distance))
    return distances


def _easyedit_distances(model: nn.Module, tokenizer: Any, item: Any) -> list[float]:
    """The reference's profile: replies alone, padded as a pair, distance over the whole sequence."""
    batch = tokenizer([item.safe_generation, item.unsafe_generation], return_tensors="pt", padding=True, truncation=True)
    states = _layer_states(model, batch["input_ids"], batch["attention_mask"], pre_norm_last=False)
    return [float(torch.dist(h[0], h[1], p=2)) for h in states]


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    return input_ids, mask  # (rows, width) each
