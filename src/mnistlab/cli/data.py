"""``mnistlab data``: list, fetch, import, verify and explore datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import HomeOption, console, handle_errors, print_error
from mnistlab.data import (
    explore_dataset,
    fetch_dataset,
    get_spec,
    import_dataset,
    list_datasets,
    load_dataset,
    verify_dataset,
)
from mnistlab.data.cache import files_dir
from mnistlab.data.download import MIRRORS_ENV

data_app = typer.Typer(
    help="Fetch, import, verify and explore datasets (MNIST, Fashion-MNIST, KMNIST, QMNIST, ...).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n else "?"


@data_app.command("list")
@handle_errors
def list_cmd(home: HomeOption = None) -> None:
    """List every dataset mnistlab knows: its size and whether it is cached."""
    # No vertical rules and nothing wrapped: the table fits 80 columns whole.
    table = Table(
        title="Datasets", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False
    )
    for column in ("name", "classes", "train", "test", "download", "on disk", "cached"):
        table.add_column(
            column,
            justify="right"
            if column in ("classes", "train", "test", "download", "on disk")
            else "left",
            no_wrap=True,
        )
    for status in list_datasets(home):
        spec = status.spec
        where = "bundled" if spec.bundled else ("imported" if spec.origin == "imported" else "")
        local = spec.bundled or spec.origin == "imported" or spec.builder is not None
        table.add_row(
            spec.name,
            str(spec.num_classes),
            f"{spec.splits['train'].count:,}" if "train" in spec.splits else "-",
            f"{spec.splits['test'].count:,}" if "test" in spec.splits else "-",
            "-" if local else _mb(spec.download_bytes),  # built here: nothing to download
            _mb(spec.payload_bytes),
            ("[green]yes[/]" if status.cached else "[dim]no[/]") + (f" ({where})" if where else ""),
        )
    console.print(table)


@data_app.command("fetch")
@handle_errors
def fetch_cmd(
    names: Annotated[list[str], typer.Argument(help="Dataset names, e.g. mnist fashion-mnist.")],
    mirror: Annotated[
        list[str] | None,
        typer.Option(
            "--mirror",
            "-m",
            help=f"Base URL or folder to fetch from, tried in the order given (repeatable). "
            f"Overrides ${MIRRORS_ENV} (space-separated) and the registry's mirrors. "
            "https://, http://, file:// and plain paths work.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Download again even if cached.")] = False,
    retries: Annotated[int, typer.Option(min=0, help="Retries per file and mirror.")] = 3,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait for data.")] = 30.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    home: HomeOption = None,
) -> None:
    """Download datasets from their mirrors, verify size and SHA-256 of every file, cache them.

    Resumes interrupted downloads, retries transient failures, and is safe to run twice at once.
    Offline? Copy the files by hand and use `mnistlab data import`.
    """
    for name in names:
        directory = fetch_dataset(
            name,
            mirrors=mirror or None,
            home=home,
            force=force,
            retries=retries,
            timeout=timeout,
            progress=not quiet,
        )
        console.print(f"[green]✓[/] {name}: verified, in {escape(str(directory))}")


@data_app.command("import")
@handle_errors
def import_cmd(
    path: Annotated[
        Path,
        typer.Argument(
            help="A folder of IDX files (.gz or not), a folder of 28x28 PNGs per class "
            "(<class>/*.png, or train|test/<class>/*.png), a Keras-style mnist.npz, or a "
            "Kaggle-style CSV (label,pixel0..pixel783)."
        ),
    ],
    name: Annotated[
        str,
        typer.Option(
            "--name",
            "-n",
            help="Dataset name. A registered name (e.g. mnist) checks the files against its "
            "checksums; a new name creates your own dataset.",
        ),
    ],
    split: Annotated[
        str | None,
        typer.Option(help="For a single CSV file: the split it holds (train or test)."),
    ] = None,
    class_names: Annotated[
        str | None,
        typer.Option(help="Comma-separated class names for a new dataset (default 0..9)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
    home: HomeOption = None,
) -> None:
    """Import dataset files you already have (no network needed), validated on the way in."""
    if split not in (None, "train", "test"):
        raise typer.BadParameter("must be train or test", param_hint="--split")
    names = [c.strip() for c in class_names.split(",")] if class_names else None
    directory = import_dataset(
        path, name, home=home, split=split, class_names=names, overwrite=overwrite
    )
    spec = get_spec(name, home)
    counts = ", ".join(f"{s} {f.count:,}" for s, f in spec.splits.items())
    console.print(f"[green]✓[/] imported {name} ({counts}) into {escape(str(directory))}")


@data_app.command("export")
@handle_errors
def export_cmd(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. mnist.")],
    out: Annotated[Path, typer.Option(help="The .npz file or PNG folder to write (new).")],
    split: Annotated[str, typer.Option(help="train, test, or val of an imported set.")] = "train",
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="npz (x_<split>, y_<split>, class_names) or png (<split>/<class>/<n>.png, "
            "torchvision's ImageFolder layout).",
        ),
    ] = "npz",
    home: HomeOption = None,
) -> None:
    """Write a split for other tools: a Keras-style .npz or a folder of PNGs per class
    (`mnistlab data import` reads both back)."""
    from mnistlab.data.exchange import FORMATS, export_split

    if to not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--to")
    target = export_split(load_dataset(name, split, home=home), out, to)
    console.print(f"[green]✓[/] {name} {split} -> {escape(str(target))}")


@data_app.command("verify")
@handle_errors
def verify_cmd(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    home: HomeOption = None,
) -> None:
    """Re-check the size and SHA-256 of every cached file of a dataset."""
    checks = verify_dataset(name, home)
    where = escape(str(files_dir(get_spec(name, home), home)))
    table = Table(title=f"{name} in {where}", title_justify="left")
    table.add_column("file")
    table.add_column("ok")
    table.add_column("detail")
    for c in checks:
        table.add_row(escape(c.file), "[green]yes[/]" if c.ok else "[red]NO[/]", escape(c.reason))
    console.print(table)
    if not all(c.ok for c in checks):
        print_error(
            f"{name} is damaged",
            hint=f"re-fetch it with `mnistlab data fetch {name} --force` (or re-import it)",
        )
        raise typer.Exit(1)


@data_app.command("show")
@handle_errors
def show_cmd(
    name: Annotated[str, typer.Argument(help="Dataset name (fetched first if needed).")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the PNGs and summary.json. [default: explore/NAME]", show_default=False
        ),
    ] = None,
    samples: Annotated[
        int, typer.Option(min=1, max=400, help="Training images in the sample grid.")
    ] = 36,
    overwrite: Annotated[bool, typer.Option(help="Replace plots already in --out.")] = False,
    home: HomeOption = None,
) -> None:
    """Summarize a dataset (counts, pixel statistics, exact duplicates) and write plots:
    samples, label histogram, mean image per class, pixel histogram, pixel mean/std."""
    out = out or Path("explore") / name
    summary, written = explore_dataset(name, out, home=home, samples=samples, overwrite=overwrite)
    spec = get_spec(name, home)
    console.print(f"[bold]{escape(spec.title)}[/] — {escape(spec.description)}")
    table = Table(title_justify="left")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("pixel mean", justify="right")
    table.add_column("pixel std", justify="right")
    table.add_column("duplicate images", justify="right")
    for s in summary.splits.values():
        table.add_row(
            s.split,
            f"{s.count:,}",
            f"{s.pixel_mean:.4f}",
            f"{s.pixel_std:.4f}",
            f"{s.duplicate_images} ({s.duplicate_groups} groups)",
        )
    console.print(table)
    counts = Table(title="images per class", title_justify="left")
    counts.add_column("class")
    for s in summary.splits:
        counts.add_column(s, justify="right")
    for c, class_name in enumerate(summary.class_names):
        counts.add_row(
            escape(f"{c} {class_name}" if class_name != str(c) else class_name),
            *(f"{summary.splits[s].class_counts[c]:,}" for s in summary.splits),
        )
    console.print(counts)
    if len(summary.splits) > 1:
        console.print(
            f"test images with an exact copy in train: {summary.cross_split_duplicates}"
            + (
                f" (first pairs train->test: {list(summary.cross_split_examples[:3])})"
                if summary.cross_split_duplicates
                else ""
            )
        )
    console.print("wrote: " + escape(", ".join(str(p) for p in written)))
