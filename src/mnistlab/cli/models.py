"""``mnistlab models``: the models that ship with the package (pretrained backbones, the
number reader)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from mnistlab.cli.common import console, handle_errors

models_app = typer.Typer(
    help="The models that ship with mnistlab (offline), with their cards: a pretrained "
    "backbone for `fewshot`, a number reader for `read`.",
    no_args_is_help=True,
)


def _row(r: dict, short: bool = False) -> str:
    """One downstream result of a card, in a line: a few-label accuracy (the backbone's), a
    test split's accuracy (a digit model's) or a task's accuracy (the number reader's);
    ``short``: without the spread, time and reject option."""
    if "labels" in r:
        draws = r.get("runs")
        method = r.get("method", "propagate")
        how = f" ({method})" if method != "propagate" else ""
        mean = (
            f"{r.get('labels')} labels{how}, {draws} draw{'s' if draws != 1 else ''}: mean "
            f"{r.get('mean_accuracy', 0):.2%}"
        )
        if short:
            return mean
        return (
            f"{mean} (min {r.get('min_accuracy', 0):.2%}, max "
            f"{r.get('max_accuracy', 0):.2%}), {r.get('minutes', 0):.1f} min per draw"
        )
    if "accuracy" in r:
        kept = r.get("accuracy_abstaining_2pct")
        extra = f" ({kept:.2%} abstaining on the least sure 2 %)" if kept and not short else ""
        return f"{r.get('task')}: {r.get('accuracy', 0):.2%}{extra}"
    return (
        f"{r.get('task')}: {r.get('string_accuracy', 0):.1%} read right, digits "
        f"{r.get('digit_accuracy', 0):.1%} ({r.get('count')} pictures, {r.get('split')})"
    )


def _downstream(card: dict) -> str:
    """The card's first downstream result, in a few words."""
    rows = [r for r in card.get("downstream", []) if isinstance(r, dict)]
    return _row(rows[0], short=True) if rows else "-"


@models_app.command("list")
@handle_errors
def list_cmd() -> None:
    """Every shipped model: its name (`--from pretrained:NAME`, `read pretrained:NAME`),
    architecture, objective, weight size, a downstream number and a summary; `mnistlab models
    show NAME` prints the whole card."""
    from mnistlab.models.hub import PREFIX, list_pretrained

    cards = list_pretrained()
    if not cards:
        console.print("no model ships with this installation")
        return
    for c in cards:  # one block per model: the name is never folded, at any width
        console.print(f"[bold]{PREFIX}{escape(c.name)}[/]", soft_wrap=True)
        console.print(
            f"  {escape(str(c.card.get('architecture', '?')))}, "
            f"{escape(str(c.card.get('objective', '?')))}, {c.weights_bytes / 1e6:.2f} MB; "
            f"downstream: {escape(_downstream(c.card))}"
        )
        console.print(f"  {escape(str(c.card.get('summary', '')))}")
    console.print("the whole card: mnistlab models show NAME")


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
    for key in ("architecture", "objective", "parameters", "backbone_parameters", "seed",
                "train_seconds", "trained_on", "weights_sha256"):  # fmt: skip
        if key in card:
            console.print(f"{key}: {escape(str(card[key]))}")
    console.print(f"weights: {model.weights_bytes:,} bytes")
    data = card.get("data", {})
    console.print(f"data: {escape(str(data.get('dataset')))} {escape(str(data.get('split')))}")
    for file, digest in (data.get("sha256") or {}).items():
        console.print(f"  sha256 {escape(str(file))}: {escape(str(digest))}")
    console.print(f"rebuild: {escape(str(card.get('rebuild')))}")
    console.print(f"  or: {escape(str(card.get('command')))}")
    rows = [r for r in card.get("downstream", []) if isinstance(r, dict)]
    if rows:
        console.print("downstream (measured on data it never trained on):")
    for r in rows:
        command = f": {r['command']}" if r.get("command") else ""
        console.print(f"  {escape(_row(r) + command)}")
