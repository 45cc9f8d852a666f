"""Per-item DINM + evaluation: a plain reference loop against detoxedit's runner, same outputs, timed.

    .venv/bin/python benchmarks/bench_runner.py [--items 5] [--max-new-tokens 128 600] [--items-long 1]

Way (a), written here as the reference code (EasyEdit) does it, one item at a time: localise with a
whole-model forward; ten Adam steps on the located down-projection, each running the whole model
forwards and backwards on c_edit * NLL(safe reply | adversarial input) + kl_weight * KL over the
knowledge-constraint answer; each of the five inputs generated alone with HF `model.generate`
(greedy); judge; copy the original weight back.
Way (b): detoxedit's `Runner.edits` (DINM with `fast_prefix`, the items' edits generated together in
one batch with per-row deltas, the fast generation engine).

Each (way, max_new_tokens) runs in its own child process, so peak RSS is per way. The parent asserts
that both ways produce the same deltas (float tolerance) and the same greedy replies, and prints the
tables. `--generation` adds a generation-only table (HF batched generate vs detoxedit's engines, back
to back in one process); `--memory-items 20` reports the peak RSS of a 20-item detoxedit run.
`--items 0` / `--items-long 0` / `--memory-items 0` skip those runs. Every argument, the data file and the
judge are checked before the first child starts; each table is printed (and flushed) as its phase ends,
and a phase whose child fails is reported without losing the others (exit 1).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "safeedit" / "safeedit_test_subset_dev.json"
PHASES = ("localise", "edit", "generate", "judge", "restore")
DELTA_RTOL = 1e-3  # ||delta_a - delta_b|| / ||delta_a||; Adam's sign-like first steps amplify float noise

logger = logging.getLogger("bench_runner")


# ---------------------------------------------------------------- shared setup (child processes)


def setup(args: argparse.Namespace, n_items: int, max_new_tokens: int):
    """Model, tokenizer, judge, DINM method, run config and items, identical for both ways."""
    from detoxedit.evaluation.config import RunConfig
    from detoxedit.judges.base import load_judge
    from detoxedit.methods.base import build_method
    from detoxedit.models import load_model
    from detoxedit.runner import load_items
    from detoxedit.settings import resolve_settings

    torch.set_num_threads(args.threads)
    settings = resolve_settings("dinm", "default")
    budget = {"token_budget": args.token_budget} if args.token_budget else {}
    cfg = RunConfig(data=str(args.data), method="dinm", method_config=settings.method_config, preset=settings.preset,
                    limit=n_items, max_new_tokens=max_new_tokens, judge=args.judge, progress=False,
                    items_per_batch=n_items, **budget)
    model, tokenizer = load_model("default")
    method = build_method("dinm", settings.method_config)
    return model, tokenizer, load_judge(args.judge), method, cfg, load_items(cfg)[0]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# ---------------------------------------------------------------- way (a): the plain reference loop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import encode_pair, plain_dinm, plain_locate  # noqa: E402  (the one-screen DINM the unit tests check)


def hf_generate_one(model, tokenizer, ids: list[int], max_new_tokens: int, stops: list[int]) -> list[int]:
    prompt = torch.tensor([ids])
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def way_a(args: argparse.Namespace, n_items: int, max_new_tokens: int) -> dict[str, Any]:
    from detoxedit.methods.base import weight_checksum
    from detoxedit.models import ChatFormat, get_adapter
    from detoxedit.models.generation import decode_reply, stop_token_ids, truncate_left

    model, tok, judge, method, cfg, items = setup(args, n_items, max_new_tokens)
    dcfg = method.config
    for p in model.parameters():
        p.requires_grad_(False)
    edit_fmt, gen_fmt = ChatFormat(tok, dcfg.chat_format), ChatFormat(tok, cfg.chat_format, cfg.system_prompt)
    stops = sorted(stop_token_ids(model, tok))
    params = dict(model.named_parameters())
    phases, replies, deltas, tokens = [], {}, {}, 0
    start_all, cpu_all = time.perf_counter(), time.process_time()
    for item in items:
        clock = _Clock()
        layer = plain_locate(model, edit_fmt, item, dcfg.max_input_tokens)
        clock.lap("localise")
        name = get_adapter(model).down_proj_name(layer)
        before = weight_checksum(params[name])
        edit = encode_pair(edit_fmt, item.adversarial_prompt, item.safe_generation, dcfg.max_input_tokens)
        kl = encode_pair(edit_fmt, item.knowledge_constraint.prompt, item.knowledge_constraint.answer, dcfg.max_input_tokens)
        delta, original = plain_dinm(model, params[name], edit, kl, dcfg)
        clock.lap("edit")
        texts = item.inputs()
        new_ids = [hf_generate_one(model, tok, truncate_left(gen_fmt.encode(t), cfg.max_input_tokens), max_new_tokens, stops)
                   for t in texts.values()]
        clock.lap("generate")
        item_replies = [decode_reply(tok, ids, set(stops)) for ids in new_ids]
        judge.score(item_replies, list(texts.values()))  # with the requests, as the runner judges
        clock.lap("judge")
        with torch.no_grad():
            params[name].copy_(original)  # the reference writes the saved weights back
        if weight_checksum(params[name]) != before:
            raise SystemExit(f"item {item.id}: {name} was not restored")
        clock.lap("restore")
        phases.append(clock.times)
        replies |= {f"{item.id}/{kind}": r for kind, r in zip(texts, item_replies)}
        deltas[str(item.id)] = {name: delta}
        tokens += sum(len(ids) for ids in new_ids)
    return _result("a", items, phases, time.perf_counter() - start_all, time.process_time() - cpu_all, tokens, replies, deltas)


class _Clock:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.times[phase] = now - self._last
        self._last = now


def _result(way, items, phases, total_s, cpu_s, tokens, replies, deltas) -> dict[str, Any]:
    """What a child process hands back; `cpu_s` (process CPU time) is steadier than wall time on a shared CPU."""
    return {"way": way, "n_items": len(items), "phases": phases, "total_s": total_s, "cpu_s": cpu_s, "tokens": tokens,
            "replies": replies, "deltas": deltas, "peak_rss_mb": peak_rss_mb()}


# ---------------------------------------------------------------- way (b): detoxedit's runner


def way_b(args: argparse.Namespace, n_items: int, max_new_tokens: int) -> dict[str, Any]:
    """`Runner.edits` on the same items, instrumented (not changed) to split localise from edit and count tokens."""
    import detoxedit.evaluation.textgen as textgen
    import detoxedit.methods._tuning as tuning
    from detoxedit.runner import Runner

    model, tok, judge, method, cfg, items = setup(args, n_items, max_new_tokens)
    locate_s, tokens, deltas = [], [0], {}
    real_locate, real_generate_ids, real_execute = tuning.locate_toxic_layer, textgen.generate_ids, method.execute

    def timed_locate(*a, **kw):
        start = time.perf_counter()
        found = real_locate(*a, **kw)
        locate_s.append(time.perf_counter() - start)
        return found

    def counted_generate_ids(*a, **kw):
        out = real_generate_ids(*a, **kw)
        tokens[0] += sum(len(ids) for ids in out)
        return out

    def recorded_execute(model_, tok_, item):
        edit = real_execute(model_, tok_, item)
        deltas[str(item.id)] = {k: v.clone() for k, v in edit.deltas.items()}
        return edit

    tuning.locate_toxic_layer, textgen.generate_ids, method.execute = timed_locate, counted_generate_ids, recorded_execute
    with tempfile.TemporaryDirectory() as folder:
        runner = Runner(cfg, Path(folder), model, tok, judge, method)
        start, cpu = time.perf_counter(), time.process_time()
        runner.edits(items)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        logged = runner.items_log.read()
        replies = {f"{r['item_id']}/{r['kind']}": r["reply"] for r in runner.generations.read() if r["variant"] == "edited"}
    phases = []
    for record, localise in zip(logged, locate_s):
        t = record["time_s"]
        phases.append({"localise": localise, "edit": t["execute"] - localise, "generate": t["generate"],
                       "judge": t["judge"], "restore": t["restore"]})
    return _result("b", items, phases, total, cpu, tokens[0], replies, deltas)


# ---------------------------------------------------------------- generation only (one process, back to back)


def generation_only(args: argparse.Namespace, max_new_tokens: int) -> list[dict[str, Any]]:
    """HF batched `generate` vs detoxedit's simple and fast engines on the same dev prompts, same process."""
    from detoxedit.data import load_safeedit
    from detoxedit.models import ChatFormat, load_model
    from detoxedit.models.generation import Batching, FastEngine, SimpleEngine, generate_ids, stop_token_ids, truncate_left

    torch.set_num_threads(args.threads)
    model, tok = load_model("default")
    items = load_safeedit(args.data)
    fmt = ChatFormat(tok)
    texts = [t for item in items for t in item.inputs().values()][: args.gen_rows]
    encoded = [truncate_left(fmt.encode(t), 1024) for t in texts]
    stops = sorted(stop_token_ids(model, tok))
    rows, outputs = [], {}
    for variant in args.gen_variants:
        start, cpu = time.perf_counter(), time.process_time()
        if variant == "hf":
            out = _hf_batched(model, tok, encoded, max_new_tokens, stops)
        elif variant == "fast-bf16":  # an experiment, not a detoxedit option: weights and activations in bfloat16
            bf16 = copy.deepcopy(model).to(torch.bfloat16)
            start, cpu = time.perf_counter(), time.process_time()  # the copy is not generation time
            out = generate_ids(bf16, tok, encoded, max_new_tokens, progress=False, engine=FastEngine())
            del bf16
        elif variant == "fast-noshare":  # the fast engine with every prompt prefilled in full
            out = generate_ids(model, tok, encoded, max_new_tokens, progress=False,
                               batching=Batching(share_prefixes=False))
        else:
            engine = {"fast": FastEngine(), "simple": SimpleEngine()}[variant]
            out = generate_ids(model, tok, encoded, max_new_tokens, progress=False, engine=engine)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        outputs[variant] = [_cut(ids, set(stops)) for ids in out]
        n = sum(len(ids) for ids in outputs[variant])
        first = outputs[args.gen_variants[0]]
        rows.append({"variant": variant, "seconds": seconds, "cpu_s": cpu, "tokens": n, "tok_s": n / seconds,
                     "prompt_tokens": sum(map(len, encoded)), "rows": len(encoded),
                     "same_rows": sum(x == y for x, y in zip(outputs[variant], first))})
    return rows


def _hf_batched(model, tok, encoded, max_new_tokens, stops) -> list[list[int]]:
    width = max(map(len, encoded))
    pad = tok.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=stops, pad_token_id=pad)
    return out[:, width:].tolist()


def _cut(ids: list[int], stops: set[int]) -> list[int]:
    """Ids up to and including the first stop token (HF pads finished rows after it)."""
    for position, token in enumerate(ids):
        if token in stops:
            return ids[: position + 1]
    return ids


# ---------------------------------------------------------------- parent: run children, compare, print


def run_child(args: argparse.Namespace, worker: str, n_items: int, max_new_tokens: int, folder: Path) -> dict[str, Any]:
    out = folder / f"{worker}-{n_items}-{max_new_tokens}.pt"
    command = [sys.executable, __file__, "--worker", worker, "--worker-items", str(n_items),
               "--worker-tokens", str(max_new_tokens), "--worker-out", str(out), "--data", str(args.data),
               "--judge", args.judge, "--threads", str(args.threads), "--gen-rows", str(args.gen_rows),
               "--gen-variants", *args.gen_variants, *(["--token-budget", str(args.token_budget)] if args.token_budget else [])]
    logger.info("running %s", " ".join(command[2:]))
    subprocess.run(command, check=True)
    return torch.load(out, weights_only=False)


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences between the two ways: deltas beyond DELTA_RTOL, replies not identical."""
    problems = []
    for item_id, deltas in a["deltas"].items():
        other = b["deltas"].get(item_id, {})
        if set(deltas) != set(other):
            problems.append(f"item {item_id}: edited {sorted(deltas)} vs {sorted(other)}")
            continue
        for name, delta in deltas.items():
            rel = float((delta - other[name]).norm() / delta.norm().clamp_min(1e-12))
            if rel > DELTA_RTOL:
                problems.append(f"item {item_id}: {name} deltas differ, relative {rel:.2e}")
    for key, reply in a["replies"].items():
        if b["replies"].get(key) != reply:
            problems.append(f"reply {key} differs:\n  (a) {reply[:160]!r}\n  (b) {b['replies'].get(key, '')[:160]!r}")
    return problems


def delta_agreement(a: dict[str, Any], b: dict[str, Any]) -> float:
    rels = [float((d - b["deltas"][i][n]).norm() / d.norm().clamp_min(1e-12))
            for i, ds in a["deltas"].items() for n, d in ds.items() if n in b["deltas"].get(i, {})]
    return max(rels) if rels else float("nan")


def summary_table(max_new_tokens: int, a: dict[str, Any], b: dict[str, Any], problems: list[str], threads: int,
                  load: float):
    from rich.table import Table

    table = Table(title=f"per item, median s (max_new_tokens={max_new_tokens}, {a['n_items']} items, "
                        f"{threads} threads, 1-min load average {load:.1f} before the run)")
    for column in ("phase", "(a) reference", "(b) detoxedit", "speed-up (a)/(b)"):
        table.add_column(column, justify="right")
    for phase in PHASES:
        ta, tb = (statistics.median(p[phase] for p in r["phases"]) for r in (a, b))
        table.add_row(phase, f"{ta:.2f}", f"{tb:.2f}", f"{ta / tb:.1f}x" if tb > 0 else "-")
    ea, eb = a["total_s"] / a["n_items"], b["total_s"] / b["n_items"]
    table.add_row("end-to-end / item", f"{ea:.2f}", f"{eb:.2f}", f"{ea / eb:.1f}x", style="bold")
    ca, cb = a["cpu_s"] / a["n_items"], b["cpu_s"] / b["n_items"]
    table.add_row("end-to-end CPU s / item", f"{ca:.2f}", f"{cb:.2f}", f"{ca / cb:.1f}x")
    ga, gb = (r["tokens"] / sum(p["generate"] for p in r["phases"]) for r in (a, b))
    table.add_row("generation tok/s", f"{ga:.1f}", f"{gb:.1f}", f"{gb / ga:.1f}x")
    table.add_row("generated tokens", str(a["tokens"]), str(b["tokens"]), "")
    table.add_row("peak RSS MB", f"{a['peak_rss_mb']:.0f}", f"{b['peak_rss_mb']:.0f}", "")
    table.add_row("max rel. delta diff", f"{delta_agreement(a, b):.1e}", "", "")
    table.add_row("identical replies", f"{len(a['replies']) - sum('reply' in p for p in problems)}/{len(a['replies'])}", "", "")
    return table


def generation_table(max_new_tokens: int, rows: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=f"generation only: {rows[0]['rows']} dev prompts ({rows[0]['prompt_tokens']} prompt tokens), "
                        f"max_new_tokens={max_new_tokens}, one process, back to back")
    for column in ("variant", "wall s", "CPU s", "new tokens", "tok/s (wall)", "tok / CPU s", "rows identical to first"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["variant"], f"{row['seconds']:.1f}", f"{row['cpu_s']:.1f}", str(row["tokens"]),
                      f"{row['tok_s']:.1f}", f"{row['tokens'] / row['cpu_s']:.1f}", f"{row['same_rows']}/{row['rows']}")
    return table


GEN_VARIANTS = ("hf", "simple", "fast", "fast-noshare", "fast-bf16")
LONG_TOKENS = 128  # comparisons above this many new tokens use --items-long items


def count(text: str) -> int:
    """argparse type: an integer >= 0 (0 skips what it counts)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=count, default=5,
                        help=f"items per comparison at max_new_tokens <= {LONG_TOKENS}; 0 skips those comparisons")
    parser.add_argument("--items-long", type=count, default=1,
                        help=f"items per comparison above {LONG_TOKENS} new tokens (way (a) at 600 tokens takes "
                             "minutes per item); 0 skips those comparisons")
    parser.add_argument("--max-new-tokens", type=positive, nargs="+", default=[128, 600])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SafeEdit dev file (read, never copied)")
    parser.add_argument("--judge", default="embedded")
    parser.add_argument("--threads", type=positive, default=2)
    parser.add_argument("--token-budget", type=positive, default=None,
                        help="the runner's generation token budget (default: RunConfig's)")
    parser.add_argument("--memory-items", type=count, default=20, help="items of the detoxedit memory run; 0 skips it")
    parser.add_argument("--generation", action="store_true", help="also time generation alone (HF vs engines)")
    parser.add_argument("--gen-rows", type=positive, default=32)
    parser.add_argument("--gen-variants", nargs="+", default=["hf", "simple", "fast"], choices=GEN_VARIANTS,
                        help="hf | simple | fast | fast-noshare (no shared prompt prefixes) | "
                             "fast-bf16 (an experiment: the fast engine on a bfloat16 copy)")
    parser.add_argument("--skip-protocol", action="store_true", help="only the generation and memory checks")
    parser.add_argument("--worker", choices=["a", "b", "gen"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, all checked before any work: a bad one found after a finished comparison wastes minutes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.worker:  # the parent checked what it hands its children
        check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits with a usage error (code 2) unless there is work to do and its data file and judge load."""
    if not comparisons(args) and not args.generation and not args.memory_items:
        parser.error("nothing to run: every comparison has 0 items (--items, --items-long, --skip-protocol), "
                     "no --generation and --memory-items 0")
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    from detoxedit.data import load_safeedit
    from detoxedit.errors import DetoxeditError
    from detoxedit.judges.base import load_judge

    try:
        load_safeedit(args.data)
        load_judge(args.judge)
    except DetoxeditError as err:
        parser.error(str(err))


def comparisons(args: argparse.Namespace) -> list[tuple[int, int]]:
    """(max_new_tokens, items) of each (a)-vs-(b) comparison to run; 0 items skips a comparison."""
    if args.skip_protocol:
        return []
    planned = [(tokens, args.items if tokens <= LONG_TOKENS else args.items_long) for tokens in args.max_new_tokens]
    return [(tokens, n) for tokens, n in planned if n > 0]


def run_comparison(args, console, folder: Path, max_new_tokens: int, n: int) -> list[str]:
    """Ways (a) and (b) on the same items; prints their table and returns the mismatches."""
    load = os.getloadavg()[0]  # other work on the cores makes wall times longer; CPU s suffer less
    a, b = (run_child(args, way, n, max_new_tokens, folder) for way in ("a", "b"))
    problems = compare(a, b)
    console.print(summary_table(max_new_tokens, a, b, problems, args.threads, load))
    for problem in problems:
        console.print(f"[red]MISMATCH[/red] ({max_new_tokens} tokens) {problem}")
    return problems


def run_generation(args, console, folder: Path, max_new_tokens: int) -> list[str]:
    gen = run_child(args, "gen", 0, max_new_tokens, folder)
    console.print(generation_table(max_new_tokens, gen["rows"]))
    return []


def run_memory(args, console, folder: Path) -> list[str]:
    m = run_child(args, "b", args.memory_items, LONG_TOKENS, folder)
    console.print(f"memory: detoxedit run of {args.memory_items} items at {LONG_TOKENS} new tokens: peak RSS "
                  f"{m['peak_rss_mb']:.0f} MB ({'under' if m['peak_rss_mb'] < 3072 else 'OVER'} 3 GB); "
                  f"{m['total_s'] / args.memory_items:.1f} s/item")
    return []


def phases(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(name, function of console and folder) for each phase, in the order they run."""
    planned = dict(comparisons(args))
    steps = []
    for tokens in args.max_new_tokens:
        if args.generation:
            steps.append((f"generation at {tokens} new tokens", lambda c, f, t=tokens: run_generation(args, c, f, t)))
        if tokens in planned:
            steps.append((f"comparison at {tokens} new tokens ({planned[tokens]} items)",
                          lambda c, f, t=tokens: run_comparison(args, c, f, t, planned[t])))
    if args.memory_items:
        steps.append((f"memory run ({args.memory_items} items)", lambda c, f: run_memory(args, c, f)))
    return steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.worker:
        runners = {"a": way_a, "b": way_b, "gen": lambda a, n, t: {"rows": generation_only(a, t), "peak_rss_mb": peak_rss_mb()}}
        torch.save(runners[args.worker](args, args.worker_items, args.worker_tokens), args.worker_out)
        return 0
    from rich.console import Console

    console, failures, broken = Console(width=150), [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, step in phases(args):
            try:
                failures += step(console, Path(tmp))
            except subprocess.CalledProcessError as err:  # one phase's crash must not lose the others' tables
                console.print(f"[red]{name} failed[/red]: its child process exited with {err.returncode} (log above)")
                broken.append(name)
            sys.stdout.flush()  # each finished table reaches the terminal or file now
    if failures:
        console.print(f"[red]{len(failures)} mismatches between (a) and (b)[/red]")
    if broken:
        console.print(f"[red]{len(broken)} phase(s) failed: {'; '.join(broken)}[/red]")
    return 1 if failures or broken else 0


if __name__ == "__main__":
    sys.exit(main())
