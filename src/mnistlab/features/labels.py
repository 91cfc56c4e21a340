"""Label encodings: one-hot and smoothed targets, and decoding model outputs.

numpy in, numpy out: inputs are anything :func:`numpy.asarray` accepts (a CPU torch tensor
converts, but the result is always a numpy array).
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode", "one_hot", "smooth_labels", "top_k"]


def _check_labels(labels, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise ValueError(f"num_classes must be an int; got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,); got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise ValueError(
            f"label {labels[bad]} at index {bad} is outside the class range 0..{num_classes - 1}"
        )
    return labels.astype(np.int64, copy=False)


def _check_scores(scores, what: str = "probabilities") -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"{what} must be 2-D (N, C) with C >= 1; got shape {scores.shape}")
    if scores.dtype.kind not in "iuf":
        raise ValueError(f"{what} must be real numbers; got dtype {scores.dtype}")
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return scores


def one_hot(labels, num_classes: int) -> np.ndarray:
    """Integer labels ``(N,)`` in ``0..num_classes-1`` -> float32 one-hot rows ``(N, C)``.

    Raises:
        ValueError: labels not 1-D integers, or a label outside the class range.
    """
    labels = _check_labels(labels, num_classes)
    out = np.zeros((labels.size, num_classes), dtype=np.float32)
    out[np.arange(labels.size), labels] = 1
    return out


def smooth_labels(labels_or_onehot, epsilon: float, num_classes: int | None = None) -> np.ndarray:
    """Label smoothing: ``(1 - epsilon) * onehot + epsilon / C``, float32 ``(N, C)``.

    Args:
        labels_or_onehot: integer labels ``(N,)`` (then ``num_classes`` is required) or target
            rows ``(N, C)`` (one-hot or any distribution; ``num_classes``, if given, must be C).
        epsilon: probability mass spread uniformly over the classes, in [0, 1).
        num_classes: C.

    Raises:
        ValueError: epsilon outside [0, 1), labels out of range, or a shape that does not fit.
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1); got {epsilon!r}")
    targets = np.asarray(labels_or_onehot)
    if targets.ndim == 1:
        if num_classes is None:
            raise ValueError("num_classes is required when smoothing integer labels")
        targets = one_hot(targets, num_classes)
    else:
        targets = _check_scores(targets, "targets")
        if num_classes is not None and targets.shape[1] != num_classes:
            raise ValueError(
                f"targets have {targets.shape[1]} columns but num_classes is {num_classes}"
            )
    c = targets.shape[1]
    return ((1 - epsilon) * targets + epsilon / c).astype(np.float32)


def decode(probabilities) -> np.ndarray:
    """Most likely class of each row: int64 ``(N,)`` (the first column among ties).

    Works on probabilities, logits or any scores ``(N, C)``.

    Raises:
        ValueError: not 2-D, no columns, or non-finite values.
    """
    return np.argmax(_check_scores(probabilities), axis=1).astype(np.int64)


def top_k(probabilities, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely classes of each row, most likely first.

    Args:
        probabilities: scores ``(N, C)`` (probabilities or logits).
        k: 1 <= k <= C.

    Returns:
        ``(indices, values)``: int64 class indices ``(N, k)`` and their scores ``(N, k)`` (the
        input's dtype), sorted by descending score; ties keep the lower class first, so
        ``indices[:, 0] == decode(probabilities)``.

    Raises:
        ValueError: bad scores (see :func:`decode`), or k outside 1..C.
    """
    scores = _check_scores(probabilities)
    c = scores.shape[1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= c:
        raise ValueError(f"k must be an int in 1..{c} (the number of classes); got {k!r}")
    # Stable sort of the negated scores: descending, ties in class order. Integer scores are
    # widened first so that negating them cannot wrap around.
    keys = -scores.astype(np.float64) if scores.dtype.kind in "iu" else -scores
    indices = np.argsort(keys, axis=1, kind="stable")[:, :k].astype(np.int64)
    return indices, np.take_along_axis(scores, indices, axis=1)
