"""``--profile`` (``mnistlab.training.profiling.Profiler``, a callback of the one training loop):
real tiny runs on mnist-mini (one CPU thread); the trace parses as a Chrome trace, the top
operators are printed at 80 columns and written, and the weights are those of a run without
profiling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import cli

from mnistlab.training.profiling import plan_steps

TINY_TRAIN = ["-d", "mnist-mini", "--set", "epochs=1", "--set", "num_threads=1", "-q"]


def test_profile_writes_a_trace_and_the_top_operators_and_keeps_the_weights(
    tmp_path: Path,
) -> None:
    plain, profiled = tmp_path / "plain", tmp_path / "profiled"
    cli("train", *TINY_TRAIN, "--out", plain)
    out = cli("train", *TINY_TRAIN, "--out", profiled, "--profile", "--profile-steps", "3")
    # the table, fitting 80 columns (the path line is printed whole)
    table = out[out.index("top operators by self CPU time") :].splitlines()
    assert table[0].startswith("top operators by self CPU time, 3 steps from step 3")
    assert all(len(line) <= 80 for line in table if str(tmp_path) not in line)
    assert "aten::" in out and "calls" in out and "self CUDA" not in out
    # the trace: a Chrome trace (traceEvents), in the folder TensorBoard's plugin reads
    folder = profiled / "profile"
    trace = json.loads((folder / "trace.pt.trace.json").read_text())
    assert trace["traceEvents"] and any(
        e.get("name", "").startswith("aten::") for e in trace["traceEvents"]
    )
    top = json.loads((folder / "top_ops.json").read_text())
    assert top["steps"] == 3 and top["first_step"] == 3
    operators = top["operators"]
    assert 1 <= len(operators) <= 10
    assert all(op["calls"] >= 1 and op["self_cpu_ms"] >= 0 for op in operators)
    assert [op["self_cpu_ms"] for op in operators] == sorted(
        (op["self_cpu_ms"] for op in operators), reverse=True
    )
    assert not any(op["name"].startswith("ProfilerStep") for op in operators)
    markdown = (folder / "top_ops.md").read_text()
    assert f"`{operators[0]['name']}`" in markdown and "| self CPU ms |" in markdown
    # profiling only observes: the same losses and the same weights as without it
    losses = [
        [
            json.loads(line)["train_loss"]
            for line in (run / "metrics.jsonl").read_text().splitlines()
        ]
        for run in (plain, profiled)
    ]
    assert losses[0] == losses[1]
    weights = [(run / "model" / "model.safetensors").read_bytes() for run in (plain, profiled)]
    assert weights[0] == weights[1]
    assert not (plain / "profile").exists()


def test_profile_a_pretraining_run_shorter_than_the_schedule(tmp_path: Path) -> None:
    run_dir = tmp_path / "pre"
    out = cli(
        "pretrain", "--preset", "tiny", "--patch-size", "7", "--epochs", "1", "--max-images",
        "256", "--threads", "1", "-d", "mnist-mini", "--out", run_dir, "--profile",
    )  # fmt: skip
    steps = json.loads((run_dir / "metrics.jsonl").read_text())["step"]
    top = json.loads((run_dir / "profile" / "top_ops.json").read_text())
    assert top["steps"] == min(5, steps) and top["operators"]
    assert "top operators by self CPU time" in out
    assert json.loads((run_dir / "profile" / "trace.pt.trace.json").read_text())["traceEvents"]


def test_profile_options_fail_clearly_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert "--profile needs a deep model" in cli(
        "train", "-m", "logreg", "--profile", "--out", out, code=1
    )
    assert "add --profile" in cli("train", *TINY_TRAIN, "--profile-steps", "2", "--out", out,
                                  code=1)  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize(
    ("remaining", "steps", "plan"),
    [
        (100, 5, (1, 1, 5)),
        (7, 5, (1, 1, 5)),
        (6, 5, (0, 1, 5)),
        (3, 5, (0, 0, 3)),
        (0, 5, (0, 0, 0)),
    ],
)
def test_short_runs_skip_and_warm_up_less(
    remaining: int, steps: int, plan: tuple[int, int, int]
) -> None:
    assert plan_steps(remaining, steps) == plan
