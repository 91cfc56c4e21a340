"""The config of a ``mnistlab train-reader`` run: every setting with its unit. Free of torch,
so that the command line shows its defaults and checks ``--set`` values before anything heavy
loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mnistlab.config import RunConfig

DEFAULT_READER = "pretrained:number-reader"  # what `read` and `serve` read numbers with


@dataclass
class ReaderConfig(RunConfig):
    """Every setting of a number reader's training (:mod:`mnistlab.shipping.reader_training`).
    Saved in ``config.json``.

    The training pictures are numbers of ``min_digits`` to ``max_digits`` digits drawn from
    the dataset's *training* split by :func:`mnistlab.data.numbers.render_number`, a share
    ``photo`` of them rendered as photos of paper, each with its own share of touching
    neighbours drawn from [0, ``max_touching``]. The test pictures are built the same way from
    the *test* split, ``test_numbers`` per condition.
    """

    what: ClassVar[str] = "number reader training"
    kinds: ClassVar[tuple[str, ...]] = ("reader",)
    since_added: ClassVar[dict[str, Any]] = {"augment": 0.0, "generated_digits": 0}
    run_keys: ClassVar[tuple[str, ...]] = (
        "kind", "created", "parameters", "threads", "precision_used",
    )  # fmt: skip

    numbers: int = 16000  # training pictures (generated once, kept in the run folder)
    min_digits: int = 1
    max_digits: int = 8
    max_touching: float = 0.8  # each picture's share of touching pairs: uniform in [0, this]
    photo: float = 0.5  # share of pictures rendered as photos (the rest: ink on white)
    epochs: int = 16
    batch_size: int = 32  # pictures per step (of similar widths)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup: float = 0.15
    precision: str = "auto"
    width: int = 128  # channels of the 1-D layers along the line
    augment: float = 1.0  # strength of the fresh variants of each line (0: none; 0-1)
    digit_augment: str = "none"  # augmentation preset varying each digit before it is drawn
    # digits generated from fonts and stroke templates (data/synthetic.py) added to the
    # training digits the lines are drawn from (0 = MNIST's alone): styles MNIST lacks (open
    # 4s, serif 1s, crossbar 7s); chosen on other writers' numbers (docs/benchmarks.md)
    generated_digits: int = 20000
    test_numbers: int = 300  # test pictures of 5 digits per condition (apart / touching)

    def validate(self) -> None:
        """Range checks (the types are checked before, by :class:`JsonConfig`)."""
        super().validate()
        checks = (
            (self.numbers >= 1, f"numbers must be >= 1; got {self.numbers}"),
            (1 <= self.min_digits <= self.max_digits <= 16, "need 1 <= min <= max_digits <= 16"),
            (0 <= self.max_touching <= 1, "max_touching is a share in [0, 1]"),
            (0 <= self.photo <= 1, "photo is a share in [0, 1]"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch_size must be >= 1"),
            (8 <= self.width <= 1024, f"width must be in [8, 1024]; got {self.width}"),
            (0 <= self.augment <= 1, f"augment is a strength in [0, 1]; got {self.augment}"),
            (self.test_numbers >= 0, "test_numbers must be >= 0"),
            (self.generated_digits >= 0, "generated_digits must be >= 0"),
        )
        from mnistlab.features.augment_config import AUGMENT_PRESETS

        if self.digit_augment not in AUGMENT_PRESETS:
            raise self.invalid(f"digit_augment must be a preset ({', '.join(AUGMENT_PRESETS)}); "
                               f"got {self.digit_augment!r}")  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise self.invalid(message)
