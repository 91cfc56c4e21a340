"""White-box L∞ attacks (FGSM, PGD with random restarts) and robust accuracy.

Attacks work in pixel space: images are floats in [0, 1] (uint8 / 255), perturbations are
bounded by ``eps`` in every pixel, and the model's normalization ``(x - mean) / std`` is applied
after the perturbation (:class:`PixelSpaceModel`), so ``eps = 0.3`` means 0.3 of full white, as
in the MNIST challenge (Madry et al., 2018). Every adversarial image satisfies
``|x_adv - x| <= eps`` and ``0 <= x_adv <= 1`` exactly (projection after every step, in float32).

- FGSM (Goodfellow et al., 2015): one step of size ``eps`` along the sign of the loss gradient.
- PGD (Madry et al., 2018): ``steps`` signed-gradient steps of ``step_size`` from a uniformly
  random start in the ε-ball, projected after each; ``restarts`` independent starts, keeping for
  each image the first one that fools the model (else the one with the highest loss).

The model is always run in eval mode (BatchNorm statistics frozen, no dropout). The attacks
are written once, in :mod:`mnistlab.training.adversarial` (where the training engine's PGD
adversarial training, ``TrainConfig.adversarial_eps``, uses them); they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.training.adversarial import PixelSpaceModel, fgsm, pgd, pgd_training_inputs

# The attacks themselves live with adversarial training, the stage below that uses them
# (mnistlab.training.adversarial); this module measures robustness with them.

__all__ = [
    "ATTACKS",
    "PixelSpaceModel",
    "RobustAccuracy",
    "fgsm",
    "pgd",
    "pgd_training_inputs",
    "robust_accuracy",
]

ATTACKS = ("fgsm", "pgd")


@dataclass(frozen=True)
class RobustAccuracy:
    """Accuracy under one attack at one budget."""

    attack: str  # "fgsm" or "pgd"
    eps: float
    accuracy: float  # share of images no attack of this kind fooled at this or a smaller eps
    num_images: int
    steps: int  # 1 for FGSM
    restarts: int
    step_size: float
    seconds: float
    single_eps_accuracy: float = float("nan")  # the attack at this eps alone (can exceed accuracy)


def robust_accuracy(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    normalization: Mapping[str, float],
    *,
    attacks: Sequence[str] = ATTACKS,
    eps: Sequence[float] = (0.1, 0.2, 0.3),
    steps: int = 40,
    step_size: float | None = None,
    restarts: int = 1,
    batch_size: int = 500,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[list[RobustAccuracy], dict[str, np.ndarray]]:
    """Accuracy of ``model`` on adversarial versions of ``images``, per attack and budget.

    Args:
        model: a trained network taking normalized images (``load_trained_model``'s).
        images: uint8 ``(N, 28, 28)``; labels: ``(N,)``.
        normalization: ``{"mean", "std"}`` of the run.
        attacks: a subset of ``("fgsm", "pgd")``.
        eps: budgets in [0, 1] (pixel scale).
        steps, step_size, restarts: PGD's (see :func:`pgd`).
        batch_size: images attacked at once.
        seed: seeds the PGD random starts (a CPU generator: the same on every device).
        device: where to run.

    Returns:
        ``(rows, examples)``: one :class:`RobustAccuracy` per (attack, eps), in that order, and
        ``{"<attack>@<eps>": uint8 (k, 28, 28)}`` the adversarial versions of the first
        ``k <= 8`` images (for figures).

        An adversarial image found at a smaller budget also lies inside every larger ball, so
        ``accuracy`` counts an image as robust at ``eps`` only if the attack failed at ``eps``
        *and* at every smaller budget in ``eps`` (monotone in eps, and a tighter bound than one
        attack alone); ``single_eps_accuracy`` is the attack at that budget alone.

    Raises:
        MnistlabError: an unknown attack, an eps out of [0, 1], mismatched arrays.
    """
    import time

    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown:
        raise MnistlabError(f"unknown attack(s) {unknown}", hint=f"use {', '.join(ATTACKS)}")
    x_all = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255)
    if x_all.ndim == 3:
        x_all = x_all.unsqueeze(1)
    y_all = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    if len(x_all) != len(y_all) or len(x_all) == 0:
        raise MnistlabError(f"need as many labels as images (> 0); got {len(x_all)}, {len(y_all)}")
    device = torch.device(device)
    pixel_model = PixelSpaceModel.from_meta(model.to(device), {"normalization": normalization})
    pixel_model.eval()
    rows, examples = [], {}
    for attack in attacks:
        # Smallest budget first: an image fooled there stays fooled at the larger ones.
        fooled_before = torch.zeros(len(x_all), dtype=torch.bool)
        by_eps: dict[float, RobustAccuracy] = {}
        for e in sorted(eps):
            generator = torch.Generator().manual_seed(seed)
            start, correct = time.perf_counter(), 0
            for b in range(0, len(x_all), batch_size):
                x = x_all[b : b + batch_size].to(device)
                y = y_all[b : b + batch_size].to(device)
                if attack == "fgsm":
                    x_adv = fgsm(pixel_model, x, y, e)
                else:
                    x_adv = pgd(
                        pixel_model,
                        x,
                        y,
                        e,
                        steps=steps,
                        step_size=step_size,
                        restarts=restarts,
                        generator=generator,
                    )
                with torch.no_grad():
                    right = (pixel_model(x_adv).argmax(1) == y).cpu()
                correct += int(right.sum())
                fooled_before[b : b + batch_size] |= ~right
                if b == 0:
                    shown = (x_adv[:8, 0] * 255).round().clamp(0, 255).to(torch.uint8)
                    examples[f"{attack}@{e:g}"] = shown.cpu().numpy()
            is_pgd = attack == "pgd"
            by_eps[e] = RobustAccuracy(
                attack=attack,
                eps=float(e),
                accuracy=(len(x_all) - int(fooled_before.sum())) / len(x_all),
                num_images=len(x_all),
                steps=steps if is_pgd else 1,
                restarts=restarts if is_pgd else 1,
                step_size=(2.5 * e / steps if step_size is None else step_size)
                if is_pgd
                else float(e),
                seconds=time.perf_counter() - start,
                single_eps_accuracy=correct / len(x_all),
            )
        rows.extend(by_eps[e] for e in eps)
    return rows, examples
