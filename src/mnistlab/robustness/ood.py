"""Out-of-distribution detection: "is this a digit at all?" from a classifier's logits.

Two label-free scores, higher meaning "more like the training data":

- maximum softmax probability (Hendrycks & Gimpel, 2017): ``max softmax(logits / T)``;
- negative free energy (Liu et al., 2020): ``T * logsumexp(logits / T)``, which keeps the
  logits' magnitude that the softmax normalizes away.

The AUROC of a score is the probability that a random in-distribution image (MNIST test) scores
higher than a random out-of-distribution one (Fashion-MNIST test): 1 is perfect, 0.5 chance.
No labels are used anywhere: only images go in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.robustness.calibration import predict_logits, softmax

__all__ = [
    "OOD_SCORES",
    "OodResult",
    "auroc",
    "energy_score",
    "evaluate_ood",
    "fpr_at_tpr",
    "max_softmax_score",
    "ood_from_logits",
    "ood_scores",
    "plot_confidence_histogram",
]

OOD_SCORES = ("max_softmax", "energy")


def max_softmax_score(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """``max softmax(logits / temperature)`` per row: ``(N,)`` in (0, 1]."""
    return softmax(logits, temperature).max(axis=1)


def energy_score(logits: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """The negative free energy ``T * logsumexp(logits / T)`` per row (higher: more in
    distribution); ``(N,)``."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    top = z.max(axis=1)
    return float(temperature) * (top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def ood_scores(logits: ArrayLike, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Both scores of :data:`OOD_SCORES` from logits ``(N, classes)``: ``{name: (N,)}``."""
    return {
        "max_softmax": max_softmax_score(logits, temperature),
        "energy": energy_score(logits, temperature),
    }


def _pair(scores_in: ArrayLike, scores_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(scores_in, dtype=np.float64).ravel()
    b = np.asarray(scores_out, dtype=np.float64).ravel()
    if not len(a) or not len(b):
        raise MnistlabError("need at least one in-distribution and one out-of-distribution score")
    return a, b


def auroc(scores_in: ArrayLike, scores_out: ArrayLike) -> float:
    """Area under the ROC curve of telling in-distribution (positive) from OOD by the score
    (ties count half; ``sklearn.metrics.roc_auc_score``)."""
    from sklearn.metrics import roc_auc_score

    a, b = _pair(scores_in, scores_out)
    truth = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    return float(roc_auc_score(truth, np.concatenate([a, b])))


def fpr_at_tpr(scores_in: ArrayLike, scores_out: ArrayLike, tpr: float = 0.95) -> float:
    """The share of OOD images accepted when the threshold keeps ``tpr`` of the in-distribution
    ones (threshold: the ``1 - tpr`` quantile of ``scores_in``)."""
    a, b = _pair(scores_in, scores_out)
    threshold = np.quantile(a, 1 - tpr)
    return float((b >= threshold).mean())


@dataclass(frozen=True)
class OodResult:
    """How well a model's scores separate its test images from another dataset's."""

    in_dataset: str
    out_dataset: str
    num_in: int
    num_out: int
    temperature: float
    auroc: dict[str, float]  # per score
    fpr_at_95_tpr: dict[str, float]  # per score
    mean_max_softmax_in: float
    mean_max_softmax_out: float
    scores_in: dict[str, np.ndarray]
    scores_out: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (no per-image scores)."""
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("scores_in", "scores_out")  # arrays
        }


def evaluate_ood(
    model: nn.Module,
    normalization: Mapping[str, float],
    in_images: np.ndarray,
    out_images: np.ndarray,
    *,
    in_dataset: str = "mnist",
    out_dataset: str = "fashion-mnist",
    temperature: float = 1.0,
    device: str = "cpu",
) -> OodResult:
    """Score in- and out-of-distribution images (uint8 ``(N, 28, 28)``; no labels) and
    compute the AUROC and the FPR at 95% TPR of each score of :data:`OOD_SCORES`."""
    return ood_from_logits(
        predict_logits(model, in_images, normalization, device=device),
        predict_logits(model, out_images, normalization, device=device),
        in_dataset=in_dataset,
        out_dataset=out_dataset,
        temperature=temperature,
    )


def ood_from_logits(
    logits_in: ArrayLike,
    logits_out: ArrayLike,
    *,
    in_dataset: str = "mnist",
    out_dataset: str = "fashion-mnist",
    temperature: float = 1.0,
) -> OodResult:
    """:func:`evaluate_ood` from logits already computed (e.g. to try several temperatures)."""
    s_in = ood_scores(logits_in, temperature)
    s_out = ood_scores(logits_out, temperature)
    return OodResult(
        in_dataset=in_dataset,
        out_dataset=out_dataset,
        num_in=len(s_in["energy"]),
        num_out=len(s_out["energy"]),
        temperature=float(temperature),
        auroc={k: auroc(s_in[k], s_out[k]) for k in OOD_SCORES},
        fpr_at_95_tpr={k: fpr_at_tpr(s_in[k], s_out[k]) for k in OOD_SCORES},
        mean_max_softmax_in=float(s_in["max_softmax"].mean()),
        mean_max_softmax_out=float(s_out["max_softmax"].mean()),
        scores_in=s_in,
        scores_out=s_out,
    )


def plot_confidence_histogram(
    result: OodResult, path: str | os.PathLike[str], *, threshold: float | None = None
) -> Path:
    """Histograms of both scores, in-distribution vs OOD (density), with the AUROCs; an
    optional low-confidence ``threshold`` is drawn on the max-softmax panel. Returns ``path``."""
    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, name in zip(axes, OOD_SCORES, strict=True):
        a, b = result.scores_in[name], result.scores_out[name]
        if name == "max_softmax":
            bins = np.linspace(0, 1, 41)
            label = "max softmax probability"
        else:
            bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 41)
            label = "negative energy (T·logsumexp(logits/T))"
        ax.hist(a, bins=bins, alpha=0.6, density=True, label=f"{result.in_dataset} (in)")
        ax.hist(b, bins=bins, alpha=0.6, density=True, label=f"{result.out_dataset} (out)")
        if name == "max_softmax" and threshold is not None:
            ax.axvline(threshold, color="#333333", linestyle="--", linewidth=1)
            ax.text(threshold, ax.get_ylim()[1] * 0.9, " low-confidence\n threshold", fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("density (log)")
        ax.set_title(f"{name}: AUROC {result.auroc[name]:.4f}", fontsize=10)
        ax.legend(fontsize=8)
    temp = f", T = {result.temperature:.3f}" if result.temperature != 1 else ""
    fig.suptitle(f"Is this a digit? {result.in_dataset} test vs {result.out_dataset} test{temp}")
    fig.tight_layout()
    return save_figure(fig, path)
