"""``mnistlab train``, ``mnistlab evaluate``, ``mnistlab search``, ``mnistlab ensemble``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import (
    ConfigOption,
    HomeOption,
    LogOption,
    LogUriOption,
    ProfileOption,
    ProfileStepsOption,
    build_callbacks,
    console,
    handle_errors,
    print_profile,
    resolve_resume,
)
from mnistlab.config import parse_sets
from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.models.classic import CLASSIC_MODELS
from mnistlab.training.recipes import DEEP_MODELS, DEEP_RECIPES, DEFAULT_MODEL, recipe_owner


def _print_report(report: dict[str, Any], run_dir: Path) -> None:
    table = Table(title=f"{report['model']} on {report['dataset']}", title_justify="left")
    table.add_column("class")
    for column in ("precision", "recall", "f1", "support"):
        table.add_column(column, justify="right")
    for name, row in report["per_class"].items():
        table.add_row(
            escape(name),
            f"{row['precision']:.4f}",
            f"{row['recall']:.4f}",
            f"{row['f1']:.4f}",
            str(row["support"]),
        )
    table.add_row(
        "[bold]macro[/]",
        f"{report['macro_precision']:.4f}",
        f"{report['macro_recall']:.4f}",
        f"{report['macro_f1']:.4f}",
        str(report["num_test"]),
    )
    console.print(table)
    pairs = ", ".join(
        f"{p['true']}→{p['predicted']} ({p['count']})" for p in report.get("most_confused", [])[:5]
    )
    console.print(f"most confused: {escape(pairs)}")
    seconds = report.get("train_seconds")
    console.print(
        f"[bold]test accuracy {report['test_accuracy']:.4f}[/]"
        + (f"   train {seconds:.2f}s" if seconds is not None else "")
        + f"\nreport: {escape(str(run_dir / 'report.html'))}"
    )


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a setting, e.g. --set lr=0.01 (repeatable; values are JSON, bare words "
        "are strings). Deep models: any key of docs/training.md; classic: pipeline parameters "
        "such as clf__C.",
        show_default=False,
    ),
]


def train_cmd(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help=f"Classic: {', '.join(CLASSIC_MODELS)}. Deep: {', '.join(DEEP_MODELS)}. "
            "The default, fast-cnn, reaches about 99.2 % on MNIST in about 2.3 s on 2 CPU cores "
            "with AVX-512 (about 10 s without). "
            "[default: fast-cnn]",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        str,
        typer.Option(
            help="The model's recipe: default; seed (the tutorial's, for logreg and "
            "seed-cnn); speed-99.5 (fast-cnn-wide, about 99.5 % in about 25 s on 2 CPU "
            "cores with AVX-512, 2 min without; it picks its model). docs/recipes.md describes "
            "each."
        ),
    ] = "default",
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Dataset name. [default: mnist]", show_default=False),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed for every random choice. [default: 0]", show_default=False),
    ] = None,
    set_: SetOption = None,
    config: ConfigOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder. [default: runs/TIME-MODEL-DATASET]", show_default=False),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Let --out replace an existing run or use a non-empty folder.")
    ] = False,
    epochs: Annotated[int | None, typer.Option(help="Deep models: epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Deep models: batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Deep models: peak learning rate.")] = None,
    device: Annotated[str | None, typer.Option(help="Deep models: auto, cpu, cuda or mps.")] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Deep models: continue an interrupted run from its checkpoint; `auto` (with "
            "--out) continues the --out run if it has a checkpoint and starts it otherwise."
        ),
    ] = None,
    adversarial_training: Annotated[
        bool,
        typer.Option(
            help="Deep models: PGD adversarial training at eps 0.3, 7 steps (change with --set "
            "adversarial_eps=..., adversarial_steps=...; docs/robustness.md)."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    log: LogOption = None,
    log_uri: LogUriOption = None,
    profile: ProfileOption = False,
    profile_steps: ProfileStepsOption = None,
    home: HomeOption = None,
) -> None:
    """Train a model, save it with its config and environment, and write its evaluation
    report (report.json, report.html, confusion matrix, misclassified gallery).

    Every setting is a key of the run's config: `--set KEY=VALUE` changes any of them (classic
    models: pipeline parameters such as `--set clf__C=10`), `--config RUN` replays a finished
    run (with overrides), `--resume RUN` continues an interrupted one (Ctrl-C leaves a
    resumable checkpoint). Values are checked before anything is written (docs/training.md)."""
    sets = parse_sets(set_)
    deep_options = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "device": device}
    deep_options = {k: v for k, v in deep_options.items() if v is not None}
    deep_flags = [f"--{k.replace('_', '-')}" for k in deep_options]
    if adversarial_training and "adversarial_eps" not in sets:
        deep_options["adversarial_eps"] = 0.3
    if adversarial_training:
        deep_flags.append("--adversarial-training")
    common = {k: v for k, v in (("dataset", dataset), ("seed", seed)) if v is not None}
    resume, auto, restart = resolve_resume(resume, out, "train")
    overwrite = overwrite or restart
    if resume is not None and not auto:
        if config is not None or sets or deep_options or model or common:
            raise MnistlabError(
                "--resume continues a run with its own config: pass no other settings",
                hint=f"mnistlab train --resume {resume}",
            )
        callbacks = build_callbacks(log, log_uri, profile, profile_steps)
        _train_deep(None, out, overwrite, resume, quiet, home, callbacks)
        return
    saved = read_train_config(config) if config is not None else {}
    kind = saved.get("kind", "classic" if (model or DEFAULT_MODEL) in CLASSIC_MODELS else "deep")
    if model is not None and saved and model != saved.get("model"):
        raise MnistlabError(
            f"--model {model} differs from the replayed run's model {saved.get('model')!r}",
            hint="to change the architecture of a deep run, use --set model=NAME",
        )
    name = model or saved.get("model") or DEFAULT_MODEL
    if model is None and not saved and (name, recipe) not in DEEP_RECIPES:
        name = recipe_owner(recipe) or name  # `--recipe speed-99.5` names its model
    if name not in CLASSIC_MODELS and name not in DEEP_MODELS and not saved:
        raise unknown_name("model", name, (*CLASSIC_MODELS, *DEEP_MODELS))
    if kind == "classic":
        if log:
            deep_flags.append("--log")
        if profile or profile_steps is not None:
            deep_flags.append("--profile")
        if deep_flags:
            raise MnistlabError(
                f"{', '.join(deep_flags)} needs a deep model (for deep models only), not {name!r}",
                hint=f"deep models: {', '.join(DEEP_MODELS)}; classic models take --set "
                "PIPELINE_PARAM=VALUE",
            )
        from mnistlab.training import train_classic

        threads = sets.pop("num_threads", saved.get("num_threads", 0))
        result = train_classic(
            name,
            recipe=saved.get("recipe", recipe),
            dataset=common.get("dataset", saved.get("dataset", "mnist")),
            seed=common.get("seed", saved.get("seed", 0)),
            params={**saved.get("params", {}), **sets},
            out=out,
            overwrite=overwrite,
            home=home,
            log=lambda msg: console.print(escape(msg)),
            num_threads=threads,
        )
        _print_report(result.report, result.run_dir)
        return
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.recipes import get_deep_recipe

    overrides = {**common, **deep_options, **sets}
    if config is not None:
        if saved.get("train_data"):
            raise MnistlabError(
                f"{config} trained on data it was given ({saved['train_data'].get('source')}), "
                "not a dataset's training split: `mnistlab train --config` cannot replay it",
                hint="replay a self-training run with `mnistlab self-train --teacher ...`",
            )
        train_config = TrainConfig.from_run(config, overrides)
    else:
        train_config = get_deep_recipe(name, recipe, **overrides)
    callbacks = build_callbacks(log, log_uri, profile, profile_steps)
    _train_deep(train_config, out, overwrite, resume, quiet, home, callbacks)


def read_train_config(path: Path) -> dict[str, Any]:
    """A run's config.json (``path`` is the folder or the file), checked to be a training run."""
    from mnistlab.runs import read_json

    file = path / "config.json" if path.is_dir() else path
    saved = read_json(file.parent, file.name)
    kind = saved.get("kind")
    if kind not in ("classic", "deep"):
        command = {"pretrain": "pretrain", "finetune": "finetune", "fewshot": "fewshot"}.get(
            str(kind)
        )
        raise MnistlabError(
            f"{file} is the config of a {kind!r} run, not of `mnistlab train`",
            hint=f"replay it with `mnistlab {command} --config {path}`"
            if command
            else "pass the config.json of a `mnistlab train` run",
        )
    return saved


def _train_deep(
    config: Any,
    out: Path | None,
    overwrite: bool,
    resume: Path | None,
    quiet: bool,
    home: Path | None,
    loggers: list[Any] | None = None,
) -> None:
    from mnistlab.training.engine import train_model
    from mnistlab.training.runtime import is_main_process

    extra = {"home": home, "progress": not quiet, "callbacks": loggers or []}
    if resume is not None:  # a config given too (--resume auto) must be the run's own
        result = train_model(config, resume=resume, **extra)
    else:
        result = train_model(config, out=out, overwrite=overwrite, **extra)
    if is_main_process():  # under torchrun, rank 0 alone prints
        _print_report(result.report, result.run_dir)
        print_profile(loggers or [])


def evaluate_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="A run folder written by `mnistlab train`, `mnistlab finetune` or an ensemble."
        ),
    ],
    home: HomeOption = None,
) -> None:
    """Reload a run's model, evaluate it on its test split again, and rewrite its report.

    Works for classic and deep training runs, ensembles, and fine-tuned transformers (a LoRA
    run is evaluated with its adapter on the base model it names).
    """
    from mnistlab.training import evaluate_run

    _print_report(evaluate_run(run_dir, home=home), run_dir)


def search_cmd(
    model: Annotated[
        str, typer.Option("--model", "-m", help=f"Model: {', '.join(CLASSIC_MODELS)}.")
    ] = "svm",
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = "mnist",
    budget: Annotated[float, typer.Option(min=1, help="Seconds; no new candidate after.")] = 60,
    cv: Annotated[int, typer.Option(min=2, help="Cross-validation folds.")] = 3,
    subsample: Annotated[
        int, typer.Option(min=0, help="Training images used (stratified; 0 = all).")
    ] = 10000,
    seed: Annotated[int, typer.Option()] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the table as JSON here.")] = None,
    home: HomeOption = None,
) -> None:
    """Cross-validated hyper-parameter search on the training split (never the test split),
    seeded, within a time budget; prints a table, best first."""
    from mnistlab.io import atomic_write_json
    from mnistlab.training import search_classic

    result = search_classic(
        model,
        dataset=dataset,
        cv=cv,
        budget_seconds=budget,
        subsample=subsample,
        seed=seed,
        home=home,
        log=lambda msg: console.print(escape(msg)),
    )
    table = Table(
        title=f"{model} on {dataset}: {len(result.rows)}/{result.candidates_total} candidates, "
        f"{cv}-fold CV on {result.subsample:,} training images, {result.elapsed_seconds:.0f}s",
        title_justify="left",
    )
    keys = sorted({k for row in result.rows for k in row["params"]})
    for key in keys:
        table.add_column(key)
    for column in ("cv accuracy", "± std", "fit s"):
        table.add_column(column, justify="right")
    for row in result.rows:
        table.add_row(
            *(escape(str(row["params"].get(k, ""))) for k in keys),
            f"{row['mean_accuracy']:.4f}",
            f"{row['std_accuracy']:.4f}",
            f"{row['fit_seconds']:.2f}",
        )
    console.print(table)
    if result.rows:
        sets = " ".join(f"--set {k}={json.dumps(v)}" for k, v in result.best_params.items())
        console.print(f"best: mnistlab train --model {model} --dataset {dataset} {escape(sets)}")
    if out is not None:
        atomic_write_json(out, {**result.__dict__, "best_params": result.best_params})


def ensemble_cmd(
    run_dirs: Annotated[
        list[Path], typer.Argument(help="Deep run folders (same dataset) to average.")
    ],
    tta: Annotated[
        str | None,
        typer.Option(help="Test-time augmentation: shifts or light. [default: none]"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Run folder. [default: runs/TIME-ensemble-DATASET]", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Let --out replace an existing run.")] = False,
    home: HomeOption = None,
) -> None:
    """Average the test-set probabilities of deep runs (optionally with test-time augmentation)
    and write the ensemble as a run folder with its report."""
    from mnistlab.training.ensemble import ensemble_runs

    report = ensemble_runs(run_dirs, out=out, tta=tta, home=home, overwrite=overwrite)
    table = Table(
        title=f"{report['model']} on {report['dataset']}, TTA: {report['tta'] or 'none'}",
        title_justify="left",
    )
    table.add_column("run")
    table.add_column("test accuracy", justify="right")
    for run, accuracy in zip(report["members"], report["member_test_accuracy"], strict=True):
        table.add_row(escape(run), f"{accuracy:.4f}")
    table.add_row("[bold]ensemble[/]", f"[bold]{report['test_accuracy']:.4f}[/]")
    console.print(table)
    console.print(f"report: {escape(str(Path(report['run_dir']) / 'report.html'))}")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("train")(handle_errors(train_cmd))
    app.command("evaluate")(handle_errors(evaluate_cmd))
    app.command("search")(handle_errors(search_cmd))
    app.command("ensemble")(handle_errors(ensemble_cmd))
