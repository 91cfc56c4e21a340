"""Transformer model files: the encoder a fine-tuning run starts from (an MAE run of
``mnistlab pretrain`` or an external ViT encoder file), and the classifier a fine-tuning run
writes (``model/``, or for LoRA ``adapter/`` on its base model), read and hash-checked once
through :mod:`mnistlab.models.files`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from mnistlab.errors import MnistlabError
from mnistlab.models.files import (
    ADAPTER_FORMAT,
    CLASSIFIER_FORMAT,
    PRETRAINED_FORMAT,
    ModelFile,
    read_model_file,
    tensors_to_bytes,
    write_model_file,
)
from mnistlab.models.hub import PREFIX, get_pretrained
from mnistlab.models.lora import apply_lora, load_adapter
from mnistlab.models.transformer import Classifier, TransformerConfig


def pretrained_path(source: str | os.PathLike[str]) -> Path:
    """The path of ``--from``: a run folder or file that exists. A shipped ``pretrained:NAME``
    is a CNN backbone (``mnistlab models list``), which ``mnistlab fewshot`` takes, not the
    transformer's fine-tuning; the error says so."""
    text = os.fspath(source)
    if text.startswith(PREFIX):
        card = get_pretrained(text).card  # an unknown name: the error lists what ships
        raise MnistlabError(
            f"--from {text}: a {card.get('architecture', 'CNN')} backbone "
            f"({card.get('objective', 'self-supervised')}); `mnistlab finetune` adapts "
            "transformer encoders (MAE runs)",
            hint=f"fine-tune it with `mnistlab fewshot --from {text} --labels N` (add `--set "
            "unlabeled_ratio=0 --student none` to train on the labelled images only)",
        )
    path = Path(text).expanduser()
    if not path.exists():
        raise MnistlabError(
            f"--from {path}: no such run folder or file",
            hint="pass a `mnistlab pretrain --objective mae` run folder (see `mnistlab runs "
            "list`) or a ViT encoder .safetensors file",
        )
    return path


def pretrained_encoder(
    source: str | os.PathLike[str], architecture: TransformerConfig
) -> tuple[TransformerConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """The encoder weights to start from.

    Args:
        source: a ``mnistlab pretrain --objective mae`` run folder (or its ``model/``), or an
            external ``.safetensors`` file of :class:`ViTEncoder` weights (keys as in
            ``ViTEncoder.state_dict()``, optionally prefixed ``encoder.``).
        architecture: the shape of an external file's encoder (run folders record their own).

    Returns:
        ``(transformer config, encoder state dict, info)``; ``info`` has ``objective``,
        ``weights_sha256`` and ``base_model`` (the resolved path to record).

    Raises:
        MnistlabError: a GPT run, a missing file, or weights that do not fit the architecture.
    """
    path = pretrained_path(source)
    if path.is_file() and path.suffix == ".safetensors":
        raw = path.read_bytes()
        try:
            tensors = load_safetensors(raw)
        except Exception as exc:  # safetensors raises its own error types
            raise MnistlabError(f"{path}: not a safetensors file ({exc})") from None
        state = {k.removeprefix("encoder."): v for k, v in tensors.items()}
        probe = Classifier(architecture).encoder
        try:
            probe.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise MnistlabError(
                f"{path}: the weights do not fit a {architecture} encoder ({first})",
                hint="pass the matching --preset / --patch-size, or a ViTEncoder state dict",
            ) from None
        info = {
            "objective": "external",
            "weights_sha256": hashlib.sha256(raw).hexdigest(),
            "base_model": str(path.resolve()),
        }
        return architecture, state, info
    model_file = read_model_file(path, [PRETRAINED_FORMAT])
    meta = model_file.manifest
    if meta["objective"] != "mae":
        raise MnistlabError(
            f"{source} was pretrained with {meta['objective']!r}; fine-tuning for "
            "classification starts from an MAE encoder",
            hint="pretrain with `mnistlab pretrain --objective mae`",
        )
    # An MAE's encoder is its "encoder.*" tensors (the decoder is left behind).
    state = {
        k.removeprefix("encoder."): v
        for k, v in model_file.tensors().items()
        if k.startswith("encoder.")
    }
    info = {**meta, "base_model": str(model_file.folder.resolve())}
    return TransformerConfig.from_dict(meta["transformer"]), state, info


def write_classifier(folder: Path, model: Classifier, meta: dict[str, Any]) -> Path:
    """``model.safetensors`` then ``model.json`` (format, ``meta``, the weights' SHA-256)."""
    data = tensors_to_bytes(model.state_dict())
    write_model_file(folder, data, meta, fmt=CLASSIFIER_FORMAT)
    return Path(folder) / "model.safetensors"


def load_classifier(
    run_dir: str | os.PathLike[str] | ModelFile,
) -> tuple[Classifier, dict[str, Any]]:
    """The classifier of a fine-tuning run (``model/``), a merged model folder, or a LoRA run
    (``adapter/`` applied to its base model, unmerged), or a :class:`ModelFile` of one of
    these already read; CPU, eval mode.

    Raises:
        MnistlabError: not a fine-tuning run, missing files, or changed weights.
    """
    model_file = run_dir
    if not isinstance(model_file, ModelFile):
        folder = Path(run_dir).expanduser()
        adapter = folder / "adapter" / "adapter.json"
        target = adapter if adapter.is_file() and not (folder / "model").is_dir() else folder
        model_file = read_model_file(target, [CLASSIFIER_FORMAT, ADAPTER_FORMAT])
    if model_file.format == ADAPTER_FORMAT:
        return _load_lora_classifier(model_file)
    meta = model_file.manifest
    model = Classifier(TransformerConfig.from_dict(meta["transformer"]), meta["num_classes"])
    model.load_state_dict(model_file.tensors())
    return model.eval(), meta


def _load_lora_classifier(adapter: ModelFile) -> tuple[Classifier, dict[str, Any]]:
    meta = adapter.manifest
    tc = TransformerConfig.from_dict(meta["transformer"])
    _, state, info = pretrained_encoder(meta["base_model"], tc)
    if meta.get("base_weights_sha256") not in (None, info["weights_sha256"]):
        raise MnistlabError(
            f"the base model {meta['base_model']} changed since the adapter was trained",
            hint="use the pretrained run the adapter was made from",
        )
    model = Classifier(tc, meta["num_classes"])
    model.encoder.load_state_dict(state)
    apply_lora(model, rank=meta["rank"], alpha=meta["alpha"], targets=meta["targets"])
    load_adapter(adapter, model)
    return model.eval(), meta
