"""FT-L: constrained fine-tuning of one layer's MLP down-projection (Zhu et al. 2020; Meng et al. 2022).

The baseline DINM is compared against: the same single-layer Adam loop, on NLL(safe reply |
adversarial input) only (no KL term), with every weight change clamped to [-eps, eps] (L-inf).
Defaults follow ROME's constrained FT-L (`FT/gpt2-xl_constr`): lr 5e-4, 25 steps, eps 5e-4. The
layer is the item's located toxic layer, as for DINM, unless `layer` fixes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from torch import nn

from detoxedit.config import option
from detoxedit.methods._tuning import (
    SingleLayerConfig,
    down_projections,
    encode_example,
    make_edit,
    resolve_layer,
    run_single_layer_edit,
)
from detoxedit.methods.base import METHODS, Edit, EditMethod
from detoxedit.models.chat import ChatFormat


@dataclass
class FTLConfig(SingleLayerConfig):
    """FT-L hyperparameters (defaults: ROME's constrained fine-tuning)."""

    steps: int = option(25, "Adam steps.")
    norm_constraint: float | None = option(5e-4, "Clamp each entry's change to [-x, x] after every step (L-inf); None: unconstrained FT.")


@METHODS.register("ft-l", aliases=("ft_l", "ftl"))
class FTL(EditMethod):
    """Fine-tunes the located layer's down-projection on the safe reply, L-inf constrained."""

    name = "ft-l"
    config_class = FTLConfig

    def writes(self, model: nn.Module) -> list[str]:
        return down_projections(model)

    def execute(self, model: nn.Module, tokenizer: Any, item: Any) -> Edit:
        start = time.perf_counter()
        cfg: FTLConfig = self.config
        fmt = ChatFormat(tokenizer, cfg.chat_format)
        layer, found = resolve_layer(cfg, model, tokenizer, item, fmt, cfg.locate_variant)
        context = f"item {item.id}"
        edit = encode_example(fmt, item.adversarial_prompt, item.safe_generation, cfg.max_input_tokens,
                              f"{context}, field 'safe generation'")
        name, result = run_single_layer_edit(model, layer, edit, cfg, context, loss_threshold=cfg.loss_threshold, found=found)
        return make_edit(self.name, name, layer, result, found, start, chat_format=fmt.resolved_mode)
