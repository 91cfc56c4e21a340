"""Shared pieces of the shipping tests: one small real model per session, pictures of digits.

The model is a fast-cnn trained for 3 epochs on the bundled ``mnist-mini`` (5,000 real MNIST
training images, ~2 s on one thread); it lands in the session's temporary root and every
shipping test module reuses it (the first one to ask trains it).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image

from mnistlab.training.engine import train_model
from mnistlab.training.recipes import get_deep_recipe

CONFIG = get_deep_recipe(
    "fast-cnn",
    dataset="mnist-mini",
    epochs=3,
    precision="fp32",
    channels_last=False,
    device="cpu",
    num_threads=1,
    seed=0,
)


def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained run folder (read-only: copy it before changing files)."""
    root = tmp_path_factory.getbasetemp()
    run = root / "shipping-fast-cnn"
    with FileLock(str(root / "shipping-fast-cnn.lock")):
        if not (run / "model" / "model.json").is_file():
            shutil.rmtree(run, ignore_errors=True)
            train_model(CONFIG, out=run, progress=False)
    return run


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of ``run`` that a test may change."""
    shutil.copytree(run, dest)
    return dest


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    """``pixels`` (uint8 grey or RGB) as the bytes of an image file."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(digit: np.ndarray, rng: np.random.Generator, size: int = 224) -> bytes:
    """A 28x28 MNIST digit made into a 'photo': enlarged, dark ink on tinted paper, shifted
    in a larger non-square frame, with noise, saved as a JPEG."""
    big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), float)
    height, width = int(size * 1.8), int(size * 1.4)
    canvas = np.zeros((height, width))
    top = int(rng.integers(0, height - size))
    left = int(rng.integers(0, width - size))
    canvas[top : top + size, left : left + size] = big
    paper = 225 - 0.8 * canvas + rng.normal(0, 6, canvas.shape)
    rgb = np.stack([paper * 0.97, paper * 0.92, paper], axis=-1).clip(0, 255)
    return encode(rgb, "JPEG", quality=85)
