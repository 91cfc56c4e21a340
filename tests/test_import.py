"""Importing local files: IDX folders, Keras-style npz, Kaggle-style CSV; and refusals."""

from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

import mnistlab
from mnistlab.data.cache import dataset_dir
from mnistlab.data.idx import read_idx, write_idx
from mnistlab.errors import ImportDataError, MnistlabError, OverwriteError

NAMES = [f"pixel{i}" for i in range(784)]


def names_in(home: Path) -> dict[str, mnistlab.data.DatasetStatus]:
    return {s.spec.name: s for s in mnistlab.list_datasets(home)}


def assert_same(a: mnistlab.DatasetSplit, b: mnistlab.DatasetSplit) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.dtype == b.images.dtype == np.uint8
    assert a.labels.dtype == b.labels.dtype == np.int64


def write_csv(
    path: Path, images: np.ndarray, labels: np.ndarray | None, header: bool = True
) -> Path:
    flat = images.reshape(len(images), -1).astype(np.int64)
    rows = flat if labels is None else np.column_stack([labels, flat])
    cols = NAMES if labels is None else ["label", *NAMES]
    np.savetxt(
        path, rows, fmt="%d", delimiter=",", header=",".join(cols) if header else "", comments=""
    )
    if not header:  # savetxt writes an empty first line for header=""
        path.write_text(path.read_text().lstrip("\n"))
    return path


@pytest.fixture(scope="module")
def keras_npz(tmp_path_factory: pytest.TempPathFactory, mnist) -> Path:
    """Real MNIST in Keras' mnist.npz layout (uint8 arrays, compressed)."""
    path = tmp_path_factory.mktemp("keras") / "mnist.npz"
    np.savez_compressed(
        path,
        x_train=mnist["train"].images,
        y_train=mnist["train"].labels.astype(np.uint8),
        x_test=mnist["test"].images,
        y_test=mnist["test"].labels.astype(np.uint8),
    )
    return path


# ---------------------------------------------------------------------------- accepted


def test_idx_gz_folder_as_mnist(tmp_path: Path, home: Path, shared_datasets: Path, mnist) -> None:
    folder = tmp_path / "downloads"
    shutil.copytree(shared_datasets / "mnist", folder)
    (folder / "README.txt").write_text("not data")  # ignored
    target = mnistlab.import_dataset(folder, "mnist", home=home)
    assert target == dataset_dir("mnist", home)
    for split in ("train", "test"):
        assert_same(mnistlab.load_dataset("mnist", split, home=home, download=False), mnist[split])
    assert names_in(home)["mnist"].cached
    checks = mnistlab.verify_dataset("mnist", home)
    assert len(checks) == 4 and all(c.ok for c in checks)
    # Stored like a fetched dataset: decompressed IDX with the official names.
    assert sorted(p.name for p in target.iterdir()) == [
        "manifest.json",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]


def test_uncompressed_idx_folder(tmp_path: Path, home: Path, mini) -> None:
    folder = tmp_path / "raw"
    for split, base in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{base}-images-idx3-ubyte", mini[split].images)
        write_idx(folder / f"{base}-labels-idx1-ubyte", mini[split].labels.astype(np.uint8))
    mnistlab.import_dataset(folder, "mini-copy", home=home)
    for split in ("train", "test"):
        got = mnistlab.load_dataset("mini-copy", split, home=home, download=False)
        assert_same(got, mini[split])
        assert got.dataset == "mini-copy" and got.class_names == tuple("0123456789")
    status = names_in(home)["mini-copy"]
    assert status.cached and status.spec.origin == "imported"
    assert all(c.ok for c in mnistlab.verify_dataset("mini-copy", home))


def test_idx_folder_with_only_a_train_split(tmp_path: Path, home: Path, mini) -> None:
    folder = tmp_path / "raw"
    write_idx(folder / "my-train-images.idx3", mini["train"].images[:50])
    write_idx(folder / "my-train-labels.idx1", mini["train"].labels[:50].astype(np.uint8))
    mnistlab.import_dataset(folder, "half", home=home)
    assert list(mnistlab.get_spec("half", home).splits) == ["train"]
    assert_same(mnistlab.load_dataset("half", home=home), mini["train"].subset(range(50)))


def test_keras_npz_as_mnist(keras_npz: Path, home: Path, mnist) -> None:
    mnistlab.import_dataset(keras_npz, "mnist", home=home)
    for split in ("train", "test"):
        assert_same(mnistlab.load_dataset("mnist", split, home=home, download=False), mnist[split])
    assert all(c.ok for c in mnistlab.verify_dataset("mnist", home))


def test_keras_npz_custom_name_and_classes(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "digits.npz"
    np.savez_compressed(
        path,
        x_train=mini["train"].images,
        y_train=mini["train"].labels,  # int64 labels are fine too
        x_test=mini["test"].images.astype(np.int32),  # integer pixels within 0..255 too
        y_test=mini["test"].labels,
    )
    names = [f"digit {i}" for i in range(10)]
    mnistlab.import_dataset(path, "my-digits", home=home, class_names=names)
    for split in ("train", "test"):
        got = mnistlab.load_dataset("my-digits", split, home=home)
        assert_same(got, mini[split])
        assert got.class_names == tuple(names)
    assert names_in(home)["my-digits"].spec.class_names == tuple(names)


def test_kaggle_csv_with_header(tmp_path: Path, home: Path, mnist) -> None:
    train = mnist["train"].subset(range(200))
    path = write_csv(tmp_path / "train.csv", train.images, train.labels)
    assert path.read_text().startswith("label,pixel0,pixel1,")
    mnistlab.import_dataset(path, "kaggle", home=home)  # split from the file name
    assert_same(mnistlab.load_dataset("kaggle", "train", home=home), train)
    assert list(mnistlab.get_spec("kaggle", home).splits) == ["train"]

    test = mnist["test"].subset(range(100))
    path = write_csv(tmp_path / "digits-test.csv", test.images, test.labels)
    mnistlab.import_dataset(path, "kaggle-test", home=home)
    assert list(mnistlab.get_spec("kaggle-test", home).splits) == ["test"]
    assert_same(mnistlab.load_dataset("kaggle-test", "test", home=home), test)

    # An explicit split wins over the name; gzip-compressed CSV works as well.
    gz = tmp_path / "labelled.csv.gz"
    gz.write_bytes(gzip.compress((tmp_path / "train.csv").read_bytes()))
    mnistlab.import_dataset(gz, "kaggle-as-test", home=home, split="test")
    assert_same(mnistlab.load_dataset("kaggle-as-test", "test", home=home), train)


def test_csv_without_header(tmp_path: Path, home: Path, mini) -> None:
    part = mini["train"].subset(range(0, 5000, 50))
    path = write_csv(tmp_path / "plain.csv", part.images, part.labels, header=False)
    assert path.read_text()[0].isdigit()
    mnistlab.import_dataset(path, "plain", home=home)
    assert_same(mnistlab.load_dataset("plain", home=home), part)


def test_csv_folder(tmp_path: Path, home: Path, mini) -> None:
    folder = tmp_path / "kaggle"
    folder.mkdir()
    write_csv(folder / "train.csv", mini["train"].images[:30], mini["train"].labels[:30])
    write_csv(folder / "test.csv", mini["test"].images[:20], mini["test"].labels[:20])
    mnistlab.import_dataset(folder, "kfolder", home=home)
    assert {s: f.count for s, f in mnistlab.get_spec("kfolder", home).splits.items()} == {
        "test": 20,
        "train": 30,
    }


def test_overwrite(tmp_path: Path, home: Path, mini) -> None:
    first = tmp_path / "a.npz"
    np.savez(first, x_train=mini["train"].images[:10], y_train=mini["train"].labels[:10])
    second = tmp_path / "b.npz"
    np.savez(second, x_train=mini["train"].images[10:30], y_train=mini["train"].labels[10:30])
    mnistlab.import_dataset(first, "mine", home=home)
    with pytest.raises(OverwriteError, match="'mine' already exists") as info:
        mnistlab.import_dataset(second, "mine", home=home)
    assert "--overwrite" in info.value.hint
    assert len(mnistlab.load_dataset("mine", home=home)) == 10  # untouched

    mnistlab.import_dataset(second, "mine", home=home, overwrite=True)
    assert_same(mnistlab.load_dataset("mine", home=home), mini["train"].subset(range(10, 30)))
    leftovers = [p.name for p in (home / "datasets").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_overwrite_a_fetched_dataset_needs_the_flag(link_cached, home: Path, keras_npz) -> None:
    link_cached("mnist")
    with pytest.raises(OverwriteError):
        mnistlab.import_dataset(keras_npz, "mnist", home=home)


# ---------------------------------------------------------------------------- refused


def refused(path: Path, name: str, home: Path, match: str, **kwargs) -> ImportDataError:
    with pytest.raises(ImportDataError, match=match) as info:
        mnistlab.import_dataset(path, name, home=home, **kwargs)
    assert not dataset_dir(name, home).exists() or name == "mnist"
    return info.value


def test_csv_without_labels(tmp_path: Path, home: Path, mini) -> None:
    images = mini["train"].images[:5]
    err = refused(write_csv(tmp_path / "a.csv", images, None), "x", home, "first column")
    assert "label" in err.hint
    path = write_csv(tmp_path / "b.csv", images, None, header=False)
    err = refused(path, "x", home, "784 columns, expected 785")
    assert "no label column" in err.hint


def test_csv_bad_pixel(tmp_path: Path, home: Path, mini) -> None:
    path = write_csv(tmp_path / "a.csv", mini["train"].images[:5], mini["train"].labels[:5])
    lines = path.read_text().splitlines()
    cells = lines[3].split(",")
    cells[100] = "300"
    lines[3] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    refused(path, "x", home, "row 3: pixel values must be 0..255")


@pytest.mark.parametrize("cell", ["abc", "1.5", ""], ids=repr)
def test_csv_non_numeric(tmp_path: Path, home: Path, mini, cell: str) -> None:
    path = write_csv(tmp_path / "a.csv", mini["train"].images[:5], mini["train"].labels[:5])
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[7] = cell
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    err = refused(path, "x", home, "not a CSV of integers")
    assert "integer values" in err.hint


def test_csv_ragged_and_empty(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("label," + ",".join(NAMES) + "\n" + "1," + ",".join(["0"] * 784) + "\n3,4\n")
    refused(path, "x", home, "not a CSV of integers")
    path.write_text("label," + ",".join(NAMES) + "\n")
    refused(path, "x", home, "no data rows")


def test_npz_float_images(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x_train=mini["train"].images[:10] / 255.0, y_train=mini["train"].labels[:10])
    err = refused(path, "x", home, "images have dtype float64")
    assert "astype('uint8')" in err.hint


def test_npz_pixels_out_of_range(tmp_path: Path, home: Path, mini) -> None:
    images = mini["train"].images[:10].astype(np.int16)
    images[3, 4, 5] = 256
    path = tmp_path / "f.npz"
    np.savez(path, x_train=images, y_train=mini["train"].labels[:10])
    refused(path, "x", home, "pixel values outside 0..255")


def test_npz_object_array_is_never_unpickled(tmp_path: Path, home: Path, mini) -> None:
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    labels = np.empty(10, dtype=object)
    labels[:] = [Trap() for _ in range(10)]
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=mini["train"].images[:10], y_train=labels)  # pickles the objects
    pickle.loads(pickle.dumps(Trap())).close()  # the trap works when unpickled...
    assert marker.exists()
    marker.unlink()
    err = refused(path, "x", home, "not a readable numpy .npz")  # ...but import never does
    assert "pickle" in err.hint
    assert not marker.exists()


def test_npz_missing_arrays(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, images=mini["train"].images[:3], labels=mini["train"].labels[:3])
    err = refused(path, "x", home, r"no x_train/y_train .* \['images', 'labels'\]")
    assert "Keras" in err.hint
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    refused(path, "x", home, "not a readable numpy .npz")


def test_npz_mismatched_counts_and_shapes(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x_train=mini["train"].images[:10], y_train=mini["train"].labels[:9])
    refused(path, "x", home, "10 images but 9 labels")
    np.savez(path, x_train=mini["train"].images[:10, :, :27], y_train=mini["train"].labels[:10])
    refused(path, "x", home, r"shape \(N, 28, 28\)")


def test_labels_outside_the_given_classes(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x_train=mini["train"].images[:20], y_train=mini["train"].labels[:20])
    err = refused(path, "x", home, r"outside the class range 0\.\.1", class_names=["a", "b"])
    assert "another --name" in err.hint


def test_modified_mnist_under_its_registered_name(
    tmp_path: Path, home: Path, shared_datasets: Path, mnist
) -> None:
    folder = tmp_path / "mnist"
    shutil.copytree(shared_datasets / "mnist", folder)
    labels = mnist["test"].labels.astype(np.uint8)
    labels[0] = 1  # one relabelled test digit
    write_idx(tmp_path / "labels", labels)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress((tmp_path / "labels").read_bytes())
    )
    err = refused(folder, "mnist", home, "the test data is not the official 'mnist' data")
    assert "--name mnist-custom" in err.hint
    assert not dataset_dir("mnist", home).exists()
    # Under another name the same files are welcome.
    mnistlab.import_dataset(folder, "mnist-custom", home=home)
    assert mnistlab.load_dataset("mnist-custom", "test", home=home).labels[0] == 1


def test_partial_mnist_under_its_registered_name(tmp_path: Path, home: Path, mnist) -> None:
    path = tmp_path / "train-only.npz"
    np.savez(path, x_train=mnist["train"].images[:10], y_train=mnist["train"].labels[:10])
    err = refused(path, "mnist", home, "needs both splits; missing test")
    assert "mnist-partial" in err.hint


def test_registered_name_without_payload_checksums(tmp_path: Path, home: Path, mnist) -> None:
    # KMNIST's registry entry only knows the published .gz hashes: data imported as "kmnist"
    # could not be checked, so it is refused instead of trusted.
    path = tmp_path / "k.npz"
    np.savez(
        path,
        x_train=mnist["train"].images[:10],
        y_train=mnist["train"].labels[:10],
        x_test=mnist["test"].images[:10],
        y_test=mnist["test"].labels[:10],
    )
    err = refused(path, "kmnist", home, "cannot be imported")
    assert "mnistlab data fetch kmnist --mirror" in err.hint
    assert not names_in(home)["kmnist"].cached


def test_bundled_and_invalid_names(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x_train=mini["train"].images[:3], y_train=mini["train"].labels[:3])
    refused(path, "mnist-mini", home, "bundled with mnistlab")
    for name in ("MNIST", "my digits", "../evil", "", "-x", "a" * 65, "a/b", "é"):
        with pytest.raises(MnistlabError, match="invalid dataset name") as info:
            mnistlab.import_dataset(path, name, home=home)
        assert "lowercase" in info.value.hint
    assert not (home / "datasets").exists() or not any((home / "datasets").iterdir())
    mnistlab.import_dataset(path, "a" * 64, home=home)  # the longest name allowed
    mnistlab.import_dataset(path, "v1.2_x-y", home=home)


def test_unusable_paths(tmp_path: Path, home: Path) -> None:
    refused(tmp_path / "missing.npz", "x", home, "no such file or folder")
    (tmp_path / "notes.txt").write_text("hello")
    err = refused(tmp_path / "notes.txt", "x", home, "don't know how to import")
    assert ".npz" in err.hint
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, "x", home, "no IDX files found")
    write_idx(empty / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    refused(empty, "x", home, "no matching train labels file")


def test_malformed_idx_in_folder(tmp_path: Path, home: Path, mini) -> None:
    folder = tmp_path / "raw"
    write_idx(folder / "train-images-idx3-ubyte", mini["train"].images[:5])
    write_idx(folder / "train-labels-idx1-ubyte", mini["train"].labels[:5].astype(np.uint8))
    data = (folder / "train-images-idx3-ubyte").read_bytes()
    (folder / "train-images-idx3-ubyte").write_bytes(data[:-7])
    err = refused(folder, "x", home, "truncated data")
    assert "intact IDX" in err.hint
    (folder / "train-images-idx3-ubyte").write_bytes(b"\x1f\x8b" + data[2:])  # "gzip", broken
    refused(folder, "x", home, "cannot read")


def test_imported_labels_file_round_trips(tmp_path: Path, home: Path, mini) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x_train=mini["train"].images[:10], y_train=mini["train"].labels[:10])
    target = mnistlab.import_dataset(path, "rt", home=home)
    labels = read_idx(target / "train-labels-idx1-ubyte")
    assert labels.dtype == np.uint8  # small labels are stored as MNIST does
    np.testing.assert_array_equal(labels, mini["train"].labels[:10])
