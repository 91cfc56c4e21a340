"""The shape of a transformer (:class:`TransformerConfig`), its size presets and the names of
the linear layers LoRA can adapt. Free of torch, so configs can be checked (and ``--help``
can show them) before the model code in :mod:`mnistlab.models.transformer` is imported.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mnistlab.errors import MnistlabError

LORA_TARGETS = ("qkv", "proj", "fc1", "fc2")  # the linear layers of every transformer block
IMAGE_SIZE = 28


@dataclass(frozen=True)
class TransformerConfig:
    """The shape of a transformer. Saved in ``config.json`` and ``model.json``."""

    dim: int = 128  # width of every token vector
    depth: int = 4  # number of blocks
    heads: int = 4  # attention heads; dim must be divisible by heads
    mlp_ratio: float = 4.0  # hidden width of the MLP = mlp_ratio * dim
    patch_size: int = 4  # pixels per patch side; must divide 28 (1, 2, 4, 7, 14, 28)
    dropout: float = 0.0  # dropout on attention outputs and MLP outputs while training

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise MnistlabError(f"invalid transformer config: {message}")

        need(self.dim >= 1 and self.depth >= 1 and self.heads >= 1, "dim, depth, heads >= 1")
        need(self.dim % self.heads == 0, f"dim {self.dim} not divisible by heads {self.heads}")
        need(self.mlp_ratio > 0, f"mlp_ratio must be > 0; got {self.mlp_ratio}")
        need(
            self.patch_size >= 1 and IMAGE_SIZE % self.patch_size == 0,
            f"patch_size must divide {IMAGE_SIZE}; got {self.patch_size}",
        )
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1); got {self.dropout}")

    @property
    def num_patches(self) -> int:
        """Tokens per image: ``(28 / patch_size) ** 2``."""
        return (IMAGE_SIZE // self.patch_size) ** 2

    @property
    def patch_dim(self) -> int:
        """Pixels per patch: ``patch_size ** 2``."""
        return self.patch_size**2

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformerConfig:
        """The inverse of :meth:`to_dict`."""
        return cls(**data)


PRESETS: dict[str, TransformerConfig] = {
    "tiny": TransformerConfig(dim=64, depth=2, heads=4),  # ~0.1M parameters
    "small": TransformerConfig(dim=128, depth=4, heads=4),  # ~0.8M
    "base": TransformerConfig(dim=256, depth=6, heads=8),  # ~4.8M
    "large": TransformerConfig(dim=384, depth=6, heads=8),  # ~10.7M
}


def get_preset(name: str) -> TransformerConfig:
    """The named size preset (``tiny``, ``small``, ``base``, ``large``).

    Raises:
        MnistlabError: unknown name (the message lists the presets).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise MnistlabError(
            f"unknown transformer preset {name!r}", hint=f"choose one of {', '.join(PRESETS)}"
        ) from None
