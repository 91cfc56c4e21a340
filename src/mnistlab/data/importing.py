"""Importing datasets from files a user already has: IDX folders, Keras ``mnist.npz``, CSV.

Imported data is validated, converted to IDX and stored in the cache like a fetched
dataset. Under a registered name (``mnist``, ...) the files must be the official data: their
decompressed IDX payloads are checked against the registry's SHA-256. Under any other name
they become a new dataset that ``load_dataset`` and the rest of mnistlab use by that name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from mnistlab.data.cache import (
    MANIFEST,
    dataset_dir,
    new_manifest,
    read_manifest,
    resolve_home,
    validate_name,
)
from mnistlab.data.exchange import is_image_folder, read_image_folder
from mnistlab.data.idx import MAX_IDX_BYTES, copy_idx_stream, idx_bytes, parse_idx
from mnistlab.data.load import check_split_arrays
from mnistlab.data.registry import (
    DIGITS,
    MAX_CLASSES,
    REGISTRY,
    DatasetSpec,
    RemoteFile,
    SplitFiles,
)
from mnistlab.errors import DatasetFormatError, ImportDataError, OverwriteError
from mnistlab.io import atomic_write_json

_IDX_PATTERNS = {
    ("train", "images"): re.compile(r"train.*(images|idx3)", re.I),
    ("train", "labels"): re.compile(r"train.*(labels|idx1|idx2)", re.I),
    ("test", "images"): re.compile(r"(t10k|test).*(images|idx3)", re.I),
    ("test", "labels"): re.compile(r"(t10k|test).*(labels|idx1|idx2)", re.I),
}
#: The most CSV text an import reads (decompressed): 512 MiB, four times MNIST as CSV.
_MAX_CSV_BYTES = 1 << 29
_INTACT = "check that the file is an intact IDX file"


@dataclass(frozen=True)
class _Raw:
    """One split as IDX bytes, and where it came from (for messages)."""

    images: bytes | bytearray
    labels: bytes | bytearray
    origin: str
    labels_origin: str = ""  # the labels file, where it is not ``origin``


def _too_many_classes(where: str, label: int) -> ImportDataError:
    return ImportDataError(
        f"{where}: label {label:,} is past the {MAX_CLASSES:,} classes a dataset may have "
        f"(labels 0..{MAX_CLASSES - 1:,})",
        hint="labels must be class indices 0..K-1; renumber them first, e.g. "
        "np.unique(labels, return_inverse=True)[1]",
    )


def _from_arrays(images: np.ndarray, labels: np.ndarray, origin: str) -> _Raw:
    if images.dtype != np.uint8:
        if images.dtype.kind not in "iu":
            raise ImportDataError(
                f"{origin}: images have dtype {images.dtype}; expected integer pixels 0..255",
                hint="convert with (x * 255).round().astype('uint8') if they are scaled to [0, 1]",
            )
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ImportDataError(f"{origin}: pixel values outside 0..255")
        images = images.astype(np.uint8)
    if labels.dtype.kind not in "iu":
        raise ImportDataError(f"{origin}: labels have dtype {labels.dtype}; expected integers")
    if labels.size and labels.max() >= MAX_CLASSES:  # before int32 could wrap it
        raise _too_many_classes(f"{origin} (labels)", int(labels.max()))
    small = labels.size == 0 or (labels.min() >= 0 and labels.max() < 256)
    return _Raw(
        idx_bytes(images), idx_bytes(labels.astype(np.uint8 if small else np.int32)), origin
    )


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _read_idx_file(path: Path, limit: int, limit_name: str) -> bytearray:
    """One IDX file (``.gz`` or not), streamed: never more than its header declares, nor
    more than ``limit`` bytes (a gzip bomb costs at most the declared size)."""
    data = bytearray()
    try:
        with gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb") as stream:
            copy_idx_stream(stream, data.extend, str(path), limit, limit_name)
    except DatasetFormatError as exc:
        raise ImportDataError(exc.message, hint=_INTACT) from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportDataError(f"{path}: cannot read ({exc})") from exc
    return data


def _read_text(path: Path) -> bytes:
    """A CSV file's bytes (``.gz`` or not), refused past _MAX_CSV_BYTES decompressed."""
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as gz:
                data = gz.read(_MAX_CSV_BYTES + 1)
            size = len(data)
        else:
            size = path.stat().st_size
            data = path.read_bytes() if size <= _MAX_CSV_BYTES else b""
    except (OSError, EOFError, zlib.error) as exc:
        raise ImportDataError(f"{path}: cannot read ({exc})") from exc
    if size > _MAX_CSV_BYTES:
        raise ImportDataError(
            f"{path}: more than {_MAX_CSV_BYTES:,} bytes of CSV (the most mnistlab reads; "
            "reading stopped there)",
            hint="a CSV of MNIST's 70,000 images is about 130 MB; write larger data as IDX "
            "files (mnistlab.data.idx.write_idx) and import the folder",
        )
    return data


def _limit(registered: DatasetSpec | None, split: str, kind: str) -> tuple[int, str]:
    """The most bytes one IDX file may hold: its official size under a registered name."""
    files = registered.splits.get(split) if registered is not None else None
    remote = getattr(files, kind, None)
    if registered is None or remote is None or remote.payload_size is None:
        return MAX_IDX_BYTES, "the most mnistlab reads"
    return remote.payload_size, f"the official {registered.name!r} {split} {kind} file"


def _read_idx_folder(folder: Path, registered: DatasetSpec | None) -> dict[str, _Raw]:
    """Find and read the IDX files of each split in a folder."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix in (".csv", ".npz"):
            continue
        for key, pattern in _IDX_PATTERNS.items():
            if pattern.search(path.name) and key not in found:
                found[key] = path
                break
    splits = {}
    for split in ("train", "test"):
        img, lab = found.get((split, "images")), found.get((split, "labels"))
        if img and lab:
            splits[split] = _Raw(
                _read_idx_file(img, *_limit(registered, split, "images")),
                _read_idx_file(lab, *_limit(registered, split, "labels")),
                f"{img.parent}/{img.name}",
                f"{lab.parent}/{lab.name}",
            )
        elif img or lab:
            have = img or lab
            raise ImportDataError(
                f"{folder}: found {have.name} but no matching {split} "
                f"{'labels' if img else 'images'} file",
                hint="put both the images and the labels file of each split in the folder "
                "(names like train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])",
            )
    if not splits:
        raise ImportDataError(
            f"{folder}: no IDX files found",
            hint="expected files named like train-images-idx3-ubyte.gz, "
            "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz",
        )
    return splits


def _read_npz(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keras' ``mnist.npz``: x_train, y_train, x_test, y_test (never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            splits = {}
            for split in ("train", "test"):
                x, y = f"x_{split}", f"y_{split}"
                if x in keys and y in keys:
                    splits[split] = (npz[x], npz[y])
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ImportDataError(
            f"{path}: not a readable numpy .npz file ({exc})",
            hint="object arrays are refused (they would need pickle); save plain uint8 arrays",
        ) from exc
    if not splits:
        raise ImportDataError(
            f"{path}: no x_train/y_train or x_test/y_test arrays (found {sorted(keys)})",
            hint="the Keras layout is x_train (N,28,28) uint8, y_train (N,), x_test, y_test",
        )
    return splits


def _npz_class_names(path: Path) -> list[str] | None:
    """The ``class_names`` array ``mnistlab data export --to npz`` writes, if present."""
    with np.load(path, allow_pickle=False) as npz:
        if "class_names" not in npz.files:
            return None
        names = npz["class_names"]
    if names.dtype.kind != "U" or names.ndim != 1 or len(names) > MAX_CLASSES:
        raise ImportDataError(f"{path}: class_names must be a 1-D array of at most "
                              f"{MAX_CLASSES:,} strings")  # fmt: skip
    return [str(n) for n in names]


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Kaggle-style CSV: ``label,pixel0..pixel783`` per row, with or without a header."""
    text = _read_text(path)
    lines = text.splitlines()
    if lines and not lines[0][:1].isdigit():
        header = lines[0].decode(errors="replace").split(",")
        lines = lines[1:]
        if header and header[0].strip().lower() not in ("label", "class", "y", "target"):
            raise ImportDataError(
                f"{path}: the first column is {header[0]!r}, expected the label",
                hint="each row must be label,pixel0,...,pixel783 (Kaggle's test.csv has no "
                "labels and cannot be imported)",
            )
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ImportDataError(f"{path}: no data rows")
    try:
        rows = np.array([np.array(line.split(b","), dtype=np.int64) for line in lines[:1]])
        width = rows.shape[1]
        data = np.loadtxt(lines, delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise ImportDataError(
            f"{path}: not a CSV of integers ({exc})",
            hint="each row must be label,pixel0,...,pixel783 with integer values",
        ) from exc
    if width != 785 or data.shape[1] != 785:
        raise ImportDataError(
            f"{path}: rows have {data.shape[1]} columns, expected 785 (label + 784 pixels)",
            hint="Kaggle's test.csv has no label column and cannot be imported",
        )
    pixels = data[:, 1:]
    if pixels.min() < 0 or pixels.max() > 255:
        row = int(np.flatnonzero((pixels < 0).any(1) | (pixels > 255).any(1))[0])
        raise ImportDataError(f"{path}: row {row + 1}: pixel values must be 0..255")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), data[:, 0]


def _csv_split(path: Path, split: str | None) -> str:
    if split:
        return split
    return "test" if re.search(r"test|t10k", path.name, re.I) else "train"


def import_dataset(
    path: str | os.PathLike[str],
    name: str,
    *,
    home: str | os.PathLike[str] | None = None,
    split: str | None = None,
    class_names: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Import local files as dataset ``name`` into the cache.

    Args:
        path: a folder of IDX files (``.gz`` or not; or of ``*train*.csv``/``*test*.csv``
            files), a folder of 28x28 PNGs per class (``<class>/*.png``, or
            ``train|test/<class>/*.png``; classes are the sorted folder names), a Keras-style
            ``.npz`` or a Kaggle-style ``.csv`` file.
        name: a registered name (files are then checked against its checksums) or a new one.
        home: cache root.
        split: for a single CSV file, the split it holds (default: ``test`` if its name says
            so, else ``train``).
        class_names: for a new dataset, names of the classes (default: ``"0"``..``"9"``, or
            as many as the largest label needs).
        overwrite: replace an existing dataset of that name.

    Returns:
        The dataset's cache folder.

    Raises:
        ImportDataError: unreadable or malformed input, or files that are not the official
            data of a registered name.
        OverwriteError: the name exists and ``overwrite`` is false.
    """
    source = Path(path).expanduser()
    validate_name(name)
    if class_names and len(class_names) > MAX_CLASSES:
        raise ImportDataError(
            f"{len(class_names):,} class names given; a dataset may have at most "
            f"{MAX_CLASSES:,} classes"
        )
    if not source.exists():
        raise ImportDataError(f"{source}: no such file or folder")
    registered = REGISTRY.get(name)
    if registered is not None and registered.bundled:
        raise ImportDataError(f"{name!r} is bundled with mnistlab and cannot be replaced")
    target = dataset_dir(name, home)
    if read_manifest(target) is not None and not overwrite:
        raise OverwriteError(
            f"dataset {name!r} already exists in {target}",
            hint="pass --overwrite (overwrite=True) to replace it, or choose another --name",
        )

    # 1. Read everything into {split: IDX bytes}.
    raw: dict[str, _Raw] = {}
    suffix = source.suffix.lower()
    if source.is_dir() and is_image_folder(source):  # <class>/*.png (torchvision ImageFolder)
        arrays, folder_classes = read_image_folder(source)
        for s, (x, y) in arrays.items():
            raw[s] = _from_arrays(x, y, f"{source} ({s})")
        class_names = class_names or folder_classes
    elif source.is_dir():
        csvs = sorted(p for p in source.iterdir() if ".csv" in p.name.lower())
        if csvs:
            for csv in csvs:
                raw[_csv_split(csv, None)] = _from_arrays(*_read_csv(csv), str(csv))
        else:
            raw = _read_idx_folder(source, registered)
    elif suffix == ".npz":
        for s, (x, y) in _read_npz(source).items():
            raw[s] = _from_arrays(x, y, f"{source} ({s})")
        class_names = class_names or _npz_class_names(source)
    elif ".csv" in source.name.lower():
        raw[_csv_split(source, split)] = _from_arrays(*_read_csv(source), str(source))
    else:
        raise ImportDataError(
            f"{source}: don't know how to import this file",
            hint="give a folder of IDX files, a Keras-style .npz or a Kaggle-style .csv",
        )

    # 2. Parse and validate, and build the spec of what will be stored.
    labels_max = 0
    parsed = {}
    for s, r in raw.items():
        try:
            images = parse_idx(r.images, f"{r.origin} ({s} images)")
            labels = parse_idx(r.labels, f"{r.origin} ({s} labels)")
        except DatasetFormatError as exc:
            raise ImportDataError(exc.message, hint=_INTACT) from exc
        if labels.ndim == 2 and registered is not None and registered.label_column is not None:
            labels_max = max(labels_max, int(labels[:, registered.label_column].max(initial=0)))
        elif labels.ndim == 1 and labels.size:
            labels_max = max(labels_max, int(labels.max()))
            if registered is None and labels_max >= MAX_CLASSES:
                raise _too_many_classes(r.labels_origin or f"{r.origin} (labels)", labels_max)
        parsed[s] = (images, labels)
    if registered is not None:
        spec = registered
        names = spec.class_names
    else:
        names = (
            tuple(class_names)
            if class_names
            else (DIGITS if labels_max < 10 else tuple(str(i) for i in range(labels_max + 1)))
        )
    files = {}
    for s, r in raw.items():
        base = "t10k" if s == "test" else "train"
        files[s] = SplitFiles(
            RemoteFile(
                f"{base}-images-idx3-ubyte",
                None,
                None,
                len(r.images),
                hashlib.sha256(r.images).hexdigest(),
            ),
            RemoteFile(
                f"{base}-labels-idx{parsed[s][1].ndim}-ubyte",
                None,
                None,
                len(r.labels),
                hashlib.sha256(r.labels).hexdigest(),
            ),
            len(parsed[s][0]),
        )
    if registered is None:
        spec = DatasetSpec(
            name=name,
            title=name,
            description=f"Imported from {source}",
            homepage="",
            license="(user data)",
            class_names=names,
            mirrors=(),
            splits=MappingProxyType(files),
            origin="imported",
        )
    for s, (images, labels) in parsed.items():
        try:
            check_split_arrays(
                images,
                labels,
                spec,
                f"{raw[s].origin} ({s})",
                fix="fix the files, or import them under another --name",
            )
        except DatasetFormatError as exc:
            raise ImportDataError(exc.message, hint=exc.hint) from exc

    # 3. Under a registered name, the payloads must be the official ones.
    if registered is not None:
        missing = [s for s in registered.splits if s not in raw]
        if missing:
            raise ImportDataError(
                f"{source}: {name!r} needs both splits; missing {', '.join(missing)}",
                hint=f"add the missing files, or import a partial copy under another name, "
                f"e.g. --name {name}-partial",
            )
        for s, split_files in registered.splits.items():
            for ours, theirs in (
                (files[s].images, split_files.images),
                (files[s].labels, split_files.labels),
            ):
                if theirs.payload_sha256 is None:
                    # Only the published .gz is known: the payload cannot be checked here.
                    raise ImportDataError(
                        f"{name!r} cannot be imported: mnistlab knows only the checksums of its "
                        f"published .gz files, not of their decompressed contents",
                        hint=f"fetch it from a folder holding the published files, which checks "
                        f"them: `mnistlab data fetch {name} --mirror FOLDER`; or import under "
                        f"another name, e.g. --name {name}-custom",
                    )
                if ours.payload_sha256 != theirs.payload_sha256:
                    raise ImportDataError(
                        f"{raw[s].origin}: the {s} data is not the official {name!r} data "
                        f"(payload SHA-256 {ours.payload_sha256[:16]}... differs from "
                        f"{theirs.payload_sha256[:16]}...)",
                        hint=f"import it under another name, e.g. --name {name}-custom",
                    )

    # 4. Write into a fresh folder, then swap it in.
    root = resolve_home(home) / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".import-{name}-", dir=root))
    try:
        for s, r in raw.items():
            local = registered.splits[s] if registered is not None else files[s]
            (staging / local.images.local_name).write_bytes(r.images)
            (staging / local.labels.local_name).write_bytes(r.labels)
        manifest = new_manifest(spec, str(source))
        atomic_write_json(staging / MANIFEST, manifest)
        if target.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".old-{name}-", dir=root))
            os.replace(target, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
