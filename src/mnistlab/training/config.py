"""The config of a deep-learning training run: every hyper-parameter with its unit.

Kept apart from the engine (and free of torch) so that the command line can list recipes
and check ``--set`` values at once, before anything heavy is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mnistlab.config import RunConfig

MONITORS = ("val_accuracy", "val_loss")
# Keys that config.json holds besides the TrainConfig fields (written by the engine).
RUN_KEYS = (
    "kind",
    "created",
    "num_train",
    "num_val",
    "num_test",
    "normalization",
    "world_size",
    "train_data",
    "threads",
    "precision_used",
)


@dataclass
class TrainConfig(RunConfig):
    """Every hyper-parameter of a deep-learning run, with its unit. Saved in ``config.json``."""

    what: ClassVar[str] = "training"
    kinds: ClassVar[tuple[str, ...]] = ("deep",)
    run_keys: ClassVar[tuple[str, ...]] = RUN_KEYS

    model: str = "seed-cnn"  # architecture name for the model factory (models.cnn.build_model)
    epochs: int = 10  # passes over the training part
    batch_size: int = 128  # images per optimizer step; the last partial batch is dropped
    momentum: float = 0.9  # SGD momentum (unused by AdamW, which uses betas 0.9/0.999)
    weight_decay: float = 0.01  # decoupled (AdamW) / L2 (SGD) on weights with dim >= 2 only
    schedule: str = "onecycle"  # "constant" | "onecycle" | "cosine" | "step"; see lr_at()
    final_lr: float = 0.0  # onecycle/cosine: last learning rate as a fraction of lr
    step_epochs: int = 3  # step schedule: multiply lr by step_gamma every this many epochs
    step_gamma: float = 0.1  # step schedule: decay factor
    label_smoothing: float = 0.0  # in [0, 1): weight of the uniform target in the training loss
    grad_clip: float | None = None  # max L2 norm of all gradients together; None = no clipping
    augment: str | dict[str, Any] | None = None  # preset name (features.augment.AUGMENT_PRESETS),
    # a dict of AugmentConfig fields (e.g. {"corruption_p": 0.5, "corruptions": ["fog"]}), or None
    adversarial_eps: float = 0.0  # PGD adversarial training: L-inf radius in [0, 1] pixels; 0 = off
    adversarial_steps: int = 7  # PGD steps per batch (random start; mnistlab.robustness.attacks)
    adversarial_step_size: float | None = None  # per PGD step (pixels); None = 2.5 * eps / steps
    val_size: float | int = 0  # 0 = no validation; fraction in (0, 1) or count of train images
    early_stopping: int | None = None  # patience: epochs without improvement; None = off
    monitor: str = "val_accuracy"  # "val_accuracy" (higher is better) | "val_loss" (lower)
    select_best: bool = False  # final model = weights of the best validation epoch
    channels_last: bool = False  # NHWC memory layout for inputs and model (faster convs on GPU)
    compile: bool = False  # torch.compile the model (slow first steps; pays off on long runs)
    generated_digits: int = 0  # digits made from fonts and stroke templates added to the
    # training split (mnistlab.data.synthetic; digit datasets only); 0 = none

    def validate(self) -> None:
        """Range checks (the types are checked before, by :class:`JsonConfig`)."""

        super().validate()

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise self.invalid(message)

        need(self.epochs >= 1, f"epochs must be >= 1; got {self.epochs}")
        need(self.batch_size >= 1, f"batch_size must be >= 1; got {self.batch_size}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}")
        need(0 <= self.final_lr <= 1, f"final_lr must be in [0, 1]; got {self.final_lr}")
        need(self.step_epochs >= 1, f"step_epochs must be >= 1; got {self.step_epochs}")
        need(0 < self.step_gamma <= 1, f"step_gamma must be in (0, 1]; got {self.step_gamma}")
        need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be > 0 or None")
        need(self.val_size >= 0, f"val_size must be >= 0; got {self.val_size}")
        need(self.generated_digits >= 0, f"generated_digits must be >= 0: {self.generated_digits}")
        need(
            self.early_stopping is None or self.early_stopping >= 1,
            "early_stopping (patience in epochs) must be >= 1 or None",
        )
        need(self.monitor in MONITORS, f"monitor must be one of {MONITORS}")
        need(0 <= self.adversarial_eps <= 1, "adversarial_eps must be in [0, 1] (pixel scale)")
        need(self.adversarial_steps >= 1, "adversarial_steps must be >= 1")
        need(
            self.adversarial_step_size is None or self.adversarial_step_size > 0,
            "adversarial_step_size must be > 0 or None",
        )
        if (self.early_stopping is not None or self.select_best) and not self.val_size:
            raise self.invalid(
                "early_stopping and select_best need a validation set",
                hint="set val_size, e.g. 0.1 (a stratified 10% of the training split)",
            )
        if self.augment is not None:
            from mnistlab.features.augment_config import resolve_augment

            try:
                resolve_augment(self.augment)
            except (TypeError, ValueError) as exc:
                raise self.invalid(
                    f"augment: {exc}",
                    hint="use a preset name (e.g. light, mnist-sota, mnist-c) or a JSON object "
                    "of AugmentConfig fields, e.g. --set 'augment={\"corruption_p\": 0.5}'",
                ) from None
