"""The pretrained models that ship inside the package: the hub experience, offline.

Each lives in ``mnistlab/models/pretrained/<name>/``: the ``model/`` folder a ``mnistlab
pretrain`` run wrote (``model.json`` + ``model.safetensors``, read through the same hash-checked
loader as every model file) and ``card.json``, its model card: objective, data and its SHA-256,
the command and seed that rebuild it, size, and the downstream numbers measured with it.
``pretrained:<name>`` names one wherever a pretrained model is taken (``mnistlab fewshot
--from``); ``mnistlab models list`` shows the cards.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
PREFIX = "pretrained:"


@dataclass(frozen=True)
class ModelCard:
    """A shipped model: its ``name``, its folder and ``card.json``'s fields (``card``)."""

    name: str
    folder: Path
    card: dict[str, Any]

    @property
    def weights_bytes(self) -> int:
        """Size of the weights file in bytes."""
        return sum(p.stat().st_size for p in (self.folder / "model").glob("*.safetensors"))


def list_pretrained(root: str | os.PathLike[str] | None = None) -> list[ModelCard]:
    """The shipped pretrained models, sorted by name (``root``: another hub folder)."""
    base = Path(root) if root is not None else PRETRAINED_DIR
    if not base.is_dir():
        return []
    return [
        _card(folder)
        for folder in sorted(base.iterdir())
        if (folder / "card.json").is_file()
    ]


def _card(folder: Path) -> ModelCard:
    try:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MnistlabError(f"{folder / 'card.json'}: unreadable model card ({exc})") from None
    if not isinstance(card, dict):
        raise MnistlabError(f"{folder / 'card.json'}: a model card must be a JSON object")
    return ModelCard(folder.name, folder, card)


def get_pretrained(name: str, root: str | os.PathLike[str] | None = None) -> ModelCard:
    """The shipped model ``name`` (``pretrained:`` prefix optional).

    Raises:
        MnistlabError: no such model; the message lists what ships.
    """
    name = name.removeprefix(PREFIX)
    cards = {c.name: c for c in list_pretrained(root)}
    if name not in cards:
        known = ", ".join(PREFIX + n for n in cards) or "none"
        raise MnistlabError(
            f"no pretrained model {PREFIX}{name} ships with mnistlab (shipped: {known})",
            hint="`mnistlab models list` shows them; or pass a `mnistlab pretrain` run folder",
        )
    return cards[name]


def resolve_pretrained(ref: str | os.PathLike[str]) -> Path:
    """The model folder of ``pretrained:NAME`` (a shipped model) or the path itself (a run
    folder or model folder of ``mnistlab pretrain``)."""
    text = os.fspath(ref)
    if text.startswith(PREFIX):
        return get_pretrained(text).folder / "model"
    return Path(text).expanduser()


def run_provenance(run: str | os.PathLike[str]) -> dict[str, Any]:
    """What every model card takes from the run that trained it: ``data_sha256`` (the
    datasets' file hashes, from ``environment.json``), ``trained_on`` (CPU, core count, torch
    version) and ``weights_sha256`` (from ``model/model.json``)."""
    folder = Path(run)
    env = json.loads((folder / "environment.json").read_text())
    meta = json.loads((folder / "model" / "model.json").read_text())
    return {
        "data_sha256": env["data_sha256"],
        "trained_on": f"{env['processor']}, {env['cpu_count']} CPUs, torch "
        f"{env['packages']['torch']}",
        "weights_sha256": meta["weights_sha256"],
    }


def install_pretrained(model_dir: str | os.PathLike[str], name: str, card: dict[str, Any]) -> Path:
    """Put a run's ``model/`` folder and its ``card`` into the package's hub as ``name``
    (what ``scripts/build_*.py`` do); an older copy of the model is replaced. Returns the
    hub folder."""
    import shutil

    target = PRETRAINED_DIR / name
    if (target / "model").exists():
        shutil.rmtree(target / "model")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, target / "model")
    (target / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    return target
