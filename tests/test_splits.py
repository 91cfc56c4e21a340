"""Seeded, stratified train/validation splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mnistlab
from mnistlab.data.splits import stratified_indices, validation_split
from mnistlab.errors import MnistlabError


def check_split(labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, n_val: int):
    n = len(labels)
    assert train_idx.dtype == np.int64 and val_idx.dtype == np.int64
    assert len(val_idx) == n_val
    assert len(train_idx) + len(val_idx) == n
    assert np.all(np.diff(train_idx) > 0) and np.all(np.diff(val_idx) > 0)  # sorted, unique
    assert not np.intersect1d(train_idx, val_idx).size  # disjoint
    np.testing.assert_array_equal(np.union1d(train_idx, val_idx), np.arange(n))  # all of it
    classes, counts = np.unique(labels, return_counts=True)
    for c, count in zip(classes, counts, strict=True):
        got = int(np.sum(labels[val_idx] == c))
        ideal = count * n_val / n
        assert abs(got - ideal) < 1, (c, got, ideal)


def test_fraction_on_real_labels(mini: dict[str, mnistlab.DatasetSplit]) -> None:
    labels = mini["train"].labels
    train_idx, val_idx = stratified_indices(labels, 0.1, seed=0)
    check_split(labels, train_idx, val_idx, 500)
    assert np.bincount(labels[val_idx], minlength=10).tolist() == [50] * 10


def test_count_on_real_labels(mini: dict[str, mnistlab.DatasetSplit]) -> None:
    labels = mini["train"].labels
    for count in (1, 7, 333, np.int64(1234), 4999):
        train_idx, val_idx = stratified_indices(labels, count, seed=3)
        check_split(labels, train_idx, val_idx, int(count))


def test_imbalanced_classes_exact_total() -> None:
    labels = np.array([0] * 97 + [1] * 2 + [2] * 1 + [5] * 50)
    for val_size in (0.01, 0.1, 0.33, 0.5, 0.9, 0.99, 1, 3, 149):
        n_val = round(val_size * 150) if isinstance(val_size, float) else val_size
        check_split(labels, *stratified_indices(labels, val_size, seed=0), n_val)


def test_same_seed_same_split_different_seed_different(
    mini: dict[str, mnistlab.DatasetSplit],
) -> None:
    labels = mini["train"].labels
    a = stratified_indices(labels, 0.2, seed=42)
    b = stratified_indices(labels.copy(), 0.2, seed=42)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    vals = [set(stratified_indices(labels, 0.2, seed=s)[1].tolist()) for s in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert vals[i] != vals[j]
            assert len(vals[i] & vals[j]) < 0.5 * len(vals[i])  # about 20% overlap expected


@pytest.mark.parametrize(
    "val_size",
    [0, 0.0, 1.0, 1.5, -0.1, -1, 5000, 6000, float("nan"), True, False, "0.1", None, 0.00001],
    ids=repr,
)
def test_bad_val_size(mini: dict[str, mnistlab.DatasetSplit], val_size) -> None:
    with pytest.raises(MnistlabError, match="val_size"):
        stratified_indices(mini["train"].labels, val_size)


def test_validation_split_of_a_dataset(mini: dict[str, mnistlab.DatasetSplit]) -> None:
    full = mini["train"]
    train, val = validation_split(full, val_size=1000, seed=7)
    assert (train.split, val.split) == ("train", "val")
    assert (train.dataset, val.dataset) == ("mnist-mini", "mnist-mini")
    assert val.class_names == full.class_names
    assert (len(train), len(val)) == (4000, 1000)
    assert np.bincount(val.labels, minlength=10).tolist() == [100] * 10
    # Images stay paired with their labels, and are the same examples as the indices say.
    train_idx, val_idx = stratified_indices(full.labels, 1000, seed=7)
    np.testing.assert_array_equal(val.images, full.images[val_idx])
    np.testing.assert_array_equal(val.labels, full.labels[val_idx])
    np.testing.assert_array_equal(train.images, full.images[train_idx])
    # Copies: changing a part leaves the original alone.
    val.images[0] = 255
    assert not np.array_equal(full.images[val_idx[0]], val.images[0])
    # Via the top-level API too.
    again = mnistlab.validation_split(full, val_size=1000, seed=7)[1]
    np.testing.assert_array_equal(again.labels, full.labels[val_idx])


def test_validation_split_refuses_the_test_split(mini: dict[str, mnistlab.DatasetSplit]) -> None:
    with pytest.raises(MnistlabError, match="takes the training split, got the 'test'") as info:
        validation_split(mini["test"], 0.1)
    assert "load_dataset(name, 'train')" in info.value.hint
    val = validation_split(mini["train"], 0.1)[1]
    with pytest.raises(MnistlabError, match="got the 'val' split"):
        validation_split(val, 0.1)


label_arrays = st.lists(st.integers(0, 9), min_size=2, max_size=400).map(np.array)


@settings(max_examples=200, deadline=None)
@given(labels=label_arrays, fraction=st.floats(0.001, 0.999), seed=st.integers(0, 2**32 - 1))
def test_fuzz_fraction(labels: np.ndarray, fraction: float, seed: int) -> None:
    n_val = round(fraction * len(labels))
    if not 1 <= n_val <= len(labels) - 1:
        with pytest.raises(MnistlabError):
            stratified_indices(labels, fraction, seed)
        return
    result = stratified_indices(labels, fraction, seed)
    check_split(labels, *result, n_val)
    again = stratified_indices(labels, fraction, seed)
    np.testing.assert_array_equal(result[1], again[1])


@settings(max_examples=200, deadline=None)
@given(data=st.data(), labels=label_arrays, seed=st.integers(0, 2**32 - 1))
def test_fuzz_count(data: st.DataObject, labels: np.ndarray, seed: int) -> None:
    n_val = data.draw(st.integers(1, len(labels) - 1))
    check_split(labels, *stratified_indices(labels, n_val, seed), n_val)


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.sampled_from([-3, 7, 1000, 2**40]), min_size=2, max_size=50).map(np.array)
)
def test_fuzz_arbitrary_label_values(labels: np.ndarray) -> None:
    n_val = max(1, len(labels) // 3)
    check_split(labels, *stratified_indices(labels, n_val, 0), n_val)
