"""kill -9 at random points of a run, restart the same command, and the finished folder equals an uninterrupted run.

One reference run goes through uninterrupted. For each seed, a chain runs the same command into
a new folder (with its own generation cache): each start waits until the run's real work begins
(config.json written, after imports and model loading), sleeps a delay drawn from the seed's RNG
within the reference's working time, and SIGKILLs the process; after KILLS_PER_CHAIN kills the
next start runs to the end. The finished folder must then hold the same records as the reference,
item by item, and nothing else (no temp files, no pending edits).

Chains run two at a time (each process is single-threaded); the whole group takes about two
minutes on two CPU cores, most of it Python importing torch + transformers at each start.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from detoxedit.evaluation.inputs import INPUTS_FILE

pytestmark = pytest.mark.faults

SEEDS = (11, 22, 33, 44)
KILLS_PER_CHAIN = 6
MIN_KILLS = 20  # kills that landed in real work, over all chains
WORKERS = 2
RUN_TIMEOUT_S = 240  # one start of the tiny run takes ~6 s; this only stops a hung run
# Edit info fields that are wall-clock times, so differ between any two runs.
TIMING_INFO = {"seconds", "tune_seconds"}


@dataclass
class Kill:
    start: int  # which start of the chain (0-based) was killed
    delay_s: float  # after its work began
    items_done: int  # complete item records on disk just before the kill
    metrics_written: bool  # metrics.json existed (the kill hit the report, not the edits)


@dataclass
class Chain:
    seed: int
    folder: Path
    kills: list[Kill] = field(default_factory=list)
    error: str | None = None  # a start that failed: which, its exit code and its stderr
    seconds: float = 0.0


@dataclass
class Reference:
    folder: Path
    item_times: list[float]  # [d]: seconds from the run's work beginning until d item records were on disk
    report_time: float  # ... until report.md was written

    def window(self, items_done: int) -> float:
        """Where a start that finds `items_done` items finished is killed: within its edits while items
        are left (a kill drawn over the whole run would mostly land in the report), then within the
        metrics and report."""
        n = len(self.item_times) - 1
        if items_done < n:
            return max(self.item_times[n] - self.item_times[items_done], 0.05)
        return max(self.report_time - self.item_times[n], 0.05)


# ---------------------------------------------------------------- running and killing


def _stamp(path: Path) -> tuple[int, int] | None:
    """Identity of a file's current version: an atomic rewrite or an in-place write changes it."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _wait_for_work(proc: subprocess.Popen, folder: Path, before: tuple[int, int] | None, log: Path) -> bool:
    """Waits until this start (re)writes config.json or logs that it runs: past imports and model
    loading. False when the process exits first."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        stamp = _stamp(folder / "config.json")
        if stamp is not None and stamp != before:
            return True
        if b" run into " in log.read_bytes():
            return True
        time.sleep(0.005)
    return proc.poll() is None


def _items_done(folder: Path) -> int:
    try:
        return (folder / "items.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:]


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("wb") as stderr:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=log.parent)


def run_reference(root: Path, fault_run) -> Reference:
    folder, log = root / "reference", root / "reference.log"
    argv, env = fault_run(folder, root / "cache-reference")
    proc = _start(argv, env, log)
    try:
        assert _wait_for_work(proc, folder, None, log), f"reference run failed to start:\n{_tail(log)}"
        began = time.monotonic()
        item_times = [0.0]
        while proc.poll() is None and not (folder / "report.md").is_file():
            while _items_done(folder) >= len(item_times):
                item_times.append(time.monotonic() - began)
            time.sleep(0.002)
        report_time = time.monotonic() - began
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, f"reference run exited {rc}:\n{_tail(log)}"
    return Reference(folder, item_times, report_time)


def run_chain(seed: int, root: Path, fault_run, reference: Reference) -> Chain:
    """Starts the command, SIGKILLs it at a random point of its work, restarts; the last start runs to the end."""
    rng = random.Random(seed)
    chain = Chain(seed, root / f"killed-{seed}")
    argv, env = fault_run(chain.folder, root / f"cache-{seed}")
    began = time.monotonic()
    for start in range(KILLS_PER_CHAIN + 1):
        log = root / f"killed-{seed}.start{start}.log"
        before = _stamp(chain.folder / "config.json")
        proc = _start(argv, env, log)
        try:
            kill = None
            done = _items_done(chain.folder)
            if start < KILLS_PER_CHAIN and _wait_for_work(proc, chain.folder, before, log):
                delay = rng.uniform(0.0, reference.window(done))
                time.sleep(delay)
                kill = Kill(start, delay, _items_done(chain.folder), (chain.folder / "metrics.json").is_file())
                os.kill(proc.pid, signal.SIGKILL)  # a zombie (already exited) ignores it; its exit code tells
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc == -signal.SIGKILL and kill is not None:
            chain.kills.append(kill)
            continue
        if rc != 0:
            chain.error = (f"seed {seed}, start {start} (after kills at {[round(k.delay_s, 3) for k in chain.kills]} s "
                           f"into work) exited {rc}:\n{_tail(log)}")
        break
    else:
        chain.error = f"seed {seed}: the last start was killed too"
    chain.seconds = time.monotonic() - began
    return chain


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fault_run) -> Reference:
    return run_reference(tmp_path_factory.mktemp("reference"), fault_run)


@pytest.fixture(scope="module")
def chains(tmp_path_factory, fault_run, reference) -> dict[int, Chain]:
    root = tmp_path_factory.mktemp("killed")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {seed: pool.submit(run_chain, seed, root, fault_run, reference) for seed in SEEDS}
        return {seed: future.result() for seed, future in futures.items()}


# ---------------------------------------------------------------- reading a finished folder


def read_records(path: Path) -> list[dict]:
    """Every line of a finished log; a torn line is an error here (a finished run leaves whole files)."""
    text = path.read_text(encoding="utf-8")
    assert not text or text.endswith("\n"), f"{path}: the last line is torn"
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except ValueError as err:
            raise AssertionError(f"{path}:{number}: not valid JSON ({err}): {line[:200]!r}") from err
    return records


def keyed(records: list[dict], key, path: Path) -> dict:
    table: dict = {}
    for record in records:
        k = key(record)
        assert k not in table, f"{path}: duplicate record {k}"
        table[k] = record
    return table


def generation_records(folder: Path) -> dict:
    path = folder / "generations.jsonl"
    return keyed(read_records(path), lambda r: (r["variant"], str(r["item_id"]), r["kind"]), path)


def item_records(folder: Path) -> dict:
    """Item records without what legitimately differs between runs: wall-clock times, and the batch
    size (a resumed run re-chunks the items still to do)."""
    path = folder / "items.jsonl"
    table = keyed(read_records(path), lambda r: str(r["item_id"]), path)
    for record in table.values():
        del record["time_s"], record["batch_size"]
        record["info"] = {k: v for k, v in record["info"].items() if k not in TIMING_INFO}
    return table


def metric_values(folder: Path) -> dict[str, object]:
    """metrics.json flattened to {"variants.edited.metrics.DS.value": 12.5, ...}."""

    def flatten(value, prefix: str) -> dict[str, object]:
        if not isinstance(value, dict):
            return {prefix: value}
        return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}.{key}" if prefix else key).items()}

    return flatten(json.loads((folder / "metrics.json").read_text(encoding="utf-8")), "")


def report_lines(folder: Path) -> list[str]:
    """report.md without its title (the folder name) and its timing lines."""
    lines = (folder / "report.md").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if not line.startswith("# ") and "time" not in line]


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def differences(expected: dict, actual: dict, what: str) -> list[str]:
    missing = sorted(set(expected) - set(actual), key=str)
    extra = sorted(set(actual) - set(expected), key=str)
    changed = [k for k in expected if k in actual and expected[k] != actual[k]]
    out = [f"{what}: missing {missing}"] if missing else []
    out += [f"{what}: unexpected {extra}"] if extra else []
    out += [f"{what} {k}:\n  reference {expected[k]}\n  resumed   {actual[k]}" for k in changed[:5]]
    if len(changed) > 5:
        out.append(f"{what}: {len(changed) - 5} more records differ")
    return out


# ---------------------------------------------------------------- tests


def assert_same_run(reference: Path, folder: Path, where: str) -> None:
    """`folder` (finished) holds what the uninterrupted `reference` holds: the same records, item by item,
    the same metrics and report, and no other file."""
    temp = sorted(p for p in files_in(folder) if p.endswith(".tmp"))
    assert not temp, f"{where}: temp files left in the finished folder: {temp}"
    assert files_in(folder) == files_in(reference), f"{where}: the finished folder holds other files"
    problems = differences(generation_records(reference), generation_records(folder), "reply")
    problems += differences(item_records(reference), item_records(folder), "item")
    # metrics are computed from the records only, so they are equal exactly (no float tolerance needed:
    # one thread on CPU gives the same edits, replies and bootstrap draws bit for bit)
    problems += differences(metric_values(reference), metric_values(folder), "metrics.json")
    if report_lines(folder) != report_lines(reference):
        problems.append("report.md differs (beyond its title and times)")
    assert not problems, where + "\n" + "\n".join(problems)


def restart(folder: Path, fault_run, cache: Path) -> None:
    """Runs the command into `folder` to its end; it must exit 0."""
    log = folder.parent / f"{folder.name}.log"
    argv, env = fault_run(folder, cache)
    proc = _start(argv, env, log)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, f"the restart into {folder} exited {rc}:\n{_tail(log)}"


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_and_resumed_run_equals_the_uninterrupted_run(seed, reference, chains):
    chain = chains[seed]
    assert chain.error is None, chain.error
    where = f"seed {seed}, kills (start, s into work, items done) " \
            f"{[(k.start, round(k.delay_s, 3), k.items_done) for k in chain.kills]}"
    assert_same_run(reference.folder, chain.folder, where)


# Kill points a few milliseconds wide, which random kills reach only now and then: the folder each
# leaves is built here (from the reference's own files), and the restart must finish it cleanly.


def test_a_kill_between_the_first_starts_inputs_and_config_does_not_block_the_restart(reference, fault_run, tmp_path):
    """The first start writes inputs.json, then config.json (atomically: a staging file, renamed):
    a kill in between leaves inputs.json, and maybe the staging file, but no config.json. The same
    command must then start the run, not refuse the folder as foreign."""
    folder = tmp_path / "killed-before-config"
    folder.mkdir()
    shutil.copy(reference.folder / INPUTS_FILE, folder / INPUTS_FILE)
    config = (reference.folder / "config.json").read_text(encoding="utf-8")
    (folder / ".config.json.k1ll3d00.tmp").write_text(config[: len(config) // 2], encoding="utf-8")
    restart(folder, fault_run, tmp_path / "cache")
    assert_same_run(reference.folder, folder, "killed between inputs.json and config.json")


def test_a_kill_during_an_atomic_rewrite_leaves_no_temp_file_in_the_finished_folder(reference, fault_run, tmp_path):
    """A resume rewrites the logs atomically (staging file, fsync, rename); a kill before the rename
    leaves the staging file beside the log. The next start must not keep it."""
    folder = tmp_path / "killed-mid-rewrite"
    shutil.copytree(reference.folder, folder)
    for name in ("metrics.json", "report.md"):  # killed before the end
        (folder / name).unlink()
    for name in ("items.jsonl", "generations.jsonl"):
        text = (folder / name).read_text(encoding="utf-8")
        (folder / f".{name}.k1ll3d00.tmp").write_text(text[: len(text) // 2], encoding="utf-8")
    restart(folder, fault_run, tmp_path / "cache")
    assert_same_run(reference.folder, folder, "killed during a rewrite of items.jsonl and generations.jsonl")


def test_the_kills_landed_in_real_work(reference, chains):
    """Enough kills, after each start's work began; reported per seed (pytest -s shows it)."""
    for seed, chain in chains.items():
        during_edits = sum(1 for k in chain.kills if not k.metrics_written)
        print(f"\nseed {seed}: {len(chain.kills)} kills in {chain.seconds:.0f} s ({during_edits} before metrics.json); "
              f"(start, delay s, items done): {[(k.start, round(k.delay_s, 3), k.items_done) for k in chain.kills]}")
    total = sum(len(chain.kills) for chain in chains.values())
    assert total >= MIN_KILLS, f"only {total} kills landed in real work (reference: {reference})"
