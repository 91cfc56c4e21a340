"""A torchrun job survives a lost worker: ``--max-restarts 1`` restarts both processes, ``--resume
auto`` continues the run from its last checkpoint, and the run ends with exactly the weights of
a run never interrupted (docs/training.md, "Surviving a lost worker")."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

TRAIN = [
    "-m", "mnistlab", "train", "--model", "fast-cnn", "--dataset", "mnist-mini", "--epochs", "2",
    "--batch-size", "64", "--device", "cpu", "--set", "num_threads=1",
]  # fmt: skip
TIMEOUT = 150  # seconds for one torchrun job; a healthy one takes 10-20 s on 2 CPU cores


def torchrun(*args: str, out: Path, log: Path) -> subprocess.Popen[bytes]:
    """``torchrun --standalone --nproc-per-node 2 ARGS -m mnistlab train ... --out OUT
    --resume auto`` in a process group of its own, output to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    command = [*launch, "--standalone", *args, *TRAIN, "--out", str(out), "--resume", "auto"]
    with open(log, "wb") as handle:
        return subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def finish(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Wait for the job (never longer than TIMEOUT); its output."""
    try:
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output[-4000:]
    return output


def workers(agent: int) -> dict[int, int]:
    """``{rank: pid}`` of the processes torchrun's process ``agent`` started."""
    pids = []
    for task in Path(f"/proc/{agent}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            pids += (task / "children").read_text().split()
    ranks = {}
    for pid in pids:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in env:
            if entry.startswith(b"RANK="):
                ranks[int(entry[5:])] = int(pid)
    return ranks


def epochs_done(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_never_interrupted(
    tmp_path: Path,
) -> None:
    run, whole = tmp_path / "run", tmp_path / "whole"
    log = tmp_path / "restarted.log"
    proc = torchrun("--max-restarts", "1", out=run, log=log)
    try:
        # Epoch 1 is checkpointed (metrics.jsonl is written right after the checkpoint), and
        # rank 1 already waits inside epoch 2 for rank 0: kill it there.
        deadline = time.monotonic() + TIMEOUT
        while epochs_done(run) < 1:
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "epoch 1 never ended"
            time.sleep(0.01)
        os.kill(workers(proc.pid)[1], signal.SIGKILL)
        assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 1
        created = json.loads((run / "config.json").read_text())["created"]
    finally:
        output = finish(proc, log)
    # torchrun restarted the group; the new processes continued the run (same config.json)
    # from the end of epoch 1, and finished it.
    assert "resuming at epoch 2, step 78" in output, output[-4000:]
    assert json.loads((run / "config.json").read_text())["created"] == created

    reference = torchrun(out=whole, log=tmp_path / "whole.log")
    finish(reference, tmp_path / "whole.log")
    weights = [load_file(r / "model" / "model.safetensors") for r in (run, whole)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    curves = [
        [(r["train_loss"], r["train_accuracy"]) for r in map(json.loads, lines)]
        for lines in ((r / "metrics.jsonl").read_text().splitlines() for r in (run, whole))
    ]
    assert curves[0] == curves[1] and len(curves[0]) == 2
