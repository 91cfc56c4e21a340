"""Matplotlib set-up shared by every stage that draws figures (explore, reports, training)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnistlab.io import atomic_write_bytes

DPI = 110


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend: files only, no display needed (servers, CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = DPI) -> Path:
    """Render ``fig`` as PNG, write it to ``path`` atomically, close the figure; returns path."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def figure_with_axes(
    size: tuple[float, float],
    *,
    left: float = 0.0,
    right: float = 0.0,
    bottom: float = 0.0,
    top: float = 0.0,
) -> tuple[Any, Any]:
    """A figure holding one axes of ``size`` (width, height) inches with fixed margins around
    it, in inches: a layout computed up front (see :func:`text_width`) instead of by
    ``tight_layout``, which draws the whole figure once to measure it.

    Returns:
        ``(figure, axes)``.
    """
    width, height = size[0] + left + right, size[1] + bottom + top
    fig = pyplot().figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, size[0] / width, size[1] / height))
    return fig, ax


def text_width(texts: Sequence[str], size: float) -> float:
    """The width in inches of the widest of ``texts`` set in the default font at ``size``
    points: what a fixed layout leaves room for, measured from the glyphs' outlines without
    rendering (``tight_layout`` draws the whole figure once to measure it). 6 % is added:
    rendered at 100-150 dpi, hinting rounds each glyph's advance up to whole pixels."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    font, measure = FontProperties(size=size), TextToPath()
    widths = [measure.get_text_width_height_descent(t, font, ismath=False)[0] for t in texts]
    return 1.06 * max(widths, default=0.0) / 72.0


def image_mosaic(
    images: Sequence[Any],
    captions: Sequence[str],
    *,
    cols: int,
    cell: tuple[float, float],
    side: float,
    title: str,
    notes: Sequence[str] | None = None,
    value_range: tuple[float, float] | None = (0.0, 255.0),
    cmap: str = "gray_r",
    caption_style: dict[str, Any] | None = None,
    title_size: float = 10,
) -> Any:
    """A grid of small images with a caption above each (and a note below), as one figure.

    The images are placed on one canvas drawn by one ``imshow`` in one axes whose units are
    inches: a grid of one axes per image, laid out by ``tight_layout``, took ~1.4 s for 36
    digits on a 2-core CPU, this ~0.3 s (``benchmarks/report_benchmark.py``).

    Args:
        images: 2-D arrays (``(H, W)``, all the same size), in reading order.
        captions: one per image, drawn above it.
        cols: images per row.
        cell: ``(width, height)`` of each image's cell, in inches.
        side: the longer side of each image, in inches.
        title: the figure's title, above the grid.
        notes: one per image, drawn small and grey below it (e.g. its index).
        value_range: the values drawn as the colormap's two ends; None: each image on its
            own range (its minimum to its maximum).
        cmap: a matplotlib colormap; cells around the images stay white.
        caption_style: ``ax.text`` keywords of the captions (default: font size 8).

    Returns:
        The matplotlib figure (save it with :func:`save_figure`).

    Raises:
        ValueError: an image that would not fit in its cell with its caption and note.
    """
    import numpy as np

    width, height = cell
    if not 0 < side <= min(width, height - 0.35):
        raise ValueError(f"an image of side {side} in does not fit a {width} x {height} in cell")
    plt = pyplot()
    count = len(images)
    rows = max(1, math.ceil(count / cols))
    top = 0.45  # inches above the grid, for the title
    fig, ax = figure_with_axes((cols * width, rows * height), top=top)
    ax.axis("off")
    h, w = np.asarray(images[0]).shape if count else (1, 1)
    scale = max(h, w) / side  # canvas pixels per inch
    canvas = np.full((round(rows * height * scale), round(cols * width * scale)), np.nan)
    style = {"fontsize": 8, **(caption_style or {})}
    pad = max(0.0, (height - side - 0.35) / 2)  # caption line above, note line below
    for k, image in enumerate(images):
        row, col = divmod(k, cols)
        x = col * width + (width - side * w / max(h, w)) / 2
        y = row * height + pad + 0.22
        values = np.asarray(image, dtype=np.float64)
        low, high = value_range or (float(values.min()), float(values.max()))
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        r0, c0 = round(y * scale), round(x * scale)
        canvas[r0 : r0 + h, c0 : c0 + w] = np.clip(values, 0.0, 1.0)
        centre = col * width + width / 2
        ax.text(centre, y - 0.04, captions[k], ha="center", va="bottom", **style)
        if notes is not None:
            ax.text(centre, y + side * h / max(h, w) + 0.06, notes[k], ha="center", va="top",
                    fontsize=6, color="#777777")  # fmt: skip
    colormap = plt.get_cmap(cmap).with_extremes(bad="white")
    ax.imshow(canvas, cmap=colormap, vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(0, canvas.shape[1] / scale, canvas.shape[0] / scale, 0))  # fmt: skip
    ax.set_xlim(0, cols * width)
    ax.set_ylim(rows * height, 0)
    fig.suptitle(title, fontsize=title_size, y=1 - 0.14 / (rows * height + top), va="top")
    return fig
