"""Options shared by several commands, declared once (each command lists the ones it takes)."""

from __future__ import annotations

import typer

# -- the model
MODEL = typer.Option("default", "--model", "-m", help="'default' (embedded SmolLM2-135M-Instruct), 'gemma3-270m' "
                     "(embedded Gemma-3-270M base), a hub id, a local dir or a .gguf file.")
DTYPE = typer.Option("float32", help="Weights dtype: float32, bfloat16 or float16.")
DEVICE = typer.Option("cpu", help="Torch device, e.g. cpu or cuda:0.")
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Allow the model's own Python code (off by default).")

# -- generation
MAX_NEW_TOKENS = typer.Option(128, help="New tokens per reply.")
MAX_INPUT_TOKENS = typer.Option(1024, help="Longer prompts keep their last tokens.")
CHAT_FORMAT = typer.Option("auto", help="auto | template | plain | raw (see docs: chat formats).")
SYSTEM_PROMPT = typer.Option(None, help="Optional system prompt.")
TOKEN_BUDGET = typer.Option(24_576, help="Max KV cache positions per generation batch (rows x (prompt + new tokens), "
                                           "summed over the cache's tiers of similar prompt lengths).")

# -- a method and its settings
PRESET = typer.Option(None, help="Preset name or YAML file (default: the shipped preset whose model is --model, "
                                  "if any); gives generation settings and the method's hyperparameters.")
SET_VALUES = typer.Option(None, "--set", help="Override a method setting: key=value (repeatable); values are read "
                                               "as YAML and checked against the setting's type.")

# -- judging
JUDGE = typer.Option("embedded", "--judge", "-j", help="Safety judge: embedded, embedded:DIR, refusal or hf:PATH_OR_ID.")
THRESHOLD = typer.Option(None, help="Judge score at or above which a reply is unsafe (default: the judge's own).")
JUDGE_ERRORS = typer.Option(None, "--judge-errors", help="The judge's measured error counts (JSON from `detoxedit judge eval "
                            "--errors-out`); DS/DG are then also given corrected for them. Default: the rates the judge "
                            "ships (the embedded judge has them), else no correction.")

# -- evaluation runs
DATA = typer.Option(..., "--data", "-d", help="SafeEdit file (JSON list or JSONL) or hf:<dataset>:<split>.")
OUT = typer.Option(..., "--out", "-o", help="Run folder (re-running the same command resumes it).")
OVERWRITE = typer.Option(False, "--overwrite", help="Discard an existing run in --out.")
LIMIT = typer.Option(None, help="A seeded random sample of this many items (file order kept).")
SEED = typer.Option(0, help="Seed of the samples (items, TriviaQA, XSum).")
CATEGORY = typer.Option(None, "--category", help="Keep only this unsafety category (repeatable).")
ATTACK = typer.Option(None, "--attack", help="Keep only this attack name (repeatable).")
RUN_MAX_NEW_TOKENS = typer.Option(None, "--max-new-tokens", help="New tokens per reply (default: the preset's, else 128).")
RUN_MAX_INPUT_TOKENS = typer.Option(None, "--max-input-tokens",
                                    help="Longer prompts keep their last tokens (default: the preset's, else 1024).")
GENERAL = typer.Option(False, "--general", help="Also measure KQA (TriviaQA) and Csum (XSum).")
TRIVIAQA = typer.Option(None, help="TriviaQA file for --general.")
XSUM = typer.Option(None, help="XSum file for --general.")
N_TRIVIAQA = typer.Option(200, help="TriviaQA questions for KQA.")
N_XSUM = typer.Option(100, help="XSum articles for Csum.")
OVERREFUSAL = typer.Option("builtin", "--overrefusal", help="Over-refusal prompts (harmless requests that sound "
                           "harmful): builtin (the project's own set), an XSTest-format CSV (its safe prompts), or none.")
N_OVERREFUSAL = typer.Option(None, "--n-overrefusal", help="A seeded sample of this many over-refusal prompts (default: all).")
ITEMS_PER_BATCH = typer.Option(8, help="Items whose edits are generated together in one batch.")
NO_REPORT = typer.Option(False, "--no-report", help="Skip report.md.")
