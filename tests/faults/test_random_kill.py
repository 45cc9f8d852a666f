"""kill -9 at random points of a run, restart the same command, and the finished folder equals an uninterrupted run.

One reference run goes through uninterrupted. For each seed, a chain runs the same command into
a new folder (with its own generation cache, so the killed runs really generate): each start
waits until the run's real work begins (config.json written, after imports and model loading),
sleeps a delay drawn from the seed's RNG within the work the reference took for what is left, and
SIGKILLs the process; after KILLS_PER_CHAIN kills the next start runs to the end. The finished
folder must then hold the same records as the reference, item by item, and nothing else (no temp
files, no pending edits). Three kill points only milliseconds wide are planted instead of hit.

Everything runs in subprocesses, two at a time (each single-threaded); most of the time is
Python importing torch + transformers at each of ~30 starts: about 2.5 minutes on two idle CPU
cores, more on a busy machine.
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
    delay_s: float  # after its work began (or, in the report, after it wrote metrics.json)
    items_done: int  # complete item records on disk just before the kill
    in_report: bool  # this start had written metrics.json: the kill hit the report, not the edits


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
    metrics_time: float  # ... until metrics.json was written
    report_time: float  # ... until report.md was written

    def window(self, items_done: int) -> float:
        """How long after its work begins a start that finds `items_done` items finished may be killed:
        within its remaining edits (a delay drawn over the whole run would mostly land in the report,
        the edits being the shorter part), or, with none left, within the metrics and report."""
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


def _wait_for_write(proc: subprocess.Popen, path: Path, before: tuple[int, int] | None, log: Path | None = None) -> bool:
    """Waits until this start (re)writes `path` (or, with `log`, logs that it runs); False when the
    process exits first. config.json is written once imports and model loading are done."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        stamp = _stamp(path)
        if stamp is not None and stamp != before:
            return True
        if log is not None and b" run into " in log.read_bytes():
            return True
        time.sleep(0.002)
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


def _exit_code(proc: subprocess.Popen) -> int:
    """Waits for the process; one that hangs is killed (and the test fails on its exit code)."""
    try:
        return proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -1


def run_reference(root: Path, fault_run) -> Reference:
    folder, log = root / "reference", root / "reference.log"
    argv, env = fault_run(folder, root / "cache-reference")
    proc = _start(argv, env, log)
    _wait_for_write(proc, folder / "config.json", None, log)
    began = time.monotonic()
    item_times, metrics_time = [0.0], None
    while proc.poll() is None and not (folder / "report.md").is_file() and time.monotonic() < began + RUN_TIMEOUT_S:
        while _items_done(folder) >= len(item_times):
            item_times.append(time.monotonic() - began)
        if metrics_time is None and (folder / "metrics.json").is_file():
            metrics_time = time.monotonic() - began
        time.sleep(0.002)
    report_time = time.monotonic() - began
    rc = _exit_code(proc)
    assert rc == 0, f"reference run exited {rc}:\n{_tail(log)}"
    return Reference(folder, item_times, metrics_time or report_time, report_time)


def run_chain(seed: int, root: Path, fault_run, reference: Reference) -> Chain:
    """Starts the command, SIGKILLs it at a random point of its work, restarts; the last start runs to the end.

    Each kill lands in the edits (see `Reference.window`), except the last, which waits for the
    start to write metrics.json and lands in the report (figures, report.md, pending/ removed).
    """
    rng = random.Random(seed)
    chain = Chain(seed, root / f"killed-{seed}")
    argv, env = fault_run(chain.folder, root / f"cache-{seed}")
    began = time.monotonic()
    for start in range(KILLS_PER_CHAIN + 1):
        log = root / f"killed-{seed}.start{start}.log"
        config, metrics = chain.folder / "config.json", chain.folder / "metrics.json"
        before, metrics_before, done = _stamp(config), _stamp(metrics), _items_done(chain.folder)
        proc = _start(argv, env, log)
        kill = None
        in_report = start == KILLS_PER_CHAIN - 1
        if start < KILLS_PER_CHAIN and _wait_for_write(proc, config, before, log) and (
                not in_report or _wait_for_write(proc, metrics, metrics_before)):
            window = reference.report_time - reference.metrics_time if in_report else reference.window(done)
            delay = rng.uniform(0.0, max(window, 0.05))
            time.sleep(delay)
            kill = Kill(start, delay, _items_done(chain.folder), _stamp(metrics) != metrics_before)
            os.kill(proc.pid, signal.SIGKILL)  # a zombie (already exited) ignores it; its exit code tells
        rc = _exit_code(proc)
        if rc == -signal.SIGKILL and kill is not None:
            chain.kills.append(kill)
            continue
        if rc != 0:
            chain.error = (f"seed {seed}, start {start} (after kills at {[round(k.delay_s, 3) for k in chain.kills]} s "
                           f"into work) exited {rc}:\n{_tail(log)}")
        break
    chain.seconds = time.monotonic() - began
    return chain


# Kill points a few milliseconds wide, which random kills reach only now and then: each `plant_*`
# builds the folder such a kill leaves (from the reference's own files); one start must finish it.


def plant_before_config(reference: Reference, folder: Path) -> None:
    """The first start writes inputs.json, then config.json (atomically: a staging file, renamed):
    a kill in between leaves inputs.json, and maybe the staging file, but no config.json."""
    folder.mkdir()
    shutil.copy(reference.folder / INPUTS_FILE, folder / INPUTS_FILE)
    config = (reference.folder / "config.json").read_text(encoding="utf-8")
    (folder / ".config.json.k1ll3d00.tmp").write_text(config[: len(config) // 2], encoding="utf-8")


def plant_mid_rewrite(reference: Reference, folder: Path) -> None:
    """A resume rewrites the logs atomically (staging file, fsync, rename); a kill before the rename
    leaves the staging file beside the log, and the run has no metrics or report yet."""
    shutil.copytree(reference.folder, folder)
    for name in ("metrics.json", "report.md"):
        (folder / name).unlink()
    for name in ("items.jsonl", "generations.jsonl"):
        text = (folder / name).read_text(encoding="utf-8")
        (folder / f".{name}.k1ll3d00.tmp").write_text(text[: len(text) // 2], encoding="utf-8")


def plant_mid_batch(reference: Reference, folder: Path) -> None:
    """Items are evaluated --items-per-batch at a time and written one by one: a kill between two
    writes leaves half a batch, so the resumed run batches the rest differently from the reference
    (its items' edits are generated beside other items' edits): the replies must not change."""
    shutil.copytree(reference.folder, folder)
    for name in ("metrics.json", "report.md"):
        (folder / name).unlink()
    items = read_records(folder / "items.jsonl")
    kept = {str(r["item_id"]) for r in items[:3]}
    replies = [r for r in read_records(folder / "generations.jsonl") if r["variant"] == "vanilla" or str(r["item_id"]) in kept]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items[:3]), encoding="utf-8")
    (folder / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies), encoding="utf-8")


PLANTED = {"killed-before-config": plant_before_config, "killed-mid-rewrite": plant_mid_rewrite,
           "killed-mid-batch": plant_mid_batch}


def run_planted(name: str, root: Path, fault_run, reference: Reference) -> tuple[Path, str | None]:
    """Plants the folder `name`, runs the command into it to the end; returns the folder and, if the
    start failed, its exit code and stderr."""
    folder, log = root / name, root / f"{name}.log"
    PLANTED[name](reference, folder)
    argv, env = fault_run(folder, root / f"cache-{name}")
    rc = _exit_code(_start(argv, env, log))
    return folder, None if rc == 0 else f"the start into the {name} folder exited {rc}:\n{_tail(log)}"


@dataclass
class Runs:
    chains: dict[int, Chain]
    planted: dict[str, tuple[Path, str | None]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fault_run) -> Reference:
    return run_reference(tmp_path_factory.mktemp("reference"), fault_run)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fault_run, reference) -> Runs:
    """Every chain and planted folder, run WORKERS at a time (each process is single-threaded)."""
    root = tmp_path_factory.mktemp("killed")
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        chains = {seed: pool.submit(run_chain, seed, root, fault_run, reference) for seed in SEEDS}
        planted = {name: pool.submit(run_planted, name, root, fault_run, reference) for name in PLANTED}
        return Runs({k: f.result() for k, f in chains.items()}, {k: f.result() for k, f in planted.items()})


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


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_and_resumed_run_equals_the_uninterrupted_run(seed, reference, runs):
    chain = runs.chains[seed]
    assert chain.error is None, chain.error
    where = f"seed {seed}, kills (start, s into work, items done) " \
            f"{[(k.start, round(k.delay_s, 3), k.items_done) for k in chain.kills]}"
    assert_same_run(reference.folder, chain.folder, where)


def test_a_kill_between_the_first_starts_inputs_and_config_does_not_block_the_restart(reference, runs):
    """See `plant_before_config`: the same command must then start the run, not refuse the folder as foreign."""
    folder, error = runs.planted["killed-before-config"]
    assert error is None, error
    assert_same_run(reference.folder, folder, "killed between inputs.json and config.json")


def test_a_kill_during_an_atomic_rewrite_leaves_no_temp_file_in_the_finished_folder(reference, runs):
    """See `plant_mid_rewrite`: the next start must finish the run and not keep the staging files."""
    folder, error = runs.planted["killed-mid-rewrite"]
    assert error is None, error
    assert_same_run(reference.folder, folder, "killed during a rewrite of items.jsonl and generations.jsonl")


def test_a_kill_between_two_items_of_a_batch_changes_no_reply(reference, runs):
    """See `plant_mid_batch`."""
    folder, error = runs.planted["killed-mid-batch"]
    assert error is None, error
    assert_same_run(reference.folder, folder, "killed after item 3 of 8 (--items-per-batch 2)")


def test_the_kills_landed_in_real_work(reference, runs):
    """Enough kills, after each start's work began; reported per seed (pytest -s shows it)."""
    for seed, chain in runs.chains.items():
        in_report = sum(1 for k in chain.kills if k.in_report)
        print(f"\nseed {seed}: {len(chain.kills)} kills in {chain.seconds:.0f} s ({in_report} in the report); "
              f"(start, delay s, items done): {[(k.start, round(k.delay_s, 3), k.items_done) for k in chain.kills]}")
    print(f"reference: items at {[round(t, 2) for t in reference.item_times]} s, metrics at "
          f"{reference.metrics_time:.2f} s, report at {reference.report_time:.2f} s after its work began")
    total = sum(len(chain.kills) for chain in runs.chains.values())
    assert total >= MIN_KILLS, f"only {total} kills landed in real work (reference: {reference})"
