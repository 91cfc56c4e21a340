"""Where training runs: the thread count chosen from the CPUs free now, kept when resuming."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from mnistlab.training.runtime import choose_threads, cpus_available, cpus_busy, run_threads


def test_configured_threads_are_taken_as_given() -> None:
    assert choose_threads(3) == (3, "as configured")


def test_auto_threads_leave_a_busy_cpu_alone() -> None:
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = cpus_busy(0.3)
        threads, why = choose_threads(0)
    finally:
        burner.kill()
        burner.wait()
    assert busy >= 0.7, busy  # the burner keeps (about) one CPU busy
    assert 1 <= threads <= max(1, int(cpus_available()) - 1)
    assert why.startswith("auto:")


def test_a_resumed_run_keeps_its_recorded_threads(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "deep", "threads": 1}))
    assert run_threads(0, tmp_path) == (1, "recorded by the interrupted run")
    assert run_threads(2, tmp_path) == (2, "as configured")  # an explicit setting wins
    (tmp_path / "config.json").write_text(json.dumps({"kind": "deep", "threads": True}))
    assert run_threads(0, tmp_path)[1].startswith("auto:")  # a boolean is no thread count


def test_training_settings_skip_the_nan_fill_and_restore_it() -> None:
    import torch

    from mnistlab.training.runtime import training_settings

    before = torch.utils.deterministic.fill_uninitialized_memory
    with training_settings(1, torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.utils.deterministic.fill_uninitialized_memory is False
    assert torch.utils.deterministic.fill_uninitialized_memory == before


def test_the_optimizer_is_fused_on_a_gpu_only() -> None:
    import pytest
    import torch

    from mnistlab.training.optim import make_optimizer

    net = torch.nn.Linear(3, 2)
    for name in ("adamw", "sgd"):
        assert not make_optimizer(net, name, lr=0.1).defaults.get("fused")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    for name in ("adamw", "sgd"):
        assert make_optimizer(net.cuda(), name, lr=0.1).defaults["fused"] is True


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch) -> None:
    import pytest
    import torch

    from mnistlab.errors import MnistlabError
    from mnistlab.training.runtime import Distributed, process_group

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    ddp = Distributed(world=2, rank=1, local_rank=1)
    with (
        pytest.raises(MnistlabError, match="1 CUDA device") as error,
        process_group(ddp, torch.device("cuda")),
    ):
        pass
    assert "--nproc-per-node 1" in error.value.hint
