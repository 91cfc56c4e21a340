"""The figures of a run's report: the confusion matrix, the gallery of misclassified
images, the accuracy per class and the training curves, as PNG files (matplotlib)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mnistlab.plotting import figure_with_axes, image_mosaic, pyplot, save_figure, text_width

_DPI = 120


def plot_confusion_matrix(
    confusion: ArrayLike,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Path:
    """Draw the confusion matrix (rows true, columns predicted) as a PNG at ``path``.

    Correct predictions (the diagonal) are shaded blue and errors red, each by its share of
    the true class, so that the few large confusions stand out. Cells show counts, or with
    ``normalize`` the percentage of the true class; empty error cells are left blank.

    Returns:
        ``path``.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion must have shape ({k}, {k}) for {k} classes; got {cm.shape}")
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
    diagonal = np.eye(k, dtype=bool)
    errors = ~diagonal & (cm > 0)
    worst = frac[errors].max() if errors.any() else 1.0

    cell = 0.62 if k <= 12 else max(0.36, 7.5 / k)
    longest = max((len(n) for n in class_names), default=1)
    rotate = longest > 2
    # Margins in inches from the widest class name (tick labels are 9 pt; the row labels
    # need its width, a column label rotated by 40 degrees 0.64 of it below the axes and less
    # than its width to the left), not tight_layout, which draws the figure once to measure
    # it (most of its time).
    side, wide = k * cell, text_width(class_names, 9)
    what = "% of the true class" if normalize else "counts"
    lines = [title, f"({what}; errors in red)"]
    overhang = text_width(lines, 10) / 2 - side / 2 + 0.15  # the title, centred on the axes
    left = max(0.5 + wide, overhang)
    right, top = max(0.25, overhang), 0.6
    bottom = 0.55 + (0.64 * wide if rotate else 0.15)
    fig, ax = figure_with_axes((side, side), left=left, right=right, bottom=bottom, top=top)
    ax.imshow(np.where(diagonal, frac, np.nan), cmap="Blues", vmin=0, vmax=1.15)
    ax.imshow(np.where(errors, frac, np.nan), cmap="Reds", vmin=0, vmax=worst * 1.25)

    fontsize = 8 if k <= 12 else max(5.5, 8 * 12 / k)
    for t in range(k):
        for p in range(k):
            if (cm[t, p] == 0 and t != p) or k > 40:  # beyond 40 classes the colours must do
                continue
            if normalize:
                share = 100 * frac[t, p]
                text = f"{share:.0f}" if share >= 9.95 else f"{share:.1f}"
            else:
                text = str(cm[t, p])
            shade = frac[t, p] / 1.15 if t == p else frac[t, p] / (worst * 1.25)
            ax.text(
                p,
                t,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if shade > 0.6 else "#222222",
            )

    ticks = np.arange(k)
    ax.set_xticks(
        ticks, class_names, rotation=40 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_yticks(ticks, class_names)
    ax.set_xticks(ticks[:-1] + 0.5, minor=True)
    ax.set_yticks(ticks[:-1] + 0.5, minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.6)
    ax.tick_params(which="minor", length=0)
    ax.tick_params(labelsize=9)
    for spine in ax.spines.values():
        spine.set_color("#bbbbbb")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("\n".join(lines), fontsize=10)
    return save_figure(fig, path, dpi=_DPI)


def misclassified_title(true_name: str, predicted_name: str, confidence: float) -> str:
    """The caption of one misclassified image: ``"7 → 2 (0.93)"`` (true → predicted)."""
    return f"{true_name} → {predicted_name} ({confidence:.2f})"


def misclassified_indices(
    y_true: ArrayLike, y_pred: ArrayLike, confidence: ArrayLike, n: int | None = None
) -> np.ndarray:
    """Indices of the misclassified examples, most confident first (ties: lower index first),
    at most ``n`` of them."""
    t, p = np.asarray(y_true), np.asarray(y_pred)
    wrong = np.flatnonzero(t != p)
    order = np.argsort(-np.asarray(confidence, dtype=np.float64)[wrong], kind="stable")
    return wrong[order][: None if n is None else max(n, 0)]


def plot_misclassified(
    images: ArrayLike,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    confidence: ArrayLike,
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    n: int = 36,
) -> Path:
    """A grid of up to ``n`` misclassified images, most confident mistakes first.

    Args:
        images: (N, H, W) images (uint8 0-255, or floats shown on their own range).
        y_true, y_pred: (N,) true and predicted labels.
        confidence: (N,) probability given to the predicted class.
        class_names: one name per label.
        path: PNG to write.
        n: most images to show.

    Each image is titled with :func:`misclassified_title` and marked with its index in the
    set. With no mistakes the figure says so.

    Returns:
        ``path``.
    """
    plt = pyplot()
    imgs = np.asarray(images)
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    conf = np.asarray(confidence, dtype=np.float64)
    if imgs.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W); got {imgs.shape}")
    if not len(imgs) == len(t) == len(p) == len(conf):
        raise ValueError(
            f"images, y_true, y_pred and confidence differ in length: "
            f"{len(imgs)}, {len(t)}, {len(p)}, {len(conf)}"
        )
    wrong = np.flatnonzero(t != p)
    shown = misclassified_indices(t, p, conf, n)

    if len(shown) == 0:
        fig, ax = plt.subplots(figsize=(5, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "No misclassified images", ha="center", va="center", fontsize=12)
        return save_figure(fig, path, dpi=_DPI)

    titles = [misclassified_title(class_names[t[i]], class_names[p[i]], conf[i]) for i in shown]
    width = max(1.35, 0.058 * max(map(len, titles)) + 0.15)  # inches per panel, fits the title
    cols = max(1, min(math.ceil(math.sqrt(len(shown))), int(13 // width)))
    rows = math.ceil(len(shown) / cols)
    cols = math.ceil(len(shown) / rows)  # balance the rows: no last row with a single image
    fig = image_mosaic(
        [imgs[i] for i in shown],
        titles,
        cols=cols,
        cell=(width, 1.6),
        side=1.1,
        title=f"Misclassified: {len(shown)} of {len(wrong)} mistakes, most confident first "
        "· true → predicted (confidence)",
        notes=[f"#{i}" for i in shown],
        value_range=(0.0, 255.0) if imgs.dtype == np.uint8 else None,
        caption_style={"fontsize": 7.5, "color": "#8b0000"},
    )
    return save_figure(fig, path, dpi=_DPI)


def plot_per_class_accuracy(
    recall: Sequence[float],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    accuracy: float | None = None,
) -> Path:
    """Horizontal bars of the accuracy on each class (its recall), first class on top.

    ``accuracy`` (the overall accuracy) is drawn as a dashed line; classes below it are
    coloured as weak.

    Returns:
        ``path``.
    """
    values = np.asarray(recall, dtype=np.float64)
    k = len(class_names)
    if values.shape != (k,):
        raise ValueError(f"recall must have one value per class ({k}); got shape {values.shape}")
    # Fixed margins, as in plot_confusion_matrix: room for the names (10 pt), the axis label
    # and the title.
    fig, ax = figure_with_axes((5.6, 0.34 * k + 0.26), left=0.25 + text_width(class_names, 10),
                               right=0.25, bottom=0.62, top=0.42)  # fmt: skip
    y = np.arange(k)
    weak = values < accuracy if accuracy is not None else np.zeros(k, dtype=bool)
    colors = np.where(weak, "#d6604d", "#4393c3")
    bars = ax.barh(y, values, 0.7, color=colors, zorder=2)
    ax.bar_label(
        bars,
        [f"{v:.1%}" for v in values],
        padding=3,
        fontsize=8,
        bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6},
        zorder=4,
    )
    title = "Accuracy per class"
    if accuracy is not None:
        ax.axvline(accuracy, color="#333333", linestyle="--", linewidth=1, zorder=3)
        ax.text(accuracy, -0.8, f" overall {accuracy:.1%}", ha="left", va="center", fontsize=8)
        title += " (red: below the overall accuracy)"
    ax.set_yticks(y, class_names)
    ax.set_ylim(k - 0.5, -1.1 if accuracy is not None else -0.5)  # first class on top
    # Zoomed to the data: with every class at 97-100 %, a 0-100 % axis makes all bars look
    # the same. The left edge is a round step below the weakest class (never below 0).
    lowest = float(min(values.min(), accuracy if accuracy is not None else 1.0))
    span = max(1.0 - lowest, 0.01)
    step = next(st for st in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25) if span / st <= 6)
    left = max(0.0, np.floor((lowest - 0.25 * span) / step) * step)
    ticks = np.arange(left, 1.0 + step / 2, step)
    ax.set_xlim(left, 1.0 + 0.16 * (1.0 - left))
    digits = 1 if step < 0.01 else 0
    ax.set_xticks(ticks, [f"{v:.{digits}%}" for v in ticks])
    xlabel = "accuracy on the class (recall)"
    if left > 0:
        xlabel += f"; the axis starts at {left:.{digits}%}"
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    return save_figure(fig, path, dpi=_DPI)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]
) -> Path:
    """Loss and accuracy, training vs validation, as a PNG at ``path``: the training values
    every few steps (``curve``, on an axis in epochs) and per epoch, validation at each
    epoch's end.

    Args:
        history: one record per epoch, as a run's ``metrics.jsonl`` holds them (``epoch``,
            ``step``, ``train_loss``, ``train_accuracy``, optional ``val_loss`` /
            ``val_accuracy``, and ``curve``: ``{"step", "loss", "accuracy"}`` lists).
        path: the PNG to write.

    Returns:
        ``path``.
    """
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    per_epoch = max(1, history[0]["step"] // history[0]["epoch"]) if history else 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
        xs, ys = [], []
        for r in history:
            curve = r.get("curve") or {}
            xs += [s / per_epoch for s in curve.get("step", [])]
            ys += curve.get(key, [])
        if xs and len(xs) == len(ys):
            ax.plot(xs, ys, linewidth=1, alpha=0.8, label="train (every few steps)")
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o", label="train (epoch mean)")
        if any(r.get(f"val_{key}") is not None for r in history):
            ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key} during training")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # Fixed margins: the layout never changes, and tight_layout took a third of the drawing.
    fig.subplots_adjust(left=0.075, right=0.985, bottom=0.14, top=0.91, wspace=0.24)
    return save_figure(fig, path)
