"""Experiment trackers as callbacks of the one training loop (:func:`mnistlab.training.loop.fit`):
:class:`TensorBoardLogger` and :class:`MLflowLogger`, for ``mnistlab train|pretrain|finetune
--log tensorboard --log mlflow`` and the ``callbacks=`` argument of ``train_model``,
``pretrain`` and ``finetune``.

What each logs:

- per step (every ``every`` optimizer steps, and at each epoch's last step): the epoch's
  running means so far (``step/train_loss``, ``step/train_accuracy``, ... as the progress bar
  shows them) and ``step/lr``, on the axis of optimizer steps;
- per epoch (or fine-tuning round): every number of the epoch's line of ``metrics.jsonl``
  (``train_loss``, ``val_accuracy``, ``lr``, ``epoch_seconds``, ...) under its own name, on the
  axis of epochs (1, 2, ...);
- the run's config as hyper-parameters (MLflow params; TensorBoard: a text table at the start,
  and the hparams plugin with the final metrics once the run folder is complete);
- once the run folder is complete (:func:`finish_loggers`): the numbers of ``metrics.json``
  (``test_accuracy``, ...), and for MLflow the report (``report.json``, ``report.html``, the
  figures), ``config.json``, ``metrics.json(l)`` and the ``model/`` (and ``adapter/``) folder as
  artifacts.

:func:`mnistlab.training.replay.replay_run` (``mnistlab runs export``) logs a finished run's
record afterwards through the same loggers.

The trainers know the run folder only once they have made it, so a logger is *bound* to it
(:func:`bind_loggers`, called by the trainers just before ``fit``): a logger built without a
log folder or config takes the run's. Only the main process logs under ``torchrun``.

The packages are optional extras (``pip install mnistlab[tensorboard]``,
``mnistlab[mlflow]``), imported when a logger is built. Nothing contacts the network unless a
remote MLflow tracking URI is given: the default MLflow store is ``sqlite:///mlflow.db`` in the
current folder (MLflow's own default, what ``mlflow ui`` opens there) with artifacts in
``./mlruns``, and MLflow's telemetry is switched off unless ``MLFLOW_DISABLE_TELEMETRY`` is set.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.io import atomic_write_json
from mnistlab.training.loop import Callback, Loop

LOGGERS = ("tensorboard", "mlflow")
STEP_POINTS = 200  # default: about this many step points over a whole run
ARTIFACT_FILES = ("report.json", "report.html", "config.json", "metrics.json", "metrics.jsonl")
ARTIFACT_DIRS = ("model", "adapter")
MLFLOW_RUN_FILE = "mlflow_run.json"  # in the run folder: which MLflow run it logs to


def _numbers(values: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, float]:
    """The int and float entries of ``values`` as floats (no bools, None, lists, dicts)."""
    skipped = set(skip)
    return {
        k: float(v)
        for k, v in values.items()
        if k not in skipped and isinstance(v, int | float) and not isinstance(v, bool)
    }


def _param_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class RunCallback(Callback):
    """A callback bound to the run folder the trainer makes (:meth:`bind`, before ``fit``) and
    told when that folder is complete (:meth:`finish`): the loggers, the profiler
    (:mod:`mnistlab.training.profiling`)."""

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self.enabled = True

    def bind(self, run_dir: Path | None, config: Mapping[str, Any], enabled: bool = True) -> None:
        """Called by the trainers before ``fit``: the run folder, its config, and whether
        this process works (the main one under torchrun)."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.enabled = enabled

    def finish(self) -> None:
        """Called once the run folder is complete (report, model)."""

    def _folder(self, given: Path | None, name: str) -> Path:
        """``given``, else the run folder's ``name`` folder."""
        if given is not None:
            return given
        if self.run_dir is None:
            owner = type(self).__name__
            raise MnistlabError(f"{owner} needs a folder (or a run folder to bind to)")
        return self.run_dir / name


class RunLogger(RunCallback, ABC):
    """The part the loggers share: binding to the run folder, which step to log, the epoch's
    numbers. Subclasses write them (``_scalars``) and finish the run (``finish``). The hooks
    call :meth:`start`, :meth:`log_step` and :meth:`log_epoch`, which :func:`replay_run` calls
    too with a finished run's ``metrics.jsonl``.

    Args:
        config: the hyper-parameters to record (default: the run's config, from
            :meth:`bind`).
        every: log the running means every this many optimizer steps (default: about
            ``STEP_POINTS`` points over the run); 0 logs no step scalars.
    """

    name = "logger"

    def __init__(self, config: Mapping[str, Any] | None = None, every: int | None = None) -> None:
        super().__init__()
        self.config = dict(config) if config is not None else None
        self.every = every
        self.ended = False  # on_train_end was reached (fit ended normally)

    def bind(self, run_dir: Path | None, config: Mapping[str, Any], enabled: bool = True) -> None:
        super().bind(run_dir, config, enabled)
        if self.config is None:
            self.config = dict(config)

    def on_train_start(self, loop: Loop) -> None:
        self.start(loop.epochs * loop.steps_per_epoch, fresh=loop.step == 0)

    def start(self, total_steps: int, fresh: bool = True) -> None:
        """Open the log for a run of ``total_steps`` optimizer steps; ``fresh``: from its
        first step (not resumed), so the config is recorded."""
        if self.every is None:
            self.every = max(1, total_steps // STEP_POINTS)
        self.ended = False
        if self.enabled:
            self._open(fresh)

    def on_step_end(self, loop: Loop) -> None:
        if not self.enabled or not self.every:
            return
        if loop.step % self.every and loop.batch != loop.steps_per_epoch - 1:
            return
        self.log_step(loop.running(), float(loop.schedule.lr_at(loop.step - 1)), loop.step)

    def log_step(self, running: Mapping[str, float], lr: float | None, step: int) -> None:
        """The epoch's running means (``train_loss``, ...) and the learning rate after
        optimizer step ``step``, as ``step/<name>``."""
        values = {f"step/{k}": v for k, v in running.items()}
        if lr is not None:
            values["step/lr"] = lr
        self._scalars(values, step)

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        # Runs after the callbacks before it (validation): the record has their numbers too.
        if self.enabled:
            self.log_epoch(record, loop.label)

    def log_epoch(self, record: Mapping[str, Any], label: str = "epoch") -> None:
        """Every number of an epoch's (``label``: or round's) line of ``metrics.jsonl``."""
        self._scalars(_numbers(record, skip=(label, "step")), int(record[label]))

    def on_train_end(self, loop: Loop) -> None:
        self.ended = True

    @abstractmethod
    def check_new(self, overwrite: bool = False) -> str:
        """Before a replay: refuse (or with ``overwrite``, remove) what this run already
        logged at the destination; returns the destination in words."""

    def _final_metrics(self) -> dict[str, float]:
        """The numbers of the run's ``metrics.json`` (empty when it has none)."""
        path = self.run_dir / "metrics.json" if self.run_dir is not None else None
        if path is None or not path.is_file():
            return {}
        return _numbers(json.loads(path.read_text(encoding="utf-8")))

    @abstractmethod
    def _open(self, fresh: bool) -> None:
        """Open the destination (``fresh``: record the config too)."""

    @abstractmethod
    def _scalars(self, values: dict[str, float], step: int) -> None:
        """Write ``values`` at ``step``."""


class TensorBoardLogger(RunLogger):
    """Scalars and hyper-parameters as TensorBoard event files (``torch.utils.tensorboard``).

    Args:
        log_dir: where the event files go (default: ``<run folder>/tensorboard``, so that
            ``tensorboard --logdir runs/`` shows every run).
        config, every: see :class:`RunLogger`.

    Raises:
        MnistlabError: the tensorboard package is not installed.
    """

    name = "tensorboard"

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        config: Mapping[str, Any] | None = None,
        every: int | None = None,
    ) -> None:
        super().__init__(config, every)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's module imports the tensorboard package
            raise MnistlabError(
                f"TensorBoard logging needs the tensorboard package ({exc})",
                hint="pip install mnistlab[tensorboard]",
            ) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.writer: Any = None
        self.last_epoch = 0

    def _directory(self) -> Path:
        return self._folder(self.log_dir, "tensorboard")

    def _open(self, fresh: bool) -> None:
        self.writer = self._writer_class(log_dir=str(self._directory()))
        if self.config and fresh:  # a resumed run wrote it at its start
            rows = "\n".join(f"| {k} | {_param_text(v)} |" for k, v in self.config.items())
            self.writer.add_text("config", "| key | value |\n|---|---|\n" + rows, 0)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_epoch(self, record: Mapping[str, Any], label: str = "epoch") -> None:
        super().log_epoch(record, label)
        self.last_epoch = int(record[label])

    def check_new(self, overwrite: bool = False) -> str:
        folder = self._directory()
        events = sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []
        if events and not overwrite:
            raise MnistlabError(
                f"{folder} holds TensorBoard events already ({len(events)} file(s)): this run "
                "was logged or replayed there",
                hint="pass --overwrite to replace them, or --logdir DIR to write elsewhere",
            )
        for path in events:
            path.unlink()
        return str(folder)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> None:
        """The hparams plugin's view: the config with the run's final metrics."""
        if not self.enabled or (self.run_dir is None and self.log_dir is None):
            return
        from torch.utils.tensorboard.summary import hparams

        metrics = self._final_metrics()
        params = {
            k: v if isinstance(v, int | float | str | bool) else _param_text(v)
            for k, v in (self.config or {}).items()
        }
        writer = self._writer_class(log_dir=str(self._directory()))
        try:
            # In the run's own event folder (SummaryWriter.add_hparams would add a subfolder).
            for summary in hparams(params, metrics):
                writer.file_writer.add_summary(summary)
            for key, value in metrics.items():
                writer.add_scalar(key, value, self.last_epoch)
        finally:
            writer.close()


class MLflowLogger(RunLogger):
    """Params, metrics and artifacts as an MLflow run (``mlflow.tracking.MlflowClient``).

    Args:
        tracking_uri: any MLflow tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``,
            ...). Default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the current
            folder. A ``sqlite:`` store keeps new experiments' artifacts in ``mlruns/`` next to
            the database file.
        experiment: the experiment's name (made if missing).
        run_name: the MLflow run's name (default: the run folder's name).
        config, every: see :class:`RunLogger`.

    A resumed mnistlab run logs to the same MLflow run: its id is kept in the run folder's
    ``mlflow_run.json``.

    Raises:
        MnistlabError: the mlflow package is not installed.
    """

    name = "mlflow"

    def __init__(
        self,
        tracking_uri: str | None = None,
        experiment: str = "mnistlab",
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        every: int | None = None,
    ) -> None:
        super().__init__(config, every)
        # Before mlflow is imported: no usage reports leave the machine unless asked for.
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise MnistlabError(
                f"MLflow logging needs the mlflow package ({exc})",
                hint="pip install mnistlab[mlflow]",
            ) from None
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        self.tracking_uri = uri or f"sqlite:///{Path('mlflow.db').resolve()}"
        self.experiment, self.run_name = experiment, run_name
        self._client_class = MlflowClient
        self.client: Any = None
        self.run_id: str | None = None
        self.pending: list[Any] = []  # step metrics, sent in batches

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """An MLflow call; its failures become MnistlabErrors that name the store."""
        try:
            with warnings.catch_warnings():  # e.g. SQLAlchemy deprecations inside mlflow
                warnings.simplefilter("ignore", DeprecationWarning)
                return fn(*args, **kwargs)
        except Exception as exc:  # mlflow raises its own, sqlalchemy's, requests', ...
            raise MnistlabError(
                f"MLflow ({self.tracking_uri}): {what} failed: {exc}",
                hint="check --log-uri (e.g. sqlite:///mlflow.db or http://HOST:5000)",
            ) from exc

    def _connect(self) -> Any:
        if self.client is None:
            self.client = self._call(
                "connecting", self._client_class, tracking_uri=self.tracking_uri
            )
        return self.client

    def check_new(self, overwrite: bool = False) -> str:
        client = self._connect()
        experiment = self._call(
            "reading the experiment", client.get_experiment_by_name, self.experiment
        )
        found: list[str] = []
        if experiment is not None and self.run_dir is not None:
            path = str(self.run_dir.resolve()).replace("'", "\\'")
            runs = self._call(
                "searching runs",
                client.search_runs,
                [experiment.experiment_id],
                filter_string=f"tags.`mnistlab.run_dir` = '{path}'",
            )
            found = [run.info.run_id for run in runs]
        saved = self._saved_run()
        if saved is not None and saved not in found:
            found.append(saved)
        if found and not overwrite:
            raise MnistlabError(
                f"{self.run_dir} is in MLflow already ({self.tracking_uri}, experiment "
                f"{self.experiment!r}, run {', '.join(found)})",
                hint="pass --overwrite to replace it (the MLflow run is deleted first)",
            )
        for run_id in found:
            self._call("deleting the run", client.delete_run, run_id)
        return self.tracking_uri

    def _open(self, fresh: bool) -> None:
        self._connect()
        saved = self._saved_run()
        if saved is not None:  # a resumed run: log on in the same MLflow run
            self.run_id = saved
            self._call("reopening the run", self.client.update_run, saved, status="RUNNING")
            return
        experiment = self._call(
            "reading the experiment", self.client.get_experiment_by_name, self.experiment
        )
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = self._call(
                "creating the experiment",
                self.client.create_experiment,
                self.experiment,
                artifact_location=self._artifacts(),
            )
        tags = {"mnistlab.run_dir": str(self.run_dir.resolve())} if self.run_dir else {}
        name = self.run_name or (self.run_dir.name if self.run_dir is not None else None)
        run = self._call(
            "creating the run", self.client.create_run, experiment_id, run_name=name, tags=tags
        )
        self.run_id = run.info.run_id
        if self.run_dir is not None:
            atomic_write_json(
                self.run_dir / MLFLOW_RUN_FILE,
                {"tracking_uri": self.tracking_uri, "run_id": self.run_id},
            )
        from mlflow.entities import Param

        params = [Param(k[:250], _param_text(v)[:6000]) for k, v in (self.config or {}).items()]
        for start in range(0, len(params), 100):  # MLflow takes 100 params per batch
            self._call(
                "logging params",
                self.client.log_batch,
                self.run_id,
                params=params[start : start + 100],
            )

    def _saved_run(self) -> str | None:
        path = self.run_dir / MLFLOW_RUN_FILE if self.run_dir is not None else None
        if path is None or not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("tracking_uri") != self.tracking_uri:
            return None
        try:  # a run deleted from the store since: start a new one
            run = self._call("reading the run", self.client.get_run, saved["run_id"])
        except MnistlabError:
            return None
        return run.info.run_id if run.info.lifecycle_stage == "active" else None

    def _artifacts(self) -> str | None:
        """A new experiment's artifact folder: ``mlruns/`` next to a sqlite database (else the
        store's default)."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        database = Path(self.tracking_uri.removeprefix("sqlite:///"))
        return (database.parent / "mlruns").resolve().as_uri()

    def _scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, step) for k, v in values.items()]
        if not any(k.startswith("step/") for k in values):  # an epoch's end: send now
            self._flush()

    def _flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:1000], self.pending[1000:]
            self._call("logging metrics", self.client.log_batch, self.run_id, metrics=batch)

    def close(self) -> None:
        if self.client is None or self.run_id is None:
            return
        try:
            self._flush()
            status = "FINISHED" if self.ended else "FAILED"
            self._call("ending the run", self.client.set_terminated, self.run_id, status)
        except MnistlabError:
            if self.ended:  # else training failed: its error is the one to see
                raise

    def finish(self) -> None:
        """The final metrics and the run folder's report, config, metrics and model."""
        if not self.enabled or self.client is None or self.run_id is None or self.run_dir is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = [Metric(k, v, now, 0) for k, v in self._final_metrics().items()]
        if final:
            self._call("logging metrics", self.client.log_batch, self.run_id, metrics=final)
        files = [p for p in sorted(self.run_dir.iterdir()) if p.is_file()]
        for path in files:
            if path.name in ARTIFACT_FILES or path.suffix == ".png":
                self._call("logging artifacts", self.client.log_artifact, self.run_id, str(path))
        for folder in ARTIFACT_DIRS:
            if (self.run_dir / folder).is_dir():
                self._call(
                    "logging artifacts",
                    self.client.log_artifacts,
                    self.run_id,
                    str(self.run_dir / folder),
                    folder,
                )


def make_loggers(
    names: Sequence[str] | None,
    run_dir: str | os.PathLike[str] | None = None,
    config: Mapping[str, Any] | None = None,
    uri: str | None = None,
) -> list[Callback]:
    """The loggers ``--log NAME`` asks for (``tensorboard``, ``mlflow``; repeats count once).

    Args:
        names: logger names.
        run_dir, config: bind them now (default: the trainer binds them to its run).
        uri: the MLflow tracking URI (``--log-uri``).

    Raises:
        MnistlabError: an unknown name, a missing package (with the ``pip install`` hint), or a
            ``uri`` without ``mlflow``.
    """
    wanted = list(dict.fromkeys(names or ()))
    for name in wanted:
        if name not in LOGGERS:
            raise unknown_name("logger", name, LOGGERS)
    if uri is not None and "mlflow" not in wanted:
        raise MnistlabError("--log-uri is MLflow's tracking URI: add --log mlflow")
    loggers: list[Callback] = []
    for name in wanted:
        logger = TensorBoardLogger() if name == "tensorboard" else MLflowLogger(tracking_uri=uri)
        if run_dir is not None:
            logger.bind(Path(run_dir), config or {})
        loggers.append(logger)
    return loggers


def bind_loggers(
    callbacks: Sequence[Callback],
    run_dir: Path | None,
    config: Mapping[str, Any],
    enabled: bool = True,
) -> list[Callback]:
    """``callbacks`` as a list, their loggers (and profiler) bound to the run (see
    :meth:`RunCallback.bind`)."""
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.bind(run_dir, config, enabled)
    return list(callbacks)


def finish_loggers(callbacks: Sequence[Callback]) -> None:
    """Let the loggers (and the profiler) among ``callbacks`` see the completed run folder."""
    for callback in callbacks:
        if isinstance(callback, RunCallback):
            callback.finish()
