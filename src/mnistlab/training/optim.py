"""The optimizer and the learning-rate schedule of every trainer.

``Schedule`` is a small value object: ``Schedule(...).lr_at(step)`` is the learning rate of a
step, a plain function of the step that a reader can check by hand (nanoGPT's ``get_lr``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from mnistlab.errors import MnistlabError

SCHEDULES = ("constant", "onecycle", "cosine", "step")


@dataclass(frozen=True)
class Schedule:
    """The learning rate over ``total_steps`` optimizer steps.

    Every kind first warms up linearly over ``round(warmup * total_steps)`` steps, from
    ``lr / warmup_steps`` (step 0) to ``lr``. Then, with ``p`` the fraction of the remaining
    steps done (0 at the first step after warmup) and ``floor = final_lr * lr``:

    - ``constant``: ``lr``;
    - ``onecycle``: linear decay, ``lr + (floor - lr) * p`` (warmup + decay = one cycle);
    - ``cosine``: ``floor + (lr - floor) * (1 + cos(pi p)) / 2``;
    - ``step``: ``lr * step_gamma ** k`` with ``k`` the number of completed
      ``step_epochs``-epoch blocks of the ``epochs`` (counted from step 0, warmup included).
    """

    lr: float  # peak learning rate
    total_steps: int
    kind: str = "cosine"  # one of SCHEDULES
    warmup: float = 0.1  # fraction of all steps with linear warmup
    final_lr: float = 0.0  # onecycle / cosine: the last learning rate, as a fraction of lr
    epochs: int = 1  # step: the run's epochs (total_steps = epochs * steps per epoch)
    step_epochs: int = 1  # step: decay every this many epochs
    step_gamma: float = 0.1  # step: decay factor

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise MnistlabError(f"unknown schedule {self.kind!r}; use one of {SCHEDULES}")

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step ``step`` (0-based)."""
        peak, total = self.lr, self.total_steps
        warmup_steps = round(self.warmup * total)
        if step < warmup_steps:
            return peak * (step + 1) / warmup_steps
        if self.kind == "constant":
            return peak
        if self.kind == "step":
            decays = (step * self.epochs) // (self.step_epochs * total)
            return peak * self.step_gamma**decays
        p = (step - warmup_steps) / max(1, total - warmup_steps)
        floor = self.final_lr * peak
        if self.kind == "onecycle":
            return peak + (floor - peak) * p
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * p))


def make_optimizer(
    model: nn.Module,
    name: str = "adamw",
    *,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.999) or SGD (Nesterov when ``momentum > 0``) over the trainable
    parameters; weight decay applies to weights with dim >= 2 only (not biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    # On a GPU, one fused kernel per step instead of a dozen per parameter group: a small net's
    # CUDA step is bound by kernel launches (docs/benchmarks.md, "On a GPU"). The CPU keeps the
    # default (foreach) implementation, whose results earlier runs recorded.
    fused = {"fused": True} if params and all(p.is_cuda for p in params) else {}
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), **fused)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, **fused)
    raise MnistlabError(f"unknown optimizer {name!r}; use adamw or sgd")
