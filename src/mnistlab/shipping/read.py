"""Read a whole handwritten number from a photo or a scan: the digit string, each digit's
confidence and box, and an overall confidence.

A digit classifier reads one centred digit; a number needs the digits found and cut apart
first, and touching or overlapping digits cannot be cut apart by looking at the ink alone. So
the cuts are chosen *by recognition* (the classic approach of postal-code readers):

1. **Ink.** Grey levels; the paper is the majority of pixels, the ink the side of the grey
   range further from it. The paper's brightness is modelled as a smooth surface (a quadratic
   fitted to the paper pixels, which removes a lighting gradient) and subtracted; Otsu's
   threshold on what remains separates ink from paper; specks are dropped.
2. **Marks.** Connected pieces of ink, left to right; pieces stacked above each other (the
   detached bar of a 5, a broken 4) are one mark. The line's digit height is their median
   height.
3. **Cuts.** A mark may hold several touching digits: every way of cutting it into pieces
   of about a digit's width is scored by the classifier and by how typical each piece's
   width-to-height ratio is for its digit, and the best is kept
   (:func:`~mnistlab.shipping.cuts.cut_mark`).
4. **Digits.** Each piece is put in MNIST form (:func:`~mnistlab.shipping.preprocess.to_mnist`)
   and read by the model; the number's confidence is the product of its digits'.

A **number reader** (:class:`~mnistlab.models.reader.NumberReader`, trained by ``mnistlab
train-reader``; one ships as ``pretrained:number-reader``) replaces steps 3 and 4: the marks'
ink is cropped and scaled into one line (:func:`number_line`) and the net reads it whole,
touching digits included (CTC), as it is and stretched across two ways: of the three views'
readings, the one they find most likely together wins
(:func:`~mnistlab.models.reader.consensus`). Each digit's box is the ink between halfway to
the digit before and halfway to the next. Its count is checked against the marks
(:func:`_recount`: a narrow mark read as two digits, one of them unsure, is one), and when the
number's length is known (``digits``) the reader gives its best reading of exactly that many
digits.
:func:`load_number_model` loads either kind of model.

:func:`read_number` takes grey levels, :func:`read_number_file` a picture's bytes; the
command line (``mnistlab read``), the HTTP API (``POST /v1/read``) and the draw page call them.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from mnistlab.errors import MnistlabError
from mnistlab.shipping.cuts import SEAM_REACH, cut_mark, least_ink_path
from mnistlab.shipping.errors import InputError
from mnistlab.shipping.preprocess import DEFAULT_MAX_PIXELS, decode_image, to_mnist

__all__ = [
    "MAX_DIGITS",
    "LineReader",
    "NumberLine",
    "NumberReading",
    "ReadDigit",
    "check_digits",
    "edit_distance",
    "load_number_model",
    "number_line",
    "read_number",
    "read_number_file",
]

MAX_DIGITS = 32
"""The longest number read; more digit-like marks than this is not a number."""
WORKING_SIDE = 1600  # larger pictures are reduced to this (longer side) first
MIN_CONTRAST = 24.0  # grey levels between paper and ink below this: nothing written
SPECK = 0.03  # ink pieces smaller than this share of the largest piece are dirt
MIN_HEIGHT = 0.3  # marks lower than this share of the digit height are not digits (dots, dashes)
STACKED = 0.5  # pieces whose columns overlap by this share of the narrower are one mark
LINE_DIGIT = 22  # a number reader sees digits about this many pixels high
LINE_PAD = 4  # and this many blank columns on either side of the ink
ONE_DIGIT_WIDE = 0.9  # a mark this narrow (share of the digit height) rarely holds two digits
DOUBT = 0.9  # ... so two digits read in it, one below this confidence, are one (_recount)
ALONE_READER_WEIGHT = 0.5  # the reader's say on a digit alone in its mark (_second_opinion)


@dataclass
class ReadDigit:
    """One digit of a number: its label, probability, box ``(x0, y0, x1, y1)`` in the
    picture's pixels (x1/y1 exclusive) and the top three ``(label, probability)``."""

    digit: str
    confidence: float
    box: tuple[int, int, int, int]
    top: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "digit": self.digit,
            "confidence": round(self.confidence, 6),
            "box": list(self.box),
            "top": [{"label": k, "probability": round(p, 6)} for k, p in self.top],
        }


@dataclass
class NumberReading:
    """What :func:`read_number` read: ``text`` (empty when nothing was read, with ``reason``
    saying why), the digits left to right, and ``confidence``, the product of the digits'
    probabilities (the chance that every digit is right, when the model is calibrated)."""

    text: str
    confidence: float
    digits: list[ReadDigit] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "confidence": round(self.confidence, 6),
            "digits": [d.to_dict() for d in self.digits],
            "reason": self.reason,
        }


def _nothing(reason: str) -> NumberReading:
    return NumberReading("", 0.0, [], reason)


def _ink(grey: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Ink strength (paper 0) of a grey picture and its threshold, or None when blank."""
    g = grey.astype(np.float32)
    median = float(np.median(g))
    low, high = float(g.min()), float(g.max())
    if median - low > high - median:  # dark ink on light paper: make the ink bright
        g = 255.0 - g
    h, w = g.shape
    # The paper: a quadratic surface fitted to the darker half of the pixels (ink is a small
    # share of a picture of a number), refitted once without the pixels far above it.
    step = max(1, int(math.sqrt(h * w / 20000)))
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    values = g[::step, ::step].ravel()
    yn, xn = ys.ravel() / max(h - 1, 1) - 0.5, xs.ravel() / max(w - 1, 1) - 0.5
    basis = np.stack([np.ones_like(xn), xn, yn, xn * xn, yn * yn, xn * yn], axis=1)
    keep = values <= np.percentile(values, 50)
    coef = np.zeros(6)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(basis[keep], values[keep], rcond=None)
        residual = values - basis @ coef
        spread = float(np.std(residual[keep])) + 1e-3
        keep = residual < 2.5 * spread
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h - 1, 1) - 0.5, xx / max(w - 1, 1) - 0.5
    paper = (coef[0] + coef[1] * xx + coef[2] * yy + coef[3] * xx * xx + coef[4] * yy * yy
             + coef[5] * xx * yy)  # fmt: skip
    ink = np.clip(g - paper, 0, None)
    peak = float(np.percentile(ink, 99.9))
    if peak < MIN_CONTRAST:
        return None
    ink = np.clip(ink / peak, 0.0, 1.0)
    return ink, max(_otsu(ink), 0.2)


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1] (256 bins)."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    total = weight[-1]
    mean = np.cumsum(hist * centres)
    between = (mean[-1] * weight / total - mean) ** 2 / np.maximum(weight * (total - weight), 1)
    return float(centres[int(np.argmax(between))])


def _marks(mask: np.ndarray) -> tuple[np.ndarray, list[list[int]], list[tuple[int, ...]]]:
    """Connected pieces (specks dropped) grouped into marks: (labels, groups, piece boxes)."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        return labels, [], []
    areas = np.bincount(labels.ravel())[1:]
    slices = ndimage.find_objects(labels)
    pieces = [i for i in range(count) if areas[i] >= SPECK * areas.max()]
    boxes = {i: (slices[i][1].start, slices[i][0].start, slices[i][1].stop, slices[i][0].stop)
             for i in pieces}  # fmt: skip
    pieces.sort(key=lambda i: boxes[i][0])
    groups: list[list[int]] = []
    spans: list[list[int]] = []
    for i in pieces:
        x0, _, x1, _ = boxes[i]
        for group, span in zip(groups, spans, strict=True):
            overlap = min(x1, span[1]) - max(x0, span[0])
            if overlap > STACKED * min(x1 - x0, span[1] - span[0]):
                group.append(i)
                span[0], span[1] = min(span[0], x0), max(span[1], x1)
                break
        else:
            groups.append([i])
            spans.append([x0, x1])
    order = sorted(range(len(groups)), key=lambda k: spans[k][0])
    return labels, [groups[k] for k in order], [boxes[i] for i in range(count) if i in boxes]


@dataclass
class _Line:
    """The ink of a picture's number: ink strength (paper 0), the marks (boolean masks), the
    digit height in pixels and the factor the picture was reduced by."""

    ink: np.ndarray
    marks: list[np.ndarray]
    height: float
    scale: float


def _find_line(grey: np.ndarray, max_digits: int) -> _Line | NumberReading:
    """Steps 1-2 of the module's docstring; a :class:`NumberReading` with a reason when the
    picture holds nothing to read."""
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 1:
        raise InputError(f"expected a 2-D grey picture; got shape {g.shape}", code="bad_shape")
    if not np.isfinite(g).all():
        raise InputError("the picture holds NaN or infinite values", code="not_finite")
    scale = 1.0
    if max(g.shape) > WORKING_SIDE:
        from PIL import Image

        scale = WORKING_SIDE / max(g.shape)
        size = (max(1, round(g.shape[1] * scale)), max(1, round(g.shape[0] * scale)))
        g = np.asarray(Image.fromarray(g).resize(size, Image.Resampling.BOX))
    if min(g.shape) < 4:
        return _nothing("the picture is too small to hold a number")
    found = _ink(g)
    if found is None:
        return _nothing("no ink: the picture is blank")
    ink, threshold = found
    labels, groups, _ = _marks(ink > threshold)
    if not groups:
        return _nothing("no ink: the picture is blank")
    masks = [np.isin(labels, [i + 1 for i in group]) for group in groups]
    heights = []
    for mask in masks:
        rows = np.flatnonzero(mask.any(axis=1))
        heights.append(rows[-1] - rows[0] + 1)
    height = float(np.median(heights))
    tall = max(heights)
    if height < 0.5 * tall:  # mostly small marks: measure the line by its tall ones
        height = float(np.median([h for h in heights if h >= 0.5 * tall]))
    marks = [m for m, h in zip(masks, heights, strict=True) if h >= MIN_HEIGHT * height]
    if not marks or height < 4:
        return _nothing("no digits: the marks are too small to be digits")
    if len(marks) > max_digits:
        return _nothing(f"{len(marks)} separate marks: more than a number of {max_digits} digits")
    return _Line(ink, marks, height, scale)


@dataclass
class NumberLine:
    """A number's ink as a number reader sees it: ``pixels`` float32 ``(LINE_HEIGHT, W)`` in
    [0, 1], ink bright, the digits about ``LINE_DIGIT`` pixels high, and the mapping back to
    the picture: x = ``(column - LINE_PAD) / factor + x0`` and y = ``row / factor + y0`` (in
    the picture reduced by ``line.scale`` when it was larger than ``WORKING_SIDE``)."""

    pixels: np.ndarray
    x0: float
    y0: float
    factor: float
    line: _Line


def _line_pixels(line: _Line) -> NumberLine:
    from PIL import Image

    from mnistlab.models.reader import LINE_HEIGHT

    keep = ndimage.binary_dilation(np.logical_or.reduce(line.marks), iterations=1)
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = np.where(keep[y0:y1, x0:x1], line.ink[y0:y1, x0:x1], 0.0).astype(np.float32)
    factor = min(LINE_DIGIT / line.height, (LINE_HEIGHT - 2) / (y1 - y0))
    w, h = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
    small = np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.BILINEAR))
    pixels = np.zeros((LINE_HEIGHT, w + 2 * LINE_PAD), dtype=np.float32)
    top = (LINE_HEIGHT - h) // 2
    pixels[top : top + h, LINE_PAD : LINE_PAD + w] = np.clip(small, 0.0, 1.0)
    return NumberLine(pixels, float(x0), y0 - top / factor, factor, line)


def number_line(grey: np.ndarray, *, max_digits: int = MAX_DIGITS) -> NumberLine | None:
    """The line of ink a number reader (:class:`~mnistlab.models.reader.NumberReader`) reads
    from a picture (``(H, W)`` grey levels, dark ink on light paper or the reverse): found as
    :func:`read_number` finds it, cropped, and scaled so that digits are about ``LINE_DIGIT``
    pixels high. None when the picture holds nothing to read. Training pictures go through
    this same function, so the reader sees at training what it sees at reading."""
    line = _find_line(grey, max_digits)
    return None if isinstance(line, NumberReading) else _line_pixels(line)


def _read_line(line: _Line, reader: Any, digits: int | None = None) -> list[ReadDigit]:
    """Read a line with a number reader (exactly ``digits`` digits when given): each digit
    with the box of its ink (:func:`_digit_ink`)."""
    import torch

    from mnistlab.models.reader import FRAME_PX, consensus, stretched

    seen = _line_pixels(line)
    with torch.inference_mode():  # (frames, outputs) for the line as it is and stretched
        views = [reader(x)[0] for x in stretched(seen.pixels, getattr(reader, "stretches", None))]
    found = consensus(views, digits)

    def centres_of(found: list) -> list[float]:  # in the picture's columns
        return [((d.start + d.stop) * FRAME_PX / 2 - LINE_PAD) / seen.factor + seen.x0
                for d in found]  # fmt: skip

    spans = [(int(cols[0]), int(cols[-1]) + 1)
             for cols in (np.flatnonzero(mark.any(axis=0)) for mark in line.marks)]  # fmt: skip
    if digits is None and found:
        count = _recount(found, _by_mark(centres_of(found), spans), spans, line.height)
        if count != len(found):
            found = consensus(views, count) or found
    boxes, crops, alone = _digit_ink(line, centres_of(found), spans)
    probabilities = [d.probabilities for d in found]
    if getattr(reader, "classifier", None) is not None and found:
        probabilities = _second_opinion(probabilities, crops, reader.classifier, alone)
    digits = []
    for d, box, p in zip(found, boxes, probabilities, strict=True):
        order = np.argsort(p)[::-1][:3]
        best = int(order[0])
        # the reader's own confidence, unless a second opinion changed its mind or its odds
        confidence = d.confidence if best == d.digit and p is d.probabilities else float(p[best])
        digits.append(ReadDigit(str(best), confidence,
                                tuple(round(v / line.scale) for v in box),  # type: ignore[arg-type]
                                [(str(k), float(p[k])) for k in order]))  # fmt: skip
    return digits


def _digit_ink(
    line: _Line, centres: list[float], spans: list[tuple[int, int]]
) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray | None], list[bool]]:
    """Each read digit's ink: its box in the picture (before ``line.scale``), the ink inside
    it (None when there is none) and whether it is the only digit read in its mark.

    A digit's strip runs from halfway to the digit before to halfway to the next (CTC marks
    a digit at a frame or two near its middle, not over its whole width). A digit alone in
    its mark owns the whole mark, whatever the strips say: a narrow 1 between wide digits
    would otherwise get slivers of its neighbours, and a wide digit lose its edge to the
    strip of a narrow one. Digits that share a mark (touching) share it along the path of
    least ink near the middle between them (it slips between touching strokes). A
    mark no digit was read in (a loose piece of a broken digit) goes with the digit whose
    strip holds its middle; no other mark's ink is a digit's. A digit read between marks
    gets its strip of all ink.
    """
    ink = np.logical_or.reduce(line.marks)
    h, w = ink.shape
    middles = [(a + b) / 2 for a, b in itertools.pairwise(centres)]
    edges = [0.0, *middles, float(w)]
    owned: dict[int, list[int]] = {k: [] for k in range(len(centres))}  # marks, by digit
    shared: set[int] = set()  # digits that share a mark with another
    loose: dict[int, list[int]] = {}  # marks no digit was read in, by the digit whose strip
    for m, inside in enumerate(_by_mark(centres, spans)):  # holds their middle
        for k in inside:
            owned[k].append(m)
        if len(inside) > 1:
            shared.update(inside)
        elif not inside and centres:
            k = int(np.searchsorted(middles, (spans[m][0] + spans[m][1]) / 2))
            loose.setdefault(k, []).append(m)
    reach = max(1, round(SEAM_REACH * line.height))
    cuts = []  # between digits j and j + 1: a column per row
    for j, middle in enumerate(middles):
        common = sorted(set(owned[j]) & set(owned[j + 1]))
        if common:  # touching digits: the path of least ink near the middle
            masked = np.where(line.marks[common[0]], line.ink, 0.0)
            cuts.append(least_ink_path(masked, round(middle), reach)[0])
        else:
            cuts.append(np.full(h, math.ceil(middle)))
    columns = np.arange(w)[None, :]
    boxes, crops = [], []
    for k in range(len(centres)):
        x0 = int(np.clip(math.floor(edges[k]), 0, w - 1))
        x1 = int(np.clip(math.ceil(edges[k + 1]), x0 + 1, w))
        # its marks (all ink if it was read between marks), cut where shared
        mine = np.logical_or.reduce([line.marks[m] for m in owned[k]]) if owned[k] else ink
        if k in shared or not owned[k]:
            left = cuts[k - 1] if k else np.zeros(h, int)
            right = cuts[k] if k < len(cuts) else np.full(h, w)
            mine = mine & (columns >= left[:, None]) & (columns < right[:, None])
        for m in loose.get(k, []):  # a loose piece (a 5's bar, a broken 4's stroke)
            mine = mine | line.marks[m]
        rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
        if not len(rows):
            boxes.append((x0, 0, x1, h))
            crops.append(None)
            continue
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        boxes.append((x0, y0, x1, y1))
        crops.append(np.where(mine[y0:y1, x0:x1], line.ink[y0:y1, x0:x1], 0.0))
    return boxes, crops, [bool(owned[k]) and k not in shared for k in range(len(centres))]


def _by_mark(centres: list[float], spans: list[tuple[int, int]]) -> list[list[int]]:
    """For each mark (its columns ``[a, b)``), the indices of the digits read with their centre
    (a picture column) inside it."""
    return [[k for k, c in enumerate(centres) if a <= c < b] for a, b in spans]


def _recount(
    found: list, groups: list[list[int]], spans: list[tuple[int, int]], height: float
) -> int:
    """How many digits a line holds: the reader's (``found``; ``groups`` of them per mark, of
    :func:`_by_mark`), less one per mark no wider than :data:`ONE_DIGIT_WIDE` digit ``height``
    where it read two or more, one below :data:`DOUBT` (a broken stroke read as a digit of its
    own: a 0 as "10"). Chosen on a hold-out (docs/benchmarks.md, "Reading whole numbers")."""
    count = len(found)
    for inside, (a, b) in zip(groups, spans, strict=True):
        if (len(inside) >= 2 and b - a <= ONE_DIGIT_WIDE * height
                and min(found[k].confidence for k in inside) < DOUBT):  # fmt: skip
            count -= 1
    return max(count, 1)


def _second_opinion(
    probabilities: list[np.ndarray],
    crops: list[np.ndarray | None],
    classifier: Any,
    alone: list[bool],
) -> list[np.ndarray]:
    """The reader's probabilities for each digit times a digit classifier's on that digit's
    strip of ink in MNIST form (a product of experts, renormalized). The reader knows how
    many digits there are and where; a classifier trained on far more single digits knows
    their shapes better, when it sees a digit whole: for a digit ``alone`` in its mark (no
    neighbour's ink in its strip) the reader's probabilities count with the weight
    :data:`ALONE_READER_WEIGHT` (its peaked odds would otherwise outvote the classifier's).
    A strip without ink keeps the reader's probabilities."""
    keep = [i for i, c in enumerate(crops) if c is not None]
    if not keep:
        return probabilities
    images = []
    for i in keep:
        try:
            images.append(to_mnist(np.asarray(crops[i], dtype=np.float32) * 255.0))
        except InputError:  # too faint to be a digit on its own: no second opinion
            images.append(None)
    ready = [(i, im) for i, im in zip(keep, images, strict=True) if im is not None]
    if not ready:
        return probabilities
    second = classifier.probabilities(np.stack([im for _, im in ready]))
    out = list(probabilities)
    for (i, _), q in zip(ready, second, strict=True):
        weight = ALONE_READER_WEIGHT if alone[i] else 1.0
        joint = np.asarray(probabilities[i], dtype=np.float64) ** weight * np.asarray(q, np.float64)
        out[i] = joint / joint.sum() if joint.sum() > 0 else probabilities[i]
    return out


def read_number(
    grey: np.ndarray, model: Any, *, max_digits: int = MAX_DIGITS, digits: int | None = None
) -> NumberReading:
    """Read the handwritten number in a picture.

    Args:
        grey: ``(H, W)`` grey levels in [0, 255], dark ink on light paper or the reverse.
        model: a digit classifier with ``probabilities(uint8 (N, 28, 28))`` and
            ``class_names`` (a :class:`~mnistlab.shipping.model.ShippedModel`): the digits are
            cut apart by recognition; or a number reader
            (:class:`~mnistlab.models.reader.NumberReader`, of ``mnistlab train-reader``),
            which reads the whole line at once.
        max_digits: more digit-like marks than this: not a number (an empty reading).
        digits: the number's length when it is known (a postcode, a form's field): a number
            reader then reads the most likely string of exactly that many digits, which
            mends a digit read twice or missed. Needs a number reader.

    Returns:
        A :class:`NumberReading`; ``text`` is empty with a ``reason`` when the picture is
        blank or holds no digit-sized marks.

    Raises:
        InputError: not a 2-D picture, or NaN/infinite values; ``digits`` outside [1,
            ``max_digits``] or given with a digit classifier.
    """
    check_digits(digits, model, max_digits)
    line = _find_line(grey, max_digits)
    if isinstance(line, NumberReading):
        return line
    found: list[ReadDigit] = []
    if getattr(model, "reads_lines", False):
        found = _read_line(line, model, digits)
        if not found and digits is not None:
            return _nothing(f"no reading of exactly {digits} digits: the line is too short")
    else:
        names = model.class_names
        for mark in line.marks:
            for box, p in cut_mark(line.ink, mark, line.height, model):
                order = np.argsort(p)[::-1][:3]
                box = tuple(round(v / line.scale) for v in box)
                found.append(ReadDigit(str(names[order[0]]), float(p[order[0]]), box,  # type: ignore[arg-type]
                                       [(str(names[k]), float(p[k])) for k in order]))  # fmt: skip
    if not found:
        return _nothing("no digits: nothing the model reads as a digit")
    if len(found) > max_digits:
        return _nothing(f"{len(found)} digits: more than the limit of {max_digits}")
    confidence = float(np.prod([d.confidence for d in found]))
    return NumberReading("".join(d.digit for d in found), confidence, found)


def check_digits(digits: int | None, model: Any, max_digits: int = MAX_DIGITS) -> None:
    """Check a number's known length (:func:`read_number`'s ``digits``) before any reading.

    Raises:
        InputError: not a whole number in [1, ``max_digits``], or ``model`` is a digit
            classifier (only a number reader reads a given number of digits).
    """
    if digits is None:
        return
    if isinstance(digits, bool) or not isinstance(digits, int | np.integer):
        raise InputError(f"digits must be a whole number; got {digits!r}", code="bad_digits")
    if not 1 <= digits <= max_digits:
        raise InputError(f"digits must be in [1, {max_digits}]; got {digits}",
                         code="bad_digits")  # fmt: skip
    if not getattr(model, "reads_lines", False):
        raise InputError(
            "a number's known length (digits) needs a number reader, not a digit classifier",
            hint="read with pretrained:number-reader or a run of `mnistlab train-reader`",
            code="digits_need_reader",
        )


@dataclass
class LineReader:
    """A number reader ready to read (:func:`load_number_model`): the net, a display name,
    the backend, and the CPU threads each call uses (None: the runtime's default)."""

    net: Any
    name: str
    manifest: dict[str, Any]
    threads: int | None = None
    backend: str = "torch"
    reads_lines: bool = True
    classifier: Any = None  # a digit classifier that re-reads each digit found (or None)
    stretches: tuple[float, ...] | None = None  # the line's views (None: reader.STRETCHES)

    def __call__(self, pixels: Any) -> Any:
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.net(pixels)
        finally:
            torch.set_num_threads(before)


def load_number_model(
    path: str | os.PathLike[str],
    *,
    threads: int | None = None,
    classifier: Any = None,
) -> Any:
    """What :func:`read_number` reads with, from a run folder, a model file or a shipped
    model's name (``pretrained:number-reader``): a :class:`LineReader` for a number reader
    (``mnistlab train-reader``), else the digit classifier
    (:func:`mnistlab.shipping.load_model`: any model ``mnistlab predict`` takes).

    ``classifier`` (a digit classifier: its path or name, e.g. ``pretrained:handwriting``, or
    one already loaded) gives a number reader a second opinion: each digit it finds is also
    read, in MNIST form, by the classifier, and the two probabilities are multiplied; the
    reader's name says so.

    Raises:
        MnistlabError: no model there, or one that is neither.
    """
    from mnistlab.models import files
    from mnistlab.models.hub import PREFIX, resolve_pretrained
    from mnistlab.shipping.model import load_model

    if os.fspath(path).startswith(PREFIX):  # a shipped model: `mnistlab models list`
        path = resolve_pretrained(path)
    try:
        manifest, _ = files.read_manifest(files.adapter_or_path(path))
    except MnistlabError:
        return load_model(path, threads=threads)  # its own message for what is not a model
    if manifest.get("format") != files.READER_FORMAT:
        return load_model(path, threads=threads)
    from mnistlab.models.reader import load_reader

    net, manifest = load_reader(path)
    name = Path(path).parent.name if Path(path).name == "model" else Path(path).name
    second = classifier
    if isinstance(classifier, str | os.PathLike):
        second = load_model(classifier, threads=threads)
    title = f"number reader ({name})"
    if second is not None:
        title += f" + {getattr(second, 'name', classifier)}"
    return LineReader(net, title, manifest, threads, classifier=second)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions that turn
    ``a`` into ``b`` (a number read with a digit missing is 1 away, not all wrong)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def read_number_file(
    data: bytes, model: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS, digits: int | None = None
) -> NumberReading:
    """Read the number in a picture's bytes (PNG, JPEG, BMP, GIF, WebP); ``digits``: its
    length when known (:func:`read_number`).

    Raises:
        InputError: not an image (415), too many pixels (413), corrupt (422), empty (400), a
            bad ``digits`` (422).
    """
    check_digits(digits, model, MAX_DIGITS)  # before the picture is decoded
    return read_number(decode_image(data, max_pixels=max_pixels), model, digits=digits)
