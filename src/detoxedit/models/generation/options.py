"""What a generation job is asked for: decoding (`Sampling`), batching (`Batching`) and per-row contexts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

# A callable given the original indices of the rows still running (1-D LongTensor); it returns a
# context manager inside which the model's forward pass is run for exactly those rows. It may also
# have a method `row_keys(rows) -> list` saying which rows run under the same weights (equal keys):
# only such rows share the computation of a common prompt prefix. Without it, no two rows share.
RowContext = Callable[[torch.Tensor], ContextManager]


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. The default is greedy; sampling only when asked, and seeded."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Batching:
    """How prompts are grouped: a batch's KV cache positions stay under the token budget (see `plan_batches`)."""

    token_budget: int = 24_576
    max_batch_size: int = 64
    share_prefixes: bool = True  # fast engine: a prompt prefix shared by rows with the same weights runs once
