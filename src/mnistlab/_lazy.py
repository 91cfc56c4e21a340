"""Lazy exports for sub-packages whose modules import torch or scikit-learn.

``from mnistlab.training import train_model`` keeps working, but ``import
mnistlab.training.recipes`` (what the command line needs to list recipes) no longer imports
the engine, torch and scikit-learn on the way: the package's names are resolved on first use
(PEP 562 module ``__getattr__``, as scientific Python's ``lazy_loader`` does). This is what
lets ``mnistlab --help`` answer in a fraction of a second.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported names win over its sub-modules of the same name.

    Importing ``mnistlab.pretraining.pretrain`` (a module) makes the import system set the
    package's attribute ``pretrain`` to that module; an eager ``__init__`` would have rebound
    it to the function ``pretrain`` right after. Here the import system's assignment is
    skipped for such names, so ``from mnistlab.pretraining import pretrain`` is the function,
    as it was with eager imports."""

    _lazy_names: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            name in self._lazy_names
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
        ):
            return
        super().__setattr__(name, value)


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: dict[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        namespace: its ``globals()``; a resolved name is cached there.
        exports: sub-module name (relative, or absolute for a name re-exported from another
            sub-package) -> the public names it provides.
    """
    where = {name: module for module, names in exports.items() for name in names}
    package_module = sys.modules[package]
    package_module.__class__ = _LazyPackage
    # Names that are also sub-modules: the export must win (see _LazyPackage).
    object.__setattr__(package_module, "_lazy_names", frozenset(set(where) & set(exports)))

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = module if module.startswith("mnistlab.") else f"{package}.{module}"
        value = getattr(importlib.import_module(target), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__, sorted(where)
