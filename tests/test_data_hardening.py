"""Hostile data files (issue 15, items 13 and 14): huge labels and gzip bombs are refused
early, with a clear error, before anything proportional to the lie is allocated.

Real files only: IDX, npz and CSV written to disk, gzip bombs built by streaming zeros through
``gzip.GzipFile`` (256 MiB of zeros is a 261 kB file, built in about half a second), fetches
from :class:`http_mirror.MirrorServer` on 127.0.0.1. Memory is measured with ``tracemalloc``
(it sees Python's allocations, zlib's output buffers and numpy's arrays): a refusal that
allocated what the file claims would show up as hundreds of MB.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import mnistlab
from mnistlab.cli.main import app
from mnistlab.data.cache import dataset_dir
from mnistlab.data.download import FetchOptions, _fetch_from_mirror, _MirrorFailed
from mnistlab.data.idx import MAX_IDX_BYTES, idx_bytes, read_idx, write_idx
from mnistlab.data.registry import MAX_CLASSES, MNIST, RemoteFile
from mnistlab.errors import DatasetFormatError, DownloadError, ImportDataError

try:  # tests/ is on sys.path (pytest's default "prepend" import mode, no __init__.py)
    from http_mirror import MirrorServer
except ImportError:  # tests/ is a package
    from tests.http_mirror import MirrorServer

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
MiB = 1 << 20
BOMB_ZEROS = 256 * MiB  # what a bomb below decompresses to (after its header)
SMALL = 32 * MiB  # the most a refusal may allocate: far below BOMB_ZEROS


def peak_of(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    """Run ``action``; return (the exception it raised or None, peak traced bytes)."""
    tracemalloc.start()
    try:
        action()
        error = None
    except BaseException as exc:
        error = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


def idx_header(code: int, *shape: int) -> bytes:
    return struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape)


def write_bomb(path: Path, header: bytes, data: bytes = b"", zeros: int = BOMB_ZEROS) -> Path:
    """A gzip file holding ``header + data`` and then ``zeros`` zero bytes, written in 1 MiB
    chunks (the test never holds the decompressed bytes)."""
    chunk = bytes(MiB)
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as gz:
        gz.write(header + data)
        for _ in range(zeros // MiB):
            gz.write(chunk)
    return path


def cli(*args: str | Path):
    result = CliRunner(env=ENV).invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def images() -> np.ndarray:
    return np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)


# ---------------------------------------------------------------------------- 13. huge labels


def huge_label_file(kind: str, folder: Path, images: np.ndarray, label: int) -> tuple[Path, Path]:
    """(what to import, the file holding the label) for ``kind`` in idx, npz, csv."""
    labels = np.array([0, 1, label], dtype=np.int64)
    folder.mkdir()
    if kind == "idx":
        write_idx(folder / "train-images-idx3-ubyte", images)
        write_idx(folder / "train-labels-idx1-ubyte", labels.astype(np.int32))
        return folder, folder / "train-labels-idx1-ubyte"
    if kind == "npz":
        path = folder / "digits.npz"
        np.savez(path, x_train=images, y_train=labels)
        return path, path
    path = folder / "train.csv"
    rows = np.column_stack([labels, images.reshape(3, -1).astype(np.int64)])
    np.savetxt(path, rows, fmt="%d", delimiter=",")
    return path, path


HUGE = {"idx": 2**31 - 1, "npz": 10**9, "csv": 2**31 - 1}


@pytest.mark.parametrize("kind", ["idx", "npz", "csv"])
def test_huge_label_refused_before_allocating(
    tmp_path: Path, home: Path, images: np.ndarray, kind: str
) -> None:
    source, holder = huge_label_file(kind, tmp_path / "in", images, HUGE[kind])
    error, peak = peak_of(lambda: mnistlab.import_dataset(source, "huge", home=home))
    assert isinstance(error, ImportDataError), error
    message = error.message
    assert str(holder) in message  # the file
    assert f"label {HUGE[kind]:,}" in message  # the label found
    assert f"{MAX_CLASSES:,} classes" in message  # the bound
    assert "renumber" in error.hint
    assert peak < SMALL, f"{peak:,} bytes allocated to refuse it"
    assert not dataset_dir("huge", home).exists()


@pytest.mark.parametrize("kind", ["idx", "npz", "csv"])
def test_huge_label_cli_exits_1(tmp_path: Path, home: Path, images: np.ndarray, kind: str) -> None:
    source, holder = huge_label_file(kind, tmp_path / "in", images, HUGE[kind])
    result = cli("data", "import", source, "--name", "huge", "--home", home)
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert f"label {HUGE[kind]:,}" in flat and f"{MAX_CLASSES:,} classes" in flat
    assert holder.name in flat


def test_class_bound_is_exact_and_int32_cannot_wrap(
    tmp_path: Path, home: Path, images: np.ndarray
) -> None:
    last, _ = huge_label_file("npz", tmp_path / "last", images, MAX_CLASSES - 1)
    mnistlab.import_dataset(last, "widest", home=home)
    assert len(mnistlab.load_dataset("widest", home=home).class_names) == MAX_CLASSES
    source, _ = huge_label_file("npz", tmp_path / "past", images, MAX_CLASSES)
    with pytest.raises(ImportDataError, match=f"label {MAX_CLASSES:,} is past"):
        mnistlab.import_dataset(source, "past", home=home)
    # 2**32 would be 0 once stored as int32: it is refused, not wrapped.
    source, _ = huge_label_file("npz", tmp_path / "wrap", images, 2**32)
    with pytest.raises(ImportDataError, match="label 4,294,967,296 is past"):
        mnistlab.import_dataset(source, "wrap", home=home)
    too_many = [str(i) for i in range(MAX_CLASSES + 1)]
    with pytest.raises(ImportDataError, match="1,001 class names given"):
        mnistlab.import_dataset(last, "named", home=home, class_names=too_many)


# ---------------------------------------------------------------------------- 14. gzip bombs


@pytest.fixture
def bomb_folder(tmp_path: Path, images: np.ndarray) -> Iterator[Path]:
    """A folder whose train-images .gz declares 3 images (2,368 bytes) and then holds 256 MiB
    of zeros more; its labels file is fine."""
    folder = tmp_path / "bomb"
    folder.mkdir()
    write_bomb(folder / "train-images-idx3-ubyte.gz", idx_header(0x08, 3, 28, 28), images.tobytes())
    write_idx(folder / "train-labels-idx1-ubyte", np.array([0, 1, 2], np.uint8))
    assert (folder / "train-images-idx3-ubyte.gz").stat().st_size < 400_000
    yield folder


def test_gzip_bomb_import_stops_at_declared_size(bomb_folder: Path, home: Path) -> None:
    error, peak = peak_of(lambda: mnistlab.import_dataset(bomb_folder, "bomb", home=home))
    assert isinstance(error, ImportDataError), error
    assert "train-images-idx3-ubyte.gz: more data than the IDX header declares" in error.message
    assert "shape (3, 28, 28) is 2,368 bytes" in error.message  # declared ...
    assert "stopped at byte 2,369" in error.message  # ... and found: one byte more
    assert peak < SMALL, f"{peak:,} bytes allocated for a 2,368-byte file"
    assert not dataset_dir("bomb", home).exists()


def test_gzip_bomb_import_cli_exits_1(bomb_folder: Path, home: Path) -> None:
    result = cli("data", "import", bomb_folder, "--name", "bomb", "--home", home)
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "more data than the IDX header declares" in flat and "2,369" in flat


def test_absurd_idx_header_refused_before_allocating(tmp_path: Path, home: Path) -> None:
    # 2**31 images of 28x28: 1.7 TB declared, in a 1 kB .gz (and an 800-byte plain file).
    header = idx_header(0x08, 2**31, 28, 28)
    declared = 16 + 2**31 * 784
    for compressed in (True, False):
        folder = tmp_path / f"absurd-{compressed}"
        folder.mkdir()
        if compressed:
            write_bomb(folder / "train-images-idx3-ubyte.gz", header, zeros=MiB)
        else:
            (folder / "train-images-idx3-ubyte").write_bytes(header + bytes(784))
        write_idx(folder / "train-labels-idx1-ubyte", np.zeros(1, np.uint8))
        error, peak = peak_of(lambda f=folder: mnistlab.import_dataset(f, "absurd", home=home))
        assert isinstance(error, ImportDataError), error
        assert f"declares shape (2147483648, 28, 28), {declared:,} bytes" in error.message
        assert f"more than the most mnistlab reads ({MAX_IDX_BYTES:,} bytes)" in error.message
        assert peak < SMALL
    # The in-cache reader refuses it too, from the file size, before reading.
    plain = tmp_path / "absurd-False" / "train-images-idx3-ubyte"
    error, peak = peak_of(lambda: read_idx(plain))
    assert isinstance(error, DatasetFormatError) and "truncated data" in error.message
    assert peak < SMALL


def test_registered_name_bounds_by_the_official_size(tmp_path: Path, home: Path) -> None:
    # Under "mnist", a header declaring more than the official file is refused at once.
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_bomb(folder / "train-images-idx3-ubyte.gz", idx_header(0x08, 100_000, 28, 28))
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(100_000, np.uint8))
    error, peak = peak_of(lambda: mnistlab.import_dataset(folder, "mnist", home=home))
    assert isinstance(error, ImportDataError), error
    assert "78,400,016 bytes, more than the official 'mnist' train images file" in error.message
    assert f"({MNIST.splits['train'].images.payload_size:,} bytes)" in error.message
    assert peak < SMALL


def test_csv_bound(tmp_path: Path, home: Path) -> None:
    # A sparse file past the CSV bound is refused from its size, without being read.
    from mnistlab.data.importing import _MAX_CSV_BYTES

    path = tmp_path / "train.csv"
    with open(path, "wb") as handle:
        handle.truncate(_MAX_CSV_BYTES + 1)
    error, peak = peak_of(lambda: mnistlab.import_dataset(path, "big", home=home))
    assert isinstance(error, ImportDataError), error
    assert f"more than {_MAX_CSV_BYTES:,} bytes of CSV" in error.message
    assert peak < SMALL


# ---------------------------------------------------------------------------- 14. fetch


def fetch_bomb(files: dict[str, bytes], home: Path) -> str:
    with MirrorServer(files) as server, pytest.raises(DownloadError) as info:
        mnistlab.fetch_dataset("mnist", mirrors=[server.url], home=home, retries=0, progress=False)
    [(_, reason)] = info.value.failures
    return reason


def test_gzip_bomb_fetch_stops_at_declared_size(tmp_path: Path, images: np.ndarray) -> None:
    # The registry expects 47,040,016 bytes; the header says 2,368; the stream holds 256 MiB.
    bomb = write_bomb(tmp_path / "b.gz", idx_header(0x08, 3, 28, 28), images.tobytes())
    reason = fetch_bomb({"train-images-idx3-ubyte.gz": bomb.read_bytes()}, tmp_path / "home")
    assert reason == (
        "decompresses to more than the 2,368 bytes its IDX header declares "
        "(shape (3, 28, 28)) (stopped at byte 2,369)"
    )
    assert not any(dataset_dir("mnist", tmp_path / "home").iterdir())


def test_fetch_refuses_a_header_larger_than_the_registry_size(tmp_path: Path) -> None:
    bomb = write_bomb(tmp_path / "b.gz", idx_header(0x08, 2**31, 28, 28), zeros=MiB)
    reason = fetch_bomb({"train-images-idx3-ubyte.gz": bomb.read_bytes()}, tmp_path / "home")
    assert "its IDX header declares shape (2147483648, 28, 28)" in reason
    assert "more than the expected 47,040,016 bytes; refused before decompressing" in reason


def test_fetch_with_unknown_payload_size_uses_the_header(
    tmp_path: Path, images: np.ndarray
) -> None:
    # A registry-like entry that knows neither size: the header is the only bound.
    remote = RemoteFile("x-images-idx3-ubyte.gz", None, None, None, None)
    bomb = write_bomb(tmp_path / "b.gz", idx_header(0x08, 3, 28, 28), images.tobytes())
    absurd = write_bomb(tmp_path / "a.gz", idx_header(0x08, 2**31, 28, 28), zeros=MiB)
    not_idx = gzip.compress(b"<html>not found</html>" + bytes(MiB))
    opts = FetchOptions(retries=0, timeout=5.0, progress=False)
    directory = tmp_path / "cache"
    directory.mkdir()
    expected = {
        bomb.read_bytes(): "more than the 2,368 bytes its IDX header declares",
        absurd.read_bytes(): f"more than the most mnistlab reads ({MAX_IDX_BYTES:,} bytes)",
        not_idx: "wrong magic number",
    }
    with MirrorServer() as server:
        for body, reason in expected.items():
            server.put(remote.name, body)
            error, peak = peak_of(
                lambda: _fetch_from_mirror(server.url, remote, directory, opts, None)
            )
            assert isinstance(error, _MirrorFailed) and reason in str(error), error
            assert peak < SMALL
            assert list(directory.iterdir()) == []
    # A well-formed file passes the size checks; only the missing checksum refuses it.
    good = gzip.compress(idx_bytes(images))
    with MirrorServer({remote.name: good}) as server, pytest.raises(_MirrorFailed, match="SHA-256"):
        _fetch_from_mirror(server.url, remote, directory, opts, None)
