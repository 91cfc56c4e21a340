"""Turn ordinary pictures of digits into MNIST-style 28x28 inputs, the way MNIST was made.

MNIST's digits were size-normalized to fit a 20x20 box keeping their aspect ratio (with
anti-aliasing), then put in a 28x28 field with their centre of mass at the centre. Measured on
the 60,000 training images the centre of mass sits at row 14.00 and column 14.01 (pixel centres
at integer coordinates) with a spread of 0.29, that of a uniform rounding error: the digits were
shifted by whole pixels. :func:`to_mnist` repeats those steps on a photo or a scan:

1. grey levels (alpha composited; EXIF rotation applied by :func:`decode_image`);
2. polarity: the background is the median of the border pixels, the ink is the side of the
   grey range further from it, so light-on-dark and dark-on-light both become light ink on 0;
3. contrast: background -> 0, brightest ink -> 1, a noise floor of 0.2 removed; specks smaller
   than 2 % of the largest blob are dropped;
4. crop to the ink, thicken strokes that are much thinner than MNIST's pen (measured on MNIST
   digits enlarged 10x: stroke width / digit height has a median of 0.117, a 5th percentile of
   0.072; thinner than 0.07, strokes are dilated to 0.11), fit the longer side to 20 pixels
   (Lanczos, i.e. anti-aliased);
5. paste into 28x28 so that the centre of mass lands on pixel (14, 14), rounded to whole pixels.

The command line, the HTTP API and the web page all call :func:`preprocess_image`; a 28x28
array given directly is taken as already in MNIST form and only checked by
:func:`validate_array`.
"""

from __future__ import annotations

import io
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnistlab.data.synthetic import mnist_form
from mnistlab.shipping.errors import InputError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "decode_image",
    "preprocess_image",
    "to_mnist",
    "validate_array",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
"""Image formats :func:`decode_image` opens; anything else is refused before decoding."""
DEFAULT_MAX_PIXELS = 25_000_000
"""Largest image (width x height) decoded: a 5000x5000 photo; decompression bombs are refused."""

SIDE = 28  # output field (the digit's box and centre: mnistlab.data.synthetic.mnist_form)
WORKING_SIDE = 512  # larger crops are reduced to this first (area averaging keeps thin strokes)
NOISE_FLOOR = 0.2  # ink below this fraction of the brightest ink is background
MIN_CONTRAST = 24.0  # grey levels between background and ink below this: a blank picture
SPECK = 0.02  # blobs smaller than this fraction of the largest one are dirt, not ink
STROKE_TARGET = 0.11  # stroke width / digit height that thin strokes are thickened to
STROKE_THIN = 0.07  # ... when they measure below this (MNIST: 5th percentile 0.072)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the bytes of a PNG, JPEG, BMP, GIF or WebP picture into grey levels.

    Args:
        data: the file's bytes.
        max_pixels: refuse pictures with more pixels than this (width x height) before
            decoding them, so a small file that expands to gigabytes is never unpacked.

    Returns:
        float32 ``(H, W)`` grey levels in [0, 255]: the first frame, EXIF rotation applied,
        transparency composited on white (or on black when the ink itself is white).

    Raises:
        InputError: empty bytes, not one of :data:`ALLOWED_FORMATS`, a decompression bomb or a
            picture over ``max_pixels`` (status 413), truncated or corrupt data.
    """
    if not data:
        raise InputError("the image is empty (0 bytes)", status=400, code="empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    f"the image is {width}x{height} pixels, more than the limit of {max_pixels:,}",
                    hint="scale the picture down; a digit needs no more than a few hundred pixels",
                    status=413,
                    code="too_many_pixels",
                )
            image.seek(0)
            image.load()
            image = ImageOps.exif_transpose(image)
            return _grey(image)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(
            f"the image would decompress to too many pixels ({exc})",
            status=413,
            code="too_many_pixels",
        ) from None
    except UnidentifiedImageError:
        raise InputError(
            "the data is not an image mnistlab can read",
            hint=f"send a {', '.join(ALLOWED_FORMATS)} file",
            status=415,
            code="not_an_image",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise InputError(
            f"the image is truncated or corrupt ({exc})", status=422, code="corrupt_image"
        ) from None


def _grey(image: Image.Image) -> np.ndarray:
    """Grey levels in [0, 255] of a decoded picture (see :func:`decode_image`)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        return np.clip(values * (255.0 / top), 0, 255).astype(np.float32)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    luma = rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114
    on_white = luma * alpha + 255.0 * (1 - alpha)
    if np.ptp(on_white) >= MIN_CONTRAST:
        return on_white
    return luma * alpha  # white ink on a transparent background: composite on black


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """Size-normalize and centre a picture of one digit like MNIST (see the module docstring).

    Args:
        grey: ``(H, W)`` grey levels in [0, 255] (any real dtype), dark-on-light or
            light-on-dark, any size.

    Returns:
        uint8 ``(28, 28)``: light ink on a black background, the digit fitted into 20x20 with
        its centre of mass at pixel (14, 14).

    Raises:
        InputError: not a 2-D picture, NaN or infinite values, or no ink (a blank picture).
    """
    g = np.asarray(grey, dtype=np.float32)
    if g.ndim != 2 or min(g.shape) < 1:
        raise InputError(f"expected a 2-D grey picture; got shape {g.shape}", code="bad_shape")
    if not np.isfinite(g).all():
        raise InputError("the picture holds NaN or infinite values", code="not_finite")
    g = _reduce(g, WORKING_SIDE)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    background = float(np.median(border))
    low, high = float(g.min()), float(g.max())
    if background - low > high - background:  # dark ink on a light background
        g = 255.0 - g
        background, high = 255.0 - background, 255.0 - low
    if high - background < MIN_CONTRAST:
        raise InputError(
            "no digit found: the picture is blank (no ink stands out from the background)",
            hint="write the digit darker or lighter than the paper, and fill more of the frame",
            code="blank_image",
        )
    ink = np.clip((g - background) / (high - background), 0.0, 1.0)
    ink = np.clip((ink - NOISE_FLOOR) / (1 - NOISE_FLOOR), 0.0, 1.0)
    ink = _drop_specks(ink)
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    out = mnist_form(_thicken(ink))
    if not out.any():  # cannot happen after the contrast check, but never divide by zero
        raise InputError("no digit found: the picture is blank", code="blank_image")
    return out


def _reduce(g: np.ndarray, side: int) -> np.ndarray:
    """Shrink ``g`` by area averaging so its longer side is at most ``side``."""
    height, width = g.shape
    if max(height, width) <= side:
        return g
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(g.astype(np.float32)).resize(size, Image.Resampling.BOX))


def _drop_specks(ink: np.ndarray) -> np.ndarray:
    """Zero the blobs of ink smaller than :data:`SPECK` of the largest blob's area."""
    labels, count = ndimage.label(ink > 0, structure=np.ones((3, 3)))
    if count <= 1:
        return ink
    areas = np.bincount(labels.ravel())[1:]
    keep = np.concatenate([[False], areas >= SPECK * areas.max()])
    return np.where(keep[labels], ink, 0.0).astype(np.float32)


def _thicken(ink: np.ndarray) -> np.ndarray:
    """Dilate strokes that are much thinner, relative to the digit, than MNIST's pen."""
    # Measured on a copy at most 64 px high: the same distribution on MNIST (median 0.116,
    # 5th percentile 0.072) for a fraction of the time.
    small = _reduce(ink, 64)
    mask = small > 0.5 * small.max()  # a thin pen fades when reduced: threshold on its peak
    area = int(mask.sum())
    if area == 0:
        return ink
    edge = int((mask & ~ndimage.binary_erosion(mask)).sum())
    relative = 2.0 * area / max(edge, 1) / max(small.shape)  # width w, length L: area wL, edge 2L
    if relative >= STROKE_THIN:
        return ink
    height = max(ink.shape)
    stroke = relative * height
    grow = math.ceil(STROKE_TARGET * height - stroke)
    pad = grow // 2 + 1
    padded = np.pad(ink, pad)
    return ndimage.grey_dilation(padded, size=(grow + 1, grow + 1)).astype(np.float32)


def preprocess_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Bytes of a picture of a digit -> uint8 ``(28, 28)`` in MNIST form.

    :func:`decode_image` then :func:`to_mnist`; raises their :class:`InputError`.
    """
    return to_mnist(decode_image(data, max_pixels=max_pixels))


def validate_array(
    values: Any, *, name: str = "image", numbers_checked: bool = False
) -> np.ndarray:
    """Check a 28x28 array of pixel values given directly (e.g. in JSON) and convert it.

    Args:
        values: nested lists or an array, 28 rows of 28 numbers, already in MNIST form (light
            ink on 0). Each value is rounded to the nearest integer (halves to even, as numpy
            rounds) and the rounded value must lie in [0, 255]: ``-0.4`` and ``255.4`` are
            taken as 0 and 255, ``-0.6`` and ``255.6`` are refused. Booleans, ``None`` (JSON
            ``null``), strings and objects are not numbers.
        name: what to call the array in error messages.
        numbers_checked: the caller has made sure that every value in ``values`` is a list or
            a Python int or float (the API knows it when the JSON text it parsed holds no
            string but its keys and no ``true``, ``false`` or ``null``); skips the per-value
            type check (~30 µs of a served request).

    Returns:
        uint8 ``(28, 28)``.

    Raises:
        InputError: ``bad_value`` (a pixel that is not a number), ``bad_shape`` (ragged or not
            28x28), ``not_finite`` (NaN or infinite), ``out_of_range`` (outside [0, 255] once
            rounded).
    """
    if isinstance(values, np.ndarray):
        array = values
    else:
        if not isinstance(values, Sequence) or isinstance(values, (str, bytes)):
            raise InputError(
                f"{name} must be a 28x28 array of numbers; got {type(values).__name__}",
                code="bad_shape",
            )
        if not numbers_checked and not _plain_numbers(values):
            _check_numbers(values, name)  # finds the offending value and says what it is
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                array = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64, e.g. 10**400
            raise InputError(
                f"{name} values must lie in [0, 255]; got a number too large for a float",
                code="out_of_range",
            ) from None
        except (ValueError, TypeError, np.exceptions.VisibleDeprecationWarning):
            raise InputError(
                f"{name} must be a 28x28 array of numbers (rows of equal length)",
                hint="send 28 rows of 28 pixel values, 0 = background, 255 = ink",
                code="bad_shape",
            ) from None
    if array.shape != (SIDE, SIDE):
        raise InputError(
            f"{name} must have shape (28, 28); got {tuple(array.shape)}",
            hint="send 28 rows of 28 pixel values, 0 = background, 255 = ink",
            code="bad_shape",
        )
    if array.dtype.kind not in "iuf":
        raise InputError(f"{name} must hold numbers; got dtype {array.dtype}", code="bad_value")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError(f"{name} holds NaN or infinite values", code="not_finite")
    rounded = np.round(array)
    if rounded.min() < 0 or rounded.max() > 255:
        raise InputError(
            f"{name} values must lie in [0, 255] once rounded; got [{array.min():g}, "
            f"{array.max():g}]",
            code="out_of_range",
        )
    return rounded.astype(np.uint8)


def _plain_numbers(rows: Sequence[Any]) -> bool:
    """Whether every row is a sequence of Python ints and floats (JSON numbers: the common
    case), by a set of the values' types built at C speed: ~10 µs for 28x28 where
    :func:`_check_numbers`'s per-value checks took ~200 µs, most of a served request's time
    (docs/benchmarks.md, "Serving latency"). ``bool`` is its own type, so ``true`` fails."""
    try:
        return {type(v) for row in rows for v in row} <= _PLAIN_NUMBERS
    except TypeError:  # a row that is not iterable: the slow check reports it
        return False


_PLAIN_NUMBERS = frozenset((int, float))


def _check_numbers(rows: Sequence[Any], name: str) -> None:
    """Refuse pixels that are not numbers: JSON ``true``/``false`` (which numpy would take as
    1 and 0), ``null`` (which numpy would take as NaN), strings and objects. Lists inside rows
    are left to the shape check."""
    for i, row in enumerate(rows):
        if not isinstance(row, Sequence) or isinstance(row, (str, bytes)):
            continue
        for j, value in enumerate(row):
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (numbers.Real, list, tuple, np.ndarray)
            ):
                if value is None:
                    what = "null"
                elif isinstance(value, (bool, np.bool_)):
                    what = "true" if value else "false"
                else:
                    what = {dict: "an object", str: "a string"}.get(type(value), "not a number")
                raise InputError(
                    f"{name}[{i}][{j}] is {what}; pixels are numbers",
                    hint="pixels are numbers from 0 to 255 (not booleans, null or strings)",
                    code="bad_value",
                )
