"""Shared fixtures: the real MNIST / Fashion-MNIST files and a cache that tests never share
with the user's.

Every test runs with ``MNISTLAB_HOME`` pointing at its own temporary folder and without
``MNISTLAB_MIRRORS``, so nothing reads or writes the real user cache or reaches a network.
The full datasets are fetched once per session (from the shared folder, as a local mirror)
into ``mnist_home``; tests that need to damage or extend a cache work on their own copy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import mnistlab
from mnistlab.data.cache import dataset_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n 2``: one test process per core), each process computes on one
    thread: torch's default of a thread per core would set two OpenMP pools spinning against
    each other, many times slower than either alone. Each process is also pinned to its own
    share of the CPUs, and what it starts (notebook kernels, torchrun, sweep workers)
    inherits it: runs choose their threads from the CPUs they may use and the load, as they
    do for a user, and would otherwise take the other process's core whenever it paused."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return
    import torch

    torch.set_num_threads(1)
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no pinning
        return
    index = int(worker.removeprefix("gw") or 0)
    if count > 1 and len(cpus) >= count:
        share = len(cpus) // count
        os.sched_setaffinity(0, cpus[index * share : (index + 1) * share])


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The folder with the real datasets (``mnist/`` and ``fashion-mnist/``, gzip IDX)."""
    path = REPO_ROOT.parent / "shared" / "datasets"
    missing = [d for d in ("mnist", "fashion-mnist") if not (path / d).is_dir()]
    if missing:
        pytest.fail(
            f"reference datasets not found: {path} lacks {', '.join(missing)}; the tests need "
            "the real MNIST and Fashion-MNIST gzip IDX files in ../shared/datasets/{mnist,"
            "fashion-mnist}/ next to the repository",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def mnist_home(tmp_path_factory: pytest.TempPathFactory, shared_datasets: Path) -> Path:
    """A cache root holding verified MNIST and Fashion-MNIST, fetched once per session.

    Treat it as read-only: copy (or link) from it into a test's own home before changing files.
    """
    home = tmp_path_factory.mktemp("mnist_home")
    for name in ("mnist", "fashion-mnist"):
        mnistlab.fetch_dataset(
            name, mirrors=[str(shared_datasets / name)], home=home, progress=False
        )
    return home


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Point the default cache at a fresh folder for each test; drop any mirror override."""
    home = tmp_path_factory.mktemp("default_home")
    monkeypatch.setenv("MNISTLAB_HOME", str(home))
    monkeypatch.delenv("MNISTLAB_MIRRORS", raising=False)
    return home


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty cache root of the test's own."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def link_cached(mnist_home: Path, home: Path):
    """``link_cached(name)`` makes ``name`` cached in the test's ``home`` from ``mnist_home``.

    The manifest is copied and the payload files are symlinked (no 100 MB copies), so replace,
    never edit in place, a file a test damages: ``write_idx`` and ``atomic_write_bytes`` swap
    the link for a new file and leave the session cache intact. Returns the dataset folder.
    """

    def link(name: str = "mnist") -> Path:
        src = dataset_dir(name, mnist_home)
        dst = dataset_dir(name, home)
        dst.mkdir(parents=True)
        for path in src.iterdir():
            if path.name == "manifest.json":
                shutil.copyfile(path, dst / path.name)
            elif not path.name.startswith("."):
                os.symlink(path, dst / path.name)
        return dst

    return link


@pytest.fixture(scope="session")
def mini() -> dict[str, mnistlab.DatasetSplit]:
    """The bundled mnist-mini splits (loaded once; do not modify the arrays)."""
    return {s: mnistlab.load_dataset("mnist-mini", s, download=False) for s in ("train", "test")}


@pytest.fixture(scope="session")
def mnist(mnist_home: Path) -> dict[str, mnistlab.DatasetSplit]:
    """The full MNIST splits (loaded once; do not modify the arrays)."""
    return {s: mnistlab.load_dataset("mnist", s, home=mnist_home) for s in ("train", "test")}
