"""Contrastive self-supervised pretraining of a CNN backbone (SimCLR, Chen et al. 2020).

Two random "strong" views of every image in a batch (:data:`~mnistlab.features.augment_config.
AUGMENT_PRESETS` ``"strong"``: affine, elastic, stroke width, cutout) go through the backbone's
convolutional ``features`` and a small projection head; the NT-Xent loss pulls the two views of
an image together and pushes the other ``2N - 2`` images of the batch away. No label is read.
After pretraining the projection head is dropped: the backbone's ``features`` initialise
``mnistlab fewshot`` (``--from``), whose consistency training then starts from digits that are
already grouped by shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.cnn import build_model


class SimCLR(nn.Module):
    """A CNN backbone (``features`` of a :data:`~mnistlab.models.cnn.CNN_MODELS` net) and a
    projection head (Linear-BN-ReLU-Linear); ``forward(views)`` returns the NT-Xent loss.

    Args:
        backbone: the architecture name (its ``features`` module is kept, its head dropped).
        projection_dim: the output size of the projection head.
        temperature: the softmax temperature of NT-Xent (> 0; smaller = harder negatives).
    """

    def __init__(self, backbone: str, projection_dim: int = 64, temperature: float = 0.2) -> None:
        super().__init__()
        net = build_model(backbone)
        if not isinstance(getattr(net, "features", None), nn.Module):
            raise ValueError(f"{backbone!r} has no `features` module to pretrain")
        self.features = net.features
        with torch.no_grad():
            width = self.features(torch.zeros(2, 1, 28, 28)).flatten(1).shape[1]
        self.projection = nn.Sequential(
            nn.Linear(width, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
            nn.Linear(256, projection_dim),
        )  # fmt: skip
        self.temperature = temperature

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of ``x`` (float ``(N, 1, 28, 28)`` in [0, 1]), flattened."""
        return self.features(x).flatten(1)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """NT-Xent over ``views``: ``(2N, 1, 28, 28)``, rows ``i`` and ``i + N`` two views of
        image ``i``. Returns the mean loss (a scalar)."""
        z = F.normalize(self.projection(self.embed(views)).float(), dim=1)
        return nt_xent(z, self.temperature)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """The normalized-temperature cross-entropy of SimCLR.

    Args:
        z: ``(2N, D)`` unit vectors; rows ``i`` and ``i + N`` are the positive pair.
        temperature: divides the cosine similarities.

    Returns:
        The mean over the ``2N`` rows of ``-log softmax(sim / t)[positive]``, the row itself
        excluded from the softmax.
    """
    n2 = z.shape[0]
    if n2 % 2 or n2 < 4:
        raise ValueError(f"nt_xent needs an even number >= 4 of rows (two views each); got {n2}")
    n = n2 // 2
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(n2, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, n2), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)
