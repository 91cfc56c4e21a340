"""Shared pieces of the command line: the console, error handling, common options."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mnistlab.errors import MnistlabError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="MNISTLAB_HOME",
        help="Cache root for datasets. [default: the user cache directory, e.g. ~/.cache/mnistlab]",
        show_default=False,
    ),
]


def setup_logging(verbose: bool = False) -> None:
    """Send mnistlab's log records (retries, mirror failures) to stderr through rich."""
    logger = logging.getLogger("mnistlab")
    logger.handlers[:] = [RichHandler(console=err_console, show_time=False, show_path=False)]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def handle_errors(fn: F) -> F:
    """Turn mnistlab's errors into a clear message and exit status 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MnistlabError as exc:
            # Messages hold user paths and data: print them literally, never as rich markup.
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
            if exc.hint:
                err_console.print(f"[bold]hint:[/] {escape(exc.hint)}", highlight=False)
            raise typer.Exit(1) from None
        except OSError as exc:  # permissions, full disk, ...: not a bug, a fixable situation
            where = f" ({exc.filename})" if exc.filename else ""
            detail = escape(f"{exc.strerror or exc}{where}")
            err_console.print(f"[bold red]error:[/] {detail}", highlight=False)
            err_console.print(
                "[bold]hint:[/] check that the path exists and is writable, and that the disk "
                "has space; --home DIR (or MNISTLAB_HOME) moves the cache",
                highlight=False,
            )
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]
