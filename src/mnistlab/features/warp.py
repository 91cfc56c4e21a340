"""Geometry of a batch of images: one affine warp per image (rotation, translation, scaling,
shear) and elastic distortion (Simard et al. 2003), resampled together in one
``grid_sample`` so content is interpolated once. The conventions (directions, centre,
padding) are those of :mod:`mnistlab.features.augment`, which uses these in its pipeline."""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F

from mnistlab.features.batches import (
    GeneratorLike,
    Param,
    as_generator,
    check_images,
    from_work,
    per_sample,
    to_work,
    uniform,
    work_dtype,
)

__all__ = [
    "affine",
    "affine_matrices",
    "elastic",
    "elastic_displacement",
    "elastic_field",
    "rotate",
    "scale",
    "translate",
    "warp",
]


@functools.lru_cache(maxsize=16)
def _base_points(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres in normalized coordinates, as rows ``(x, y, 1)``: shape ``(H*W, 3)``."""
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(height * width, 3)


def affine_matrices(
    degrees: torch.Tensor,
    dx: torch.Tensor,
    dy: torch.Tensor,
    factor: torch.Tensor,
    shear: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """``(N, 2, 3)`` matrices mapping output to input points in normalized coordinates.

    In centred pixel coordinates (y down) the forward map is ``p' = s R S p + t`` with ``S`` the
    shear ``[[1, -tan h], [0, 1]]`` and ``R = [[cos a, sin a], [-sin a, cos a]]`` (counter-
    clockwise as displayed). ``grid_sample`` needs the inverse, ``p = M (p' - t)`` with
    ``M = S^-1 R^-1 / s``, conjugated by ``D = diag(W/2, H/2)`` into normalized coordinates.
    """
    a = torch.deg2rad(degrees)
    cos, sin, tan = torch.cos(a), torch.sin(a), torch.tan(torch.deg2rad(shear))
    m00 = (cos + tan * sin) / factor
    m01 = (tan * cos - sin) / factor
    m10 = sin / factor
    m11 = cos / factor
    theta = torch.stack(
        [
            torch.stack([m00, m01 * (height / width), -(m00 * dx + m01 * dy) * (2 / width)], -1),
            torch.stack([m10 * (width / height), m11, -(m10 * dx + m11 * dy) * (2 / height)], -1),
        ],
        dim=1,
    )
    return theta


def warp(
    x: torch.Tensor, theta: torch.Tensor | None, displacement: torch.Tensor | None
) -> torch.Tensor:
    """Resample ``x`` once at ``theta @ (p + displacement(p))`` for every output pixel ``p``.

    ``x`` is ``(N, C, H, W)`` float; ``theta`` ``(N, 2, 3)`` normalized (or ``None``: identity);
    ``displacement`` ``(N, 2, H, W)`` in pixels, channel 0 = x, 1 = y (or ``None``).
    """
    n, _, h, w = x.shape
    base = _base_points(h, w, x.device, x.dtype)
    if theta is None:
        grid = base[:, :2].T.reshape(1, 2, h, w).expand(n, 2, h, w)
    else:
        # One GEMM for the whole batch; much faster on CPU than F.affine_grid's batched matmul.
        grid = (theta.to(x.dtype).reshape(n * 2, 3) @ base.T).view(n, 2, h, w)
    if displacement is not None:
        d = (
            displacement.to(x.dtype)
            * torch.tensor([2 / w, 2 / h], device=x.device, dtype=x.dtype)[None, :, None, None]
        )
        if theta is not None:  # the displacement is in output space: map it through theta too
            lin = theta[:, :, :2].to(x.dtype)
            d = torch.einsum("nij,njhw->nihw", lin, d)
        grid = grid + d
    return F.grid_sample(
        x, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False
    )


def affine(
    x: torch.Tensor,
    degrees: Param = 0.0,
    dx: Param = 0.0,
    dy: Param = 0.0,
    factor: Param = 1.0,
    shear: Param = 0.0,
) -> torch.Tensor:
    """Rotate, scale, shear and translate images in a single resampling.

    Args:
        x: images ``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float, on any device.
        degrees: rotation about the image centre, counter-clockwise as displayed.
        dx, dy: translation in pixels; ``dx > 0`` moves content right, ``dy > 0`` down.
        factor: scale about the image centre, > 0; ``factor > 1`` enlarges content.
        shear: horizontal shear angle in degrees, in (-90, 90); ``> 0`` slants like italics.
        Each parameter is a number or a tensor of shape ``(N,)`` (one value per image).

    Returns:
        The transformed images: same shape, dtype and device as ``x``. Content is sheared,
        rotated, scaled, then translated; uncovered pixels are 0. uint8 is rounded.

    Raises:
        ValueError: bad image shape or dtype, parameter shapes other than ``(N,)``, non-finite
            values, ``factor <= 0`` or ``|shear| >= 90``.
    """
    check_images(x)
    n, device, dtype = x.shape[0], x.device, work_dtype(x)
    deg = per_sample(degrees, n, "degrees", device, dtype)
    tx = per_sample(dx, n, "dx", device, dtype)
    ty = per_sample(dy, n, "dy", device, dtype)
    s = per_sample(factor, n, "factor", device, dtype, low=0.0, low_inclusive=False)
    sh = per_sample(shear, n, "shear", device, dtype)
    if n and bool((sh.abs() >= 90).any()):
        raise ValueError(f"shear must be in (-90, 90) degrees; got {shear}")
    identity = all(
        not isinstance(v, torch.Tensor) and v == ref
        for v, ref in ((degrees, 0), (dx, 0), (dy, 0), (factor, 1), (shear, 0))
    )
    if n == 0 or identity:
        return x.clone()
    theta = affine_matrices(deg, tx, ty, s, sh, x.shape[-2], x.shape[-1])
    return from_work(warp(to_work(x), theta, None), x)


def rotate(x: torch.Tensor, degrees: Param) -> torch.Tensor:
    """Rotate about the image centre, counter-clockwise as displayed (see :func:`affine`)."""
    return affine(x, degrees=degrees)


def translate(x: torch.Tensor, dx: Param, dy: Param) -> torch.Tensor:
    """Shift by ``(dx, dy)`` pixels: ``dx > 0`` right, ``dy > 0`` down (see :func:`affine`).

    Integer shifts are exact: content moves by whole pixels, vacated pixels become 0.
    """
    return affine(x, dx=dx, dy=dy)


def scale(x: torch.Tensor, factor: Param) -> torch.Tensor:
    """Scale about the image centre; ``factor > 1`` enlarges content (see :func:`affine`)."""
    return affine(x, factor=factor)


# ---------------------------------------------------------------------------------------------
# Elastic distortion (Simard, Steinkraus & Platt 2003)


# Elastic distortion


@functools.lru_cache(maxsize=16)
def _gaussian_matrix(
    size: int, sigma: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``(size, size)`` matrix ``G`` with ``G @ v`` = 1-D Gaussian blur of ``v``, zero padding.

    The kernel is truncated at ``round(4 sigma)`` taps and normalized to sum 1, as in
    ``scipy.ndimage.gaussian_filter(v, sigma, mode="constant")``.
    """
    radius = int(4.0 * sigma + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    offset = torch.arange(size)[None, :] - torch.arange(size)[:, None]  # j - i
    inside = offset.abs() <= radius
    matrix = torch.where(inside, kernel[(offset + radius).clamp(0, 2 * radius)], 0.0)
    return matrix.to(device=device, dtype=dtype)


def elastic_displacement(
    n: int,
    height: int,
    width: int,
    alpha: Param,
    sigma: float,
    generator: GeneratorLike = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random smooth displacement fields, Simard et al. (2003).

    Each field is uniform noise in [-1, 1] per pixel and axis, blurred with a Gaussian of std
    ``sigma`` pixels (zero padding at the border), times ``alpha`` pixels.

    Args:
        n, height, width: number and size of the fields.
        alpha: scale in pixels, >= 0; a number or a tensor of shape ``(n,)``.
        sigma: smoothness in pixels, > 0 (one value for the batch).
        generator: a ``torch.Generator``, an int seed, or ``None`` (global RNG).
        device: where the fields are returned.

    Returns:
        float32 ``(n, 2, height, width)``: channel 0 is the x (column) displacement, channel 1
        the y (row) displacement, in pixels. Output pixel ``p`` samples the input at ``p + d(p)``.
    """
    device = torch.device(device)
    _check_sigma(sigma)
    a = per_sample(alpha, n, "alpha", device, low=0.0)
    return elastic_field(n, height, width, a, float(sigma), as_generator(generator, device), device)


def _check_sigma(sigma: float) -> None:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real):
        raise ValueError(f"sigma must be a number (pixels); got {sigma!r}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0 (pixels); got {sigma!r}")


def elastic_field(
    n: int,
    height: int,
    width: int,
    alpha: torch.Tensor,
    sigma: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> torch.Tensor:
    """``(n, 2, height, width)`` displacements in pixels: uniform noise in [-1, 1] blurred by a
    Gaussian of std ``sigma`` and scaled by each image's ``alpha`` ``(n,)``."""
    noise = uniform((n, 2, height, width), generator, device) * 2 - 1
    gh = _gaussian_matrix(height, sigma, device, torch.float32)
    gw = _gaussian_matrix(width, sigma, device, torch.float32)
    smooth = gh @ noise @ gw.T  # blur the columns, then the rows
    return smooth * alpha[:, None, None, None]


def elastic(
    x: torch.Tensor, alpha: Param, sigma: float, generator: GeneratorLike = None
) -> torch.Tensor:
    """Elastic distortion: resample ``x`` along a random smooth displacement field.

    Args:
        x: images ``(N, H, W)`` or ``(N, C, H, W)``, uint8 or float, on any device.
        alpha: displacement scale in pixels, >= 0 (Simard et al.: 34 for 28x28 digits); a
            number or a tensor of shape ``(N,)``. ``alpha = 0`` is the identity.
        sigma: smoothing std in pixels, > 0 (Simard et al.: 4); larger is smoother and weaker.
        generator: a ``torch.Generator``, an int seed, or ``None`` (global RNG).

    Returns:
        The distorted images: same shape, dtype and device as ``x``.
    """
    check_images(x)
    _check_sigma(sigma)
    n, h, w, device = x.shape[0], x.shape[-2], x.shape[-1], x.device
    a = per_sample(alpha, n, "alpha", device, low=0.0)
    if n == 0 or (not isinstance(alpha, torch.Tensor) and alpha == 0):
        return x.clone()
    field = elastic_field(n, h, w, a, float(sigma), as_generator(generator, device), device)
    return from_work(warp(to_work(x), None, field), x)
