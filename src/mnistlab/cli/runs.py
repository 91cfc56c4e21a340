"""``mnistlab runs``: the run folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import LogUriOption, console, handle_errors
from mnistlab.runs import default_runs_root, list_runs

runs_app = typer.Typer(
    help="Inspect training runs, compare them, log them into TensorBoard or MLflow.",
    no_args_is_help=True,
)


@runs_app.command("list")
@handle_errors
def list_cmd(
    root: Annotated[
        Path | None,
        typer.Option(
            "--root",
            envvar="MNISTLAB_RUNS",
            help="Folder to search for runs, up to 3 levels down (e.g. demo, runs/ptbench). "
            "[default: ./runs]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show every run under a folder: its path, model, dataset, test accuracy, training time
    and date. The run paths are printed whole, whatever the terminal's width, so they can be
    copied into `mnistlab evaluate`, `export`, `serve`, ..."""
    base = root or default_runs_root()
    rows = list_runs(base)
    if not rows:
        where = escape(str(base))
        console.print(
            f"no runs in {where}: `mnistlab train` makes one there, `--root DIR` looks "
            "elsewhere (`make demo` writes demo/run)",
            soft_wrap=True,
        )
        return
    headers = ("run", "model", "dataset", "acc", "train s", "created")
    cells = [
        (
            str(r.path),
            r.model,
            r.dataset,
            f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-",
            f"{r.train_seconds:.1f}" if r.train_seconds is not None else "-",
            r.created[:10],
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    # The path never shrinks or wraps (a user copies it), nor does any other cell: where one
    # line per run does not fit (one space between columns), each run gets a block instead.
    if sum(widths) + len(widths) - 1 > console.width:
        for r, (path, model, dataset, accuracy, *_) in zip(rows, cells, strict=True):
            console.print(escape(path), soft_wrap=True, highlight=False)
            console.print(
                f"  {escape(model)} on {escape(dataset)}, test accuracy {accuracy}, "
                f"created {escape(r.created[:16].replace('T', ' '))}",
                highlight=False,
            )
        return
    table = Table(title=f"runs in {escape(str(base))}", title_justify="left", box=None,
                  padding=(0, 1, 0, 0), pad_edge=False)  # fmt: skip
    for header, width in zip(headers, widths, strict=True):
        right = header in ("acc", "train s")
        table.add_column(header, no_wrap=True, min_width=width,
                         justify="right" if right else "left")  # fmt: skip
    for c in cells:
        table.add_row(*map(escape, c))
    console.print(table)


@runs_app.command("compare")
@handle_errors
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders.")],
    plot: Annotated[
        Path | None,
        typer.Option(help="Write their training curves on one figure (PNG) here."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Let --plot replace an existing file.")] = False,
) -> None:
    """Put runs side by side: the settings that differ, their results, and (with --plot) their
    training curves on one figure."""
    from mnistlab.runs import compare_runs

    result = compare_runs(list(runs), plot=plot, overwrite=overwrite)
    for i, path in enumerate(result.runs, 1):
        console.print(f"run {i}: {escape(str(path))}", soft_wrap=True, highlight=False)
    table = Table(title="settings that differ, and results", title_justify="left")
    table.add_column("", overflow="fold")
    for i in range(len(result.runs)):
        table.add_column(f"run {i + 1}", overflow="fold")
    for key, values in result.differences.items():
        table.add_row(escape(key), *(escape(_setting_cell(v)) for v in values))
    for key in ("test_accuracy", "train_seconds", "epochs"):
        cells = [r[key] for r in result.results]
        table.add_row(
            f"[bold]{key}[/]",
            *("-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in cells),
        )
    console.print(table)
    for line in _list_changes(result.differences):
        console.print(escape(line), highlight=False)
    if result.figure is not None:
        console.print(f"curves: {escape(str(result.figure))}", soft_wrap=True, highlight=False)


_CELL = 24  # longest setting shown whole in the comparison table


def _setting_cell(value: Any) -> str:
    """A setting as a cell of the comparison table: its JSON, or where that is long, a summary
    (a list of 34 font names: "34 items"; a SHA-256: its first characters)."""
    text = json.dumps(value)
    if len(text) <= _CELL:
        return text
    if isinstance(value, list):
        return f"{len(value)} items"
    return text[: _CELL - 1] + "…"


def _list_changes(differences: dict[str, list[Any]]) -> list[str]:
    """For each long list that differs, what each run has that run 1 lacks and the reverse,
    e.g. "generated.fonts: run 2 adds 2 (a.ttf, b.ttf), drops 0"."""
    lines = []
    for key, values in differences.items():
        first = values[0]
        if not all(isinstance(v, list) for v in values) or len(json.dumps(values)) <= _CELL:
            continue
        seen = {json.dumps(x) for x in first}
        for i, other in enumerate(values[1:], 2):
            theirs = {json.dumps(x) for x in other}
            added = [x for x in other if json.dumps(x) not in seen]
            dropped = [x for x in first if json.dumps(x) not in theirs]
            parts = [f"{verb} {len(items)}" + (f" ({_some(items)})" if items else "")
                     for verb, items in (("adds", added), ("drops", dropped))]  # fmt: skip
            lines.append(f"{key}: run {i} " + ", ".join(parts) + " against run 1")
    return lines


def _some(items: list[Any], most: int = 3) -> str:
    shown = ", ".join(x if isinstance(x, str) else json.dumps(x) for x in items[:most])
    return shown + (f", … {len(items) - most} more" if len(items) > most else "")


@runs_app.command("export")
@handle_errors
def export_cmd(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN...", help="Run folders to log.")],
    to: Annotated[
        str,
        typer.Option("--to", metavar="TRACKER", help="tensorboard or mlflow.", show_default=False),
    ],
    log_uri: LogUriOption = None,
    logdir: Annotated[
        Path | None,
        typer.Option(
            "--logdir",
            metavar="DIR",
            help="TensorBoard: write each run's events to DIR/<run folder name>. [default: "
            "RUN/tensorboard/]",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace what a run logged there before (events, MLflow run).")
    ] = False,
) -> None:
    """Log finished runs into TensorBoard or MLflow, as `--log` would have during training:
    config, every epoch of metrics.jsonl, metrics.json, and for MLflow the artifacts. A run
    already there is refused unless --overwrite (docs/ecosystem.md)."""
    from mnistlab.training.replay import replay_run

    for run in runs:
        folder = logdir / run.expanduser().resolve().name if logdir is not None else None
        result = replay_run(run, to, uri=log_uri, log_dir=folder, overwrite=overwrite)
        where = f"run {result.run_id} at {result.where}" if result.run_id else result.where
        console.print(escape(str(run)), soft_wrap=True, highlight=False)
        console.print(
            f"  {to}: {result.epochs} {'round' if result.rounds else 'epoch'}"
            f"{'' if result.epochs == 1 else 's'}, "
            f"{result.step_points} step points -> {escape(where)}",
            soft_wrap=True,
            highlight=False,
        )
        for what in result.skipped:
            console.print(f"  not logged: {escape(what)}", soft_wrap=True, highlight=False)
