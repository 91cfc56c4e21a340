"""Small objects that hook into the one training loop (:func:`mnistlab.training.loop.fit`):
validation, early stopping, best-weights selection, the progress bar, and a plain
per-step hook. Each keeps its own state and saves it in the run's checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from mnistlab.training.loop import Callback, Loop


class Validation(Callback):
    """Adds ``val_loss`` and ``val_accuracy`` to every epoch's record (None without a
    validation set), from ``evaluate() -> (loss, accuracy)`` run at the epoch's end; the time
    it takes is not training time."""

    name = "validation"

    def __init__(self, evaluate: Callable[[], tuple[float, float]] | None) -> None:
        self.evaluate = evaluate

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        loss, accuracy = self.evaluate() if self.evaluate is not None else (None, None)
        record.update(val_loss=loss, val_accuracy=accuracy)


class BestEpoch(Callback):
    """Tracks the best value of ``monitor`` in the epoch records (``val_accuracy`` is higher-
    better, anything else lower-better): ``best = {"value", "epoch"}`` or None."""

    name = "best_epoch"

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best: dict[str, Any] | None = None  # {"value", "epoch"}
        self.improved = False

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        value = record.get(self.monitor)
        self.improved = False
        if value is None:
            return
        higher = self.monitor == "val_accuracy"
        if self.best is None or (
            value > self.best["value"] if higher else value < self.best["value"]
        ):
            self.best, self.improved = {"value": value, "epoch": record[loop.label]}, True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state.get("best")


class EarlyStopping(BestEpoch):
    """Stops training after ``patience`` epochs without a better ``monitor``."""

    name = "early_stopping"

    def __init__(self, monitor: str, patience: int) -> None:
        super().__init__(monitor)
        self.patience = patience
        self.stale_epochs = 0

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        super().on_epoch_end(loop, record)
        self.stale_epochs = 0 if self.improved else self.stale_epochs + 1
        if self.stale_epochs >= self.patience:
            loop.stop = True
            loop.console.print(
                f"early stopping: no {self.monitor} improvement for {self.stale_epochs} "
                f"epochs (best {self.best['value']:.4f} at {loop.label} {self.best['epoch']})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stale_epochs": self.stale_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stale_epochs = state.get("stale_epochs", 0)


class BestWeights(BestEpoch):
    """Keeps a copy of the weights of the best ``monitor`` epoch (saved in the checkpoint) and
    loads them into the model when training ends."""

    name = "best_weights"

    def __init__(self, monitor: str) -> None:
        super().__init__(monitor)
        self.weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        super().on_epoch_end(loop, record)
        if self.improved:
            self.weights = {k: v.detach().clone() for k, v in loop.model.state_dict().items()}

    def on_train_end(self, loop: Loop) -> None:
        if self.weights is not None:
            loop.model.load_state_dict(self.weights)

    def checkpoint_tensors(self) -> tuple[dict[str, torch.Tensor] | None, bool]:
        return self.weights, self.improved

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor] | None) -> None:
        self.weights = tensors


class Hooks(Callback):
    """Plain functions as a callback: ``step(loop)`` after every optimizer step (e.g.
    re-applying pruning masks), ``epoch(loop, record)`` at every epoch's end."""

    name = "hooks"

    def __init__(
        self,
        step: Callable[[Loop], None] | None = None,
        epoch: Callable[[Loop, dict[str, Any]], None] | None = None,
    ) -> None:
        self.step, self.epoch = step, epoch

    def on_step_end(self, loop: Loop) -> None:
        if self.step is not None:
            self.step(loop)

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        if self.epoch is not None:
            self.epoch(loop, record)


class StepCurve(Callback):
    """The training metrics every ``every`` steps (their means over those steps), so that a
    run of one or two epochs still has curves: each epoch's record gets ``curve``,
    ``{"step": [...], "loss": [...], "accuracy": [...], ...}`` (one list per sum the step
    function reports). Its state rides in checkpoints: a resumed run's curve is the same."""

    name = "step_curve"

    def __init__(self, every: int) -> None:
        self.every = max(1, every)
        self.curve: dict[str, list[float]] = {}
        self.last: dict[str, float] = {}  # the epoch's sums (and "count") at the last point

    def on_epoch_start(self, loop: Loop) -> None:
        if loop.count == 0:  # a fresh epoch (a resumed one carries its points and sums)
            self.curve, self.last = {}, {}

    def on_step_end(self, loop: Loop) -> None:
        if loop.step % self.every and loop.batch != loop.steps_per_epoch - 1:
            return
        count = loop.count - self.last.get("count", 0)
        if count <= 0:
            return
        now = {k: float(v) for k, v in loop.sums.items()}
        self.curve.setdefault("step", []).append(loop.step)
        for key, total in now.items():
            mean = (total - self.last.get(key, 0.0)) / count
            self.curve.setdefault(key, []).append(mean)
        self.last = {**now, "count": loop.count}

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        record["curve"] = self.curve
        self.curve, self.last = {}, {}

    def state_dict(self) -> dict[str, Any]:
        return {"curve": self.curve, "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.curve = state.get("curve", {})
        self.last = state.get("last", {})


def format_record(record: dict[str, Any], label: str) -> str:
    """One line for an epoch's record: ``epoch 1  loss 0.21  acc 0.96 ...  3.1s  19,000 img/s``."""
    short = {"train_loss": "loss", "train_accuracy": "acc", "val_accuracy": "val_acc"}
    parts = [f"{label} {record[label]:>3}"]
    for key, value in record.items():
        skip = (label, "step", "lr", "epoch_seconds", "images_per_second", "curve")
        if key in skip or value is None:
            continue
        name = short.get(key, key.removeprefix("train_"))
        parts.append(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}")
    parts.append(f"{record['epoch_seconds']:.2f}s  {record['images_per_second']:,.0f} img/s")
    return "  ".join(parts)


class ProgressBar(Callback):
    """A transient rich progress bar (steps, running loss and accuracy, speed) and one line
    per epoch; in Jupyter, one line updated in place (:class:`NotebookProgress`). Disabled:
    only the epoch lines, on the loop's console."""

    name = "progress"

    def __init__(self, enabled: bool = True, every: int = 10) -> None:
        self.enabled, self.every = enabled, every
        self.bar: Any = None
        self.task: Any = None
        self.started = 0.0

    def on_train_start(self, loop: Loop) -> None:
        total = loop.epochs * loop.steps_per_epoch
        console = loop.console
        if self.enabled and getattr(console, "is_jupyter", False) and not console.quiet:
            # Jupyter: one output line updated in place (rich's live bar needs ipywidgets).
            self.bar, self.task = NotebookProgress(total, loop.step), None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.progress import TimeRemainingColumn as Remaining

        self.bar = Progress(
            TextColumn("{task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            Remaining(),
            console=loop.console,
            disable=not self.enabled,
            transient=True,
        )
        self.task = self.bar.add_task("train", total=total, completed=loop.step, epoch="", stats="")
        self.bar.start()

    def on_epoch_start(self, loop: Loop) -> None:
        self.bar.update(self.task, epoch=f"{loop.label} {loop.epoch + 1}/{loop.epochs}")
        self.started = time.perf_counter()

    def on_step_end(self, loop: Loop) -> None:
        if not self.enabled:
            return
        if loop.step % self.every == 0 or loop.batch == loop.steps_per_epoch - 1:
            running = loop.running()
            stats = f"loss {running['train_loss']:.4f}"
            if "train_accuracy" in running:
                stats += f"  acc {running['train_accuracy']:.4f}"
            self.bar.update(
                self.task, completed=loop.step, stats=f"{stats}  {loop.rate():,.0f} img/s"
            )

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        loop.console.print(format_record(record, loop.label))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class NotebookProgress:
    """The progress bar in Jupyter: one display (an HTML ``<progress>`` and a text line)
    updated in place at most 4 times a second, so an executed notebook keeps one short
    output. Takes :class:`ProgressBar`'s calls to rich's ``Progress``."""

    def __init__(self, total: int, completed: int = 0) -> None:
        from IPython.display import display

        self.total, self.completed = total, completed
        self.fields = {"epoch": "", "stats": ""}
        self.shown_at = 0.0
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def _bundle(self) -> dict[str, str]:
        import html

        text = f"{self.fields['epoch']}  {self.completed}/{self.total}  {self.fields['stats']}"
        bar = f"<progress value='{self.completed}' max='{max(self.total, 1)}'></progress>"
        return {"text/plain": text.strip(), "text/html": f"{bar} <code>{html.escape(text)}</code>"}

    def update(self, task: Any, completed: int | None = None, **fields: Any) -> None:
        self.completed = self.completed if completed is None else completed
        self.fields.update({k: str(v) for k, v in fields.items()})
        now = time.perf_counter()
        if now - self.shown_at >= 0.25 or self.completed >= self.total:
            self.shown_at = now
            self.handle.update(self._bundle(), raw=True)

    def stop(self) -> None:
        self.shown_at = 0.0
        self.update(None)


class Pruning(Callback):
    """Reports each epoch's ``monitor`` to an Optuna trial (step ``offset + epoch - 1``) and
    ends a weak trial by raising ``optuna.TrialPruned`` when the study's pruner says so. The
    sweeps (:mod:`mnistlab.training.sweep`) train with it; ``offset`` numbers the epochs of a
    trial's later seeds after its first's; at step ``last`` (the trial's end) it never prunes."""

    name = "pruning"

    def __init__(
        self, trial: Any, offset: int = 0, monitor: str = "val_accuracy", last: int | None = None
    ) -> None:
        self.trial, self.offset, self.monitor, self.last = trial, offset, monitor, last

    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None:
        value = record.get(self.monitor)
        if value is None:
            return
        step = self.offset + int(record.get(loop.label, len(loop.history) + 1)) - 1
        self.trial.report(float(value), step)
        if step != self.last and self.trial.should_prune():  # at the last step, nothing to save
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {step + 1}: {self.monitor} {value:.4f}")
