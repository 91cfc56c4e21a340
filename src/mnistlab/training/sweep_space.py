"""A sweep's search space: the settings searched and their ranges, from ``--param`` flags
(``lr=log:1e-4:1e-1``) or a YAML/JSON file. Plain data, no Optuna until a trial asks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError

PARAM_KINDS = ("float", "log", "int", "int-log", "choice")
MAX_SPACE_BYTES = 1 << 20


@dataclass(frozen=True)
class Param:
    """One searched setting: ``kind`` float/log (uniform/log-uniform between ``low`` and
    ``high``), int/int-log (integers), or choice (one of ``choices``)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial proposes for this setting."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind in ("int", "int-log"):
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.kind == "int-log"
            )
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log")

    def values_to_check(self) -> list[Any]:
        """The extreme values (or every choice): each must make a valid config."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind in ("int", "int-log"):
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def describe(self) -> str:
        """The ``--param`` spelling, e.g. ``lr=log:0.0001:0.1``."""
        if self.kind == "choice":
            return f"{self.name}=choice:" + ",".join(json.dumps(c) for c in self.choices)
        return f"{self.name}={self.kind}:{self.low:g}:{self.high:g}"

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "kind": self.kind}
        if self.kind == "choice":
            data["choices"] = list(self.choices)
        else:
            data.update(low=self.low, high=self.high)
        return data

    @classmethod
    def from_dict(cls, name: str, data: Any, where: str) -> Param:
        """A setting from a space file's entry: ``"log:1e-4:0.1"``, a list of choices, or
        ``{"kind": "log", "low": 1e-4, "high": 0.1}`` / ``{"choices": [...]}``."""
        if isinstance(data, str):
            return parse_param(f"{name}={data}", where)
        if isinstance(data, list):
            return _checked(Param(name, "choice", choices=tuple(data)), where)
        if isinstance(data, dict):
            unknown = set(data) - {"name", "kind", "type", "low", "high", "choices"}
            if unknown:
                raise MnistlabError(
                    f"{where}: unknown key(s) {', '.join(sorted(unknown))} for {name!r}",
                    hint="use kind (float, log, int, int-log, choice), low, high, choices",
                )
            kind = data.get("kind", data.get("type", "choice" if "choices" in data else "float"))
            return _checked(
                Param(
                    name,
                    str(kind),
                    low=data.get("low"),
                    high=data.get("high"),
                    choices=tuple(data.get("choices") or ()),
                ),
                where,
            )
        raise MnistlabError(
            f"{where}: {name!r} must be a string such as 'log:1e-4:0.1', a list of choices or "
            f"a mapping; got {type(data).__name__}"
        )


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MnistlabError(f"{where}: {what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise MnistlabError(f"{where}: {what} must be finite; got {text!r}")
    return value


def _choice(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _checked(param: Param, where: str) -> Param:
    name, kind = param.name, param.kind
    if not name.isidentifier():
        raise MnistlabError(f"{where}: {name!r} is not a setting name")
    if kind not in PARAM_KINDS:
        raise MnistlabError(
            f"{where}: unknown kind {kind!r} for {name!r}",
            hint=f"use one of {', '.join(PARAM_KINDS)}, e.g. {name}=log:1e-4:0.1",
        )
    if kind == "choice":
        if not param.choices:
            raise MnistlabError(f"{where}: {name!r} needs at least one choice")
        for c in param.choices:
            if not isinstance(c, str | int | float | bool) and c is not None:
                raise MnistlabError(f"{where}: a choice of {name!r} must be a plain value")
        return param
    for bound in (param.low, param.high):
        if not isinstance(bound, int | float) or isinstance(bound, bool):
            raise MnistlabError(f"{where}: {name!r} needs numeric low and high")
        _number(str(bound), "bound", where)
    if param.low >= param.high:
        raise MnistlabError(f"{where}: {name!r}: low must be below high")
    if kind in ("log", "int-log") and param.low <= 0:
        raise MnistlabError(f"{where}: {name!r}: a log range needs low > 0")
    if kind.startswith("int") and (param.low != int(param.low) or param.high != int(param.high)):
        raise MnistlabError(f"{where}: {name!r}: an int range needs whole-number bounds")
    return param


def parse_param(text: str, where: str = "--param") -> Param:
    """A ``--param`` flag: ``NAME=log:LOW:HIGH``, ``NAME=float:LOW:HIGH``, ``NAME=int:LOW:HIGH``,
    ``NAME=int-log:LOW:HIGH``, ``NAME=choice:A,B,C`` or just ``NAME=A,B,C`` (choices are JSON
    values, bare words strings).

    Raises:
        MnistlabError: not of that form.
    """
    name, sep, spec = text.partition("=")
    name = name.strip()
    if not sep or not name or not spec:
        raise MnistlabError(
            f"{where} {text!r} is not NAME=SPEC",
            hint="e.g. --param lr=log:1e-4:1e-1 --param batch_size=choice:64,128,256",
        )
    kind, colon, rest = spec.partition(":")
    if not colon or kind not in PARAM_KINDS:
        if kind in PARAM_KINDS:
            rest = ""
        else:  # bare choices
            kind, rest = "choice", spec
    if kind == "choice":
        choices = tuple(_choice(c.strip()) for c in rest.split(",") if c.strip())
        return _checked(Param(name, "choice", choices=choices), where)
    parts = rest.split(":")
    if len(parts) != 2:
        raise MnistlabError(
            f"{where} {text!r}: a {kind} range is {kind}:LOW:HIGH", hint=f"e.g. {name}={kind}:1:10"
        )
    low, high = (_number(p, "bound", where) for p in parts)
    if kind.startswith("int"):
        low, high = int(low) if low == int(low) else low, int(high) if high == int(high) else high
    return _checked(Param(name, kind, low=low, high=high), where)


def read_space(path: str | os.PathLike[str]) -> list[Param]:
    """The search space in a YAML or JSON file: a mapping of setting names to ranges (see
    :meth:`Param.from_dict`), e.g. ``lr: log:1e-4:0.1`` and ``batch_size: [64, 128, 256]``.

    Raises:
        MnistlabError: missing, too large, not a mapping, or a bad range.
    """
    file = Path(path).expanduser()
    try:
        size = file.stat().st_size
        if size > MAX_SPACE_BYTES:
            raise MnistlabError(f"{file}: {size:,} bytes is too large for a search space")
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MnistlabError(f"{file}: no such space file") from None
    except UnicodeDecodeError:
        raise MnistlabError(f"{file}: not a text file") from None
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MnistlabError(f"{file}: not valid JSON ({exc})") from None
    else:
        import yaml  # PyYAML: an Optuna dependency

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise MnistlabError(f"{file}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(data, dict) or not data:
        raise MnistlabError(
            f"{file}: a search space is a non-empty mapping of setting names to ranges",
            hint="e.g. lr: log:1e-4:0.1",
        )
    return [Param.from_dict(str(name), spec, str(file)) for name, spec in data.items()]


def short_value(value: Any) -> str:
    """A searched value as tables show it (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
