"""Profiling a few training steps (``mnistlab train|pretrain|finetune --profile``): a callback
of the one training loop (:func:`mnistlab.training.loop.fit`) that runs ``torch.profiler``
over a handful of optimizer steps and writes, into the run folder's ``profile/``:

- ``trace.pt.trace.json``: a Chrome trace (open it in https://ui.perfetto.dev or
  ``chrome://tracing``; TensorBoard's profiler plugin, ``torch-tb-profiler``, reads the
  folder too);
- ``top_ops.md`` and ``top_ops.json``: the operators that took the most CPU time of their own
  over those steps (and CUDA time, on a GPU).

The schedule skips the first ``skip`` steps (one-off costs: first allocations, lazy
initialisation), warms up for ``warmup`` steps (recorded, then dropped), and records ``steps``
steps. A run with fewer steps left shortens the skip and the warm-up first. The profiler only
observes: the weights trained are those of a run without it. Under torchrun only the main
process profiles.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_bytes, atomic_write_json
from mnistlab.training.loggers import RunCallback
from mnistlab.training.loop import Loop

DEFAULT_STEPS = 5  # steps recorded
TOP_OPS = 10  # operators in the table
TRACE_FILE = "trace.pt.trace.json"  # the suffix TensorBoard's profiler plugin looks for


@dataclass
class OpTime:
    """One operator's times over the recorded steps (milliseconds)."""

    name: str
    calls: int
    self_cpu_ms: float  # CPU time in the operator itself, not in the operators it called
    cpu_ms: float  # CPU time including the operators it called
    self_cuda_ms: float | None  # on a GPU: device time of its own kernels; else None


def plan_steps(remaining: int, steps: int, skip: int = 1, warmup: int = 1) -> tuple[int, int, int]:
    """``(skip, warmup, recorded)`` steps for a run with ``remaining`` optimizer steps left:
    the skip, then the warm-up, give way first when the run is short."""
    recorded = max(0, min(steps, remaining))
    warmup = max(0, min(warmup, remaining - recorded))
    skip = max(0, min(skip, remaining - recorded - warmup))
    return skip, warmup, recorded


class Profiler(RunCallback):
    """Record ``steps`` training steps with ``torch.profiler`` into ``<run folder>/profile``.

    Args:
        steps: optimizer steps to record.
        out_dir: where the trace and tables go (default: the run folder's ``profile/``).
        top: operators in the table.
        skip, warmup: steps not recorded before them (see the module's docstring).

    After training, :attr:`top_ops` holds the table's rows, :attr:`trace` the trace file and
    :attr:`recorded` the steps recorded (``first_step`` the first of them, 1-based).
    """

    name = "profiler"

    def __init__(
        self,
        steps: int = DEFAULT_STEPS,
        out_dir: str | os.PathLike[str] | None = None,
        top: int = TOP_OPS,
        skip: int = 1,
        warmup: int = 1,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise MnistlabError(f"profile steps must be at least 1, not {steps}")
        self.steps, self.top, self.skip, self.warmup = steps, top, skip, warmup
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.top_ops: list[OpTime] = []
        self.trace: Path | None = None
        self.recorded = 0
        self.first_step = 0
        self.on_gpu = False
        self._profiler: Any = None
        self._left = 0  # profiler steps until the schedule is done

    def directory(self) -> Path:
        """Where the trace and the tables go."""
        return self._folder(self.out_dir, "profile")

    def on_train_start(self, loop: Loop) -> None:
        if not self.enabled or self._profiler is not None or self.trace is not None:
            return
        remaining = loop.epochs * loop.steps_per_epoch - loop.step
        skip, warmup, recorded = plan_steps(remaining, self.steps, self.skip, self.warmup)
        if not recorded:
            return
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        self.on_gpu = loop.device.type == "cuda" and torch.cuda.is_available()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on_gpu else [])
        self.recorded, self.first_step = recorded, loop.step + skip + warmup + 1
        self._left = skip + warmup + recorded
        with warnings.catch_warnings():  # a short run's warm-up of 0 steps: known, said above
            warnings.filterwarnings("ignore", "Profiler won't be using warmup")
            plan = schedule(wait=skip, warmup=warmup, active=recorded, repeat=1)
        self._profiler = profile(activities=activities, schedule=plan, on_trace_ready=self._write)
        self._profiler.start()

    def on_step_end(self, loop: Loop) -> None:
        if self._profiler is None:
            return
        self._profiler.step()
        self._left -= 1
        if self._left <= 0:
            self._stop()

    def on_train_end(self, loop: Loop) -> None:
        self._stop()

    def close(self) -> None:
        self._stop()

    def _stop(self) -> None:
        """End profiling (a run that ended inside the recorded steps writes what it has)."""
        profiler, self._profiler = self._profiler, None
        if profiler is not None:
            profiler.stop()

    def _write(self, profiler: Any) -> None:
        """The schedule's recorded steps are done: write the trace and the tables."""
        folder = self.directory()
        folder.mkdir(parents=True, exist_ok=True)
        self.trace = folder / TRACE_FILE
        profiler.export_chrome_trace(str(self.trace))
        self.top_ops = top_operators(profiler, self.top, self.on_gpu)
        atomic_write_json(
            folder / "top_ops.json",
            {
                "first_step": self.first_step,
                "steps": self.recorded,
                "sort": "self_cpu_ms",
                "operators": [asdict(op) for op in self.top_ops],
            },
        )
        atomic_write_bytes(folder / "top_ops.md", self.markdown().encode())

    def markdown(self) -> str:
        """The table of :attr:`top_ops` in Markdown."""
        cuda = self.on_gpu
        head = "| operator | calls | self CPU ms | CPU total ms |"
        head += " self CUDA ms |" if cuda else ""
        rule = "|---|---:|---:|---:|" + ("---:|" if cuda else "")
        rows = [
            f"| `{op.name}` | {op.calls} | {op.self_cpu_ms:.3f} | {op.cpu_ms:.3f} |"
            + (f" {op.self_cuda_ms or 0.0:.3f} |" if cuda else "")
            for op in self.top_ops
        ]
        title = (
            f"Top {len(self.top_ops)} operators by self CPU time over {self.recorded} training "
            f"steps (from step {self.first_step}; times summed over the steps)"
        )
        return "\n".join([title, "", head, rule, *rows, ""])


def top_operators(profiler: Any, top: int = TOP_OPS, cuda: bool = False) -> list[OpTime]:
    """The ``top`` operators of a finished ``torch.profiler.profile`` by self CPU time (the
    per-step markers ``ProfilerStep`` left out)."""
    averages = [a for a in profiler.key_averages() if not a.key.startswith("ProfilerStep")]
    averages.sort(key=lambda a: a.self_cpu_time_total, reverse=True)
    return [
        OpTime(
            name=a.key,
            calls=int(a.count),
            self_cpu_ms=a.self_cpu_time_total / 1000,
            cpu_ms=a.cpu_time_total / 1000,
            self_cuda_ms=a.self_device_time_total / 1000 if cuda else None,
        )
        for a in averages[:top]
    ]
