"""``mnistlab gan`` and ``mnistlab generate``: train a generative adversarial network, and
sample digits from it or from a GPT pretraining run. The options and config handling are
those of the pretraining commands (:mod:`mnistlab.cli.pretraining`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mnistlab.cli.common import (
    ConfigOption,
    DeviceOption,
    HomeOption,
    OutOption,
    OverwriteOption,
    ResumeOption,
    SeedOption,
    ThreadsOption,
    command_config,
    console,
    field_option,
    handle_errors,
)
from mnistlab.cli.pretraining import SetOption
from mnistlab.errors import MnistlabError
from mnistlab.pretraining.gan_config import GanConfig


def gan_cmd(
    conditional: Annotated[
        bool | None,
        field_option(
            GanConfig,
            "conditional",
            "Draw a chosen digit (reads the labels).",
            "--conditional/--no-conditional",
        ),
    ] = None,
    dataset: Annotated[
        str | None, field_option(GanConfig, "dataset", "Images to learn from.", "--dataset", "-d")
    ] = None,
    epochs: Annotated[
        int | None, field_option(GanConfig, "epochs", "Passes over the images.")
    ] = None,
    batch_size: Annotated[
        int | None, field_option(GanConfig, "batch_size", "Real images per step.")
    ] = None,
    lr: Annotated[
        float | None, field_option(GanConfig, "lr", "Adam learning rate of G and D.")
    ] = None,
    max_images: Annotated[
        int | None, field_option(GanConfig, "max_images", "Use the first N images (0 = all).")
    ] = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    set_: SetOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    home: HomeOption = None,
) -> None:
    """Train a DCGAN (or, with --conditional, a class-conditional one) on a dataset's images.

    Writes a run folder: metrics.jsonl (both losses per epoch), checkpoint/, a sample grid per
    epoch from fixed noise (samples/), the generator (model/), gan_losses.png. Sample it with
    `mnistlab generate --from RUN`. Other keys: `--set KEY=VALUE` (docs/pretraining.md)."""
    from mnistlab.pretraining.gan import train_gan

    options = {
        "conditional": conditional,
        "dataset": dataset,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_images": max_images,
        "device": device,
        "seed": seed,
        "num_threads": threads,
    }
    run_config, resume, overwrite = command_config(
        GanConfig, "gan", resume, out, overwrite, config, options, set_
    )
    result = train_gan(run_config, out=out, overwrite=overwrite, resume=resume, home=home)
    console.print(f"run folder: {escape(str(result.run_dir))}")


def generate_cmd(
    pretrained: Annotated[
        Path,
        typer.Option(
            "--from",
            help="A GPT pretraining run (`mnistlab pretrain --objective gpt`) or a "
            "GAN run (`mnistlab gan`).",
        ),
    ],
    digit: Annotated[
        list[int] | None,
        typer.Option("--digit", help="Digit(s) to draw (repeat the option); none = any."),
    ] = None,
    n: Annotated[int, typer.Option("-n", help="Images per digit.")] = 64,
    temperature: Annotated[float, typer.Option(help="GPT: sampling temperature.")] = 1.0,
    top_k: Annotated[
        int | None, typer.Option(help="GPT: sample among the k likeliest tokens.")
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path, typer.Option(help="PNG file for the grid.")] = Path("generated.png"),
    classifier: Annotated[
        Path | None,
        typer.Option(help="A trained classifier run: report how many samples it recognises."),
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Sample digits from a GPT or GAN run into a PNG grid.

    --digit needs a class-conditional model (pretrain --conditional, gan --conditional); an
    unconditional one cannot pick a digit and says so. Without --digit a conditional GAN
    draws -n of every digit."""
    from mnistlab.pretraining.generate import (
        classifier_agreement,
        classify_images,
        generate_digits,
        save_generated_grid,
    )

    if out.exists() and not overwrite:
        raise MnistlabError(f"{out} exists", hint="pass --overwrite or choose another --out")
    generated = generate_digits(
        pretrained,
        list(digit) if digit else None,
        n,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
    )
    save_generated_grid(generated, out)
    console.print(f"{len(generated.images)} images -> {escape(str(out))}")
    if classifier is not None and digit:
        agreement = classifier_agreement(generated, classify_images(classifier, generated.images))
        for d, share in agreement.items():
            console.print(f"digit {d}: classifier agrees on {share:.1%} of the samples")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("gan")(handle_errors(gan_cmd))
    app.command("generate")(handle_errors(generate_cmd))
