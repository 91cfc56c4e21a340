"""Masked-autoencoder pretraining (MAE, He et al. 2021) on unlabeled images.

Each image is cut into patches; a random ``mask_ratio`` of them is hidden. The encoder
(:class:`~mnistlab.models.transformer.ViTEncoder`) sees only the visible patches; a small
decoder gets the encoded visible tokens plus a learned "mask token" at every hidden position
and predicts the hidden patches' pixels. The loss is the mean squared error on the hidden
patches only (pixels in [0, 1]). Labels play no part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.transformer import (
    Transformer,
    TransformerConfig,
    ViTEncoder,
    init_weights,
    patchify,
    unpatchify,
)


def random_masking(n: int, length: int, mask_ratio: float, device: torch.device) -> torch.Tensor:
    """Indices ``(n, keep)`` of the visible patches of each image (``keep`` = ``length`` times
    ``1 - mask_ratio``, at least 1), drawn from torch's global generator."""
    keep = max(1, round(length * (1 - mask_ratio)))
    noise = torch.rand(n, length, device=device)
    return noise.argsort(dim=1)[:, :keep]


class MAE(nn.Module):
    """Encoder + lightweight decoder for masked-patch reconstruction."""

    def __init__(
        self,
        config: TransformerConfig,
        mask_ratio: float = 0.75,
        decoder_dim: int = 64,
        decoder_depth: int = 1,
    ) -> None:
        super().__init__()
        self.config = config
        self.mask_ratio = mask_ratio
        self.encoder = ViTEncoder(config)
        dec = TransformerConfig(
            dim=decoder_dim, depth=decoder_depth, heads=4 if decoder_dim % 4 == 0 else 1
        )
        self.decoder_embed = nn.Linear(config.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(torch.zeros(1, config.num_patches, decoder_dim))
        self.decoder = Transformer(dec)
        self.decoder_head = nn.Linear(decoder_dim, config.patch_dim)
        for part in (self.decoder_embed, self.decoder, self.decoder_head):
            init_weights(part)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def reconstruct(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Predicted pixels of every patch ``(N, L, p*p)`` from the patches at ``keep``."""
        n, length = images.shape[0], self.config.num_patches
        encoded = self.decoder_embed(self.encoder(images, keep))
        tokens = self.mask_token.expand(n, length, -1).clone()
        tokens.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), encoded)
        return self.decoder_head(self.decoder(tokens + self.decoder_pos))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss, prediction (N, L, p*p), hidden mask (N, L) bool)`` for images in [0, 1]."""
        n, length = images.shape[0], self.config.num_patches
        keep = random_masking(n, length, self.mask_ratio, images.device)
        pred = self.reconstruct(images, keep)
        hidden = torch.ones(n, length, dtype=torch.bool, device=images.device)
        hidden.scatter_(1, keep, False)
        target = patchify(images, self.config.patch_size)
        per_patch = F.mse_loss(pred.float(), target, reduction="none").mean(-1)
        loss = (per_patch * hidden).sum() / hidden.sum().clamp_min(1)
        return loss, pred, hidden


@torch.no_grad()
def reconstruction_panels(
    model: MAE, images: torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(original, masked input, reconstruction)`` images ``(N, 1, 28, 28)`` in [0, 1]; the
    reconstruction keeps the visible patches and fills in the predicted hidden ones."""
    model.eval()
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        _, pred, hidden = model(images)
    finally:
        torch.set_rng_state(state)
    p = model.config.patch_size
    patches = patchify(images, p)
    mask = hidden.unsqueeze(-1).float()
    masked = unpatchify(patches * (1 - mask) + 0.5 * mask, p)
    filled = unpatchify(patches * (1 - mask) + pred.float().clamp(0, 1) * mask, p)
    return images, masked, filled
