"""One config convention for every run: dataclasses saved as ``config.json``, overridden with
``--set KEY=VALUE``, checked field by field before anything is written, and replayed with
``--config RUN/config.json``.

A config class mixes in :class:`JsonConfig` and puts its range checks in ``validate()``; the
mixin's ``__post_init__`` first checks every value against its field's type, so
``TrainConfig(lr="abc")`` is a clear :class:`~mnistlab.errors.MnistlabError`, never a
``TypeError`` deep inside training.
"""

from __future__ import annotations

import json
import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from mnistlab.errors import MnistlabError

C = TypeVar("C", bound="JsonConfig")


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["lr=0.01", "augment=light"]`` -> ``{"lr": 0.01, "augment": "light"}``.

    Values are JSON (numbers, ``true``/``false``, ``null``, lists, objects); anything that is
    not JSON is taken as a bare string (``augment=light``).

    Raises:
        MnistlabError: an item without ``=`` or with an empty key.
    """
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise MnistlabError(
                f"--set {item!r}: expected KEY=VALUE", hint="e.g. --set lr=0.01 --set epochs=2"
            )
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def _describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe_type(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return f"a list of {_describe_type(item).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or tp is dict:
        return "a JSON object"
    return getattr(tp, "__name__", str(tp))


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """``(True, value)`` if ``value`` fits the annotation ``tp`` (an int in a float field
    becomes a float), else ``(False, None)``."""
    if tp is Any:
        return True, value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        # An int in an ``int | float`` field stays an int: try the exact types first.
        for arg in sorted(args, key=lambda a: a is float):
            ok, conformed = _conform(value, arg)
            if ok:
                return True, conformed
        return False, None
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, None
        return math.isfinite(value), float(value)
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, list):
            return False, None
        (item,) = typing.get_args(tp) or (Any,)
        items = [_conform(v, item) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict or tp is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value), value
    return isinstance(value, origin or tp), value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


_EXAMPLES = {bool: "true", int: "2", float: "0.5", str: "NAME"}


def _example(default: Any, tp: Any) -> str:
    """A value to show after ``--set KEY=``: the default, else one of the field's type."""
    if isinstance(default, str):
        return default
    if default is not None:
        return json.dumps(default, separators=(",", ":"))  # no spaces: one shell word
    for arg in (*typing.get_args(tp), tp):
        if arg in _EXAMPLES:
            return _EXAMPLES[arg]
    return "null"


class JsonConfig:
    """Mixin for a dataclass config: type checks, :meth:`to_dict`, :meth:`from_dict` that
    refuses unknown keys (a typo would otherwise be silently ignored), :meth:`with_overrides`
    and :meth:`from_run`. ``what`` names the config in error messages, e.g. ``"training"``;
    ``run_keys`` are keys that ``config.json`` holds besides the fields (written by the
    trainer: ``created``, ``num_train``, ...), skipped when a run's config is replayed."""

    what: ClassVar[str] = "config"
    kinds: ClassVar[tuple[str, ...]] = ()  # the ``kind`` of runs whose config.json this reads
    run_keys: ClassVar[tuple[str, ...]] = ()
    # Fields added after runs of this kind were first recorded, with the value that makes an
    # older run's config.json (which lacks them) replay as it ran.
    since_added: ClassVar[dict[str, Any]] = {}

    def __post_init__(self) -> None:
        self.check_types()
        self.validate()

    def validate(self) -> None:
        """Range and consistency checks of a config class (raise :class:`MnistlabError`)."""

    def invalid(self, message: str, hint: str | None = None) -> MnistlabError:
        """The error for an invalid value, named after the config."""
        return MnistlabError(f"invalid {self.what} config: {message}", hint=hint)

    def check_types(self) -> None:
        """Check every field's value against its annotation; ints in float fields become
        floats.

        Raises:
            MnistlabError: the key, the type it needs, the value given and an example.
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            ok, conformed = _conform(value, hints[f.name])
            if not ok:
                default = (
                    f.default
                    if f.default is not MISSING
                    else f.default_factory()  # type: ignore[misc]
                    if f.default_factory is not MISSING
                    else None
                )
                raise self.invalid(
                    f"{f.name} must be {_describe_type(hints[f.name])}; got {_show(value)}",
                    hint=f"e.g. --set {f.name}={_example(default, hints[f.name])}",
                )
            if conformed is not value:
                object.__setattr__(self, f.name, conformed)

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-ready."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> list[str]:
        """The config's keys, in declaration order."""
        return [f.name for f in fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def _refuse_unknown(cls, keys: typing.Iterable[str]) -> None:
        names = set(cls.field_names())
        unknown = sorted(set(keys) - names)
        if unknown:
            import difflib

            guesses = [difflib.get_close_matches(k, names, n=1) for k in unknown]
            close = [g[0] for g in guesses if g]
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise MnistlabError(
                f"unknown {cls.what} config key(s): {', '.join(unknown)}",
                hint=f"{hint}known keys: {', '.join(sorted(names))}",
            )

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """A config from :meth:`to_dict`'s output; missing keys take their defaults.

        Raises:
            MnistlabError: an unknown key, or a value of the wrong type or out of range.
        """
        cls._refuse_unknown(data)
        return cls(**data)

    def with_overrides(self: C, overrides: dict[str, Any]) -> C:
        """A copy with ``overrides`` applied (e.g. from :func:`parse_sets`), checked again.

        Raises:
            MnistlabError: an unknown key, or a value of the wrong type or out of range.
        """
        if not overrides:
            return self
        self._refuse_unknown(overrides)
        return replace(self, **overrides)  # type: ignore[type-var]

    @classmethod
    def from_run(
        cls: type[C], path: str | os.PathLike[str], overrides: dict[str, Any] | None = None
    ) -> C:
        """Replay a run: the config in ``path`` (a run folder or its ``config.json``) with
        ``overrides`` applied.

        Raises:
            MnistlabError: the file is missing or not a config of this kind.
        """
        file = Path(path)
        if file.is_dir():
            file = file / "config.json"
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MnistlabError(
                f"{file}: no such config file",
                hint="pass a run folder or its config.json (see `mnistlab runs list`)",
            ) from None
        except (OSError, ValueError) as exc:
            raise MnistlabError(f"{file}: not a readable JSON config ({exc})") from None
        if not isinstance(data, dict):
            raise MnistlabError(f"{file}: a config must be a JSON object")
        kind = data.get("kind")
        if kind is not None and cls.kinds and kind not in cls.kinds:
            raise MnistlabError(
                f"{file}: a {kind!r} run's config, not a {cls.what} config",
                hint=f"replay it with the command that made it (runs of kind {kind!r})",
            )
        names = set(cls.field_names())
        if kind is not None:  # a run's record: a field it predates keeps its old behaviour
            data = {**cls.since_added, **data}
        fields_only = {k: v for k, v in data.items() if k in names or k not in cls.run_keys}
        try:
            config = cls.from_dict(fields_only)
        except MnistlabError as exc:
            raise MnistlabError(f"{file}: {exc.message}", hint=exc.hint) from None
        return config.with_overrides(overrides or {})


OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "onecycle", "cosine", "step")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class RunConfig(JsonConfig):
    """The fields every training run has — its data, optimizer, schedule, precision, device,
    seed and threads — with one validator. ``TrainConfig``, ``PretrainConfig`` and
    ``FinetuneConfig`` extend it (and may give a field another default)."""

    dataset: str = "mnist"  # registered or imported dataset; trains on its "train" split
    optimizer: str = "adamw"  # "adamw" (betas 0.9/0.999) | "sgd" (Nesterov momentum 0.9)
    lr: float = 1e-3  # peak learning rate (reached after warmup)
    weight_decay: float = 0.0  # decoupled (AdamW) / L2 (SGD), on weights with dim >= 2 only
    schedule: str = "cosine"  # "constant" | "onecycle" | "cosine" | "step" (training.optim)
    warmup: float = 0.1  # fraction of all steps with linear warmup
    # "fp32" | "bf16" (autocast: matmuls and convolutions in bf16) | "auto" (bf16 where the
    # device has bf16 units, else fp32: models.inference.resolve_precision)
    precision: str = "fp32"
    device: str = "auto"  # "auto" (cuda, else mps, else cpu) | "cpu" | "cuda" | "mps"
    seed: int = 0  # every random choice of the run derives from it
    num_threads: int = 0  # CPU threads; 0 = auto: the CPUs free at the start (kept on resume)

    def validate(self) -> None:
        """The checks of the common fields; subclasses add theirs after calling this."""
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("precision", PRECISIONS),
            ("device", DEVICES),
        ):
            if getattr(self, name) not in allowed:
                raise self.invalid(
                    f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}"
                )
        checks = (
            (self.lr >= 0, f"lr must be >= 0; got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0; got {self.weight_decay}"),
            (0 <= self.warmup < 1, f"warmup must be a fraction in [0, 1); got {self.warmup}"),
            (self.seed >= 0, f"seed must be >= 0; got {self.seed}"),
            (self.num_threads >= 0, f"num_threads must be >= 0; got {self.num_threads}"),
        )
        for ok, message in checks:
            if not ok:
                raise self.invalid(message)
