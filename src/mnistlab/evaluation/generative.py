"""Scores of generated digits: the Fréchet distance in a MNIST classifier's feature space
(FID, Heusel et al. 2017, with a MNIST network instead of Inception), and the classes a
classifier sees among samples (a mode-collapse check).

The features are the input of the classifier's last linear layer (its penultimate
activations), taken with a forward hook, so any CNN of ``mnistlab train`` or fine-tuned
transformer works as the feature network. Distances computed with different networks are not
comparable: report the network with the number, and the real-vs-real baseline (two halves of
the test set) beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from mnistlab.errors import MnistlabError


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets,
    ``|μa - μb|² + tr(Σa + Σb - 2 (Σa^½ Σb Σa^½)^½)``.

    ``tr((Σa Σb)^½)`` is computed as the sum of the square roots of the eigenvalues of the
    symmetric positive semi-definite ``Σa^½ Σb Σa^½`` (``eigh``, negative rounding clipped to
    0): no complex parts to discard, and the result is symmetric in ``a`` and ``b`` up to
    float rounding.

    Args:
        a, b: features ``(N, D)`` and ``(M, D)``, at least 2 rows each.

    Returns:
        The distance (>= 0; 0 for identical sets up to rounding).

    Raises:
        MnistlabError: not 2-D, different widths, fewer than 2 rows, or non-finite values.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.ndim != 2 or b64.ndim != 2 or a64.shape[1] != b64.shape[1]:
        raise MnistlabError(
            f"features must be (N, D) with the same D; got {a64.shape}, {b64.shape}"
        )
    if len(a64) < 2 or len(b64) < 2:
        raise MnistlabError("a Fréchet distance needs at least 2 samples per set")
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        raise MnistlabError("features must be finite")
    mu_a, mu_b = a64.mean(0), b64.mean(0)
    cov_a, cov_b = np.cov(a64, rowvar=False), np.cov(b64, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def classifier_features(
    run_dir: str | os.PathLike[str], images: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The penultimate features and the class probabilities of uint8 ``images``
    ``(N, 28, 28)`` from a trained classifier (a deep run of ``mnistlab train`` or a
    fine-tuned transformer), read through its model file.

    Returns:
        ``(features (N, D) float64, probabilities (N, classes) float64)``.

    Raises:
        MnistlabError: no such model, or one without a last linear layer (a classic model).
    """
    from torch import nn

    from mnistlab.models.inference import load_predictor

    predictor = load_predictor(run_dir)
    module = predictor.model
    linears = (
        [m for m in module.modules() if isinstance(m, nn.Linear)]
        if isinstance(module, nn.Module)
        else []
    )
    if not linears:
        raise MnistlabError(
            f"{run_dir}: features need a neural network with a last linear layer",
            hint="pass a deep run of `mnistlab train` (e.g. resnet-small)",
        )
    captured: list[np.ndarray] = []
    handle = linears[-1].register_forward_pre_hook(
        lambda _m, args: captured.append(args[0].detach().float().flatten(1).cpu().numpy())
    )
    try:
        probabilities = predictor.predict_proba(images)
    finally:
        handle.remove()
    return np.concatenate(captured).astype(np.float64), probabilities


@dataclass
class Coverage:
    """The classes a classifier sees among samples."""

    histogram: list[int]  # samples per predicted class
    covered: int  # classes with at least ``min_share`` of the samples
    min_share: float

    @property
    def total(self) -> int:
        return int(sum(self.histogram))


def class_coverage(probabilities: np.ndarray, min_share: float = 0.01) -> Coverage:
    """The histogram of predicted classes of samples and how many classes hold at least
    ``min_share`` of them (10 of 10 for a generator that covers every digit; a collapsed one
    covers a few).

    Raises:
        MnistlabError: probabilities that are not ``(N, classes)`` with N >= 1.
    """
    p = np.asarray(probabilities)
    if p.ndim != 2 or len(p) == 0:
        raise MnistlabError(f"probabilities must be (N, classes), N >= 1; got {p.shape}")
    histogram = np.bincount(p.argmax(1), minlength=p.shape[1])
    covered = int((histogram >= min_share * len(p)).sum())
    return Coverage([int(c) for c in histogram], covered, min_share)
