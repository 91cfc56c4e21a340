"""LoRA (Hu et al. 2021): low-rank adapters on the linear layers of a frozen model.

A frozen linear layer ``y = x W^T + b`` gets two small trainable matrices, ``A`` (``r x in``,
random) and ``B`` (``out x r``, zeros, so training starts from the pretrained function):

    y = x W^T + b + (alpha / r) * x A^T B^T

Only ``A`` and ``B`` (and the new classifier head) are trained and saved: the adapter file is
a small fraction of the model. :func:`merge_lora` folds them into the weights,
``W' = W + (alpha / r) * B A``, giving a plain model with the same outputs and no extra cost.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.files import (
    ADAPTER_FORMAT,
    ModelFile,
    read_model_file,
    tensors_to_bytes,
    write_model_file,
)
from mnistlab.models.transformer_config import LORA_TARGETS


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable rank-``rank`` update scaled by ``alpha / rank``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        if rank < 1:
            raise MnistlabError(f"LoRA rank must be >= 1; got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    @property
    def scaling(self) -> float:
        """``alpha / rank``."""
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / r) * B A``: the weight of the equivalent plain linear layer."""
        return self.base.weight + self.scaling * (self.lora_b @ self.lora_a)


def apply_lora(
    model: nn.Module,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = LORA_TARGETS,
    trainable: Sequence[str] = ("head",),
) -> list[str]:
    """Freeze ``model`` and wrap its linear layers named ``targets`` (last name component) in
    :class:`LoRALinear`. Parameters under the top-level modules ``trainable`` stay trainable.

    Returns:
        The qualified names of the wrapped layers.

    Raises:
        MnistlabError: an unknown target name, or no layer matched.
    """
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown:
        raise MnistlabError(
            f"unknown LoRA target(s) {', '.join(unknown)}", hint=f"choose from {LORA_TARGETS}"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise MnistlabError(f"no linear layer named {list(targets)} in the model")
    for top in trainable:
        for p in getattr(model, top).parameters():
            p.requires_grad_(True)
    return wrapped


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors of a LoRA model: every ``lora_a``/``lora_b`` and the head."""
    return {k: v for k, v in model.named_parameters() if v.requires_grad}


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` in ``model`` by a plain ``nn.Linear`` holding
    ``W + (alpha / r) B A`` (in place); returns ``model``, all parameters trainable again."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                base = child.base
                plain = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
                plain.to(base.weight.device, base.weight.dtype)
                plain.weight.copy_(child.merged_weight())
                if base.bias is not None:
                    plain.bias.copy_(base.bias)
                setattr(module, child_name, plain)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_adapter(
    folder: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]
) -> tuple[Path, int]:
    """Write ``adapter.safetensors`` (the LoRA matrices and the head) and ``adapter.json``
    (``meta`` + the tensors' SHA-256) through the one model-file writer; returns ``(folder,
    bytes of adapter.safetensors)``."""
    data = tensors_to_bytes(adapter_tensors(model))
    write_model_file(folder, data, meta, fmt=ADAPTER_FORMAT,
                     weights_name="adapter.safetensors", manifest_name="adapter.json")  # fmt: skip
    return Path(folder), len(data)


def load_adapter(
    adapter: str | os.PathLike[str] | ModelFile, model: nn.Module
) -> dict[str, Any]:
    """Load an adapter (its folder, ``adapter.json``, or the :class:`ModelFile` already read)
    into a model already wrapped by :func:`apply_lora` with the same rank and targets;
    returns ``adapter.json``.

    Raises:
        MnistlabError: missing or changed files, or tensors that do not fit the model.
    """
    if not isinstance(adapter, ModelFile):
        path = Path(adapter)
        adapter = read_model_file(path / "adapter.json" if path.is_dir() else path,
                                  [ADAPTER_FORMAT])  # fmt: skip
    meta, folder = adapter.manifest, adapter.folder
    tensors = adapter.tensors()
    params = dict(model.named_parameters())
    missing = sorted(set(params) & set(adapter_tensors(model)) - set(tensors))
    extra = sorted(set(tensors) - set(params))
    if missing or extra:
        raise MnistlabError(
            f"{folder}: adapter does not fit the model (missing {missing[:3]}, unexpected "
            f"{extra[:3]})",
            hint="apply LoRA with the rank and targets recorded in adapter.json first",
        )
    with torch.no_grad():
        for name, value in tensors.items():
            if params[name].shape != value.shape:
                raise MnistlabError(f"{folder}: {name} has shape {tuple(value.shape)}")
            params[name].copy_(value)
    return meta
