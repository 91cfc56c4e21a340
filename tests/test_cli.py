"""The ``mnistlab`` command line, driven through typer's CliRunner (and once for real)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import mnistlab
from mnistlab.cli.main import app
from mnistlab.data.cache import dataset_dir

REGISTERED = ["mnist", "fashion-mnist", "kmnist", "qmnist", "mnist-mini", "sklearn-digits"]
# Wide and colourless, so that table rows stay on one line and output is plain text.
ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env=ENV)


def run(runner: CliRunner, *args: str | Path, code: int = 0):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code != 2:  # usage errors are click's own messages
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
    return result


def table_rows(output: str) -> dict[str, list[str]]:
    """Rows of a rich table, keyed by their first cell."""
    rows = {}
    for line in output.splitlines():
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            if cells[0]:  # not the continuation of a wrapped cell
                rows[cells[0]] = cells
        elif "  " in line.strip() and not line.startswith(("─", "┃", "┏", "┡", "└", "name ")):
            cells = re.split(r"\s{2,}", line.strip())  # a borderless table: 2+ spaces apart
            rows[cells[0]] = cells
    return rows


# ---------------------------------------------------------------------------- help


def test_help(runner: CliRunner) -> None:
    for args in ([], ["--help"], ["-h"]):
        result = run(runner, *args, code=2 if not args else 0)  # no args: help, usage status
        assert "Usage" in result.output and "data" in result.output
    out = run(runner, "data", "--help").output
    for command in ("list", "fetch", "import", "verify", "show"):
        assert command in out
    expected = {
        "list": "cached",
        "fetch": "--mirror",
        "import": "--name",
        "verify": "SHA-256",
        "show": "--out",
    }
    for command, text in expected.items():
        out = run(runner, "data", command, "--help").output
        assert "Usage" in out and text in out, out


def test_version(runner: CliRunner) -> None:
    assert f"mnistlab {mnistlab.__version__}" in run(runner, "--version").output


# ---------------------------------------------------------------------------- list/fetch/verify


def test_list_fetch_verify_and_damage(runner: CliRunner, home: Path, shared_datasets: Path) -> None:
    rows = table_rows(run(runner, "data", "list", "--home", home).output)
    assert list(rows) == REGISTERED
    assert rows["mnist"][-1] == "no"
    assert rows["mnist"][1:4] == ["10", "60,000", "10,000"]
    assert rows["qmnist"][1:4] == ["10", "60,000", "60,000"]
    assert rows["mnist-mini"][-1] == "yes (bundled)"

    out = run(
        runner,
        "data",
        "fetch",
        "mnist",
        "--mirror",
        shared_datasets / "mnist",
        "-q",
        "--home",
        home,
    ).output
    assert "mnist: verified" in out

    rows = table_rows(run(runner, "data", "list", "--home", home).output)
    assert rows["mnist"][-1] == "yes" and rows["fashion-mnist"][-1] == "no"

    out = run(runner, "data", "verify", "mnist", "--home", home).output
    rows = table_rows(out)
    assert sorted(rows) == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    assert all(r[1] == "yes" for r in rows.values())

    # Flip one byte of one cached file: verify fails and names it.
    damaged = dataset_dir("mnist", home) / "t10k-images-idx3-ubyte"
    with open(damaged, "r+b") as handle:
        handle.seek(5000)
        byte = handle.read(1)
        handle.seek(5000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = run(runner, "data", "verify", "mnist", "--home", home, code=1)
    rows = table_rows(result.output)
    assert rows["t10k-images-idx3-ubyte"][1] == "NO"
    assert "SHA-256 mismatch" in rows["t10k-images-idx3-ubyte"][2]
    assert [r[1] for n, r in rows.items() if n != "t10k-images-idx3-ubyte"] == ["yes"] * 3
    assert "error:" in result.output and "mnistlab data fetch mnist --force" in result.output


def test_fetch_bundled_and_env_home(
    runner: CliRunner, _isolated_cache: Path, shared_datasets: Path
) -> None:
    # Without --home, MNISTLAB_HOME (here the test's own) is the cache.
    out = run(runner, "data", "fetch", "mnist-mini").output
    assert "mnist-mini: verified" in out
    out = run(runner, "data", "verify", "mnist-mini").output
    assert len(table_rows(out)) == 4
    run(runner, "data", "fetch", "fashion-mnist", "-m", shared_datasets / "fashion-mnist", "-q")
    assert (dataset_dir("fashion-mnist", _isolated_cache) / "manifest.json").is_file()


def test_fetch_with_no_working_mirror(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    result = run(
        runner,
        "data",
        "fetch",
        "mnist",
        "-m",
        tmp_path / "empty",
        "-q",
        "--retries",
        "0",
        "--home",
        home,
        code=1,
    )
    assert "error:" in result.output and "every mirror failed" in result.output
    assert "hint:" in result.output and "mnistlab data import" in result.output


# ---------------------------------------------------------------------------- show/import


def test_show_writes_files(runner: CliRunner, tmp_path: Path) -> None:
    out_dir = tmp_path / "plots"
    result = run(runner, "data", "show", "mnist-mini", "--out", out_dir, "--samples", "9")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [
            "samples.png",
            "label_histogram.png",
            "class_means.png",
            "pixel_histogram.png",
            "pixel_stats.png",
            "summary.json",
        ]
    )
    rows = table_rows(result.output)
    assert rows["train"][1] == "5,000" and rows["test"][1] == "1,000"
    assert rows["train"][4] == "0 (0 groups)"
    assert rows["3"][1:] == ["500", "100"]  # images per class
    assert "test images with an exact copy in train: 0" in result.output
    assert "wrote:" in result.output

    again = run(runner, "data", "show", "mnist-mini", "--out", out_dir, code=1)
    assert "error:" in again.output and "--overwrite" in again.output


def test_import_and_list(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    mini = mnistlab.load_dataset("mnist-mini", "test")
    path = tmp_path / "[odd] name.npz"
    np.savez(path, x_train=mini.images[:40], y_train=mini.labels[:40] % 3)
    out = run(
        runner,
        "data",
        "import",
        path,
        "--name",
        "three",
        "--class-names",
        "a, b ,c",
        "--home",
        home,
    ).output
    assert "imported three (train 40)" in out
    assert str(dataset_dir("three", home)) in out.replace("\n", "")
    rows = table_rows(run(runner, "data", "list", "--home", home).output)
    assert rows["three"][1:4] == ["3", "40", "-"] and rows["three"][-1] == "yes (imported)"
    assert mnistlab.load_dataset("three", home=home).class_names == ("a", "b", "c")

    again = run(runner, "data", "import", path, "--name", "three", "--home", home, code=1)
    assert "already exists" in again.output and "--overwrite" in again.output
    run(runner, "data", "import", path, "--name", "three", "--overwrite", "--home", home)


def test_import_bad_file_exits_cleanly(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "label,"
        + ",".join(f"pixel{i}" for i in range(784))
        + "\n"
        + "3,"
        + ",".join(["300"] * 784)
        + "\n"
    )
    result = run(runner, "data", "import", bad, "--name", "bad", "--home", home, code=1)
    assert "error:" in result.output and "pixel values must be 0..255" in result.output
    assert not dataset_dir("bad", home).exists()

    # A path with rich-markup-like brackets is printed literally, not swallowed or crashed on.
    odd = tmp_path / "data[" / "x] [v2].bin"  # the path reads ".../data[/x] [v2].bin"
    odd.parent.mkdir()
    odd.write_bytes(b"junk")
    result = run(runner, "data", "import", odd, "--name", "odd", "--home", home, code=1)
    assert "data[/x] [v2].bin" in result.output.replace("\n", "")
    assert "don't know how to import" in result.output

    result = run(runner, "data", "import", bad, "--name", "Bad Name", "--home", home, code=1)
    assert "invalid dataset name" in result.output and "hint:" in result.output

    result = run(runner, "data", "import", bad, "--name", "x", "--split", "val", code=2)
    assert "train or test" in result.output


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args",
    [
        ["data", "fetch", "mnsit"],
        ["data", "verify", "mnsit"],
        ["data", "show", "mnsit"],
    ],
    ids=lambda a: a[1],
)
def test_unknown_dataset(runner: CliRunner, home: Path, args: list[str]) -> None:
    result = run(runner, *args, "--home", home, code=1)
    assert "error: unknown dataset 'mnsit'" in result.output
    assert "hint: did you mean 'mnist'?" in result.output


def test_verify_not_cached(runner: CliRunner, home: Path) -> None:
    result = run(runner, "data", "verify", "fashion-mnist", "--home", home, code=1)
    assert "not cached" in result.output and "mnistlab data fetch fashion-mnist" in result.output


def test_console_script_entry_point(mnist_home: Path) -> None:
    env = {**os.environ, **ENV, "MNISTLAB_HOME": str(mnist_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "mnistlab", "data", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = table_rows(proc.stdout)
    assert list(rows) == REGISTERED
    assert rows["mnist"][-1] == "yes" and rows["kmnist"][-1] == "no"

    proc = subprocess.run(
        [sys.executable, "-m", "mnistlab", "data", "verify", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "error: unknown dataset 'nope'" in proc.stderr and "Traceback" not in proc.stderr
