"""scikit-learn's digits in MNIST form (a dataset built, not fetched) and the reject option
(``selective_accuracy``)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import mnistlab
from mnistlab.cli.main import app
from mnistlab.data.cache import dataset_dir, verify_dataset
from mnistlab.data.sklearn_digits import source_digits, to_mnist_form
from mnistlab.evaluation.metrics import selective_accuracy


def _ink_extent(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = images.any(axis=2), images.any(axis=1)

    def extent(mask: np.ndarray) -> int:
        idx = np.flatnonzero(mask)
        return int(idx[-1] - idx[0] + 1)

    return np.array([extent(r) for r in rows]), np.array([extent(c) for c in cols])


def _centres(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[:28, :28]
    total = images.astype(np.float64).sum(axis=(1, 2))
    return (images * ys).sum(axis=(1, 2)) / total, (images * xs).sum(axis=(1, 2)) / total


def test_conversion_centres_and_sizes_every_digit() -> None:
    pixels, labels = source_digits()
    assert pixels.shape == (1797, 8, 8) and np.bincount(labels).sum() == 1797
    images = to_mnist_form(pixels)
    assert images.shape == (1797, 28, 28) and images.dtype == np.uint8
    assert images.max() == 255 and images[:, 0, :].max() == 0  # light ink on black
    cy, cx = _centres(images)
    assert np.abs(cy - 14).max() <= 1 and np.abs(cx - 14).max() <= 1
    height, width = _ink_extent(images)
    assert np.all(np.abs(np.maximum(height, width) - 20) <= 1)
    assert np.array_equal(images, to_mnist_form(pixels))  # deterministic


def test_conversion_of_odd_inputs() -> None:
    bar = np.zeros((2, 8, 8), np.int64)
    bar[0, 2:6, 3] = 16  # a vertical stroke 4 long, 1 wide
    images = to_mnist_form(bar)
    assert not images[1].any()  # blank stays blank
    height, width = _ink_extent(images[:1])
    assert height[0] == 20 and width[0] == 5
    cy, cx = _centres(images[:1])
    assert abs(cy[0] - 14) <= 0.5 and abs(cx[0] - 14) <= 0.5
    with pytest.raises(ValueError, match=r"0\.\.16"):
        to_mnist_form(bar + 17)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        to_mnist_form(bar[0])


def test_builds_verifies_and_loads_offline(tmp_path: Path) -> None:
    home = tmp_path / "home"
    split = mnistlab.load_dataset("sklearn-digits", "test", home=home)  # builds it first
    assert len(split) == 1797 and split.images.shape == (1797, 28, 28)
    assert split.class_names == tuple("0123456789")
    assert np.array_equal(np.bincount(split.labels), np.bincount(source_digits()[1]))
    assert all(check.ok for check in verify_dataset("sklearn-digits", home))
    with pytest.raises(mnistlab.errors.DatasetFormatError, match="no split 'train'"):
        mnistlab.load_dataset("sklearn-digits", "train", home=home)
    # damage is found, and --force builds it again
    images = dataset_dir("sklearn-digits", home) / "sklearn-digits-test-images-idx3-ubyte"
    data = bytearray(images.read_bytes())
    data[500] ^= 1
    images.write_bytes(bytes(data))
    assert not all(check.ok for check in verify_dataset("sklearn-digits", home))
    mnistlab.fetch_dataset("sklearn-digits", home=home, force=True, progress=False)
    assert all(check.ok for check in verify_dataset("sklearn-digits", home))


def test_cli_lists_and_fetches(tmp_path: Path) -> None:
    runner, env = CliRunner(), {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    home = str(tmp_path / "home")
    listed = runner.invoke(app, ["data", "list", "--home", home], env=env)
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith("sklearn-digits"))
    assert "1,797" in row and row.rstrip().endswith("no")
    fetched = runner.invoke(app, ["data", "fetch", "sklearn-digits", "-q", "--home", home], env=env)
    assert fetched.exit_code == 0 and "sklearn-digits: verified" in fetched.output
    listed = runner.invoke(app, ["data", "list", "--home", home], env=env)
    row = next(line for line in listed.output.splitlines() if line.startswith("sklearn-digits"))
    assert row.rstrip().endswith("yes")


# ---------------------------------------------------------------------------- reject option


def _onehot_like(confidence: list[float], predicted: list[int], k: int = 3) -> np.ndarray:
    probs = np.zeros((len(confidence), k))
    for i, (c, p) in enumerate(zip(confidence, predicted, strict=True)):
        probs[i] = (1 - c) / (k - 1)
        probs[i, p] = c
    return probs


def test_selective_accuracy_exact_values() -> None:
    # ten examples; the three least confident (0.4, 0.5, 0.6) are wrong, one confident too
    confidence = [0.9, 0.4, 0.95, 0.5, 0.8, 0.6, 0.99, 0.85, 0.7, 0.75]
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    predicted = [0, 0, 2, 1, 1, 0, 0, 1, 1, 0]  # wrong: 1, 3, 5, 8
    probs = _onehot_like(confidence, predicted)
    points = selective_accuracy(probs, labels, abstain=(0, 0.1, 0.2, 0.3, 0.5))
    assert [p.abstained for p in points] == [0, 1, 2, 3, 5]
    assert [p.coverage for p in points] == [1.0, 0.9, 0.8, 0.7, 0.5]
    assert [p.accuracy for p in points] == pytest.approx([6 / 10, 6 / 9, 6 / 8, 6 / 7, 5 / 5])
    assert [p.threshold for p in points] == pytest.approx([0.4, 0.5, 0.6, 0.7, 0.8])
    # abstain=0 is plain accuracy, on any input
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=200)
    y = rng.integers(0, 10, 200)
    (point,) = selective_accuracy(p, y, abstain=0)
    assert point.accuracy == float((p.argmax(1) == y).mean()) and point.coverage == 1.0


def test_selective_accuracy_rises_on_a_calibrated_toy() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    confidence = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) < confidence  # calibrated: P(correct) = confidence
    labels = rng.integers(0, 2, n)
    probs = np.empty((n, 2))
    predicted = np.where(correct, labels, 1 - labels)
    probs[np.arange(n), predicted] = confidence
    probs[np.arange(n), 1 - predicted] = 1 - confidence
    rates = (0, 0.01, 0.02, 0.05, 0.1, 0.3, 0.6)
    accuracies = [p.accuracy for p in selective_accuracy(probs, labels, rates)]
    assert all(b >= a for a, b in itertools.pairwise(accuracies))
    assert accuracies[-1] > accuracies[0] + 0.05
    assert [p.abstained for p in selective_accuracy(probs, labels, rates)] == [
        math.floor(r * n) for r in rates
    ]


@pytest.mark.parametrize(
    ("abstain", "match"),
    [
        (-0.01, r"outside \[0, 1\)"),
        (1.0, r"outside \[0, 1\)"),
        (2, r"outside \[0, 1\)"),
        (float("nan"), r"outside \[0, 1\)"),
        ("2%", "not a number"),
        (True, "not a number"),
        ((), "at least one rate"),
        ((0.0, 0.02, 1.5), r"outside \[0, 1\)"),
    ],
)
def test_selective_accuracy_bad_rates(abstain: object, match: str) -> None:
    probs = _onehot_like([0.9, 0.8, 0.7, 0.6, 0.5], [0, 1, 2, 0, 1])
    with pytest.raises(ValueError, match=match):
        selective_accuracy(probs, np.array([0, 1, 2, 0, 1]), abstain=abstain)  # type: ignore[arg-type]


def test_selective_accuracy_bad_arrays() -> None:
    probs = _onehot_like([0.9, 0.8], [0, 1])
    with pytest.raises(ValueError, match="labels"):
        selective_accuracy(probs, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="sum to 1"):
        selective_accuracy(probs * 0.5, np.array([0, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        selective_accuracy(np.zeros((0, 3)), np.array([], np.int64))


def test_an_mnist_model_scored_on_sklearn_digits(tmp_path: Path) -> None:
    from mnistlab.errors import MnistlabError
    from mnistlab.evaluation.metrics import evaluate_on
    from mnistlab.training import train_classic

    run = train_classic(
        "logreg", dataset="mnist-mini", out=tmp_path / "logreg", log=lambda *_: None
    ).run_dir
    report = json.loads((run / "report.json").read_text())
    curve = report["selective_accuracy"]
    assert [p["abstain"] for p in curve] == [0.0, 0.01, 0.02, 0.05, 0.1]
    assert curve[0]["accuracy"] == report["test_accuracy"]
    assert [p["abstained"] for p in curve] == [0, 10, 20, 50, 100]  # of 1,000 test images

    score = evaluate_on(run, "sklearn-digits")
    assert score.metrics.num_samples == 1797 and 0.2 < score.accuracy < 1.0
    assert score.selective[0].accuracy == score.accuracy
    assert score.selective[2].abstained == 35  # floor(0.02 * 1797)
    with pytest.raises(MnistlabError, match="classes"):
        evaluate_on(run, "fashion-mnist-like", home=_fashion_like(tmp_path))


def _fashion_like(tmp_path: Path) -> Path:
    """A home with a tiny imported dataset whose classes are not digits."""
    home = tmp_path / "other"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20) % 10
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
    mnistlab.import_dataset(
        path, "fashion-mnist-like", class_names=[f"c{i}" for i in range(10)], home=home
    )
    return home
