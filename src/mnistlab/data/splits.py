"""Seeded, stratified train/validation splits carved from the training split only."""

from __future__ import annotations

import os

import numpy as np

from mnistlab.data.load import DatasetSplit
from mnistlab.errors import MnistlabError


def stratified_indices(
    labels: np.ndarray, val_size: float | int = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split example indices into (train, validation), keeping class proportions.

    Args:
        labels: int array (N,).
        val_size: a fraction in (0, 1) or a number of examples in [1, N-1].
        seed: the same seed and labels always give the same split.

    Returns:
        Sorted int64 index arrays ``(train_idx, val_idx)``: disjoint, together all of
        ``range(N)``. Each class gets ``val_size * class_count`` validation examples,
        rounded so that the total is exactly the requested size (largest remainders).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if isinstance(val_size, float) and not isinstance(val_size, bool) and 0 < val_size < 1:
        n_val = round(val_size * n)
    elif isinstance(val_size, (int, np.integer)) and not isinstance(val_size, bool):
        n_val = int(val_size)
    else:
        raise MnistlabError(f"val_size must be a fraction in (0, 1) or a count; got {val_size!r}")
    if not 1 <= n_val <= n - 1:
        raise MnistlabError(
            f"val_size={val_size!r} gives {n_val} validation examples out of {n}; "
            "need at least 1 and at most N-1"
        )
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * (n_val / n)
    take = np.floor(quota).astype(np.int64)
    # Hand the remaining examples to the classes with the largest remainders (ties: lower class).
    order = np.lexsort((classes, -(quota - take)))
    take[order[: n_val - int(take.sum())]] += 1

    rng = np.random.default_rng(seed)
    val = [
        rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx


def validation_split(
    train: DatasetSplit, val_size: float | int = 0.1, seed: int = 0
) -> tuple[DatasetSplit, DatasetSplit]:
    """Carve a stratified validation set out of a *training* split.

    Args:
        train: a split loaded with ``load_dataset(name, "train")``.
        val_size: fraction or count of examples for validation.
        seed: fixes which examples go to validation.

    Returns:
        ``(train_part, val_part)``, with split names ``"train"`` and ``"val"``.

    Raises:
        MnistlabError: ``train`` is not a training split — the test split is never used to
            choose models, so it cannot be split here.
    """
    if train.split != "train":
        raise MnistlabError(
            f"validation_split() takes the training split, got the {train.split!r} split of "
            f"{train.dataset!r}",
            hint="load it with load_dataset(name, 'train'); the test split stays untouched "
            "until the final evaluation",
        )
    train_idx, val_idx = stratified_indices(train.labels, val_size, seed)
    return train.subset(train_idx, "train"), train.subset(val_idx, "val")


def recipe_split(
    dataset: str, split: str, home: str | os.PathLike[str] | None = None
) -> tuple[DatasetSplit, DatasetSplit]:
    """The (train, test) splits a training recipe uses.

    ``official``: the dataset's own splits. ``pooled-80-20``: both pooled in order (train then
    test, as OpenML's ``mnist_784`` stores them) and re-split with
    ``train_test_split(test_size=0.2, random_state=42)``, as the tutorial did.

    Raises:
        MnistlabError: an unknown split scheme.
    """
    from mnistlab.data.load import load_dataset

    train = load_dataset(dataset, "train", home=home)
    test = load_dataset(dataset, "test", home=home)
    if split == "official":
        return train, test
    if split == "pooled-80-20":
        from sklearn.model_selection import train_test_split

        images = np.concatenate([train.images, test.images])
        labels = np.concatenate([train.labels, test.labels])
        idx_train, idx_test = train_test_split(
            np.arange(len(labels)), test_size=0.2, random_state=42
        )
        pooled = DatasetSplit(images, labels, train.dataset, "pooled", train.class_names)
        return pooled.subset(idx_train, "train"), pooled.subset(idx_test, "test")
    raise MnistlabError(f"unknown split scheme {split!r}; use 'official' or 'pooled-80-20'")
