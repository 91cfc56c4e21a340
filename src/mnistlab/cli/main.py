"""Entry point of the ``mnistlab`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from mnistlab import __version__
from mnistlab.cli import generation as generation_commands
from mnistlab.cli import pretraining as pretraining_commands
from mnistlab.cli import robustness as robustness_commands
from mnistlab.cli import shipping as shipping_commands
from mnistlab.cli import sweep as sweep_commands
from mnistlab.cli import train as train_commands
from mnistlab.cli.common import console, refresh_width, setup_logging
from mnistlab.cli.data import data_app
from mnistlab.cli.models import models_app
from mnistlab.cli.runs import runs_app

app = typer.Typer(
    name="mnistlab",
    help="Develop and fine-tune models from zero on MNIST and its family.\n\n"
    "Start with `mnistlab data fetch mnist`, `mnistlab data show mnist` and `mnistlab train`.",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data_app, name="data")
app.add_typer(runs_app, name="runs")
app.add_typer(models_app, name="models")
train_commands.register(app)
shipping_commands.register(app)
pretraining_commands.register(app)
generation_commands.register(app)
robustness_commands.register(app)
sweep_commands.register(app)


def _version(value: bool) -> None:
    if value:
        console.print(f"mnistlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log what mnistlab does (mirrors, retries).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    refresh_width()
    setup_logging(verbose)


def main() -> None:
    """Run the ``mnistlab`` command line."""
    app()
