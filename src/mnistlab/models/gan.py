"""DCGAN generator and discriminator for 28x28 digits (Radford et al. 2016), unconditional or
class-conditional, and the model file of a trained generator.

- :class:`Generator`: noise ``z`` (and, conditional, a learned embedding of the digit,
  concatenated to ``z``) -> a linear layer to ``2w x 7 x 7`` -> two stride-2 transposed
  convolutions (7 -> 14 -> 28) with batch norm and ReLU -> ``tanh``: images in [-1, 1].
- :class:`Discriminator`: two stride-2 convolutions with LeakyReLU(0.2) (no batch norm, so a
  sample's score does not depend on the rest of its batch) -> one logit. Conditional: a
  projection discriminator (Miyato & Koyama 2018): ``logit = ψ(h) + ⟨embed(y), h⟩``.
- :func:`generator_from_file` reads a ``mnistlab-gan-generator/1`` model file through
  :mod:`mnistlab.models.files` (format allowlist, SHA-256) and checks its manifest's shape
  fields before any module is built.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.files import GAN_FORMAT, ModelFile, read_model_file

NUM_CLASSES = 10
LIMITS = {"z_dim": (1, 1024), "width": (1, 512), "embed_dim": (1, 512)}


@dataclass(frozen=True)
class GanShape:
    """The sizes of a generator / discriminator pair."""

    z_dim: int = 64  # noise dimensions
    width: int = 32  # channels of the 14x14 layer; the 7x7 layer has 2 x width
    conditional: bool = False  # a digit embedding in G, a projection in D
    embed_dim: int = 16  # conditional G: size of the digit embedding concatenated to z

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (``model.json``)."""
        return asdict(self)

    @classmethod
    def from_manifest(cls, value: Any, where: str) -> GanShape:
        """The shape a manifest states, each field type- and range-checked.

        Raises:
            MnistlabError: a missing, mistyped or out-of-range field.
        """
        if not isinstance(value, Mapping):
            raise MnistlabError(f"{where}: invalid GAN manifest: 'shape' must be an object")
        checked: dict[str, Any] = {}
        for name, (low, high) in LIMITS.items():
            v = value.get(name)
            if type(v) is not int or not low <= v <= high:
                raise MnistlabError(
                    f"{where}: invalid GAN manifest: {name} must be an integer in "
                    f"[{low}, {high}]; got {v!r}"
                )
            checked[name] = v
        if type(value.get("conditional")) is not bool:
            raise MnistlabError(f"{where}: invalid GAN manifest: 'conditional' must be a boolean")
        return cls(conditional=value["conditional"], **checked)


class Generator(nn.Module):
    """``(z, digits) -> images`` in [-1, 1], shape ``(N, 1, 28, 28)``."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        self.shape = shape
        w = shape.width
        extra = shape.embed_dim if shape.conditional else 0
        self.embed = nn.Embedding(NUM_CLASSES, shape.embed_dim) if shape.conditional else None
        self.fc = nn.Sequential(
            nn.Linear(shape.z_dim + extra, 2 * w * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * w * 7 * 7),
            nn.ReLU(),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if digits is None:
                raise MnistlabError("a conditional generator needs the digits to draw")
            z = torch.cat([z, self.embed(digits)], 1)
        h = self.fc(z).view(len(z), 2 * self.shape.width, 7, 7)
        return self.net(h)


class Discriminator(nn.Module):
    """``(images in [-1, 1], digits) -> logits (N,)``: real (high) or generated (low)."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        w = shape.width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.out = nn.Linear(2 * w * 7 * 7, 1)
        self.project = nn.Embedding(NUM_CLASSES, 2 * w * 7 * 7) if shape.conditional else None
        if self.project is not None:
            nn.init.zeros_(self.project.weight)

    def forward(self, x: torch.Tensor, digits: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logits = self.out(h).squeeze(1)
        if self.project is not None:
            if digits is None:
                raise MnistlabError("a conditional discriminator needs the digits")
            logits = logits + (self.project(digits) * h).sum(1)
        return logits


class GAN(nn.Module):
    """Both networks in one module: what the training loop checkpoints."""

    def __init__(self, shape: GanShape) -> None:
        super().__init__()
        self.shape = shape
        self.generator = Generator(shape)
        self.discriminator = Discriminator(shape)
        for module in self.modules():  # DCGAN init: N(0, 0.02) weights, BN scales N(1, 0.02)
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)


def generator_from_file(
    model: ModelFile | str | os.PathLike[str],
) -> tuple[Generator, dict[str, Any]]:
    """The generator of a ``mnistlab gan`` run (its folder, ``model/`` folder or manifest),
    on the CPU in eval mode, and its manifest.

    Raises:
        MnistlabError: another format, changed weights, a damaged safetensors file, an invalid
            manifest, or weights that do not fit the stated shape.
    """
    if not isinstance(model, ModelFile):
        model = read_model_file(model, [GAN_FORMAT], wanted="a GAN generator")
    meta = model.manifest
    shape = GanShape.from_manifest(meta.get("shape"), str(model.manifest_path))
    tensors = model.tensors()
    generator = Generator(shape)
    try:
        generator.load_state_dict(tensors)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MnistlabError(
            f"{model.weights_path}: the weights do not fit the generator in model.json ({first})"
        ) from None
    return generator.eval(), meta
