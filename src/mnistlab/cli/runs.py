"""``mnistlab runs``: the run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import console, handle_errors
from mnistlab.runs import list_runs

runs_app = typer.Typer(help="Inspect training runs.", no_args_is_help=True)


@runs_app.command("list")
@handle_errors
def list_cmd(
    root: Annotated[
        Path | None,
        typer.Option(
            envvar="MNISTLAB_RUNS", help="Runs root. [default: ./runs]", show_default=False
        ),
    ] = None,
) -> None:
    """Show every run: model, dataset, test accuracy, training time, date."""
    rows = list_runs(root)
    table = Table(title=f"runs in {escape(str(root or 'runs'))}", title_justify="left")
    for column in ("run", "model", "dataset", "accuracy", "train s", "created"):
        table.add_column(column, justify="right" if column in ("accuracy", "train s") else "left")
    for r in rows:
        table.add_row(
            escape(r.path.name),
            escape(r.model),
            escape(r.dataset),
            f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-",
            f"{r.train_seconds:.2f}" if r.train_seconds is not None else "-",
            escape(r.created[:19].replace("T", " ")),
        )
    console.print(table if rows else "no runs yet: `mnistlab train` makes one")
