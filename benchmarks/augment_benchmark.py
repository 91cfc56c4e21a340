"""Augmentation throughput: images/s of ``augment_batch`` on batches of 512 real digits.

python benchmarks/augment_benchmark.py --threads 1 2
"""

from __future__ import annotations

import argparse
import time

import torch

import mnistlab
from mnistlab.features.augment import AugmentConfig, augment_batch

CONFIGS = {
    "affine": AugmentConfig(rotate_degrees=10, translate_px=2, scale_range=(0.9, 1.1)),
    "elastic": AugmentConfig(elastic_alpha=34, elastic_sigma=4),
    "mnist-sota": "mnist-sota",
    "noise": AugmentConfig(noise_std=0.1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7, help="best of this many rounds")
    args = parser.parse_args()
    x = torch.from_numpy(mnistlab.load_dataset("mnist-mini", "train").images[: args.batch])
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, config in CONFIGS.items():
            generator, best = torch.Generator().manual_seed(0), float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                for _ in range(20):
                    augment_batch(x, config, generator)
                best = min(best, (time.perf_counter() - start) / 20)
            rate = len(x) / best
            print(
                f"{name:11s} {threads} thread(s): {rate / 1e3:5.0f} k images/s  "
                f"(60k-image epoch {60000 / rate:.2f} s)"
            )


if __name__ == "__main__":
    main()
