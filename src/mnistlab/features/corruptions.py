"""A corruption suite modelled on MNIST-C (Mu & Gilmer, 2019), with five severities each.

Seventeen corruptions in six families: noise (shot, impulse), blur (glass, motion), geometry
(shear, scale, rotate, translate), lighting (brightness, contrast), overlays (stripe, fog,
spatter, dotted line, zigzag) and transforms (Canny edges, inversion). MNIST-C fixes one
strength per corruption; here every corruption has a ladder of five (inversion, which has no
strength, has one), so that accuracy can be plotted against severity.

Every corruption is a small vectorised torch function ``fn(x, level, generator)`` on float
``(N, 1, H, W)`` images in [0, 1] (``level`` is the value of its ladder at the chosen
severity; random choices come from ``generator``). :func:`corrupt` is the entry point: it takes
uint8 or float images, numpy or torch, ``(N, H, W)`` or ``(N, 1, H, W)``, and returns the same
type, shape and dtype (uint8 rounded), with values in range, fixed by ``(images, name,
severity, seed)``. :func:`random_corruptions` applies random corruptions to part of a batch
(training augmentation; see ``AugmentConfig.corruption_p`` in ``mnistlab.features.augment``).

The implementations are approximations of MNIST-C's (which use scikit-image, Wand and OpenCV
one image at a time), written to run on a whole batch at once on any device. See
``docs/robustness.md`` for a picture of every corruption at every severity.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from mnistlab.errors import MnistlabError
from mnistlab.features.warp import affine

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "corrupt",
    "corruption_names",
    "get_corruption",
    "random_corruptions",
]

SEVERITIES = (1, 2, 3, 4, 5)

CorruptionFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Corruption:
    """One corruption of the suite.

    Attributes:
        name: registry key, e.g. ``"shot_noise"``.
        family: ``"noise"``, ``"blur"``, ``"geometry"``, ``"lighting"``, ``"overlay"`` or
            ``"transform"``.
        levels: the corruption's parameter at severity 1, 2, ... (its meaning in ``unit``).
        unit: what a level means, for tables and docs.
        fn: ``fn(x, level, generator)`` on float ``(N, 1, H, W)`` in [0, 1]; returns the same.
    """

    name: str
    family: str
    levels: tuple[float, ...]
    unit: str
    fn: CorruptionFn

    @property
    def severities(self) -> tuple[int, ...]:
        """The valid severities: ``1 .. len(levels)``."""
        return tuple(range(1, len(self.levels) + 1))


# ---------------------------------------------------------------------------- random helpers


def _uniform(gen: torch.Generator, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 drawn on the generator's device (CPU: device-independent)."""
    return torch.rand(tuple(shape), generator=gen, device=gen.device).to(device)


def _signs(gen: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    """``n`` random signs, +1 or -1."""
    return torch.where(_uniform(gen, (n,), device) < 0.5, -1.0, 1.0)


# ---------------------------------------------------------------------------- filters


@functools.lru_cache(maxsize=32)
def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    """A normalized 1-D Gaussian of std ``sigma`` px, truncated at ``ceil(3 sigma)`` taps."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return (kernel / kernel.sum()).to(device)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)`` with zero padding (MNIST's background)."""
    k = _gaussian_kernel(float(sigma), x.device)
    r = len(k) // 2
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))


def _per_image_max(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)


# ---------------------------------------------------------------------------- noise


def shot_noise(x: torch.Tensor, photons: float, gen: torch.Generator) -> torch.Tensor:
    """Poisson (photon) noise: ``poisson(x * photons) / photons``; fewer photons is noisier."""
    rate = (x * photons).to(gen.device)
    return (torch.poisson(rate, generator=gen).to(x.device) / photons).clamp_(0, 1)


def impulse_noise(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Salt-and-pepper noise: a fraction ``amount`` of pixels set to 0 or 1 (half each)."""
    u = _uniform(gen, x.shape, x.device)
    return torch.where(u < amount, (u >= amount / 2).to(x.dtype), x)


# ---------------------------------------------------------------------------- blur


_GLASS = {  # level -> (sigma px, max displacement px, iterations), after ImageNet-C's ladder
    1: (0.4, 1, 1),
    2: (0.5, 1, 2),
    3: (0.6, 1, 3),
    4: (0.7, 2, 1),
    5: (0.8, 2, 2),
}


def glass_blur(x: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    """Frosted glass: blur, move every pixel to a random neighbour within ``d`` px (repeated),
    blur again. ImageNet-C swaps pixels one at a time; this jitters them all at once."""
    sigma, delta, iterations = _GLASS[int(level)]
    n, _, h, w = x.shape
    y = _blur(x, sigma)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    for _ in range(iterations):
        shift = (_uniform(gen, (2, n, h, w), x.device) * (2 * delta + 1)).floor().long() - delta
        r = (rows + shift[0]).clamp(0, h - 1)
        c = (cols + shift[1]).clamp(0, w - 1)
        flat = y.view(n, h * w)
        y = flat.gather(1, (r * w + c).view(n, h * w)).view(n, 1, h, w)
    return _blur(y, sigma).clamp_(0, 1)


def motion_blur(x: torch.Tensor, length: float, gen: torch.Generator) -> torch.Tensor:
    """Motion blur: average along a one-sided line of ``length`` px at a random angle (a
    camera that moved while exposing); each image gets its own angle."""
    n, _, h, w = x.shape
    radius = math.ceil(length)
    size = 2 * radius + 1
    angle = _uniform(gen, (n,), x.device) * 2 * math.pi
    direction = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # (n, 2) as (x, y)
    taps = torch.arange(size, device=x.device, dtype=torch.float32) - radius
    gy, gx = torch.meshgrid(taps, taps, indexing="ij")
    points = torch.stack([gx, gy], dim=-1).view(1, size * size, 2)
    # Distance of every kernel tap to the segment from the centre to `length * direction`.
    t = (points * direction[:, None, :]).sum(-1).clamp(0, length)  # (n, taps)
    dist = (points - t[..., None] * direction[:, None, :]).norm(dim=-1)
    kernel = (1 - dist).clamp_min(0).view(n, 1, size, size)
    kernel = kernel / kernel.sum(dim=(2, 3), keepdim=True)
    y = F.conv2d(x.reshape(1, n, h, w), kernel, padding=radius, groups=n)
    return y.view(n, 1, h, w).clamp_(0, 1)


# ---------------------------------------------------------------------------- geometry


def shear(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Horizontal shear by ``degrees``, random direction (see ``features.augment.affine``)."""
    return affine(x, shear=degrees * _signs(gen, len(x), x.device))


def scale(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Shrink about the image centre by ``factor`` (< 1)."""
    return affine(x, factor=factor)


def rotate(x: torch.Tensor, degrees: float, gen: torch.Generator) -> torch.Tensor:
    """Rotate about the centre by ``degrees``, random direction."""
    return affine(x, degrees=degrees * _signs(gen, len(x), x.device))


def translate(x: torch.Tensor, pixels: float, gen: torch.Generator) -> torch.Tensor:
    """Shift by ``pixels`` in a random direction (bilinear for non-integer components)."""
    angle = _uniform(gen, (len(x),), x.device) * 2 * math.pi
    return affine(x, dx=pixels * torch.cos(angle), dy=pixels * torch.sin(angle))


# ---------------------------------------------------------------------------- lighting


def brightness(x: torch.Tensor, amount: float, gen: torch.Generator) -> torch.Tensor:
    """Brighter lighting: add ``amount`` to every pixel (the background turns grey)."""
    return (x + amount).clamp_(0, 1)


def contrast(x: torch.Tensor, factor: float, gen: torch.Generator) -> torch.Tensor:
    """Lower contrast: pull every pixel towards the image's mean, ``mean + factor (x - mean)``."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor * (x - mean)).clamp_(0, 1)


# ---------------------------------------------------------------------------- overlays


def stripe(x: torch.Tensor, width: float, gen: torch.Generator) -> torch.Tensor:
    """Invert a vertical band of ``width`` columns at a random place in the middle half."""
    n, _, _, w = x.shape
    start = (w / 4 + _uniform(gen, (n,), x.device) * (w / 2 - width)).floor()
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    band = (cols >= start.view(n, 1, 1, 1)) & (cols < (start + width).view(n, 1, 1, 1))
    return torch.where(band, 1 - x, x)


def _smooth_noise(
    gen: torch.Generator, n: int, h: int, w: int, device: torch.device
) -> torch.Tensor:
    """Low-frequency noise in [0, 1]: four octaves of upsampled uniform noise (a plasma-like
    fractal: coarse octaves weigh more), rescaled per image to span [0, 1]."""
    total = torch.zeros(n, 1, h, w, device=device)
    for octave, cells in enumerate((2, 4, 7, 14)):
        coarse = _uniform(gen, (n, 1, cells + 1, cells + 1), device)
        up = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
        total += up / 2**octave
    low = total.amin(dim=(1, 2, 3), keepdim=True)
    return (total - low) / (total.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-6)


def fog(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Fog: add ``strength`` times smooth fractal noise, then rescale so the digit's brightest
    pixel keeps its value relative to the fog (ImageNet-C's ``x * max / (max + strength)``)."""
    n, _, h, w = x.shape
    top = _per_image_max(x)
    y = x + strength * _smooth_noise(gen, n, h, w, x.device)
    return (y * top / (top + strength)).clamp_(0, 1)


def spatter(x: torch.Tensor, coverage: float, gen: torch.Generator) -> torch.Tensor:
    """Spatter: opaque grey-white blobs covering about ``coverage`` of the image (the highest
    places of a blurred noise field, so they clump into drops)."""
    n, _, h, w = x.shape
    field = _blur(_uniform(gen, (n, 1, h, w), x.device), 1.0)
    k = max(1, round(coverage * h * w))
    threshold = field.view(n, -1).topk(k, dim=1).values[:, -1].view(n, 1, 1, 1)
    shade = 0.6 + 0.4 * _uniform(gen, (n, 1, 1, 1), x.device)
    return torch.where(field >= threshold, shade.expand_as(x), x)


def _segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple:
    """Distance from pixel centres ``points`` (P, 2) to segments ``a``-``b`` (N, S, 2), and the
    arc length (px) of the nearest point along each segment: both ``(N, S, P)``."""
    ab = b - a
    length = ab.norm(dim=-1).clamp_min(1e-6)  # (N, S)
    unit = ab / length[..., None]
    rel = points.view(1, 1, -1, 2) - a[:, :, None, :]  # (N, S, P, 2)
    t = (rel * unit[:, :, None, :]).sum(-1).clamp(min=0)
    t = torch.minimum(t, length[..., None])
    nearest = a[:, :, None, :] + t[..., None] * unit[:, :, None, :]
    return (points.view(1, 1, -1, 2) - nearest).norm(dim=-1), t


@functools.lru_cache(maxsize=4)
def _pixel_centres(h: int, w: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.stack([xs, ys], dim=-1).view(-1, 2).to(device)


def _draw(
    x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, dotted: bool, half_width: float = 0.6
) -> torch.Tensor:
    """Draw white segments ``a``-``b`` (N, S, 2, in pixel coordinates x, y) over the images;
    ``dotted``: 1.5 px on, 1.5 px off along each segment."""
    n, _, h, w = x.shape
    centres = _pixel_centres(h, w, x.device)
    masks = []
    for start in range(0, n, 256):  # bounds memory: the distances are (chunk, S, H*W)
        dist, t = _segment_distance(centres, a[start : start + 256], b[start : start + 256])
        ink = dist < half_width
        if dotted:
            ink &= torch.remainder(t, 3.0) < 1.5
        masks.append(ink.any(dim=1))
    mask = torch.cat(masks).view(n, 1, h, w)
    return torch.where(mask, torch.ones_like(x), x)


def dotted_line(x: torch.Tensor, lines: float, gen: torch.Generator) -> torch.Tensor:
    """``lines`` dotted straight lines across the image, each through a random point of the
    central 14x14 region at a random angle."""
    n, _, h, w = x.shape
    k = int(lines)
    centre = (_uniform(gen, (n, k, 2), x.device) * 0.5 + 0.25) * torch.tensor(
        [w - 1, h - 1], device=x.device, dtype=torch.float32
    )
    angle = _uniform(gen, (n, k), x.device) * math.pi
    half = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1) * float(h + w)
    return _draw(x, centre - half, centre + half, dotted=True)


def zigzag(x: torch.Tensor, lines: float, gen: torch.Generator) -> torch.Tensor:
    """``lines`` zigzag lines: 6 segments from edge to edge, alternating up and down by 2-4 px
    around a random height, then rotated by a random angle about the image centre."""
    n, _, h, w = x.shape
    k, segments = int(lines), 6
    xs = torch.linspace(-2, w + 1, segments + 1, device=x.device).expand(n, k, -1)
    base = 4 + _uniform(gen, (n, k, 1), x.device) * (h - 8)
    amplitude = 2 + 2 * _uniform(gen, (n, k, 1), x.device)
    alternate = torch.tensor([(-1.0) ** i for i in range(segments + 1)], device=x.device)
    ys = base + amplitude * alternate
    pts = torch.stack([xs, ys], dim=-1)  # (n, k, segments + 1, 2)
    angle = (_uniform(gen, (n, k, 1), x.device) - 0.5) * math.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=x.device)
    rel = pts - centre
    rotated = torch.stack(
        [cos * rel[..., 0] - sin * rel[..., 1], sin * rel[..., 0] + cos * rel[..., 1]], dim=-1
    )
    pts = (rotated + centre).reshape(n, k * (segments + 1), 2)
    a = pts.view(n, k, segments + 1, 2)[:, :, :-1].reshape(n, k * segments, 2)
    b = pts.view(n, k, segments + 1, 2)[:, :, 1:].reshape(n, k * segments, 2)
    return _draw(x, a, b, dotted=False)


# ---------------------------------------------------------------------------- transforms


def canny_edges(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """The Canny edge map (white edges on black): Gaussian blur of std ``sigma``, Sobel
    gradients, non-maximum suppression across the edge, double threshold (20% / 40% of the
    image's strongest gradient) and hysteresis (weak edges kept when 8-connected to strong)."""
    y = _blur(x, sigma)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    gx = F.conv2d(y, sobel.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(y, sobel.T.reshape(1, 1, 3, 3), padding=1)
    magnitude = torch.hypot(gx, gy)
    # Gradient direction quantized to 0, 45, 90, 135 degrees; compare with both neighbours
    # along it (y grows downwards).
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    sector = (((angle + 22.5) // 45) % 4).long()
    padded = F.pad(magnitude, (1, 1, 1, 1))
    h, w = x.shape[-2:]

    def shifted(dy: int, dx: int) -> torch.Tensor:
        return padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    offsets = ((0, 1), (1, 1), (1, 0), (1, -1))  # (dy, dx) along 0, 45, 90, 135 degrees
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    for s, (dy, dx) in enumerate(offsets):
        local_max = (magnitude >= shifted(dy, dx)) & (magnitude >= shifted(-dy, -dx))
        keep |= (sector == s) & local_max
    thin = torch.where(keep, magnitude, torch.zeros_like(magnitude))
    top = _per_image_max(thin)
    strong = thin >= 0.4 * top
    weak = thin >= 0.2 * top
    for _ in range(max(h, w)):  # hysteresis: grow strong edges through weak pixels
        grown = (F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0) & weak
        if torch.equal(grown, strong):
            break
        strong = grown
    return strong.to(x.dtype)


def inverse(x: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    """Inverted colours: ``1 - x`` (black digit on white)."""
    return 1 - x


# ---------------------------------------------------------------------------- registry


CORRUPTIONS: dict[str, Corruption] = {
    c.name: c
    for c in (
        Corruption("shot_noise", "noise", (60, 25, 12, 5, 3), "photons at full white", shot_noise),
        Corruption(
            "impulse_noise",
            "noise",
            (0.03, 0.06, 0.09, 0.17, 0.27),
            "pixel fraction",
            impulse_noise,
        ),
        Corruption(
            "glass_blur", "blur", (1, 2, 3, 4, 5), "ladder step (sigma, d, iters)", glass_blur
        ),
        Corruption("motion_blur", "blur", (2, 3.5, 5, 6.5, 8), "trail length (px)", motion_blur),
        Corruption("shear", "geometry", (10, 20, 30, 40, 50), "degrees", shear),
        Corruption("scale", "geometry", (0.9, 0.8, 0.7, 0.6, 0.5), "zoom factor", scale),
        Corruption("rotate", "geometry", (10, 20, 30, 45, 60), "degrees", rotate),
        Corruption("translate", "geometry", (2, 3, 4, 5, 6), "pixels", translate),
        Corruption("brightness", "lighting", (0.1, 0.2, 0.3, 0.4, 0.5), "added level", brightness),
        Corruption("contrast", "lighting", (0.6, 0.45, 0.3, 0.2, 0.1), "contrast factor", contrast),
        Corruption("stripe", "overlay", (2, 3, 4, 5, 6), "inverted columns", stripe),
        Corruption("fog", "overlay", (0.3, 0.5, 0.7, 0.9, 1.1), "fog strength", fog),
        Corruption(
            "spatter", "overlay", (0.03, 0.06, 0.09, 0.12, 0.16), "covered fraction", spatter
        ),
        Corruption("dotted_line", "overlay", (1, 2, 3, 4, 5), "lines", dotted_line),
        Corruption("zigzag", "overlay", (1, 2, 3, 4, 5), "lines", zigzag),
        Corruption(
            "canny_edges", "transform", (0.5, 0.75, 1.0, 1.25, 1.5), "blur sigma (px)", canny_edges
        ),
        Corruption("inverse", "transform", (1,), "(no strength)", inverse),
    )
}


def corruption_names() -> tuple[str, ...]:
    """The names of :data:`CORRUPTIONS`, in the suite's order."""
    return tuple(CORRUPTIONS)


def get_corruption(name: str) -> Corruption:
    """The corruption called ``name``.

    Raises:
        MnistlabError: an unknown name (the message lists the known ones).
    """
    try:
        return CORRUPTIONS[name]
    except KeyError:
        raise MnistlabError(
            f"unknown corruption {name!r}", hint=f"choose from: {', '.join(CORRUPTIONS)}"
        ) from None


def _as_work(images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Float32 ``(N, 1, H, W)`` in [0, 1] from uint8/float, numpy/torch, 3-D/4-D images; and
    whether the input was uint8."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if not isinstance(x, torch.Tensor):
        raise MnistlabError(f"images must be a numpy array or a torch tensor; got {type(images)}")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] != 1):
        raise MnistlabError(
            f"images must have shape (N, H, W) or (N, 1, H, W); got {tuple(x.shape)}"
        )
    is_uint8 = x.dtype == torch.uint8
    if not (is_uint8 or x.dtype.is_floating_point):
        raise MnistlabError(f"images must be uint8 or floating point; got {x.dtype}")
    y = x.float() / 255 if is_uint8 else x.float()
    return (y.unsqueeze(1) if x.ndim == 3 else y), is_uint8


def _from_work(y: torch.Tensor, like: np.ndarray | torch.Tensor, is_uint8: bool):
    if like.ndim == 3:
        y = y.squeeze(1)
    y = (y * 255).round_().clamp_(0, 255).to(torch.uint8) if is_uint8 else y.to(like.dtype)
    return y.cpu().numpy() if isinstance(like, np.ndarray) else y


def corrupt(images: ArrayT, name: str, severity: int = 3, seed: int = 0) -> ArrayT:
    """Apply one corruption at one severity to a batch of images.

    Args:
        images: uint8 (0-255) or float ([0, 1]) images, ``(N, H, W)`` or ``(N, 1, H, W)``, as a
            numpy array or a torch tensor (on any device).
        name: a key of :data:`CORRUPTIONS` (``corruption_names()`` lists them).
        severity: 1 (mildest) to 5 (inversion has only severity 1).
        seed: the random choices (angles, noise, lines) come from a CPU generator seeded with
            it, so the result is fixed by ``(images, name, severity, seed)`` on every device.

    Returns:
        The corrupted images: the input's type, shape and dtype (uint8 rounded), in range.

    Raises:
        MnistlabError: an unknown name, a severity out of range, or unusable images.
    """
    corruption = get_corruption(name)
    if severity not in corruption.severities:
        raise MnistlabError(
            f"severity {severity!r} out of range for {name}",
            hint=f"{name} takes severities {', '.join(map(str, corruption.severities))}",
        )
    x, is_uint8 = _as_work(images)
    gen = torch.Generator().manual_seed(int(seed))
    y = corruption.fn(x, float(corruption.levels[severity - 1]), gen) if len(x) else x
    return _from_work(y, images, is_uint8)


def random_corruptions(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    names: Sequence[str] = (),
    max_severity: int = 5,
) -> torch.Tensor:
    """Corrupt a random part of a batch: a training augmentation.

    Each image is picked with probability ``p``; each picked image gets one corruption drawn
    uniformly from ``names`` (default: all). Images that drew the same corruption share one
    severity, drawn uniformly from ``1 .. min(max_severity, its top severity)`` (one call per
    corruption keeps it vectorised).

    Args:
        x: uint8 or float images ``(N, H, W)`` or ``(N, 1, H, W)`` (a torch tensor).
        p: probability in [0, 1] that an image is corrupted.
        generator: a ``torch.Generator``, advanced by this call (the draws are made on its
            device, so a CPU generator gives device-independent results).
        names: corruptions to draw from (default: the whole suite).
        max_severity: highest severity used.

    Returns:
        A new tensor of ``x``'s shape, dtype and device.
    """
    chosen = tuple(names) or corruption_names()
    for name in chosen:
        get_corruption(name)
    y, is_uint8 = _as_work(x)
    n = len(y)
    picked = _uniform(generator, (n,), y.device) < p
    which = (_uniform(generator, (n,), y.device) * len(chosen)).long().clamp_max(len(chosen) - 1)
    out = y.clone()
    for k, name in enumerate(chosen):
        corruption = CORRUPTIONS[name]
        top = min(max_severity, len(corruption.levels))
        severity = 1 + int(_uniform(generator, (1,), torch.device("cpu")).item() * top)
        idx = torch.nonzero(picked & (which == k)).flatten()
        if len(idx):
            level = float(corruption.levels[min(severity, top) - 1])
            out[idx] = corruption.fn(y[idx], level, generator)
    return _from_work(out, x, is_uint8)
