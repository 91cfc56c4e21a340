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
    as one PNG grid; returns ``path``."""
    plt = pyplot()
    arrays = []
    for row in rows:
        a = row.detach().float().cpu().numpy() if isinstance(row, torch.Tensor) else np.asarray(row)
        a = a.reshape(a.shape[0], a.shape[-2], a.shape[-1])
        arrays.append(a / 255.0 if a.max(initial=0) > 1.5 else a)
    ncols = max(len(a) for a in arrays)
    nrows = len(arrays)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(0.62 * ncols + 0.6, 0.62 * nrows + 0.4), squeeze=False
    )
    for r, a in enumerate(arrays):
        for c in range(ncols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(a):
                ax.imshow(a[c], cmap="gray", vmin=0, vmax=1)
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, left=0.12 if row_titles else 0.02, right=0.98)
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
