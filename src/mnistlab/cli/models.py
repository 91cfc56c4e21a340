"""``mnistlab models``: the pretrained models that ship with the package."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import console, handle_errors

models_app = typer.Typer(
    help="The pretrained models that ship with mnistlab (offline), with their cards.",
    no_args_is_help=True,
)


def _downstream(card: dict) -> str:
    """The card's best-known downstream result, in a few words."""
    rows = [r for r in card.get("downstream", []) if isinstance(r, dict)]
    if not rows:
        return "-"
    r = rows[0]
    return f"{r.get('labels')} labels: {r.get('mean_accuracy', float('nan')):.2%}"


@models_app.command("list")
@handle_errors
def list_cmd() -> None:
    """Every shipped model: its name (use it as `--from pretrained:NAME`), architecture,
    objective, weight size and a downstream number; `mnistlab models show NAME` prints the
    whole card."""
    from mnistlab.models.hub import PREFIX, list_pretrained

    cards = list_pretrained()
    if not cards:
        console.print("no pretrained model ships with this installation")
        return
    table = Table(title="Pretrained models (mnistlab models show NAME)")
    for column in ("name", "architecture", "objective", "weights", "downstream"):
        table.add_column(column, overflow="fold")
    for c in cards:
        table.add_row(
            PREFIX + c.name,
            str(c.card.get("architecture", "?")),
            str(c.card.get("objective", "?")),
            f"{c.weights_bytes / 1e6:.2f} MB",
            _downstream(c.card),
        )
    console.print(table)


@models_app.command("show")
@handle_errors
def show_cmd(
    name: Annotated[str, typer.Argument(help="A shipped model, e.g. simclr-fast-cnn-wide.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """A shipped model's card: what it learned from (data and its SHA-256), how (objective,
    recipe, seed, the command that rebuilds it), its size, and the downstream numbers measured
    with it."""
    from mnistlab.models.hub import get_pretrained

    model = get_pretrained(name)
    if as_json:
        typer.echo(json.dumps(model.card, indent=2))
        return
    card = model.card
    console.print(f"[bold]pretrained:{escape(model.name)}[/]  {escape(card.get('summary', ''))}")
    for key in ("architecture", "objective", "backbone_parameters", "seed", "train_seconds",
                "trained_on", "weights_sha256"):  # fmt: skip
        if key in card:
            console.print(f"{key}: {escape(str(card[key]))}")
    console.print(f"weights: {model.weights_bytes:,} bytes")
    data = card.get("data", {})
    console.print(f"data: {escape(str(data.get('dataset')))} {escape(str(data.get('split')))}")
    console.print(f"rebuild: {escape(str(card.get('rebuild')))}")
    console.print(f"  or: {escape(str(card.get('command')))}")
    rows = card.get("downstream", [])
    if rows:
        table = Table(title="Downstream (mnistlab fewshot; MNIST test split)")
        for column in ("labels", "runs", "mean", "min", "max", "minutes/run", "command"):
            table.add_column(column, overflow="fold")
        for r in rows:
            table.add_row(
                str(r.get("labels")), str(r.get("runs")), f"{r.get('mean_accuracy', 0):.2%}",
                f"{r.get('min_accuracy', 0):.2%}", f"{r.get('max_accuracy', 0):.2%}",
                f"{r.get('minutes', 0):.1f}", escape(str(r.get("command", ""))),
            )  # fmt: skip
        console.print(table)
