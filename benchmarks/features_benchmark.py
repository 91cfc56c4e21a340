"""Time each feature transformer's ``fit`` and ``transform`` on the 60,000 MNIST training images.

Each transformer is fitted once untimed (warm-up), then ``--repeats`` timed ``fit`` and
``transform`` calls (``time.perf_counter``); the minimum and the median are reported (on a
shared machine the minimum is the better estimate of the cost), with the output width.

Usage::

    python benchmarks/features_benchmark.py --source /path/to/mnist-idx-gz
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import mnistlab
from mnistlab.features import (
    Deskewer,
    Flattener,
    GradientFeatures,
    HOGFeatures,
    PixelScaler,
    ShapeFeatures,
    Standardizer,
)

TRANSFORMERS = [
    PixelScaler(),
    Standardizer(mode="global"),
    Standardizer(mode="pixel"),
    Flattener(),
    Deskewer(),
    HOGFeatures(),
    HOGFeatures(cell=7),
    GradientFeatures(),
    ShapeFeatures(),
]


def seconds(call, repeats: int) -> str:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return f"{min(times):.3f} | {statistics.median(times):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="folder with the MNIST IDX .gz files")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        mirrors = [str(args.source)] if args.source else None
        mnistlab.fetch_dataset("mnist", mirrors=mirrors, home=home, progress=False)
        images = mnistlab.load_dataset("mnist", "train", home=home).images
    print(
        f"{len(images):,} images {images.shape[1:]} uint8; numpy {np.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print(
        "| transformer | fit min (s) | fit median | transform min (s) | transform median | output |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for transformer in TRANSFORMERS:
        out = transformer.fit(images).transform(images)
        fit = seconds(lambda t=transformer: t.fit(images), args.repeats)
        transform = seconds(lambda t=transformer: t.transform(images), args.repeats)
        print(f"| `{transformer!r}` | {fit} | {transform} | {out.shape[1]} {out.dtype} |")


if __name__ == "__main__":
    main()
