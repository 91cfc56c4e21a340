"""Label quality: find training images whose label is probably wrong.

Cross-validated disagreement (the idea behind confident learning, Northcutt et al. 2021, in
its simplest form): split the images into ``folds`` stratified folds; for each fold, train a
small CNN on the other folds and predict the held-out one, so every image gets
out-of-fold probabilities from a model that never saw its label. An image is flagged when that
model confidently disagrees with the given label: its predicted class differs from the label
and gets probability at least ``min_confidence``. Flagged images are ranked by the probability
left to the given label (lowest first) and drawn in a gallery for a human to judge: some are
mislabeled, others merely ambiguous or badly written.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab import __version__
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.io import atomic_write_json
from mnistlab.models.inference import Normalization
from mnistlab.plotting import image_mosaic, pyplot, save_figure
from mnistlab.robustness.calibration import predict_logits, softmax
from mnistlab.training.data import DeviceSplit, steps_per_epoch
from mnistlab.training.engine import cnn_step, default_model_factory, optimizer_of, schedule_of
from mnistlab.training.loop import fit
from mnistlab.training.recipes import get_deep_recipe

__all__ = [
    "LABEL_ISSUES_FILE",
    "LabelIssues",
    "find_label_issues",
    "label_issues_in",
    "plot_label_issues",
    "stratified_folds",
    "write_label_issues",
]

LABEL_ISSUES_FILE = "label_issues.json"
GALLERY_FILE = "label_issues.png"


def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold number in ``range(folds)`` for every example; each class is spread evenly over
    the folds (shuffled with ``seed``, then dealt round-robin)."""
    y = np.asarray(labels)
    if folds < 2 or folds > len(y):
        raise MnistlabError(f"folds must be in [2, {len(y)}]; got {folds}")
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    offset = 0
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        out[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)  # the next class starts where this one stopped: balanced fold sizes
    return out


@dataclass
class LabelIssues:
    """The result of :func:`find_label_issues`."""

    dataset: str
    split: str
    class_names: list[str]
    indices: np.ndarray  # flagged images (index in the split), most suspicious first
    given: np.ndarray  # their given labels
    predicted: np.ndarray  # the out-of-fold prediction
    confidence: np.ndarray  # out-of-fold probability of the predicted class
    given_probability: np.ndarray  # out-of-fold probability left to the given label
    out_of_fold_accuracy: float
    num_images: int
    config: dict[str, Any]
    seconds: float
    probabilities: np.ndarray = field(repr=False)  # (N, classes) out-of-fold, float32

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings, counts and one entry per flagged image."""
        names = self.class_names
        return {
            "dataset": self.dataset,
            "split": self.split,
            "num_images": self.num_images,
            "num_flagged": len(self.indices),
            "out_of_fold_accuracy": self.out_of_fold_accuracy,
            "seconds": self.seconds,
            "config": self.config,
            "issues": [
                {
                    "index": int(i),
                    "given": names[int(g)],
                    "predicted": names[int(p)],
                    "confidence": float(c),
                    "given_probability": float(q),
                }
                for i, g, p, c, q in zip(
                    self.indices,
                    self.given,
                    self.predicted,
                    self.confidence,
                    self.given_probability,
                    strict=True,
                )
            ],
        }


def _train_fold(
    images: torch.Tensor, labels: torch.Tensor, config: Any, num_classes: int, seed: int
) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train ``config.model`` on uint8 ``(n, 1, 28, 28)`` images on the CPU through the one
    training loop, with the engine's step, optimizer, schedule, augmentation and precision
    (no validation, no run folder)."""

    config = replace(config, seed=seed)
    norm = Normalization.of(images.numpy())
    torch.manual_seed(seed)
    model = default_model_factory(config.model, num_classes)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = steps_per_epoch(len(labels), config.batch_size)
    step = cnn_step(config, model, model, DeviceSplit(images, labels, "train"), norm)
    fit(
        model,
        optimizer_of(model, config),
        step,
        schedule=schedule_of(config, config.epochs * batches),
        epochs=config.epochs,
        steps_per_epoch=batches,
        seed=seed,
        grad_clip=config.grad_clip,
    )
    return model.eval(), {"mean": norm.mean, "std": norm.std}


def find_label_issues(
    dataset: str = "mnist",
    *,
    split: str = "train",
    limit: int | None = None,
    home: str | os.PathLike[str] | None = None,
    **options: Any,
) -> LabelIssues:
    """Flag likely mislabeled images of a dataset's split (see :func:`label_issues_in`).

    Args:
        dataset, split: the images and labels to audit (default: MNIST's training split).
        limit: audit only the first ``limit`` images (quick looks).
        home: dataset cache root.
        options: :func:`label_issues_in`'s keyword arguments (``folds``, ``model``, ...).
    """

    data = load_dataset(dataset, split, home=home)
    images, labels = data.images[:limit], data.labels[:limit]
    issues = label_issues_in(
        images, labels, list(data.class_names), dataset=dataset, split=split, **options
    )
    issues.config["limit"] = limit
    return issues


# What the fold models keep of the settings the audit was measured with (docs/robustness.md):
# fast-cnn's default recipe later moved to one-cycle to 2e-2 with 40 % warmup, tuned for one
# epoch on 60,000 images; on folds of a few thousand images over a few epochs it flagged more
# clean images (precision 0.48 instead of >= 0.5 at 1.5 % label noise, tests).
FOLD_SETTINGS: dict[str, dict[str, float]] = {"fast-cnn": {"lr": 1e-2, "warmup": 0.1}}


def label_issues_in(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    *,
    dataset: str = "custom",
    split: str = "train",
    folds: int = 4,
    model: str = "fast-cnn",
    epochs: int = 2,
    min_confidence: float = 0.9,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> LabelIssues:
    """Flag likely mislabeled images by cross-validated, confident disagreement.

    Args:
        images: uint8 ``(N, 28, 28)``; labels: ``(N,)`` the labels to audit.
        class_names: one name per label value.
        dataset, split: names recorded in the result.
        folds: stratified folds (>= 2); every image is predicted by a model trained on the
            other ``folds - 1``.
        model: a deep model name; it is trained with its ``default`` recipe (see
            ``mnistlab.training.recipes``; for fast-cnn with :data:`FOLD_SETTINGS`) for
            ``epochs`` epochs, without label smoothing (so
            probabilities mean what they say), on the CPU.
        epochs: epochs per fold.
        min_confidence: flag when the out-of-fold prediction differs from the label with at
            least this probability.
        seed: folds, initialization and augmentation.
        log: called with a line per fold.
        overrides: more ``TrainConfig`` fields for the fold models (e.g. ``batch_size``).

    Returns:
        A :class:`LabelIssues`, most suspicious first.
    """

    if not 0 < min_confidence <= 1:
        raise MnistlabError(f"min_confidence must be in (0, 1]; got {min_confidence}")
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(labels):
        raise MnistlabError(
            f"need uint8 (N, 28, 28) images and N labels; got {images.dtype} {images.shape}, "
            f"{labels.shape}"
        )
    settings = {
        "epochs": epochs,
        "seed": seed,
        "label_smoothing": 0.0,
        **FOLD_SETTINGS.get(model, {}),
        **overrides,
    }
    config = get_deep_recipe(model, "default", **settings)
    config = replace(config, dataset=dataset, device="cpu")
    fold_of = stratified_folds(labels, folds, seed)
    k = len(class_names)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)
    y = torch.from_numpy(labels)
    probabilities = np.zeros((len(labels), k), dtype=np.float64)
    start = time.perf_counter()
    for f in range(folds):
        train_idx = torch.from_numpy(np.flatnonzero(fold_of != f))
        held = np.flatnonzero(fold_of == f)
        net, norm = _train_fold(x[train_idx], y[train_idx], config, k, seed + f)
        probabilities[held] = softmax(predict_logits(net, images[held], norm))
        if log:
            acc = float((probabilities[held].argmax(1) == labels[held]).mean())
            log(f"fold {f + 1}/{folds}: {len(held):,} held-out images, accuracy {acc:.4f}")
    seconds = time.perf_counter() - start
    predicted = probabilities.argmax(1)
    confidence = probabilities.max(1)
    given_probability = probabilities[np.arange(len(labels)), labels]
    flagged = np.flatnonzero((predicted != labels) & (confidence >= min_confidence))
    flagged = flagged[np.argsort(given_probability[flagged], kind="stable")]
    return LabelIssues(
        dataset=dataset,
        split=split,
        class_names=list(class_names),
        indices=flagged,
        given=labels[flagged],
        predicted=predicted[flagged],
        confidence=confidence[flagged],
        given_probability=given_probability[flagged],
        out_of_fold_accuracy=float((predicted == labels).mean()),
        num_images=len(labels),
        config={
            "folds": folds,
            "min_confidence": min_confidence,
            "seed": seed,
            "train_config": config.to_dict(),
        },
        seconds=seconds,
        probabilities=probabilities.astype(np.float32),
    )


def plot_label_issues(
    issues: LabelIssues, images: np.ndarray, path: str | os.PathLike[str], n: int = 48
) -> Path:
    """A gallery of the ``n`` most suspicious images: "given → model (probability)" and the
    index in the split. ``images`` is the audited split's uint8 ``(N, 28, 28)``. Returns path."""

    plt = pyplot()
    shown = min(n, len(issues.indices))
    if shown == 0:
        fig, ax = plt.subplots(figsize=(5, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "No label issues flagged", ha="center", va="center", fontsize=12)
        return save_figure(fig, path)
    names = issues.class_names
    picked = [int(i) for i in issues.indices[:shown]]
    captions = [
        f"{names[int(issues.given[k])]} → {names[int(issues.predicted[k])]} "
        f"({issues.confidence[k]:.2f})"
        for k in range(shown)
    ]
    fig = image_mosaic(
        [images[i] for i in picked],
        captions,
        cols=min(8, shown),
        cell=(1.45, 1.7),
        side=1.1,
        title=f"Likely label issues in {issues.dataset} {issues.split}: {shown} of "
        f"{len(issues.indices)} flagged · given label → out-of-fold prediction (probability)",
        notes=[f"#{i}" for i in picked],
        title_size=9,
    )
    return save_figure(fig, path)


def write_label_issues(
    issues: LabelIssues,
    out: str | os.PathLike[str],
    *,
    images: np.ndarray,
    show: int = 48,
    overwrite: bool = False,
) -> Path:
    """Write ``label_issues.json`` and the gallery ``label_issues.png`` into folder ``out``.

    Raises:
        OverwriteError: ``out`` already holds a ``label_issues.json`` and ``overwrite`` is off.
    """

    folder = Path(out).expanduser()
    target = folder / LABEL_ISSUES_FILE
    if target.exists() and not overwrite:
        raise OverwriteError(f"{target} exists", hint="pass --overwrite, or choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    plot_label_issues(issues, images, folder / GALLERY_FILE, n=show)
    payload = {
        **issues.to_dict(),
        "gallery": GALLERY_FILE,
        "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mnistlab_version": __version__,
    }
    atomic_write_json(target, payload)
    return target
