"""DINM in the general setting: one detoxified model, edited from k training instances, evaluated on every test item.

The paper's Table 3 edits LLaMA-2 from ONE instance and evaluates that one model on the whole test
set (three instances, mean ± std: `detoxedit run --method dinm-global --instances 3`). With k > 1
(beyond the paper) the instances' edits are combined into one model, the form in which a
detoxified model would ship:

- `combine: sequential` (default): each instance is located and edited on the model already carrying
  the previous instances' edits, so later edits see (and keep) the earlier ones; the KL term of each
  step keeps the knowledge answer of the model as it stands before that step.
- `combine: sum`: every instance is edited from the original model and the deltas are added, which
  is order-free but lets edits of the same layer interfere.

Instances come from the training data (`--train`), never from the test set (the runner refuses
overlapping data); by id (`instance_ids`) or a seeded sample (`choice_seed`).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch
from torch import nn

from detoxedit.config import check, option
from detoxedit.errors import ConfigError
from detoxedit.methods._trl import peak_rss_mb
from detoxedit.methods._tuning import down_projections
from detoxedit.methods.base import GLOBAL, METHODS, Edit, EditMethod, applied
from detoxedit.methods.dinm import DINM, DINMConfig

COMBINE_MODES = ("sequential", "sum")


@dataclass
class DINMGlobalConfig(DINMConfig):
    """DINM's hyperparameters, plus which training instances to edit from and how to combine their edits."""

    instances: int = option(1, "Training instances to edit from (1: the paper's one-instance DINM).")
    instance_ids: list[Any] = option([], "Ids of the training items to edit from (default: a seeded sample).")
    choice_seed: int = option(0, "Seed of the sample of instances when instance_ids is empty.")
    combine: str = option("sequential", "sequential: each edit is made on the model carrying the earlier ones; "
                                        "sum: every edit from the original model, deltas added.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.instance_ids:  # named instances decide how many there are
            self.instances = len(self.instance_ids)
        check(self.instances >= 1, f"instances must be at least 1, got {self.instances}")
        check(self.combine in COMBINE_MODES, f"combine must be one of {COMBINE_MODES}, got {self.combine!r}")


def choose_instances(train_items: Sequence[Any], config: DINMGlobalConfig) -> list[Any]:
    """The training items to edit from: those named by `instance_ids` (in that order), else a seeded sample."""
    if config.instance_ids:
        by_id = {str(item.id): item for item in train_items}
        missing = [str(i) for i in config.instance_ids if str(i) not in by_id]
        if missing:
            raise ConfigError(f"instance_ids {missing} are not ids of the --train items "
                              f"(first ids: {[str(i.id) for i in train_items[:5]]})")
        return [by_id[str(i)] for i in config.instance_ids]
    if len(train_items) < config.instances:
        raise ConfigError(f"dinm-global needs {config.instances} training instance(s) but --train has "
                          f"{len(train_items)}; give --train FILE")
    chosen = random.Random(config.choice_seed).sample(range(len(train_items)), config.instances)
    return [train_items[i] for i in sorted(chosen)]


@METHODS.register("dinm-global")
class DINMGlobal(EditMethod):
    """One model edited by DINM from k training instances (see the module docstring)."""

    name = "dinm-global"
    config_class = DINMGlobalConfig
    scope = GLOBAL

    @classmethod
    def compat_values(cls) -> dict[str, Any]:
        return DINM.compat_values()

    def writes(self, model: nn.Module) -> list[str]:
        return down_projections(model)

    def fit(self, model: nn.Module, tokenizer: Any, train_items: Sequence[Any]) -> Edit:
        start = time.perf_counter()
        cfg: DINMGlobalConfig = self.config
        editor = DINM(DINMConfig(**{f.name: getattr(cfg, f.name) for f in fields(DINMConfig)}))
        editor.prepare(model, tokenizer)
        total: dict[str, torch.Tensor] = {}
        steps = []
        for item in choose_instances(train_items, cfg):
            carried = total if cfg.combine == "sequential" else {}
            with applied(model, carried, context=f"dinm-global instance {item.id}: "):
                edit = editor.execute(model, tokenizer, item)
            total = _added(total, edit.deltas)
            steps.append({"item_id": item.id, "layer": edit.layer, "losses": edit.losses,
                          "seconds": edit.info.get("seconds"), "distances": edit.info.get("distances")})
        layers = {s["layer"] for s in steps}
        info = {"method": self.name, "instances": [s["item_id"] for s in steps], "combine": cfg.combine,
                "per_instance": steps, "seconds": time.perf_counter() - start, "examples": len(steps),
                "peak_rss_mb": peak_rss_mb(),
                "trainable_parameters": sum(int(d.numel()) for d in total.values()),
                "distances": steps[0]["distances"] if len(steps) == 1 else None}
        return Edit(total, layer=layers.pop() if len(layers) == 1 else None,
                    losses=[loss for s in steps for loss in s["losses"]], info=info)


def _added(total: dict[str, torch.Tensor], deltas: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    merged = dict(total)
    for name, delta in deltas.items():
        merged[name] = merged[name] + delta if name in merged else delta.clone()
    return merged
