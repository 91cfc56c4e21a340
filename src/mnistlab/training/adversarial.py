"""White-box L∞ attacks in pixel space (FGSM; PGD with random restarts) and the inputs of PGD
adversarial training (Madry et al., 2018). :mod:`mnistlab.robustness.attacks` measures
robust accuracy with them (see its docstring for the conventions: pixels in [0, 1], the
model's normalization applied after the perturbation, projection after every step).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.errors import MnistlabError


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
