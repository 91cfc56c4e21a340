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

The model is always run in eval mode (BatchNorm statistics frozen, no dropout).
:func:`pgd_training_inputs` is the hook the training engine calls for PGD adversarial training
(``TrainConfig.adversarial_eps``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.errors import MnistlabError

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


class PixelSpaceModel(nn.Module):
    """A model that takes [0, 1] pixels: ``model((x - mean) / std)``.

    Args:
        model: takes normalized float ``(N, 1, 28, 28)`` and returns logits.
        mean, std: the run's normalization (``model.json``'s ``normalization``).
        channels_last: feed the model NHWC memory (as it was trained).
    """

    def __init__(
        self, model: nn.Module, mean: float, std: float, channels_last: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.mean = float(mean)
        self.std = float(std)
        self.channels_last = channels_last

    @classmethod
    def from_meta(cls, model: nn.Module, meta: Mapping) -> PixelSpaceModel:
        """From a model and its ``model.json`` (``load_trained_model``'s ``meta``)."""
        norm = meta["normalization"]
        return cls(model, norm["mean"], norm["std"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.model(z)


def _check(x: torch.Tensor, y: torch.Tensor, eps: float) -> None:
    if not x.dtype.is_floating_point or x.ndim != 4:
        raise MnistlabError(f"attack inputs must be float (N, C, H, W) in [0, 1]; got {x.dtype}")
    if len(x) != len(y):
        raise MnistlabError(f"images and labels differ in length: {len(x)} vs {len(y)}")
    if not 0 <= eps <= 1:
        raise MnistlabError(f"eps must be in [0, 1] (pixel scale); got {eps}")


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the ε-ball around ``x`` and into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


def _loss_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: AbstractContextManager
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image cross-entropy and its gradient with respect to ``x``."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with autocast:
            logits = model(x)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), x)
    return losses.detach(), grad


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    autocast: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x loss), 0, 1)``.

    Args:
        model: takes [0, 1] pixels (e.g. a :class:`PixelSpaceModel`) and returns logits; it
            should be in eval mode.
        x: float ``(N, C, H, W)`` images in [0, 1].
        y: int64 ``(N,)`` true labels.
        eps: the L∞ budget, in [0, 1].
        autocast: a context for the forward pass (e.g. bf16 autocast); default none.

    Returns:
        The adversarial images, detached, within ``eps`` of ``x`` and in [0, 1].
    """
    _check(x, y, eps)
    _, grad = _loss_grad(model, x, y, autocast or nullcontext())
    return _project(x + eps * grad.sign(), x, eps).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = 40,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    autocast: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy, L∞ ball (Madry et al., 2018).

    Args:
        model: takes [0, 1] pixels and returns logits; it should be in eval mode.
        x: float ``(N, C, H, W)`` images in [0, 1].
        y: int64 ``(N,)`` true labels.
        eps: the L∞ budget, in [0, 1].
        steps: signed-gradient steps per start (>= 1).
        step_size: per step; default ``2.5 * eps / steps`` (enough to cross the ball).
        restarts: independent random starts (>= 1); per image, the first adversarial start
            wins, else the one with the highest final loss.
        random_start: start uniformly in the ball (else at ``x``; restarts are then identical).
        generator: the random starts' generator (default: torch's global RNG). Noise is drawn
            on the generator's device.
        autocast: a context for the forward passes (e.g. bf16 autocast); default none.

    Returns:
        The adversarial images, detached, within ``eps`` of ``x`` and in [0, 1].
    """
    _check(x, y, eps)
    if steps < 1 or restarts < 1:
        raise MnistlabError(f"steps and restarts must be >= 1; got {steps}, {restarts}")
    alpha = 2.5 * eps / steps if step_size is None else float(step_size)
    ctx = autocast or nullcontext()
    x = x.detach()
    best = x.clone()
    best_loss = torch.full((len(x),), -float("inf"), device=x.device)
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(restarts):
        if random_start and eps > 0:
            where = generator.device if generator is not None else x.device
            noise = torch.rand(x.shape, generator=generator, device=where).to(x.device)
            x_adv = _project(x + (noise * 2 - 1) * eps, x, eps)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            _, grad = _loss_grad(model, x_adv, y, ctx)
            x_adv = _project(x_adv + alpha * grad.sign(), x, eps)
        with torch.no_grad(), ctx:
            logits = model(x_adv).float()
        loss = F.cross_entropy(logits, y, reduction="none")
        wrong = logits.argmax(1) != y
        # Keep an earlier fooling start; otherwise take this one if it fools or has more loss.
        take = ~fooled & (wrong | (loss > best_loss))
        best[take] = x_adv[take]
        best_loss = torch.where(take, loss, best_loss)
        fooled |= wrong
    return best.detach()


def pgd_training_inputs(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: float,
    std: float,
    *,
    eps: float,
    steps: int,
    step_size: float | None = None,
    channels_last: bool = False,
    autocast: AbstractContextManager | None = None,
) -> torch.Tensor:
    """The normalized PGD images a training step learns from (Madry et al.'s min-max training).

    Args:
        model: the network being trained (takes normalized images). It is switched to eval mode
            for the attack (frozen BatchNorm statistics, no dropout) and back to its mode after.
        images: uint8 ``(N, 1, H, W)`` batch (already augmented).
        labels: int64 ``(N,)``.
        mean, std: the run's normalization.
        eps, steps, step_size: the PGD attack (random start, one restart; torch's global RNG,
            which the engine seeds per epoch, so runs stay reproducible and resumable).
        channels_last: NHWC memory for the model's input.
        autocast: the forward context of the run (bf16 autocast or none).

    Returns:
        Float ``(N, 1, H, W)`` normalized adversarial images, detached.
    """
    was_training = model.training
    pixel_model = PixelSpaceModel(model, mean, std, channels_last).eval()
    try:
        x = images.float() / 255
        x_adv = pgd(
            pixel_model, x, labels, eps, steps=steps, step_size=step_size, autocast=autocast
        )
    finally:
        model.train(was_training)
    z = (x_adv - mean) / std
    return z.contiguous(memory_format=torch.channels_last) if channels_last else z


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
