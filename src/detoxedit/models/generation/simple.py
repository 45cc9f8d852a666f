"""The simple engine: the reference a reader can check in one screen.

One left-padded forward over the whole batch fills a growing `DynamicCache`; then the shared loop
(`decoding.decode`) runs. Pad positions are computed and masked, which is what the fast engine
avoids; greedy outputs of both are identical (tests/unit/test_generation_fast.py).
"""

from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache

from detoxedit.models.generation.decoding import decode, forward_kwargs, forward_last, left_pad
from detoxedit.models.generation.options import RowContext, Sampling


class SimpleEngine:
    """Left-padded prefill into a growing cache, then the shared decoding loop."""

    name = "simple"

    def plans_tiers(self, model: PreTrainedModel, capacity: int) -> bool:
        """Batches are planned as one padded cache each."""
        return False

    @torch.inference_mode()
    def run_batch(self, model: PreTrainedModel, batch: Sequence[list[int]], rows: torch.Tensor, max_new_tokens: int,
                  stops: torch.Tensor, pad_id: int, sampling: Sampling, generator: torch.Generator,
                  row_context: RowContext | None, share_prefixes: bool = True) -> list[list[int]]:
        """New token ids of each prompt of `batch`, in batch order."""
        device = next(model.parameters()).device
        input_ids, mask = (t.to(device) for t in left_pad(batch, pad_id))  # (batch, width) each
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (batch, width)
        cache = DynamicCache(config=model.config)
        logits = forward_last(model, input_ids, mask, positions, rows, row_context, forward_kwargs(model, cache))
        return decode(model, cache, logits, mask, positions[:, -1], rows, max_new_tokens, stops, sampling, generator,
                      row_context)
