"""The deep-learning engine: run folder, learning, determinism, schedules, checkpoints and
resume (after SIGKILL and after Ctrl-C), early stopping, validation hygiene, loss options.

Tiny CNN on the bundled ``mnist-mini`` (5,000 train / 1,000 test real MNIST images), one
CPU thread, so the whole file runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from safetensors.torch import load_file
from torch import nn

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models.inference import Normalization
from mnistlab.training import engine
from mnistlab.training.checkpoint import CheckpointError, config_sha256
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import schedule_of, train_model
from mnistlab.training.runtime import tune_cpu_allocator

TESTS = Path(__file__).resolve().parent


class TinyNet(nn.Module):
    """Two strided convolutions and a linear layer (~8k parameters), with dropout."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.dropout = nn.Dropout(0.1)
        self.fc = nn.Linear(16 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(self.dropout(x.flatten(1)))


class SlowTinyNet(TinyNet):
    """The same network (same initialization), slowed down so a test can kill it mid-epoch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.004)
        return super().forward(x)


def tiny(name: str, num_classes: int) -> nn.Module:
    return TinyNet(num_classes)


def slow_tiny(name: str, num_classes: int) -> nn.Module:
    return SlowTinyNet(num_classes)


# 3 epochs of 70 steps, augmentation and dropout on: every random stream is exercised.
BASE = TrainConfig(
    model="tiny",
    dataset="mnist-mini",
    epochs=3,
    batch_size=64,
    lr=3e-3,
    val_size=500,
    augment="light",
    seed=0,
    num_threads=1,
    device="cpu",
)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model" / "model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timings(records: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")}
        for r in records
    ]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[engine.TrainResult, list[str]]:
    """One uninterrupted run of BASE, recording which splits were evaluated, in order."""
    evaluated: list[str] = []
    real_evaluate = engine.evaluate

    def spy(model, data, *args):
        evaluated.append(data.split)
        return real_evaluate(model, data, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "evaluate", spy)
        result = train_model(
            BASE, out=tmp_path_factory.mktemp("base") / "run", model_factory=tiny, progress=False
        )
    return result, evaluated


# ---------------------------------------------------------------------------- run folder


def test_run_writes_every_file_and_learns(base_run) -> None:
    result, _ = base_run
    run = result.run_dir
    for name in (
        "config.json",
        "environment.json",
        "metrics.jsonl",
        "metrics.json",
        "model/model.safetensors",
        "model/model.json",
        "report.json",
        "report.html",
        "training_curves.png",
        "checkpoint/state.json",
        "checkpoint/state.safetensors",
    ):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "deep"
    assert TrainConfig.from_dict({k: config[k] for k in BASE.to_dict()}) == BASE
    assert config["num_train"] == 4500 and config["num_val"] == 500 and config["num_test"] == 1000
    assert abs(config["normalization"]["mean"] - 0.1307) < 0.01
    assert abs(config["normalization"]["std"] - 0.3081) < 0.01
    assert "mnist-mini" in json.loads((run / "environment.json").read_text())["data_sha256"]

    lines = metric_lines(run)
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert [r["step"] for r in lines] == [70, 140, 210]
    for r in lines:
        assert set(r) == {
            "epoch",
            "step",
            "lr",
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "epoch_seconds",
            "images_per_second",
            "curve",
        }
        assert r["images_per_second"] > 0 and r["val_accuracy"] is not None
        # The curve: the training metrics every few steps, their counts weighted back to the
        # epoch's means.
        curve = r["curve"]
        assert set(curve) == {"step", "loss", "accuracy"} and curve["step"][-1] == r["step"]
        assert len(curve["step"]) == len(curve["loss"]) >= 2
        assert all(0 <= a <= 1 for a in curve["accuracy"])
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]

    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["architecture"] == "tiny"
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["normalization"] == config["normalization"]
    assert meta["config"] == BASE.to_dict()
    model, _ = engine.load_trained_model(run, model_factory=tiny)
    assert_same_weights(model.state_dict(), weights(run))

    report = json.loads((run / "report.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert report["test_accuracy"] == metrics["test_accuracy"] == result.test_accuracy
    assert report["train_seconds"] == metrics["train_seconds"] == result.train_seconds > 0
    assert result.test_accuracy > 0.85  # chance is 0.10
    html = (run / "report.html").read_text()
    assert "Training curves" in html and report["sections"] == ["Training curves"]


def test_validation_never_touches_the_test_split(base_run) -> None:
    _, evaluated = base_run
    assert evaluated == ["val", "val", "val", "test"]  # test: once, after training


# ---------------------------------------------------------------------------- determinism


def test_same_seed_same_weights_other_seed_differs(base_run, tmp_path: Path) -> None:
    base, _ = base_run
    again = train_model(BASE, out=tmp_path / "again", model_factory=tiny, progress=False)
    assert_same_weights(weights(base.run_dir), weights(again.run_dir))
    assert without_timings(metric_lines(base.run_dir)) == without_timings(
        metric_lines(again.run_dir)
    )
    assert again.test_accuracy == base.test_accuracy

    other = train_model(
        replace(BASE, seed=1, epochs=1), out=tmp_path / "other", model_factory=tiny, progress=False
    )
    first = train_model(
        replace(BASE, epochs=1), out=tmp_path / "first", model_factory=tiny, progress=False
    )
    a, b = weights(first.run_dir), weights(other.run_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- schedules


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    return schedule_of(config, total).lr_at(step)


def test_schedules_at_known_steps() -> None:
    cfg = TrainConfig(lr=1.0, epochs=10, warmup=0.1, final_lr=0.0)
    total = 100
    onecycle = replace(cfg, schedule="onecycle")
    assert lr_at(0, total, onecycle) == pytest.approx(0.1)  # warmup: lr / 10 steps
    assert lr_at(4, total, onecycle) == pytest.approx(0.5)
    assert lr_at(9, total, onecycle) == pytest.approx(1.0)
    assert lr_at(10, total, onecycle) == pytest.approx(1.0)
    assert lr_at(55, total, onecycle) == pytest.approx(0.5)
    assert lr_at(99, total, onecycle) == pytest.approx(1 / 90)

    cosine = replace(cfg, schedule="cosine", final_lr=0.1)
    assert lr_at(10, total, cosine) == pytest.approx(1.0)
    assert lr_at(55, total, cosine) == pytest.approx(0.55)
    assert lr_at(100, total, cosine) == pytest.approx(0.1)
    assert lr_at(32, total, replace(cosine, final_lr=0.0)) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 22 / 90))
    )

    step = replace(cfg, schedule="step", warmup=0.0, step_epochs=3, step_gamma=0.1)
    assert [lr_at(s, total, step) for s in (0, 29, 30, 59, 60, 99)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001]
    )
    constant = replace(cfg, schedule="constant", warmup=0.0)
    assert {lr_at(s, total, constant) for s in range(total)} == {1.0}


def test_config_round_trip_and_checks() -> None:
    cfg = replace(BASE, grad_clip=1.0, early_stopping=2, select_best=True)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(MnistlabError, match="unknown training config"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(MnistlabError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(MnistlabError, match="validation set"):
        TrainConfig(early_stopping=3)
    with pytest.raises(MnistlabError, match="augmentation preset"):
        TrainConfig(augment="nope")


# ---------------------------------------------------------------------------- resume


def _start_subprocess(out: Path) -> subprocess.Popen:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from test_engine import BASE, slow_tiny\n"
        "from mnistlab.training.engine import train_model\n"
        "train_model(BASE, out=sys.argv[2], model_factory=slow_tiny, progress=False)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(TESTS), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _wait_for_epochs(proc: subprocess.Popen, run: Path, epochs: int, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= epochs:
            return
        if proc.poll() is not None:
            pytest.fail(f"training subprocess ended early:\n{proc.stdout.read().decode()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("training subprocess did not finish an epoch in time")


def test_sigkill_then_resume_gives_identical_weights(base_run, tmp_path: Path) -> None:
    run = tmp_path / "killed"
    proc = _start_subprocess(run)
    _wait_for_epochs(proc, run, 1)
    time.sleep(0.1)  # a little into epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["batch"] == 0 and state["epoch"] < BASE.epochs  # killed between checkpoints
    assert not (run / "model").exists()

    tampered = tmp_path / "tampered"
    shutil.copytree(run, tampered)
    data = bytearray((tampered / "checkpoint" / "state.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of the last tensor
    (tampered / "checkpoint" / "state.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        train_model(resume=tampered, model_factory=tiny, progress=False)

    # A run written before a TrainConfig field existed (here: "compile", at its default) has
    # neither the key in config.json nor in its checkpoint's config hash: it still resumes.
    older = tmp_path / "older"
    shutil.copytree(run, older)
    config = json.loads((older / "config.json").read_text())
    del config["compile"]
    (older / "config.json").write_text(json.dumps(config))
    state = json.loads((older / "checkpoint" / "state.json").read_text())
    fields = {k: v for k, v in config.items() if k in BASE.to_dict()}
    state["config_sha256"] = config_sha256(fields)
    (older / "checkpoint" / "state.json").write_text(json.dumps(state))
    resumed_older = train_model(resume=older, model_factory=tiny, progress=False)

    resumed = train_model(resume=run, model_factory=tiny, progress=False)
    base, _ = base_run
    assert_same_weights(weights(resumed_older.run_dir), weights(base.run_dir))
    assert_same_weights(weights(resumed.run_dir), weights(base.run_dir))
    assert without_timings(metric_lines(run)) == without_timings(metric_lines(base.run_dir))
    assert resumed.test_accuracy == base.test_accuracy
    with pytest.raises(MnistlabError, match="nothing to resume"):
        train_model(resume=run, model_factory=tiny, progress=False)


def test_ctrl_c_writes_mid_epoch_checkpoint_and_resume_is_exact(base_run, tmp_path: Path) -> None:
    run = tmp_path / "interrupted"
    proc = _start_subprocess(run)
    _wait_for_epochs(proc, run, 1)
    time.sleep(0.15)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode != 0
    assert f"--resume {run}" in output
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    assert state["batch"] > 0  # stopped inside an epoch, at a step boundary
    assert state["rng"]["augment"] is not None

    resumed = train_model(resume=run, model_factory=tiny, progress=False)
    base, _ = base_run
    assert_same_weights(weights(resumed.run_dir), weights(base.run_dir))
    assert without_timings(metric_lines(run)) == without_timings(metric_lines(base.run_dir))


# ---------------------------------------------------------------------------- options


def test_early_stopping_stops_when_validation_stalls(tmp_path: Path) -> None:
    # lr = 0: the weights never change, so the validation accuracy never improves.
    cfg = replace(BASE, lr=0.0, epochs=5, early_stopping=2, augment=None)
    result = train_model(cfg, out=tmp_path / "run", model_factory=tiny, progress=False)
    assert result.stopped_early and result.epochs_run == 3 and result.best_epoch == 1
    assert len(metric_lines(result.run_dir)) == 3


def test_label_smoothing_loss_matches_torch(tmp_path: Path) -> None:
    # lr = 0 and no dropout: the epoch's train loss is the mean
    # smoothed cross-entropy of the initial model over all 5,000 images (batches of 500).
    cfg = replace(BASE, lr=0.0, epochs=1, batch_size=500, val_size=0, augment=None)
    cfg = replace(cfg, label_smoothing=0.2)
    result = train_model(cfg, out=tmp_path / "run", model_factory=_no_dropout, progress=False)
    train = load_dataset("mnist-mini", "train")
    x = Normalization.of(train.images)(torch.from_numpy(train.images).unsqueeze(1))
    y = torch.from_numpy(train.labels)
    torch.manual_seed(cfg.seed)
    model = _no_dropout("tiny", 10)
    with torch.no_grad():
        logits = model(x)
    smoothed = F.cross_entropy(logits, y, label_smoothing=0.2).item()
    plain = F.cross_entropy(logits, y).item()
    assert result.history[0]["train_loss"] == pytest.approx(smoothed, rel=1e-5)
    assert result.history[0]["train_loss"] != pytest.approx(plain, rel=1e-3)


def _no_dropout(name: str, num_classes: int) -> nn.Module:
    """TinyNet without dropout and with larger output weights (confident, wrong predictions:
    a loss where label smoothing makes a clear difference)."""
    model = TinyNet(num_classes)
    model.dropout.p = 0.0
    with torch.no_grad():
        model.fc.weight.mul_(30)
    return model


def test_grad_clip_bounds_each_update(tmp_path: Path) -> None:
    # Plain SGD (no momentum, no decay): each step moves the weights by lr * clipped gradient,
    # so after n steps they moved at most n * lr * grad_clip.
    cfg = replace(
        BASE,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        warmup=0.0,
        lr=0.5,
        epochs=1,
        val_size=0,
        augment=None,
    )
    torch.manual_seed(cfg.seed)
    start = TinyNet(10).state_dict()

    def moved(result: engine.TrainResult) -> float:
        end = result.model.state_dict()
        return math.sqrt(sum(float((end[k] - start[k]).pow(2).sum()) for k in start))

    steps = 5000 // cfg.batch_size
    clipped = train_model(
        replace(cfg, grad_clip=1e-3), out=tmp_path / "a", model_factory=tiny, progress=False
    )
    assert moved(clipped) <= steps * 0.5 * 1e-3 * (1 + 1e-4)
    free = train_model(cfg, out=tmp_path / "b", model_factory=tiny, progress=False)
    assert moved(free) > 10 * moved(clipped)


def test_weights_of_another_architecture_get_a_clear_error(base_run, tmp_path: Path) -> None:
    base, _ = base_run
    folder = shutil.copytree(base.run_dir / "model", tmp_path / "model")
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "architecture": "fast-cnn"}))
    with pytest.raises(MnistlabError, match="do not fit the 'fast-cnn' architecture") as info:
        engine.load_trained_model(folder)
    assert "train it again" in (info.value.hint or "")


def test_cpu_allocator_tuning_applies_on_glibc() -> None:
    on_glibc = "glibc" in (getattr(os, "confstr", lambda _: "")("CS_GNU_LIBC_VERSION") or "")
    assert tune_cpu_allocator() is on_glibc
    assert tune_cpu_allocator() is on_glibc  # idempotent


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 12), st.integers(1, 12))),
)
def test_normalization_from_the_histogram_equals_the_float64_statistics(images) -> None:
    """Normalization.of counts the 256 grey levels instead of converting every pixel to
    float64 (2.8 s -> 0.15 s for MNIST's training split): the same statistics."""
    x = images.astype(np.float64) / 255.0
    norm = Normalization.of(images)
    assert norm.mean == pytest.approx(x.mean(), abs=1e-12)
    assert norm.std == pytest.approx(x.std(), abs=1e-12)


def test_normalization_from_the_histogram_feeds_the_same_inputs() -> None:
    mnist = load_dataset("mnist-mini", "train").images
    slow = Normalization(float((mnist / 255.0).mean()), float((mnist / 255.0).std()))
    pixels = torch.from_numpy(mnist[:64]).unsqueeze(1)
    assert torch.equal(Normalization.of(mnist)(pixels), slow(pixels))
