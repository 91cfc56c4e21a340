"""Matplotlib set-up shared by every stage that draws figures (explore, reports, training)."""

from __future__ import annotations

import io
import os
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
