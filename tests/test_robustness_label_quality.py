"""Label quality: cross-validated disagreement finds labels we flipped on purpose in real
MNIST images, writes its JSON and gallery, and refuses to overwrite without being asked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from robustness_fixtures import one_torch_thread  # noqa: F401 (autouse fixture)
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.robustness.label_quality import (
    label_issues_in,
    stratified_folds,
    write_label_issues,
)


def test_stratified_folds_are_balanced() -> None:
    labels = np.repeat(np.arange(10), 31)
    folds = stratified_folds(labels, 3, seed=0)
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for c in range(10):
        per_class = np.bincount(folds[labels == c], minlength=3)
        assert per_class.max() - per_class.min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, 3, seed=0))
    with pytest.raises(MnistlabError, match="folds must be"):
        stratified_folds(labels, 1)


def test_finds_flipped_labels(mini, tmp_path) -> None:
    train = mini["train"]
    images, labels = train.images[:3000], train.labels[:3000].copy()
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), 45, replace=False)  # 1.5% label noise
    labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    issues = label_issues_in(
        images,
        labels,
        list(train.class_names),
        folds=3,
        epochs=2,
        min_confidence=0.8,
        batch_size=64,
    )
    found = set(issues.indices.tolist())
    precision = len(found & set(flipped.tolist())) / max(len(found), 1)
    recall = len(found & set(flipped.tolist())) / len(flipped)
    assert precision >= 0.5 and recall >= 0.5, (precision, recall, len(found))
    assert issues.out_of_fold_accuracy > 0.85
    assert np.all(issues.predicted != issues.given) and np.all(issues.confidence >= 0.8)
    assert np.all(np.diff(issues.given_probability) >= 0)  # most suspicious first
    path = write_label_issues(issues, tmp_path / "audit", images=images, show=12)
    saved = json.loads(path.read_text())
    assert saved["num_flagged"] == len(issues.indices) == len(saved["issues"])
    assert saved["issues"][0]["index"] == int(issues.indices[0])
    assert (tmp_path / "audit" / "label_issues.png").stat().st_size > 0
    with pytest.raises(OverwriteError):
        write_label_issues(issues, tmp_path / "audit", images=images)
    write_label_issues(issues, tmp_path / "audit", images=images, overwrite=True)


def test_cli_label_issues(tmp_path) -> None:
    out = tmp_path / "li"
    args = ["label-issues", "-d", "mnist-mini", "--limit", "600", "--folds", "2", "--epochs", "1"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "label_issues.json").read_text())
    assert saved["num_images"] == 600 and saved["config"]["limit"] == 600
    again = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
