"""Where training runs: the thread count chosen from the CPUs free now, kept when resuming."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistlab.errors import MnistlabError
from mnistlab.models.inference import native_bf16, resolve_precision
from mnistlab.training.config import TrainConfig
from mnistlab.training.recipes import DEEP_RECIPES
from mnistlab.training.runtime import (
    choose_threads,
    cpus_available,
    cpus_busy,
    precision_in_use,
    run_threads,
    stop_on_sigint,
)


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


def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_kernels() -> None:
    """bf16 without AVX-512 is emulated (a default run ~11x slower than fp32 on an AVX2 EPYC):
    "auto" takes it where oneDNN has AVX-512 or AMX kernels, as /proc/cpuinfo says."""
    cpu = torch.device("cpu")
    if platform.machine() in ("x86_64", "AMD64") and Path("/proc/cpuinfo").is_file():
        flags = set()
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
        avx512 = {"avx512bw", "avx512vl", "avx512dq"} <= flags
        assert native_bf16(cpu) == (avx512 or "amx_bf16" in flags), sorted(flags)
    assert resolve_precision(cpu, "auto") == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision(cpu, "fp32") == "fp32" and resolve_precision(cpu, "bf16") == "bf16"
    assert precision_in_use(cpu, "fp32") == ("fp32", None)
    assert precision_in_use(cpu, "auto")[1] is None  # auto never picks an emulated bf16
    used, warning = precision_in_use(torch.device("mps"), "bf16")  # no bf16 units there
    assert used == "bf16" and warning is not None and "precision=auto" in warning
    assert precision_in_use(torch.device("mps"), "auto") == ("fp32", None)


def test_the_recipes_ask_for_auto_precision_and_the_config_checks_the_word() -> None:
    assert {r.precision for r in DEEP_RECIPES.values()} <= {"auto", "fp32"}
    TrainConfig(precision="auto").validate()
    with pytest.raises(MnistlabError, match="precision must be one of auto, fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def test_a_model_trained_in_bf16_is_read_in_bf16_only_where_that_is_fast() -> None:
    import mnistlab
    from mnistlab.models.hub import resolve_pretrained
    from mnistlab.models.inference import load_predictor, predict_proba

    predictor = load_predictor(resolve_pretrained("pretrained:handwriting"))
    assert predictor.manifest["config"]["precision"] == "bf16"  # how it was trained
    images = mnistlab.load_dataset("mnist-mini", "test", download=False).images[:64]
    used = resolve_precision(torch.device("cpu"), "auto")
    expected = predict_proba(predictor.model, images, predictor.manifest["normalization"],
                             precision=used, channels_last=True)  # fmt: skip
    np.testing.assert_array_equal(predictor.predict_proba(images), expected)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_a_finalizer_swallows_is_still_seen() -> None:
    """A sweep lost a Ctrl-C in CI: the KeyboardInterrupt was raised inside SQLAlchemy's weakref
    callback, where Python prints "Exception ignored" and goes on. With ``at_once`` the
    interrupt raises where it lands and also sets the flag the sweep checks after each trial."""

    class Finalized:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000):  # the handler runs here, inside the finalizer
                pass

    with stop_on_sigint(at_once=True) as sigint:
        Finalized()  # collected at once: the interrupt is raised in __del__ and dropped
        time.sleep(0.05)
        assert sigint["stop"]  # ... but the flag says it came
        with pytest.raises(KeyboardInterrupt):  # elsewhere it raises where it lands
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    with stop_on_sigint(at_once=True) as sigint:  # ... unless the caller holds it off
        sigint["hold"] = True
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert sigint["stop"]
    with stop_on_sigint() as sigint:  # the training loop's kind: the first one only flags
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert sigint["stop"]
