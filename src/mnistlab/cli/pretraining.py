"""``mnistlab pretrain``, ``mnistlab finetune``, ``mnistlab fewshot``, ``mnistlab self-train``,
``mnistlab merge``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mnistlab.cli.common import (
    ConfigOption,
    DeviceOption,
    HomeOption,
    LogOption,
    LogUriOption,
    OutOption,
    OverwriteOption,
    PrecisionOption,
    ProfileOption,
    ProfileStepsOption,
    ResumeOption,
    SeedOption,
    ThreadsOption,
    build_callbacks,
    build_loggers,
    command_config,
    console,
    field_option,
    handle_errors,
    print_profile,
)
from mnistlab.config import parse_sets
from mnistlab.errors import MnistlabError
from mnistlab.pretraining.config import FewshotConfig, FinetuneConfig, PretrainConfig

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override any config key, e.g. --set warmup=0.1 (repeatable; values are JSON, bare "
        "words are strings). The keys: docs/pretraining.md.",
        show_default=False,
    ),
]


def pretrain_cmd(
    objective: Annotated[
        str | None,
        field_option(
            PretrainConfig,
            "objective",
            "mae (masked patches) or gpt (next token): a transformer; simclr (contrastive "
            "views): a CNN backbone for `mnistlab fewshot`.",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        field_option(PretrainConfig, "dataset", "Images to learn from.", "--dataset", "-d"),
    ] = None,
    preset: Annotated[
        str | None, field_option(PretrainConfig, "preset", "Size: tiny, small, base, large.")
    ] = None,
    patch_size: Annotated[
        int | None,
        typer.Option(
            help="Patch side (divides 28). [default: the preset's, 4]", show_default=False
        ),
    ] = None,
    epochs: Annotated[
        int | None, field_option(PretrainConfig, "epochs", "Passes over the images.")
    ] = None,
    batch_size: Annotated[
        int | None, field_option(PretrainConfig, "batch_size", "Images per step.")
    ] = None,
    lr: Annotated[float | None, field_option(PretrainConfig, "lr", "Peak learning rate.")] = None,
    mask_ratio: Annotated[
        float | None, field_option(PretrainConfig, "mask_ratio", "MAE: share of patches hidden.")
    ] = None,
    codebook_size: Annotated[
        int | None, field_option(PretrainConfig, "codebook_size", "GPT: patch tokens.")
    ] = None,
    conditional: Annotated[
        bool | None,
        field_option(
            PretrainConfig,
            "conditional",
            "GPT: digit prefix tokens (reads the labels).",
            "--conditional/--no-conditional",
        ),
    ] = None,
    max_images: Annotated[
        int | None, field_option(PretrainConfig, "max_images", "Use the first N images (0 = all).")
    ] = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    set_: SetOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    log: LogOption = None,
    log_uri: LogUriOption = None,
    profile: ProfileOption = False,
    profile_steps: ProfileStepsOption = None,
    home: HomeOption = None,
) -> None:
    """Pretrain on a dataset's images without labels: a transformer (MAE or GPT-style) or a
    CNN backbone (SimCLR) for `mnistlab fewshot`.

    Every option is a key of the run's config (`--set KEY=VALUE` reaches the others, e.g.
    `--set warmup=0.1`); `--config RUN` replays a run, `--resume RUN` continues one."""
    from mnistlab.pretraining import pretrain

    options = {
        "objective": objective,
        "dataset": dataset,
        "preset": preset,
        "patch_size": patch_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "mask_ratio": mask_ratio,
        "codebook_size": codebook_size,
        "conditional": conditional,
        "max_images": max_images,
        "precision": precision,
        "device": device,
        "seed": seed,
        "num_threads": threads,
    }
    run_config, resume, overwrite = command_config(
        PretrainConfig, "pretrain", resume, out, overwrite, config, options, set_
    )
    loggers = build_callbacks(log, log_uri, profile, profile_steps)
    result = pretrain(
        run_config, out=out, overwrite=overwrite, resume=resume, home=home, callbacks=loggers
    )
    print_profile(loggers)
    console.print(f"report: {escape(str(result.run_dir / 'report.html'))}")


def finetune_cmd(
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="MAE pretraining run folder, or a ViT encoder .safetensors file (with --preset "
            "/ --patch-size). [default: train from scratch]",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[
        str | None, field_option(FinetuneConfig, "mode", "full, probe (linear probe) or lora.")
    ] = None,
    dataset: Annotated[
        str | None, field_option(FinetuneConfig, "dataset", "Dataset.", "--dataset", "-d")
    ] = None,
    labels: Annotated[
        int | None,
        field_option(FinetuneConfig, "labels", "Labelled training images, stratified (0 = all)."),
    ] = None,
    steps: Annotated[
        int | None, field_option(FinetuneConfig, "steps", "Supervised optimizer steps.")
    ] = None,
    batch_size: Annotated[
        int | None, field_option(FinetuneConfig, "batch_size", "Labelled images per step.")
    ] = None,
    eval_every: Annotated[
        int | None,
        field_option(FinetuneConfig, "eval_every", "Steps per round (log + checkpoint)."),
    ] = None,
    lr: Annotated[float | None, field_option(FinetuneConfig, "lr", "Peak learning rate.")] = None,
    augment: Annotated[
        str | None, field_option(FinetuneConfig, "augment", "Augmentation preset, or none.")
    ] = None,
    rank: Annotated[int | None, field_option(FinetuneConfig, "lora_rank", "LoRA rank r.")] = None,
    alpha: Annotated[
        float | None,
        field_option(FinetuneConfig, "lora_alpha", "LoRA alpha (update scaled by alpha/r)."),
    ] = None,
    targets: Annotated[
        str | None,
        typer.Option(
            help="LoRA target layers, comma-separated: qkv,proj,fc1,fc2.",
            show_default="qkv,proj,fc1,fc2",
        ),
    ] = None,
    semi_steps: Annotated[
        int | None,
        field_option(
            FinetuneConfig,
            "semi_steps",
            "Semi-supervised steps (pseudo-labels + consistency); 0 = off.",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        field_option(FinetuneConfig, "semi_threshold", "Pseudo-label confidence threshold."),
    ] = None,
    align: Annotated[
        bool | None,
        field_option(
            FinetuneConfig,
            "semi_align",
            "Semi-supervised stage: distribution alignment of the pseudo-labels (keeps one "
            "class from absorbing a look-alike cluster of another; docs/pretraining.md).",
            "--align/--no-align",
        ),
    ] = None,
    preset: Annotated[
        str | None, field_option(FinetuneConfig, "preset", "From scratch: transformer size.")
    ] = None,
    patch_size: Annotated[
        int | None,
        typer.Option(help="From scratch: patch side. [default: the preset's]", show_default=False),
    ] = None,
    precision: PrecisionOption = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    set_: SetOption = None,
    config: ConfigOption = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue this run; `auto` (with --out): continue or start the --out run."
        ),
    ] = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    log: LogOption = None,
    log_uri: LogUriOption = None,
    profile: ProfileOption = False,
    profile_steps: ProfileStepsOption = None,
    home: HomeOption = None,
) -> None:
    """Fine-tune a pretrained transformer (full, linear probe or LoRA), optionally with few
    labels and a semi-supervised stage; or train the same model from scratch.

    Every option is a key of the run's config (`--set KEY=VALUE` reaches the others, e.g.
    `--set semi_ratio=7`); `--config RUN` replays a run, `--resume RUN` continues one."""
    from mnistlab.pretraining import finetune

    options = {
        "pretrained": str(pretrained) if pretrained is not None else None,
        "mode": mode,
        "dataset": dataset,
        "labels": labels,
        "preset": preset,
        "patch_size": patch_size,
        "steps": steps,
        "batch_size": batch_size,
        "eval_every": eval_every,
        "lr": lr,
        "augment": augment,
        "lora_rank": rank,
        "lora_alpha": alpha,
        "lora_targets": [t.strip() for t in targets.split(",") if t.strip()]
        if targets is not None
        else None,
        "semi_steps": semi_steps,
        "semi_threshold": threshold,
        "semi_align": align,
        "precision": precision,
        "device": device,
        "seed": seed,
        "num_threads": threads,
    }
    sets = list(set_ or [])
    if augment == "none":  # the flag's word for "off" (null in a config)
        options["augment"] = None
        sets.insert(0, "augment=null")
    run_config, resume, overwrite = command_config(
        FinetuneConfig, "finetune", resume, out, overwrite, config, options, sets
    )
    loggers = build_callbacks(log, log_uri, profile, profile_steps)
    result = finetune(
        run_config, out=out, overwrite=overwrite, resume=resume, home=home, callbacks=loggers
    )
    print_profile(loggers)
    if result.adapter_bytes is not None:
        console.print(
            f"adapter: {result.adapter_bytes:,} bytes ({result.trainable_parameters:,} trainable "
            f"parameters of {result.total_parameters:,}); merge with: mnistlab merge "
            f"{escape(str(result.run_dir))}"
        )
    console.print(f"report: {escape(str(result.run_dir / 'report.html'))}")


def fewshot_cmd(
    labels: Annotated[
        int | None, field_option(FewshotConfig, "labels", "Labelled training images, stratified.")
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The backbone: pretrained:NAME (`mnistlab models list`), a `mnistlab pretrain "
            "--objective simclr` run folder, or `scratch`. [default: "
            f"{FewshotConfig.pretrained}]",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        str | None,
        field_option(
            FewshotConfig,
            "method",
            "propagate: labels spread over the backbone's feature graph, then a student learns "
            "them (minutes); consistency: FixMatch training first (--steps, slower).",
        ),
    ] = None,
    dataset: Annotated[
        str | None, field_option(FewshotConfig, "dataset", "Dataset.", "--dataset", "-d")
    ] = None,
    steps: Annotated[
        int | None, field_option(FewshotConfig, "steps", "Optimizer steps (consistency).")
    ] = None,
    threshold: Annotated[
        float | None, field_option(FewshotConfig, "threshold", "Pseudo-label confidence threshold.")
    ] = None,
    align: Annotated[
        bool | None,
        field_option(FewshotConfig, "align", "Distribution alignment.", "--align/--no-align"),
    ] = None,
    balance: Annotated[
        bool | None,
        field_option(
            FewshotConfig,
            "balance",
            "Class-balanced pseudo-labels in each batch (Sinkhorn-Knopp).",
            "--balance/--no-balance",
        ),
    ] = None,
    eval_every: Annotated[
        int | None, field_option(FewshotConfig, "eval_every", "Steps per round (log + checkpoint).")
    ] = None,
    student: Annotated[
        str | None,
        field_option(
            FewshotConfig,
            "student",
            "Then self-training: this CNN learns the run's pseudo-labels, into RUN/student "
            "(the final model); `none` = off.",
        ),
    ] = None,
    student_epochs: Annotated[
        int | None, field_option(FewshotConfig, "student_epochs", "The student's epochs.")
    ] = None,
    precision: Annotated[
        str | None, field_option(FewshotConfig, "precision", "auto, fp32 or bf16.")
    ] = None,
    device: DeviceOption = None,
    seed: SeedOption = None,
    threads: ThreadsOption = None,
    set_: SetOption = None,
    config: ConfigOption = None,
    resume: ResumeOption = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    log: LogOption = None,
    log_uri: LogUriOption = None,
    home: HomeOption = None,
) -> None:
    """Train a classifier from a few labels and the unlabeled rest of the training split.
    From a shipped self-supervised backbone, the labels (and, for digits, those of 100
    generated digits; --set generated_digits=0: none) are spread over a nearest-neighbour graph
    of its features (--method propagate) or learnt with FixMatch consistency training (--method
    consistency); then a student CNN learns the pseudo-labels (RUN/student, the final model,
    an ordinary CNN run: evaluate, robustness, export and serve take it).

    `--seed` draws the labelled images (stratified: labels/10 per class) and every random
    choice. Example: `mnistlab fewshot --labels 100 --seed 1`. Every option is a key of the
    run's config (`--set KEY=VALUE` reaches the others); `--config RUN` replays a run."""
    from mnistlab.pretraining.fewshot import fewshot

    options = {
        "labels": labels,
        "method": method,
        "pretrained": pretrained,
        "dataset": dataset,
        "steps": steps,
        "threshold": threshold,
        "align": align,
        "balance": balance,
        "eval_every": eval_every,
        "student": student,
        "student_epochs": student_epochs,
        "precision": precision,
        "device": device,
        "seed": seed,
        "num_threads": threads,
    }
    sets = list(set_ or [])
    if student == "none":
        options["student"] = None
        sets.insert(0, "student=null")
    if pretrained == "scratch":  # the flag's word for "no backbone" (null in a config)
        options["pretrained"] = None
        sets.insert(0, "pretrained=null")
    run_config, resume, overwrite = command_config(
        FewshotConfig, "fewshot", resume, out, overwrite, config, options, sets
    )
    loggers = build_loggers(log, log_uri)
    result = fewshot(
        run_config, out=out, overwrite=overwrite, resume=resume, home=home, callbacks=loggers
    )
    if result.student_dir is not None and result.method == "consistency":
        console.print(
            f"consistency training: {result.test_accuracy:.4f}; its student: "
            f"{result.final_accuracy:.4f}"
        )
    console.print(f"final model: {escape(str(result.final_dir))}")
    console.print(f"report: {escape(str(result.final_dir / 'report.html'))}")


def self_train_cmd(
    teacher: Annotated[
        Path | None,
        typer.Option(
            "--teacher",
            help="A few-label run: `mnistlab finetune --labels N` (best after --semi-steps) or an "
            "earlier `mnistlab self-train` run.",
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="The student: any deep model of `mnistlab train`.")
    ] = "fast-cnn",
    recipe: Annotated[str, typer.Option(help="The student's training recipe.")] = "default",
    epochs: Annotated[
        int | None,
        typer.Option(help="Student epochs. [default: 3 for fast-cnn, else the recipe's]"),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            help="Keep a pseudo-label when the teacher's probability is >= this (0 = all)."
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="The student's seed.")] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a student hyper-parameter (as in `mnistlab train`)."),
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this self-training run.")] = None,
    out: OutOption = None,
    overwrite: OverwriteOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    home: HomeOption = None,
) -> None:
    """Self-training: the teacher labels the training images it was not given, a student
    (a CNN of `mnistlab train`) learns from its labels and the few true ones. The student is
    an ordinary run: evaluate, export and serve it as any trained model."""
    from mnistlab.cli.train import _print_report
    from mnistlab.pretraining.selftrain import STUDENT_EPOCHS, self_train
    from mnistlab.runs import read_json
    from mnistlab.training.recipes import DEEP_MODELS, get_deep_recipe

    if resume is not None:
        result = self_train(resume=resume, home=home, progress=not quiet)
    else:
        if teacher is None:
            raise MnistlabError(
                "mnistlab self-train needs --teacher RUN_DIR (or --resume RUN_DIR)",
                hint="e.g. mnistlab self-train --teacher runs/ft-100 --out runs/student-100",
            )
        if model not in DEEP_MODELS:
            raise MnistlabError(
                f"the student must be a deep model, not {model!r}",
                hint=f"use one of: {', '.join(DEEP_MODELS)}",
            )
        dataset = (
            read_json(teacher, "config.json").get("dataset", "mnist")
            if (teacher / "config.json").is_file()
            else "mnist"
        )
        overrides = parse_sets(set_)
        if epochs is not None:
            overrides["epochs"] = epochs
        elif model == "fast-cnn" and recipe == "default":
            overrides.setdefault("epochs", STUDENT_EPOCHS)
        config = get_deep_recipe(model, recipe, **{"dataset": dataset, "seed": seed, **overrides})
        result = self_train(
            teacher,
            config,
            threshold=threshold,
            out=out,
            overwrite=overwrite,
            home=home,
            progress=not quiet,
        )
    data = read_json(result.run_dir, "config.json")["train_data"]
    console.print(
        f"trained on {data['num_labeled']:,} labelled + {data['num_pseudo']:,} pseudo-labelled "
        f"images ({data['num_dropped']:,} below the threshold); the pseudo-labels agree with the "
        f"hidden labels on {data['pseudo_label_accuracy']:.2%} (teacher test accuracy "
        f"{data['teacher']['test_accuracy']:.4f})"
    )
    _print_report(result.report, result.run_dir)


def merge_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A `mnistlab finetune --mode lora` run.")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the merged model/. [default: RUN_DIR/merged]")
    ] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Fold a LoRA adapter into its base weights (W + alpha/r * B A): a plain classifier with
    the same outputs."""
    from mnistlab.pretraining import merge_adapter

    folder, diff = merge_adapter(run_dir, out, overwrite=overwrite)
    console.print(
        f"merged model: {escape(str(folder))}  (max |logit difference| vs unmerged: {diff:.2e})"
    )


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("pretrain")(handle_errors(pretrain_cmd))
    app.command("finetune")(handle_errors(finetune_cmd))
    app.command("fewshot")(handle_errors(fewshot_cmd))
    app.command("self-train")(handle_errors(self_train_cmd))
    app.command("merge")(handle_errors(merge_cmd))
