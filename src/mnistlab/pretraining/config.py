"""The configs of pretraining and fine-tuning runs: every setting with its unit.

Free of torch (checks that need a model module import it when they run), so that the
command line shows their defaults and checks ``--set`` values before anything heavy loads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from mnistlab.config import RunConfig
from mnistlab.features.augment_config import AUGMENT_PRESETS, get_augment_preset
from mnistlab.models.transformer_config import LORA_TARGETS, TransformerConfig, get_preset

OBJECTIVES = ("mae", "gpt", "simclr")
MODES = ("full", "probe", "lora")


@dataclass
class PretrainConfig(RunConfig):
    """Every setting of a pretraining run. Saved in ``config.json``."""

    what: ClassVar[str] = "pretraining"
    kinds: ClassVar[tuple[str, ...]] = ("pretrain",)
    run_keys: ClassVar[tuple[str, ...]] = (
        "kind",
        "created",
        "num_images",
        "parameters",
        "threads",
        "precision_used",
    )

    objective: str = "mae"  # "mae" | "gpt" (a transformer) | "simclr" (a CNN backbone)
    preset: str = "small"  # transformer size: tiny | small | base | large
    patch_size: int | None = None  # override the preset's patch side (4); must divide 28
    epochs: int = 10  # passes over the images
    batch_size: int = 256  # images per optimizer step
    lr: float = 1.5e-3  # peak learning rate (optimizer and schedule: the RunConfig fields)
    weight_decay: float = 0.05  # on weight matrices only
    warmup: float = 0.05  # fraction of steps with linear warmup
    mask_ratio: float = 0.75  # mae: fraction of patches hidden
    decoder_dim: int = 64  # mae: decoder width
    decoder_depth: int = 1  # mae: decoder blocks
    codebook_size: int = 256  # gpt: number of patch tokens (k-means on training patches)
    conditional: bool = False  # gpt: prefix = the digit (READS LABELS) instead of "no class"
    uncond_prob: float = 0.1  # gpt conditional: fraction of images trained with "no class"
    backbone: str = "fast-cnn-wide"  # simclr: the CNN whose `features` are pretrained
    temperature: float = 0.2  # simclr: NT-Xent softmax temperature
    projection_dim: int = 64  # simclr: output size of the projection head
    views: str = "strong"  # simclr: augmentation preset of the two views of every image
    max_images: int = 0  # 0 = all training images, else the first max_images (quick runs)

    def validate(self) -> None:
        """Range checks (the types are checked before, by :class:`JsonConfig`)."""

        super().validate()

        def need(ok: bool, message: str) -> None:
            if not ok:
                raise self.invalid(message)

        need(self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}")
        self.transformer()  # validates preset and patch size
        need(self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1")
        need(self.lr > 0 and self.weight_decay >= 0, "lr must be > 0, weight_decay >= 0")
        need(0 <= self.warmup < 1, "warmup must be in [0, 1)")
        need(0 < self.mask_ratio < 1, f"mask_ratio must be in (0, 1); got {self.mask_ratio}")
        need(self.decoder_dim >= 1 and self.decoder_depth >= 1, "decoder_dim, depth >= 1")
        need(2 <= self.codebook_size <= 65536, "codebook_size must be in [2, 65536]")
        need(0 <= self.uncond_prob <= 1, "uncond_prob must be in [0, 1]")
        need(self.max_images >= 0, "max_images must be >= 0")
        need(self.temperature > 0 and self.projection_dim >= 1, "temperature > 0, dim >= 1")
        need(self.views in AUGMENT_PRESETS, f"views must be one of {tuple(AUGMENT_PRESETS)}")
        if self.objective == "simclr":
            from mnistlab.models.cnn import CNN_MODELS

            need(self.backbone in CNN_MODELS, f"backbone must be one of {tuple(CNN_MODELS)}")

    def transformer(self) -> TransformerConfig:
        """The backbone's shape: the preset, with ``patch_size`` if given."""
        base = get_preset(self.preset)
        return base if self.patch_size is None else replace(base, patch_size=self.patch_size)


@dataclass
class FinetuneConfig(RunConfig):
    """Every setting of a fine-tuning run. Saved in ``config.json``."""

    what: ClassVar[str] = "fine-tuning"
    kinds: ClassVar[tuple[str, ...]] = ("finetune",)
    run_keys: ClassVar[tuple[str, ...]] = (
        "kind",
        "created",
        "num_labeled",
        "num_unlabeled",
        "num_test",
        "class_names",
        "threads",
        "precision_used",
    )

    pretrained: str | None = None  # MAE run folder or encoder .safetensors; None = from scratch
    # (an external .safetensors file is read with the preset / patch_size below)
    mode: str = "full"  # "full" | "probe" | "lora"
    labels: int = 0  # labelled training images (stratified, seeded); 0 = all
    preset: str = "small"  # from scratch / external weights: the transformer size
    patch_size: int | None = None  # from scratch / external weights: the preset's patch side
    steps: int = 500  # supervised optimizer steps
    batch_size: int = 64  # labelled images per step
    eval_every: int = 100  # steps per round (metrics line + checkpoint)
    weight_decay: float = 0.05
    augment: str | None = "light"  # augmentation preset for labelled batches (None: off)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    semi_steps: int = 0  # semi-supervised steps after the supervised ones (0 = off)
    semi_threshold: float = 0.95  # pseudo-labels kept when the model's confidence >= this
    semi_ratio: int = 3  # unlabeled images per labelled image in a semi-supervised step
    semi_weight: float = 1.0  # weight of the unlabeled loss
    semi_augment: str = "mnist-sota"  # the strong augmentation of the consistency loss
    semi_align: bool = False  # distribution alignment of the pseudo-labels (see ALIGN_SAMPLE)

    def validate(self) -> None:
        """Range checks (the types are checked before, by :class:`JsonConfig`)."""

        super().validate()

        def need(ok: bool, message: str, hint: str | None = None) -> None:
            if not ok:
                raise self.invalid(message, hint=hint)

        need(self.mode in MODES, f"mode must be one of {MODES}; got {self.mode!r}")
        need(
            self.pretrained is not None or self.mode == "full",
            f"mode {self.mode!r} needs a pretrained model",
            hint="pass --from RUN_DIR (a `mnistlab pretrain` run), or use --mode full",
        )
        get_preset(self.preset)
        need(self.labels >= 0, "labels must be >= 0 (0 = all)")
        need(self.steps >= 1 and self.batch_size >= 1 and self.eval_every >= 1, "steps >= 1")
        need(self.lr > 0 and self.weight_decay >= 0 and 0 <= self.warmup < 1, "bad lr/warmup")
        for preset in (self.augment, self.semi_augment):
            if preset is not None:
                try:
                    get_augment_preset(preset)
                except ValueError as exc:
                    need(False, str(exc))
        need(self.lora_rank >= 1 and self.lora_alpha > 0, "lora_rank >= 1, lora_alpha > 0")
        need(set(self.lora_targets) <= set(LORA_TARGETS), f"lora_targets from {LORA_TARGETS}")
        need(self.semi_steps >= 0 and self.semi_ratio >= 1, "semi_steps >= 0, semi_ratio >= 1")
        need(0 < self.semi_threshold <= 1, "semi_threshold must be in (0, 1]")
        need(
            not (self.semi_steps and self.mode == "probe"),
            "the semi-supervised stage trains the encoder: use mode full or lora",
        )

    @property
    def total_steps(self) -> int:
        """Supervised plus semi-supervised steps, rounded up to whole rounds."""
        rounds = math.ceil((self.steps + self.semi_steps) / self.eval_every)
        return rounds * self.eval_every


DEFAULT_BACKBONE = "pretrained:simclr-fast-cnn-wide"
# How `mnistlab fewshot` uses the unlabeled images: label propagation over the backbone's
# feature graph, then a student (the default: minutes); or FixMatch consistency training.
FEWSHOT_METHODS = ("propagate", "consistency")
#: Generated digits in the propagation graph by default, for a dataset of the digits 0-9: on
#: MNIST, 100 labels read 99.54 % with them, 99.18 % without (docs/benchmarks.md, "Few labels").
GENERATED_DIGITS = 100


@dataclass
class FewshotConfig(RunConfig):
    """Every setting of a few-label run (``mnistlab fewshot``). Saved in ``config.json``.

    Two methods share the labelled draw (``labels``, ``seed``) and the backbone
    (``pretrained``):

    * ``propagate`` (the default): the backbone's features of every training image make a
      k-nearest-neighbour graph (``neighbors``); the labels spread over it
      (:mod:`mnistlab.pretraining.propagate`) and each unlabeled image takes the class it
      received most of; then the ``student`` CNN (its default recipe, ``student_epochs``
      epochs) learns the labelled images and those pseudo-labels. The student is the model.
      Generated digits (``generated_digits``; by default :data:`GENERATED_DIGITS` when the
      classes are the digits 0-9), labelled by construction, not MNIST's labels, are labelled
      nodes of the graph too (:meth:`generated_count`).
    * ``consistency``: FixMatch (Sohn et al. 2020) on a CNN started from the backbone. Each
      step trains on ``batch_size`` labelled images (weak view) and ``batch_size *
      unlabeled_ratio`` unlabeled ones: the model labels their weak view, and the pseudo-label,
      when its confidence reaches ``threshold``, is the target of their strong view.
      Distribution alignment (running) and ``balance`` (per batch) keep the pseudo-labels'
      class frequencies near the labelled set's, and the exponential moving average of the
      weights (``ema``) is the model that is evaluated and saved. Then, with ``student``,
      self-training: that model labels the unlabeled images and a CNN learns from them.
    """

    what: ClassVar[str] = "few-label training"
    kinds: ClassVar[tuple[str, ...]] = ("fewshot",)
    run_keys: ClassVar[tuple[str, ...]] = (
        "kind",
        "created",
        "num_labeled",
        "num_unlabeled",
        "num_test",
        "class_names",
        "threads",
        "backbone",
        "precision_used",
    )
    # A run recorded before a setting existed replays as it ran: without it.
    since_added: ClassVar[dict[str, Any]] = {
        "balance": False,
        "method": "consistency",
        "generated_digits": 0,
    }

    pretrained: str | None = DEFAULT_BACKBONE  # backbone: pretrained:NAME, a run folder, None
    model: str = "fast-cnn-wide"  # the CNN (its `features` take the backbone's weights)
    labels: int = 100  # labelled training images (stratified, seeded); 0 = all
    method: str = "propagate"  # propagate: label propagation + student; consistency: FixMatch
    neighbors: int = 10  # propagate: neighbours per image in the k-NN graph of the features
    # propagate: digits generated from fonts and stroke templates (data/synthetic.py), labelled
    # by construction, join the graph as labelled nodes; they are not trained on. 0 = none;
    # None = GENERATED_DIGITS for a dataset of the digits 0-9, none for others.
    generated_digits: int | None = None
    steps: int = 6000  # optimizer steps
    batch_size: int = 64  # labelled images per step
    unlabeled_ratio: int = 7  # unlabeled images per labelled image in a step
    threshold: float = 0.95  # a pseudo-label is used when its confidence reaches this
    unlabeled_weight: float = 1.0  # weight of the unlabeled (consistency) loss
    align: bool = True  # distribution alignment of the pseudo-labels
    balance: bool = True  # each batch's pseudo-labels spread over the classes (Sinkhorn)
    balance_iterations: int = 3  # Sinkhorn-Knopp rounds of the balancing (more: stricter)
    ema: float = 0.999  # decay of the weights' moving average (the saved model); 0 = off
    weak: str = "weak"  # augmentation preset: labelled images and pseudo-labelling views
    strong: str = "strong"  # augmentation preset: the views that learn the pseudo-labels
    eval_every: int = 500  # steps per round (metrics line + checkpoint)
    student: str | None = "resnet-small"  # then a CNN learns the run's pseudo-labels; None: off
    student_epochs: int = 4  # epochs of the student's default recipe
    optimizer: str = "sgd"
    lr: float = 0.03
    weight_decay: float = 5e-4
    warmup: float = 0.0
    precision: str = "auto"

    def validate(self) -> None:
        """Range checks (the types are checked before, by :class:`JsonConfig`)."""

        super().validate()

        def need(ok: bool, message: str, hint: str | None = None) -> None:
            if not ok:
                raise self.invalid(message, hint=hint)

        from mnistlab.models.cnn import CNN_MODELS  # a light module; torch is loaded by now

        need(self.model in CNN_MODELS, f"model must be one of {tuple(CNN_MODELS)}")
        need(self.labels >= 0, "labels must be >= 0 (0 = all)")
        need(self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1")
        need(self.eval_every >= 1, "eval_every must be >= 1")
        need(self.unlabeled_ratio >= 0, "unlabeled_ratio must be >= 0 (0: labelled only)")
        need(0 < self.threshold <= 1, "threshold must be in (0, 1]")
        need(1 <= self.balance_iterations <= 1000, "balance_iterations must be in [1, 1000]")
        need(self.unlabeled_weight >= 0, "unlabeled_weight must be >= 0")
        need(0 <= self.ema < 1, "ema must be in [0, 1) (0 = off)")
        from mnistlab.training.recipes import DEEP_MODELS

        need(
            self.student is None or self.student in DEEP_MODELS,
            f"student must be one of {', '.join(DEEP_MODELS)} or null",
        )
        need(self.student_epochs >= 1, "student_epochs must be >= 1")
        need(
            self.method in FEWSHOT_METHODS,
            f"method must be one of {', '.join(FEWSHOT_METHODS)}",
        )
        need(1 <= self.neighbors <= 100, "neighbors must be in [1, 100]")
        need(
            self.generated_digits is None or self.generated_digits >= 0,
            "generated_digits must be >= 0 (0 = none) or null (automatic)",
        )
        need(
            not self.generated_digits or self.method == "propagate",
            "generated digits join the propagation graph: they need method propagate",
            hint="drop --set generated_digits, or pass --method propagate",
        )
        if self.method == "propagate":
            need(
                self.pretrained is not None,
                "label propagation needs a backbone's features (pretrained is null)",
                hint="pass --from pretrained:NAME, or --method consistency to train from scratch",
            )
            need(
                self.student is not None,
                "label propagation labels the images; a student must learn them (student is "
                "null)",
                hint="pass --student resnet-small (the default), or --method consistency",
            )
        for name in ("weak", "strong"):
            need(
                getattr(self, name) in AUGMENT_PRESETS,
                f"{name} must be an augmentation preset: {', '.join(AUGMENT_PRESETS)}",
            )

    def generated_count(self, class_names: Sequence[str]) -> int:
        """How many generated digits join the graph for a dataset of ``class_names``:
        ``generated_digits`` if set, else :data:`GENERATED_DIGITS` for the ``propagate``
        method on the digits 0-9, else 0."""
        if self.generated_digits is not None:
            return self.generated_digits
        from mnistlab.data.registry import DIGITS

        digits = tuple(class_names) == DIGITS
        return GENERATED_DIGITS if digits and self.method == "propagate" else 0

    @property
    def rounds(self) -> int:
        """Rounds of ``eval_every`` steps (the last one may be shorter)."""
        return math.ceil(self.steps / self.eval_every)
