"""Lazy exports for sub-packages whose modules import torch or scikit-learn.

``from mnistlab.training import train_model`` keeps working, but ``import
mnistlab.training.recipes`` (what the command line needs to list recipes) no longer imports
the engine, torch and scikit-learn on the way: the package's names are resolved on first use
(PEP 562 module ``__getattr__``, as scientific Python's ``lazy_loader`` does). This is what
lets ``mnistlab --help`` answer in a fraction of a second.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        namespace: its ``globals()``; a resolved name is cached there.
        exports: sub-module name (relative) -> the public names it provides.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__, sorted(where)
