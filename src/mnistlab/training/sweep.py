"""Hyper-parameter sweeps on Optuna, for deep and classic models.

A sweep is a folder and an Optuna study. The folder holds ``sweep.json`` (what is searched,
over which base config, with which budget), the study's SQLite database (``study.db``; or the
study lives on a server given as ``storage``), one run folder per trial and seed under
``trials/``, and the results (:mod:`mnistlab.training.sweep_report`). Trials are scored on a
validation part of the training split (deep models) or by cross-validation on it (classic
models): never on the test split.

Several worker processes can share one study: ``workers`` local processes started by
:func:`run_sweep`, or processes on other machines that join a study on a database server
(:func:`join_sweep`). A worker that dies mid-trial leaves its trial running in the study; its
supervisor marks it failed and enqueues it once more, and on other machines Optuna's
heartbeat does the same after :data:`~mnistlab.training.sweep_study.GRACE_SECONDS`. The
study's storage: :mod:`mnistlab.training.sweep_study`.

Optuna is imported only here: the rest of mnistlab, and ``mnistlab --help``, never need it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.runs import check_out_dir, environment_info, read_json, write_json
from mnistlab.training.sweep_space import Param, short_value
from mnistlab.training.sweep_study import (
    MAX_RETRIES,
    SQLITE_FILE,
    SURPLUS,
    budget_taken,
    open_study,
    shown_url,
    sqlite_url,
)

SETTINGS_FILE = "sweep.json"
STORAGE_ENV = "MNISTLAB_SWEEP_STORAGE"  # workers get the storage URL here, not in argv
DEFAULT_VAL_SIZE = 0.1  # deep sweeps hold out this much of the training split when unset


@dataclass
class SweepSettings:
    """What a sweep searches and its budget; saved as ``sweep.json`` and in the study.

    ``kind`` is ``deep`` (``base`` is a :class:`~mnistlab.training.config.TrainConfig` dict;
    the score is the mean over ``seeds`` of the last epoch's ``val_accuracy``) or ``classic``
    (``base`` holds ``model``, ``recipe``, ``dataset``, ``seed``, ``params``; the score is the
    cross-validated accuracy on ``subsample`` training images, fold by fold).
    """

    kind: str
    base: dict[str, Any]
    space: list[dict[str, Any]]
    trials: int = 20
    timeout_seconds: float | None = None
    seeds: int = 1
    workers: int = 1
    prune: bool = True
    sampler_seed: int = 0
    study: str = "mnistlab"
    cv: int = 3
    subsample: int = 10000

    @property
    def params(self) -> list[Param]:
        return [Param.from_dict(p["name"], p, SETTINGS_FILE) for p in self.space]

    @property
    def steps_per_seed(self) -> int:
        """Pruning steps per seed: epochs (deep) or folds (classic)."""
        return int(self.base.get("epochs", 1)) if self.kind == "deep" else self.cv

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SweepSettings:
        if not isinstance(data, dict):
            raise MnistlabError(f"{where}: not a sweep's settings")
        try:
            settings = cls(**data)
        except TypeError as exc:
            raise MnistlabError(f"{where}: not a sweep's settings ({exc})") from None
        settings.check()
        return settings

    def check(self) -> None:
        """Budget and space checks, and every extreme of the space against the base config.

        Raises:
            MnistlabError: a bad budget or a value the model's config refuses.
        """
        if self.kind not in ("deep", "classic"):
            raise MnistlabError(f"unknown sweep kind {self.kind!r}")
        if self.trials < 1:
            raise MnistlabError(f"--trials must be >= 1; got {self.trials}")
        if self.seeds < 1 or self.workers < 1:
            raise MnistlabError("--seeds and --workers must be >= 1")
        if self.timeout_seconds is not None and self.timeout_seconds <= 0:
            raise MnistlabError("--timeout must be > 0 seconds")
        params = self.params
        if not params:
            raise MnistlabError(
                "nothing to search: give --param NAME=SPEC or --space FILE",
                hint="e.g. --param lr=log:1e-3:3e-2 --param batch_size=choice:128,256,512",
            )
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise MnistlabError(f"a setting is searched twice: {', '.join(names)}")
        for p in params:
            for value in p.values_to_check():
                _trial_config(self, {p.name: value}, 0)


def _trial_config(settings: SweepSettings, params: dict[str, Any], seed_index: int) -> Any:
    """The config one trial's seed trains with (deep: a TrainConfig; classic: a dict)."""
    base = settings.base
    if settings.kind == "deep":
        from mnistlab.training.config import TrainConfig

        reserved = {"seed", "dataset"} & set(params)
        if reserved:
            raise MnistlabError(f"a sweep does not search {', '.join(sorted(reserved))}")
        config = TrainConfig.from_dict(base).with_overrides(params)
        return config.with_overrides({"seed": config.seed + seed_index})
    from mnistlab.models.classic import get_recipe

    recipe = get_recipe(base["model"], base.get("recipe", "default"))
    pipeline = recipe.build(int(base.get("seed", 0)))
    known = pipeline.get_params()
    for name in params:
        if name not in known:  # the steps' own parameters (step__name) are the choices
            steps = [k for k in known if k.count("__") == 1]
            same = [k for k in steps if k.rsplit("__", 1)[-1] == name.rsplit("__", 1)[-1]]
            raise unknown_name(f"parameter of the {base['model']} pipeline", name, steps,
                               likely=same[0] if same else None)  # C -> clf__C
    from mnistlab.training.classic import check_params

    merged = {**base.get("params", {}), **params}
    check_params(pipeline, merged)
    return merged


def deep_settings(base: Any, space: list[Param], **budget: Any) -> SweepSettings:
    """Settings for a sweep over a :class:`~mnistlab.training.config.TrainConfig`; a base
    without validation gets ``val_size`` :data:`DEFAULT_VAL_SIZE` (trials are never scored
    on the test split)."""
    data = base.to_dict()
    if not data.get("val_size"):
        data["val_size"] = DEFAULT_VAL_SIZE
    settings = SweepSettings("deep", data, [p.to_dict() for p in space], **budget)
    settings.check()
    return settings


def classic_settings(
    model: str,
    space: list[Param],
    *,
    recipe: str = "default",
    dataset: str = "mnist",
    seed: int = 0,
    params: dict[str, Any] | None = None,
    **budget: Any,
) -> SweepSettings:
    """Settings for a sweep over a classic model's pipeline parameters (cross-validated on
    the training split)."""
    from mnistlab.models.classic import get_recipe

    get_recipe(model, recipe)  # a clear error for an unknown model or recipe
    base = {"model": model, "recipe": recipe, "dataset": dataset, "seed": seed,
            "params": dict(params or {})}  # fmt: skip
    settings = SweepSettings("classic", base, [p.to_dict() for p in space], **budget)
    settings.check()
    return settings


# -- the study ---------------------------------------------------------------------------


def study_settings(url: str, study: str) -> SweepSettings:
    """The settings a study was started with (what :func:`join_sweep` searches)."""
    found = open_study(url, SweepSettings("deep", {}, [], study=study)).user_attrs
    return SweepSettings.from_dict(found.get("settings"), f"study {study!r}")


def _budget_left(study: Any, settings: SweepSettings) -> bool:
    if budget_taken(study) >= settings.trials:
        return False
    if settings.timeout_seconds is None:
        return True
    started = float(study.user_attrs.get("started", time.time()))
    return time.time() - started < settings.timeout_seconds


# -- one trial ------------------------------------------------------------------------------


def _deep_objective(trial: Any, settings: SweepSettings, sweep_dir: Path, ctx: dict) -> float:
    from mnistlab.training.callbacks import Pruning
    from mnistlab.training.engine import train_model

    params = {p.name: p.suggest(trial) for p in settings.params}
    values, folders = [], []
    for s in range(settings.seeds):
        config = _trial_config(settings, params, s)
        if not config.num_threads:
            config = config.with_overrides({"num_threads": ctx["threads"]})
        out = sweep_dir / "trials" / f"{trial.number:04d}" / f"seed-{config.seed}"
        folders.append(str(out.relative_to(sweep_dir)))
        trial.set_user_attr("runs", folders)
        pruning = Pruning(trial, s * config.epochs, last=settings.seeds * config.epochs - 1)
        result = train_model(
            config, out=out, overwrite=True, progress=False, home=ctx["home"],
            callbacks=[pruning],
        )  # fmt: skip
        last = result.history[-1].get("val_accuracy")
        if last is None:
            raise MnistlabError("the trial has no validation accuracy (val_size is 0)")
        values.append(float(last))
    trial.set_user_attr("values", values)
    return float(sum(values) / len(values))


def _classic_objective(trial: Any, settings: SweepSettings, sweep_dir: Path, ctx: dict) -> float:
    import numpy as np
    import optuna
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    from mnistlab.models.classic import get_recipe

    base = settings.base
    params = {p.name: p.suggest(trial) for p in settings.params}
    merged = _trial_config(settings, params, 0)
    images, labels = ctx["classic_data"]
    recipe = get_recipe(base["model"], base.get("recipe", "default"))
    values = []
    for s in range(settings.seeds):
        seed = int(base.get("seed", 0)) + s
        pipeline = recipe.build(seed).set_params(**merged)
        folds = StratifiedKFold(n_splits=settings.cv, shuffle=True, random_state=seed)
        scores = []
        for k, (fit_idx, val_idx) in enumerate(folds.split(images, labels)):
            fitted = clone(pipeline).fit(images[fit_idx], labels[fit_idx])
            scores.append(float(np.mean(fitted.predict(images[val_idx]) == labels[val_idx])))
            step = s * settings.cv + k
            trial.report(float(np.mean(scores)), step)
            if step < settings.seeds * settings.cv - 1 and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {k + 1}")
        values.append(float(np.mean(scores)))
    trial.set_user_attr("values", values)
    return float(np.mean(values))


def _classic_data(settings: SweepSettings, home: Any) -> tuple[Any, Any]:
    from mnistlab.data import load_dataset, stratified_indices

    train = load_dataset(settings.base.get("dataset", "mnist"), "train", home=home)
    images = train.images.reshape(len(train.labels), -1)
    labels = train.labels
    if settings.subsample and settings.subsample < len(labels):
        _, keep = stratified_indices(labels, settings.subsample, int(settings.base.get("seed", 0)))
        images, labels = images[keep], labels[keep]
    return images, labels


def run_worker(
    sweep_dir: str | os.PathLike[str],
    worker: int = 0,
    *,
    storage: str | None = None,
    home: str | os.PathLike[str] | None = None,
    threads: int = 0,
    log: Callable[[str], None] = print,
) -> int:
    """Run trials of the sweep in ``sweep_dir`` until its budget is spent; returns how many
    this worker ran. Several workers (processes, machines) may run at once on one study.

    Args:
        sweep_dir: the sweep folder (``sweep.json``); trial runs are written under it.
        worker: this worker's number (seeds its sampler; shown in the results).
        storage: the study's URL (default: ``$MNISTLAB_SWEEP_STORAGE``, else the folder's
            SQLite file).
        threads: CPU threads per trial (0: the run's own automatic choice).
    """
    import optuna

    sweep_dir = Path(sweep_dir)
    settings = read_settings(sweep_dir)
    url = storage or os.environ.get(STORAGE_ENV) or sqlite_url(sweep_dir)
    study = open_study(url, settings, worker)
    ctx: dict[str, Any] = {"home": home, "threads": threads}
    if settings.kind == "classic":
        ctx["classic_data"] = _classic_data(settings, home)
    objective = _deep_objective if settings.kind == "deep" else _classic_objective
    host, ran, surplus = socket.gethostname(), 0, False

    def run(trial: Any) -> float:
        nonlocal surplus
        # Workers that finish trials at the same moment (equal trials in lockstep) all find a
        # place left in the budget and each make a trial: the trials numbered past the budget
        # give their place back before they start (`--trials N` runs N, not N + workers - 1).
        if budget_taken(study, before=trial.number) >= settings.trials:
            surplus = True
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("the budget was taken by other workers")
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", os.getpid())
        # From here a resumed sweep can tell this trial's process is gone; before, a trial
        # stopped half-way would stay "running" with no owner and hold a place in the budget.
        sigint["hold"] = False
        start = time.perf_counter()
        try:
            if sigint["stop"]:  # Ctrl-C came while the trial was being created
                raise KeyboardInterrupt
            return objective(trial, settings, sweep_dir, ctx)
        finally:
            sigint["hold"] = True
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 3))

    def said(study: Any, trial: Any) -> None:
        if trial.user_attrs.get(SURPLUS):
            return
        params = " ".join(f"{k}={short_value(v)}" for k, v in trial.params.items())
        if trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"{trial.value:.4f}"
        elif trial.state == optuna.trial.TrialState.PRUNED:
            last = max(trial.intermediate_values, default=None)
            unit = "epoch" if settings.kind == "deep" else "fold"
            outcome = f"pruned after {unit} {last + 1}" if last is not None else "pruned"
        else:
            reason = str(trial.system_attrs.get("fail_reason", "")).strip().splitlines()
            outcome = f"failed: {reason[-1]}" if reason else "failed"
        log(f"trial {trial.number} (worker {worker}): {params} -> {outcome}")

    from mnistlab.training.runtime import stop_on_sigint  # torch: not at import time

    with stop_on_sigint(at_once=True) as sigint:
        sigint["hold"] = True  # Optuna's own bookkeeping (ask, tell) is not cut half-way
        while _budget_left(study, settings):
            study.optimize(run, n_trials=1, catch=(MnistlabError,), callbacks=[said])
            if surplus:  # the budget is spent
                break
            ran += 1
            if sigint["stop"]:  # a Ctrl-C that landed where it could not raise (a finalizer)
                raise KeyboardInterrupt
    return ran


# -- the sweep ------------------------------------------------------------------------------


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a sweep; the finished trials are kept in its study."""

    def __init__(self, sweep_dir: Path) -> None:
        self.message = f"sweep stopped; its finished trials are kept in {sweep_dir}"
        self.hint = f"continue it with: mnistlab sweep --resume {sweep_dir}"
        super().__init__(f"{self.message}\n{self.hint}")


@dataclass
class SweepRun:
    """What :func:`run_sweep` did: the folder, the storage (password hidden), and the worker
    processes that died and were replaced."""

    sweep_dir: Path
    storage: str
    lost_workers: list[int] = field(default_factory=list)


def read_settings(sweep_dir: Path) -> SweepSettings:
    """The settings in a sweep folder's ``sweep.json``."""
    if not (sweep_dir / SETTINGS_FILE).is_file():
        raise MnistlabError(
            f"{sweep_dir} is not a sweep folder (no {SETTINGS_FILE})",
            hint="pass a folder written by `mnistlab sweep`",
        )
    data = read_json(sweep_dir, SETTINGS_FILE)
    return SweepSettings.from_dict(data.get("settings"), str(sweep_dir / SETTINGS_FILE))


def _threads_per_worker(workers: int) -> int:
    from mnistlab.training.runtime import cpus_available

    return max(1, int(cpus_available() // workers))


def run_sweep(
    settings: SweepSettings,
    out: str | os.PathLike[str],
    *,
    storage: str | None = None,
    join: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> SweepRun:
    """Run a sweep into ``out``: create the study (or ``join`` one another machine started,
    or ``resume`` this folder's), then run ``settings.workers`` workers until the budget is
    spent. Results: :func:`mnistlab.training.sweep_report.sweep_results`.

    Args:
        settings: what to search and the budget (:func:`deep_settings`, :func:`classic_settings`).
        out: the sweep folder; it must be new or empty unless ``overwrite`` or ``resume``.
        storage: a database URL (e.g. ``postgresql://user@host/db``) to share the study with
            other machines; default an SQLite file in ``out``.

    Raises:
        MnistlabError: a bad folder, storage or study; KeyboardInterrupt on Ctrl-C (the
        finished trials are kept: resume with ``resume=True``).
    """
    sweep_dir = Path(out).expanduser()
    if not resume:
        if (sweep_dir / SETTINGS_FILE).exists() and not overwrite:
            raise MnistlabError(
                f"{sweep_dir} already holds a sweep",
                hint=f"continue it with `mnistlab sweep --resume {sweep_dir}`, or pass --overwrite",
            )
        check_out_dir(sweep_dir, overwrite or (sweep_dir / SETTINGS_FILE).exists())
        if overwrite:
            (sweep_dir / SQLITE_FILE).unlink(missing_ok=True)
    url = storage or sqlite_url(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(url, settings, create=not (resume or join))
    if resume:
        _fail_dead_trials(study, alive=set())
    dataset = settings.base.get("dataset", "mnist")
    write_json(sweep_dir, SETTINGS_FILE, {
        "kind": "sweep", "storage": shown_url(url), "settings": settings.to_dict(),
        "environment": environment_info([dataset], home=home),
    })  # fmt: skip
    threads = _threads_per_worker(settings.workers)
    log(
        f"sweep {settings.study!r}: {settings.trials} trials of {settings.kind} "
        f"{settings.base.get('model')} on {dataset}, {settings.workers} worker(s) x {threads} "
        f"thread(s), storage {shown_url(url)}"
    )
    run = SweepRun(sweep_dir, shown_url(url))
    try:
        if settings.workers == 1:
            run_worker(sweep_dir, 0, storage=url, home=home, threads=threads, log=log)
        else:
            _supervise(settings, sweep_dir, url, home, threads, run, log)
    except KeyboardInterrupt:
        raise SweepInterrupted(sweep_dir) from None
    return run


def _worker_command(sweep_dir: Path, worker: int, home: Any, threads: int) -> list[str]:
    command = [sys.executable, "-m", "mnistlab.training.sweep", str(sweep_dir), str(worker),
               str(threads)]  # fmt: skip
    return [*command, str(home)] if home is not None else command


def _supervise(
    settings: SweepSettings,
    sweep_dir: Path,
    url: str,
    home: Any,
    threads: int,
    run: SweepRun,
    log: Callable[[str], None],
) -> None:
    """Start the workers, wait, and replace a worker that dies (its running trial is failed
    and enqueued again once), at most ``workers`` times."""
    env = {**os.environ, STORAGE_ENV: url, "PYTHONUNBUFFERED": "1"}
    procs = {
        w: subprocess.Popen(_worker_command(sweep_dir, w, home, threads), env=env)
        for w in range(settings.workers)
    }
    replacements = 0
    study = None
    try:
        while procs:
            time.sleep(0.2)
            for w, proc in list(procs.items()):
                code = proc.poll()
                if code is None:
                    continue
                del procs[w]
                if code == 0:
                    continue
                run.lost_workers.append(proc.pid)
                log(f"worker {w} (pid {proc.pid}) ended with status {code}")
                study = study or open_study(url, settings)
                _fail_dead_trials(study, alive={p.pid for p in procs.values()}, dead=proc.pid)
                if replacements < settings.workers and _budget_left(study, settings):
                    replacements += 1
                    log(f"starting worker {w} again")
                    procs[w] = subprocess.Popen(
                        _worker_command(sweep_dir, w, home, threads), env=env
                    )
    except KeyboardInterrupt:
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def _fail_dead_trials(study: Any, alive: set[int], dead: int | None = None) -> list[int]:
    """Mark this machine's running trials failed when their worker process is gone (``dead``,
    or any pid not alive), and enqueue each once more. Returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or not isinstance(pid, int) or pid in alive:
            continue
        if (dead is not None and pid != dead) or (dead is None and _pid_alive(pid)):
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # it finished in the meantime
            continue
        failed.append(trial.number)
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) <= MAX_RETRIES:
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
                system_attrs={"failed_trial": history[0], "retry_history": history},
            ))  # fmt: skip
    return failed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def join_sweep(
    storage: str,
    study: str,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> SweepRun:
    """Work on a study that another machine started on a database server: its settings are
    read from the study; this machine's trial runs go to ``out``."""
    settings = study_settings(storage, study)
    settings.workers = workers
    return run_sweep(settings, out, storage=storage, join=True, overwrite=overwrite, home=home,
                     log=log)  # fmt: skip


def _worker_main(argv: list[str]) -> int:
    """``python -m mnistlab.training.sweep SWEEP_DIR WORKER THREADS [HOME]`` (started by
    :func:`run_sweep`; the storage URL comes in ``$MNISTLAB_SWEEP_STORAGE``)."""
    sweep_dir, worker, threads = Path(argv[0]), int(argv[1]), int(argv[2])
    home = argv[3] if len(argv) > 3 else None
    try:
        run_worker(sweep_dir, worker, home=home, threads=threads,
                   log=lambda line: print(line, flush=True))  # fmt: skip
    except MnistlabError as exc:
        print(f"error: worker {worker}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
