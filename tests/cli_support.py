"""Helpers of the tests that run the command line and read logs back (test_loggers,
test_replay, test_profiling)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from mnistlab.cli.main import app

FLOAT32 = {"rel": 1e-6, "abs": 1e-7}  # TensorBoard stores scalars as float32


def cli(*args: str | Path, code: int = 0) -> str:
    """``mnistlab ARGS`` at 80 columns; its output, after checking the exit status."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def history(run_dir: Path) -> list[dict[str, Any]]:
    """The lines of a run's metrics.jsonl."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def scalars(log_dir: Path) -> Any:
    """TensorBoard's EventAccumulator over an event folder, loaded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    return accumulator.Reload()
