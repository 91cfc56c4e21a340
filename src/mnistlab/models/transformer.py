"""A transformer written from scratch, small enough to read in one sitting.

The pieces, bottom up:

- :func:`patchify` / :func:`unpatchify`: a 28x28 image <-> a sequence of ``(28/p)**2`` flattened
  ``p x p`` pixel patches (p = 4: 49 patches of 16 pixels).
- :class:`Attention`: multi-head self-attention. For each head, ``softmax(Q K^T / sqrt(d)) V``
  with ``Q, K, V`` linear projections of the tokens (one fused ``qkv`` layer), then the heads
  are concatenated and mixed by ``proj``. ``causal=True`` masks the future: token ``i`` only
  attends to tokens ``<= i`` (GPT); ``causal=False`` lets every token see every token (ViT).
- :class:`MLP`: ``fc2(gelu(fc1(x)))``, ``mlp_ratio`` times wider in the middle.
- :class:`Block`: pre-norm residual block ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.
- :class:`Transformer`: ``depth`` blocks and a final LayerNorm.

On top of it: :class:`ViTEncoder` (image -> patch embeddings + learned positions ->
transformer) and :class:`GPTModel` (token ids -> embeddings -> causal transformer -> next-token
logits), and :class:`Classifier` (encoder + mean-pooled linear head).

Size presets (:data:`PRESETS`) go from ``tiny`` (~0.1M parameters) to ``large`` (~10.7M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.models.transformer_config import (  # re-exported: the model's shape
    IMAGE_SIZE as IMAGE_SIZE,
)
from mnistlab.models.transformer_config import PRESETS as PRESETS
from mnistlab.models.transformer_config import TransformerConfig as TransformerConfig
from mnistlab.models.transformer_config import get_preset as get_preset


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------- patches


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Images ``(N, 1, H, W)`` or ``(N, H, W)`` -> patches ``(N, L, p*p)``, row-major order."""
    if images.ndim == 4:
        images = images[:, 0]
    n, h, w = images.shape
    p = patch_size
    x = images.reshape(n, h // p, p, w // p, p).permute(0, 1, 3, 2, 4)
    return x.reshape(n, (h // p) * (w // p), p * p)


def unpatchify(patches: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Patches ``(N, L, p*p)`` -> images ``(N, 1, H, W)`` (inverse of :func:`patchify`)."""
    n, length, _ = patches.shape
    p = patch_size
    side = round(length**0.5)
    x = patches.reshape(n, side, side, p, p).permute(0, 1, 3, 2, 4)
    return x.reshape(n, 1, side * p, side * p)


# ---------------------------------------------------------------------------- blocks


class Attention(nn.Module):
    """Multi-head self-attention over ``(N, L, dim)`` tokens."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # queries, keys and values of all heads at once
        self.proj = nn.Linear(dim, dim)  # mixes the concatenated heads
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        n, length, dim = x.shape
        # (N, L, 3*dim) -> 3 x (N, heads, L, head_dim)
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(head_dim) [+ -inf above the diagonal if causal]) v, fused
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        out = out.transpose(1, 2).reshape(n, length, dim)
        return self.dropout(self.proj(out))


class MLP(nn.Module):
    """Position-wise feed-forward network ``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim)
        self.attn = Attention(config.dim, config.heads, config.dropout)
        self.norm2 = nn.LayerNorm(config.dim)
        self.mlp = MLP(config.dim, int(config.mlp_ratio * config.dim), config.dropout)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), causal)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` pre-norm blocks and a final LayerNorm: ``(N, L, dim)`` -> ``(N, L, dim)``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, causal)
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear and embedding weights, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------- models


class ViTEncoder(nn.Module):
    """Image encoder (ViT-style, bidirectional attention).

    Input: float images ``(N, 1, 28, 28)`` with pixels in [0, 1] (uint8 / 255).
    Output: token vectors ``(N, L, dim)``, one per patch.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.patch_embed = nn.Linear(config.patch_dim, config.dim)
        self.pos = nn.Parameter(torch.zeros(1, config.num_patches, config.dim))
        self.transformer = Transformer(config)
        init_weights(self)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embeddings plus positions, ``(N, L, dim)``, before any block."""
        return self.patch_embed(patchify(images, self.config.patch_size)) + self.pos

    def forward(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encode all patches, or only those at ``keep`` (``(N, K)`` indices; MAE)."""
        x = self.embed(images)
        if keep is not None:
            x = torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.transformer(x)


class Classifier(nn.Module):
    """Encoder + linear head on the mean of the token vectors: images -> logits."""

    def __init__(self, config: TransformerConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = ViTEncoder(config)
        self.head = nn.Linear(config.dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Mean-pooled token vectors ``(N, dim)``."""
        return self.encoder(images).mean(dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class GPTModel(nn.Module):
    """Causal transformer over token ids (GPT-style): ``(N, T)`` ids -> ``(N, T, vocab)`` logits.

    The vocabulary is ``vocab_size`` image tokens followed by ``num_prefixes`` prefix tokens
    (one per class, then "no class"). A sequence is ``[prefix, t_1, ..., t_L]``; the logits at
    position ``i`` predict token ``i + 1`` (over the image tokens only).
    """

    def __init__(self, config: TransformerConfig, vocab_size: int, num_prefixes: int) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = vocab_size
        self.num_prefixes = num_prefixes
        self.token_embed = nn.Embedding(vocab_size + num_prefixes, config.dim)
        self.pos = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.dim))
        self.transformer = Transformer(config)
        self.head = nn.Linear(config.dim, vocab_size)
        init_weights(self)
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embed(tokens) + self.pos[:, : tokens.shape[1]]
        return self.head(self.transformer(x, causal=True))
