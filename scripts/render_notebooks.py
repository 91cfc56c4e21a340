"""Execute the notebooks of notebooks/ and render them, outputs included, to docs/notebooks/.

    python scripts/render_notebooks.py            # full size (MNIST when it is cached or a
                                                  # mirror is set, else mnist-mini)
    python scripts/render_notebooks.py --quick    # MNISTLAB_QUICK=1: the tests' small size
    python scripts/render_notebooks.py 03-cnn     # only the notebooks whose name starts so

Each notebook runs in a fresh kernel of this interpreter, in a temporary working folder, with
``MNISTLAB_HOME`` a temporary cache unless it is set (``--home`` to choose one). The result is
``docs/notebooks/<name>.md`` with its images in ``docs/notebooks/<name>_files/``. The
execution helpers here are also what ``tests/test_notebooks.py`` runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"
RENDERED = REPO_ROOT / "docs" / "notebooks"
KERNEL = "mnistlab-notebooks"


class CellError(RuntimeError):
    """A cell raised: the message names the notebook, the cell and the error."""


def kernel_manager(kernel_dir: Path) -> Any:
    """A kernel manager whose kernel is ipykernel on this interpreter (``sys.executable``),
    from a kernelspec written into ``kernel_dir``."""
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = kernel_dir / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "mnistlab", "language": "python"})
    )
    specs = KernelSpecManager(kernel_dirs=[str(kernel_dir)])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def execute(
    path: Path,
    workdir: Path,
    *,
    quick: bool,
    env: dict[str, str] | None = None,
    timeout: int = 600,
) -> tuple[Any, float]:
    """Run the notebook at ``path`` top to bottom in ``workdir`` with a fresh kernel;
    returns ``(executed notebook, seconds)``.

    Raises:
        CellError: a cell raised (with the cell's source and the error's last lines).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    variables = {**os.environ, **(env or {}), "MNISTLAB_QUICK": "1" if quick else "0"}
    variables.setdefault("OMP_NUM_THREADS", "2")
    workdir.mkdir(parents=True, exist_ok=True)
    client = NotebookClient(
        notebook,
        km=kernel_manager(workdir / ".kernels"),
        timeout=timeout,
        resources={"metadata": {"path": str(workdir)}},
    )
    started = time.perf_counter()
    try:
        client.execute(env=variables)
    except CellExecutionError as exc:
        raise CellError(f"{path.name}: {exc}") from None
    return notebook, time.perf_counter() - started


def _markdown_text(text: str) -> str:
    return "```\n" + text.rstrip("\n") + "\n```\n"


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
DATA_IMAGE = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def shrink(png: bytes, width: int = 480, colors: int = 32) -> bytes:
    """A figure made small enough to commit: at most ``width`` pixels wide and ``colors``
    colors (the rendered pages stay a few hundred KB in all). Small images stay as they are."""
    import io

    from PIL import Image

    picture = Image.open(io.BytesIO(png))
    if len(png) < 12_000:
        return png
    if picture.width > width:
        height = round(picture.height * width / picture.width)
        picture = picture.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
    picture = picture.convert("RGB").quantize(colors, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue() if buffer.tell() < len(png) else png


def render_markdown(notebook: Any, name: str, header: str, out_dir: Path) -> Path:
    """``out_dir/<name>.md``: markdown cells as they are, code in python fences, text outputs
    in plain fences, images (PNG outputs and the data URIs of HTML outputs) as files in
    ``out_dir/<name>_files/``."""
    files = out_dir / f"{name}_files"
    if files.exists():
        for old in files.iterdir():
            old.unlink()
    files.mkdir(parents=True, exist_ok=True)
    seen: dict[bytes, str] = {}

    def image(data: bytes, width: int = 480) -> str:
        if data not in seen:  # the same figure twice is one file
            seen[data] = f"{name}_files/{len(seen) + 1:02d}.png"
            (out_dir / seen[data]).write_bytes(shrink(data, width))
        return seen[data]

    def inline(match: re.Match[str]) -> str:
        return image(base64.b64decode(match.group(1)))

    parts = [header]
    text: list[str] = []  # consecutive text outputs of a cell go into one block

    def flush() -> None:
        if "".join(text).strip():
            parts.append(_markdown_text(ANSI.sub("", "".join(text))))
        text.clear()

    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source + "\n")
            continue
        parts.append("```python\n" + cell.source + "\n```\n")
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output.output_type == "stream":
                text.append(output.text)
            elif output.output_type == "error":
                text.append("\n".join(output.traceback) + "\n")
            elif "image/png" in data:
                flush()
                shown = output.get("metadata", {}).get("image/png", {}).get("width", 480)
                png = base64.b64decode(data["image/png"])
                parts.append(f"![output]({image(png, int(shown))})\n")
            elif "text/html" in data and "<pre" not in data["text/html"]:
                flush()
                html = DATA_IMAGE.sub(inline, data["text/html"])
                parts.append("<div>" + " ".join(html.split()) + "</div>\n")
            elif "text/plain" in data:
                text.append(data["text/plain"].rstrip("\n") + "\n")
        flush()
    target = out_dir / f"{name}.md"
    target.write_text("\n".join(parts), encoding="utf-8")
    if not seen:
        files.rmdir()
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebooks whose name starts with these")
    parser.add_argument("--quick", action="store_true", help="MNISTLAB_QUICK=1 (small, fast)")
    parser.add_argument("--home", help="MNISTLAB_HOME for the kernels (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=RENDERED, help="where the .md files go")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(p.stem.startswith(n) for n in args.names)]
    args.out.mkdir(parents=True, exist_ok=True)
    size = "in quick mode (MNISTLAB_QUICK=1)" if args.quick else "at full size"
    with tempfile.TemporaryDirectory() as tmp:
        env = {"MNISTLAB_HOME": args.home or os.environ.get("MNISTLAB_HOME") or f"{tmp}/home"}
        for path in paths:
            load = os.getloadavg()[0]
            notebook, seconds = execute(path, Path(tmp) / path.stem, quick=args.quick, env=env)
            header = (
                f"<!-- Rendered from notebooks/{path.name} by scripts/render_notebooks.py -->\n"
                f"*This is [notebooks/{path.name}](../../notebooks/{path.name}) executed "
                f"{size}, top to bottom in {seconds:.0f} s on a {os.cpu_count()}-core CPU "
                f"machine (load average {load:.1f} when it started).*\n"
            )
            target = render_markdown(notebook, path.stem, header, args.out)
            print(f"{path.name}: {seconds:.1f} s -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
