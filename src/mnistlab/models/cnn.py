"""Neural networks for 28x28 digits: the tutorial CNN, LeNet-5, an MLP, a fast CNN, a small ResNet.

Every model takes float images ``(N, 1, 28, 28)``, already scaled and normalized, and returns
logits ``(N, num_classes)``. There is no softmax layer (Keras puts one in the model): softmax
lives in the loss (``F.cross_entropy`` on logits), which is the numerically stable way to compute
it, and ``argmax`` of logits equals ``argmax`` of probabilities.

All models work with ``channels_last`` inputs and weights and under
``torch.autocast("cpu", dtype=torch.bfloat16)``. Parameter counts and FLOPs per image are in
docs/models.md, measured with :func:`count_parameters` and :func:`flops_per_image`.

    model = build_model("fast-cnn")
    logits = model(x)  # x: float (N, 1, 28, 28)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
from torch import nn

from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.models.files import (
    TORCH_FORMAT,
    ModelFile,
    check_deep_fields,
    output_size,
    read_model_file,
    safetensors_shapes,
    tensors_to_bytes,
    write_model_file,
)

__all__ = [
    "CNN_MODELS",
    "MLP",
    "FastCNN",
    "FastCNNWide",
    "LeNet5",
    "ResNetSmall",
    "SeedCNN",
    "build_model",
    "count_parameters",
    "flops_per_image",
    "keras_init_",
    "write_cnn_model",
]


def keras_init_(module: nn.Module) -> nn.Module:
    """Initialize every Conv and Linear in ``module`` like Keras' defaults, in place; returns it.

    Keras: kernels ``glorot_uniform``, i.e. U(-b, b) with ``b = sqrt(6 / (fan_in + fan_out))``,
    where a conv's fans count its receptive field (``fan_in = in_ch*kh*kw``,
    ``fan_out = out_ch*kh*kw``); biases zero. ``nn.init.xavier_uniform_`` computes exactly
    these fans for torch's (out, in, kh, kw) weight layout. torch's own default (Kaiming uniform
    with a=sqrt(5), and non-zero biases) would give a different starting point.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class SeedCNN(nn.Module):
    """The tutorial CNN (docs/recipes.md), layer for layer: 225,034 parameters.

    Conv(32, 3x3) ReLU → MaxPool 2 → Conv(64, 3x3) ReLU → MaxPool 2 → Flatten → Dense(128) ReLU
    → Dense(10). 'valid' padding as in Keras: 28 → 26 → 13 → 11 → 5, so Flatten gives 64*5*5.

    One difference from Keras that is not a difference in the model: Keras flattens a channels-last
    (H, W, C) tensor, torch a channels-first (C, H, W) one, so the same input reaches the first
    Dense layer with its 1,600 features in another order. That is a fixed permutation of the rows of
    the Dense kernel: the parameter count, the set of functions the net can represent and the
    initial-weight distribution (i.i.d. entries) are the same. Only loading Keras weights would
    need the permutation.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 5 * 5, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) in its common modern form: 61,706 parameters.

    Conv(6, 5x5, pad 2) → pool → Conv(16, 5x5) → pool → 120 → 84 → classes. The paper's 32x32
    input is the 28x28 image padded by 2. By default ReLU and max pooling, which train faster and
    reach higher accuracy; ``classic=True`` uses tanh and average pooling like the paper. Still
    left out of the original: the sparse C2→C3 connection table, the trainable pooling
    coefficients and the RBF output layer (all of C3's inputs are connected here, as in every
    modern reimplementation).
    """

    def __init__(self, num_classes: int = 10, classic: bool = False) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Tanh if classic else nn.ReLU
        pool: type[nn.Module] = nn.AvgPool2d if classic else nn.MaxPool2d
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),  # 28 → 28
            act(),
            pool(2),  # → 14
            nn.Conv2d(6, 16, 5),  # → 10
            act(),
            pool(2),  # → 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            act(),
            nn.Linear(120, 84),
            act(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """A multilayer perceptron on the 784 flattened pixels: Linear-ReLU-Dropout per hidden layer.

    The default (512, 256) has 535,818 parameters.
    """

    def __init__(
        self,
        num_classes: int = 10,
        hidden_sizes: Sequence[int] = (512, 256),
        dropout: float = 0.2,
        in_features: int = 28 * 28,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def conv_bn(c_in: int, c_out: int, kernel_size: int = 3) -> nn.Sequential:
    """Conv ('same' padding, no bias: BatchNorm's shift replaces it) → BatchNorm → ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_pool_bn(c_in: int, c_out: int) -> nn.Sequential:
    """Conv 3x3 → MaxPool 2 → BatchNorm → ReLU: pooling first, so BN and ReLU see 1/4 the pixels.

    airbench's order. Max pooling commutes with ReLU and with BN whenever BN's scale is positive,
    so this is nearly the same function as Conv-BN-ReLU-Pool for a quarter of the elementwise work,
    which is most of the time of a narrow net on a CPU.
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class FastCNN(nn.Module):
    """A small conv net for time-to-accuracy on a few CPU cores: 29,178 params.

    Meant to reach ~99 % in one epoch. A strided Conv-BN-ReLU stem (28 → 14), two
    Conv-Pool-BN-ReLU blocks (→ 7 → 3), then a linear layer on the flattened 3x3 map. Why this
    shape: on a CPU the cost is FLOPs *plus* the memory traffic of every elementwise op, so the
    first layer is narrow and never makes a 28x28 map (a 3x3 stride-2 conv instead of a conv and
    a 2x2 max-pool: ~20 % less CPU time per epoch than the pooled stem, same one-epoch accuracy
    over 3 seeds — docs/models.md), the resolution is cut right after every conv, and channel
    counts are multiples of 16 (oneDNN's fast bf16 paths; 12 or 24 channels measured slower than
    16 or 32). BatchNorm makes a high learning rate and a one-cycle schedule safe, which is what
    reaching 99 % in one epoch needs (airbench's recipe, scaled down to MNIST). ``logit_scale``
    multiplies the logits (airbench scales them down) to tune the softmax's temperature.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        logit_scale: float = 1.0,
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            nn.Sequential(  # 28 → 14 in one strided conv
                nn.Conv2d(1, c1, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c1),
                nn.ReLU(inplace=True),
            ),
            conv_pool_bn(c1, c2),  # → 7
            conv_pool_bn(c2, c3),  # → 3
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c3 * 3 * 3, num_classes))
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)) * self.logit_scale


class FastCNNWide(FastCNN):
    """:class:`FastCNN` at twice the width (32, 64, 128 channels): 104,426 params, about 4x the
    multiply-accumulates (7.3 M per image). The net of the few-label recipe (``mnistlab
    fewshot``) and of the shipped self-supervised backbone: consistency training on 60,000
    unlabeled images has the data to fill capacity that one supervised epoch cannot."""

    def __init__(self, num_classes: int = 10, logit_scale: float = 1.0) -> None:
        super().__init__(num_classes, widths=(32, 64, 128), logit_scale=logit_scale)


class ResidualBlock(nn.Module):
    """Two Conv-BN-ReLU layers with an identity shortcut (channels and size unchanged)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetSmall(nn.Module):
    """A ResNet-9-style net (the DAWNBench/airbench CIFAR-10 design) sized for MNIST: 413 k params.

    stem Conv(w) → [Conv(2w), pool, Res(2w)] → [Conv(4w), pool] → [Conv(8w), pool, Res(8w)]
    → global max pool → Linear, every conv followed by BatchNorm and ReLU (pooled layers in
    :func:`conv_pool_bn`'s order). Resolution 28 → 14 → 7 → 3. With augmentation (the
    ``"mnist-sota"`` preset of :mod:`mnistlab.features.augment`: rotation, shifts, zoom, elastic
    distortion) nets of this size are what reach 99.7 %+ on MNIST. The default ``width=16``
    gives 412,666 parameters and ~34 M multiply-accumulates per image (~26 s per MNIST epoch
    on 2 CPU cores in bf16); ``width=32`` gives 1.64 M parameters and ~137 M MACs (~80 s).
    """

    def __init__(self, num_classes: int = 10, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(1, w),
            conv_pool_bn(w, 2 * w),  # 28 → 14
            ResidualBlock(2 * w),
            conv_pool_bn(2 * w, 4 * w),  # → 7
            conv_pool_bn(4 * w, 8 * w),  # → 3
            ResidualBlock(8 * w),
        )
        self.head = nn.Sequential(
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(8 * w, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


CNN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "seed-cnn": SeedCNN,
    "lenet5": LeNet5,
    "mlp": MLP,
    "fast-cnn": FastCNN,
    "fast-cnn-wide": FastCNNWide,
    "resnet-small": ResNetSmall,
}


def build_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """A new, freshly initialized model from :data:`CNN_MODELS`; ``kwargs`` go to its constructor.

    Raises :class:`~mnistlab.errors.MnistlabError` for an unknown ``name``.
    """
    try:
        factory = CNN_MODELS[name]
    except KeyError:
        raise unknown_name("model", name, tuple(CNN_MODELS)) from None
    return factory(num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are buffers: not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_image(model: nn.Module, input_shape: tuple[int, ...] = (1, 1, 28, 28)) -> int:
    """FLOPs of one forward pass on one image, counting a multiply-add as 2 FLOPs.

    Counts the multiply-accumulates (MACs) of every Conv2d and Linear with forward hooks on a
    zero input of ``input_shape`` and returns ``2 * MACs``. Bias adds, normalization, activations
    and pooling are left out (they are a few percent of the arithmetic, though not of the time on
    a CPU). The model is run in eval mode and restored to its previous mode.
    """
    macs = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
        macs += out.numel() // out.shape[0] * per_output

    def linear_hook(m: nn.Linear, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(input_shape, device=param.device if param is not None else None)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return 2 * macs


def cnn_from_file(
    model: ModelFile | str | os.PathLike[str],
    factory: Callable[[str, int], nn.Module] | None = None,
) -> nn.Module:
    """The CNN a ``mnistlab-torch-model/1`` file holds (a :class:`ModelFile` already read, or
    its run folder, model folder or manifest), on the CPU in eval mode.

    Before anything is built, the manifest's classes and normalization are checked
    (:func:`~mnistlab.models.files.check_deep_fields`: 2 to 1,000 classes, a positive std),
    and, for the architectures of :data:`CNN_MODELS`, ``num_classes`` against the output size
    of the last layer in the weights' safetensors header.

    Args:
        factory: ``factory(architecture, num_classes)`` -> the module to load the weights into
            (default :func:`build_model`).

    Raises:
        MnistlabError: another format, changed weights, an invalid manifest, or weights that
            do not fit the architecture.
    """
    if not isinstance(model, ModelFile):
        model = read_model_file(model, [TORCH_FORMAT])
    meta = model.manifest
    check_deep_fields(meta, model.manifest_path)
    architecture = meta.get("architecture")
    if not isinstance(architecture, str):
        raise MnistlabError(
            f"{model.manifest_path}: invalid model manifest: 'architecture' must be a name"
        )
    if factory is None:
        if architecture not in CNN_MODELS:
            raise unknown_name("model architecture", architecture, tuple(CNN_MODELS))
        outputs = output_size(safetensors_shapes(model.data, model.weights_path))
        if outputs != meta["num_classes"]:
            raise MnistlabError(
                f"{model.manifest_path}: invalid model manifest: 'num_classes' is "
                f"{meta['num_classes']} but the weights' last layer has {outputs} outputs",
                hint="use the model.json written with these weights",
            )
    module = (factory or (lambda name, k: build_model(name, num_classes=k)))(
        architecture, meta["num_classes"]
    )
    try:
        module.load_state_dict(model.tensors())
    except RuntimeError as exc:  # names or shapes differ: another version of the architecture
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise MnistlabError(
            f"{model.weights_path}: the weights do not fit the {architecture!r} "
            f"architecture of this mnistlab ({first})",
            hint="the model was saved by another mnistlab version or with another model "
            "factory; load it with that version or factory, or train it again",
        ) from None
    return module.eval()


def write_cnn_model(
    folder: str | os.PathLike[str],
    model: nn.Module,
    *,
    architecture: str,
    class_names: Sequence[str],
    normalization: tuple[float, float],
    config: dict,
    metrics: dict,
    extra: dict | None = None,
) -> None:
    """Write ``model.safetensors`` and ``model.json`` (:data:`TORCH_FORMAT`): what
    :func:`cnn_from_file` reads back, and every command that takes a run folder (evaluate,
    export, compress, serve).

    Args:
        folder: the model folder (``<run>/model``), written atomically.
        model: a :data:`CNN_MODELS` net (or one a ``model_factory`` builds again).
        architecture: its name in :data:`CNN_MODELS`.
        class_names: one name per output.
        normalization: ``(mean, std)``: the input is ``(uint8 / 255 - mean) / std``.
        config: the run's settings (``TrainConfig`` fields: what ``compress --prune`` replays).
        metrics: the run's final metrics.
        extra: more manifest fields (e.g. the few-label recipe's own settings).
    """
    mean, std = normalization
    manifest = {
        "kind": "deep",
        "architecture": architecture,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "input": "float (N, 1, 28, 28): uint8 pixels / 255, then (x - mean) / std",
        "normalization": {"mean": mean, "std": std},
        "config": config,
        "metrics": metrics,
        **(extra or {}),
    }
    write_model_file(folder, tensors_to_bytes(model.state_dict()), manifest, fmt=TORCH_FORMAT)
