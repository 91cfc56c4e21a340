"""Classification metrics in numpy: accuracy, per-class precision / recall / F1, macro and
weighted averages, the confusion matrix, the most-confused class pairs and log loss.

Definitions match scikit-learn's with ``labels=range(num_classes)`` and ``zero_division=0``
(the tests check them against it): a class never predicted has precision 0, a class absent
from ``y_true`` has recall 0, and macro averages run over every class, present or not.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# A probability row may differ from 1 by this much (float32 softmax sums are off by ~1e-7;
# logits or scores are off by far more and are refused).
_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ClassificationMetrics:
    """The scores of a classifier on one labelled set. Per-class lists are indexed by label.

    Attributes:
        num_samples: number of examples scored.
        accuracy: fraction of examples predicted correctly.
        precision, recall, f1: one float per class (0.0 where undefined).
        support: number of true examples of each class.
        macro_precision, macro_recall, macro_f1: unweighted means over all classes.
        weighted_precision, weighted_recall, weighted_f1: means weighted by ``support``
            (``weighted_recall`` equals ``accuracy``).
        confusion: ``confusion[t][p]`` = examples of true class ``t`` predicted as ``p``.
        most_confused: ``(true, predicted, count)`` of the largest off-diagonal cells, largest
            first (ties by true then predicted label); cells with count 0 are left out.
        log_loss: mean cross-entropy (natural log) of the true class, or None when no
            probabilities were given.
    """

    num_samples: int
    accuracy: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    confusion: list[list[int]]
    most_confused: list[tuple[int, int, int]]
    log_loss: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.support)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``most_confused`` as lists of three ints)."""
        out = asdict(self)
        out["most_confused"] = [list(t) for t in self.most_confused]
        return out


def _labels(values: ArrayLike, name: str, num_classes: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels; got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr < 0) | (arr >= num_classes)]
        raise ValueError(
            f"{name} has labels outside 0..{num_classes - 1} (num_classes={num_classes}): "
            f"{sorted(set(bad.tolist()))[:10]}"
        )
    return arr


def check_probabilities(probabilities: ArrayLike, num_samples: int, num_classes: int) -> np.ndarray:
    """Validate class probabilities and return them as a float array.

    Args:
        probabilities: shape ``(num_samples, num_classes)``, finite, in [0, 1], rows summing
            to 1 (within 1e-3).

    Raises:
        ValueError: wrong shape, values outside [0, 1] or rows that do not sum to 1 (for
            example logits or decision scores passed by mistake).
    """
    p = np.asarray(probabilities)
    if p.shape != (num_samples, num_classes):
        raise ValueError(
            f"probabilities must have shape (num_samples, num_classes) = "
            f"({num_samples}, {num_classes}); got {p.shape}"
        )
    if not np.issubdtype(p.dtype, np.floating):
        p = p.astype(np.float64)
    if p.size == 0:
        return p
    if not np.isfinite(p).all():
        raise ValueError("probabilities contain NaN or infinite values")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"probabilities must lie in [0, 1]; got values in [{p.min():.4g}, {p.max():.4g}] "
            "(pass softmax outputs, not logits or scores)"
        )
    sums = p.sum(axis=1, dtype=np.float64)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > _SUM_TOLERANCE:
        raise ValueError(
            f"each row of probabilities must sum to 1; row {worst} sums to {sums[worst]:.6g}"
        )
    return p


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """The ``(num_classes, num_classes)`` int64 matrix of counts: rows true, columns predicted.

    Raises:
        ValueError: as :func:`classification_metrics`.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1; got {num_classes}")
    t = _labels(y_true, "y_true", num_classes)
    p = _labels(y_pred, "y_pred", num_classes)
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def most_confused_pairs(confusion: ArrayLike, top: int = 10) -> list[tuple[int, int, int]]:
    """The ``top`` largest off-diagonal cells as ``(true, predicted, count)``, largest first.

    Ties are broken by true label, then predicted label; zero cells are never listed.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    order = np.lexsort((p, t, -counts))[: max(top, 0)]
    return [(int(t[i]), int(p[i]), int(counts[i])) for i in order]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_classes: int,
    probabilities: ArrayLike | None = None,
    *,
    top_confused: int = 10,
) -> ClassificationMetrics:
    """Score predictions against true labels.

    Args:
        y_true: true labels, integers in ``range(num_classes)``, shape (N,).
        y_pred: predicted labels, same form.
        num_classes: number of classes (classes absent from both arrays still count in the
            macro averages, as sklearn does with ``labels=range(num_classes)``).
        probabilities: optional ``(N, num_classes)`` class probabilities; gives ``log_loss``.
            Probabilities are clipped to ``[eps, 1 - eps]`` (``eps`` of their dtype) first.
        top_confused: how many off-diagonal pairs ``most_confused`` keeps.

    Returns:
        A :class:`ClassificationMetrics`.

    Raises:
        ValueError: no examples, lengths that differ, non-integer labels, labels out of range,
            or probabilities of the wrong shape or not probabilities.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    n = int(cm.sum())
    if n == 0:
        raise ValueError("no examples to score: y_true and y_pred are empty")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted.astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    # 2tp / (2tp + fp + fn) equals the harmonic mean of precision and recall and is 0, not
    # NaN, where both are 0 (sklearn computes it this way too).
    f1 = _ratio(2 * tp, (support + predicted).astype(np.float64))

    loss = None
    if probabilities is not None:
        t = np.asarray(y_true, dtype=np.int64)
        p = check_probabilities(probabilities, n, num_classes)
        eps = np.finfo(p.dtype).eps
        picked = np.clip(p[np.arange(n), t], eps, 1 - eps).astype(np.float64)
        loss = float(-np.log(picked).mean())

    return ClassificationMetrics(
        num_samples=n,
        accuracy=float(tp.sum() / n),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=support.tolist(),
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        weighted_precision=float((precision * support).sum() / n),
        weighted_recall=float((recall * support).sum() / n),
        weighted_f1=float((f1 * support).sum() / n),
        confusion=cm.tolist(),
        most_confused=most_confused_pairs(cm, top_confused),
        log_loss=loss,
    )


#: The abstention rates of the coverage/accuracy curve in reports and benchmarks.
ABSTAIN_RATES = (0.0, 0.01, 0.02, 0.05, 0.1)


@dataclass(frozen=True)
class SelectivePoint:
    """Accuracy when the model abstains on its least confident examples ("not sure").

    Attributes:
        abstain: the fraction asked for.
        abstained: examples set aside: ``floor(abstain * N)``, the least confident ones
            (confidence = the largest class probability; ties set aside in index order).
        coverage: fraction of examples answered, ``1 - abstained / N``.
        accuracy: accuracy on the answered examples.
        threshold: the lowest confidence still answered (a reject rule for new data: answer
            when the confidence is at least this; chosen on this set).
    """

    abstain: float
    abstained: int
    coverage: float
    accuracy: float
    threshold: float


def selective_accuracy(
    probabilities: ArrayLike,
    labels: ArrayLike,
    abstain: float | Sequence[float] = ABSTAIN_RATES,
) -> list[SelectivePoint]:
    """The coverage/accuracy curve of a reject option: for each rate in ``abstain``, the
    accuracy on the rest when the least confident ``floor(rate * N)`` examples are set aside.

    Args:
        probabilities: ``(N, K)`` class probabilities (rows summing to 1).
        labels: true labels, integers in ``range(K)``, shape ``(N,)``.
        abstain: one rate or several, each in ``[0, 1)``; 0 gives plain accuracy.

    Returns:
        One :class:`SelectivePoint` per rate, in the order given.

    Raises:
        ValueError: no examples, labels or probabilities of the wrong form, an empty list of
            rates, or a rate that is not a number in ``[0, 1)`` or leaves no example answered.
    """
    rates = [abstain] if np.ndim(abstain) == 0 else list(abstain)  # type: ignore[arg-type]
    if not rates:
        raise ValueError("abstain: give at least one rate, e.g. (0, 0.01, 0.02, 0.05, 0.1)")
    for rate in rates:
        if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.number)):
            raise ValueError(f"abstain: {rate!r} is not a number; use fractions such as 0.02")
        if not 0.0 <= float(rate) < 1.0:  # NaN fails too
            raise ValueError(
                f"abstain: {rate!r} is outside [0, 1); rates are fractions (0.02 = 2 %)"
            )
    probs = np.asarray(probabilities)
    n = probs.shape[0] if probs.ndim == 2 else 0
    if n == 0:
        raise ValueError(f"probabilities must be a non-empty (N, K) array; got {probs.shape}")
    y = _labels(labels, "labels", probs.shape[1])
    if len(y) != n:
        raise ValueError(f"{n:,} rows of probabilities but {len(y):,} labels")
    p = check_probabilities(probs, n, probs.shape[1])
    confidence = p.max(axis=1).astype(np.float64)
    correct = p.argmax(axis=1) == y
    order = np.argsort(confidence, kind="stable")  # least confident first
    points = []
    for rate in rates:
        k = int(np.floor(float(rate) * n + 1e-9))
        if k >= n:
            raise ValueError(f"abstain: {rate!r} of {n:,} examples leaves none answered")
        kept = order[k:]
        points.append(
            SelectivePoint(
                abstain=float(rate),
                abstained=k,
                coverage=(n - k) / n,
                accuracy=float(correct[kept].mean()),
                threshold=float(confidence[kept].min()),
            )
        )
    return points


@dataclass(frozen=True)
class DatasetScore:
    """A model's scores on one split of a dataset, possibly not the one it was trained on.

    Attributes:
        dataset, split: what was scored.
        metrics: accuracy, per-class scores, confusion, log loss.
        selective: the reject option's curve (:func:`selective_accuracy`).
    """

    dataset: str
    split: str
    metrics: ClassificationMetrics
    selective: list[SelectivePoint]

    @property
    def accuracy(self) -> float:
        return self.metrics.accuracy


def evaluate_on(
    run: str | os.PathLike[str],
    dataset: str,
    split: str = "test",
    *,
    abstain: float | Sequence[float] = ABSTAIN_RATES,
    home: str | os.PathLike[str] | None = None,
) -> DatasetScore:
    """Score a run's model on a split of any dataset with the same classes, e.g. an MNIST
    model on ``sklearn-digits``; the run folder is left as it is (``mnistlab evaluate``
    rewrites the report on the run's own test split).

    The model is read as ``mnistlab evaluate`` reads it (no calibration temperature).

    Raises:
        MnistlabError: no model in ``run``, an unknown dataset or split, or a dataset whose
            class names differ from the model's.
    """
    from mnistlab.data import load_dataset
    from mnistlab.errors import MnistlabError
    from mnistlab.models.inference import load_predictor

    predictor = load_predictor(run)
    data = load_dataset(dataset, split, home=home)
    names = predictor.class_names or _trained_class_names(run, home)
    if names and list(data.class_names) != names:
        raise MnistlabError(
            f"{run}: the model's classes {names} are not {dataset!r}'s {list(data.class_names)}",
            hint="score it on a dataset with the same classes (digits: mnist, qmnist, "
            "sklearn-digits, mnist-mini)",
        )
    probabilities = predictor.predict_proba(data.images)
    k = probabilities.shape[1]
    if k != data.num_classes:
        raise MnistlabError(
            f"{run}: the model has {k} classes, {dataset!r} has {data.num_classes}",
            hint="score it on a dataset with the same classes",
        )
    metrics = classification_metrics(data.labels, probabilities.argmax(axis=1), k, probabilities)
    return DatasetScore(
        dataset, split, metrics, selective_accuracy(probabilities, data.labels, abstain)
    )


def _trained_class_names(run: str | os.PathLike[str], home: str | os.PathLike[str] | None) -> list:
    """The class names of the dataset a run was trained on (its ``config.json``), or ``[]``."""
    import json
    from pathlib import Path

    from mnistlab.data import get_spec
    from mnistlab.errors import MnistlabError

    try:
        config = json.loads((Path(run) / "config.json").read_text())
        return list(get_spec(str(config["dataset"]), home).class_names)
    except (OSError, ValueError, KeyError, TypeError, MnistlabError):
        return []
