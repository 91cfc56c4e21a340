"""Image batches as the augmentations take them (:mod:`mnistlab.features.augment`,
:mod:`mnistlab.features.warp`): the checks, the float layout ops compute in and the way
back, per-sample parameters, and random draws that a seed reproduces on any device.

Images are ``(N, H, W)`` or ``(N, C, H, W)`` tensors, uint8 (0-255) or floating point.
"""

from __future__ import annotations

import numbers

import torch

Param = float | torch.Tensor
"""A per-sample parameter: a number for the whole batch, or a tensor of shape ``(N,)``."""

GeneratorLike = torch.Generator | int | None
"""A ``torch.Generator``, an int seed (a fresh generator on the images' device), or ``None``
(torch's global random state)."""


def check_images(x: torch.Tensor) -> None:
    """Raise TypeError/ValueError unless ``x`` is a uint8 or float ``(N, H, W)`` or ``(N, C, H,
    W)`` tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W); got {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise ValueError(f"images must be uint8 or floating point; got {x.dtype}")


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """The float dtype ops compute in: float64 for float64 images, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def to_work(x: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` in the working float dtype (values unchanged: 0-255 for uint8)."""
    y = x.to(work_dtype(x))
    return y.unsqueeze(1) if x.ndim == 3 else y


def from_work(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Back to ``like``'s layout and dtype; uint8 is rounded and clamped to 0-255."""
    if like.ndim == 3:
        y = y.squeeze(1)
    if like.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(like.dtype)


def full_scale(x: torch.Tensor) -> float:
    """Full ink: 255 for uint8 images, 1 for float ones."""
    return 255.0 if x.dtype == torch.uint8 else 1.0


def per_sample(
    value: Param,
    n: int,
    name: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    low: float | None = None,
    low_inclusive: bool = True,
) -> torch.Tensor:
    """``value`` as a tensor of shape ``(n,)``, checked to be finite and above ``low``."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            value = value.reshape(1).expand(n)
        elif value.shape != (n,):
            raise ValueError(
                f"{name} must be a number or a tensor of shape ({n},) (one per image); "
                f"got shape {tuple(value.shape)}"
            )
        t = value.to(device=device, dtype=dtype)
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        t = torch.full((n,), float(value), device=device, dtype=dtype)
    else:
        raise ValueError(f"{name} must be a number or a tensor; got {type(value).__name__}")
    if n and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite; got {value}")
    if low is not None and n:
        bad = t < low if low_inclusive else t <= low
        if bool(bad.any()):
            relation = ">=" if low_inclusive else ">"
            raise ValueError(f"{name} must be {relation} {low}; got {t[bad][0].item():g}")
    return t


def as_generator(generator: GeneratorLike, device: torch.device) -> torch.Generator | None:
    """``generator`` as a ``torch.Generator`` (an int seeds a fresh one on ``device``) or None."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator(device=device).manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an int seed or None; got {generator!r}")


def uniform(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1) float32 numbers drawn on the generator's device, moved to ``device``.

    Drawing where the generator lives keeps results reproducible across devices: a CPU
    generator gives the same draws whether the images are on the CPU or a GPU.
    """
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=where).to(device)


def normal(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Standard normal float32 numbers, drawn like :func:`uniform`."""
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where).to(device)
