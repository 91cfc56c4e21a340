"""Pictures of whole handwritten numbers made of MNIST digits, built deterministically: the
benchmark (and a test bed) for reading numbers (:mod:`mnistlab.shipping.read`).

A number is ``digits`` MNIST digits side by side, as a person writes them on paper:

- the digits share a line, with a baseline jitter of a few percent of their height and sizes
  that vary by up to 15 % around a height drawn per picture (32-64 pixels);
- neighbours stand apart by a random gap, or, for a ``touching`` share of the neighbouring
  pairs, are slid together until their ink touches and then up to a tenth of the height into
  each other (touching or overlapping ink: what makes reading numbers hard);
- ``photo=True`` renders the ink on paper as a phone camera sees it: paper and pen colours, a
  lighting gradient across the page, blur, sensor noise and JPEG compression.

Everything is drawn from one ``numpy`` generator seeded by the caller, so a seed names a set.
Build sets from MNIST's *test* split to measure, from its *training* split to tune.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

DIGIT_HEIGHT = (32.0, 64.0)  # pixels, drawn per picture
SIZE_JITTER = 0.15  # each digit's height within +-15 % of the picture's
BASELINE_JITTER = 0.06  # standard deviation of the vertical offset, as a share of the height
GAP = (0.08, 0.5)  # apart: the gap between ink boxes, as a share of the height
OVERLAP = (0.0, 0.1)  # touching: how far past first contact, as a share of the height
MARGIN = (0.3, 0.8)  # around the number, as a share of the height


@dataclass
class NumberPicture:
    """One rendered number: the picture, its digits, where each one is, which pairs touch.

    ``image`` is uint8 grey ``(H, W)`` (dark ink on light paper); ``data`` the encoded file
    (JPEG for photos, PNG otherwise) that a reader gets; ``boxes`` one ``(x0, y0, x1, y1)``
    per digit (pixel edges, x1/y1 exclusive); ``touching[i]`` is true when digit ``i`` and
    ``i + 1`` touch or overlap.
    """

    image: np.ndarray
    data: bytes
    text: str
    boxes: list[tuple[int, int, int, int]]
    touching: list[bool] = field(default_factory=list)


def _tight(digit: np.ndarray) -> np.ndarray:
    rows = np.flatnonzero(digit.max(axis=1) > 0)
    cols = np.flatnonzero(digit.max(axis=0) > 0)
    if not len(rows):
        return np.zeros((1, 1), dtype=np.float32)
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255.0


def _resize(ink: np.ndarray, scale: float) -> np.ndarray:
    h, w = ink.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BILINEAR))
    return np.clip(out, 0.0, 1.0)


def _contact_shift(canvas: np.ndarray, glyph: np.ndarray, top: int, left: int) -> int:
    """How far ``glyph`` placed at (top, left) can move left before its ink meets the ink on
    ``canvas`` (row by row; 0 when they already touch). ``None``-like large when no row has
    ink on both."""
    h, w = glyph.shape
    rows = canvas[top : top + h] > 0.25
    mine = glyph > 0.25
    best = None
    for r in range(h):
        if not mine[r].any() or not rows[r].any():
            continue
        theirs = np.flatnonzero(rows[r])
        right = int(theirs[theirs < left + w].max(initial=-1)) if theirs.size else -1
        if right < 0:
            continue
        first = left + int(np.flatnonzero(mine[r])[0])
        gap = first - right - 1
        best = gap if best is None else min(best, gap)
    return 10**6 if best is None else max(best, 0)


def render_number(
    digits: Sequence[np.ndarray],
    labels: Sequence[int],
    rng: np.random.Generator,
    *,
    touching: float = 0.0,
    photo: bool = True,
) -> NumberPicture:
    """Draw one number from MNIST digit images (uint8 ``(28, 28)``, light ink on 0).

    Args:
        digits: the digits, left to right.
        labels: their labels (``text`` is their concatenation).
        rng: the random source (advanced by this call).
        touching: the share of neighbouring pairs that touch or overlap.
        photo: render as a photo of paper (JPEG); otherwise clean dark ink on white (PNG).
    """
    height = rng.uniform(*DIGIT_HEIGHT)
    glyphs = []
    for digit in digits:
        ink = _tight(np.asarray(digit))
        scale = height * rng.uniform(1 - SIZE_JITTER, 1 + SIZE_JITTER) / max(ink.shape[0], 4)
        glyphs.append(_resize(ink, scale))
    margin = int(height * rng.uniform(*MARGIN))
    line_h = int(max(g.shape[0] for g in glyphs) + 2 * height * 3 * BASELINE_JITTER) + 1
    width = sum(g.shape[1] for g in glyphs) + int(len(glyphs) * height * GAP[1]) + 2
    canvas = np.zeros((line_h + 2 * margin, width + 2 * margin), dtype=np.float32)
    centre = margin + line_h / 2
    boxes: list[tuple[int, int, int, int]] = []
    touches: list[bool] = []
    x = margin
    for i, glyph in enumerate(glyphs):
        h, w = glyph.shape
        jitter = np.clip(rng.normal(0, BASELINE_JITTER), -3 * BASELINE_JITTER, 3 * BASELINE_JITTER)
        top = round(centre - h / 2 + jitter * height)
        top = min(max(top, 0), canvas.shape[0] - h)
        if i:
            touch = bool(rng.random() < touching)
            if touch:
                left = boxes[-1][2] + 2
                shift = _contact_shift(canvas, glyph, top, left)
                if shift >= 10**6:  # no shared row: overlap the boxes instead
                    shift = 2
                left -= shift + int(height * rng.uniform(*OVERLAP))
                left = max(left, boxes[-1][0] + 1)
            else:
                left = boxes[-1][2] + max(2, int(height * rng.uniform(*GAP)))
            touches.append(touch)
            x = left
        canvas[top : top + h, x : x + w] = np.maximum(canvas[top : top + h, x : x + w], glyph)
        boxes.append((x, top, x + w, top + h))
    right = max(b[2] for b in boxes) + margin
    canvas = canvas[:, : min(right, canvas.shape[1])]
    text = "".join(str(int(label)) for label in labels)
    if not photo:
        grey = np.round(255.0 * (1.0 - canvas)).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, format="PNG")
        return NumberPicture(grey, buffer.getvalue(), text, boxes, touches)
    return _photo(canvas, rng, text, boxes, touches)


def _photo(
    ink: np.ndarray,
    rng: np.random.Generator,
    text: str,
    boxes: list[tuple[int, int, int, int]],
    touches: list[bool],
) -> NumberPicture:
    """Ink on paper as a camera sees it: colours, a lighting gradient, blur, noise, JPEG."""
    h, w = ink.shape
    paper = rng.uniform(185, 245) + rng.uniform(-12, 12, size=3)
    pen = rng.uniform(10, 90) + rng.uniform(-15, 15, size=3)
    blurred = ndimage.gaussian_filter(ink, rng.uniform(0.3, 1.2))
    rgb = paper[None, None, :] * (1 - blurred[..., None]) + pen[None, None, :] * blurred[..., None]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = (np.cos(angle) * xx / max(w, 1) + np.sin(angle) * yy / max(h, 1)) / 2 + 0.5
    light = 1.0 - rng.uniform(0.0, 0.35) * along
    rgb = rgb * light[..., None] + rng.normal(0, rng.uniform(2, 8), size=rgb.shape)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(35, 91)))
    data = buffer.getvalue()
    grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    return NumberPicture(grey, data, text, boxes, touches)


def number_set(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    *,
    seed: int = 0,
    digits: int = 5,
    touching: float = 0.0,
    photo: bool = True,
) -> list[NumberPicture]:
    """``count`` numbers of ``digits`` digits each, drawn from ``images``/``labels`` (e.g. a
    split's ``arrays()``), with every random choice from ``seed``: the same arguments give the
    same pictures, byte for byte.

    Raises:
        ValueError: fewer images than digits, or a share outside [0, 1].
    """
    if len(images) < digits or digits < 1 or count < 0:
        raise ValueError(f"need at least {digits} images for {digits}-digit numbers")
    if not 0.0 <= touching <= 1.0:
        raise ValueError(f"touching is a share in [0, 1]; got {touching}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pick = rng.choice(len(images), size=digits, replace=False)
        out.append(render_number([images[i] for i in pick], [labels[i] for i in pick], rng,
                                 touching=touching, photo=photo))  # fmt: skip
    return out
