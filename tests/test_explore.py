"""Exploration: summary statistics, exact duplicates, plots and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

import mnistlab
from mnistlab.data.explore import (
    PLOT_FILES,
    find_cross_duplicates,
    find_duplicates,
    summarize_split,
    summarize_splits,
)
from mnistlab.data.load import DatasetSplit
from mnistlab.errors import OverwriteError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_summary_of_mnist_mini(mini: dict[str, DatasetSplit]) -> None:
    summary = mnistlab.summarize_dataset("mnist-mini")
    assert summary.name == "mnist-mini" and summary.class_names == tuple("0123456789")
    assert list(summary.splits) == ["train", "test"]
    for split, n in (("train", 5000), ("test", 1000)):
        s = summary.splits[split]
        images = mini[split].images
        assert (s.split, s.count) == (split, n)
        assert s.class_counts == (n // 10,) * 10
        assert s.pixel_mean == pytest.approx(images.mean() / 255, abs=1e-9)
        assert s.pixel_std == pytest.approx(images.std() / 255, abs=1e-9)
        assert s.pixel_histogram == tuple(np.bincount(images.ravel(), minlength=256).tolist())
        assert sum(s.pixel_histogram) == n * 784
        assert (s.duplicate_images, s.duplicate_groups) == (0, 0)
    assert 0.1 < summary.splits["train"].pixel_mean < 0.16  # MNIST's mean is about 0.13
    assert summary.cross_split_duplicates == 0 and summary.cross_split_examples == ()


def test_nothing_duplicated_in_clean_data(mini: dict[str, DatasetSplit]) -> None:
    assert find_duplicates(mini["train"].images) == []
    assert find_cross_duplicates(mini["train"].images, mini["test"].images) == []


def test_planted_duplicates(mini: dict[str, DatasetSplit]) -> None:
    base = mini["train"].subset(range(200))
    images = base.images.copy()
    images[50] = images[7]  # a pair
    images[120] = images[7]  # ... that becomes a group of three
    images[199] = images[0]  # another pair
    almost = images[10].copy()
    almost[14, 14] ^= 1  # one pixel off: not a duplicate
    images[11] = almost
    planted = DatasetSplit(images, base.labels, "planted", "train", base.class_names)

    assert find_duplicates(images) == [[0, 199], [7, 50, 120]]
    s = summarize_split(planted)
    assert (s.duplicate_images, s.duplicate_groups) == (3, 2)

    test_images = mini["test"].images[:30].copy()
    test_images[4] = images[7]
    test_images[20] = images[150]
    test = DatasetSplit(test_images, mini["test"].labels[:30], "planted", "test", base.class_names)
    assert find_cross_duplicates(images, test_images) == [(7, 4), (150, 20)]
    summary = summarize_splits({"train": planted, "test": test})
    assert summary.cross_split_duplicates == 2
    assert summary.cross_split_examples == ((7, 4), (150, 20))


def test_all_identical_and_empty() -> None:
    images = np.zeros((5, 28, 28), np.uint8)
    assert find_duplicates(images) == [[0, 1, 2, 3, 4]]
    assert find_duplicates(images[:0]) == []
    assert find_cross_duplicates(images[:2], images[:3]) == [(0, 0), (0, 1), (0, 2)]


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert len(data) > 5000, path  # a real plot, not an empty canvas
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels[..., :3].std() > 0.01  # not a blank image


def test_explore_writes_plots_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "explore" / "mini"
    summary, written = mnistlab.explore_dataset("mnist-mini", out, samples=16)
    names = [*PLOT_FILES, "summary.json"]
    assert [p.name for p in written] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    for path in written[:-1]:
        check_png(path)
    saved = json.loads((out / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary.to_dict()))
    assert saved["splits"]["train"]["count"] == 5000
    assert saved["splits"]["test"]["class_counts"] == [100] * 10

    # A second run refuses to replace them, and changes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(OverwriteError, match="already holds") as info:
        mnistlab.explore_dataset("mnist-mini", out)
    assert "samples.png" in info.value.message and "--overwrite" in info.value.hint
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # Even one leftover file is protected.
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text("{}")
    with pytest.raises(OverwriteError, match=r"summary\.json"):
        mnistlab.explore_dataset("mnist-mini", other)
    assert (other / "summary.json").read_text() == "{}"


def test_explore_overwrite_and_custom_dataset(tmp_path: Path, home: Path, mini) -> None:
    # A one-split dataset with its own class names.
    source = tmp_path / "clothes.npz"
    keep = mini["test"].labels < 3
    np.savez(source, x_test=mini["test"].images[keep], y_test=mini["test"].labels[keep])
    names = ["T-shirt/top", "Trouser", "Pullover"]
    mnistlab.import_dataset(source, "clothes", home=home, class_names=names)

    out = tmp_path / "out"
    out.mkdir()
    (out / "samples.png").write_bytes(b"old")
    summary, written = mnistlab.explore_dataset(
        "clothes", out, home=home, samples=4, overwrite=True
    )
    assert list(summary.splits) == ["test"] and summary.class_names == tuple(names)
    assert summary.splits["test"].class_counts == (100, 100, 100)
    for path in written[:-1]:
        check_png(path)
    assert json.loads((out / "summary.json").read_text())["class_names"] == names
