"""Calibration: expected calibration error, reliability diagrams and temperature scaling.

A classifier is calibrated when, among the images it gives confidence ``c``, a fraction ``c``
is right. The expected calibration error (ECE, Guo et al. 2017) bins the test images by
confidence (the max softmax) into ``n_bins`` equal-width bins of [0, 1] and averages
``|accuracy - mean confidence|`` over the bins, weighted by the share of images in each.
Temperature scaling divides the logits by one scalar ``T`` fitted to minimize the negative
log-likelihood on held-out labelled images: ``T > 1`` softens an over-confident model, ``T < 1``
sharpens an under-confident one (label smoothing makes models under-confident). It never
changes the predicted class.

:func:`calibrate_run` fits ``T`` on a deep run's validation split and writes
``<run>/model/calibration.json`` (the contract with ``mnistlab.shipping``, which divides logits
by ``temperature`` and flags predictions whose max softmax is below ``ood.threshold``).
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from mnistlab.data import load_dataset
from mnistlab.data.splits import stratified_indices
from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_json
from mnistlab.plotting import pyplot, save_figure
from mnistlab.runs import read_json
from mnistlab.shipping.model import check_calibration, read_calibration_json
from mnistlab.training.config import RUN_KEYS, TrainConfig
from mnistlab.training.data import load_training_data
from mnistlab.training.engine import load_trained_model

__all__ = [
    "CALIBRATION_FILE",
    "FIT_SPLITS",
    "CalibrationData",
    "calibrate_run",
    "calibration_bins",
    "expected_calibration_error",
    "fit_temperature",
    "load_run_model",
    "negative_log_likelihood",
    "plot_reliability_diagram",
    "predict_logits",
    "read_calibration",
    "softmax",
    "write_calibration",
]

CALIBRATION_FILE = "calibration.json"
FIT_SPLITS = ("auto", "val", "test-half")
DEFAULT_BINS = 15
OOD_TPR = 0.95  # the default threshold keeps this share of in-distribution images confident


# ---------------------------------------------------------------------------- predictions


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    normalization: Mapping[str, float],
    *,
    batch_size: int = 1000,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The raw logits of a deep model on uint8 images (no labels needed).

    Args:
        model: takes normalized float ``(N, 1, 28, 28)``; put in eval mode and moved to
            ``device`` in place.
        images: uint8 ``(N, 28, 28)`` or ``(N, 1, 28, 28)``.
        normalization: ``{"mean", "std"}`` from ``model.json``.
        batch_size: images per forward pass.
        device: where to run (fp32, no autocast).

    Returns:
        float64 ``(N, num_classes)``.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8 or x.ndim not in (3, 4):
        raise MnistlabError(
            f"images must be uint8 (N, 28, 28) or (N, 1, 28, 28); got {x.dtype} {tuple(x.shape)}"
        )
    if x.ndim == 3:
        x = x.unsqueeze(1)
    mean, std = float(normalization["mean"]), float(normalization["std"])
    model.eval().to(device)
    out = [
        model((x[s : s + batch_size].to(device).float() / 255 - mean) / std).double().cpu()
        for s in range(0, len(x), batch_size)
    ]
    if not out:
        raise MnistlabError("no images to predict")
    return torch.cat(out).numpy()


def softmax(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """``softmax(logits / temperature)`` row by row, in float64 (numerically stable)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(
    logits: ArrayLike, labels: ArrayLike, temperature: float = 1.0
) -> float:
    """Mean ``-log softmax(logits / T)[label]`` (natural log)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels, dtype=np.int64)
    top = z.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_z - z[np.arange(len(y)), y]))


# ---------------------------------------------------------------------------- ECE


def _check(probabilities: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise MnistlabError(
            f"need (N, classes) probabilities and (N,) labels with N > 0; got {p.shape}, {y.shape}"
        )
    return p, y.astype(np.int64)


def calibration_bins(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS
) -> dict[str, np.ndarray]:
    """Per-bin statistics of the confidence (max probability) in ``n_bins`` equal-width bins.

    Bin ``b`` holds confidences in ``(b / n_bins, (b + 1) / n_bins]`` (the first also holds 0).

    Returns:
        ``{"edges": (n_bins + 1,), "count": (n_bins,), "accuracy": (n_bins,),
        "confidence": (n_bins,)}``; accuracy and confidence are NaN in empty bins.
    """
    p, y = _check(probabilities, labels)
    if n_bins < 1:
        raise MnistlabError(f"n_bins must be >= 1; got {n_bins}")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, correct, minlength=n_bins) / count
        mean_conf = np.bincount(index, confidence, minlength=n_bins) / count
    return {"edges": edges, "count": count, "accuracy": accuracy, "confidence": mean_conf}


def expected_calibration_error(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int = DEFAULT_BINS
) -> float:
    """ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width confidence bins.

    Args:
        probabilities: ``(N, classes)`` predicted probabilities (the max is the confidence,
            the argmax the prediction).
        labels: ``(N,)`` true labels.
        n_bins: number of bins of [0, 1] (15 as in Guo et al. 2017).

    Returns:
        The ECE in [0, 1].
    """
    bins = calibration_bins(probabilities, labels, n_bins)
    used = bins["count"] > 0
    gaps = np.abs(bins["accuracy"][used] - bins["confidence"][used])
    return float((bins["count"][used] * gaps).sum() / bins["count"].sum())


# ---------------------------------------------------------------------------- temperature


def fit_temperature(
    logits: ArrayLike, labels: ArrayLike, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature ``T`` minimizing the NLL of ``softmax(logits / T)`` on labelled data.

    The NLL is convex in ``1 / T`` (a log-sum-exp minus a linear term), hence unimodal in
    ``log T``: a golden-section search over ``log T`` in ``bounds`` finds the minimum to about
    1e-6 relative precision without any optimizer state or randomness.

    Args:
        logits: ``(N, classes)`` held-out logits (never the test set's, for honest numbers).
        labels: ``(N,)``.
        bounds: search interval for ``T``.

    Returns:
        ``T`` (> 0). A minimum at a bound means the logits are nearly constant or perfect.
    """
    z = np.asarray(logits, dtype=np.float64)
    _check(z, labels)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc = negative_log_likelihood(z, labels, math.exp(c))
    fd = negative_log_likelihood(z, labels, math.exp(d))
    while b - a > 1e-6:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = negative_log_likelihood(z, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = negative_log_likelihood(z, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


# ---------------------------------------------------------------------------- figure


def plot_reliability_diagram(
    probabilities: ArrayLike,
    labels: ArrayLike,
    path: str | os.PathLike[str],
    *,
    calibrated: ArrayLike | None = None,
    temperature: float | None = None,
    n_bins: int = DEFAULT_BINS,
) -> Path:
    """Reliability diagram(s): accuracy against confidence per bin, with the diagonal.

    Args:
        probabilities: ``(N, classes)`` before calibration; labels: ``(N,)``.
        path: PNG to write.
        calibrated: the same images' probabilities after temperature scaling (a second panel).
        temperature: shown in the second panel's title.
        n_bins: bins of [0, 1].

    Returns:
        ``path``. Bars are the accuracy per bin; hatched red the gap to the bin's mean
        confidence (above the bar: over-confident, inside it: under-confident); the grey line
        is the share of images per bin (log scale, right axis).
    """

    plt = pyplot()
    panels = [("before temperature scaling", probabilities)]
    if calibrated is not None:
        title = "after temperature scaling" + (f" (T = {temperature:.3f})" if temperature else "")
        panels.append((title, calibrated))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    for ax, (title, probs) in zip(axes[0], panels, strict=True):
        bins = calibration_bins(probs, labels, n_bins)
        ece = expected_calibration_error(probs, labels, n_bins)
        width = 1 / n_bins
        centres = bins["edges"][:-1] + width / 2
        used = bins["count"] > 0
        acc = np.where(used, bins["accuracy"], 0)
        conf = np.where(used, bins["confidence"], 0)
        ax.bar(centres, acc, width * 0.95, color="#4393c3", label="accuracy", zorder=2)
        ax.bar(  # hatched: from the accuracy to the mean confidence, whichever is higher
            centres[used],
            np.abs(conf - acc)[used],
            width * 0.95,
            bottom=np.minimum(acc, conf)[used],
            facecolor="none",
            edgecolor="#d6604d",
            hatch="///",
            label="gap to mean confidence",
            zorder=3,
        )
        ax.plot([0, 1], [0, 1], "--", color="#333333", linewidth=1, zorder=4)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max softmax)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}\nECE {ece:.4f} ({n_bins} bins)", fontsize=9)
        share = ax.twinx()
        share.plot(centres[used], bins["count"][used] / bins["count"].sum(), "o-", color="#888888")
        share.set_yscale("log")
        share.set_ylabel("share of images (log)", color="#888888", fontsize=8)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------- runs


def load_run_model(
    run_dir: str | os.PathLike[str],
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """A deep run's model (CPU, eval mode), its ``model.json`` and its training config.

    Raises:
        MnistlabError: not a deep run folder (with a hint).
    """

    run = Path(run_dir)
    config = read_json(run, "config.json")
    if config.get("kind") != "deep":
        raise MnistlabError(
            f"{run} is not a deep-learning run (kind {config.get('kind')!r})",
            hint="robustness checks need a run of `mnistlab train --model <CNN>`",
        )
    train_config = TrainConfig.from_dict({k: v for k, v in config.items() if k not in RUN_KEYS})
    model, meta = load_trained_model(run)
    return model, meta, train_config.to_dict()


@dataclass(frozen=True)
class CalibrationData:
    """The labelled images a temperature is fitted on, and those it is measured on."""

    fit_images: np.ndarray
    fit_labels: np.ndarray
    eval_images: np.ndarray
    eval_labels: np.ndarray
    fitted_on: str  # "val" or "test-half"
    description: str


def calibration_data(
    config: Mapping[str, Any], fit_on: str = "auto", home: str | os.PathLike[str] | None = None
) -> CalibrationData:
    """The fitting and measuring images of a run (``config``: its training config).

    - ``"val"``: the run's own validation split (rebuilt from its seed and ``val_size``);
      ECE is then measured on the whole test split.
    - ``"test-half"``: for runs trained without a validation split: a stratified half of the
      test split (seed 0) fits ``T``, the other half measures ECE; the two never mix.
    - ``"auto"``: ``"val"`` when the run has a validation split, else ``"test-half"``.

    Raises:
        MnistlabError: an unknown ``fit_on``, or ``"val"`` for a run without validation split.
    """

    if fit_on not in FIT_SPLITS:
        raise MnistlabError(f"unknown calibration split {fit_on!r}", hint=f"use {FIT_SPLITS}")
    train_config = TrainConfig.from_dict(dict(config))
    if fit_on == "auto":
        fit_on = "val" if train_config.val_size else "test-half"
    if fit_on == "val":
        if not train_config.val_size:
            raise MnistlabError(
                "this run was trained without a validation split: nothing to fit on",
                hint="use --calibrate-on test-half, or train with --set val_size=0.1",
            )
        _, val, test = load_training_data(train_config, home)
        assert val is not None
        return CalibrationData(
            val.images,
            val.labels,
            test.images,
            test.labels,
            "val",
            f"the run's validation split ({len(val):,} training images held out, seed "
            f"{train_config.seed}); measured on the {len(test):,} test images",
        )
    test = load_dataset(train_config.dataset, "test", home=home)
    measure, fit = stratified_indices(test.labels, 0.5, seed=0)
    return CalibrationData(
        test.images[fit],
        test.labels[fit],
        test.images[measure],
        test.labels[measure],
        "test-half",
        f"a stratified half of the test split ({len(fit):,} images, seed 0; the run has no "
        f"validation split); measured on the other {len(measure):,} test images",
    )


def write_calibration(model_dir: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``calibration.json`` atomically into a model folder (``<run>/model`` or a run
    folder, whose ``model/`` is used). ``data`` needs ``temperature``, ``fitted_on``,
    ``ece_before`` and ``ece_after``; ``ood`` is optional. Its values are checked by the one
    rule shipping loads them with (:func:`mnistlab.shipping.model.check_calibration`: a
    temperature in [0.05, 20], an ``ood.threshold`` in [0, 1]). Returns the path."""
    folder = Path(model_dir)
    if (folder / "model").is_dir():
        folder = folder / "model"
    missing = [k for k in ("temperature", "fitted_on", "ece_before", "ece_after") if k not in data]
    if missing:
        raise MnistlabError(f"calibration data lacks {', '.join(missing)}")
    path = folder / CALIBRATION_FILE
    check_calibration(dict(data), path)
    atomic_write_json(path, dict(data))
    return path


def read_calibration(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``calibration.json`` of a model folder or run folder, or None when there is none.

    Raises:
        MnistlabError: unreadable, or values that shipping would refuse
            (:func:`mnistlab.shipping.model.check_calibration`).
    """
    folder = Path(model_dir)
    if (folder / "model").is_dir():
        folder = folder / "model"
    path = folder / CALIBRATION_FILE
    if not path.is_file():
        return None
    data = read_calibration_json(path)
    check_calibration(data, path)
    return data


def calibrate_run(
    run_dir: str | os.PathLike[str],
    *,
    fit_on: str = "auto",
    n_bins: int = DEFAULT_BINS,
    ood_tpr: float = OOD_TPR,
    figure: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Fit a temperature for a deep run and save it with the model.

    Args:
        run_dir: a deep run folder.
        fit_on: ``"auto"``, ``"val"`` or ``"test-half"`` (see :func:`calibration_data`).
        n_bins: ECE bins.
        ood_tpr: the low-confidence threshold is the max softmax (after temperature scaling)
            that this share of the fitting images reaches: about ``1 - ood_tpr`` of ordinary
            digits get flagged, and most inputs that are not digits do.
        figure: also draw the reliability diagram (before and after) to this PNG.
        home: dataset cache root.
        device: where the model runs.

    Writes:
        ``<run>/model/calibration.json``: ``temperature``, ``fitted_on``, ``ece_before``,
        ``ece_after``, ``ood`` (``score``, ``threshold``, ``note``) and details.

    Returns:
        That content.
    """
    if not 0 < ood_tpr < 1:
        raise MnistlabError(f"ood_tpr must be in (0, 1); got {ood_tpr}")
    model, meta, config = load_run_model(run_dir)
    data = calibration_data(config, fit_on, home)
    norm = meta["normalization"]
    fit_logits = predict_logits(model, data.fit_images, norm, device=device)
    eval_logits = predict_logits(model, data.eval_images, norm, device=device)
    temperature = fit_temperature(fit_logits, data.fit_labels)
    before = softmax(eval_logits)
    after = softmax(eval_logits, temperature)
    threshold = float(np.quantile(softmax(fit_logits, temperature).max(axis=1), 1 - ood_tpr))
    result = {
        "temperature": temperature,
        "fitted_on": data.fitted_on,
        "ece_before": expected_calibration_error(before, data.eval_labels, n_bins),
        "ece_after": expected_calibration_error(after, data.eval_labels, n_bins),
        "ood": {
            "score": "max_softmax",
            "threshold": threshold,
            "note": f"max softmax of softmax(logits / temperature); {ood_tpr:.0%} of the "
            f"fitting digits score at least this, lower scores are flagged low_confidence",
        },
        "nll_before": negative_log_likelihood(eval_logits, data.eval_labels),
        "nll_after": negative_log_likelihood(eval_logits, data.eval_labels, temperature),
        "accuracy": float((eval_logits.argmax(1) == data.eval_labels).mean()),
        "n_bins": n_bins,
        "num_fit": len(data.fit_labels),
        "num_eval": len(data.eval_labels),
        "description": data.description,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    write_calibration(Path(run_dir) / "model", result)
    if figure is not None:
        plot_reliability_diagram(
            before,
            data.eval_labels,
            figure,
            calibrated=after,
            temperature=temperature,
            n_bins=n_bins,
        )
    return result
