"""``mnistlab sweep``: hyper-parameter sweeps on Optuna (mnistlab.training.sweep)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from mnistlab.cli.common import ConfigOption, HomeOption, console, handle_errors
from mnistlab.cli.train import SetOption, read_train_config
from mnistlab.config import parse_sets
from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.training.sweep_space import short_value


def _space(params: list[str] | None, space: Path | None) -> list[Any]:
    from mnistlab.training.sweep_space import parse_param, read_space

    found = read_space(space) if space is not None else []
    return [*found, *(parse_param(p) for p in params or [])]


def _settings(
    model: str | None,
    recipe: str,
    dataset: str | None,
    seed: int | None,
    sets: dict[str, Any],
    config: Path | None,
    space: list[Any],
    budget: dict[str, Any],
) -> Any:
    """The sweep's settings from the same options as `mnistlab train` (one config builder)."""
    from mnistlab.models.classic import CLASSIC_MODELS
    from mnistlab.training.recipes import DEEP_MODELS, DEFAULT_MODEL
    from mnistlab.training.sweep import classic_settings, deep_settings

    saved = read_train_config(config) if config is not None else {}
    name = model or saved.get("model") or DEFAULT_MODEL
    if name not in CLASSIC_MODELS and name not in DEEP_MODELS and not saved:
        raise unknown_name("model", name, (*CLASSIC_MODELS, *DEEP_MODELS))
    common = {k: v for k, v in (("dataset", dataset), ("seed", seed)) if v is not None}
    if saved.get("kind", "classic" if name in CLASSIC_MODELS else "deep") == "classic":
        return classic_settings(
            name,
            space,
            recipe=saved.get("recipe", recipe),
            dataset=common.get("dataset", saved.get("dataset", "mnist")),
            seed=common.get("seed", saved.get("seed", 0)),
            params={**saved.get("params", {}), **sets},
            **budget,
        )
    from mnistlab.training.config import TrainConfig
    from mnistlab.training.recipes import get_deep_recipe

    overrides = {**common, **sets}
    base = (
        TrainConfig.from_run(config, overrides)
        if config is not None
        else get_deep_recipe(name, recipe, **overrides)
    )
    return deep_settings(base, space, **budget)


def sweep_cmd(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Any model of `mnistlab train`. [default: fast-cnn]",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[str, typer.Option(help="The model's recipe to start from.")] = "default",
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Dataset name. [default: mnist]", show_default=False),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="First seed of each trial. [default: 0]", show_default=False)
    ] = None,
    set_: SetOption = None,
    config: ConfigOption = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=SPEC",
            help="A setting to search (repeatable): NAME=log:LOW:HIGH, NAME=float:LOW:HIGH, "
            "NAME=int:LOW:HIGH, NAME=int-log:LOW:HIGH or NAME=choice:A,B,C.",
            show_default=False,
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A YAML or JSON file mapping settings to ranges, e.g. `lr: log:1e-4:0.1`.",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials to finish (pruned ones count).")] = 20,
    timeout: Annotated[
        float | None,
        typer.Option(help="No trial starts after this many seconds.", show_default=False),
    ] = None,
    seeds: Annotated[
        int, typer.Option(min=1, help="Seeds per trial; the score is their mean.")
    ] = 1,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="A database shared by workers on many machines, e.g. postgresql://USER@HOST/DB "
            "(password: PGPASSWORD or ~/.pgpass). [default: SQLite in the sweep folder]",
            show_default=False,
        ),
    ] = None,
    study: Annotated[str, typer.Option(help="The study's name in --storage.")] = "mnistlab",
    join: Annotated[
        bool,
        typer.Option(help="Work on a study another machine started in --storage (its settings)."),
    ] = False,
    prune: Annotated[
        bool, typer.Option(help="Stop trials below the median of earlier ones at the same epoch.")
    ] = True,
    sampler_seed: Annotated[int, typer.Option(help="Seed of the TPE sampler.")] = 0,
    cv: Annotated[int, typer.Option(min=2, help="Classic models: cross-validation folds.")] = 3,
    subsample: Annotated[
        int, typer.Option(min=0, help="Classic models: training images used (0 = all).")
    ] = 10000,
    out: Annotated[
        Path | None,
        typer.Option(help="Sweep folder. [default: sweeps/TIME-sweep-MODEL]", show_default=False),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(metavar="SWEEP", help="Continue an interrupted sweep.", show_default=False),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a sweep in --out.")] = False,
    home: HomeOption = None,
) -> None:
    """Search hyper-parameters of any model with Optuna: TPE sampling, pruning of weak trials
    from each epoch's validation accuracy, several seeds per trial, local workers or many
    machines on one database. Trials are scored on a validation part of the training split
    (classic models: cross-validation on it), never on the test split. The best trial's
    config is written to SWEEP/best/config.json: `mnistlab train --config SWEEP/best`
    replays it (docs/ecosystem.md, "Sweeps")."""
    from mnistlab.training.sweep import join_sweep, read_settings, run_sweep
    from mnistlab.training.sweep_report import sweep_results

    def log(line: str) -> None:
        console.print(escape(line), soft_wrap=True)

    if resume is not None:
        if param or space or set_ or config or model or join:
            raise MnistlabError(
                "--resume continues a sweep with its own settings: pass no other settings",
                hint=f"mnistlab sweep --resume {resume}",
            )
        _check_storage_given(resume, storage)
        run_sweep(read_settings(resume), resume, storage=storage, resume=True, home=home, log=log)
        _print_results(sweep_results(resume, storage))
        return
    if join:
        if storage is None or out is None:
            raise MnistlabError(
                "--join needs --storage URL (the study's database) and --out (this machine's "
                "sweep folder)",
                hint="mnistlab sweep --join --storage postgresql://USER@HOST/DB --study NAME "
                "--out sweeps/here",
            )
        join_sweep(storage, study, out, workers=workers, overwrite=overwrite, home=home, log=log)
        _print_results(sweep_results(out, storage))
        return
    budget = {"trials": trials, "timeout_seconds": timeout, "seeds": seeds, "workers": workers,
              "prune": prune, "sampler_seed": sampler_seed, "study": study, "cv": cv,
              "subsample": subsample}  # fmt: skip
    settings = _settings(
        model, recipe, dataset, seed, parse_sets(set_), config, _space(param, space), budget
    )
    if out is None:
        from mnistlab.runs import new_run_dir

        out = new_run_dir(f"sweep-{settings.base['model']}", Path("sweeps"))
    run_sweep(settings, out, storage=storage, overwrite=overwrite, home=home, log=log)
    _print_results(sweep_results(out, storage))


def _check_storage_given(sweep: Path, storage: str | None) -> None:
    """A sweep on a database server is resumed with its URL (the folder never holds the
    password)."""
    from mnistlab.runs import read_json
    from mnistlab.training.sweep import SETTINGS_FILE
    from mnistlab.training.sweep_study import SQLITE_FILE

    if storage is None and (sweep / SETTINGS_FILE).is_file():
        saved = str(read_json(sweep, SETTINGS_FILE).get("storage", ""))
        if saved and not saved.endswith(SQLITE_FILE):
            raise MnistlabError(
                f"{sweep} keeps its study in {saved}: give its URL again",
                hint=f"mnistlab sweep --resume {sweep} --storage URL",
            )


def _print_results(result: Any) -> None:
    names = [p.name for p in result.settings.params]
    table = Table(title=f"sweep {result.settings.study} (best first)", title_justify="left")
    table.add_column("trial", justify="right")
    table.add_column("settings", overflow="fold")
    for column in ("score", "state"):
        table.add_column(column, justify="right")
    order = sorted(result.rows, key=lambda r: (r["value"] is None, -(r["value"] or 0.0)))
    for r in order[:15]:
        settings = " ".join(f"{n}={short_value(r['params'][n])}"  # none yet: just made
                            for n in names if n in r["params"])  # fmt: skip
        score = "" if r["value"] is None else f"{r['value']:.4f}"
        table.add_row(str(r["trial"]), escape(settings), score, r["state"])
    console.print(table)
    if len(order) > 15:
        more = f"... and {len(order) - 15} more in {result.sweep_dir / 'results.md'}"
        console.print(escape(more), soft_wrap=True)
    console.print(result.pruning_summary(), soft_wrap=True)
    best = result.best
    if best is None:
        console.print("no trial completed: no best config")
        return
    where = "validation" if result.settings.kind == "deep" else "cross-validation"
    console.print(
        f"[bold]best: trial {best['trial']}, {where} score {best['value']:.4f}[/]\n"
        f"replay it: mnistlab train --config {escape(str(result.sweep_dir / 'best'))}\n"
        f"results: {escape(str(result.sweep_dir))}/results.md, sweep.png",
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to the ``mnistlab`` command."""
    app.command("sweep")(handle_errors(sweep_cmd))
