"""Loading a cached dataset split into numpy arrays."""

from __future__ import annotations

import base64
import gzip
import html
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.data.cache import files_dir, get_spec, is_cached
from mnistlab.data.idx import parse_idx, read_idx
from mnistlab.data.registry import DatasetSpec, RemoteFile
from mnistlab.errors import DatasetFormatError, DatasetNotCachedError


@dataclass(frozen=True, eq=False)
class DatasetSplit:
    """One split of a dataset: a sequence of ``(image, label)`` pairs, as torchvision's
    datasets are (``len``, indexing and iteration agree), with the whole arrays at hand.

    ``split[i]`` is ``(image (28, 28) uint8, label int)``; ``for image, label in split``
    walks the examples; ``images, labels = split.arrays()`` gives the arrays (so does reading
    ``split.images`` and ``split.labels``); ``split.torch_dataset()`` is a map-style
    ``torch.utils.data.Dataset`` for a ``DataLoader``.

    Attributes:
        images: uint8 array (N, 28, 28), 0 = background.
        labels: int64 array (N,) with values in ``range(len(class_names))``.
        dataset: the dataset's name.
        split: ``"train"``, ``"test"`` or ``"val"``.
        class_names: one name per label value.
    """

    images: np.ndarray
    labels: np.ndarray
    dataset: str
    split: str
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """The ``index``-th example (negative indices count from the end).

        Raises:
            IndexError: out of range (what a sequence does, so ``for`` loops end).
            TypeError: a slice or another key: use :meth:`subset`.
        """
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(
                f"a DatasetSplit is indexed by an integer, not {type(index).__name__}; "
                "use split.subset(indices) for several examples"
            )
        return self.images[index], int(self.labels[index])

    def __iter__(self) -> Iterator[tuple[np.ndarray, int]]:
        for i in range(len(self)):
            yield self.images[i], int(self.labels[i])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)``: uint8 ``(N, 28, 28)`` and int64 ``(N,)``."""
        return self.images, self.labels

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: np.ndarray | Sequence[int], split: str | None = None) -> DatasetSplit:
        """The examples at ``indices`` (a copy), optionally under another split name."""
        idx = np.asarray(indices)
        return DatasetSplit(
            self.images[idx], self.labels[idx], self.dataset, split or self.split, self.class_names
        )

    def torch_dataset(self, transform: Callable[[Any], Any] | None = None) -> Any:
        """A map-style ``torch.utils.data.Dataset`` of ``(image, label)``: the image as a float
        tensor ``(1, 28, 28)`` in [0, 1] (torchvision's ``ToTensor``), or ``transform(image)``
        of the uint8 ``(28, 28)`` array when given; the label an int. It holds only this
        split's arrays, so it pickles to ``DataLoader(num_workers > 0)`` workers."""
        from mnistlab.data.torch_dataset import SplitDataset

        return SplitDataset(self.images, self.labels, transform)

    def _repr_html_(self, grid: int = 10) -> str:
        """Jupyter's view: name and size, the per-class counts, and the first ``grid x grid``
        images (at most 100 by default) as one inline PNG, whatever the split's size."""
        counts = np.bincount(self.labels, minlength=self.num_classes)
        shown = self.images[: grid * grid]
        rows = "".join(
            f"<tr><td>{html.escape(name)}</td><td style='text-align:right'>{int(n):,}</td></tr>"
            for name, n in zip(self.class_names, counts, strict=False)
        )
        title = html.escape(f"{self.dataset} / {self.split}: {len(self):,} images")
        image = ""
        if len(shown):
            cols = min(grid, len(shown))
            canvas = np.zeros((-(-len(shown) // cols) * 29 + 1, cols * 29 + 1), np.uint8)
            for k, img in enumerate(shown):  # a 1-pixel dark gap between images
                r, c = divmod(k, cols)
                canvas[1 + r * 29 : r * 29 + 29, 1 + c * 29 : c * 29 + 29] = img[:28, :28]
            data = base64.b64encode(png_bytes(canvas)).decode("ascii")
            width = round(canvas.shape[1] * 1.5)
            image = (
                f"<img src='data:image/png;base64,{data}' style='width:{width}px;"
                "image-rendering:pixelated' alt='the first images of the split'>"
            )
        return (
            f"<div><b>{title}</b> (the first {len(shown)} shown)<div style='display:flex;"
            f"gap:1em;align-items:flex-start'>{image}<table><tr><th>class</th><th>count</th>"
            f"</tr>{rows}</table></div></div>"
        )


def png_bytes(gray: np.ndarray) -> bytes:
    """A grayscale uint8 array ``(H, W)`` as PNG bytes (zlib only, no imaging library)."""
    height, width = gray.shape
    raw = b"".join(b"\x00" + bytes(row) for row in np.ascontiguousarray(gray, np.uint8))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    )  # fmt: skip


def _read(path: Path, compressed: bool) -> np.ndarray:
    if not compressed:
        return read_idx(path)
    with gzip.open(path, "rb") as handle:
        return parse_idx(bytearray(handle.read()), str(path))


def check_split_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    spec: DatasetSpec,
    where: str,
    fix: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate decoded arrays and bring them to the public form (uint8 images, int64 labels).

    Raises:
        DatasetFormatError: wrong dtype or shape, counts that differ, labels out of range.
    """
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != spec.image_shape:
        raise DatasetFormatError(
            f"{where}: images must be uint8 with shape (N, {spec.image_shape[0]}, "
            f"{spec.image_shape[1]}); got {images.dtype} {images.shape}",
            hint=fix,
        )
    if labels.ndim == 2 and spec.label_column is not None:
        labels = labels[:, spec.label_column]
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DatasetFormatError(
            f"{where}: labels must be a 1-D integer array; got {labels.dtype} {labels.shape}",
            hint=fix,
        )
    if len(images) != len(labels):
        raise DatasetFormatError(
            f"{where}: {len(images):,} images but {len(labels):,} labels", hint=fix
        )
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        bad = int(np.flatnonzero((labels < 0) | (labels >= spec.num_classes))[0])
        raise DatasetFormatError(
            f"{where}: label {labels[bad]} at index {bad} is outside the class range "
            f"0..{spec.num_classes - 1}",
            hint=fix,
        )
    return images, labels


def load_dataset(
    name: str,
    split: str = "train",
    *,
    home: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> DatasetSplit:
    """Load one split of a dataset, fetching it first if it is not cached.

    Args:
        name: a registered (``mnistlab data list``) or imported dataset.
        split: ``"train"`` or ``"test"``. For a validation split, see
            :func:`mnistlab.data.validation_split`.
        home: cache root (default ``$MNISTLAB_HOME`` or the user cache directory).
        download: fetch the dataset when it is not cached (else raise).
        mirrors: mirrors for that fetch (see :func:`mnistlab.fetch_dataset`).

    Returns:
        A :class:`DatasetSplit`: uint8 images (N, 28, 28) and int64 labels (N,), each read
        with a single read from the decompressed cache.

    Raises:
        DatasetNotFoundError: unknown dataset.
        DatasetNotCachedError: not cached and ``download`` is false.
        DatasetFormatError: a cached file is malformed (the message says which and why).
    """
    spec = get_spec(name, home)
    if split not in spec.splits:
        raise DatasetFormatError(
            f"dataset {name!r} has no split {split!r}; it has {', '.join(spec.splits)}",
            hint="use validation_split() on the train split for a validation set",
        )
    if not is_cached(spec, home):
        if not download:
            raise DatasetNotCachedError(
                f"dataset {name!r} is not cached", hint=f"run `mnistlab data fetch {name}`"
            )
        from mnistlab.data.download import fetch_dataset

        fetch_dataset(name, home=home, mirrors=mirrors)
    directory = files_dir(spec, home)
    files = spec.splits[split]

    def path(remote: RemoteFile) -> Path:
        return directory / (remote.name if spec.bundled else remote.local_name)

    fix = (
        f"check the cache with `mnistlab data verify {name}`, then re-fetch with "
        f"`mnistlab data fetch {name} --force` (or re-import it)"
    )
    images = _read(path(files.images), spec.bundled)
    labels = _read(path(files.labels), spec.bundled)
    where = f"{name}/{split} (files {path(files.images)}, {path(files.labels)})"
    images, labels = check_split_arrays(images, labels, spec, where, fix)
    return DatasetSplit(images, labels, spec.name, split, spec.class_names)
