"""``mnistlab generate``: draw digits from a class-conditional GPT into a PNG grid, and check
them with a classifier (the share of samples of digit ``d`` that it classifies as ``d``)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.errors import MnistlabError
from mnistlab.pretraining.figures import save_image_grid
from mnistlab.pretraining.gpt import detokenize, sample_tokens
from mnistlab.pretraining.pretrain import NUM_CLASSES, load_pretrained


@dataclass
class Generated:
    """What :func:`generate_digits` returns."""

    images: np.ndarray  # uint8 (N, 28, 28)
    digits: np.ndarray  # int64 (N,): the prefix of each sample (10 = no class)


def generate_digits(
    run_dir: str | os.PathLike[str],
    digits: list[int] | None,
    n: int = 64,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> Generated:
    """Sample ``n`` images per digit from a GPT pretraining run.

    Args:
        run_dir: a ``mnistlab pretrain --objective gpt`` run (``--conditional`` for digits).
        digits: the classes to draw; None draws unconditional samples ("no class" prefix).
        n: images per digit.
        temperature, top_k: sampling settings (see :func:`~mnistlab.pretraining.gpt.sample_tokens`).
        seed: fixes the samples.
        batch_size: sequences sampled at once.

    Returns:
        :class:`Generated` images in the order of ``digits``.

    Raises:
        MnistlabError: not a GPT run, a digit out of range, or digits asked of an
            unconditional model.
    """
    model, meta, codebook = load_pretrained(run_dir)
    if meta["objective"] != "gpt" or codebook is None:
        raise MnistlabError(
            f"{run_dir} is an {meta['objective']!r} run; generation needs a GPT run",
            hint="mnistlab pretrain --objective gpt --conditional",
        )
    if n < 1:
        raise MnistlabError(f"-n must be >= 1; got {n}")
    if digits is not None:
        bad = [d for d in digits if not 0 <= d < NUM_CLASSES]
        if bad:
            raise MnistlabError(f"digits must be in 0..{NUM_CLASSES - 1}; got {bad}")
        if not meta["config"].get("conditional"):
            raise MnistlabError(
                f"{run_dir} was pretrained without digit prefixes: it cannot draw a given digit",
                hint="omit --digit for unconditional samples, or pretrain with --conditional",
            )
    prefixes = torch.tensor(
        [d for d in (digits if digits is not None else [NUM_CLASSES]) for _ in range(n)]
    )
    generator = torch.Generator().manual_seed(seed)
    patch = meta["transformer"]["patch_size"]
    out = []
    for start in range(0, len(prefixes), batch_size):
        tokens = sample_tokens(
            model,
            prefixes[start : start + batch_size],
            temperature=temperature,
            top_k=top_k,
            generator=generator,
        )
        out.append(detokenize(tokens, codebook, patch)[:, 0])
    images = (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Generated(images, prefixes.numpy().astype(np.int64))


def save_generated_grid(
    generated: Generated, path: str | os.PathLike[str], per_row: int | None = None
) -> Path:
    """The samples as a PNG grid: one row per digit (or rows of ``per_row``)."""
    images, digits = generated.images, generated.digits
    classes = list(dict.fromkeys(digits.tolist()))
    rows, titles = [], []
    for d in classes:
        sel = images[digits == d]
        width = per_row or min(len(sel), 16)
        for start in range(0, len(sel), width):
            rows.append(sel[start : start + width])
            titles.append(str(d) if d < NUM_CLASSES and start == 0 else "")
    if len(classes) == 1 and per_row is None:
        width = math.ceil(math.sqrt(len(images)))
        rows = [images[i : i + width] for i in range(0, len(images), width)]
        titles = None
    return save_image_grid(rows, path, row_titles=titles)


def classifier_agreement(generated: Generated, probabilities: np.ndarray) -> dict[int, float]:
    """Per digit, the share of its samples the classifier (``probabilities`` ``(N, 10)``, one
    row per sample) predicts as that digit."""
    pred = np.asarray(probabilities).argmax(1)
    return {
        int(d): float((pred[generated.digits == d] == d).mean())
        for d in np.unique(generated.digits)
        if d < NUM_CLASSES
    }


def classify_images(run_dir: str | os.PathLike[str], images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, classes)`` of uint8 ``images`` from a trained classifier:
    a deep run of ``mnistlab train`` or a ``mnistlab finetune`` / ``merge`` run.

    Raises:
        MnistlabError: the folder holds neither kind of model.
    """
    from mnistlab.models.inference import load_predictor

    return load_predictor(run_dir).predict_proba(images)
