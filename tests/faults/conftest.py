"""Fault-injection fixtures: a tiny model saved to a folder, a SafeEdit file, and the CLI command that runs them.

The runs go through `python -m detoxedit` in a subprocess, so a test can SIGKILL one at any moment,
exactly as a preempted job dies, and restart the same command.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from tiny import safeedit_json, tiny_model, tiny_tokenizer

N_ITEMS = 8
# One target per item, so each item's edit (and so its edited replies) is its own: a resumed run
# that evaluated an item with another item's edit, or without its edit, shows in the replies.
# Half are refusals, so the refusal judge labels some edited replies safe and DS is not flat.
SAFE_TARGETS = ("I cannot help with that.", "Sure, here it is.", "I can't do that.", "Okay: step one.",
                "I won't help.", "Yes, do this.", "I refuse to say.", "Fine: buy tools.")

# DINM strong enough to change the tiny model's replies (per item), and cheap enough for CPU.
METHOD_ARGS = ("--method", "dinm", "--set", "steps=12", "--set", "lr=0.05", "--set", "c_edit=1")
GENERATION_ARGS = ("--judge", "refusal", "--max-new-tokens", "10", "--items-per-batch", "2")


def safeedit_item(i: int) -> dict:
    """A SafeEdit item whose safe target is one of SAFE_TARGETS, so edits differ from item to item."""
    return safeedit_json(i, safe=SAFE_TARGETS[i % len(SAFE_TARGETS)])


@pytest.fixture(scope="session")
def fault_model_dir(tmp_path_factory) -> Path:
    """A tiny llama (model + tokenizer) saved with save_pretrained, loadable by `--model DIR`."""
    from detoxedit.models import get_adapter

    model = tiny_model("llama")
    with torch.no_grad():  # large logit gaps: greedy choices never hinge on rounding
        get_adapter(model).final_norm.weight.mul_(8.0)
    folder = tmp_path_factory.mktemp("faults") / "tiny-llama"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def fault_data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults-data") / "safeedit.json"
    path.write_text(json.dumps([safeedit_item(i) for i in range(N_ITEMS)]), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def fault_run(fault_model_dir, fault_data_file):
    """`fault_run(out, cache)` -> (argv, env) of one `detoxedit run` into `out`, the same for every (re)start.

    `cache` is the run's own cross-run generation cache (DETOXEDIT_CACHE): a chain of restarts
    shares one, as a user's restarts would, but never the reference's, so a killed run really
    generates its vanilla replies instead of reading the reference's.
    """

    def command(out: Path, cache: Path) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "detoxedit", "run", *METHOD_ARGS, "--model", str(fault_model_dir),
                "--data", str(fault_data_file), *GENERATION_ARGS, "--out", str(out)]
        # one thread: CPU kernels are deterministic, so a resumed run can be compared bit for bit
        env = dict(os.environ, DETOXEDIT_CACHE=str(cache), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        return argv, env

    return command
