"""Named recipes for the deep-learning models: small typed configs, printed in full at the
start of a run and saved with it.

Only ``seed-cnn/seed`` is a reproduction (the tutorial's Keras recipe). ``fast-cnn/default`` is
tuned for time to 99 % and ``resnet-small/default`` for accuracy (docs/benchmarks.md); the other
``default`` recipes are reasonable starting points that have not been tuned.
"""

from __future__ import annotations

from mnistlab.errors import MnistlabError, unknown_name
from mnistlab.training.config import TrainConfig

DEEP_RECIPES: dict[tuple[str, str], TrainConfig] = {
    # The tutorial (docs/recipes.md): Adam lr 1e-3 (no weight decay), 10 epochs,
    # batch 128, no schedule, no augmentation; the test set only watched, never chosen on.
    # Differences from Keras: torch's Adam eps 1e-8 (Keras 1e-7); the last partial batch
    # of each epoch (96 images) is dropped (Keras keeps it).
    ("seed-cnn", "seed"): TrainConfig(
        model="seed-cnn",
        epochs=10,
        batch_size=128,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.0,
        schedule="constant",
        warmup=0.0,
    ),
    ("seed-cnn", "default"): TrainConfig(model="seed-cnn", epochs=5, batch_size=128, lr=2e-3),
    ("lenet5", "default"): TrainConfig(model="lenet5", epochs=8, batch_size=128, lr=2e-3),
    ("mlp", "default"): TrainConfig(model="mlp", epochs=10, batch_size=128, lr=1e-3),
    # The default recipe (`mnistlab train` with no options): one epoch, batch 256, one-cycle to
    # lr 2e-2 with 40 % of the steps warming up, label smoothing 0.1, bf16 + channels_last (the
    # fastest combination for conv nets on this CPU, docs/models.md). Learning rate and warmup
    # were chosen on a validation split (docs/benchmarks.md, "Choosing the default's learning
    # rate"); 10 seeds: mean 0.9917 test accuracy, every seed >= 0.99, in ~2.3 s on 2 CPU cores.
    ("fast-cnn", "default"): TrainConfig(
        model="fast-cnn",
        epochs=1,
        batch_size=256,
        lr=2e-2,
        warmup=0.4,
        label_smoothing=0.1,
        precision="auto",
        channels_last=True,
    ),
    # The high-accuracy recipe: SGD-Nesterov with one-cycle, label smoothing, the "mnist-sota"
    # augmentation (rotation, shifts, zoom, elastic), 15 epochs (~26 s each on 2 CPU cores).
    ("resnet-small", "default"): TrainConfig(
        model="resnet-small",
        epochs=15,
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        weight_decay=5e-4,
        schedule="onecycle",
        label_smoothing=0.1,
        augment="mnist-sota",
        precision="auto",
        channels_last=True,
    ),
    # The 99.5 % recipe (`mnistlab train --recipe speed-99.5`): fast-cnn at twice the width,
    # 5 epochs of mild affine augmentation ("light"), batch 512 with one-cycle to 2e-2, bf16 +
    # channels_last: ~25 s on 2 CPU cores (docs/benchmarks.md, "Time to 99.5 %"). Batch 512
    # costs ~12 % less per epoch than 256 for the wider net at no loss of accuracy.
    ("fast-cnn-wide", "speed-99.5"): TrainConfig(
        model="fast-cnn-wide",
        epochs=5,
        batch_size=512,
        lr=2e-2,
        label_smoothing=0.1,
        augment="light",
        precision="auto",
        channels_last=True,
    ),
}

DEEP_MODELS = tuple(dict.fromkeys(model for model, _ in DEEP_RECIPES))
DEFAULT_MODEL = "fast-cnn"  # what `mnistlab train` trains with no --model (its default recipe)


def recipe_owner(recipe: str) -> str | None:
    """The one model that has a recipe called ``recipe`` (``"speed-99.5"`` -> ``"fast-cnn-wide"``),
    or None when no model or several have it: what ``mnistlab train --recipe NAME`` trains when
    no ``--model`` is given and the default model lacks that recipe."""
    owners = [model for model, name in DEEP_RECIPES if name == recipe]
    return owners[0] if len(owners) == 1 else None


def get_deep_recipe(model: str, recipe: str = "default", /, **overrides: object) -> TrainConfig:
    """The config of recipe ``recipe`` of ``model``, with ``overrides`` applied (any
    :class:`TrainConfig` key, ``model`` included).

    Raises:
        MnistlabError: unknown model, recipe or config key, or a value of the wrong type.
    """
    if (model, recipe) not in DEEP_RECIPES:
        if model not in DEEP_MODELS:
            raise unknown_name("deep model", model, DEEP_MODELS)
        known = [r for m, r in DEEP_RECIPES if m == model]
        raise MnistlabError(
            f"model {model!r} has no recipe {recipe!r}", hint=f"its recipes: {', '.join(known)}"
        )
    return DEEP_RECIPES[(model, recipe)].with_overrides(dict(overrides))
