"""Make sure the current interpreter has a torch that satisfies mnistlab's range.

A torch that is already installed and satisfies the range in pyproject.toml is kept.
Otherwise ``pip install <pin>`` runs first, so that installing mnistlab afterwards does
not make pip pick the registry's newest torch (with gigabytes of CUDA packages).
Standard library only: this runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _release(version: str) -> tuple[int, ...]:
    """'2.13.0+cpu' -> (2, 13, 0)."""
    parts = re.match(r"[\d.]+", version)
    return tuple(int(p) for p in parts.group(0).strip(".").split(".")) if parts else ()


def torch_range() -> list[tuple[str, tuple[int, ...]]]:
    """The (operator, version) clauses of the torch requirement in pyproject.toml."""
    match = re.search(r'"torch([^"]*)"', PYPROJECT.read_text())
    if not match:
        return []
    clauses = []
    for clause in match.group(1).split(","):
        op_ver = re.match(r"\s*(>=|<=|==|<|>|!=)\s*([\d.]+)", clause)
        if op_ver:
            clauses.append((op_ver.group(1), _release(op_ver.group(2))))
    return clauses


def satisfies(version: str, clauses: list[tuple[str, tuple[int, ...]]]) -> bool:
    v = _release(version)
    checks = {
        ">=": lambda a, b: a >= b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        "<": lambda a, b: a < b,
        "==": lambda a, b: a[: len(b)] == b,
        "!=": lambda a, b: a[: len(b)] != b,
    }
    return all(checks[op](v, ref) for op, ref in clauses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pin", default="torch==2.13.0", help="requirement installed if needed")
    args = parser.parse_args()
    clauses = torch_range()
    try:
        installed = metadata.version("torch")
    except metadata.PackageNotFoundError:
        installed = None
    if installed and satisfies(installed, clauses):
        print(f"torch {installed} is installed and satisfies the range: kept")
        return 0
    why = f"torch {installed} is outside the range" if installed else "torch is not installed"
    print(f"{why}: installing {args.pin}")
    return subprocess.call([sys.executable, "-m", "pip", "install", "--quiet", args.pin])


if __name__ == "__main__":
    sys.exit(main())
