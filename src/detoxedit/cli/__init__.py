"""The `detoxedit` command line: one Typer app; each command group lives in its own module.

User mistakes (`DetoxeditError`) end with a one-line reason on stderr and exit code 2; bugs keep
their traceback. Logging goes through rich; nothing is configured at import time.
"""

from __future__ import annotations

import logging
import sys

import click
import typer
from rich.console import Console
from rich.logging import RichHandler

from detoxedit.errors import DetoxeditError
from detoxedit.files import disk_error_message

app = typer.Typer(
    name="detoxedit",
    help="Detoxify chat LLMs by knowledge editing (SafeEdit, DINM and baselines).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
# Typer >= 0.2x vendors its own click; catch both so usage errors never turn into tracebacks.
_ABORTS = tuple({click.exceptions.Abort, typer.Abort})
_USAGE_ERRORS = tuple({click.ClickException, getattr(typer, "TyperException", click.ClickException)})


def _print_version(value: bool) -> None:
    """Eager --version: prints and exits before any command or logging setup runs."""
    if value:
        from detoxedit import __version__

        typer.echo(f"detoxedit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print detoxedit's version and exit."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


def _register_commands() -> None:
    """Imports the command modules, which add their commands to `app`."""
    from detoxedit.cli import models_cmds  # noqa: F401
    from detoxedit.cli import edit_cmds  # noqa: F401
    from detoxedit.cli import eval_cmds  # noqa: F401
    from detoxedit.cli import build_cmds  # noqa: F401
    from detoxedit.cli import judge_cmds  # noqa: F401
    from detoxedit.cli import analysis_cmds  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `detoxedit` script."""
    _register_commands()
    try:
        result = app(args=argv, standalone_mode=False)
    except _ABORTS:
        err_console.print("aborted")
        return _exit(130)
    except _USAGE_ERRORS as err:
        err.show()
        return _exit(getattr(err, "exit_code", 2))
    except (DetoxeditError, FileNotFoundError) as err:
        return _fail(str(err))
    except OSError as err:  # a full disk or read-only folder met mid-run: one line, not a traceback
        message = disk_error_message(err)
        if message is None:
            raise
        return _fail(message)
    return _exit(result if isinstance(result, int) else 0)


def _fail(message: str) -> int:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return _exit(2)


def _exit(code: int) -> int:
    if __name__ != "__main__":
        sys.exit(code)
    return code
