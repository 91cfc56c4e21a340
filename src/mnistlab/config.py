"""One way for run configs (dataclasses saved as ``config.json``) to go to and from JSON."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar, TypeVar

from mnistlab.errors import MnistlabError

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """Mixin for a dataclass config: :meth:`to_dict` and a :meth:`from_dict` that refuses
    unknown keys (a typo would otherwise be silently ignored). ``what`` names the config in
    error messages, e.g. ``"training"``."""

    what: ClassVar[str] = "config"

    def to_dict(self) -> dict[str, Any]:
        """All fields, JSON-ready."""
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """A config from :meth:`to_dict`'s output; missing keys take their defaults.

        Raises:
            MnistlabError: an unknown key.
        """
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise MnistlabError(
                f"unknown {cls.what} config key(s): {', '.join(unknown)}",
                hint=f"known keys: {', '.join(sorted(names))}",
            )
        return cls(**data)
