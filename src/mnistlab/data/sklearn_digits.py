"""scikit-learn's 1,797 handwritten digits, brought to MNIST form and cached as IDX.

``sklearn.datasets.load_digits`` ships the test set of the UCI "Optical Recognition of
Handwritten Digits" data: 13 writers (of 43 who filled in preprinted forms) not in its training
set, each digit a 32x32 bitmap reduced to 8x8 counts of ink pixels in 4x4 blocks (0-16). It is
bundled with scikit-learn, so building it needs no network.

Each image is converted the way MNIST was made (see docs/data.md):

1. crop to the ink (the pixels above 0);
2. scale so that the ink's longer side is 20 pixels, keeping the aspect ratio: bilinear
   interpolation (pixel centres aligned, edges clamped) of the 0-16 grey levels, then 0-16 ->
   0-255, rounded half up;
3. paste into 28x28 so that the centre of mass lands on pixel (14, 14), rounded to whole
   pixels (half up), kept inside the field.

Every step is integer arithmetic (the interpolation weights are multiples of 1/40 on each
axis), so the IDX bytes, and their SHA-256 in the registry, are the same on every machine. All
1,797 images form the ``test`` split: they are a test set by origin, and no model here is
trained on them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from mnistlab.data.cache import MANIFEST, new_manifest
from mnistlab.data.idx import idx_bytes
from mnistlab.data.registry import DatasetSpec, RemoteFile
from mnistlab.errors import ChecksumError
from mnistlab.io import atomic_write_json, sha256_file

log = logging.getLogger("mnistlab")

#: SHA-256 of ``load_digits()``'s pixels as uint8 (1,797 x 64, row-major) followed by its
#: labels as uint8: the source is checked before anything is converted.
SOURCE_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"

_BOX = 20  # the longer side of the ink, as MNIST's 20x20 box
_FIELD = 28
_STEPS = 2 * _BOX  # interpolation weights are multiples of 1 / _STEPS


def _weights(n: int, longest: int) -> np.ndarray:
    """Bilinear weights (integers summing to ``_STEPS`` per row), ``n`` source pixels scaled
    by ``_BOX / longest``: output pixel ``i`` samples source position ``(i + 0.5) * longest /
    _BOX - 0.5``, clamped to the crop."""
    m = max(1, (2 * n * _BOX + longest) // (2 * longest))  # round(n * _BOX / longest)
    w = np.zeros((m, n), np.int64)
    for i in range(m):
        pos = min(max((2 * i + 1) * longest - _BOX, 0), _STEPS * (n - 1))  # in 1/_STEPS units
        i0, frac = divmod(pos, _STEPS)
        w[i, i0] += _STEPS - frac
        w[i, min(i0 + 1, n - 1)] += frac
    return w


def _centre(total: int, moment: int) -> int:
    """``round(moment / total)``, half up, in integers."""
    return (2 * moment + total) // (2 * total)


def to_mnist_form(images: np.ndarray, max_value: int = 16) -> np.ndarray:
    """Small grey images of light ink on 0 (values ``0..max_value``) in MNIST form.

    Args:
        images: integer array ``(N, H, W)``, 0 = background.
        max_value: the largest grey level (16 for scikit-learn's digits); it becomes 255.

    Returns:
        uint8 ``(N, 28, 28)``: each image's ink scaled so its longer side is 20 pixels
        (bilinear, aspect kept) and placed with its centre of mass on pixel (14, 14), rounded
        to whole pixels and kept inside the field. A blank image stays blank.

    Raises:
        ValueError: not a 3-D array of integers within ``0..max_value``.
    """
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.dtype.kind not in "iuf":
        raise ValueError(f"images must be an (N, H, W) array; got {arr.dtype} {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > max_value or np.any(arr != np.round(arr))):
        raise ValueError(f"pixels must be whole numbers in 0..{max_value}")
    arr = arr.astype(np.int64)
    out = np.zeros((len(arr), _FIELD, _FIELD), np.uint8)
    denominator = _STEPS * _STEPS * max_value
    for k, image in enumerate(arr):
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        if not len(rows):
            continue
        crop = image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        longest = max(crop.shape)
        wy, wx = _weights(crop.shape[0], longest), _weights(crop.shape[1], longest)
        scaled = wy @ crop @ wx.T  # exact integers, grey * _STEPS**2
        grey = ((scaled * 255 + denominator // 2) // denominator).astype(np.int64)
        total = int(grey.sum())
        if total == 0:
            continue
        h, w = grey.shape
        cy = _centre(total, int((grey.sum(axis=1) * np.arange(h)).sum()))
        cx = _centre(total, int((grey.sum(axis=0) * np.arange(w)).sum()))
        top = min(max(_FIELD // 2 - cy, 0), _FIELD - h)
        left = min(max(_FIELD // 2 - cx, 0), _FIELD - w)
        out[k, top : top + h, left : left + w] = grey
    return out


def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits, checked: uint8 ``(1797, 8, 8)`` (0-16) and labels.

    Raises:
        ChecksumError: the bundled data is not the data mnistlab's registry was made from.
        ImportError: scikit-learn is not installed.
    """
    from sklearn.datasets import load_digits  # heavy: only when building

    bunch = load_digits()
    pixels = np.asarray(bunch.data).astype(np.uint8).reshape(-1, 8, 8)
    labels = np.asarray(bunch.target).astype(np.uint8)
    digest = hashlib.sha256(pixels.tobytes() + labels.tobytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise ChecksumError(
            f"scikit-learn's load_digits() data has SHA-256 {digest}, expected {SOURCE_SHA256}",
            hint="reinstall scikit-learn; its bundled digits differ from the ones mnistlab knows",
        )
    return pixels, labels


def build_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The dataset's splits as arrays: ``{"test": (images uint8 (1797, 28, 28), labels)}``."""
    pixels, labels = source_digits()
    return {"test": (to_mnist_form(pixels), labels)}


def build_dataset(spec: DatasetSpec, directory: Path, force: bool = False) -> Path:
    """Build ``spec``'s IDX files from scikit-learn into ``directory``, verify each against the
    registry's size and SHA-256, and write the manifest last (then the dataset is cached).

    The caller (:func:`mnistlab.data.download.fetch_dataset`) holds no lock: this takes the
    dataset's lock file, as a fetch does.

    Raises:
        ChecksumError: the source or a built file does not match the registry.
    """
    from filelock import FileLock

    from mnistlab import __version__

    with FileLock(str(directory.parent / f".{spec.name}.lock")):
        if (directory / MANIFEST).is_file() and not force:
            return directory
        (directory / MANIFEST).unlink(missing_ok=True)
        import sklearn

        arrays = build_arrays()
        for split, files in spec.splits.items():
            images, labels = arrays[split]
            for remote, data in ((files.images, images), (files.labels, labels)):
                _write_verified(directory, remote, idx_bytes(data))
        source = f"scikit-learn {sklearn.__version__} load_digits (mnistlab {__version__})"
        atomic_write_json(directory / MANIFEST, new_manifest(spec, source))
    log.info("built and verified %s into %s", spec.name, directory)
    return directory


def _write_verified(directory: Path, remote: RemoteFile, data: bytes) -> None:
    tmp = directory / f".{remote.local_name}.{os.getpid()}.tmp"
    try:
        tmp.write_bytes(data)
        size, sha = tmp.stat().st_size, sha256_file(tmp)
        if (remote.payload_size is not None and size != remote.payload_size) or (
            remote.payload_sha256 is not None and sha != remote.payload_sha256
        ):
            raise ChecksumError(
                f"built {remote.local_name}: {size:,} bytes with SHA-256 {sha}; the registry "
                f"expects {remote.payload_size:,} bytes with SHA-256 {remote.payload_sha256}",
                hint="the conversion changed; update the registry only if that was intended",
            )
        os.replace(tmp, directory / remote.local_name)
    finally:
        tmp.unlink(missing_ok=True)
