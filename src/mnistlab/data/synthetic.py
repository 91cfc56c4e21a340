"""Digits in the styles MNIST's writers seldom used, generated, to train models that read
handwriting from elsewhere (docs/data.md, "Generated digits").

MNIST's digits come from American census staff and students. People elsewhere write a 1 with
a long flag and often a base, a 4 with an open top, a 7 with a crossbar, a 9 with a straight
stem; scanners and forms stretch a digit to fill its box and change the pen's width. A model
trained on MNIST alone reads those as other digits. This module makes such digits, in MNIST
form (:func:`mnist_form`), from two sources:

- **fonts**: the ten digits of every font found on the machine (:func:`find_fonts`: the
  system's font folders and matplotlib's own fonts), a random font for each digit;
- **stroke templates**: the handwritten styles above drawn as pen strokes whose control
  points, pen width and proportions are jittered per digit (:func:`draw_template`).

Each digit is then distorted (:func:`distort`): slant, rotation, a pen width drawn anew, and
for some an aspect-ratio stretch that widens a narrow digit. Everything is drawn from one
seeded generator: the same seed and the same fonts give the same digits.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

SIDE = 28  # the MNIST field
BOX = 20  # the digit's longer side in MNIST form
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column)
FAINTEST = 1e-6  # ink weaker than this (at its strongest) is no ink: nothing to scale up
GLYPH = 64  # pixels: the height digits are drawn at before being reduced
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".pfb")
PEN = (0.08, 0.2)  # stroke width as a share of the digit height, drawn uniformly

#: The handwritten styles as pen strokes, ``(digit, strokes)``: polylines in a unit box (x
#: right, y down; the digit's height is 1) and ``("ellipse", cx, cy, rx, ry)`` loops.
STYLES: list[tuple[int, list[Any]]] = [
    (1, [[(0.05, 0.42), (0.5, 0.0), (0.5, 1.0)]]),  # long flag
    (1, [[(0.1, 0.3), (0.5, 0.0), (0.5, 1.0)], [(0.15, 1.0), (0.85, 1.0)]]),  # flag and base
    (1, [[(0.2, 0.25), (0.55, 0.0), (0.45, 1.0)]]),  # flag, leaning
    (4, [[(0.3, 0.0), (0.05, 0.62), (0.95, 0.62)], [(0.7, 0.12), (0.7, 1.0)]]),  # open top
    (4, [[(0.15, 0.0), (0.1, 0.6), (0.95, 0.6)], [(0.75, 0.0), (0.7, 1.0)]]),  # open, upright
    (7, [[(0.05, 0.05), (0.95, 0.0), (0.4, 1.0)], [(0.4, 0.52), (0.9, 0.5)]]),  # crossbar
    (7, [[(0.0, 0.18), (0.1, 0.0), (0.95, 0.02), (0.45, 1.0)], [(0.45, 0.55), (0.95, 0.5)]]),
    (9, [("ellipse", 0.48, 0.27, 0.36, 0.27), [(0.84, 0.27), (0.8, 1.0)]]),  # straight stem
    (9, [("ellipse", 0.45, 0.28, 0.35, 0.28), [(0.8, 0.3), (0.6, 1.0)]]),  # slanted stem
    (2, [[(0.1, 0.2), (0.5, 0.0), (0.9, 0.25), (0.05, 1.0), (0.95, 1.0)]]),  # angular 2
    (3, [[(0.1, 0.0), (0.9, 0.0), (0.45, 0.42), (0.9, 0.7), (0.5, 1.0), (0.05, 0.85)]]),  # flat top
]


def mnist_form(ink: np.ndarray) -> np.ndarray:
    """Put a digit's ink into MNIST form: crop to the ink, fit the longer side to 20 pixels
    keeping the aspect ratio (Lanczos: anti-aliased; its overshoot clipped to [0, 1]), paste
    into 28x28 with the centre of mass on pixel (14, 14) (whole pixels, kept inside the
    field), brightest pixel 255. ``mnistlab.shipping.preprocess.to_mnist`` ends with it.

    Args:
        ink: ``(H, W)`` ink strength in [0, 1], 0 = background.

    Returns:
        uint8 ``(28, 28)``; all zeros when ``ink`` holds no ink (or none above
        :data:`FAINTEST` once resized).
    """
    ink = np.asarray(ink, dtype=np.float32)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    patch = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS))
    patch = np.clip(patch, 0.0, 1.0)
    mass = float(patch.sum(dtype=np.float64))
    if mass <= 0:
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    cy = float(patch.sum(axis=1, dtype=np.float64) @ np.arange(patch.shape[0])) / mass
    cx = float(patch.sum(axis=0, dtype=np.float64) @ np.arange(patch.shape[1])) / mass
    top = int(min(max(round(CENTRE - cy), 0), SIDE - patch.shape[0]))
    left = int(min(max(round(CENTRE - cx), 0), SIDE - patch.shape[1]))
    field = np.zeros((SIDE, SIDE), dtype=np.float32)
    field[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    peak = float(field.max())
    if peak < FAINTEST:  # 255 / peak would overflow to inf, and inf * 0 is NaN
        return np.zeros((SIDE, SIDE), dtype=np.uint8)
    return np.round(field * (255.0 / peak)).astype(np.uint8)


def _glyphs(font: Any) -> list[np.ndarray]:
    """The ten digits of ``font`` drawn ``GLYPH`` pixels high (ink 1 on 0), cropped."""
    out = []
    for d in range(10):
        left, top, right, bottom = font.getbbox(str(d))
        canvas = Image.new("L", (max(1, right - left) + 8, max(1, bottom - top) + 8), 0)
        ImageDraw.Draw(canvas).text((4 - left, 4 - top), str(d), fill=255, font=font)
        out.append(np.asarray(canvas, dtype=np.float32) / 255.0)
    return out


def _font_forms(path: Path) -> np.ndarray | None:
    """The ten digits of the font at ``path`` in MNIST form, or None when the font does not
    open or draws an empty or repeated glyph for some digit (fonts without digits draw the
    same box or nothing for each)."""
    try:
        glyphs = _glyphs(ImageFont.truetype(os.fspath(path), GLYPH))
    except Exception:  # any font the library cannot use is skipped
        return None
    forms = np.stack([mnist_form(g) for g in glyphs]).astype(np.float32) / 255.0
    if not forms.reshape(10, -1).any(axis=1).all():
        return None
    flat = forms.reshape(10, -1)
    differences = np.abs(flat[:, None] - flat[None]).mean(axis=2) + np.eye(10)
    return forms if differences.min() > 0.03 else None


def find_fonts(dirs: Sequence[str | os.PathLike[str]] | None = None) -> list[Path]:
    """The font files under ``dirs`` (default: :data:`FONT_DIRS` and matplotlib's fonts) that
    draw ten digits, sorted by path (a machine's fonts, in a fixed order).

    Dropped are fonts whose digits do not look like most fonts' digits: half of the ten or
    more correlate below 0.3 with the median of that digit over all fonts found (symbol and
    dingbat fonts, which put signs where digits go), and fonts that print digits cut out of
    a filled box (the ink covers more than 75 % of its bounding box, on average)."""
    if dirs is None:
        import matplotlib

        dirs = [*FONT_DIRS, Path(matplotlib.get_data_path()) / "fonts" / "ttf"]
    found = set()
    for folder in dirs:
        root = Path(folder).expanduser()
        if root.is_dir():
            found.update(p for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
    paths, forms = [], []
    for path in sorted(found):
        f = _font_forms(path)
        if f is not None:
            paths.append(path)
            forms.append(f)
    if not paths:
        return []
    z = np.stack(forms).reshape(len(forms), 10, -1)
    z = z - z.mean(axis=2, keepdims=True)
    z /= np.linalg.norm(z, axis=2, keepdims=True) + 1e-9
    median = np.median(z, axis=0)
    median /= np.linalg.norm(median, axis=1, keepdims=True) + 1e-9
    unlike = ((z * median[None]).sum(axis=2) < 0.3).sum(axis=1)
    return [p for p, u, f in zip(paths, unlike, forms, strict=True) if u < 5 and _cover(f) <= 0.75]


def _cover(forms: np.ndarray) -> float:
    """The mean share of each glyph's bounding box that its ink (> 0.5) covers."""
    shares = []
    for glyph in forms:
        mask = glyph > 0.5
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] if len(rows) else mask
        shares.append(box.mean())
    return float(np.mean(shares))


def fonts_digest(fonts: Sequence[Path]) -> str:
    """SHA-256 over the fonts' names and contents, in order: what a run records so that its
    generated digits can be made again."""
    h = hashlib.sha256()
    for path in fonts:
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def draw_template(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One handwritten-style ``digit`` from :data:`STYLES` (a style drawn at random among
    that digit's), its control points moved by a few percent of its height, drawn with a pen
    of random width. Returns ink ``(H, W)`` in [0, 1]."""
    styles = [strokes for d, strokes in STYLES if d == digit]
    if not styles:
        raise ValueError(f"no stroke template for digit {digit}; "
                         f"templates: {sorted({d for d, _ in STYLES})}")
    strokes = styles[int(rng.integers(len(styles)))]
    width = rng.uniform(0.55, 0.85)  # the digit's width as a share of its height
    pen = max(2, round(GLYPH * rng.uniform(0.07, 0.15)))
    pad = pen + 4
    canvas = Image.new("L", (round(GLYPH * width) + 2 * pad, GLYPH + 2 * pad), 0)
    draw = ImageDraw.Draw(canvas)

    def at(x: float, y: float) -> tuple[float, float]:
        x, y = x + rng.normal(0, 0.035), y + rng.normal(0, 0.035)
        return pad + x * GLYPH * width, pad + y * GLYPH

    for stroke in strokes:
        if isinstance(stroke, tuple) and stroke[0] == "ellipse":
            _, cx, cy, rx, ry = stroke
            (x0, y0), (x1, y1) = at(cx - rx, cy - ry), at(cx + rx, cy + ry)
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=255,
                         width=pen)  # fmt: skip
        else:
            draw.line([at(x, y) for x, y in stroke], fill=255, width=pen, joint="curve")
    return np.asarray(canvas, dtype=np.float32) / 255.0


def cross_seven(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 7 with a crossbar drawn through its stem at about mid-height (as many Europeans write
    it), the bar as thick as the stroke it crosses."""
    ink = ink.copy()
    h, w = ink.shape
    row = int(h * rng.uniform(0.45, 0.6))
    cols = np.flatnonzero(ink[row] > 0.5)
    if not len(cols):
        return ink
    centre = (cols[0] + cols[-1]) / 2
    thick = max(2, int(len(cols) * 0.9))
    half = w * rng.uniform(0.22, 0.35)
    x0, x1 = int(max(0, centre - half)), int(min(w, centre + half))
    ink[max(0, row - thick // 2) : row - thick // 2 + thick, x0:x1] = 1.0
    return ink


def distort(ink: np.ndarray, rng: np.random.Generator, *, stretch_p: float = 0.1) -> np.ndarray:
    """A random variant of a digit's ink: slant (+-0.3), rotation (+-8 degrees), a pen width
    drawn from :data:`PEN` (:func:`pen_width`) and, with probability ``stretch_p``, an
    aspect-ratio change that widens a narrow digit to half to nine tenths of its height (how
    some forms and scanners normalize digits to fill a box)."""
    h, w = ink.shape
    if rng.random() < stretch_p and w < 0.9 * h:
        target = rng.uniform(max(w / h, 0.5), 0.9) * h
        ink = np.asarray(Image.fromarray(ink).resize((max(1, round(target)), h),
                                                     Image.Resampling.BILINEAR))  # fmt: skip
    pad = max(ink.shape) // 2
    image = Image.fromarray(np.pad(ink, pad))
    slant = rng.uniform(-0.3, 0.3)
    image = image.transform(image.size, Image.Transform.AFFINE,
                            (1, slant, -slant * image.size[1] / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)  # fmt: skip
    image = image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)
    out = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    return pen_width(out, rng.uniform(*PEN))


def pen_width(ink: np.ndarray, target: float) -> np.ndarray:
    """``ink`` with its strokes made about ``target`` times the digit's height wide, by grey
    dilation or erosion (the width is measured as twice the ink's area over its edge's
    length; MNIST's pen: 0.117 of the height, 5th-95th percentile about 0.07-0.17)."""
    mask = ink > 0.5
    area = int(mask.sum())
    rows = np.flatnonzero(mask.any(axis=1))
    if area == 0 or len(rows) < 2:
        return ink
    edge = int((mask & ~ndimage.binary_erosion(mask)).sum())
    height = rows[-1] - rows[0] + 1
    change = round((target - 2.0 * area / max(edge, 1) / height) * height)
    if change >= 1:
        return ndimage.grey_dilation(ink, size=(change + 1, change + 1))
    if change <= -1:
        return ndimage.grey_erosion(ink, size=(1 - change, 1 - change))
    return ink


def generate_digits(
    count: int,
    *,
    seed: int = 0,
    fonts: Sequence[str | os.PathLike[str]] | None = None,
    template_share: float = 0.3,
    cross_sevens: float = 0.4,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` generated digits in MNIST form, labels balanced over 0-9.

    Args:
        count: how many.
        seed: every random choice comes from it.
        fonts: font files (default: :func:`find_fonts`).
        template_share: the share drawn from stroke templates (only digits that have one);
            the rest are printed from the fonts.
        cross_sevens: the share of printed 7s that get a crossbar.

    Returns:
        ``(images uint8 (count, 28, 28), labels int64 (count,))``; labels balanced over the
        ten digits, or, with no fonts and ``template_share`` 1, over the templated digits.

    Raises:
        ValueError: no usable font (and ``template_share`` < 1), or a share outside [0, 1].
    """
    if count < 0 or not 0 <= template_share <= 1 or not 0 <= cross_sevens <= 1:
        raise ValueError("count must be >= 0 and the shares in [0, 1]")
    paths = [Path(f) for f in (find_fonts() if fonts is None else fonts)]
    if not paths and template_share < 1 and count:
        raise ValueError("no font that draws digits was found; install fonts (docs/data.md) "
                         "or pass template_share=1")  # fmt: skip
    rng = np.random.default_rng(seed)
    cache: dict[int, list[np.ndarray]] = {}
    templated = sorted({d for d, _ in STYLES})
    classes = np.arange(10) if paths else np.array(templated)  # no fonts: templates only
    images = np.zeros((count, SIDE, SIDE), dtype=np.uint8)
    labels = classes[np.arange(count) % len(classes)].astype(np.int64)
    rng.shuffle(labels)
    for i, digit in enumerate(labels):
        digit = int(digit)
        if digit in templated and (not paths or rng.random() < template_share):
            ink = draw_template(digit, rng)
        else:
            k = int(rng.integers(len(paths)))
            if k not in cache:
                cache[k] = _glyphs(ImageFont.truetype(os.fspath(paths[k]), GLYPH))
            ink = cache[k][digit]
            if digit == 7 and rng.random() < cross_sevens:
                ink = cross_seven(ink, rng)
        images[i] = mnist_form(distort(ink, rng))
    return images, labels


def require_digits(class_names: Sequence[str], dataset: str) -> None:
    """Refuse generated digits for ``dataset`` unless its classes are the digits 0-9.

    Raises:
        MnistlabError: they are other classes.
    """
    from mnistlab.data.registry import DIGITS
    from mnistlab.errors import MnistlabError

    if tuple(class_names) != DIGITS:
        raise MnistlabError(
            f"generated digits join a dataset of the digits 0-9; {dataset} has classes "
            f"{', '.join(class_names[:4])}, ...", hint="drop --set generated_digits",
        )  # fmt: skip


def digits_for(
    class_names: Sequence[str], dataset: str, count: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` digits of :func:`generate_digits` (fonts found by :func:`installed_fonts`)
    for training on ``dataset``, whose classes must be the digits 0-9
    (:func:`require_digits`).

    Returns:
        ``(images uint8 (count, 28, 28), labels int64 (count,))``.

    Raises:
        MnistlabError: ``dataset`` is not of the digits 0-9, or no font was found.
    """
    from mnistlab.errors import MnistlabError

    require_digits(class_names, dataset)
    try:
        return generate_digits(count, seed=seed, fonts=installed_fonts())
    except ValueError as exc:
        hint = "install fonts (docs/data.md lists those the shipped model was trained with)"
        raise MnistlabError(str(exc), hint=hint) from None


def with_generated_digits(split: Any, count: int, *, seed: int = 0) -> Any:
    """``split`` (a :class:`~mnistlab.data.load.DatasetSplit` of a digit dataset) with
    ``count`` digits of :func:`digits_for` appended.

    Raises:
        MnistlabError: ``split`` is not of digits 0-9, or no font was found.
    """
    from mnistlab.data.load import DatasetSplit

    images, labels = digits_for(split.class_names, split.dataset, count, seed=seed)
    return DatasetSplit(np.concatenate([split.images, images]),
                        np.concatenate([split.labels, labels]), f"{split.dataset}+generated",
                        split.split, split.class_names)  # fmt: skip


def fonts_record() -> dict[str, Any]:
    """What a run records of the fonts its generated digits were printed from: their file
    names and :func:`fonts_digest` (the same fonts and seed give the same digits)."""
    fonts = installed_fonts()
    return {"fonts": [f.name for f in fonts], "fonts_sha256": fonts_digest(fonts)}


_FONTS: list[Path] = []  # installed_fonts()'s answer


def installed_fonts() -> list[Path]:
    """:func:`find_fonts` with the default folders, looked up once per process (it opens
    every font file on the machine)."""
    if not _FONTS:
        _FONTS.extend(find_fonts())
    return list(_FONTS)
