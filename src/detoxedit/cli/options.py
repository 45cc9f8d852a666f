"""Options shared by several commands, declared once."""

from __future__ import annotations

import typer

MODEL = typer.Option("default", "--model", "-m", help="'default' (embedded SmolLM2-135M-Instruct), a hub id, a local dir or a .gguf file.")
DTYPE = typer.Option("float32", help="Weights dtype: float32, bfloat16 or float16.")
DEVICE = typer.Option("cpu", help="Torch device, e.g. cpu or cuda:0.")
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Allow the model's own Python code (off by default).")
MAX_NEW_TOKENS = typer.Option(128, help="New tokens per reply.")
MAX_INPUT_TOKENS = typer.Option(1024, help="Longer prompts keep their last tokens.")
CHAT_FORMAT = typer.Option("auto", help="auto | template | plain | raw (see docs: chat formats).")
SYSTEM_PROMPT = typer.Option(None, help="Optional system prompt.")
TOKEN_BUDGET = typer.Option(24_576, help="Max KV cache positions per generation batch (rows x (prompt + new tokens), "
                                           "summed over the cache's tiers of similar prompt lengths).")
