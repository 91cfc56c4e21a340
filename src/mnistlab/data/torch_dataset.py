"""A dataset split as a ``torch.utils.data.Dataset`` (map-style), for a ``DataLoader``.

Differences from torchvision's ``MNIST``: no download or file handling here (mnistlab's data
stage fetches and verifies); ``(image, label)`` with the image a float tensor ``(1, 28, 28)``
in [0, 1] by default (``ToTensor``'s output) and the label a Python int; any mnistlab dataset
(Fashion-MNIST, KMNIST, imported ones) and any split (``val`` included) works the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class SplitDataset(Dataset):
    """``(image, label)`` pairs of uint8 ``images (N, 28, 28)`` and ``labels (N,)``."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        label = int(self.labels[index])
        if self.transform is not None:
            return self.transform(image), label
        return torch.from_numpy(np.ascontiguousarray(image)).float().div_(255).unsqueeze(0), label
