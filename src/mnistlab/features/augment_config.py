"""The ranges of random augmentation (:class:`AugmentConfig`) and its named presets.

Free of torch, so a run's config can be checked (and ``--help`` can list presets) before
the augmentation ops in :mod:`mnistlab.features.augment` are imported.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation; every default is off.

    Each image independently gets the affine part with probability ``affine_p`` (then angle,
    shifts, scale and shear are drawn independently and uniformly), the elastic part with
    probability ``elastic_p``, Gaussian noise with probability ``noise_p`` and, with probability
    ``corruption_p``, one corruption of ``mnistlab.features.corruptions`` (last).
    """

    rotate_degrees: float = 0.0  # max |angle| (degrees); angle ~ U[-r, r], + = counter-clockwise
    translate_px: float = 0.0  # max |shift| per axis (pixels); dx, dy ~ U[-t, t] independently
    scale_range: tuple[float, float] = (1.0, 1.0)  # zoom factor ~ U[lo, hi]; > 1 enlarges
    shear_degrees: float = 0.0  # max |shear| (degrees), < 90; ~ U[-s, s]; + = italic slant
    affine_p: float = 1.0  # probability that an image gets the affine transform
    elastic_alpha: float = 0.0  # elastic displacement scale (pixels); 0 = off (Simard: 34)
    elastic_sigma: float = 4.0  # elastic smoothing std (pixels), > 0 (Simard: 4)
    elastic_p: float = 1.0  # probability that an image gets the elastic distortion
    noise_std: float = 0.0  # Gaussian noise std (fraction of full scale: 255 for uint8); 0 = off
    noise_p: float = 1.0  # probability that an image gets Gaussian noise
    salt_pepper: float = 0.0  # fraction of pixels set to 0 or full scale, in every image; 0 = off
    corruption_p: float = 0.0  # probability of one random MNIST-C corruption (features.corruptions)
    corruptions: tuple[str, ...] = ()  # the corruptions drawn from; () = all of them
    stroke_p: float = 0.0  # probability that strokes get 1 px thicker or thinner (half each)
    cutout_px: int = 0  # side of a square erased at a random place (pixels); 0 = off
    cutout_p: float = 1.0  # probability that an image gets the cutout
    lowres_p: float = 0.0  # probability of a low-resolution scan (coarse grid, enlarged back)
    lowres_sides: tuple[int, int] = (10, 20)  # that grid's side in pixels (of 28), ~ U{lo..hi}

    def __post_init__(self) -> None:
        if isinstance(self.scale_range, list):  # as read back from JSON
            object.__setattr__(self, "scale_range", tuple(self.scale_range))
        if isinstance(self.lowres_sides, list):
            object.__setattr__(self, "lowres_sides", tuple(self.lowres_sides))
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        if self.corruptions:
            from mnistlab.features.corruptions import CORRUPTIONS

            unknown = sorted(set(self.corruptions) - set(CORRUPTIONS))
            if unknown:
                raise ValueError(f"unknown corruptions {unknown}; known: {', '.join(CORRUPTIONS)}")
        for f in fields(self):
            if f.name == "corruptions":
                continue
            values = getattr(self, f.name)
            for v in values if isinstance(values, tuple) else (values,):
                if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                    raise ValueError(f"AugmentConfig.{f.name} must be finite numbers; got {values}")
        if len(self.scale_range) != 2:
            raise ValueError(f"scale_range must be (low, high); got {self.scale_range}")
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high; got {self.scale_range}")
        if not 0 <= self.rotate_degrees <= 180:
            raise ValueError(f"rotate_degrees must be in [0, 180]; got {self.rotate_degrees}")
        if not 0 <= self.shear_degrees < 90:
            raise ValueError(f"shear_degrees must be in [0, 90); got {self.shear_degrees}")
        if isinstance(self.cutout_px, float) and not self.cutout_px.is_integer():
            raise ValueError(f"cutout_px must be a whole number of pixels; got {self.cutout_px}")
        object.__setattr__(self, "cutout_px", int(self.cutout_px))
        for name in ("translate_px", "elastic_alpha", "noise_std", "cutout_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        sides = self.lowres_sides
        if len(sides) != 2 or not all(float(v).is_integer() for v in sides) or not (
            2 <= sides[0] <= sides[1]
        ):
            raise ValueError(f"lowres_sides must be whole pixels 2 <= low <= high; got {sides}")
        object.__setattr__(self, "lowres_sides", (int(sides[0]), int(sides[1])))
        if self.elastic_sigma <= 0:
            raise ValueError(f"elastic_sigma must be > 0 (pixels); got {self.elastic_sigma}")
        for name in (
            "affine_p", "elastic_p", "noise_p", "salt_pepper", "corruption_p", "stroke_p",
            "cutout_p", "lowres_p",
        ):  # fmt: skip
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")

    @property
    def has_affine(self) -> bool:
        return self.affine_p > 0 and (
            self.rotate_degrees > 0
            or self.translate_px > 0
            or self.scale_range != (1.0, 1.0)
            or self.shear_degrees > 0
        )

    @property
    def has_elastic(self) -> bool:
        return self.elastic_p > 0 and self.elastic_alpha > 0

    @property
    def has_noise(self) -> bool:
        return self.noise_p > 0 and self.noise_std > 0

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready values (``scale_range`` and ``corruptions`` as lists)."""
        d = asdict(self)
        d["scale_range"] = list(self.scale_range)
        d["lowres_sides"] = list(self.lowres_sides)
        d["corruptions"] = list(self.corruptions)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> AugmentConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown AugmentConfig fields: {', '.join(sorted(unknown))}")
        return cls(**data)  # type: ignore[arg-type]


# What high-accuracy MNIST CNNs use (Keras-style rotation 10, shifts 0.1 * 28 px, zoom 0.1, as
# in the 99.7 % Kaggle ensembles), plus a mild elastic distortion on half the images (Ciresan
# et al. 2010 use sigma 5-6, alpha 34-38 together with affine jitter); `handwriting` adds to it.
_MNIST_SOTA = AugmentConfig(
    rotate_degrees=10.0,
    translate_px=3.0,
    scale_range=(0.9, 1.1),
    elastic_alpha=34.0,
    elastic_sigma=6.0,
    elastic_p=0.5,
)

AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # A mild default for small CNNs.
    "light": AugmentConfig(rotate_degrees=10.0, translate_px=2.0, scale_range=(0.9, 1.1)),
    "mnist-sota": _MNIST_SOTA,
    # For handwriting from other sources (docs/benchmarks.md, "Handwriting from other
    # sources"): mnist-sota, plus strokes 1 px thicker or thinner on 3 images in 10 and
    # a low-resolution scan (a 9-20 pixel grid, enlarged back) on 3 in 10.
    "handwriting": replace(_MNIST_SOTA, stroke_p=0.3, lowres_p=0.3, lowres_sides=(9, 20)),
    # Simard, Steinkraus & Platt (2003): elastic distortion alone, alpha 34, sigma 4.
    "simard": AugmentConfig(elastic_alpha=34.0, elastic_sigma=4.0),
    # The "strong" view of consistency training (fewshot) and of contrastive pretraining:
    # wider affine ranges than a classifier's, elastic distortion on half the images, strokes
    # 1 px thicker or thinner on two images in three, and a 10 px square erased on half (a
    # digit still reads with a part hidden; Cutout, DeVries & Taylor 2017).
    "strong": AugmentConfig(
        rotate_degrees=25.0,
        translate_px=4.0,
        scale_range=(0.75, 1.2),
        shear_degrees=20.0,
        elastic_alpha=34.0,
        elastic_sigma=5.0,
        elastic_p=0.5,
        stroke_p=2 / 3,
        cutout_px=10,
        cutout_p=0.5,
    ),
    # The "weak" view of consistency training: small shifts and turns that keep every digit.
    "weak": AugmentConfig(rotate_degrees=5.0, translate_px=2.0),
    # "light" plus, on half the images, one MNIST-C-style corruption (features.corruptions).
    "mnist-c": AugmentConfig(
        rotate_degrees=10.0, translate_px=2.0, scale_range=(0.9, 1.1), corruption_p=0.5
    ),
}


def get_augment_preset(name: str) -> AugmentConfig:
    """The named preset from :data:`AUGMENT_PRESETS`; ``ValueError`` lists the names if unknown."""
    try:
        return AUGMENT_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown augmentation preset {name!r}; choose one of {', '.join(AUGMENT_PRESETS)}"
        ) from None


def resolve_augment(config: AugmentConfig | str | Mapping[str, object]) -> AugmentConfig:
    """An :class:`AugmentConfig` from itself, a preset name, or a dict of its fields (as a run's
    ``config.json`` stores a custom augmentation, e.g. ``{"corruption_p": 0.5, "corruptions":
    ["fog", "zigzag"]}``; absent fields keep their defaults, which are off).

    Raises:
        ValueError: an unknown preset, an unknown field or a value out of range.
        TypeError: anything else.
    """
    if isinstance(config, str):
        return get_augment_preset(config)
    if isinstance(config, Mapping):
        return AugmentConfig.from_dict(dict(config))
    if not isinstance(config, AugmentConfig):
        raise TypeError(
            f"config must be an AugmentConfig, a preset name or a dict of fields; got {config!r}"
        )
    return config
