"""Image grids and the small self-contained HTML report of pretraining runs."""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mnistlab.evaluation.report import ReportSection, html_table
from mnistlab.io import atomic_write_bytes, atomic_write_json
from mnistlab.plotting import pyplot, save_figure


def save_image_grid(
    rows: Sequence[torch.Tensor | np.ndarray],
    path: str | os.PathLike[str],
    *,
    row_titles: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw rows of images (each ``(K, 1, H, W)`` or ``(K, H, W)``, float in [0, 1] or uint8)
    as one PNG grid (a single mosaic image: fast even for hundreds of images); returns ``path``."""
    plt = pyplot()
    arrays = []
    for row in rows:
        a = row.detach().float().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        a = a.reshape(a.shape[0], a.shape[-2], a.shape[-1]).astype(np.float32)
        arrays.append(a / 255.0 if a.max(initial=0) > 1.5 else a)
    ncols = max(len(a) for a in arrays)
    h, w = arrays[0].shape[1:]
    gap = 2
    mosaic = np.full((len(arrays) * (h + gap) + gap, ncols * (w + gap) + gap), 0.35, np.float32)
    for r, a in enumerate(arrays):
        for c, image in enumerate(a):
            top, left = gap + r * (h + gap), gap + c * (w + gap)
            mosaic[top : top + h, left : left + w] = image
    scale = 0.022  # inches per pixel
    left_margin = 0.9 if row_titles else 0.1
    top = 0.3 if title else 0.05
    fig = plt.figure(figsize=(mosaic.shape[1] * scale + left_margin, mosaic.shape[0] * scale + top))
    width, height = fig.get_figwidth(), fig.get_figheight()
    ax = fig.add_axes((left_margin / width, 0.02 / height, 1 - (left_margin + 0.05) / width,
                       1 - (top + 0.02) / height))  # fmt: skip
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    if row_titles:
        ax.set_yticks([gap + r * (h + gap) + h / 2 for r in range(len(arrays))])
        ax.set_yticklabels(list(row_titles), fontsize=8)
        ax.tick_params(length=0)
    else:
        ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def write_simple_report(
    run_dir: Path,
    report: Mapping[str, Any],
    sections: Sequence[ReportSection],
    title: str,
) -> dict[str, Any]:
    """``report.json`` and a self-contained ``report.html`` (figures inlined) for a run that has
    no test accuracy (pretraining); returns the JSON written."""
    esc = html.escape
    data = {**report, "created": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    details = html_table(
        ["key", "value"],
        [[k, v] for k, v in data.items() if not isinstance(v, (dict, list))],
    )
    parts = [f"<h1>{esc(title)}</h1>", "<h2>Run details</h2>", details]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        if section.html:
            parts.append(section.html)
        if section.figure is not None:
            uri = base64.b64encode(Path(section.figure).read_bytes()).decode()
            parts.append(
                f'<figure><img style="max-width:100%" src="data:image/png;base64,{uri}" '
                f'alt="{esc(section.title)}"><figcaption>{esc(section.caption)}</figcaption>'
                "</figure>"
            )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} | mnistlab report</title>"
        "<style>body{font-family:sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style>"
        "</head><body>" + "\n".join(parts) + "</body></html>\n"
    )
    atomic_write_bytes(run_dir / "report.html", page.encode("utf-8"))
    atomic_write_json(run_dir / "report.json", data)
    return data


def plot_history(
    history: list[dict[str, Any]], keys: list[str], path: Path, x: str = "round"
) -> Path:
    """One panel per key of ``history`` (per round) as a PNG; returns ``path``."""
    from mnistlab.plotting import pyplot, save_figure

    plt = pyplot()
    keys = [k for k in keys if any(r.get(k) is not None for r in history)]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4.2 * max(1, len(keys)), 3.2))
    axes = [axes] if len(keys) <= 1 else list(axes)
    xs = [r[x] for r in history]
    for ax, key in zip(axes, keys, strict=False):
        ax.plot(xs, [r.get(key) for r in history], marker="o")
        ax.set_xlabel(x)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
