"""Resumable training checkpoints without pickle: safetensors for tensors, JSON for the rest
(tensors serialized and hashed by the same functions as model files, mnistlab.models.files).

A checkpoint is a folder (``<run>/checkpoint/``) of::

    state.safetensors   model and optimizer tensors under stable, flat names
                        ("model.<param>", "optimizer.<param index>.<key>")
    state.json          where training stands (epoch, step, ...), optimizer scalars and
                        hyper-parameters, random generator states as lists of ints, the
                        config hash and the SHA-256 of state.safetensors
    best.safetensors    optional: the weights with the best validation metric so far

Each file is written atomically (temporary file + rename), tensors first and ``state.json``
last, so ``state.json`` always describes a complete tensor file. A tensor file whose SHA-256
differs from the one ``state.json`` records is refused (:class:`CheckpointError`): it was
edited, damaged, or the process died in the instant between the two renames.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors

from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_bytes, atomic_write_json
from mnistlab.models.files import sha256_bytes
from mnistlab.models.files import tensors_to_bytes as tensors_to_bytes  # re-exported

FORMAT = "mnistlab-checkpoint/2"  # /2: the one loop's state (training/loop.py)
STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
BEST_TENSORS = "best.safetensors"


class CheckpointError(MnistlabError):
    """A checkpoint is missing, damaged, tampered with, or belongs to another config."""


def config_sha256(config: Mapping[str, Any]) -> str:
    """SHA-256 of a config dict's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _read_verified(path: Path, expected_sha: str) -> dict[str, torch.Tensor]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing", hint="the checkpoint is incomplete") from None
    if sha256_bytes(data) != expected_sha:
        raise CheckpointError(
            f"{path}: SHA-256 does not match the one recorded in {STATE_JSON}; refusing to "
            "load a tensor file that was changed after it was written",
            hint="resume from an intact copy of the run folder, or start a new run",
        )
    return load_safetensors(data)


# ---------------------------------------------------------------------------- flattening


def optimizer_to_flat(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optimizer.<index>.<key>``) and a
    JSON-ready dict (param groups and the non-tensor per-parameter state)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:  # None (e.g. an SGD momentum buffer not made yet), numbers
                scalars.setdefault(str(index), {})[key] = value
    groups = [
        {k: list(v) if isinstance(v, tuple) else v for k, v in group.items()}
        for group in sd["param_groups"]
    ]
    return tensors, {"param_groups": groups, "state_scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> None:
    """Inverse of :func:`optimizer_to_flat`: load the state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entries in info.get("state_scalars", {}).items():
        state.setdefault(int(index), {}).update(entries)
    groups = []
    for group in info["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_state(generator: torch.Generator | None) -> list[int] | None:
    """A generator's state as a list of ints (JSON-ready), or None."""
    return None if generator is None else generator.get_state().tolist()


def set_generator_state(generator: torch.Generator, state: list[int]) -> None:
    """Restore a state saved by :func:`generator_state`."""
    generator.set_state(torch.tensor(state, dtype=torch.uint8))


# ---------------------------------------------------------------------------- save / load


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    config: Mapping[str, Any],
    best_weights: Mapping[str, torch.Tensor] | None = None,
    best_changed: bool = False,
) -> Path:
    """Write ``state.safetensors`` (+ ``best.safetensors``) then ``state.json`` atomically.

    Args:
        directory: the checkpoint folder (created if missing).
        model, optimizer: whose tensors are saved.
        state: JSON-ready training position (epoch, step, generator states, history, ...).
        config: the run's config dict; its hash is recorded and checked on load.
        best_weights: the best-validation weights so far, if any.
        best_changed: rewrite ``best.safetensors`` (else the file on disk is kept).

    Returns:
        The path of ``state.json``.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_tensors, opt_info = optimizer_to_flat(optimizer)
    tensors.update(opt_tensors)
    data = tensors_to_bytes(tensors)
    atomic_write_bytes(folder / STATE_TENSORS, data)
    best_sha = None
    if best_weights is not None:
        best_path = folder / BEST_TENSORS
        if best_changed or not best_path.exists():
            atomic_write_bytes(best_path, tensors_to_bytes(best_weights))
        best_sha = sha256_bytes(best_path.read_bytes())
    record = {
        "format": FORMAT,
        **state,
        "optimizer": opt_info,
        "config_sha256": config_sha256(config),
        "tensors_sha256": sha256_bytes(data),
        "best_sha256": best_sha,
    }
    path = folder / STATE_JSON
    atomic_write_json(path, record)
    return path


def load_checkpoint(
    directory: str | os.PathLike[str], config: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Read and verify a checkpoint.

    Returns:
        ``(state, tensors, best_weights)``: the ``state.json`` dict, the flat tensors of
        ``state.safetensors`` (load them with :func:`restore`), and the best weights or None.

    Raises:
        CheckpointError: missing files, unknown format, a config other than the one the
            checkpoint was written with, or a tensor file whose SHA-256 does not match.
    """
    folder = Path(directory)
    try:
        state = json.loads((folder / STATE_JSON).read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"no checkpoint in {folder}",
            hint="a run writes checkpoint/ at the end of its first epoch; start a new run",
        ) from None
    except ValueError as exc:
        raise CheckpointError(f"{folder / STATE_JSON} is not JSON ({exc})") from exc
    if state.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder / STATE_JSON}: checkpoint format {state.get('format')!r}, not {FORMAT!r}",
            hint="it was written by another mnistlab version: resume it with that version, or "
            "start the run again",
        )
    if state.get("config_sha256") != config_sha256(config):
        raise CheckpointError(
            f"{folder} was written with another config than the run's config.json",
            hint="resume with the run's own config.json, unedited",
        )
    tensors = _read_verified(folder / STATE_TENSORS, state["tensors_sha256"])
    best = None
    if state.get("best_sha256"):
        best = _read_verified(folder / BEST_TENSORS, state["best_sha256"])
    return state, tensors, best


def read_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's ``state.json`` (where training stands), unverified; ``{}`` if absent."""
    try:
        return json.loads((Path(directory) / STATE_JSON).read_text())
    except (OSError, ValueError):
        return {}


def restore(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
) -> None:
    """Load a checkpoint's model and optimizer tensors (from :func:`load_checkpoint`)."""
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(weights)
    optimizer_from_flat(optimizer, tensors, state["optimizer"])
