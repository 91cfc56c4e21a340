"""The fast data path (after airbench): a split is put on the device once as a uint8 tensor;
each epoch a seeded permutation picks the batches, which are gathered, augmented as uint8 on
the device, then scaled and normalized. There is no per-sample Python DataLoader.

Every random stream is derived from ``(seed, epoch, stream)`` (:func:`derive_seed`), so an
epoch can be replayed exactly: that is what makes resumed runs bit-exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mnistlab.data import DatasetSplit

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


@dataclass(frozen=True)
class Normalization:
    """Per-pixel standardization ``(x / 255 - mean) / std`` with the training split's stats."""

    mean: float
    std: float

    @classmethod
    def of(cls, images: np.ndarray) -> Normalization:
        """Mean and std of uint8 ``images`` on the [0, 1] scale (MNIST: 0.1307, 0.3081)."""
        x = np.asarray(images, dtype=np.float64) / 255.0
        return cls(float(x.mean()), float(x.std()))

    def __call__(self, x_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        x = x_uint8.float().mul_(1 / (255 * self.std)).sub_(self.mean / self.std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
