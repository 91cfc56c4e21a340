"""The one training loop of mnistlab: every trainer (CNNs, MAE/GPT pretraining, fine-tuning,
self-training students, label-quality folds, the pruning fine-tune) runs through
:func:`fit` with a step function that computes one batch's loss.

What the loop owns, so that no trainer repeats it: the learning-rate schedule, the optimizer
step (with gradient clipping), per-epoch random streams, the epoch's metric sums (summed over
the ranks under DDP), ``metrics.jsonl``, checkpoints with bit-exact resume (also from inside
an epoch, after Ctrl-C), and the callbacks (:mod:`mnistlab.training.callbacks`: validation,
early stopping, best weights, the progress bar) that hook into it.

Reproducibility: at every epoch start, torch's global generator and the epoch's augmentation
``generator`` are seeded from ``(seed, epoch)`` (:func:`~mnistlab.training.data.derive_seed`);
a checkpoint written inside an epoch also stores their states. A step function that draws its
random numbers from those two (and is otherwise a function of ``(epoch, batch)``) therefore
resumes to exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_bytes
from mnistlab.training import checkpoint as ckpt
from mnistlab.training.data import derive_seed
from mnistlab.training.optim import Schedule
from mnistlab.training.runtime import (
    Distributed,
    rng_states,
    set_rng_states,
    stop_on_sigint,
    sync,
)


@dataclass
class StepOutput:
    """What a step function returns for one batch.

    ``loss`` is back-propagated (a mean over the batch); ``count`` weighs the batch in the
    epoch's means (its number of examples); ``sums`` are totals over the batch (e.g. the number
    of correct predictions), reported per epoch as ``train_<name> = sum / count``. The loss
    itself is reported as ``train_loss``.
    """

    loss: torch.Tensor
    count: int
    sums: dict[str, torch.Tensor] = field(default_factory=dict)


StepFn = Callable[[int, int, torch.Generator], StepOutput]
"""``step_fn(epoch, batch, generator)``: one batch of an epoch (both 0-based); ``generator``
is the epoch's augmentation generator (a seeded CPU ``torch.Generator``)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after a resumable checkpoint was written."""

    def __init__(self, run_dir: Path, epoch: int, step: int, resume_hint: str) -> None:
        self.run_dir = run_dir
        self.message = (
            f"training interrupted in epoch {epoch}, after step {step}; checkpoint written to "
            f"{run_dir / 'checkpoint'}"
        )
        self.hint = f"resume with: {resume_hint}"
        super().__init__(f"{self.message}\n{self.hint}")


class Callback:
    """A hook into :func:`fit`. Each method gets the running :class:`Loop`; a callback may set
    ``loop.stop = True`` to end training after the current epoch. ``state_dict`` /
    ``load_state_dict`` carry its state through checkpoints (keyed by ``name``)."""

    name = "callback"

    def on_train_start(self, loop: Loop) -> None: ...
    def on_epoch_start(self, loop: Loop) -> None: ...
    def on_step_end(self, loop: Loop) -> None: ...
    def on_epoch_end(self, loop: Loop, record: dict[str, Any]) -> None: ...
    def on_train_end(self, loop: Loop) -> None: ...

    def close(self) -> None:
        """Always called when :func:`fit` returns or raises (release a progress bar, ...)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def checkpoint_tensors(self) -> tuple[dict[str, torch.Tensor] | None, bool]:
        """Tensors to keep in the checkpoint (best weights) and whether they changed."""
        return None, False

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor] | None) -> None:
        """Receive what :meth:`checkpoint_tensors` saved, on resume."""


@dataclass
class LoopResult:
    """What :func:`fit` returns."""

    history: list[dict[str, Any]]  # the lines of metrics.jsonl
    train_seconds: float  # every call of a resumed run added; steps only (no validation, ...)
    finished: bool  # every epoch done, or a callback stopped training
    stopped_early: bool  # a callback stopped training
    step: int  # optimizer steps done


@dataclass
class Loop:
    """The state of a running :func:`fit`, as callbacks see it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    epochs: int
    steps_per_epoch: int
    label: str = "epoch"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    console: Any = None
    epoch: int = 0  # 0-based epoch in progress
    batch: int = 0  # batches of that epoch done
    step: int = 0  # optimizer steps done
    history: list[dict[str, Any]] = field(default_factory=list)
    stop: bool = False
    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    epoch_start: float = 0.0
    carried_count: int = 0  # examples of this epoch done before a resume

    def running(self) -> dict[str, float]:
        """The epoch's means so far (``train_loss``, ...); synchronises the device."""
        return {f"train_{k}": float(v) / max(self.count, 1) for k, v in self.sums.items()}

    def rate(self) -> float:
        """Examples per second of this epoch since this call of :func:`fit` started it."""
        return (self.count - self.carried_count) / max(time.perf_counter() - self.epoch_start, 1e-9)


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    *,
    schedule: Schedule,
    epochs: int,
    steps_per_epoch: int,
    seed: int,
    device: torch.device | None = None,
    run_dir: Path | None = None,
    checkpoint_config: Mapping[str, Any] | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    grad_clip: float | None = None,
    ddp: Distributed | None = None,
    label: str = "epoch",
    max_epochs: int | None = None,
    clock_start: float | None = None,
    resume_hint: str = "",
    console: Any = None,
) -> LoopResult:
    """Train ``model`` for ``epochs`` epochs of ``steps_per_epoch`` steps of ``step_fn``.

    Args:
        model: the module whose state is checkpointed (under DDP, the unwrapped module; the
            step function calls the wrapper).
        optimizer: over ``model``'s trainable parameters; its learning rate is set from
            ``schedule`` before every step.
        step_fn: ``(epoch, batch, generator)`` -> :class:`StepOutput` for one batch.
        schedule: the learning rate per step (``total_steps = epochs * steps_per_epoch``).
        seed: the run's seed, from which every epoch's random streams are derived.
        device: where the step function computes (for syncs and generator states).
        run_dir: the run folder: ``metrics.jsonl`` and ``checkpoint/`` are written there
            (rank 0 only). None: nothing is written (label-quality folds, quick fine-tunes).
        checkpoint_config: the run's config dict; its hash ties checkpoints to it.
        resume: continue from ``run_dir/checkpoint`` (model, optimizer, position, generator
            states, history, callbacks' state, time so far).
        callbacks: hooks, called in this order.
        grad_clip: max L2 norm of all gradients together (None: no clipping).
        ddp: this process's place in a torchrun job (the epoch's sums are summed over ranks;
            Ctrl-C is not caught, the last end-of-epoch checkpoint is the resume point).
        label: the name of an epoch in metrics lines and output (``epoch``, ``round``).
        max_epochs: stop after this many epochs in this call (resumable later).
        clock_start: ``time.perf_counter()`` when this call's clock started (default:
            now); the caller starts it before building the model to count that too.
        resume_hint: the command that resumes the run, printed after Ctrl-C.
        console: a rich console for messages (default: a quiet one).

    Returns:
        A :class:`LoopResult`.

    Raises:
        TrainingInterrupted: Ctrl-C; a checkpoint of the step reached was written first.
        CheckpointError: ``resume`` with a missing, damaged or foreign checkpoint.
    """
    from rich.console import Console

    ddp = ddp or Distributed()
    device = device or torch.device("cpu")
    clock_start = time.perf_counter() if clock_start is None else clock_start
    loop = Loop(model, optimizer, schedule, epochs, steps_per_epoch, label, device,
                console or Console(quiet=True))  # fmt: skip
    main = ddp.main and run_dir is not None
    checkpoint = run_dir / "checkpoint" if run_dir is not None else None
    config = dict(checkpoint_config or {})
    start_batch, prior_seconds, excluded, finished = 0, 0.0, 0.0, False
    partial: dict[str, Any] = {"sums": {}, "count": 0, "seconds": 0.0}
    resumed_rng: dict[str, Any] | None = None
    if resume:
        if checkpoint is None:
            raise MnistlabError("fit(resume=True) needs the run_dir of the checkpoint")
        state, tensors, best = ckpt.load_checkpoint(checkpoint, config)
        ckpt.restore(model, optimizer, state, tensors)
        loop.step, loop.epoch, start_batch = state["step"], state["epoch"], state["batch"]
        loop.history, prior_seconds = state["history"], state["train_seconds"]
        finished, loop.stop = state["finished"], state["stopped_early"]
        partial, resumed_rng = state["partial_epoch"], state["rng"] if start_batch else None
        for cb in callbacks:
            cb.load_state_dict(state["callbacks"].get(cb.name, {}))
            cb.load_checkpoint_tensors(best)
        if main:
            lines = "".join(json.dumps(r) + "\n" for r in loop.history)
            atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())
        loop.console.print(f"resuming at {label} {loop.epoch + 1}, step {loop.step}")
    elif main:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        if checkpoint.is_dir():
            for stale in checkpoint.iterdir():
                stale.unlink()
    generator = torch.Generator()

    def train_seconds() -> float:
        return prior_seconds + time.perf_counter() - clock_start - excluded

    def save(batch: int, finished: bool) -> None:
        best, changed = None, False
        for cb in callbacks:
            tensors, cb_changed = cb.checkpoint_tensors()
            if tensors is not None:
                best, changed = tensors, cb_changed
        state = {
            "epoch": loop.epoch if batch else loop.epoch + 1,  # epochs done when batch is 0
            "batch": batch,
            "step": loop.step,
            "train_seconds": train_seconds(),
            "partial_epoch": partial,
            "rng": {**rng_states(device), "augment": ckpt.generator_state(generator)},
            "history": loop.history,
            "callbacks": {cb.name: cb.state_dict() for cb in callbacks},
            "stopped_early": loop.stop,
            "finished": finished,
        }
        ckpt.save_checkpoint(checkpoint, model=model, optimizer=optimizer, state=state,
                             config=config, best_weights=best, best_changed=changed)  # fmt: skip

    def partial_now() -> dict[str, Any]:
        sums = {k: float(v) for k, v in loop.sums.items()}
        seconds = partial["seconds"] + time.perf_counter() - loop.epoch_start
        return {"sums": sums, "count": loop.count, "seconds": seconds}

    stop_at = epochs if max_epochs is None else min(epochs, loop.epoch + max_epochs)
    try:
        with stop_on_sigint(enabled=not ddp.active) as sigint:
            for cb in callbacks:
                cb.on_train_start(loop)
            for epoch in range(loop.epoch, stop_at if not finished else 0):
                loop.epoch, first = epoch, 0
                generator.manual_seed(derive_seed(seed, epoch, "augment"))
                torch.manual_seed(derive_seed(seed, epoch, "torch"))
                if resumed_rng is not None and start_batch:  # resuming inside this epoch
                    first, resumed = start_batch, resumed_rng
                    set_rng_states(resumed, device)
                    ckpt.set_generator_state(generator, resumed["augment"])
                    resumed_rng = None
                else:
                    partial = {"sums": {}, "count": 0, "seconds": 0.0}
                # Sums restart from the values carried by a checkpoint, so the additions (and
                # the float results) are those of an uninterrupted run. Under DDP only rank 0
                # carries them: they are summed over the ranks.
                carried = partial if ddp.main else {"sums": {}, "count": 0}
                loop.sums = {
                    k: torch.tensor(v, dtype=torch.float64, device=device)
                    for k, v in carried["sums"].items()
                }
                loop.count = loop.carried_count = carried["count"]
                loop.epoch_start = time.perf_counter()
                for cb in callbacks:
                    cb.on_epoch_start(loop)
                model.train()
                for b in range(first, steps_per_epoch):
                    loop.batch = b
                    lr = schedule.lr_at(loop.step)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    out = step_fn(epoch, b, generator)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    if grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                    optimizer.step()
                    loop.step += 1
                    _accumulate(loop, out, device)
                    for cb in callbacks:
                        cb.on_step_end(loop)
                    if sigint["stop"] and checkpoint is not None:
                        sync(device)
                        partial = partial_now()
                        if main:
                            save(b + 1, finished=False)
                        raise TrainingInterrupted(run_dir, epoch + 1, loop.step, resume_hint)
                    if sigint["stop"]:
                        raise KeyboardInterrupt
                sync(device)
                if ddp.active:  # the epoch's sums over all ranks (each example counted once)
                    for value in loop.sums.values():
                        ddp.all_reduce_sum(value)
                    count = torch.tensor(loop.count, device=device)
                    loop.count = int(ddp.all_reduce_sum(count))
                partial = partial_now()
                pause = time.perf_counter()
                seconds = partial["seconds"]
                record: dict[str, Any] = {
                    label: epoch + 1,
                    "step": loop.step,
                    "lr": schedule.lr_at(loop.step - 1),
                    **{f"train_{k}": v / partial["count"] for k, v in partial["sums"].items()},
                    "epoch_seconds": seconds,
                    "images_per_second": partial["count"] / max(seconds, 1e-9),
                }
                model.eval()
                for cb in callbacks:
                    cb.on_epoch_end(loop, record)
                loop.history.append(record)
                finished = loop.stop or epoch + 1 == epochs
                partial = {"sums": {}, "count": 0, "seconds": 0.0}
                if main:
                    save(0, finished=finished)
                    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")
                excluded += time.perf_counter() - pause
                if sigint["stop"] and not finished and checkpoint is not None:
                    raise TrainingInterrupted(run_dir, epoch + 1, loop.step, resume_hint)
                if loop.stop:
                    break
            seconds = train_seconds()
            for cb in callbacks:
                cb.on_train_end(loop)
    finally:
        for cb in callbacks:
            cb.close()
    model.eval()
    done = finished or len(loop.history) >= epochs
    return LoopResult(loop.history, seconds, done, loop.stop, loop.step)


def _accumulate(loop: Loop, out: StepOutput, device: torch.device) -> None:
    """Add a batch's loss and sums to the epoch's (float64, on the device: no sync)."""
    values = {"loss": out.loss.detach().double() * out.count, **out.sums}
    for key, value in values.items():
        total = loop.sums.get(key)
        if total is None:
            total = loop.sums[key] = torch.zeros((), dtype=torch.float64, device=device)
        total += value
    loop.count += out.count
