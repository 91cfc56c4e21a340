"""The fast data path (after airbench): a split is put on the device once as a uint8 tensor;
each epoch a seeded permutation picks the batches, which are gathered, augmented as uint8 on
the device, then scaled and normalized. There is no per-sample Python DataLoader.

Every random stream is derived from ``(seed, epoch, stream)`` (:func:`derive_seed`), so an
epoch can be replayed exactly: that is what makes resumed runs bit-exact.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from mnistlab.data import DatasetSplit, load_dataset
from mnistlab.data.splits import validation_split
from mnistlab.errors import MnistlabError
from mnistlab.training.config import TrainConfig

STREAMS = {"permutation": 0, "augment": 1, "torch": 2}


def derive_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed for one random stream of one epoch, fixed by ``(seed, epoch, stream)``."""
    state = np.random.SeedSequence([seed, epoch, STREAMS[stream]]).generate_state(
        1, dtype=np.uint64
    )
    return int(state[0]) & ((1 << 63) - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the ``n`` training images in epoch ``epoch`` (0-based), on the CPU."""
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch, "permutation"))
    return torch.randperm(n, generator=generator)


class EpochBatches:
    """The indices of batch ``b`` of epoch ``epoch`` over ``n`` examples: consecutive slices of
    :func:`epoch_permutation` (kept for the current epoch only), on the CPU. ``batches(epoch,
    b)`` is what a step function of :func:`mnistlab.training.loop.fit` indexes its data with."""

    def __init__(self, n: int, seed: int, batch_size: int) -> None:
        self.n, self.seed, self.batch_size = n, seed, batch_size
        self._epoch: int | None = None
        self._order = torch.empty(0, dtype=torch.long)

    def __call__(self, epoch: int, b: int) -> torch.Tensor:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_permutation(self.n, self.seed, epoch)
        return self._order[b * self.batch_size : (b + 1) * self.batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (at least one: a split smaller than a batch is one batch)."""
    return max(1, n // batch_size)


@dataclass
class DeviceSplit:
    """A split held on the device: uint8 images ``(N, 1, 28, 28)`` and int64 labels ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor
    split: str  # "train", "val" or "test"

    @classmethod
    def from_split(cls, data: DatasetSplit, device: torch.device) -> DeviceSplit:
        images = torch.from_numpy(np.ascontiguousarray(data.images)).unsqueeze(1).to(device)
        labels = torch.from_numpy(np.asarray(data.labels, dtype=np.int64)).to(device)
        return cls(images, labels, data.split)

    def __len__(self) -> int:
        return len(self.labels)


def check_train_split(split: DatasetSplit, test: DatasetSplit) -> None:
    """Refuse training data that does not fit the test split's dataset: images that are not
    uint8 ``(N, 28, 28)``, labels that are not integers in ``range(classes)``, or other
    class names (raises :class:`MnistlabError`)."""
    images, labels = np.asarray(split.images), np.asarray(split.labels)
    hint = "train_split: uint8 images (N, 28, 28), int labels in range(classes), N >= 1"
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise MnistlabError(
            f"train_split images are {images.dtype} {images.shape}, not uint8 (N, 28, 28)", hint
        )
    if labels.shape != (len(images),) or len(images) == 0:
        raise MnistlabError(
            f"train_split has {len(images)} images and labels of shape {labels.shape}", hint
        )
    if not np.issubdtype(labels.dtype, np.integer) or not (
        labels.min() >= 0 and labels.max() < len(test.class_names)
    ):
        raise MnistlabError(
            f"train_split labels must be integers in 0..{len(test.class_names) - 1} "
            f"({test.dataset} has {len(test.class_names)} classes); got {labels.dtype} "
            f"{labels.min()}..{labels.max()}",
            hint,
        )
    if tuple(split.class_names) != tuple(test.class_names):
        raise MnistlabError(
            f"the training data's classes {list(split.class_names)} differ from "
            f"{test.dataset}'s {list(test.class_names)}",
            hint="train_split must use the class names of the test split's dataset",
        )


def load_training_data(
    config: TrainConfig,
    home: str | os.PathLike[str] | None = None,
    train_split: DatasetSplit | None = None,
) -> tuple[DatasetSplit, DatasetSplit | None, DatasetSplit]:
    """``(train, val, test)``: ``val`` is carved out of the training split (stratified, seeded
    with ``config.seed``) when ``val_size`` is set, else None. The test split is only used for
    the final evaluation. ``train_split`` replaces ``config.dataset``'s training split. With
    ``generated_digits``, that many generated digits (seeded with ``config.seed``) join the
    training part, after the validation part was carved out: validation stays real data."""
    train = (
        train_split if train_split is not None else load_dataset(config.dataset, "train", home=home)
    )
    test = load_dataset(config.dataset, "test", home=home)
    val = None
    if config.val_size:
        train, val = validation_split(train, config.val_size, seed=config.seed)
    if config.generated_digits:
        from mnistlab.data.synthetic import with_generated_digits

        train = with_generated_digits(train, config.generated_digits, seed=config.seed)
    return train, val, test
