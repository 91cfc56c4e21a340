"""Classification metrics in numpy: accuracy, per-class precision / recall / F1, macro and
weighted averages, the confusion matrix, the most-confused class pairs and log loss.

Definitions match scikit-learn's with ``labels=range(num_classes)`` and ``zero_division=0``
(the tests check them against it): a class never predicted has precision 0, a class absent
from ``y_true`` has recall 0, and macro averages run over every class, present or not.
"""

from __future__ import annotations

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
