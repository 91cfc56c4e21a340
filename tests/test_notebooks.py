"""The notebooks of notebooks/ run top to bottom (quick mode, a kernel of this interpreter, a
temporary cache and working folder), are stored without outputs and use only the public API;
the inline views (``_repr_html_``) of runs, reports and dataset splits stay small and escape
their text."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mnistlab
from mnistlab.training.runtime import cpus_available

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
EXAMPLE_RUN = REPO_ROOT / "docs" / "example-run"
MAX_HTML = 300_000  # bytes of one inline view

# `from mnistlab.x import _y`, `from mnistlab._x import y`, `mnistlab._x`, `mnistlab.x._y`
PRIVATE = re.compile(
    r"from\s+mnistlab(?:\.\w+)*\s+import\s+\(?[^\n]*\b_\w+"
    r"|\bmnistlab(?:\.\w+)*\._\w+"
)


def _render_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "render_notebooks", REPO_ROOT / "scripts" / "render_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(path: Path) -> list[dict[str, Any]]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [c for c in cells if c["cell_type"] == "code"]


def _source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def test_there_is_one_notebook_per_stage() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert names == [
        "01-data", "02-classic", "03-cnn", "04-pretraining", "05-evaluation", "06-shipping",
    ]  # fmt: skip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_stored_notebook_is_clean_and_public(path: Path) -> None:
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name}: stored outputs in {cell.source[:60]!r}"
        assert cell.execution_count is None, f"{path.name}: an execution count is stored"
        found = PRIVATE.findall(cell.source)
        assert not found, f"{path.name}: a private name is used: {found}"
    quick = [c for c in _code_cells(path) if "MNISTLAB_QUICK" in _source(c)]
    assert len(quick) == 1, f"{path.name}: one parameter cell reads MNISTLAB_QUICK"


def test_the_private_name_pattern() -> None:
    for bad in ("from mnistlab.data.load import _read", "from mnistlab._lazy import x",
                "mnistlab._lazy.lazy_exports", "x = mnistlab.runs._history(p)",
                "from mnistlab.runs import open_run, _shown"):  # fmt: skip
        assert PRIVATE.search(bad), bad
    for good in ("from mnistlab.runs import open_run", "mnistlab.load_dataset('mnist')",
                 "run._repr_html_()", "from mnistlab.training import train_model"):  # fmt: skip
        assert not PRIVATE.search(good), good


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_notebook_runs_in_quick_mode(path: Path, tmp_path: Path) -> None:
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    render = _render_module()
    threads = os.environ.get("OMP_NUM_THREADS", str(int(cpus_available())))  # this worker's
    env = {"MNISTLAB_HOME": str(tmp_path / "home"), "MNISTLAB_RUNS": str(tmp_path / "runs"),
           "OMP_NUM_THREADS": threads}  # fmt: skip
    try:
        notebook, seconds = render.execute(path, tmp_path / "work", quick=True, env=env)
    except render.CellError as error:
        pytest.fail(str(error), pytrace=False)
    assert seconds < 120, f"{path.name} took {seconds:.0f} s in quick mode"
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    text = json.dumps(outputs)
    assert "ipywidgets" not in text, "a progress bar asked for ipywidgets"
    assert len(text) < 2_000_000, f"{path.name}: {len(text):,} bytes of outputs"
    for cell in notebook.cells:  # a progress bar is one output, not a line per update
        assert len(cell.get("outputs", [])) < 40, _source(cell)[:80]
    if path.stem == "03-cnn":  # two trainings with progress: one bar each, updated to the end
        bars = [
            re.search(r"value='(\d+)' max='(\d+)'", o["data"]["text/html"])
            for o in outputs
            if "<progress" in o.get("data", {}).get("text/html", "")
        ]
        assert len(bars) == 2 and all(b and b[1] == b[2] for b in bars), bars


def _html_images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"base64,([A-Za-z0-9+/=]+)", html)]


def test_a_large_split_shows_a_bounded_grid_and_its_counts() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(60_000, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 6000)
    split = mnistlab.DatasetSplit(images, labels, "<b>big</b>", "train", tuple("0123456789"))
    html = split._repr_html_()
    assert len(html) < MAX_HTML
    assert "&lt;b&gt;big&lt;/b&gt;" in html and "<b>big</b>" not in html
    assert "60,000 images" in html and html.count(">6,000<") == 10
    (png,) = _html_images(html)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (10 * 29 + 1, 10 * 29 + 1)  # 100 images, 1-pixel gaps


def test_the_grid_is_the_images(tmp_path: Path) -> None:
    from PIL import Image

    split = mnistlab.load_dataset("mnist-mini", "test").subset(np.arange(3))
    (png,) = _html_images(split._repr_html_())
    (tmp_path / "grid.png").write_bytes(png)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (30, 88)
    for k in range(3):
        np.testing.assert_array_equal(grid[1:29, 1 + 29 * k : 29 + 29 * k], split.images[k])


def test_a_run_shows_its_summary_and_figures(tmp_path: Path) -> None:
    run = mnistlab.open_run(EXAMPLE_RUN)
    assert run.summary()["test_accuracy"] == pytest.approx(0.9887)
    html = run._repr_html_()
    assert len(html) < MAX_HTML and "0.9887" in html
    assert [p[:8] for p in _html_images(html)] == [b"\x89PNG\r\n\x1a\n"]  # confusion matrix
    hostile = tmp_path / "run"
    shutil.copytree(EXAMPLE_RUN, hostile)
    config = json.loads((hostile / "config.json").read_text())
    config["model"] = "<script>alert(1)</script>"
    (hostile / "config.json").write_text(json.dumps(config))
    html = mnistlab.open_run(hostile)._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_report_shows_its_tables_escaped(tmp_path: Path) -> None:
    from mnistlab.evaluation import read_report

    report = read_report(EXAMPLE_RUN)
    html = report._repr_html_()
    assert len(html) < MAX_HTML and "98.87%" in html and len(_html_images(html)) == 1
    data = dict(report.data, dataset="<img src=x onerror=alert(1)>")
    (tmp_path / "report.json").write_text(json.dumps(data))
    html = read_report(tmp_path)._repr_html_()
    assert "<img src=x" not in html and "&lt;img src=x" in html
