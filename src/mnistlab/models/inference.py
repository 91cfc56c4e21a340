"""Inference for every model mnistlab trains: class probabilities of uint8 images for CNNs
(optionally with test-time augmentation) and transformer classifiers, the device and the
autocast they run with, and one table from model-file format to loader
(:func:`load_predictor`), used by re-evaluation, self-training teachers and generation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.features.warp import rotate, translate
from mnistlab.models import files
from mnistlab.models.cnn import cnn_from_file
from mnistlab.models.vit_files import load_classifier

EVAL_BATCH = 1024  # images per forward pass


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; others are checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MnistlabError(
            "device 'cuda' requested but CUDA is not available", hint="--device cpu"
        )
    if name == "mps" and not torch.backends.mps.is_available():
        raise MnistlabError("device 'mps' requested but MPS is not available", hint="--device cpu")
    return torch.device(name)


@functools.cache  # a fact of the hardware: probed once per device, not at every step
def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has fast bfloat16 kernels: a CUDA GPU that supports bf16, or a CPU
    with AVX-512 (oneDNN's own test; AVX-512 BF16 and AMX units are faster still). Elsewhere
    bf16 is emulated, far slower than fp32 (a default run ~11x on an AVX2-only EPYC)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: no bf16 kernels either
        return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """The precision a run computes in: ``"fp32"`` or ``"bf16"`` as given; ``"auto"``: bf16
    where the device has bf16 units (:func:`native_bf16`), else fp32."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> Any:
    """bfloat16 autocast when ``precision`` resolves to ``"bf16"`` (:func:`resolve_precision`),
    else off."""
    enabled = resolve_precision(device, precision) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


View = Callable[[torch.Tensor], torch.Tensor]


def _shift(dx: int, dy: int) -> View:
    return lambda x: translate(x, dx, dy)


def _rotation(degrees: float) -> View:
    return lambda x: rotate(x, degrees)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# Each mode: the views of an image whose softmax outputs are averaged, identity first.
TTA_MODES: dict[str, tuple[tuple[str, View], ...]] = {
    "shifts": (
        ("identity", _identity),
        ("right 1 px", _shift(1, 0)),
        ("left 1 px", _shift(-1, 0)),
        ("down 1 px", _shift(0, 1)),
        ("up 1 px", _shift(0, -1)),
    ),
    "light": (
        ("identity", _identity),
        ("rotate +5 deg", _rotation(5.0)),
        ("rotate -5 deg", _rotation(-5.0)),
    ),
}


def tta_views(tta: str | None) -> tuple[tuple[str, View], ...]:
    """The ``(name, transform)`` pairs of a TTA mode (``None``: the identity alone).

    Raises:
        MnistlabError: an unknown mode.
    """
    if tta is None:
        return (("identity", _identity),)
    try:
        return TTA_MODES[tta]
    except KeyError:
        raise MnistlabError(
            f"unknown test-time augmentation {tta!r}",
            hint=f"use one of: {', '.join(TTA_MODES)} (or none)",
        ) from None


@dataclass(frozen=True)
class Normalization:
    """Per-pixel standardization ``(x / 255 - mean) / std`` with the training split's stats."""

    mean: float
    std: float

    @classmethod
    def of(cls, images: np.ndarray) -> Normalization:
        """Mean and std of uint8 ``images`` on the [0, 1] scale (MNIST: 0.1307, 0.3081).

        From the histogram of the 256 grey levels: 0.15 s for MNIST's training split on a
        2-core CPU, where converting its 47 M pixels to float64 took 2.8 s (the same mean,
        the std within one unit in the last place, the same float32 inputs)."""
        x = np.asarray(images)
        if x.dtype != np.uint8 or x.size == 0:
            x = x.astype(np.float64) / 255.0
            return cls(float(x.mean()), float(x.std()))
        counts = np.bincount(x.ravel(), minlength=256).astype(np.float64)
        levels = np.arange(256) / 255.0
        mean = float((counts * levels).sum() / x.size)
        return cls(mean, float(np.sqrt((counts * (levels - mean) ** 2).sum() / x.size)))

    @classmethod
    def coerce(cls, value: Normalization | Mapping[str, float]) -> Normalization:
        """Itself, or one from a ``{"mean", "std"}`` mapping (``model.json``)."""
        if isinstance(value, Normalization):
            return value
        return cls(float(value["mean"]), float(value["std"]))

    def __call__(self, x_uint8: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        x = x_uint8.float().mul_(1 / (255 * self.std)).sub_(self.mean / self.std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: np.ndarray,
    normalization: Any,
    *,
    tta: str | None = None,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    channels_last: bool = False,
) -> np.ndarray:
    """Class probabilities of ``model`` on uint8 ``images``, optionally with TTA.

    Args:
        model: a module taking normalized float ``(N, 1, 28, 28)`` and returning logits. It is
            put in eval mode and moved to ``device`` (in place).
        images: uint8 ``(N, 28, 28)`` or ``(N, 1, 28, 28)``.
        normalization: the run's :class:`Normalization` or ``{"mean", "std"}`` (``model.json``).
        tta: ``None`` (plain prediction), ``"shifts"`` (identity and the four 1-pixel
            translations: right, left, down, up) or ``"light"`` (identity and rotations by
            +5 and -5 degrees). Each view is made on the uint8 images with
            ``mnistlab.features.augment`` (vacated pixels are 0, rotations are bilinear and
            rounded to uint8), then normalized; the softmax outputs of the views are summed
            in that order and divided by their number.
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
        precision, channels_last: as the run trained (``bf16``: autocast; ``auto``: bf16
            where the device has fast bf16 kernels), to give the probabilities of its report.
            :func:`load_predictor` reads a model trained in bf16 with ``auto``.

    Returns:
        float64 ``(N, num_classes)``; rows sum to 1 (to float32 precision: the softmax is
        taken in fp32, as in the training report). No autocast: for an
        fp32 run, ``tta=None`` gives the probabilities of its report.
    """
    views = tta_views(tta)
    norm = Normalization.coerce(normalization)
    if batch_size < 1:
        raise MnistlabError(f"batch_size must be >= 1; got {batch_size}")
    array = np.asarray(images)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-2:] != (28, 28):
        raise MnistlabError(
            f"images must be uint8 (N, 28, 28) or (N, 1, 28, 28); got {array.dtype} {array.shape}"
        )
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    x_all = torch.from_numpy(np.ascontiguousarray(array))
    if x_all.ndim == 3:
        x_all = x_all.unsqueeze(1)
    model.eval().to(torch_device)
    chunks = []
    for start in range(0, len(x_all), batch_size):
        batch = x_all[start : start + batch_size].to(torch_device)
        total: torch.Tensor | None = None
        for _, view in views:
            x = norm(view(batch), channels_last)
            with autocast(torch_device, precision):
                logits = model(x).float()
            p = torch.softmax(logits, dim=1).double()
            total = p if total is None else total + p
        assert total is not None
        chunks.append((total / len(views)).cpu())
    if not chunks:
        raise MnistlabError("no images to predict")
    return torch.cat(chunks).numpy()


@torch.no_grad()
def vit_predict_proba(
    model: nn.Module, images: np.ndarray | torch.Tensor, precision: str = "fp32"
) -> np.ndarray:
    """Class probabilities ``(N, classes)`` (float64) of uint8 images ``(N, 28, 28)``."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, torch.Tensor) else images
    if x.ndim == 3:
        x = x.unsqueeze(1)
    out = []
    for start in range(0, len(x), EVAL_BATCH):
        batch = x[start : start + EVAL_BATCH].to(device).float() / 255
        with autocast(device, precision):
            logits = model(batch)
        out.append(torch.softmax(logits.float(), 1).double().cpu())
    return torch.cat(out).numpy()


@dataclass
class Predictor:
    """A loaded model that gives class probabilities of uint8 ``(N, 28, 28)`` images."""

    model: Any  # the nn.Module or scikit-learn estimator
    manifest: dict[str, Any]  # its model.json
    predict_proba: Callable[[np.ndarray], np.ndarray]  # -> float64 (N, classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names", []))


def _cnn(model_file: files.ModelFile) -> Predictor:

    module = cnn_from_file(model_file)
    meta = model_file.manifest
    config = meta.get("config", {})
    precision, channels_last = config.get("precision", "fp32"), config.get("channels_last", False)
    # A model trained in bf16 is read in bf16 only where that is fast (emulated bf16 made the
    # shipped resnet-small 7x slower to evaluate than fp32 on an AVX2-only CPU).
    precision = "auto" if precision == "bf16" else precision
    if channels_last:
        module = module.to(memory_format=torch.channels_last)

    def proba(images: np.ndarray, tta: str | None = None) -> np.ndarray:
        return predict_proba(module, images, meta["normalization"], tta=tta,
                             precision=precision, channels_last=channels_last)  # fmt: skip

    return Predictor(module, meta, proba)


def _vit(model_file: files.ModelFile) -> Predictor:

    module, meta = load_classifier(model_file)
    return Predictor(module, meta, lambda x: vit_predict_proba(module, x))


def predict_scores(model: Any, images: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, n_classes)`` from a fitted scikit-learn classifier:
    ``predict_proba`` where the model has it; otherwise the softmax of ``decision_function``
    (an uncalibrated confidence, e.g. for SVMs without Platt scaling)."""
    if hasattr(model, "predict_proba"):
        try:
            return np.asarray(model.predict_proba(images), dtype=np.float64)
        except AttributeError:  # SVC(probability=False) exposes the method but refuses it
            pass
    scores = np.asarray(model.decision_function(images), dtype=np.float64)
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    return scores / scores.sum(axis=1, keepdims=True)


def _sklearn(model_file: files.ModelFile) -> Predictor:
    from mnistlab.models.estimator_files import load_estimator

    estimator = load_estimator(model_file)
    return Predictor(estimator, model_file.manifest, lambda x: predict_scores(estimator, x))


# Model-file format -> loader: every model mnistlab writes that predicts classes.
LOADERS: dict[str, Callable[[files.ModelFile], Predictor]] = {
    files.TORCH_FORMAT: _cnn,
    files.CLASSIFIER_FORMAT: _vit,
    files.ADAPTER_FORMAT: _vit,
    files.SKLEARN_FORMAT: _sklearn,
}


def load_predictor(path: str | Path) -> Predictor:
    """The model in ``path`` (a run folder, a model folder, a manifest), whatever it is: a
    CNN, a fine-tuned transformer (a LoRA run: its adapter on its base model), or a classic
    scikit-learn pipeline; read and hash-checked once.

    Raises:
        MnistlabError: no model there, or one that does not predict classes.
    """
    folder = Path(path).expanduser()
    adapter = folder / "adapter" / "adapter.json"
    target = adapter if adapter.is_file() and not (folder / "model").is_dir() else folder
    model_file = files.read_model_file(target, list(LOADERS))
    return LOADERS[model_file.format](model_file)
