"""Test-time augmentation and ensembles of deep runs, on the bundled ``mnist-mini``.

Three one-epoch runs (two MLPs and a fast-cnn, different seeds) are trained once per module.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.features.augment import translate
from mnistlab.training import (
    TrainConfig,
    ensemble_runs,
    evaluate_run,
    predict_proba,
    train_model,
)
from mnistlab.training.engine import load_trained_model

SPECS = (("mlp", 0), ("mlp", 1), ("fast-cnn", 2))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ensemble_runs")
    dirs = []
    for model, seed in SPECS:
        config = TrainConfig(
            model=model,
            dataset="mnist-mini",
            epochs=1,
            batch_size=128,
            lr=2e-3,
            seed=seed,
            device="cpu",
            num_threads=1,
        )
        result = train_model(config, out=root / f"{model}-{seed}", progress=False)
        dirs.append(result.run_dir)
    return dirs


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("mnist-mini", "test")


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == np.asarray(labels)).mean())


def test_predict_proba_reproduces_the_report(runs: list[Path], test_split) -> None:
    for run in runs:
        model, meta = load_trained_model(run)
        probs = predict_proba(model, test_split.images, meta["normalization"])
        assert probs.dtype == np.float64 and probs.shape == (len(test_split), 10)
        report = json.loads((run / "report.json").read_text())
        assert _accuracy(probs, test_split.labels) == report["test_accuracy"]
        small = predict_proba(model, test_split.images, meta["normalization"], batch_size=300)
        np.testing.assert_allclose(small, probs, rtol=0, atol=1e-6)


def test_tta_shifts_is_the_mean_of_five_shifted_predictions(runs: list[Path], test_split) -> None:
    model, meta = load_trained_model(runs[2])
    norm = meta["normalization"]
    tta = predict_proba(model, test_split.images, norm, tta="shifts")
    np.testing.assert_allclose(tta.sum(1), 1.0, rtol=0, atol=1e-6)  # fp32 softmax
    images = torch.from_numpy(test_split.images)
    manual = [predict_proba(model, test_split.images, norm)]
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        shifted = translate(images, dx, dy).numpy()
        manual.append(predict_proba(model, shifted, norm))
    np.testing.assert_allclose(tta, sum(manual) / 5, rtol=0, atol=1e-12)
    # a one-pixel shift moves content by exactly one pixel
    shifted = translate(images[:2], 1, 0)
    assert torch.equal(shifted[:, :, 1:], images[:2, :, :-1])
    light = predict_proba(model, test_split.images[:50], norm, tta="light")
    np.testing.assert_allclose(light.sum(1), 1.0, rtol=0, atol=1e-6)
    with pytest.raises(MnistlabError, match="unknown test-time augmentation"):
        predict_proba(model, test_split.images, norm, tta="flips")


def test_ensemble_writes_a_run(runs: list[Path], test_split, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    report = ensemble_runs(runs, out=out)
    for name in ("config.json", "environment.json", "metrics.json", "report.json", "report.html"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "ensemble" and config["tta"] is None
    assert config["members"] == [str(r.resolve()) for r in runs]
    assert report["model"] == "ensemble of 3 (mlp, mlp, fast-cnn)"

    probs = []
    for run in runs:
        model, meta = load_trained_model(run)
        probs.append(predict_proba(model, test_split.images, meta["normalization"]))
    expected = _accuracy(sum(probs) / len(probs), test_split.labels)
    metrics = json.loads((out / "metrics.json").read_text())
    assert report["test_accuracy"] == metrics["test_accuracy"] == expected
    recorded = [json.loads((r / "metrics.json").read_text()) for r in runs]
    assert metrics["member_test_accuracy"] == [m["test_accuracy"] for m in recorded]
    assert report["train_seconds"] == pytest.approx(sum(m["train_seconds"] for m in recorded))
    assert "Ensemble members" in (out / "report.html").read_text()
    assert json.loads((out / "report.json").read_text())["sections"] == ["Ensemble members"]

    with pytest.raises(MnistlabError, match="already holds a run"):
        ensemble_runs(runs, out=out)
    shifted = ensemble_runs(runs, out=out, tta="shifts", overwrite=True)
    assert json.loads((out / "config.json").read_text())["tta"] == "shifts"
    assert 0 < shifted["test_accuracy"] <= 1

    # `mnistlab evaluate` on an ensemble run: the members are averaged again, same TTA.
    (out / "report.json").unlink()
    again = evaluate_run(out)
    assert again["test_accuracy"] == shifted["test_accuracy"]
    assert json.loads((out / "report.json").read_text())["test_accuracy"] == again["test_accuracy"]
    assert json.loads((out / "config.json").read_text())["tta"] == "shifts"


def test_ensemble_of_one_run_is_that_run(runs: list[Path], tmp_path: Path) -> None:
    report = ensemble_runs([runs[0]], out=tmp_path / "one")
    own = json.loads((runs[0] / "report.json").read_text())
    assert report["test_accuracy"] == own["test_accuracy"]
    assert report["confusion_matrix"] == own["confusion_matrix"]
    assert report["model"] == "ensemble of 1 (mlp)"


def test_ensemble_refuses_bad_members(runs: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "other-dataset"
    shutil.copytree(runs[0], other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "dataset": "fashion-mnist"}))
    with pytest.raises(MnistlabError, match="different datasets"):
        ensemble_runs([runs[1], other], out=tmp_path / "x")

    classic = tmp_path / "classic"
    classic.mkdir()
    (classic / "config.json").write_text(json.dumps({"kind": "classic", "dataset": "mnist-mini"}))
    with pytest.raises(MnistlabError, match="classic"):
        ensemble_runs([runs[0], classic], out=tmp_path / "y")
    with pytest.raises(MnistlabError, match="at least one"):
        ensemble_runs([])
    with pytest.raises(MnistlabError, match="more than once"):
        ensemble_runs([runs[0], runs[0]])
    with pytest.raises(MnistlabError, match="one of the members"):
        ensemble_runs(runs, out=runs[0], overwrite=True)
    with pytest.raises(MnistlabError, match="unknown test-time augmentation"):
        ensemble_runs(runs, tta="flips")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_cli_ensemble(runs: list[Path], tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"})
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["ensemble", *map(str, runs[:2]), "--tta", "shifts", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert "ensemble" in result.output and f"{metrics['test_accuracy']:.4f}" in result.output
    for accuracy in metrics["member_test_accuracy"]:
        assert f"{accuracy:.4f}" in result.output

    classic = tmp_path / "classic"
    classic.mkdir()
    (classic / "config.json").write_text(json.dumps({"kind": "classic"}))
    for args in (
        [str(runs[0]), str(classic)],
        [str(runs[0]), str(tmp_path / "missing")],
        [str(runs[0]), "--tta", "flips"],
    ):
        bad = runner.invoke(app, ["ensemble", *args])
        assert bad.exit_code == 1, bad.output
        assert "error:" in bad.output and "Traceback" not in bad.output
