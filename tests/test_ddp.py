"""Distributed data-parallel training: torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from mnistlab.training import evaluate_run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    home = tmp_path / "home"
    env = {**os.environ, "MNISTLAB_HOME": str(home), "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "mnistlab",
        "train",
        "--model",
        "fast-cnn",
        "--dataset",
        "mnist-mini",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(run),
        "--quiet",
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("test accuracy") == 1  # rank 0 alone prints the report

    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    report = json.loads((run / "report.json").read_text())
    assert report["test_accuracy"] > 0.5
    assert metrics["test_accuracy"] == report["test_accuracy"]

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1]  # written once, by rank 0
    # One epoch sees every full global batch once: the ranks' shards are disjoint and their
    # counts are summed, not double counted.
    batches = config["num_train"] // config["batch_size"]
    assert lines[0]["step"] == metrics["steps"] == batches
    seen = lines[0]["images_per_second"] * lines[0]["epoch_seconds"]
    assert round(seen) == batches * config["batch_size"]
    assert 0 <= lines[0]["train_accuracy"] <= 1
    assert (run / "checkpoint" / "state.json").is_file()
    assert not list(tmp_path.glob("runs*"))  # no stray run folders from the other rank

    # The saved model is the one that was evaluated.
    again = evaluate_run(run, home=home)
    assert again["test_accuracy"] == report["test_accuracy"]
