"""Splits to and from the formats other tools read: a Keras-style ``.npz`` and a folder of
PNG files per class (torchvision's ``ImageFolder`` layout, ``<split>/<class>/<n>.png``).

Export writes atomically (the finished folder or file appears at once, never half-written)
and never over an existing path. The PNG reader takes 28x28 greyscale pictures as they are
(RGB is converted to grey, anything else refused): converting a photo to MNIST form is
``mnistlab predict``'s job, not the dataset's.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from mnistlab.data.load import DatasetSplit
from mnistlab.data.registry import MAX_CLASSES
from mnistlab.errors import ImportDataError, OverwriteError

FORMATS = ("npz", "png")
PNG_SUFFIXES = (".png",)
MAX_PNG_BYTES = 1 << 20  # one 28x28 PNG is ~1 KB: a megabyte is not a digit


def export_split(split: DatasetSplit, out: str | os.PathLike[str], fmt: str = "npz") -> Path:
    """Write ``split`` as ``out``: a ``.npz`` (``x_<split>``, ``y_<split>`` and
    ``class_names``, no pickle) or a folder ``out/<split>/<class name>/<index>.png``.

    Raises:
        OverwriteError: ``out`` exists.
        ValueError: an unknown ``fmt``.
    """
    target = Path(out).expanduser()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if target.exists():
        raise OverwriteError(f"{target} exists", hint="choose a new path for the export")
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".npz", delete=False) as tmp:
            np.savez_compressed(
                tmp,
                **{f"x_{split.split}": split.images, f"y_{split.split}": split.labels},
                class_names=np.asarray(split.class_names, dtype=str),
            )
        os.replace(tmp.name, target)
        return target
    from PIL import Image

    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for k, name in enumerate(split.class_names):
            (staging / split.split / _folder_name(name, k)).mkdir(parents=True)
        for i, (image, label) in enumerate(split):
            folder = staging / split.split / _folder_name(split.class_names[label], label)
            Image.fromarray(image, mode="L").save(folder / f"{i:06d}.png")
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _folder_name(name: str, index: int) -> str:
    """A class name usable as a folder name (the index when it is not)."""
    safe = name.strip()
    if not safe or safe in (".", "..") or "/" in safe or "\\" in safe or "\0" in safe:
        return str(index)
    return safe


def is_image_folder(folder: Path) -> bool:
    """Whether ``folder`` is laid out as ``<class>/*.png`` or ``<split>/<class>/*.png``."""
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in subdirs:
        inner = [p for p in sub.iterdir() if not p.name.startswith(".")]
        if any(p.suffix.lower() in PNG_SUFFIXES for p in inner):
            return True
        for nested in (p for p in inner if p.is_dir()):
            if any(q.suffix.lower() in PNG_SUFFIXES for q in nested.iterdir()):
                return True
    return False


def read_image_folder(folder: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """``({split: (images, labels)}, class names)`` from an ``ImageFolder`` layout: classes are
    the sorted sub-folder names (as torchvision numbers them); ``train``/``test`` sub-folders
    of class folders are splits, otherwise the whole folder is the ``train`` split.

    Raises:
        ImportDataError: a picture that is not a 28x28 PNG, too many classes, no pictures,
            or splits whose classes differ.
    """
    splits = {
        s: folder / s
        for s in ("train", "test")
        if (folder / s).is_dir() and _has_classes(folder / s)
    }
    roots = splits or {"train": folder}
    read: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    names: list[str] | None = None
    for split, root in roots.items():
        classes = sorted(
            p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if len(classes) > MAX_CLASSES:
            raise ImportDataError(
                f"{root}: {len(classes):,} class folders; a dataset may have at most "
                f"{MAX_CLASSES:,} classes"
            )
        if names is not None and classes != names:
            raise ImportDataError(
                f"{root}: classes {classes[:5]}... differ from the other split's {names[:5]}...",
                hint="give train/ and test/ the same class folders",
            )
        names = classes
        images, labels = [], []
        for label, name in enumerate(classes):
            for path in sorted((root / name).iterdir()):
                if path.suffix.lower() in PNG_SUFFIXES:
                    images.append(_read_png(path))
                    labels.append(label)
        if not images:
            raise ImportDataError(f"{root}: no PNG pictures in its class folders")
        read[split] = (np.stack(images), np.asarray(labels, dtype=np.int64))
    return read, names or []


def _has_classes(root: Path) -> bool:
    return any(p.is_dir() for p in root.iterdir())


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size > MAX_PNG_BYTES:
        raise ImportDataError(f"{path}: {path.stat().st_size:,} bytes is no 28x28 digit picture")
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            if image.format != "PNG":
                raise ImportDataError(f"{path}: a {image.format} file named .png")
            if image.size != (28, 28):
                raise ImportDataError(
                    f"{path}: {image.size[0]}x{image.size[1]} pixels; dataset pictures are 28x28",
                    hint="bring pictures to MNIST form first (mnistlab.shipping.to_mnist)",
                )
            if image.mode not in ("L", "RGB", "RGBA", "P", "LA"):
                raise ImportDataError(f"{path}: image mode {image.mode!r} is not greyscale/RGB")
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImportDataError(f"{path}: not a readable PNG ({exc})") from None
