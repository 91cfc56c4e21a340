"""Splits out to the formats other tools read (npz, a PNG folder per class) and back in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import import_dataset, load_dataset
from mnistlab.data.exchange import export_split
from mnistlab.errors import ImportDataError, OverwriteError


def _sorted(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((*images.reshape(len(images), -1).T[::-1], labels))
    return images[order], labels[order]


@pytest.fixture
def small() -> object:
    return load_dataset("mnist-mini", "test", download=False).subset(range(120))


def test_png_folder_round_trip(small, tmp_path: Path) -> None:
    folder = export_split(small, tmp_path / "pngs", "png")
    assert sorted(p.name for p in (folder / "test").iterdir()) == sorted(small.class_names)
    assert len(list(folder.rglob("*.png"))) == 120
    import_dataset(folder, "mini-png", home=tmp_path / "home")
    back = load_dataset("mini-png", "test", home=tmp_path / "home")
    assert back.class_names == small.class_names
    a, b = _sorted(small.images, small.labels), _sorted(back.images, back.labels)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_npz_round_trip_keeps_class_names(tmp_path: Path) -> None:
    split = load_dataset("mnist-mini", "train", download=False).subset(range(200))
    split = type(split)(split.images, split.labels, "x", "train", tuple("abcdefghij"))
    path = export_split(split, tmp_path / "mini.npz", "npz")
    import_dataset(path, "mini-npz", home=tmp_path / "home")
    back = load_dataset("mini-npz", "train", home=tmp_path / "home")
    assert np.array_equal(back.images, split.images) and np.array_equal(back.labels, split.labels)
    assert back.class_names == tuple("abcdefghij")
    with pytest.raises(OverwriteError):
        export_split(split, path, "npz")  # never over an existing path


def test_image_folder_import_refuses_wrong_pictures(tmp_path: Path) -> None:
    root = tmp_path / "digits"
    (root / "cat").mkdir(parents=True)
    Image.new("L", (28, 28)).save(root / "cat" / "a.png")
    Image.new("L", (64, 64)).save(root / "cat" / "b.png")
    with pytest.raises(ImportDataError, match="64x64 pixels; dataset pictures are 28x28"):
        import_dataset(root, "bad-pngs", home=tmp_path / "home")
    (root / "cat" / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImportDataError, match="not a readable PNG"):
        import_dataset(root, "bad-pngs", home=tmp_path / "home")


def test_image_folder_with_splits_and_the_cli(small, tmp_path: Path) -> None:
    home = tmp_path / "home"
    runner = CliRunner()
    out = tmp_path / "export"
    result = runner.invoke(
        app, ["data", "export", "mnist-mini", "--split", "test", "--to", "png", "--out", str(out),
              "--home", str(home)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    train_dir = out / "train"
    (out / "test").rename(train_dir)  # a second split from the same pictures
    export_split(small, tmp_path / "second", "png")
    (tmp_path / "second" / "test").rename(out / "test")
    result = runner.invoke(
        app, ["data", "import", str(out), "--name", "two-splits", "--home", str(home)]
    )
    assert result.exit_code == 0, result.output
    assert len(load_dataset("two-splits", "train", home=home)) == 1000
    assert len(load_dataset("two-splits", "test", home=home)) == 120
    result = runner.invoke(app, ["data", "export", "mnist-mini", "--to", "tiff", "--out",
                                 str(tmp_path / "x"), "--home", str(home)])  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
