"""``mnistlab generate``: draw digits from a class-conditional GPT or a (conditional) GAN into
a PNG grid, and check them with a classifier (the share of samples of digit ``d`` that it
classifies as ``d``). One loader path: the run's ``model.json`` format picks the sampler
(:data:`SAMPLERS`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mnistlab.errors import MnistlabError
from mnistlab.models.files import GAN_FORMAT, PRETRAINED_FORMAT, read_manifest
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
    """Sample ``n`` images per digit from a GPT pretraining run or a GAN run.

    Args:
        run_dir: a ``mnistlab pretrain --objective gpt`` run (``--conditional`` for digits) or
            a ``mnistlab gan`` run (``--conditional`` for digits).
        digits: the classes to draw; None draws unconditional samples (GPT: "no class" prefix;
            conditional GAN: ``n`` of every digit).
        n: images per digit.
        temperature, top_k: GPT sampling settings (see
            :func:`~mnistlab.pretraining.gpt.sample_tokens`); a GAN has none.
        seed: fixes the samples.
        batch_size: sequences sampled at once (GPT).

    Returns:
        :class:`Generated` images in the order of ``digits``.

    Raises:
        MnistlabError: neither a GPT nor a GAN run, a digit out of range, or digits asked of
            an unconditional model.
    """
    if n < 1:
        raise MnistlabError(f"-n must be >= 1; got {n}")
    if digits is not None:
        bad = [d for d in digits if not 0 <= d < NUM_CLASSES]
        if bad:
            raise MnistlabError(f"digits must be in 0..{NUM_CLASSES - 1}; got {bad}")
    manifest, _ = read_manifest(
        run_dir,
        list(SAMPLERS),
        wanted="generation",
        hint="pass a `mnistlab pretrain --objective gpt` or a `mnistlab gan` run",
    )
    request = Sampling(digits, n, temperature, top_k, seed, batch_size)
    return SAMPLERS[manifest["format"]](run_dir, request)


@dataclass(frozen=True)
class Sampling:
    """What :func:`generate_digits` was asked for, as every sampler receives it."""

    digits: list[int] | None
    n: int
    temperature: float  # GPT only
    top_k: int | None  # GPT only
    seed: int
    batch_size: int  # GPT only


def _gan_samples(run_dir: str | os.PathLike[str], request: Sampling) -> Generated:
    """Samples of a GAN run's generator (``temperature``/``top_k`` do not apply)."""
    from mnistlab.pretraining.gan import sample_gan

    images, drawn = sample_gan(run_dir, request.digits, request.n, seed=request.seed)
    return Generated(images, drawn)


def _gpt_samples(run_dir: str | os.PathLike[str], request: Sampling) -> Generated:
    """Samples of a class-conditional (or free) GPT, token by token."""
    digits, n, batch_size = request.digits, request.n, request.batch_size
    model, meta, codebook = load_pretrained(run_dir)
    if meta["objective"] != "gpt" or codebook is None:
        raise MnistlabError(
            f"{run_dir} is an {meta['objective']!r} run; generation needs a GPT run",
            hint="mnistlab pretrain --objective gpt --conditional",
        )
    if digits is not None and not meta["config"].get("conditional"):
        raise MnistlabError(
            f"{run_dir} was pretrained without digit prefixes: it cannot draw a given digit",
            hint="omit --digit for unconditional samples, or pretrain with --conditional",
        )
    prefixes = torch.tensor(
        [d for d in (digits if digits is not None else [NUM_CLASSES]) for _ in range(n)]
    )
    generator = torch.Generator().manual_seed(request.seed)
    patch = meta["transformer"]["patch_size"]
    out = []
    for start in range(0, len(prefixes), batch_size):
        tokens = sample_tokens(
            model,
            prefixes[start : start + batch_size],
            temperature=request.temperature,
            top_k=request.top_k,
            generator=generator,
        )
        out.append(detokenize(tokens, codebook, patch)[:, 0])
    images = (torch.cat(out).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return Generated(images, prefixes.numpy().astype(np.int64))


# model.json format -> sampler: every generative model mnistlab writes.
SAMPLERS = {PRETRAINED_FORMAT: _gpt_samples, GAN_FORMAT: _gan_samples}


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
