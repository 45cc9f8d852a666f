"""`detoxedit generate` and `detoxedit info`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from detoxedit.cli import app
from detoxedit.cli import options as opt
from detoxedit.errors import DetoxeditError
from detoxedit.files import atomic_write_text, read_text_file

console = Console()


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line (.txt), or `{"prompt": ...}` / `{"text": ...}` per line (.jsonl)."""
    if not path.is_file():
        raise DetoxeditError(f"prompt file not found: {path}")
    lines = [line for line in read_text_file(path, "prompt file").splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            prompts.append(record["prompt"] if "prompt" in record else record["text"])
        except (ValueError, KeyError, TypeError) as err:
            raise DetoxeditError(f"{path}:{number}: expected a JSON object with 'prompt' or 'text' ({err})") from err
    return prompts


@app.command()
def generate(
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="A user message (repeatable)."),
    file: Path = typer.Option(None, "--file", "-f", help="Prompts: one per line (.txt) or JSONL with 'prompt'."),
    model: str = opt.MODEL,
    max_new_tokens: int = opt.MAX_NEW_TOKENS,
    max_input_tokens: int = opt.MAX_INPUT_TOKENS,
    chat_format: str = opt.CHAT_FORMAT,
    system_prompt: str = opt.SYSTEM_PROMPT,
    token_budget: int = opt.TOKEN_BUDGET,
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, help="Sampling temperature (with --sample)."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling mass (with --sample)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    output: Path = typer.Option(None, "--output", "-o", help="Also write {prompt, reply} JSONL here."),
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Generate replies (greedy unless --sample) for prompts given inline or in a file."""
    from detoxedit.models import Batching, Sampling, generate as run_generation, load_model

    prompts = list(prompt or []) + (read_prompt_file(file) if file else [])
    if not prompts:
        raise DetoxeditError("no prompts: give --prompt TEXT or --file FILE")
    if max_new_tokens < 1:
        raise DetoxeditError("--max-new-tokens must be at least 1")
    lm, tokenizer = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    replies = run_generation(
        lm, tokenizer, prompts, max_new_tokens,
        chat=chat_format, system_prompt=system_prompt, max_input_tokens=max_input_tokens,
        sampling=Sampling(sample, temperature, top_p, seed), batching=Batching(token_budget),
    )
    for text, reply in zip(prompts, replies):
        console.print(f"[bold cyan]> {text}[/]", highlight=False)
        console.print(reply, highlight=False, markup=False)
        console.print()
    if output:
        atomic_write_text(output, "".join(json.dumps({"prompt": text, "reply": reply}, ensure_ascii=False) + "\n"
                                          for text, reply in zip(prompts, replies)))


@app.command()
def info(
    model: str = opt.MODEL,
    dtype: str = opt.DTYPE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Show a model's size, layers, chat format and the adapter's module mapping."""
    from detoxedit.models import ChatFormat, get_adapter, load_model

    lm, tokenizer = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    adapter = get_adapter(lm)
    table = Table(title=f"detoxedit info: {model}", show_header=False)
    table.add_row("class", type(lm).__name__)
    table.add_row("parameters", f"{sum(p.numel() for p in lm.parameters()):,}")
    table.add_row("dtype", str(next(lm.parameters()).dtype))
    table.add_row("layers", str(adapter.num_layers))
    table.add_row("hidden size", str(adapter.hidden_size))
    table.add_row("MLP d_ff", str(adapter.down_proj(0).in_features))
    table.add_row("chat format (auto)", ChatFormat(tokenizer).resolved_mode)
    for key, value in adapter.describe().items():
        if key not in ("model_class", "num_layers"):
            table.add_row(f"adapter.{key}", str(value))
    console.print(table)
