"""`detoxedit edit`, `detoxedit apply-delta` and `detoxedit chat`: make, share and try a detoxified model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from detoxedit.cli import app
from detoxedit.cli import options as opt
from detoxedit.errors import DetoxeditError

logger = logging.getLogger(__name__)
console = Console()

def parse_item_ref(ref: str) -> tuple[Path, str]:
    """'FILE:ID' -> (file, id); the id is compared as text, so '12' finds id 12."""
    if ":" not in ref:
        raise DetoxeditError(f"--item {ref!r}: expected FILE:ID, e.g. data/safeedit_test.json:12")
    file, item_id = ref.rsplit(":", 1)
    return Path(file), item_id


def find_item(path: Path, item_id: str) -> Any:
    from detoxedit.data import load_safeedit

    if not path.is_file():
        raise DetoxeditError(f"--item: SafeEdit file not found: {path}")
    items = load_safeedit(path)
    for item in items:
        if str(item.id) == item_id:
            return item
    sample = ", ".join(str(i.id) for i in items[:5])
    raise DetoxeditError(f"{path}: no item with id {item_id!r} ({len(items)} items; first ids: {sample})")


@app.command()
def edit(
    item: str = typer.Option(..., "--item", "-i", help="The SafeEdit item to edit on: FILE:ID."),
    save: Path = typer.Option(..., "--save", help="Folder for the detoxified model and its delta (new or empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the whole content of a non-empty --save folder."),
    method: str = typer.Option("dinm", "--method", help="Per-item edit method (e.g. dinm, ft-l)."),
    preset: str = opt.PRESET,
    set_: list[str] = opt.SET_VALUES,
    model: str = opt.MODEL,
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Edit a model on one SafeEdit item and save it as a standard checkpoint plus a small delta."""
    from detoxedit.evaluation.inputs import file_digest
    from detoxedit.methods import PER_ITEM, METHODS
    from detoxedit.models import load_model
    from detoxedit.persist import check_save_folder, save_edited_model
    from detoxedit.provenance import base_identity, edit_entry, edits_summary, new_record
    from detoxedit.settings import resolve_settings

    path, item_id = parse_item_ref(item)
    target = find_item(path, item_id)
    settings = resolve_settings(method, model, preset, set_ or [])
    editor = METHODS.get(settings.method)(settings.config)
    if editor.scope != PER_ITEM:
        raise DetoxeditError(f"--method {settings.method} is fitted on a training set, not edited from one item; "
                             "use `detoxedit run --method ... --train FILE`")
    save = check_save_folder(save, overwrite, inputs=[model, path])
    lm, tokenizer = load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    editor.prepare(lm, tokenizer)
    result = editor.execute(lm, tokenizer, target)
    base = base_identity(model)
    meta = {"base_model": model, "base_model_sha256": base.get("sha256"), "dtype": dtype, "item_file": str(path),
            "item_file_sha256": file_digest(str(path)), "item_id": target.id, "method": settings.method,
            "preset": settings.preset, "method_config": settings.method_config, "info": result.info,
            "made_on_edits": [e.get("delta_sha256") for e in edits_summary(model)]}
    record = new_record(model, edit_entry(result.deltas, meta | {"layer": result.layer}, made_by="edit"))
    save_edited_model(lm, tokenizer, result, save, meta, record)
    _show_edit(result, lm, save)


def _show_edit(result: Any, model: Any, folder: Path) -> None:
    table = Table(title="edit", show_header=False)
    table.add_row("layer", str(result.layer))
    table.add_row("steps", str(len(result.losses)))
    if result.losses:
        table.add_row("loss", f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    for name, change in result.relative_change(model).items():
        table.add_row(f"|delta|/|W| {name}", f"{change:.2e}")
    if "seconds" in result.info:
        table.add_row("time", f"{result.info['seconds']:.1f} s")
    table.add_row("saved to", str(folder))
    console.print(table)


@app.command("apply-delta")
def apply_delta(
    delta: Path = typer.Option(..., "--delta", help="A delta folder (from `edit --save`) or its delta.safetensors."),
    save: Path = typer.Option(..., "--save", help="Folder for the model with the delta applied (new or empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the whole content of a non-empty --save folder."),
    force: bool = typer.Option(False, "--force", help="Apply even if the model already has this delta or the delta "
                               "was made on another base model."),
    model: str = opt.MODEL,
    dtype: str = opt.DTYPE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Apply a saved delta to a base model and save the result as a standard checkpoint with its provenance."""
    from detoxedit.models import load_model
    from detoxedit.persist import apply_deltas, check_deltas, check_save_folder, delta_conflicts, load_delta, save_applied_model
    from detoxedit.provenance import edit_entry, new_record

    deltas, meta = load_delta(delta)
    problems = delta_conflicts(deltas, meta, model)
    if problems and not force:
        raise DetoxeditError("; ".join(problems) + ". Add --force to apply it anyway")
    for problem in problems:
        logger.warning("--force: %s", problem)
    save = check_save_folder(save, overwrite, inputs=[model, delta])
    lm, tokenizer = load_model(model, dtype=dtype, trust_remote_code=trust_remote_code)
    check_deltas(lm, deltas, source=str(delta))
    apply_deltas(lm, deltas)
    record = new_record(model, edit_entry(deltas, meta, made_by="apply-delta"))
    save_applied_model(lm, tokenizer, save, record)
    console.print(f"applied {delta} (item {meta.get('item_id', '?')}, layer {meta.get('layer', '?')}) -> {save}")


@app.command()
def chat(
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="A user message (repeatable); none: interactive."),
    compare: Path = typer.Option(None, "--compare", help="A detoxified model folder to show side by side."),
    model: str = opt.MODEL,
    max_new_tokens: int = opt.MAX_NEW_TOKENS,
    max_input_tokens: int = opt.MAX_INPUT_TOKENS,
    chat_format: str = opt.CHAT_FORMAT,
    system_prompt: str = opt.SYSTEM_PROMPT,
    dtype: str = opt.DTYPE,
    device: str = opt.DEVICE,
    trust_remote_code: bool = opt.TRUST_REMOTE_CODE,
) -> None:
    """Chat with a model; with --compare, original and detoxified replies side by side."""
    from detoxedit.models import load_model

    models = {model: load_model(model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)}
    if compare is not None:
        models[f"{compare} (edited)"] = load_model(str(compare), dtype=dtype, device=device,
                                                   trust_remote_code=trust_remote_code)
    settings = {"max_new_tokens": max_new_tokens, "max_input_tokens": max_input_tokens,
                "chat": chat_format, "system_prompt": system_prompt}
    if prompt:
        _show_replies(models, list(prompt), settings)
        return
    console.print("Interactive chat; an empty line or Ctrl-D ends it.")
    while True:
        try:
            message = console.input("[bold cyan]> [/]")
        except EOFError:
            break
        if not message.strip():
            break
        _show_replies(models, [message], settings)


def _show_replies(models: dict[str, tuple[Any, Any]], prompts: list[str], settings: dict[str, Any]) -> None:
    from detoxedit.models import generate

    replies = {name: generate(lm, tok, prompts, progress=False, **settings) for name, (lm, tok) in models.items()}
    table = Table(show_lines=True)
    table.add_column("prompt", overflow="fold", max_width=40)
    for name in models:
        table.add_column(name, overflow="fold")
    for index, text in enumerate(prompts):
        table.add_row(text, *(replies[name][index] for name in models))
    console.print(table)

