"""SFT: supervised fine-tuning on the safe replies of a SafeEdit training split (the paper's general setting).

Each training item becomes one prompt-completion example, the adversarial input as the user turn
and the safe reply as the assistant turn; TRL's `SFTTrainer` applies the model's chat template
and computes the loss on the completion only (the reply and its end-of-turn token). A tokenizer
without a chat template gets `ChatFormat`'s plain rendering ("User: ...\\nAssistant:") as a
plain-text prompt, and TRL appends the EOS token to the reply.

The paper gives no hyperparameters ("the defaults of the original papers"); the defaults below are
a LoRA recipe for a small chat model (see the smollm2-135m preset for the values used there and
what they rest on). `_trl.py` holds the training, the deltas and the resume logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from detoxedit.methods._trl import TrainConfig, TRLMethod, field_text, prompt_of, quiet, reply_of, training_arguments
from detoxedit.methods.base import METHODS
from detoxedit.models.chat import ChatFormat


@dataclass
class SFTMethodConfig(TrainConfig):
    """SFT hyperparameters: the shared TRL training fields (`TrainConfig`) and nothing more."""


@METHODS.register("sft")
class SFT(TRLMethod):
    """Fine-tunes (LoRA by default) on adversarial input -> safe reply with TRL's SFTTrainer."""

    name = "sft"
    config_class = SFTMethodConfig
    trainer_name = "SFTTrainer"

    def rows(self, fmt: ChatFormat, items: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"prompt": prompt_of(fmt, field_text(item, "adversarial_prompt", "adversarial prompt")),
                 "completion": reply_of(fmt, field_text(item, "safe_generation", "safe generation"))}
                for item in items]

    def make_trainer(self, model: nn.Module, tokenizer: Any, dataset: Any, folder: Path, resumable: bool,
                     peft_config: Any) -> Any:
        from trl import SFTConfig, SFTTrainer

        args = training_arguments(SFTConfig, self.config, folder, resumable, model, completion_only_loss=True)
        return quiet(SFTTrainer)(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=peft_config)
