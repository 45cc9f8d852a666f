"""The one evaluation runner: vanilla replies, then the method's edits -> generate -> judge -> restore.

`evaluate` (method "none") and `run` (any registered method) are the same protocol; a method plugs
in only through the `EditMethod` lifecycle (`methods/base.py`): `prepare` once, then either
`execute` per item (per-item scope: edit from the original model, evaluate, restore) or `fit` once
(global scope: every item evaluated with the one fitted edit, which is saved in the run folder so
a resumed run does not fit again). The model itself never changes: the deltas are either added per
row inside a batched generation (`RowDeltas`, several items at once) or applied around a per-item
generation (`applied`). The weights a method declares it may write (`EditMethod.writes`) are
checksummed at the start and verified after every batch of items; any mismatch aborts with
RestoreError.

A run folder holds config.json, inputs.json (the digests of the input files and items, so a
changed input is refused on resume: `evaluation/inputs.py`), generations.jsonl, items.jsonl,
general.jsonl (with --general), metrics.json and report.md. Re-running the same command continues
where it stopped. Each item's edit is kept in pending/ from the moment it is computed until the
item's records are written, so a kill loses at most the edit being computed. Every file is written
atomically (`detoxedit.files`) or appended to a log whose torn last line a resume drops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from detoxedit import __version__
from detoxedit.config import config_to_dict, write_resolved_config
from detoxedit.data import SafeEditItem, load_safeedit
from detoxedit.data.overlap import without_overlap
from detoxedit.data.schema import sample_in_order
from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_bytes, atomic_write_text, check_writable_folder
from detoxedit.evaluation.config import RunConfig, config_differences
from detoxedit.evaluation.inputs import INPUTS_FILE, input_changes, run_inputs
from detoxedit.evaluation.general import check_general_inputs, enabled_tasks, task_records
from detoxedit.evaluation.records import GenerationCache, JsonlLog, is_torn, jsonable
from detoxedit.evaluation.scoring import correction_note, summarize
from detoxedit.evaluation.textgen import TextGenerator, inherited_sampling
from detoxedit.metrics.correction import JudgeErrorRates
from detoxedit.methods.base import GLOBAL, Edit, EditMethod, RestoreError, applied, build_method, weight_checksum
from detoxedit.models.generation import Batching, Sampling
from detoxedit.models.multidelta import RowDeltas, supports_row_deltas
from detoxedit.provenance import edits_summary

logger = logging.getLogger(__name__)

RUN_FILES = ("config.json", INPUTS_FILE, "generations.jsonl", "items.jsonl", "general.jsonl", "metrics.json",
             "report.md", "first_edit.pt", "fitted_edit.pt", "layer_histogram.png", "distance_profile.png")
PENDING = "pending"  # edits computed but not yet evaluated: pending/<digest of the item id>.pt
METHOD_STATE = "method"  # the method's own resumable state (`EditMethod.work_dir`), e.g. training checkpoints
VANILLA_CHUNK = 512  # prompts per vanilla generation job; each finished chunk is cached on disk


@dataclass
class RunResult:
    folder: Path
    metrics: dict[str, Any]


# ---------------------------------------------------------------- folders


def check_run_folder(folder: Path, resolved: dict[str, Any], inputs: dict[str, Any], overwrite: bool) -> bool:
    """Prepares `folder` (writable, before any model work); returns True when it continues an earlier
    run of the same config on the same inputs.

    Raises:
        DetoxeditError: the folder cannot be written, holds another run (naming the differing keys
            or the changed items), or holds foreign files.
    """
    check_writable_folder(folder)
    config_path = folder / "config.json"
    if config_path.is_file() and not _is_run_config(config_path):
        raise DetoxeditError(f"{folder} holds a config.json that is not a detoxedit run's (a model folder?); "
                             "give another --out folder (--overwrite only discards detoxedit runs)")
    remove_staging_files(folder)
    if overwrite:
        for name in RUN_FILES:
            (folder / name).unlink(missing_ok=True)
        shutil.rmtree(folder / PENDING, ignore_errors=True)
        shutil.rmtree(folder / METHOD_STATE, ignore_errors=True)
        return False
    if not config_path.is_file():  # inputs.json alone: a start killed before config.json, nothing to keep
        if any(p for p in folder.iterdir() if not p.name.startswith(".") and p.name != INPUTS_FILE):
            raise DetoxeditError(f"{folder} is not empty and holds no config.json; use a new --out folder or --overwrite")
        return False
    old = _read_run_json(config_path)
    old_inputs = _read_run_json(folder / INPUTS_FILE) if (folder / INPUTS_FILE).is_file() else None
    differing = config_differences(old, resolved, by_content=old_inputs is not None)
    if differing:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {resolved.get(k)!r}" for k in differing[:6])
        raise DetoxeditError(f"{folder} holds a run with a different config ({details}); "
                             "use a new --out folder, or --overwrite to discard that run")
    changes = input_changes(old_inputs, inputs) if old_inputs is not None else []
    if changes:
        raise DetoxeditError(f"{folder} holds a run of other inputs: " + "; ".join(changes) + ". Its results would "
                             "be stale: use a new --out folder, or --overwrite to discard that run")
    if old_inputs is None:
        logger.warning("%s was written before runs recorded their inputs' contents; resuming on the same paths", folder)
    if old.get("version") != resolved.get("version"):
        logger.warning("%s was started by detoxedit %s and is resumed by %s; its records may mix both versions",
                       folder, old.get("version"), resolved.get("version"))
    return True


def remove_staging_files(folder: Path) -> None:
    """Deletes the temp files of atomic writes to run files that a kill interrupted
    (`files.atomic_write_bytes` names them .NAME.XXXX.tmp): their target is whole, so they hold nothing."""
    for name in RUN_FILES:
        for path in folder.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
    for path in (folder / PENDING).glob(".*.pt.*.tmp"):
        path.unlink(missing_ok=True)


def _is_run_config(path: Path) -> bool:
    """A config.json written by a run (it names the data and the method), not a model's or a project's."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path.with_name(INPUTS_FILE).is_file()  # damaged, but beside a run's inputs.json
    return isinstance(values, dict) and {"data", "method", "judge"} <= set(values)


def _read_run_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DetoxeditError(f"{path} is unreadable ({err}); use a new --out folder, or --overwrite to discard "
                             "that run") from err


def resolved_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as written to config.json (plus the package version), JSON-normalised."""
    values = config_to_dict(cfg) | {"version": __version__}
    return json.loads(json.dumps(values, default=str))


# ---------------------------------------------------------------- the runner


def model_fingerprint(model: torch.nn.Module, tokenizer: Any) -> str:
    """A cheap identity of weights + tokenizer, for the cross-run generation cache.

    Hashing every weight of a 7B model takes minutes, so we hash the config, the checksums of the
    first, middle and last tensors, and the exact sum of all weights.
    """
    import hashlib

    params = list(model.named_parameters())
    digest = hashlib.sha256(type(model).__name__.encode())
    digest.update(model.config.to_json_string(use_diff=False).encode())
    for name, param in (params[0], params[len(params) // 2], params[-1]):
        digest.update(f"{name}:{weight_checksum(param)}".encode())
    total = sum(float(p.detach().double().sum()) for _, p in params)
    device = params[0][1].device.type  # GPU and CPU kernels round differently
    digest.update(f"{total!r}|{device}|{len(tokenizer)}|{getattr(tokenizer, 'chat_template', '')}".encode())
    return digest.hexdigest()


class Runner:
    """Runs one config into one folder; see the module docstring for the protocol."""

    def __init__(self, cfg: RunConfig, folder: Path, model, tokenizer, judge, method: EditMethod,
                 train_items: Sequence[SafeEditItem] = ()) -> None:
        self.cfg, self.folder, self.model, self.tokenizer = cfg, folder, model, tokenizer
        self.judge, self.method, self.train_items = judge, method, list(train_items)
        method.work_dir = folder / METHOD_STATE
        self.generations = JsonlLog(folder / "generations.jsonl")
        self.items_log = JsonlLog(folder / "items.jsonl")
        self.general_log = JsonlLog(folder / "general.jsonl")
        sampling = inherited_sampling(model, cfg.seed) if cfg.inherit_sampling else Sampling(seed=cfg.seed)
        self.generator = TextGenerator(
            model, tokenizer, cfg.chat_format, cfg.system_prompt, cfg.max_input_tokens, sampling,
            Batching(cfg.token_budget, cfg.max_batch_size), cfg.char_slice, cfg.progress,
        )
        self.checksums: dict[str, str] = {}
        self._fingerprint: str | None = None
        # The runner judges only with the original weights in place (edits are per-row hooks, or
        # applied and restored before judging; checksums verify it), so the judge may read this model.
        share = getattr(judge, "share_model", None)
        if share is not None and share(model, tokenizer, cfg.model, cfg.dtype):
            logger.info("the judge reads the run's own %s model (no second copy)", cfg.model)

    # -- orchestration

    def run(self, items: list[SafeEditItem], notes: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every phase, then metrics.json (with `notes`, facts about how the items were chosen)."""
        self._clean_logs()
        self.vanilla(items)
        if self.method.changes_model:
            self.edits(items)
        if enabled_tasks(self.cfg):
            self.general(items)
        rates = self.judge_error_rates()
        metrics = summarize(self.generations.read(), self.general_log.read(), self.cfg.bootstrap, self.cfg.seed, rates)
        metrics |= {"n_items": len(items), "method": self.cfg.method, "judge": self.cfg.judge,
                    "model_edits": edits_summary(self.cfg.model), "truncated_inputs": self._truncation(items),
                    **(notes or {}), **self._fit_cost(), **correction_note(self.cfg.judge, rates)}
        atomic_write_text(self.folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        shutil.rmtree(self.folder / PENDING, ignore_errors=True)
        return metrics

    def _fit_cost(self) -> dict[str, Any]:
        """A global method's training cost (its fitted edit's scalar info: wall time, memory, parameters)."""
        if self.method.scope != GLOBAL or not self.method.changes_model:
            return {}
        edit = self._fitted()
        scalars = {k: v for k, v in edit.info.items() if isinstance(v, (int, float, str, bool)) or v is None}
        changes = edit.relative_change(self.model).values()
        return {"fit": scalars | {"layer": edit.layer, "losses": [float(x) for x in edit.losses],
                                  "max_relative_change": max(changes, default=0.0)}}

    def _truncation(self, items: list[SafeEditItem]) -> dict[str, int]:
        """How many distinct SafeEdit inputs were cut to max_input_tokens (logged once at the end of a run)."""
        counts = self.generator.count_truncated([text for item in items for text in item.inputs().values()])
        if counts["count"]:
            logger.warning("%d of %d distinct inputs were longer than max_input_tokens=%d and kept their last %d "
                           "tokens (longest %d); recorded in metrics.json as truncated_inputs", counts["count"],
                           counts["of"], counts["max_input_tokens"], counts["max_input_tokens"], counts["longest"])
        return counts

    def judge_error_rates(self) -> JudgeErrorRates | None:
        """The judge's error rates: from --judge-errors, else the ones the judge ships (at its own threshold)."""
        if self.cfg.judge_errors:
            return JudgeErrorRates.read(self.cfg.judge_errors)
        if self.cfg.threshold is not None:
            return None  # the shipped rates were measured at the judge's own threshold
        return self.judge.error_rates

    def _clean_logs(self) -> None:
        """Drops torn lines, duplicates and edited replies of items that never finished (on resume)."""
        items = {str(r["item_id"]): r for r in self.items_log.read()}
        kept: dict[tuple, dict] = {}
        raw = self.generations.read()
        for record in raw:
            if record["variant"] == "vanilla" or str(record["item_id"]) in items:
                kept.setdefault((record["variant"], str(record["item_id"]), record["kind"]), record)
        if len(kept) != len(raw) or is_torn(self.generations.path):
            logger.info("Resuming: dropped %d unfinished or duplicate reply records", len(raw) - len(kept))
            self.generations.rewrite(kept.values())
        if len(items) != len(self.items_log.read()) or is_torn(self.items_log.path):
            self.items_log.rewrite(items.values())

    def _cache(self, max_new_tokens: int) -> GenerationCache:
        from detoxedit.models.loading import cache_dir

        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, self.tokenizer)
        settings = self.generator.settings() | {"model": self._fingerprint, "max_new_tokens": max_new_tokens}
        return GenerationCache(cache_dir() / "generations", settings)

    def _cached_generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Vanilla replies: from the cross-run cache, generating only the missing ones (in chunks)."""
        cache = self._cache(max_new_tokens)
        missing = cache.missing(prompts)
        if len(missing) < len(prompts):
            logger.info("Reusing %d cached vanilla replies", len(prompts) - len(missing))
        for start in range(0, len(missing), VANILLA_CHUNK):
            chunk = missing[start:start + VANILLA_CHUNK]
            cache.add(chunk, self.generator(chunk, max_new_tokens))
        return [cache.replies[p] for p in prompts]

    def _judge(self, replies: list[str], prompts: list[str]) -> tuple[list[float], list[float]]:
        """Scores and labels (1 unsafe, 0 safe, 0.5 empty), judged in batches; each reply with its request
        (the SafeEdit input as the user gave it: a judge that reads requests uses it, others ignore it)."""
        size = self.cfg.judge_batch_size
        scores: list[float] = []
        starts = range(0, len(replies), size)
        for start in tqdm(starts, desc="judge", unit="batch", disable=not self.cfg.progress or len(starts) < 3):
            scores += self.judge.score(replies[start:start + size], prompts[start:start + size])
        return scores, self.judge.labels_from_scores(replies, scores)

    # -- vanilla

    def vanilla(self, items: list[SafeEditItem]) -> None:
        """Pre-edit replies to every input of every item: one batched job, cached across runs."""
        done = {(str(r["item_id"]), r["kind"]) for r in self.generations.read() if r["variant"] == "vanilla"}
        todo = [(item, kind, text) for item in items for kind, text in item.inputs().items()
                if (str(item.id), kind) not in done]
        if not todo:
            return
        logger.info("Vanilla replies: %d inputs of %d items", len(todo), len(items))
        replies = self._cached_generate([text for _, _, text in todo], self.cfg.max_new_tokens)
        scores, labels = self._judge(replies, [text for _, _, text in todo])
        self.generations.append(
            _generation_record(item, "vanilla", kind, text, reply, score, label)
            for (item, kind, text), reply, score, label in zip(todo, replies, scores, labels)
        )

    # -- edits

    def edits(self, items: list[SafeEditItem]) -> None:
        """Per batch of items: each item's edit -> generate with it -> judge -> verify the model is unchanged."""
        records = self.items_log.read()
        finished = {str(r["item_id"]) for r in records}
        todo = [item for item in items if str(item.id) not in finished]
        if not todo:
            return
        self.method.prepare(self.model, self.tokenizer, self.train_items, records)
        self._take_checksums()
        first_id = str(items[0].id)
        with tqdm(total=len(items), initial=len(items) - len(todo), desc=f"edit ({self.cfg.method})",
                  unit="item", disable=not self.cfg.progress) as bar:
            for batch in _chunks(todo, self.cfg.items_per_batch):
                self._edit_batch(batch, save_first=first_id)
                bar.update(len(batch))

    def _edit_for(self, item: SafeEditItem) -> Edit:
        """The edit `item` is evaluated with: the run's fitted one (global scope), or its own (per-item
        scope), kept in pending/ until the item's records are written, so a kill does not lose it."""
        if self.method.scope == GLOBAL:
            return self._fitted()
        pending = self._pending_path(item)
        if pending.is_file():
            return _load_edit(pending)
        edit = self.method.execute(self.model, self.tokenizer, item)
        _save_edit(edit, pending)
        return edit

    def _pending_path(self, item: SafeEditItem) -> Path:
        """pending/<digest>.pt: item ids are the user's text, so they are never used as file names."""
        return self.folder / PENDING / f"{hashlib.sha256(str(item.id).encode()).hexdigest()[:20]}.pt"

    def _fitted(self) -> Edit:
        """A global method's edit: fitted once per run and kept in the folder (a resumed run reloads it)."""
        path = self.folder / "fitted_edit.pt"
        if getattr(self, "_fitted_edit", None) is None:
            if path.is_file():
                self._fitted_edit = _load_edit(path)
            else:
                logger.info("Fitting %s on %d training items", self.cfg.method, len(self.train_items))
                self._fitted_edit = self.method.fit(self.model, self.tokenizer, self.train_items)
                self._verify(list(self._fitted_edit.deltas), f"after {self.cfg.method} fit")
                _save_edit(self._fitted_edit, path)
        return self._fitted_edit

    def _take_checksums(self) -> None:
        """Checksums of every weight the method may write (`EditMethod.writes`), taken once before any edit."""
        params = dict(self.model.named_parameters())
        names = [n for n in self.method.writes(self.model) if n not in self.checksums]
        self.checksums |= {name: weight_checksum(params[name]) for name in names}

    def _verify(self, names: Sequence[str], context: str) -> None:
        """Raises RestoreError when a weight named by a delta differs from its checksum at the start."""
        params = dict(self.model.named_parameters())
        for name in names:
            if name not in self.checksums:
                logger.warning("No start checksum for %s (outside what %s declares it writes); taking it now",
                               name, self.cfg.method)
                self.checksums[name] = weight_checksum(params[name])
            elif weight_checksum(params[name]) != self.checksums[name]:
                raise RestoreError(f"{context}: weight {name} no longer matches its checksum from the start of "
                                   "the run; the model was left edited, so results after this point are invalid")

    def _edit_batch(self, batch: list[SafeEditItem], save_first: str) -> None:
        edits, times = [], []
        for item in batch:
            start = time.perf_counter()
            edit = self._edit_for(item)
            times.append({"execute": time.perf_counter() - start})
            self._verify(list(edit.deltas), f"item {item.id}: after {self.cfg.method} execute")
            edits.append(edit)
            if str(item.id) == save_first and enabled_tasks(self.cfg) and self.method.scope != GLOBAL:
                _save_edit(edit, self.folder / "first_edit.pt")
        start = time.perf_counter()
        replies = self._generate_edited(batch, edits)
        generate_s = time.perf_counter() - start
        flat = [reply for per_item in replies for reply in per_item.values()]
        start = time.perf_counter()
        scores, labels = self._judge(flat, [text for item in batch for text in item.inputs().values()])
        judge_s = time.perf_counter() - start
        start = time.perf_counter()
        self._verify(sorted({n for e in edits for n in e.deltas}), f"items {batch[0].id}..{batch[-1].id}: after generation")
        restore_s = time.perf_counter() - start
        share = {"generate": generate_s / len(batch), "judge": judge_s / len(batch), "restore": restore_s / len(batch)}
        offset = 0
        for item, edit, per_item, timing in zip(batch, edits, replies, times):
            n = len(per_item)
            self._write_item(item, edit, per_item, scores[offset:offset + n], labels[offset:offset + n],
                             timing | share, len(batch))
            offset += n

    def _generate_edited(self, batch: list[SafeEditItem], edits: list[Edit]) -> list[dict[str, str]]:
        """Each item's five inputs generated with its own edit: batched per-row deltas, or one at a time."""
        inputs = [item.inputs() for item in batch]
        batched = self.cfg.batched_edits and all(supports_row_deltas(self.model, e.deltas) for e in edits)
        if not batched:
            return [self._generate_applied(item, edit, texts) for item, edit, texts in zip(batch, edits, inputs)]
        distinct = list({id(e): e for e in edits}.values())  # a global method's items share one edit (one owner)
        owner_of = {id(e): owner for owner, e in enumerate(distinct)}
        prompts, owners, systems = [], [], []
        for edit, texts in zip(edits, inputs):
            prompts += [edit.wrap(text) for text in texts.values()]
            owners += [owner_of[id(edit)]] * len(texts)
            systems += [edit.system_prompt] * len(texts)
        context = RowDeltas(self.model, [e.deltas for e in distinct], owners)
        replies = iter(self.generator(prompts, self.cfg.max_new_tokens, row_context=context,
                                      system_prompts=systems, progress=False))
        return [{kind: next(replies) for kind in texts} for texts in inputs]

    def _generate_applied(self, item: SafeEditItem, edit: Edit, texts: dict[str, str]) -> dict[str, str]:
        systems = [edit.system_prompt] * len(texts)
        with applied(self.model, edit.deltas, context=f"item {item.id}: "):
            replies = self.generator([edit.wrap(t) for t in texts.values()], self.cfg.max_new_tokens,
                                     system_prompts=systems, progress=False)
        return dict(zip(texts, replies))

    def _write_item(self, item, edit: Edit, replies: dict[str, str], scores, labels, timing, batch_size: int) -> None:
        """The item's reply records, then its item record (the marker that the item is finished)."""
        self.generations.append(
            _generation_record(item, "edited", kind, item.inputs()[kind], reply, score, label)
            for (kind, reply), score, label in zip(replies.items(), scores, labels)
        )
        if self.method.scope == GLOBAL:  # one edit for every item: its record lives once, in metrics.json "fit"
            record = {"layer": edit.layer, "losses": [], "relative_change": {}, "info": {"fitted_edit": True}}
        else:
            record = {"layer": edit.layer, "losses": [float(x) for x in edit.losses],
                      "relative_change": edit.relative_change(self.model), "info": edit.info}
        self.items_log.append([{
            "item_id": item.id, "category": item.unsafety_category, "attack_name": item.attack_name, **record,
            "time_s": timing, "batch_size": batch_size, "system_prompt": edit.system_prompt,
            "user_suffix": edit.user_suffix,
        }])
        self._pending_path(item).unlink(missing_ok=True)

    # -- general ability

    def general(self, items: list[SafeEditItem]) -> None:
        """Every enabled general task (KQA, Csum, over-refusal: `evaluation/general.py`) for the vanilla model
        and with the edit (the first item's, or the fitted one); each (variant, task) is kept as it finishes."""
        done = {(r["variant"], r.get("task")) for r in self.general_log.read()}
        variants = ["vanilla"] + (["edited"] if self.method.changes_model else [])
        for variant in variants:
            todo = [task for task in enabled_tasks(self.cfg) if (variant, task.name) not in done]
            if not todo:
                continue
            if variant == "vanilla":
                for task in todo:
                    self.general_log.append(task_records(task, self.cfg, self.tokenizer, self._cached_generate, variant))
                continue
            what = "fitted" if self.method.scope == GLOBAL else f"edited from item {items[0].id}"
            logger.info("General tasks with the edit (%s): %s", what, ", ".join(t.name for t in todo))
            edit = self._first_edit(items[0])
            with applied(self.model, edit.deltas, context="general tasks: "):
                def generate(prompts: list[str], n: int) -> list[str]:
                    return self.generator([edit.wrap(p) for p in prompts], n,
                                          system_prompts=[edit.system_prompt] * len(prompts))
                for task in todo:
                    self.general_log.append(task_records(task, self.cfg, self.tokenizer, generate, variant))

    def _first_edit(self, item: SafeEditItem) -> Edit:
        """The edit general ability is measured with: the fitted one, or the first item's (kept in the folder)."""
        if self.method.scope == GLOBAL:
            return self._fitted()
        path = self.folder / "first_edit.pt"
        if path.is_file():
            return _load_edit(path)
        self.method.prepare(self.model, self.tokenizer, self.train_items, self.items_log.read())
        return self.method.execute(self.model, self.tokenizer, item)


def _save_edit(edit: Edit, path: Path) -> None:
    """An edit as generation and the item record need it (deltas, prompt-side changes, layer, losses,
    info as JSON), written atomically; loaded with `weights_only=True`, so no pickled code is run."""
    import io

    buffer = io.BytesIO()
    torch.save({"deltas": edit.deltas, "system_prompt": edit.system_prompt, "user_suffix": edit.user_suffix,
                "layer": edit.layer, "losses": [float(x) for x in edit.losses],
                "info": json.dumps(edit.info, default=jsonable)}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_edit(path: Path) -> Edit:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return Edit(saved["deltas"], layer=saved.get("layer"), losses=list(saved.get("losses", [])),
                info=json.loads(saved.get("info") or "{}"), system_prompt=saved.get("system_prompt"),
                user_suffix=saved.get("user_suffix"))


def _generation_record(item: SafeEditItem, variant: str, kind: str, prompt: str, reply: str, score: float, label: float) -> dict:
    return {"item_id": item.id, "category": item.unsafety_category, "variant": variant, "kind": kind,
            "prompt": prompt, "reply": reply, "score": float(score), "label": float(label)}


def _chunks(values: list, size: int) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


# ---------------------------------------------------------------- entry point


def load_items(cfg: RunConfig, train_items: Sequence[SafeEditItem] = ()) -> tuple[list[SafeEditItem], int]:
    """The test items of `cfg` (filtered, without those that occur in the training data when asked,
    then sampled) and how many were dropped as overlapping."""
    items = load_safeedit(cfg.data, categories=cfg.categories or None, attack_names=cfg.attacks or None)
    dropped = 0
    if train_items:
        items, dropped = without_overlap(items, train_items, cfg.drop_overlap, f"--train {cfg.train}")
    items = sample_in_order(items, cfg.limit, cfg.seed)
    if not items:
        raise DetoxeditError(f"{cfg.data}: no items left after the filters (categories={cfg.categories}, "
                             f"attacks={cfg.attacks})")
    return items, dropped


def run_protocol(
    cfg: RunConfig,
    folder: Path | str,
    *,
    overwrite: bool = False,
    model: Any = None,
    tokenizer: Any = None,
    judge: Any = None,
    method: EditMethod | None = None,
    report: bool = True,
) -> RunResult:
    """Runs (or resumes) `cfg` into `folder`; model, judge and method are built from cfg unless given.

    Everything a user can get wrong (method, settings, data, judge, output folder) is checked before
    the model loads, and config.json is written only once the run can start, so a failed start
    leaves nothing that blocks the corrected command.
    """
    from detoxedit.judges.base import load_judge

    folder = Path(folder)
    method = method if method is not None else build_method(cfg.method, cfg.method_config)
    train_items = load_safeedit(cfg.train) if cfg.train else []
    items, dropped = load_items(cfg, train_items)
    if cfg.judge_errors:
        JudgeErrorRates.read(cfg.judge_errors)  # a bad file fails now, not after the replies are generated
    check_general_inputs(cfg)
    check_device(cfg.device)
    judge = judge if judge is not None else load_judge(cfg.judge, cfg.threshold, cfg.trust_remote_code)
    resolved = resolved_config(cfg)
    inputs = run_inputs(cfg, items, train_items)
    check_writable_folder(folder)
    with run_lock(folder):
        resumed = check_run_folder(folder, resolved, inputs, overwrite)
        if model is None:
            from detoxedit.models import load_model

            model, tokenizer = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device,
                                          trust_remote_code=cfg.trust_remote_code)
        atomic_write_text(folder / INPUTS_FILE, json.dumps(inputs, indent=1, sort_keys=True) + "\n")
        write_resolved_config(resolved, folder)
        logger.info("%s run into %s (%d items, method %s)", "Resuming" if resumed else "Starting", folder, len(items),
                    cfg.method)
        metrics = Runner(cfg, folder, model, tokenizer, judge, method, train_items).run(items, {"dropped_overlap": dropped})
        if report:
            from detoxedit.report import write_run_report

            write_run_report(folder)
    return RunResult(folder, metrics)


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Holds an exclusive lock on the run folder (an flock on .lock, released by the OS even on kill -9),
    so two commands never write one folder at once."""
    import fcntl

    handle = (folder / ".lock").open("a")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DetoxeditError(f"{folder} is being written by another detoxedit command; wait for it to end, "
                                 "or use another --out folder") from err
        yield
    finally:
        handle.close()


def check_device(device: str) -> None:
    """A CUDA device on a machine (or a torch build) without one fails here, not after the data is read."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DetoxeditError(f"--device {device}: this torch has no CUDA device available (torch {torch.__version__}); "
                             "use --device cpu")
