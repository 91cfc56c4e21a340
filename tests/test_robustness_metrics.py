"""Calibration and OOD arithmetic on hand-made numbers: ECE against a hand computation,
temperature fitting (recovers a known temperature, lowers held-out NLL, matches a grid search),
AUROC against a pair count, energy and max-softmax scores, calibration.json writing."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from mnistlab.errors import MnistlabError
from mnistlab.robustness import ood
from mnistlab.robustness.calibration import (
    calibration_bins,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    read_calibration,
    softmax,
    write_calibration,
)


def test_ece_matches_a_hand_computation() -> None:
    # 5 bins of width 0.2. Confidences (max prob) and correctness:
    #   0.9 right, 0.9 wrong, 0.7 right          -> bins (0.8,1] and (0.6,0.8]
    #   0.5 wrong (class 1 predicted, label 0)   -> bin (0.4,0.6]
    probs = np.array(
        [
            [0.9, 0.1],  # predicts 0, label 0: right
            [0.9, 0.1],  # predicts 0, label 1: wrong
            [0.3, 0.7],  # predicts 1, label 1: right
            [0.5, 0.5],  # predicts 0 (argmax takes the first), label 1: wrong
        ]
    )
    labels = np.array([0, 1, 1, 1])
    # bin (0.8,1]: 2 images, accuracy 0.5, confidence 0.9 -> gap 0.4
    # bin (0.6,0.8]: 1 image, accuracy 1, confidence 0.7 -> gap 0.3
    # bin (0.4,0.6]: 1 image, accuracy 0, confidence 0.5 -> gap 0.5
    expected = (2 * 0.4 + 1 * 0.3 + 1 * 0.5) / 4
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(expected)
    bins = calibration_bins(probs, labels, n_bins=5)
    assert bins["count"].tolist() == [0, 0, 1, 1, 2]
    assert np.isnan(bins["accuracy"][0]) and bins["accuracy"][4] == 0.5
    # A confidence on a bin edge belongs to the bin it closes: 0.6 is in (0.4, 0.6].
    edge = calibration_bins(np.array([[0.6, 0.4]]), np.array([0]), n_bins=5)
    assert edge["count"].tolist() == [0, 0, 1, 0, 0]
    # Perfectly confident and always right: no calibration error.
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0


def _synthetic(n: int, temperature: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the right T is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=(n, 10))
    p = softmax(logits, temperature)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


def test_temperature_scaling_recovers_t_and_lowers_held_out_nll() -> None:
    logits, labels = _synthetic(20000, 2.0, seed=0)
    t = fit_temperature(logits[:10000], labels[:10000])
    assert t == pytest.approx(2.0, rel=0.05)
    held_logits, held_labels = logits[10000:], labels[10000:]
    before = negative_log_likelihood(held_logits, held_labels)
    after = negative_log_likelihood(held_logits, held_labels, t)
    assert after < before - 0.05
    ece_before = expected_calibration_error(softmax(held_logits), held_labels)
    ece_after = expected_calibration_error(softmax(held_logits, t), held_labels)
    assert ece_after < ece_before / 3
    # Temperature never changes the predicted class.
    assert np.array_equal(softmax(held_logits, t).argmax(1), held_logits.argmax(1))
    # The golden-section search finds the grid's minimum.
    grid = np.exp(np.linspace(np.log(0.5), np.log(8), 400))
    best = grid[
        np.argmin([negative_log_likelihood(logits[:10000], labels[:10000], g) for g in grid])
    ]
    assert t == pytest.approx(best, rel=0.01)


def test_under_confident_model_gets_t_below_one() -> None:
    logits, labels = _synthetic(5000, 0.5, seed=1)
    assert fit_temperature(logits, labels) == pytest.approx(0.5, rel=0.08)


def test_auroc_sanity_and_pair_count() -> None:
    rng = np.random.default_rng(0)
    same = ood.auroc(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same - 0.5) < 0.03
    assert ood.auroc([2, 3, 4], [0, 1]) == 1.0
    assert ood.auroc([0, 1], [2, 3, 4]) == 0.0
    a, b = np.array([0.9, 0.8, 0.4, 0.4]), np.array([0.4, 0.1, 0.85])
    pairs = [(x > y) + 0.5 * (x == y) for x in a for y in b]  # Mann-Whitney, ties half
    assert ood.auroc(a, b) == pytest.approx(np.mean(pairs))
    # FPR at 95% TPR: the threshold keeps 95% of the in-distribution scores.
    scores_in = np.linspace(0, 1, 101)  # 5% quantile = 0.05
    assert ood.fpr_at_tpr(scores_in, np.array([0.0, 0.04, 0.06, 0.5])) == 0.5
    with pytest.raises(MnistlabError):
        ood.auroc([], [1.0])


def test_scores_need_no_labels_and_behave() -> None:
    # Nothing in the OOD API takes labels: "is this a digit" is asked of images alone.
    for fn in (ood.ood_scores, ood.evaluate_ood, ood.max_softmax_score, ood.energy_score):
        assert not any("label" in p for p in inspect.signature(fn).parameters), fn.__name__
    logits = np.random.default_rng(0).normal(size=(50, 10))
    shifted = logits + 7.0  # adding a constant: the softmax ignores it, the energy does not
    assert np.allclose(ood.max_softmax_score(logits), ood.max_softmax_score(shifted))
    assert np.allclose(ood.energy_score(shifted), ood.energy_score(logits) + 7.0)
    expected = np.log(np.exp(logits).sum(1))
    assert np.allclose(ood.energy_score(logits), expected)
    assert np.allclose(ood.energy_score(logits, 2.0), 2 * np.log(np.exp(logits / 2).sum(1)))


def test_write_and_read_calibration(tmp_path) -> None:
    (tmp_path / "run" / "model").mkdir(parents=True)
    assert read_calibration(tmp_path / "run") is None
    data = {"temperature": 1.5, "fitted_on": "val", "ece_before": 0.02, "ece_after": 0.01}
    path = write_calibration(tmp_path / "run", data)  # a run folder: written into model/
    assert path == tmp_path / "run" / "model" / "calibration.json"
    assert json.loads(path.read_text()) == data == read_calibration(tmp_path / "run" / "model")
    with pytest.raises(MnistlabError, match="temperature must be"):
        write_calibration(tmp_path / "run", {**data, "temperature": -1.0})
    with pytest.raises(MnistlabError, match="lacks fitted_on"):
        write_calibration(tmp_path / "run", {"temperature": 1.0, "ece_before": 0, "ece_after": 0})
    assert json.loads(path.read_text()) == data  # failed writes left the file alone
