"""The MNIST-C-style corruption suite: every corruption at every severity keeps the input's
type, shape, dtype and range, is fixed by its seed, really corrupts, grows with severity; and
corruptions work as a training augmentation (``AugmentConfig.corruption_p``)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from robustness_fixtures import one_torch_thread  # noqa: F401 (autouse fixture)

from mnistlab.errors import MnistlabError
from mnistlab.features.augment import (
    AUGMENT_PRESETS,
    AugmentConfig,
    augment_batch,
    resolve_augment,
)
from mnistlab.features.corruptions import (
    CORRUPTIONS,
    corrupt,
    corruption_names,
    random_corruptions,
)
from mnistlab.training.config import TrainConfig

ALL = [(name, s) for name in CORRUPTIONS for s in CORRUPTIONS[name].severities]
# The corruptions with no random choice (the rest change with the seed).
DETERMINISTIC = {"scale", "brightness", "contrast", "canny_edges", "inverse"}


@pytest.fixture(scope="module")
def digits(mini) -> np.ndarray:
    return mini["test"].images[:32]


def test_suite_covers_mnist_c_and_lighting() -> None:
    assert set(corruption_names()) == {
        "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
        "translate", "brightness", "contrast", "stripe", "fog", "spatter", "dotted_line",
        "zigzag", "canny_edges", "inverse",
    }  # fmt: skip
    for c in CORRUPTIONS.values():
        assert c.severities == tuple(range(1, len(c.levels) + 1))
        assert len(c.levels) == (1 if c.name == "inverse" else 5)


@pytest.mark.parametrize(("name", "severity"), ALL)
def test_keeps_type_shape_dtype_range_and_is_seeded(digits, name: str, severity: int) -> None:
    out = corrupt(digits, name, severity, seed=3)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == digits.shape
    assert not np.array_equal(out, digits), "a corruption must change the images"
    assert np.array_equal(out, corrupt(digits, name, severity, seed=3))  # same seed, same images
    if name not in DETERMINISTIC:
        assert not np.array_equal(out, corrupt(digits, name, severity, seed=4))
    # float torch (N, 1, H, W) in [0, 1] in, the same out
    x = torch.from_numpy(digits[:8]).float().div(255).unsqueeze(1)
    y = corrupt(x, name, severity, seed=3)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and y.shape == x.shape
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    # uint8 result = the float result rounded (same random draws for the same batch)
    as_uint8 = corrupt(torch.from_numpy(digits[:8]), name, severity, seed=3).numpy()
    assert np.abs(as_uint8.astype(int) - np.round(y[:, 0].numpy() * 255)).max() <= 1


def test_harder_with_severity(digits) -> None:
    """Mean absolute change from the clean images never falls as the severity rises."""
    for name in ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "rotate",
                 "brightness", "contrast", "fog", "spatter", "dotted_line", "zigzag"):  # fmt: skip
        change = [
            np.abs(corrupt(digits, name, s, seed=0).astype(float) - digits).mean()
            for s in CORRUPTIONS[name].severities
        ]
        assert all(b >= a * 0.98 for a, b in itertools.pairwise(change)), (name, change)


def test_exact_definitions(digits) -> None:
    x = torch.from_numpy(digits).float().div(255)
    assert torch.allclose(corrupt(x, "inverse", 1), 1 - x)
    assert torch.allclose(corrupt(x, "brightness", 2), (x + 0.2).clamp(0, 1))
    low = corrupt(x, "contrast", 5)  # 0.1 * (x - mean) + mean: the mean is kept, range shrinks
    assert torch.allclose(low.mean(dim=(1, 2)), x.mean(dim=(1, 2)), atol=1e-6)
    assert float((low.amax(dim=(1, 2)) - low.amin(dim=(1, 2))).max()) < 0.11
    edges = corrupt(x, "canny_edges", 3)
    assert set(edges.unique().tolist()) <= {0.0, 1.0}


def test_bad_arguments_raise_clear_errors(digits) -> None:
    with pytest.raises(MnistlabError, match="unknown corruption 'snow'") as err:
        corrupt(digits, "snow")
    assert "shot_noise" in err.value.hint
    with pytest.raises(MnistlabError, match="severity 6 out of range"):
        corrupt(digits, "fog", 6)
    with pytest.raises(MnistlabError, match="severity 2 out of range"):
        corrupt(digits, "inverse", 2)
    with pytest.raises(MnistlabError, match="shape"):
        corrupt(digits[0], "fog")
    with pytest.raises(MnistlabError, match="uint8 or floating"):
        corrupt(digits.astype(np.int32), "fog")
    assert corrupt(digits[:0], "zigzag", 5).shape == (0, 28, 28)


def test_random_corruptions_as_augmentation(digits) -> None:
    x = torch.from_numpy(digits)
    none = random_corruptions(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(none, x)
    every = random_corruptions(x, 1.0, torch.Generator().manual_seed(0))
    changed = (every != x).flatten(1).any(1)
    assert every.dtype == torch.uint8 and every.shape == x.shape
    assert changed.float().mean() > 0.9  # a mild corruption can leave an image unchanged
    again = random_corruptions(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(every, again)
    only = random_corruptions(x, 1.0, torch.Generator().manual_seed(1), names=("inverse",))
    assert torch.equal(only, 255 - x)


def test_augment_config_hook_and_preset(digits) -> None:
    cfg = AugmentConfig(corruption_p=1.0, corruptions=("inverse",))
    x = torch.from_numpy(digits)
    assert torch.equal(augment_batch(x, cfg, 0), 255 - x)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg  # JSON round trip (lists -> tuples)
    with pytest.raises(ValueError, match="unknown corruptions"):
        AugmentConfig(corruption_p=0.5, corruptions=("snow",))
    with pytest.raises(ValueError, match="corruption_p must be in"):
        AugmentConfig(corruption_p=1.5)
    preset = AUGMENT_PRESETS["mnist-c"]
    assert preset.corruption_p > 0
    out = augment_batch(x, "mnist-c", 0)
    assert torch.equal(out, augment_batch(x, "mnist-c", 0)) and not torch.equal(out, x)
    assert TrainConfig(augment="mnist-c").augment == "mnist-c"  # the engine accepts the preset


def test_custom_augmentation_as_a_dict(digits) -> None:
    """A run can train on some corruptions only (e.g. to test on the others): the config takes a
    dict of AugmentConfig fields, as `--set 'augment={...}'` gives and config.json stores."""
    x = torch.from_numpy(digits)
    custom = {"corruption_p": 1.0, "corruptions": ["inverse"]}
    assert torch.equal(augment_batch(x, custom, 0), 255 - x)
    assert resolve_augment(custom) == AugmentConfig(corruption_p=1.0, corruptions=("inverse",))
    config = TrainConfig(augment=custom)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(MnistlabError, match="unknown AugmentConfig fields: sharpen") as err:
        TrainConfig(augment={"sharpen": 1.0})
    assert "JSON object" in err.value.hint
    with pytest.raises(MnistlabError, match="unknown corruptions"):
        TrainConfig(augment={"corruption_p": 0.5, "corruptions": ["snow"]})
    with pytest.raises(MnistlabError, match="unknown augmentation preset"):
        TrainConfig(augment="heavy")
