"""The resumable optimisation loop shared by pretraining and fine-tuning.

A run is ``rounds`` rounds of ``steps_per_round`` optimizer steps (a round is an epoch for
pretraining, ``eval_every`` steps for fine-tuning). At the end of each round the loop appends a
line to ``metrics.jsonl`` and writes ``checkpoint/`` (model + optimizer + history, through
:mod:`mnistlab.training.checkpoint`: safetensors, no pickle). Every random stream of a round is
derived from ``(seed, round)`` (:func:`mnistlab.training.engine.derive_seed`), so a run resumed
from its last checkpoint ends with the weights of an uninterrupted run.

The learning rate follows :func:`mnistlab.training.engine.lr_at` and the optimizer is
:func:`mnistlab.training.engine.make_optimizer` (AdamW, weight decay on matrices only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.io import atomic_write_bytes
from mnistlab.training import checkpoint as ckpt
from mnistlab.training.engine import TrainConfig, derive_seed, lr_at, make_optimizer

StepFn = Callable[[int, int], dict[str, torch.Tensor]]
"""``step_fn(round, batch_in_round)`` -> named scalar tensors; ``"loss"`` is minimised."""


@dataclass(frozen=True)
class Schedule:
    """How long and how fast: the optimisation settings of a pretraining or fine-tuning run."""

    rounds: int
    steps_per_round: int
    lr: float
    weight_decay: float
    warmup: float = 0.1  # fraction of all steps with linear warmup
    seed: int = 0

    def train_config(self) -> TrainConfig:
        """The engine's config that :func:`lr_at` and :func:`make_optimizer` read (cosine to 0)."""
        return TrainConfig(
            epochs=self.rounds,
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule="cosine",
            warmup=self.warmup,
            seed=self.seed,
        )

    @property
    def total_steps(self) -> int:
        return self.rounds * self.steps_per_round


def autocast(device: torch.device, precision: str) -> Any:
    """bfloat16 autocast when ``precision == "bf16"`` (CPU with avx512_bf16, CUDA), else off."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextmanager
def torch_threads(num_threads: int) -> Any:
    """Use ``num_threads`` CPU threads inside the block (0 = leave torch's default)."""
    before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def progress_bar(console: Any, enabled: bool) -> Any:
    """A transient rich progress bar with ``round`` and ``stats`` fields."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeRemainingColumn as Remaining

    return Progress(
        TextColumn("{task.fields[round]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        Remaining(),
        console=console,
        disable=not enabled,
        transient=True,
    )


@dataclass
class LoopResult:
    """What :func:`run_loop` returns."""

    history: list[dict[str, Any]]
    train_seconds: float
    finished: bool  # all rounds done (False when ``max_rounds`` stopped it early)


def run_loop(
    *,
    run_dir: Path,
    model: nn.Module,
    schedule: Schedule,
    step_fn: StepFn,
    config: Mapping[str, Any],
    resume: bool = False,
    end_of_round: Callable[[int], dict[str, Any]] | None = None,
    max_rounds: int | None = None,
    console: Any = None,
    progress: bool = True,
    label: str = "round",
) -> LoopResult:
    """Optimise ``model``'s trainable parameters with ``step_fn`` for ``schedule``.

    Args:
        run_dir: the run folder (``metrics.jsonl`` and ``checkpoint/`` are written there).
        model: the module whose ``requires_grad`` parameters are trained (and checkpointed).
        schedule: rounds, steps, learning rate, weight decay, seed.
        step_fn: computes one batch's losses (``"loss"`` is back-propagated); it draws its
            random numbers from torch's global generator, seeded per round here.
        config: the run's config dict; its hash is checked when resuming.
        resume: continue from ``run_dir/checkpoint`` (model, optimizer, history, time).
        end_of_round: ``f(round)`` -> more entries for the round's metrics line (evaluation).
        max_rounds: stop after this many rounds in this session (tests, time-boxed jobs); the
            checkpoint lets a later call with ``resume=True`` finish the run.
        console, progress: where to print; show a progress bar.
        label: the name of a round in the output (``epoch``, ``round``).

    Returns:
        A :class:`LoopResult`; ``train_seconds`` adds up all sessions (steps only: not the
        end-of-round evaluation or checkpoint writing).
    """
    from rich.console import Console

    console = console or Console(quiet=not progress, highlight=False)
    optimizer = make_optimizer(model, schedule.train_config())
    train_config = schedule.train_config()
    history: list[dict[str, Any]] = []
    start_round, prior_seconds = 0, 0.0
    if resume:
        state, tensors, _ = ckpt.load_checkpoint(run_dir / "checkpoint", config)
        ckpt.restore(model, optimizer, state, tensors)
        start_round, history, prior_seconds = state["round"], state["history"], state["seconds"]
        lines = "".join(json.dumps(r) + "\n" for r in history)
        atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())
        console.print(f"resuming at {label} {start_round + 1} of {schedule.rounds}")
    else:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    trained = prior_seconds
    step = start_round * schedule.steps_per_round
    stop_at = schedule.rounds
    if max_rounds is not None:
        stop_at = min(stop_at, start_round + max_rounds)
    bar = progress_bar(console, progress)
    task = bar.add_task("train", total=schedule.total_steps, completed=step, round="", stats="")
    with bar:
        for rnd in range(start_round, stop_at):
            torch.manual_seed(derive_seed(schedule.seed, rnd, "torch"))
            bar.update(task, round=f"{label} {rnd + 1}/{schedule.rounds}")
            model.train()
            sums: dict[str, float] = {}
            begin = time.perf_counter()
            for b in range(schedule.steps_per_round):
                lr = lr_at(step, schedule.total_steps, train_config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                values = step_fn(rnd, b)
                optimizer.zero_grad(set_to_none=True)
                values["loss"].backward()
                optimizer.step()
                step += 1
                for key, value in values.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                if step % 5 == 0 or b == schedule.steps_per_round - 1:
                    n = b + 1
                    stats = "  ".join(f"{k} {v / n:.4f}" for k, v in sums.items())
                    bar.update(task, completed=step, stats=stats)
            seconds = time.perf_counter() - begin
            trained += seconds
            record: dict[str, Any] = {
                label: rnd + 1,
                "step": step,
                "lr": lr_at(step - 1, schedule.total_steps, train_config),
                **{f"train_{k}": v / schedule.steps_per_round for k, v in sums.items()},
                "seconds": seconds,
            }
            model.eval()
            if end_of_round is not None:
                record.update(end_of_round(rnd))
            history.append(record)
            ckpt.save_checkpoint(
                run_dir / "checkpoint",
                model=model,
                optimizer=optimizer,
                state={"round": rnd + 1, "history": history, "seconds": trained},
                config=config,
            )
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            console.print(
                "  ".join(
                    f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in record.items()
                    if k not in ("step", "lr")
                )
            )
    model.eval()
    done = len(history) >= schedule.rounds
    return LoopResult(history=history, train_seconds=trained, finished=done)


def plot_history(
    history: list[dict[str, Any]], keys: list[str], path: Path, x: str = "round"
) -> Path:
    """One panel per key of ``history`` (per round) as a PNG; returns ``path``."""
    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    keys = [k for k in keys if any(r.get(k) is not None for r in history)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.2))
    axes = [axes] if len(keys) <= 1 else list(axes)
    xs = [r[x] for r in history]
    for ax, key in zip(axes, keys, strict=False):
        ax.plot(xs, [r.get(key) for r in history], marker="o")
        ax.set_xlabel(x)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
