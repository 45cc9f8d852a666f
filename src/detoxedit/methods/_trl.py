"""Shared plumbing for the methods trained with TRL (SFT, DPO): train a copy, return its change as deltas.

The model the runner passes in is never trained. `fit` deep-copies it (one extra copy of the
weights in memory, ~0.5 GB for a 135M float32 model; full fine-tuning adds AdamW's two moment
buffers per weight, so about 4x the model in all), hands the copy to a TRL trainer and returns
the change as deltas in each parameter's own layout:

    LoRA (default)  for each adapted projection, PEFT's own `get_delta_weight(adapter)`
                    (scaling * B @ A, transposed for Conv1D): the very tensor `merge_and_unload`
                    adds to the weight, so `applied(model, deltas)` is the merged PEFT model, bit
                    for bit in float32 (in bfloat16 the delta is rounded to the weight's dtype
                    before the add, PEFT adds the float32 adapter product directly).
    full            trained - original, for every parameter that changed (W + (W' - W) equals W'
                    up to one rounding of the subtraction).

LoRA targets are read from the model's structure (the architecture adapter's decoder layers),
never from its name. The default, every linear projection of every decoder block (attention and
MLP), follows QLoRA (Dettmers et al. 2023), which found adapting all block linears necessary to
match full fine-tuning. The LM head and embeddings are left alone: TRL computes log-probs from
`lm_head.weight` directly (an adapter there would never train), many chat models tie the two
(SmolLM2 does), and deltas on linear weights are what per-row generation (`RowDeltas`) adds.

Resume: inside a run (`EditMethod.work_dir` set) the trainer checkpoints every `save_steps` steps
into work_dir/checkpoints (the latest only) and a later `fit` resumes from it (weights or adapter,
optimizer, scheduler, RNG and data position; the resumed deltas equal an uninterrupted fit's bit for
bit on CPU, tested). Once training has finished and the deltas are taken,
the checkpoints are deleted: the runner keeps the fitted edit (fitted_edit.pt), and a kill in the
moment between the two only means training again. Outside a run the trainer works in a temporary
folder and saves nothing.

Data: one row per training item in TRL's conversational format (the adversarial input as the user
turn, replies as assistant turns), so TRL applies the model's own chat template, the same prompt
`ChatFormat` renders for generation; a tokenizer without a template gets ChatFormat's plain
rendering as prompt-completion text. Training runs in the model's own dtype and on its device
(no mixed precision; float32 on CPU).

Side effects are contained: the tokenizer is copied too (TRL sets its pad token), the global RNGs
(Python, NumPy, torch) are restored after training (TRL seeds them), and TRL's usage ping to the
Hugging Face Hub is switched off (a run makes no network calls). trl, peft and datasets are
imported only when a method trains (the `train` extra: pip install 'detoxedit[train]').
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import logging
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from detoxedit.config import check, option
from detoxedit.errors import DetoxeditError
from detoxedit.methods.base import GLOBAL, Edit, EditMethod
from detoxedit.models.adapter import LinearView, get_adapter
from detoxedit.models.chat import CHAT_MODES, ChatFormat

logger = logging.getLogger(__name__)

TARGETS = ("blocks", "attention", "mlp")
CHECKPOINTS = "checkpoints"
RSS_MEASURE = ("peak_rss_mb: the process's peak resident set size at the end of the fit (getrusage ru_maxrss); "
               "rss_growth_mb: how far the fit raised it (0 when the fit stayed below an earlier peak)")


@dataclass
class TrainConfig:
    """Fields shared by the TRL-trained methods (flat, as TRL's own configs)."""

    lr: float = option(2e-4, "Peak learning rate (AdamW; linear decay to 0).")
    epochs: float = option(1.0, "Passes over the training items (ignored when max_steps is set).")
    max_steps: int | None = option(None, "Optimiser steps to run; None: as many as `epochs` takes.")
    batch_size: int = option(8, "Training examples per forward pass.")
    gradient_accumulation: int = option(1, "Forward passes per optimiser step (effective batch = batch_size x this).")
    max_length: int = option(1024, "Longest training sequence (prompt + reply) in tokens; longer ones lose their end.")
    lora: bool = option(True, "Train a LoRA adapter (returned merged, as deltas); False: fine-tune every parameter.")
    lora_r: int = option(16, "LoRA rank.")
    lora_alpha: float = option(32.0, "LoRA scale numerator: the update is (lora_alpha / lora_r) * B @ A.")
    lora_dropout: float = option(0.05, "Dropout on the LoRA input during training.")
    target: str = option("blocks", "LoRA targets: blocks (every linear of every decoder block) | attention | mlp.")
    chat_format: str = option("auto", "How prompts are rendered: auto | template | plain | raw (see ChatFormat).")
    gradient_checkpointing: bool = option(False, "Recompute activations in the backward pass (less memory, ~20% slower).")
    seed: int = option(0, "Seed for the adapter's initialisation, data order and dropout.")
    save_steps: int = option(10, "Inside a run: checkpoint every this many steps, to resume after a kill.")

    def __post_init__(self) -> None:
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        check(self.max_steps is None or self.max_steps >= 1, f"max_steps must be >= 1 or None, got {self.max_steps}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.gradient_accumulation >= 1, f"gradient_accumulation must be >= 1, got {self.gradient_accumulation}")
        check(self.max_length >= 2, f"max_length must be >= 2, got {self.max_length}")
        check(self.lora_r >= 1, f"lora_r must be >= 1, got {self.lora_r}")
        check(self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}")
        check(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        check(self.target in TARGETS, f"target must be one of {TARGETS}, got {self.target!r}")
        check(self.chat_format in CHAT_MODES, f"chat_format must be one of {CHAT_MODES}, got {self.chat_format!r}")
        check(self.save_steps >= 1, f"save_steps must be >= 1, got {self.save_steps}")


# ------------------------------------------------------------------ what is trained


def target_modules(model: nn.Module, target: str) -> list[str]:
    """Full names of the linear projections (nn.Linear / Conv1D) LoRA adapts, from the adapter's layers."""
    adapter = get_adapter(model)
    inside = {"blocks": "", "attention": adapter.spec.attention, "mlp": adapter.spec.mlp}[target]
    names = []
    for index, layer in enumerate(adapter.layers):
        for path, module in layer.named_modules():
            if isinstance(module, (nn.Linear, Conv1D)) and (not inside or path.startswith(inside + ".")):
                names.append(f"{adapter.spec.layers}.{index}.{path}")
    if not names:
        raise DetoxeditError(f"{type(model).__name__}: no linear projection found for LoRA target {target!r}")
    return names


def trained_parameters(model: nn.Module, config: TrainConfig) -> list[str]:
    """What a fit may change: the targeted projections' weights (LoRA), or every parameter (full)."""
    if config.lora:
        return [f"{name}.weight" for name in target_modules(model, config.target)]
    return [name for name, _ in model.named_parameters()]


def lora_config(model: nn.Module, config: TrainConfig) -> Any:
    from peft import LoraConfig

    modules = target_modules(model, config.target)
    conv1d = LinearView(model.get_submodule(modules[0])).transposed  # GPT-2 stores (in, out)
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=modules, fan_in_fan_out=conv1d, bias="none", task_type="CAUSAL_LM")


# ------------------------------------------------------------------ the data


def prompt_of(fmt: ChatFormat, message: str) -> Any:
    """A user turn: messages for a chat template (TRL applies it), else the rendered prompt text."""
    if fmt.resolved_mode == "template":
        return [{"role": "user", "content": message}]
    return fmt.render(message)


def reply_of(fmt: ChatFormat, reply: str) -> Any:
    """An assistant turn, matching `prompt_of`, without surrounding whitespace (plain text: one leading space).

    Most of SafeEdit's unsafe generations start with "\n\n". After a template's "assistant\n" that
    merges into different tokens ("\n\n" + "\n" instead of "\n" + "\n\n"), so the tokenized prompt
    would no longer be a prefix of prompt + reply and TRL would cut the prompt's last token off.
    """
    mode = fmt.resolved_mode
    if mode == "template":
        return [{"role": "assistant", "content": reply.strip()}]
    return f" {reply.strip()}" if mode == "plain" else reply


def field_text(item: Any, attribute: str, field_name: str) -> str:
    """The item's text for one field; an empty one cannot be trained on, so it is an error naming the item."""
    text = getattr(item, attribute)
    if not text or not text.strip():
        raise DetoxeditError(f"training item {item.id}: field {field_name!r} is empty; a training example needs it")
    return text


# ------------------------------------------------------------------ deltas


@torch.no_grad()
def lora_deltas(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    """Each adapted weight's change, exactly as PEFT's merge adds it (names as in the original model)."""
    from peft.tuners.lora import LoraLayer

    adapter = peft_model.active_adapter
    deltas = {}
    for name, module in peft_model.get_base_model().named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            weight = module.get_base_layer().weight
            delta = module.get_delta_weight(adapter).to(weight.dtype)  # what merge() adds to the weight
            if delta.any():
                deltas[f"{name}.weight"] = delta.detach().cpu().clone()
    return deltas


@torch.no_grad()
def full_deltas(original: nn.Module, trained: nn.Module) -> dict[str, torch.Tensor]:
    """trained - original for every parameter that changed."""
    trained_params = dict(trained.named_parameters())
    deltas = {}
    for name, param in original.named_parameters():
        delta = trained_params[name].detach().to(param.device, param.dtype) - param.detach()
        if delta.any():
            deltas[name] = delta.cpu()
    return deltas


# ------------------------------------------------------------------ containment


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """TRL seeds Python's, NumPy's and torch's global RNGs; the caller's states come back afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@contextlib.contextmanager
def checkpoint_folder(work_dir: Path | None) -> Iterator[tuple[Path, bool]]:
    """(folder, resumable): work_dir/checkpoints inside a run, deleted only after training succeeded;
    outside a run a temporary folder (no checkpoints, no resume)."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="detoxedit-train-") as tmp:
            yield Path(tmp), False
        return
    folder = Path(work_dir) / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    yield folder, True
    shutil.rmtree(folder, ignore_errors=True)  # not reached when training raised: the checkpoints stay


def peak_rss_mb() -> float | None:
    """The process's peak resident set size so far (MB, 10^6 bytes); None where getrusage does not exist (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def quiet(trainer_cls: type) -> type:
    """The TRL trainer without its usage ping to the Hugging Face Hub (no network from a run)."""

    class Quiet(trainer_cls):  # type: ignore[misc, valid-type]
        def _send_telemetry(self) -> None:
            pass

    Quiet.__name__ = Quiet.__qualname__ = trainer_cls.__name__
    return Quiet


def progress_callbacks() -> tuple[list[Any], Any]:
    """(callbacks, start): a progress bar showing the latest loss (instead of one printed line per
    step), and a callback that records the global step training starts from (> 0 after a resume)."""
    from transformers.trainer_callback import ProgressCallback, TrainerCallback

    class LossBar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.training_bar is not None and logs and "loss" in logs:
                self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    class Start(TrainerCallback):
        step: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.step = state.global_step

    start = Start()
    return [LossBar(), start], start


def require_training_packages(method: str) -> None:
    missing = [name for name in ("trl", "peft", "datasets") if not _importable(name)]
    if missing:
        raise DetoxeditError(f"method {method!r} trains with TRL and PEFT, but {', '.join(missing)} "
                             "is not installed: pip install 'detoxedit[train]'")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------ the method


def training_arguments(config_cls: type, config: TrainConfig, folder: Path, resumable: bool, model: nn.Module,
                       **extra: Any) -> Any:
    """TRL's config for one fit: the model's own dtype and device, no reporting, a checkpoint per `save_steps`."""
    names = {f.name for f in dataclasses.fields(config_cls)}  # transformers >= 5.2x renamed gradient_checkpointing
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return config_cls(
        output_dir=str(folder), learning_rate=config.lr, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation, max_length=config.max_length,
        seed=config.seed, data_seed=config.seed, logging_steps=1, report_to="none",
        save_strategy="steps" if resumable else "no", save_steps=config.save_steps, save_total_limit=1,
        use_cpu=next(model.parameters()).device.type == "cpu", bf16=False, fp16=False,
        dataloader_num_workers=0, **{checkpointing: config.gradient_checkpointing}, **extra,
    )


class TRLMethod(EditMethod):
    """A GLOBAL method trained by a TRL trainer on a copy of the model; subclasses give the rows and trainer.

    Attributes:
        callbacks: extra `transformers.TrainerCallback`s for the trainer (monitoring, tests).
    """

    scope = GLOBAL
    trainer_name: str = ""

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        self.callbacks: list[Any] = []

    def rows(self, fmt: ChatFormat, items: Sequence[Any]) -> list[dict[str, Any]]:
        """The training dataset, one row per item, in TRL's format for this trainer."""
        raise NotImplementedError

    def make_trainer(self, model: nn.Module, tokenizer: Any, dataset: Any, folder: Path, resumable: bool,
                     peft_config: Any) -> Any:
        raise NotImplementedError

    def reference(self) -> str | None:
        """What the trainer compares the policy against, if anything (DPO)."""
        return None

    def writes(self, model: nn.Module) -> list[str]:
        return trained_parameters(model, self.config)

    def fit(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any]) -> Edit:
        """Trains a copy of `model` on the training items; returns the copy's change as deltas."""
        if not train_items:
            raise DetoxeditError(f"method {self.name!r} trains on SafeEdit training items: give them with --train FILE")
        require_training_packages(self.name)
        fmt = ChatFormat(tokenizer, self.config.chat_format)
        rows = self.rows(fmt, train_items)
        on_cuda = next(model.parameters()).device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats()
        start, rss_before = time.perf_counter(), peak_rss_mb()
        with preserved_rng(), checkpoint_folder(self.work_dir) as (folder, resumable):
            deltas, record = self._train(model, tokenizer, rows, folder, resumable)
        gc.collect()  # the trained copy and the trainer hold reference cycles; free them before generation
        peak = peak_rss_mb()
        growth = peak - rss_before if peak is not None and rss_before is not None else None
        record |= {"seconds": time.perf_counter() - start, "peak_rss_mb": peak, "rss_growth_mb": growth,
                   "memory_measure": RSS_MEASURE, "chat_format": fmt.resolved_mode}
        if on_cuda:
            record["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated() / 1e6
        losses = [entry["loss"] for entry in record["log_history"]]
        return Edit(deltas=deltas, losses=losses, info=record)

    def _train(self, model: nn.Module, tokenizer: Any, rows: list[dict[str, Any]], folder: Path,
               resumable: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """One trainer on a copy of the model and tokenizer, resumed from `folder` if it holds a checkpoint."""
        from datasets import Dataset

        cfg: TrainConfig = self.config
        copied = copy.deepcopy(model)
        if not cfg.lora:
            copied.requires_grad_(True)
        peft_config = lora_config(model, cfg) if cfg.lora else None
        trainer = self.make_trainer(copied, copy.deepcopy(tokenizer), Dataset.from_list(rows), folder, resumable,
                                    peft_config)
        began = self._install_callbacks(trainer)
        resume = resumable and _last_checkpoint(folder) is not None
        output = trainer.train(resume_from_checkpoint=True if resume else None)
        trained = trainer.accelerator.unwrap_model(trainer.model)
        deltas = lora_deltas(trained) if cfg.lora else full_deltas(model, trained)
        trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
        return deltas, self._record(trainer, output, began.step, len(rows), trainable, model)

    def _install_callbacks(self, trainer: Any) -> Any:
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        callbacks, began = progress_callbacks()
        if trainer.args.disable_tqdm:
            callbacks = callbacks[1:]
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        for callback in [*callbacks, *self.callbacks]:
            trainer.add_callback(callback)
        return began

    def _record(self, trainer: Any, output: Any, start_step: int | None, n_items: int, trainable: int,
                model: nn.Module) -> dict[str, Any]:
        """Edit.info: what was trained, on what, for how long, and how it went (the cost goes in a report)."""
        import peft
        import trl

        cfg: TrainConfig = self.config
        state = trainer.state
        log = [{k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
               for entry in state.log_history if "loss" in entry]
        examples = len(trainer.train_dataset)
        if examples < n_items:
            logger.warning("%s: %d of %d training items were dropped by TRL (longer than max_length=%d)",
                           self.name, n_items - examples, n_items, cfg.max_length)
        return {
            "method": self.name, "trainer": f"trl.{self.trainer_name}", "trl_version": trl.__version__,
            "peft_version": peft.__version__, "lora": cfg.lora, "target": cfg.target if cfg.lora else "all",
            "trained_tensors": len(self.writes(model)), "trainable_parameters": trainable,
            "total_parameters": sum(p.numel() for p in model.parameters()), "train_items": n_items,
            "examples": examples, "steps": state.global_step, "epochs_run": state.epoch,
            "resumed_from_step": start_step or None, "steps_this_call": state.global_step - (start_step or 0),
            "final_loss": log[-1]["loss"] if log else None, "mean_loss_this_call": output.training_loss,
            "reference": self.reference(), "log_history": log,
        }


def _last_checkpoint(folder: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder)) if folder.is_dir() else None
