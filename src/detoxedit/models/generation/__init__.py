"""Batched generation: greedy by default, left padding, KV cache, length-sorted batches.

Why not plain `model.generate`? Three things the paper's protocol needs that it makes awkward:
greedy must mean greedy (a checkpoint's `generation_config` may switch sampling on silently, which is
how the reference code's replies became random); finished rows should stop costing compute
(finished rows are dropped from the batch and from the KV cache); and per-row forward contexts
(e.g. several items' edited weights in one batch) need the list of rows still running at each step.

Replies are cut from the generated token ids, never by character counts, and come back in input order.

The package, from the outside in:
    (this module)  the public API: `generate`, `generate_ids`, `Sampling`, `Batching`, stop tokens.
    simple.py      `SimpleEngine`: one left-padded prefill into a growing cache; the reference.
    fast.py        `FastEngine` (the default): staircase prefill by tiers with shared prefixes into a
                   preallocated cache (cache.py), planned by planning.py, inside kernels.py's switches.
    decoding.py    the decoding loop both engines share, so their greedy outputs agree token for token.
An engine is an object passed as `engine=`; greedy outputs of both equal one-at-a-time HF `generate`
(tests/unit/test_generation_fast.py); timings and the profiles behind the design are in
benchmarks/README.md.
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from detoxedit.models.chat import ChatFormat
from detoxedit.models.generation.fast import FastEngine
from detoxedit.models.generation.options import Batching, RowContext, Sampling
from detoxedit.models.generation.planning import plan_batches
from detoxedit.models.generation.simple import SimpleEngine

logger = logging.getLogger(__name__)

__all__ = ["Batching", "Engine", "FastEngine", "RowContext", "Sampling", "SimpleEngine", "decode_reply", "generate",
           "generate_ids", "stop_token_ids", "truncate_left"]

# Turn-end markers of common chat templates; used as stop tokens when the tokenizer has them.
_CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


class Engine(Protocol):
    """How one batch is prefilled and decoded (`FastEngine`, `SimpleEngine`)."""

    name: str

    def plans_tiers(self, model: PreTrainedModel, capacity: int) -> bool: ...

    def run_batch(self, model: PreTrainedModel, batch: Sequence[list[int]], rows: torch.Tensor, max_new_tokens: int,
                  stops: torch.Tensor, pad_id: int, sampling: Sampling, generator: torch.Generator,
                  row_context: RowContext | None, share_prefixes: bool = True) -> list[list[int]]: ...


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """EOS ids from the tokenizer and the generation config, plus chat turn-end tokens it knows."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, config_eos):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in _CHAT_END_TOKENS if token in vocab)
    return ids


def truncate_left(ids: list[int], max_tokens: int | None) -> list[int]:
    """Keeps the END of a prompt: the question and the assistant header sit at the end."""
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    return ids[-max_tokens:]


def truncate_all(encoded: Sequence[list[int]], max_tokens: int | None) -> tuple[list[list[int]], list[int]]:
    """`truncate_left` on every prompt; also returns the original lengths of the prompts it cut."""
    cut = [len(ids) for ids in encoded if max_tokens is not None and len(ids) > max_tokens]
    return [truncate_left(ids, max_tokens) for ids in encoded], cut


def warn_truncated(lengths: Sequence[int], max_tokens: int | None, total: int) -> None:
    """One warning for the prompts `truncate_all` cut: a silent cut changes what the model answers."""
    if lengths:
        logger.warning("%d of %d prompts are longer than max_input_tokens=%s and keep only their last %s tokens "
                       "(longest: %d tokens); raise --max-input-tokens to keep them whole",
                       len(lengths), total, max_tokens, max_tokens, max(lengths))


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 128,
    *,
    chat: ChatFormat | str = "auto",
    system_prompt: str | None = None,
    max_input_tokens: int | None = 1024,
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    progress: bool = True,
    row_context: RowContext | None = None,
    engine: Engine | None = None,
) -> list[str]:
    """Generates one reply per user message, in input order.

    Args:
        prompts: user messages; rendered with `chat` (a ChatFormat or a mode name such as "raw").
        max_input_tokens: prompts longer than this keep their last tokens.
        row_context: see `RowContext`; rows are indices into `prompts`.
        engine: see `generate_ids`.
    """
    fmt = chat if isinstance(chat, ChatFormat) else ChatFormat(tokenizer, chat, system_prompt)
    encoded, cut = truncate_all([fmt.encode(p) for p in prompts], max_input_tokens)
    warn_truncated(cut, max_input_tokens, len(prompts))
    token_lists = generate_ids(
        model, tokenizer, encoded, max_new_tokens,
        sampling=sampling, batching=batching, progress=progress, row_context=row_context,
        engine=engine,
    )
    stops = stop_token_ids(model, tokenizer)
    return [fmt.cut_reply(decode_reply(tokenizer, ids, stops)) for ids in token_lists]


def decode_reply(tokenizer: PreTrainedTokenizerBase, ids: list[int], stop_ids: set[int]) -> str:
    """Decodes generated ids up to (not including) the first stop token."""
    for position, token in enumerate(ids):
        if token in stop_ids:
            ids = ids[:position]
            break
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[list[int]],
    max_new_tokens: int,
    *,
    sampling: Sampling = Sampling(),
    batching: Batching = Batching(),
    progress: bool = True,
    row_context: RowContext | None = None,
    engine: Engine | None = None,
) -> list[list[int]]:
    """New token ids per prompt (including a final stop token when one was produced), in input order.

    Args:
        engine: `FastEngine()` (default) prefills without pad positions into a preallocated KV cache;
            `SimpleEngine()` prefills one left-padded batch into a growing DynamicCache. Both decode
            the same way. The simple engine stays as the reference, and is what models whose KV
            layers are not plain (sliding windows that would slide) always get.
    """
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("every prompt must have at least one token")
    engine = FastEngine() if engine is None else engine
    if not callable(getattr(engine, "run_batch", None)):
        raise TypeError(f"engine must be an engine object such as FastEngine() or SimpleEngine(), got {engine!r}")
    stops = torch.tensor(sorted(stop_token_ids(model, tokenizer)), dtype=torch.long)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(stops[0])
    generator = torch.Generator().manual_seed(sampling.seed)
    results: list[list[int]] = [[] for _ in prompt_ids]
    lengths = [len(ids) for ids in prompt_ids]
    batches = plan_batches(lengths, max_new_tokens, batching, engine.plans_tiers(model, max(lengths) + max_new_tokens))
    with tqdm(total=len(prompt_ids), desc="generate", unit="reply", disable=not progress or len(batches) < 2) as bar:
        for batch in batches:
            rows = torch.tensor(batch, dtype=torch.long)
            new_ids = engine.run_batch(model, [prompt_ids[i] for i in batch], rows, max_new_tokens, stops, pad_id,
                                       sampling, generator, row_context, batching.share_prefixes)
            for index, ids in zip(batch, new_ids):
                results[index] = ids
            bar.update(len(batch))
    return results
