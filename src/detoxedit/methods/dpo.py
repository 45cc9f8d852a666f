"""DPO (Rafailov et al. 2023) on a SafeEdit training split: the safe reply preferred over the unsafe one.

Each training item becomes one preference pair: the adversarial input as the user turn, the safe
reply as the chosen and the unsafe reply as the rejected assistant turn, trained with TRL's
`DPOTrainer` (sigmoid loss, `beta` scaling the implicit reward). A tokenizer without a chat
template gets `ChatFormat`'s plain rendering, as for SFT.

The reference model costs no second copy of the weights: with LoRA, TRL takes the policy with its
adapter disabled (the original model); with full fine-tuning, the reference log-probs are computed
once before training (`precompute_ref_log_probs`), while the copy still holds the original weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from detoxedit.config import check, option
from detoxedit.methods._trl import TrainConfig, TRLMethod, field_text, prompt_of, quiet, reply_of, training_arguments
from detoxedit.methods.base import METHODS
from detoxedit.models.chat import ChatFormat


@dataclass
class DPOMethodConfig(TrainConfig):
    """DPO hyperparameters: the shared TRL training fields plus the DPO temperature."""

    lr: float = option(5e-5, "Peak learning rate (AdamW; linear decay to 0).")
    beta: float = option(0.1, "DPO beta: scales the implicit reward; larger stays closer to the reference (the DPO paper's 0.1).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"beta must be > 0, got {self.beta}")


@METHODS.register("dpo")
class DPO(TRLMethod):
    """Prefers the safe over the unsafe reply with TRL's DPOTrainer (LoRA by default)."""

    name = "dpo"
    config_class = DPOMethodConfig
    trainer_name = "DPOTrainer"

    def rows(self, fmt: ChatFormat, items: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"prompt": prompt_of(fmt, field_text(item, "adversarial_prompt", "adversarial prompt")),
                 "chosen": reply_of(fmt, field_text(item, "safe_generation", "safe generation")),
                 "rejected": reply_of(fmt, field_text(item, "unsafe_generation", "unsafe generation"))}
                for item in items]

    def reference(self) -> str:
        if self.config.lora:
            return "the model with the LoRA adapter disabled"
        return "log-probs precomputed from the original weights before training"

    def make_trainer(self, model: nn.Module, tokenizer: Any, dataset: Any, folder: Path, resumable: bool,
                     peft_config: Any) -> Any:
        from trl import DPOConfig, DPOTrainer

        cfg: DPOMethodConfig = self.config
        args = training_arguments(DPOConfig, cfg, folder, resumable, model, beta=cfg.beta,
                                  precompute_ref_log_probs=not cfg.lora)
        return quiet(DPOTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=peft_config)
