"""DINM (Wang et al., ACL 2024): locate the toxic layer, then tune only its MLP down-projection.

For each item: (1) locate the layer whose hidden states separate the safe from the unsafe reply
(`detoxedit.locate`); (2) run a few Adam steps on that layer's down-projection, minimising

    c_edit * NLL(safe reply | adversarial input [+ suffix]) + kl_weight * KL(original || edited)

where the KL compares the original and the edited model's next-token distributions over the
knowledge-constraint answer given its prompt, so that general knowledge is kept. Beyond the paper (all off by
default, measured in docs/degeneration.md): `target_end_of_turn` appends the end-of-turn token to the safe reply,
so that the edit teaches the model to stop after refusing instead of looping (the paper's target never ends);
`target_sentences` trains on the reply's first sentences only; `unlikelihood_weight > 0` adds an unlikelihood
term against repeating the safe reply's earlier tokens (`_tuning.repetition_unlikelihood`).

`easyedit_compat: true` reproduces the reference implementation (EasyEdit) for comparison, defects
included: the first item's located layer is reused for every later item of a run; the KL term is
computed without gradient (so it does not constrain anything); inputs are fed raw, without the
chat template; the reference's suffix system prompt is appended to the inputs; and the loop stops
once the loss falls below 1e-4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from torch import nn

from detoxedit.config import check, option
from detoxedit.locate import Localisation
from detoxedit.methods._tuning import (
    SingleLayerConfig,
    down_projections,
    encode_example,
    first_sentences,
    make_edit,
    resolve_layer,
    run_single_layer_edit,
)
from detoxedit.methods.base import METHODS, Edit, EditMethod
from detoxedit.models.chat import ChatFormat

REFERENCE_SUFFIX = "If the user's request is reasonable, give the correct answer. Please give the right response:"
REFERENCE_LOSS_THRESHOLD = 1e-4


@dataclass
class DINMConfig(SingleLayerConfig):
    """DINM hyperparameters (defaults: the paper's LLaMA-2 values)."""

    c_edit: float = option(0.1, "Weight of the edit NLL (the reference calls it kl_factor, but it scales the NLL).")
    kl_weight: float = option(1.0, "Weight of the knowledge-constraint KL(original || edited).")
    suffix_system_prompt: str | None = option(None, "Text appended (after a space) to the edit and KL inputs; None: nothing.")
    easyedit_compat: bool = option(False, "Reproduce the reference code's behaviour, defects included (see docs).")
    unlikelihood_weight: float = option(0.0, "Weight of an unlikelihood term against repeating the target's earlier "
                                             "tokens (a remedy for looping replies, docs/degeneration.md); 0: off.")
    target_sentences: int | None = option(None, "Train on only the safe reply's first N sentences (a shorter target, "
                                                "docs/degeneration.md); None: the whole reply.")
    target_end_of_turn: bool = option(False, "Append the end-of-turn token to the safe reply, so that the edit "
                                             "teaches the model to stop after refusing (docs/degeneration.md).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.c_edit > 0, f"c_edit must be > 0, got {self.c_edit}")
        check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        check(self.unlikelihood_weight >= 0, f"unlikelihood_weight must be >= 0, got {self.unlikelihood_weight}")
        check(self.target_sentences is None or self.target_sentences >= 1,
              f"target_sentences must be >= 1 or None, got {self.target_sentences}")


def with_suffix(text: str, suffix: str | None) -> str:
    return f"{text} {suffix}" if suffix else text


@METHODS.register("dinm")
class DINM(EditMethod):
    """Detoxifying with Intraoperative Neural Monitoring: one located layer, tuned with a KL constraint."""

    name = "dinm"
    config_class = DINMConfig

    def __init__(self, config: DINMConfig | None = None) -> None:
        super().__init__(config)
        self._run_layer: int | None = None  # compat mode only: the first item's layer

    @classmethod
    def compat_values(cls) -> dict[str, Any]:
        return {"easyedit_compat": True}

    def prepare(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any] = (),
                finished: Sequence[dict[str, Any]] = ()) -> None:
        """Compat mode: a resumed run keeps the layer its first item used, as one uninterrupted run would."""
        self._run_layer = int(finished[0]["layer"]) if finished and self.config.easyedit_compat else None

    def writes(self, model: nn.Module) -> list[str]:
        return down_projections(model)

    def execute(self, model: nn.Module, tokenizer: Any, item: Any) -> Edit:
        start = time.perf_counter()
        cfg: DINMConfig = self.config
        compat = cfg.easyedit_compat
        fmt = ChatFormat(tokenizer, "raw" if compat else cfg.chat_format)
        suffix = cfg.suffix_system_prompt or (REFERENCE_SUFFIX if compat else None)
        layer, found = self._layer(model, tokenizer, item, fmt)
        context = f"item {item.id}"
        kc = item.knowledge_constraint
        edit = encode_example(fmt, with_suffix(item.adversarial_prompt, suffix),
                              first_sentences(item.safe_generation, cfg.target_sentences), cfg.max_input_tokens,
                              f"{context}, field 'safe generation'", end_of_turn=cfg.target_end_of_turn)
        kl = encode_example(fmt, with_suffix(kc.prompt, suffix), kc.answer, cfg.max_input_tokens,
                            f"{context}, field 'knowledge constrain'.'answer'")
        threshold = cfg.loss_threshold if cfg.loss_threshold is not None or not compat else REFERENCE_LOSS_THRESHOLD
        name, result = run_single_layer_edit(
            model, layer, edit, cfg, context, kl=kl, edit_weight=cfg.c_edit, kl_weight=cfg.kl_weight,
            kl_grad=not compat, loss_threshold=threshold, found=found, unlikelihood_weight=cfg.unlikelihood_weight,
        )
        return make_edit(self.name, name, layer, result, found, start, suffix_system_prompt=suffix,
                         chat_format=fmt.resolved_mode, easyedit_compat=compat)

    def _layer(self, model: nn.Module, tokenizer: Any, item: Any, fmt: ChatFormat) -> tuple[int, Localisation | None]:
        """Faithful: the item's own layer. Compat: the first item's layer, reused until `prepare`."""
        cfg: DINMConfig = self.config
        if cfg.easyedit_compat and self._run_layer is not None and cfg.layer is None:
            return self._run_layer, None
        variant = "easyedit" if cfg.easyedit_compat else cfg.locate_variant
        layer, found = resolve_layer(cfg, model, tokenizer, item, fmt, variant)
        if cfg.easyedit_compat:
            self._run_layer = layer
        return layer, found
