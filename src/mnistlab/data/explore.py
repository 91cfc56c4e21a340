"""Exploring a dataset: a summary (counts, pixel statistics, exact duplicates) and plots."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mnistlab.data.cache import get_spec
from mnistlab.data.load import DatasetSplit, load_dataset
from mnistlab.errors import OverwriteError
from mnistlab.plotting import image_mosaic, pyplot, save_figure


@dataclass(frozen=True)
class SplitSummary:
    """Statistics of one split. Pixel statistics are on the [0, 1] scale (x / 255)."""

    split: str
    count: int
    class_counts: tuple[int, ...]
    pixel_mean: float
    pixel_std: float
    pixel_histogram: tuple[int, ...]  # count of each value 0..255
    duplicate_images: int  # images identical to an earlier image of the same split
    duplicate_groups: int  # sets of two or more identical images


@dataclass(frozen=True)
class DatasetSummary:
    """What ``mnistlab data show`` prints: per-split statistics and cross-split duplicates."""

    name: str
    class_names: tuple[str, ...]
    splits: Mapping[str, SplitSummary]
    cross_split_duplicates: int  # test images with an exact copy in the training split
    cross_split_examples: tuple[tuple[int, int], ...]  # first (train index, test index) pairs

    def to_dict(self) -> dict:
        """A JSON-ready dict (the pixel histograms included)."""
        out = asdict(self)
        out["splits"] = {k: asdict(v) for k, v in self.splits.items()}
        return out


def _digests(images: np.ndarray) -> list[bytes]:
    # Not reshape(n, -1): numpy cannot infer -1 for zero images.
    flat = np.ascontiguousarray(images).reshape(len(images), math.prod(images.shape[1:]))
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]


def find_duplicates(images: np.ndarray) -> list[list[int]]:
    """Groups of indices of exactly identical images (each group has two or more).

    Images are grouped by a 128-bit hash, then compared byte for byte, so a reported group is
    an exact duplicate.
    """
    groups: dict[bytes, list[int]] = {}
    for i, digest in enumerate(_digests(images)):
        groups.setdefault(digest, []).append(i)
    exact = []
    for members in groups.values():
        if len(members) > 1:
            first = images[members[0]]
            same = [m for m in members if np.array_equal(images[m], first)]
            if len(same) > 1:
                exact.append(same)
    return sorted(exact)


def find_cross_duplicates(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Pairs ``(i, j)`` with ``a[i]`` exactly equal to ``b[j]`` (first ``i`` for each ``j``)."""
    index: dict[bytes, int] = {}
    for i, digest in enumerate(_digests(a)):
        index.setdefault(digest, i)
    return [
        (index[d], j)
        for j, d in enumerate(_digests(b))
        if d in index and np.array_equal(a[index[d]], b[j])
    ]


def summarize_split(split: DatasetSplit) -> SplitSummary:
    """Counts, pixel mean/std (from an exact 256-bin histogram) and duplicates of a split."""
    hist = np.bincount(split.images.ravel(), minlength=256).astype(np.int64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = max(int(hist.sum()), 1)
    mean = float((hist * values).sum() / total)
    std = float(math.sqrt(max((hist * (values - mean) ** 2).sum() / total, 0.0)))
    groups = find_duplicates(split.images)
    return SplitSummary(
        split=split.split,
        count=len(split),
        class_counts=tuple(int(c) for c in np.bincount(split.labels, minlength=split.num_classes)),
        pixel_mean=mean,
        pixel_std=std,
        pixel_histogram=tuple(int(h) for h in hist),
        duplicate_images=sum(len(g) - 1 for g in groups),
        duplicate_groups=len(groups),
    )


def summarize_splits(splits: Mapping[str, DatasetSplit]) -> DatasetSummary:
    """Summarize already loaded splits (``{"train": ..., "test": ...}``)."""
    first = next(iter(splits.values()))
    pairs: list[tuple[int, int]] = []
    if "train" in splits and "test" in splits:
        pairs = find_cross_duplicates(splits["train"].images, splits["test"].images)
    return DatasetSummary(
        name=first.dataset,
        class_names=first.class_names,
        splits={name: summarize_split(s) for name, s in splits.items()},
        cross_split_duplicates=len(pairs),
        cross_split_examples=tuple(pairs[:10]),
    )


def summarize_dataset(name: str, *, home: str | os.PathLike[str] | None = None) -> DatasetSummary:
    """Load every split of a dataset (fetching it if needed) and summarize it."""
    spec = get_spec(name, home)
    return summarize_splits({s: load_dataset(name, s, home=home) for s in spec.splits})


# ---------------------------------------------------------------------------- plots

PLOT_FILES = (
    "samples.png",
    "label_histogram.png",
    "class_means.png",
    "pixel_histogram.png",
    "pixel_stats.png",
)


def plot_samples(split: DatasetSplit, path: Path, n: int = 36) -> Path:
    """A grid of the first ``n`` images, each titled with its label (class name)."""
    n = max(1, min(n, len(split)))
    fig = image_mosaic(
        split.images[:n],
        [split.class_names[label] for label in split.labels[:n]],
        cols=math.ceil(math.sqrt(n)),
        cell=(1.3, 1.45),
        side=1.0,
        title=f"{split.dataset} {split.split}: first {n} images",
        title_size=12,
    )
    return save_figure(fig, path)


def plot_label_histogram(summary: DatasetSummary, path: Path) -> Path:
    """Bar chart of the number of images per class, one panel per split (own y scale)."""
    plt = pyplot()
    names = summary.class_names
    k = len(summary.splits)
    fig, axes = plt.subplots(1, k, figsize=(max(4.5, len(names) * 0.55) * k, 3.4), squeeze=False)
    x = np.arange(len(names))
    for ax, (split, s), color in zip(
        axes.flat, summary.splits.items(), ("C0", "C1", "C2"), strict=False
    ):
        bars = ax.bar(x, s.class_counts, 0.75, color=color)
        ax.bar_label(bars, fontsize=6, rotation=90, padding=2)
        ax.set_xticks(x, names, rotation=30 if max(map(len, names)) > 3 else 0, ha="right")
        ax.set_title(f"{split} ({s.count:,} images)", fontsize=10)
        ax.set_ylabel("images")
        ax.margins(y=0.18)
    fig.suptitle(f"{summary.name}: images per class")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_class_means(split: DatasetSplit, path: Path) -> Path:
    """The mean image of each class."""
    means = []
    for c in range(split.num_classes):
        members = split.images[split.labels == c]
        means.append(members.mean(axis=0) if len(members) else np.zeros(split.images.shape[1:]))
    fig = image_mosaic(
        means,
        list(split.class_names),
        cols=split.num_classes,
        cell=(1.2, 1.45),
        side=1.0,
        title=f"{split.dataset} {split.split}: mean image per class",
        cmap="magma",
        title_size=9,
    )
    return save_figure(fig, path)


def plot_pixel_histogram(summary: DatasetSummary, path: Path) -> Path:
    """Distribution of pixel intensities per split (log scale: background dominates)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for split, s in summary.splits.items():
        freq = np.asarray(s.pixel_histogram, dtype=np.float64)
        ax.step(np.arange(256), freq / max(freq.sum(), 1), where="mid", label=split)
    ax.set_yscale("log")
    ax.set_xlabel("pixel value (0-255)")
    ax.set_ylabel("fraction of pixels")
    ax.set_title(f"{summary.name}: pixel intensities")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pixel_stats(summary: DatasetSummary, path: Path) -> Path:
    """Pixel mean and standard deviation (on [0, 1]) per split."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    splits = list(summary.splits)
    x = np.arange(len(splits))
    means = [summary.splits[s].pixel_mean for s in splits]
    stds = [summary.splits[s].pixel_std for s in splits]
    for offset, values, label in ((-0.2, means, "mean"), (0.2, stds, "std")):
        bars = ax.bar(x + offset, values, 0.4, label=label)
        ax.bar_label(bars, fmt="%.4f", fontsize=7)
    ax.set_xticks(x, splits)
    ax.set_ylabel("pixel value / 255")
    ax.set_title(f"{summary.name}: pixel mean and std")
    ax.margins(y=0.2)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def explore_dataset(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    home: str | os.PathLike[str] | None = None,
    samples: int = 36,
    overwrite: bool = False,
) -> tuple[DatasetSummary, list[Path]]:
    """Summarize a dataset and write its plots and ``summary.json`` to ``out_dir``.

    Args:
        name: dataset to explore (fetched first if needed).
        out_dir: folder for the PNGs (created if missing).
        home: cache root.
        samples: how many training images the sample grid shows.
        overwrite: replace plots already in ``out_dir``.

    Returns:
        The summary and the paths written.

    Raises:
        OverwriteError: ``out_dir`` already has these files and ``overwrite`` is false.
    """
    out = Path(out_dir)
    targets = [out / f for f in (*PLOT_FILES, "summary.json")]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise OverwriteError(
            f"{out} already holds {', '.join(p.name for p in existing)}",
            hint="pass --overwrite to replace them, or choose another --out folder",
        )
    spec = get_spec(name, home)
    splits = {s: load_dataset(name, s, home=home) for s in spec.splits}
    summary = summarize_splits(splits)
    out.mkdir(parents=True, exist_ok=True)
    first = splits.get("train") or next(iter(splits.values()))
    written = [
        plot_samples(first, out / "samples.png", samples),
        plot_label_histogram(summary, out / "label_histogram.png"),
        plot_class_means(first, out / "class_means.png"),
        plot_pixel_histogram(summary, out / "pixel_histogram.png"),
        plot_pixel_stats(summary, out / "pixel_stats.png"),
    ]
    from mnistlab.io import atomic_write_bytes

    atomic_write_bytes(out / "summary.json", json.dumps(summary.to_dict(), indent=2).encode())
    return summary, [*written, out / "summary.json"]
