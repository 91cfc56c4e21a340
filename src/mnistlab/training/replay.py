"""Replay a finished run into TensorBoard or MLflow (``mnistlab runs export``): its config,
every line of ``metrics.jsonl``, ``metrics.json`` and, for MLflow, its artifacts, through the
same loggers as ``--log`` (:mod:`mnistlab.training.loggers`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.training.loggers import LOGGERS, MLflowLogger, RunLogger, TensorBoardLogger


@dataclass
class ReplayResult:
    """What :func:`replay_run` logged."""

    run_dir: Path
    to: str  # tensorboard or mlflow
    where: str  # the event folder, or the MLflow tracking URI
    run_id: str | None  # the MLflow run
    epochs: int  # lines of metrics.jsonl logged (epochs, or rounds)
    rounds: bool  # the lines are fine-tuning rounds
    step_points: int  # step/... points rebuilt from the lines' step curves
    skipped: list[str] = field(default_factory=list)  # what the run has no record of


def replay_run(
    run_dir: str | os.PathLike[str],
    to: str,
    *,
    uri: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> ReplayResult:
    """Log a run that trained without ``--log`` into TensorBoard or MLflow afterwards, through
    the same logger as ``--log`` (:class:`TensorBoardLogger`, :class:`MLflowLogger`): its config,
    every line of ``metrics.jsonl``, ``metrics.json``, and for MLflow its artifacts.

    The step points (``step/train_loss``, ``step/lr``, ...) come from the step curve of each
    line of ``metrics.jsonl`` (``mnistlab train`` runs keep one; pretraining and fine-tuning
    runs have none): the epoch's running means at the curve's steps (exact when every batch
    of the epoch has the batch size, the last one excepted) and the schedule's learning rate.
    They are half as dense as a live log's. A classic run has no curve: its config and
    ``metrics.json`` are logged.

    Args:
        run_dir: a run folder (``config.json``; ``metrics.jsonl`` unless classic).
        to: ``tensorboard`` or ``mlflow``.
        uri: the MLflow tracking URI (as ``--log-uri``).
        log_dir: TensorBoard: the event folder (default: the run's ``tensorboard/``).
        overwrite: replace what this run logged there before (events; the MLflow run with
            the run's ``mnistlab.run_dir`` tag, or the one in ``mlflow_run.json``).

    Raises:
        MnistlabError: not a run folder, a run without metrics, a destination that has this
            run already (without ``overwrite``), a missing package (with its ``pip install``).
    """
    run = Path(run_dir).expanduser()
    config, history = _read_run(run)
    if to not in LOGGERS:
        raise unknown_name("tracker", to, LOGGERS)
    if uri is not None and to != "mlflow":
        raise MnistlabError("--log-uri is MLflow's tracking URI: use it with --to mlflow")
    if log_dir is not None and to != "tensorboard":
        raise MnistlabError("--logdir is TensorBoard's event folder: use it with --to tensorboard")
    logger: RunLogger = TensorBoardLogger(log_dir) if to == "tensorboard" else MLflowLogger(uri)
    logger.bind(run, config)
    where = logger.check_new(overwrite)
    label = "round" if history and "round" in history[0] else "epoch"
    points = _step_points(history, config)
    skipped = [] if history else ["per-epoch metrics and step points (a classic run has none)"]
    if history and not any(points):
        skipped.append("step points (this run's metrics.jsonl keeps no step curve)")
    finished = (run / "metrics.json").is_file()
    if not finished:
        skipped.append("final metrics and artifacts (the run did not finish: no metrics.json)")
    logger.start(int(history[0]["step"]) * int(config.get("epochs", 1)) if history else 0)
    try:
        for record, steps in zip(history, points, strict=True):
            for step, running, lr in steps:
                logger.log_step(running, lr, step)
            logger.log_epoch(record, label)
        logger.ended = finished
    finally:
        logger.close()
    if finished:
        logger.finish()
    return ReplayResult(run, to, where, getattr(logger, "run_id", None), len(history),
                        label == "round", sum(len(p) for p in points), skipped)  # fmt: skip


def _read_run(run: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run folder's config and the lines of its ``metrics.jsonl`` (none for classic runs)."""
    hint = "pass a folder made by mnistlab train, pretrain or finetune (mnistlab runs list)"
    if not (run / "config.json").is_file():
        what = "no such folder" if not run.exists() else "not a run folder (no config.json)"
        raise MnistlabError(f"{run}: {what}", hint=hint)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    path = run / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    history = [json.loads(line) for line in lines if line.strip()]
    if not history and config.get("kind") != "classic":
        raise MnistlabError(
            f"{run} has no metrics to replay: no lines in metrics.jsonl (it never finished an "
            "epoch)",
            hint=hint,
        )
    return config, history


def _step_points(
    history: list[dict[str, Any]], config: Mapping[str, Any]
) -> list[list[tuple[int, dict[str, float], float | None]]]:
    """Per line of ``metrics.jsonl``: ``(step, the epoch's running means, lr)`` at each point
    of its step curve (the curve keeps each interval's means; weighed by its examples)."""
    from mnistlab.training.optim import Schedule

    if not history:
        return []
    per_epoch = int(history[0]["step"])  # steps of the first epoch: of every epoch
    names = {"kind": "schedule"}  # Schedule's field -> the config key
    known = {
        f.name: config[names.get(f.name, f.name)]
        for f in fields(Schedule)
        if f.name != "total_steps" and names.get(f.name, f.name) in config
    }
    schedule = None
    if "lr" in known and "epochs" in config:
        schedule = Schedule(total_steps=int(config["epochs"]) * per_epoch, **known)
    size = config.get("batch_size") if isinstance(config.get("batch_size"), int) else None
    result = []
    for record in history:
        curve = record.get("curve") or {}
        start = int(record["step"]) - per_epoch  # the step before the epoch's first
        examples = round(record.get("images_per_second", 0) * record.get("epoch_seconds", 0))
        short = per_epoch * size - examples if size else 0  # missing from the last batch
        short = short if 0 < short < (size or 0) else 0
        sums: dict[str, float] = {}
        count, last, points = 0, start, []
        for i, step in enumerate(curve.get("step", [])):
            n = (step - last) * (size or 1) - (short if step == start + per_epoch else 0)
            count += n
            for key, values in curve.items():
                if key != "step":
                    sums[key] = sums.get(key, 0.0) + values[i] * n
            running = {f"train_{k}": v / count for k, v in sums.items()}
            lr = float(schedule.lr_at(step - 1)) if schedule is not None else None
            points.append((int(step), running, lr))
            last = step
        result.append(points)
    return result
