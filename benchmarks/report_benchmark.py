"""How long a run's report takes to draw and write, figure by figure.

Every training run ends by writing its report (``mnistlab.evaluation.write_report``: the
confusion matrix, the accuracy per class, the gallery of misclassified images, report.html
and report.json) and its training curves; on a 2-core CPU that used to take longer than a
one-epoch training of the default recipe. Each figure is drawn ``--repeats`` times on the
MNIST test split (predictions with 1 % of the labels shifted by one class, so the gallery has
its 36 images), after one warm-up; the table gives the median and min. The gallery is measured
beside its peer in the same run: the same gallery drawn the usual way (one matplotlib axes per
image, ``plt.subplots`` and ``tight_layout``, as tutorials draw it, and as mnistlab did), with
the ratio of the medians.

    python benchmarks/report_benchmark.py [--repeats 5] [--dataset mnist]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import mnistlab
from mnistlab.evaluation import write_report
from mnistlab.evaluation.figures import (
    misclassified_indices,
    misclassified_title,
    plot_confusion_matrix,
    plot_misclassified,
    plot_per_class_accuracy,
)
from mnistlab.plotting import pyplot, save_figure
from mnistlab.runs import cpu_model


def gallery_of_axes(images, y_true, y_pred, confidence, names, path, n=36) -> Path:
    """The peer: one axes per image laid out by tight_layout (mnistlab's gallery until
    2026-11-30, and the usual way to draw one)."""
    plt = pyplot()
    shown = misclassified_indices(y_true, y_pred, confidence, n)
    titles = [misclassified_title(names[y_true[i]], names[y_pred[i]], confidence[i])
              for i in shown]  # fmt: skip
    width = max(1.35, 0.058 * max(map(len, titles)) + 0.15)
    cols = max(1, min(math.ceil(math.sqrt(len(shown))), int(13 // width)))
    rows = math.ceil(len(shown) / cols)
    cols = math.ceil(len(shown) / rows)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * width, rows * 1.6 + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(shown):
            i = shown[k]
            ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(titles[k], fontsize=7.5, color="#8b0000", pad=3)
            ax.text(0.5, -0.04, f"#{i}", transform=ax.transAxes, ha="center", va="top",
                    fontsize=6, color="#777777")  # fmt: skip
    fig.suptitle("Misclassified", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    call()  # warm-up: fonts and caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dataset", default="mnist")
    args = parser.parse_args()
    test = mnistlab.load_dataset(args.dataset, "test")
    names = list(test.class_names)
    rng = np.random.default_rng(0)
    predicted = test.labels.copy()
    shifted = rng.random(len(predicted)) < 0.01
    predicted[shifted] = (predicted[shifted] + 1) % len(names)
    probabilities = np.full((len(predicted), len(names)), 0.05 / (len(names) - 1))
    probabilities[np.arange(len(predicted)), predicted] = 0.95
    confidence = probabilities.max(axis=1)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (test.labels, predicted), 1)
    recall = np.diag(confusion) / confusion.sum(axis=1)

    start = time.perf_counter()
    pyplot()
    imported = time.perf_counter() - start
    print(f"# report figures, {dt.date.today()}, CPU: {cpu_model()}, load "
          f"{os.getloadavg()[0]:.2f}, {args.dataset} test ({len(test):,} images)")  # fmt: skip
    print(f"importing matplotlib (once per process): {imported:.2f} s\n")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cases = {
            "confusion matrix": lambda: plot_confusion_matrix(confusion, names, out / "cm.png"),
            "accuracy per class": lambda: plot_per_class_accuracy(
                recall, names, out / "pc.png", accuracy=float(recall.mean())
            ),
            "misclassified gallery (mosaic)": lambda: plot_misclassified(
                test.images, test.labels, predicted, confidence, names, out / "mis.png"
            ),
            "peer: the gallery, one axes per image": lambda: gallery_of_axes(
                test.images, test.labels, predicted, confidence, names, out / "peer.png"
            ),
            "write_report (all of the above but the peer)": lambda: write_report(
                out / "run",
                images=test.images,
                labels=test.labels,
                probabilities=probabilities,
                class_names=names,
                dataset=args.dataset,
                model="benchmark",
                train_seconds=None,
            ),
        }
        results = {name: timed(call, args.repeats) for name, call in cases.items()}
    print("| figure | median | min |")
    print("| --- | ---: | ---: |")
    for name, times in results.items():
        print(f"| {name} | {statistics.median(times):.3f} s | {min(times):.3f} s |")
    mosaic = statistics.median(results["misclassified gallery (mosaic)"])
    peer = statistics.median(results["peer: the gallery, one axes per image"])
    print(f"\nthe gallery as one mosaic takes {mosaic / peer:.2f}x the time of one axes per "
          f"image ({peer / mosaic:.1f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
