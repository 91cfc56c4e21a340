"""The config of a ``mnistlab gan`` run: every setting with its unit. Free of torch, so that
the command line shows its defaults and checks ``--set`` values before anything heavy loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from mnistlab.config import RunConfig


@dataclass
class GanConfig(RunConfig):
    """Every setting of a DCGAN run. Saved in ``config.json``.

    One learning rate for G and D (the loop sets every parameter group's rate from one
    schedule; the DCGAN paper uses 2e-4 for both), Adam betas per network.
    """

    what: ClassVar[str] = "GAN training"
    kinds: ClassVar[tuple[str, ...]] = ("gan",)
    run_keys: ClassVar[tuple[str, ...]] = (
        "kind", "created", "num_images", "parameters", "threads", "precision_used"
    )

    conditional: bool = False  # draw a chosen digit (READS LABELS): embedding in G, projection D
    epochs: int = 5  # passes over the training images
    batch_size: int = 64  # real images per step (and as many generated ones)
    lr: float = 5e-4  # Adam learning rate of both networks
    schedule: str = "constant"  # the RunConfig schedules; GANs usually keep it constant
    warmup: float = 0.0
    beta1_g: float = 0.5  # Adam beta1 of the generator (DCGAN: 0.5)
    beta1_d: float = 0.5  # Adam beta1 of the discriminator
    z_dim: int = 64  # noise dimensions
    width: int = 32  # channels of the 14x14 layers (7x7 layers: twice that)
    embed_dim: int = 16  # conditional: digit embedding size in the generator
    label_smoothing: float = 0.1  # D's target for real images is 1 - this (one-sided)
    mode_seeking: float = 1.0  # conditional: weight of the mode-seeking term (Mao et al. 2019)
    max_images: int = 0  # 0 = all training images, else the first max_images (quick runs)
    grid_every: int = 1  # a sample grid every this many epochs (the last one always)

    def validate(self) -> None:
        """Range checks (the types are checked before, by :class:`JsonConfig`)."""
        super().validate()
        checks = (
            (self.epochs >= 1 and self.batch_size >= 2, "epochs >= 1 and batch_size >= 2"),
            (self.lr > 0, f"lr must be > 0; got {self.lr}"),
            (self.optimizer == "adamw", "a GAN trains with optimizer adamw (betas per network)"),
            (0 <= self.beta1_g < 1 and 0 <= self.beta1_d < 1, "beta1_g, beta1_d in [0, 1)"),
            (1 <= self.z_dim <= 1024, f"z_dim must be in [1, 1024]; got {self.z_dim}"),
            (1 <= self.width <= 512, f"width must be in [1, 512]; got {self.width}"),
            (1 <= self.embed_dim <= 512, f"embed_dim must be in [1, 512]; got {self.embed_dim}"),
            (0 <= self.label_smoothing < 0.5, "label_smoothing must be in [0, 0.5)"),
            (self.max_images >= 0, "max_images must be >= 0"),
            (self.mode_seeking >= 0, "mode_seeking must be >= 0"),
            (self.grid_every >= 1, "grid_every must be >= 1"),
        )
        for ok, message in checks:
            if not ok:
                raise self.invalid(message)
