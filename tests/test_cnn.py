"""The neural-network models: shapes, the tutorial CNN's exact structure and Keras init, the
registry, determinism, channels_last / bf16 autocast agreement, and a quick learning check on
the bundled mnist-mini."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models.cnn import (
    CNN_MODELS,
    SeedCNN,
    build_model,
    count_parameters,
    flops_per_image,
    keras_init_,
)

NAMES = sorted(CNN_MODELS)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` real mnist-mini images as normalized float (n, 1, 28, 28)."""
    images, _ = load_dataset("mnist-mini", "test").arrays()
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(images[rng.choice(len(images), n, replace=False)]).float() / 255
    return ((x - 0.1307) / 0.3081).unsqueeze(1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("batch", [1, 7])
def test_output_shape(name: str, batch: int) -> None:
    model = build_model(name).eval()
    with torch.no_grad():
        out = model(_images(batch))
    assert out.shape == (batch, 10) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_num_classes(name: str) -> None:
    model = build_model(name, num_classes=26).eval()
    with torch.no_grad():
        assert model(_images(3)).shape == (3, 26)


def test_seed_cnn_structure() -> None:
    model = SeedCNN()
    assert count_parameters(model) == 225_034
    layers = [m for m in model.modules() if not isinstance(m, (nn.Sequential, SeedCNN))]
    expected = [
        (nn.Conv2d, (1, 32, (3, 3))),
        (nn.ReLU, None),
        (nn.MaxPool2d, None),
        (nn.Conv2d, (32, 64, (3, 3))),
        (nn.ReLU, None),
        (nn.MaxPool2d, None),
        (nn.Flatten, None),
        (nn.Linear, (1600, 128)),
        (nn.ReLU, None),
        (nn.Linear, (128, 10)),
    ]
    assert [type(m) for m in layers] == [t for t, _ in expected]
    for m, (_, shape) in zip(layers, expected, strict=True):
        if isinstance(m, nn.Conv2d):
            assert (m.in_channels, m.out_channels, m.kernel_size) == shape
            assert m.padding == (0, 0) and m.stride == (1, 1)  # Keras 'valid'
        elif isinstance(m, nn.Linear):
            assert (m.in_features, m.out_features) == shape
        elif isinstance(m, nn.MaxPool2d):
            assert m.kernel_size == 2 and m.stride == 2
    # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5
    assert model.features(torch.zeros(1, 1, 28, 28)).shape == (1, 64, 5, 5)


def test_parameter_counts_and_flops() -> None:
    counts = {name: count_parameters(build_model(name)) for name in NAMES}
    assert counts == {
        "fast-cnn": 29_178,
        "fast-cnn-wide": 104_426,
        "lenet5": 61_706,
        "mlp": 535_818,
        "resnet-small": 412_666,
        "seed-cnn": 225_034,
    }
    # seed-cnn MACs by hand: conv1 26*26*32*9, conv2 11*11*64*32*9, dense 1600*128 + 128*10
    macs = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 32 * 9 + 1600 * 128 + 128 * 10
    assert flops_per_image(SeedCNN()) == 2 * macs
    assert flops_per_image(build_model("mlp")) == 2 * (784 * 512 + 512 * 256 + 256 * 10)
    assert flops_per_image(build_model("fast-cnn")) < flops_per_image(SeedCNN())
    # twice the channels: about 4x the multiply-accumulates (2x in the 1-channel stem and head)
    ratio = flops_per_image(build_model("fast-cnn-wide")) / flops_per_image(build_model("fast-cnn"))
    assert 3.9 < ratio < 4.0


@pytest.mark.parametrize("name", ["seed-cnn", "lenet5"])
def test_keras_init(name: str) -> None:
    torch.manual_seed(0)
    module = SeedCNN() if name == "seed-cnn" else keras_init_(build_model(name))
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        w = m.weight.detach()
        receptive = math.prod(w.shape[2:])
        fan_in, fan_out = w.shape[1] * receptive, w.shape[0] * receptive
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max() <= bound
        assert torch.all(m.bias == 0)
        # U(-b, b): mean 0, std b/sqrt(3), and the extremes come close to the bound
        n = w.numel()
        assert abs(w.mean().item()) < 4 * bound / math.sqrt(3 * n)
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.2 if n < 500 else 0.05)
        assert w.abs().max() > 0.9 * bound


@pytest.mark.parametrize("name", NAMES)
def test_determinism(name: str) -> None:
    torch.manual_seed(123)
    a = build_model(name).state_dict()
    torch.manual_seed(123)
    b = build_model(name).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    c = build_model(name).state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_and_bf16_agree(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = _images(64)
    with torch.no_grad():
        ref = model(x)
        cl_model = build_model(name).eval()
        cl_model.load_state_dict(model.state_dict())
        cl_model = cl_model.to(memory_format=torch.channels_last)
        cl = cl_model(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = model(x).float()
    assert torch.allclose(cl, ref, atol=1e-4, rtol=1e-4)
    # bf16 keeps 8 bits of mantissa: compare logits loosely and predictions almost exactly
    assert (bf - ref).abs().max() <= 0.05 * ref.abs().max() + 0.05
    assert (bf.argmax(1) == ref.argmax(1)).float().mean() >= 0.95


@pytest.mark.parametrize("name", NAMES)
def test_train_step_channels_last_bf16(name: str) -> None:
    model = build_model(name).to(memory_format=torch.channels_last).train()
    x = _images(8).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), torch.arange(8) % 10)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_model() -> None:
    with pytest.raises(MnistlabError) as info:
        build_model("resnet-huge")
    assert "resnet-huge" in info.value.message
    assert info.value.hint is not None
    assert all(name in info.value.hint for name in CNN_MODELS)


def test_kwargs_reach_the_model() -> None:
    mlp = build_model("mlp", hidden_sizes=(32,), dropout=0.0)
    assert count_parameters(mlp) == 784 * 32 + 32 + 32 * 10 + 10
    classic = build_model("lenet5", classic=True)
    assert any(isinstance(m, nn.Tanh) for m in classic.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in classic.modules())


def test_fast_cnn_learns_mnist_mini() -> None:
    """150 Adam steps (batch 128, ~4 passes over 5,000 images) reach > 90 % on mnist-mini test."""
    torch.manual_seed(0)
    images, labels = load_dataset("mnist-mini", "train").arrays()
    x = ((torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081).unsqueeze(1)
    y = torch.from_numpy(labels)
    model = build_model("fast-cnn")
    steps, batch = 150, 128
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,), generator=generator)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    test_images, test_labels = load_dataset("mnist-mini", "test").arrays()
    xt = ((torch.from_numpy(test_images).float() / 255 - 0.1307) / 0.3081).unsqueeze(1)
    model.eval()
    with torch.no_grad():
        accuracy = (model(xt).argmax(1) == torch.from_numpy(test_labels)).float().mean().item()
    assert accuracy > 0.90
