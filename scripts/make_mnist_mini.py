"""Build the bundled ``mnist-mini`` dataset from the official MNIST splits.

500 training and 100 test images per class, drawn with a fixed seed and kept in their
original order, written as gzip IDX files (mtime 0, so the bytes are reproducible) into
``src/mnistlab/data/bundled/mnist-mini/``. Prints the payload SHA-256s for the registry.

    python scripts/make_mnist_mini.py            # MNIST fetched into the cache first
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

from mnistlab import load_dataset
from mnistlab.data.idx import idx_bytes

OUT = (
    Path(__file__).resolve().parent.parent / "src" / "mnistlab" / "data" / "bundled" / "mnist-mini"
)
PER_CLASS = {"train": 500, "test": 100}
SEED = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for split, per_class in PER_CLASS.items():
        images, labels = load_dataset("mnist", split).arrays()
        chosen = np.sort(
            np.concatenate(
                [
                    rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                    for c in range(10)
                ]
            )
        )
        prefix = "train" if split == "train" else "t10k"
        for kind, array in (("images-idx3", images[chosen]), ("labels-idx1", labels[chosen])):
            payload = idx_bytes(array.astype(np.uint8))
            path = args.out / f"{prefix}-{kind}-ubyte.gz"
            with (
                open(path, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
            ):
                gz.write(payload)
            print(
                f"{path.name}: payload {len(payload)} bytes sha256 "
                f"{hashlib.sha256(payload).hexdigest()}"
            )


if __name__ == "__main__":
    main()
