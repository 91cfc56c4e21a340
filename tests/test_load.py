"""Loading cached datasets into numpy: the real data's facts, and every kind of damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mnistlab
from mnistlab.data.cache import dataset_dir
from mnistlab.data.explore import find_cross_duplicates
from mnistlab.data.idx import read_idx, write_idx
from mnistlab.errors import DatasetFormatError, DatasetNotCachedError, DatasetNotFoundError
from mnistlab.io import atomic_write_bytes, atomic_write_json

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def check_arrays(split: mnistlab.DatasetSplit, n: int) -> None:
    images, labels = split.arrays()
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert len(split) == n
    assert images.flags.writeable and labels.flags.writeable
    assert images.flags.c_contiguous


# ---------------------------------------------------------------------------- real data


def test_mnist_official_counts(mnist: dict[str, mnistlab.DatasetSplit]) -> None:
    train, test = mnist["train"], mnist["test"]
    check_arrays(train, 60000)
    check_arrays(test, 10000)
    assert np.bincount(train.labels, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(test.labels, minlength=10).tolist() == MNIST_TEST_COUNTS
    assert train.class_names == tuple("0123456789") and train.num_classes == 10
    assert (train.dataset, train.split, test.split) == ("mnist", "train", "test")
    # White digits on black: mostly background, full range used.
    assert train.images.min() == 0 and train.images.max() == 255
    assert 0.12 < train.images.mean() / 255 < 0.14  # the well-known 0.1307
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_loaded_arrays_are_independent_copies(mnist_home: Path) -> None:
    a = mnistlab.load_dataset("mnist", "test", home=mnist_home)
    a.images[0, 0, 0] = 77
    b = mnistlab.load_dataset("mnist", "test", home=mnist_home)
    assert b.images[0, 0, 0] == 0


def test_fashion_mnist(mnist_home: Path) -> None:
    test = mnistlab.load_dataset("fashion-mnist", "test", home=mnist_home)
    check_arrays(test, 10000)
    assert test.class_names == FASHION_CLASSES
    assert np.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert mnistlab.get_spec("fashion-mnist").class_names == FASHION_CLASSES
    assert test.labels[:5].tolist() == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, ...


def test_load_uses_the_default_home(mnist_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNISTLAB_HOME", str(mnist_home))
    assert len(mnistlab.load_dataset("fashion-mnist", "test", download=False)) == 10000


def test_mnist_mini_offline(mini: dict[str, mnistlab.DatasetSplit]) -> None:
    # Loaded with download=False into an empty home: it ships inside the package.
    check_arrays(mini["train"], 5000)
    check_arrays(mini["test"], 1000)
    assert np.bincount(mini["train"].labels, minlength=10).tolist() == [500] * 10
    assert np.bincount(mini["test"].labels, minlength=10).tolist() == [100] * 10
    checks = mnistlab.verify_dataset("mnist-mini")
    assert len(checks) == 4 and all(c.ok for c in checks)


def test_mnist_mini_is_a_subset_of_mnist(
    mini: dict[str, mnistlab.DatasetSplit], mnist: dict[str, mnistlab.DatasetSplit]
) -> None:
    for split in ("train", "test"):
        big, small = mnist[split], mini[split]
        pairs = find_cross_duplicates(big.images, small.images)
        assert [j for _, j in pairs] == list(range(len(small)))  # every mini image found
        where = np.array([i for i, _ in pairs])
        np.testing.assert_array_equal(big.labels[where], small.labels)  # with its label
        assert len(set(where.tolist())) > 0.99 * len(small)  # distinct images, not one repeated


# ---------------------------------------------------------------------------- not there


def test_uncached_without_download(home: Path) -> None:
    for name in ("mnist", "fashion-mnist", "kmnist", "qmnist"):
        with pytest.raises(DatasetNotCachedError, match=f"{name!r} is not cached") as info:
            mnistlab.load_dataset(name, "train", home=home, download=False)
        assert f"mnistlab data fetch {name}" in info.value.hint
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())


def test_unknown_dataset_suggests_a_name(home: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        mnistlab.load_dataset("mnsit", home=home)
    assert "unknown dataset 'mnsit'" in info.value.message
    assert "mnist" in info.value.message and "fashion-mnist" in info.value.message
    assert "did you mean 'mnist'?" in info.value.hint
    assert isinstance(info.value, KeyError) and "did you mean" in str(info.value)

    with pytest.raises(DatasetNotFoundError) as info:
        mnistlab.load_dataset("fashion_mnist", home=home)
    assert "did you mean 'fashion-mnist'?" in info.value.hint

    with pytest.raises(DatasetNotFoundError) as info:
        mnistlab.load_dataset("../../etc", home=home)
    assert "did you mean" not in (info.value.hint or "")


def test_unknown_split() -> None:
    for split in ("val", "validation", "TRAIN", ""):
        with pytest.raises(DatasetFormatError, match=f"no split {split!r}") as info:
            mnistlab.load_dataset("mnist-mini", split)
        assert "validation_split" in info.value.hint


# ---------------------------------------------------------------------------- damaged caches


def test_corrupt_label_out_of_range(link_cached, home: Path, mnist_home: Path) -> None:
    directory = link_cached("mnist")
    labels_path = directory / "t10k-labels-idx1-ubyte"
    labels = read_idx(labels_path)
    labels[5] = 12
    write_idx(labels_path, labels)
    with pytest.raises(DatasetFormatError) as info:
        mnistlab.load_dataset("mnist", "test", home=home)
    message = info.value.message
    assert "label 12 at index 5 is outside the class range 0..9" in message
    assert str(labels_path) in message
    assert "mnistlab data verify mnist" in info.value.hint
    assert "fetch mnist --force" in info.value.hint
    # The train split is untouched and still loads; the session cache was not touched.
    assert len(mnistlab.load_dataset("mnist", "train", home=home)) == 60000
    assert read_idx(dataset_dir("mnist", mnist_home) / labels_path.name)[5] == 1
    # and `verify` sees the damage
    bad = [c for c in mnistlab.verify_dataset("mnist", home) if not c.ok]
    assert [c.file for c in bad] == ["t10k-labels-idx1-ubyte"]


def test_corrupt_count_mismatch(link_cached, home: Path) -> None:
    directory = link_cached("mnist")
    labels_path = directory / "t10k-labels-idx1-ubyte"
    write_idx(labels_path, read_idx(labels_path)[:-3])  # a valid IDX file, 3 labels short
    with pytest.raises(DatasetFormatError, match="10,000 images but 9,997 labels") as info:
        mnistlab.load_dataset("mnist", "test", home=home)
    assert str(labels_path) in info.value.message
    assert info.value.hint


def test_corrupt_truncated_images(link_cached, home: Path) -> None:
    directory = link_cached("mnist")
    images_path = directory / "t10k-images-idx3-ubyte"
    atomic_write_bytes(images_path, images_path.read_bytes()[:-1000])
    with pytest.raises(DatasetFormatError, match="truncated data") as info:
        mnistlab.load_dataset("mnist", "test", home=home)
    assert str(images_path) in info.value.message
    assert "7,840,016 bytes" in info.value.message and "7,839,016 bytes" in info.value.message
    assert "re-fetch" in info.value.hint


def test_corrupt_wrong_magic(link_cached, home: Path) -> None:
    directory = link_cached("mnist")
    labels_path = directory / "t10k-labels-idx1-ubyte"
    data = bytearray(labels_path.read_bytes())
    data[2] = 0x0A  # no such type code
    atomic_write_bytes(labels_path, bytes(data))
    with pytest.raises(DatasetFormatError, match="wrong magic number 0x00000a01") as info:
        mnistlab.load_dataset("mnist", "test", home=home)
    assert str(labels_path) in info.value.message
    assert info.value.hint


def test_corrupt_missing_file_is_not_cached(link_cached, home: Path) -> None:
    directory = link_cached("mnist")
    (directory / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetNotCachedError):
        mnistlab.load_dataset("mnist", "test", home=home, download=False)


def make_custom(home: Path, name: str = "tiny", n: int = 12) -> tuple[Path, np.ndarray, np.ndarray]:
    """A hand-made imported dataset: IDX files written with write_idx and a manifest."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 3
    directory = dataset_dir(name, home)
    write_idx(directory / "train-images-idx3-ubyte", images)
    write_idx(directory / "train-labels-idx1-ubyte", labels)

    def entry(file: str) -> dict:
        path = directory / file
        return {"file": file, "size": path.stat().st_size, "sha256": "0" * 64}

    atomic_write_json(
        directory / "manifest.json",
        {
            "format": 1,
            "name": name,
            "origin": "imported",
            "source": "hand-made",
            "class_names": ["a", "b", "c"],
            "label_column": None,
            "splits": {
                "train": {
                    "count": n,
                    "images": entry("train-images-idx3-ubyte"),
                    "labels": entry("train-labels-idx1-ubyte"),
                }
            },
        },
    )
    return directory, images, labels


def test_custom_dataset_from_manifest(home: Path) -> None:
    _, images, labels = make_custom(home)
    split = mnistlab.load_dataset("tiny", home=home, download=False)
    np.testing.assert_array_equal(split.images, images)
    np.testing.assert_array_equal(split.labels, labels)
    assert split.class_names == ("a", "b", "c") and split.labels.dtype == np.int64
    assert "tiny" in [s.spec.name for s in mnistlab.list_datasets(home)]
    with pytest.raises(DatasetFormatError, match="no split 'test'"):
        mnistlab.load_dataset("tiny", "test", home=home)


def test_custom_dataset_wrong_image_dtype(home: Path) -> None:
    directory, images, _ = make_custom(home)
    write_idx(directory / "train-images-idx3-ubyte", images.astype(np.float32))
    with pytest.raises(DatasetFormatError, match=r"images must be uint8 .* got float32") as info:
        mnistlab.load_dataset("tiny", home=home)
    assert "train-images-idx3-ubyte" in info.value.message and info.value.hint


def test_custom_dataset_label_out_of_its_classes(home: Path) -> None:
    directory, _, labels = make_custom(home)
    labels = labels.copy()
    labels[-1] = 3  # only 3 classes: a, b, c
    write_idx(directory / "train-labels-idx1-ubyte", labels)
    with pytest.raises(DatasetFormatError, match=r"label 3 at index 11 .* 0\.\.2"):
        mnistlab.load_dataset("tiny", home=home)


def test_custom_dataset_malformed_manifest(home: Path) -> None:
    directory, _, _ = make_custom(home)
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["splits"]["train"]["images"]
    atomic_write_json(directory / "manifest.json", manifest)
    with pytest.raises(DatasetFormatError, match="malformed manifest") as info:
        mnistlab.load_dataset("tiny", home=home)
    assert str(directory) in info.value.hint
    # A damaged import is left out of the listing instead of breaking it.
    assert "tiny" not in [s.spec.name for s in mnistlab.list_datasets(home)]

    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="unreadable manifest"):
        mnistlab.load_dataset("tiny", home=home)


# ---------------------------------------------------------------------------- the sequence contract


def test_split_is_a_sequence_of_examples() -> None:
    """``len``, indexing and iteration agree (torchvision's contract): N examples."""
    split = mnistlab.load_dataset("mnist-mini", "test", download=False)
    n = len(split)
    image, label = split[0]
    assert image.shape == (28, 28) and image.dtype == np.uint8 and isinstance(label, int)
    assert np.array_equal(split[-1][0], split.images[n - 1]) and split[-1][1] == split.labels[-1]
    pairs = list(split)
    assert len(pairs) == n
    assert all(lbl == split.labels[i] for i, (_, lbl) in enumerate(pairs[:50]))
    with pytest.raises(IndexError):
        split[n]
    with pytest.raises(TypeError, match="subset"):
        split[0:3]


def test_torch_dataset_in_a_dataloader_with_workers() -> None:
    """Every image exactly once per epoch through ``DataLoader(num_workers=2)``."""
    import torch
    from torch.utils.data import DataLoader

    split = mnistlab.load_dataset("mnist-mini", "test", download=False).subset(range(300))
    dataset = split.torch_dataset()
    assert len(dataset) == 300
    x, y = dataset[7]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and float(x.max()) <= 1.0
    assert y == int(split.labels[7])
    loader = DataLoader(dataset, batch_size=64, shuffle=True, num_workers=2)
    seen_images, seen_labels = [], []
    for images, labels in loader:
        seen_images.append(images)
        seen_labels.append(labels)
    images = torch.cat(seen_images).squeeze(1).mul(255).round().to(torch.uint8).numpy()
    labels = torch.cat(seen_labels).numpy()
    assert len(images) == 300
    order = np.lexsort(images.reshape(300, -1).T)
    expected = np.lexsort(split.images.reshape(300, -1).T)
    assert np.array_equal(images[order], split.images[expected])  # each image once
    assert np.array_equal(np.sort(labels), np.sort(split.labels))
    custom = split.torch_dataset(transform=lambda img: img.sum())
    assert custom[0][0] == split.images[0].sum()
