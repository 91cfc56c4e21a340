"""Model files, the one way: every model mnistlab writes is a folder with a weights file and a
JSON manifest beside it (``model.json``) that names the weights, their SHA-256 and their
format. One writer (:func:`write_model_file`) and one reader (:func:`read_model_file`) serve
every trainer and every consumer; the reader finds the manifest, checks its format against
one allowlist (:data:`FORMATS`), refuses a weights name that leaves the folder, reads the
weights once and checks their SHA-256 once. Nothing is unpickled: pickle-based files
(``.pt``, ``.pkl``, ...) are refused outright.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_bytes, atomic_write_json

MANIFEST_FILE = "model.json"
TORCH_FORMAT = "mnistlab-torch-model/1"
ONNX_FORMAT = "mnistlab-onnx-model/1"
PRETRAINED_FORMAT = "mnistlab-pretrained/1"
CLASSIFIER_FORMAT = "mnistlab-vit-classifier/1"
ADAPTER_FORMAT = "mnistlab-lora-adapter/1"
SKLEARN_FORMAT = "mnistlab-sklearn-estimator/2"
FORMATS = {
    TORCH_FORMAT: "a CNN of `mnistlab train` (safetensors)",
    ONNX_FORMAT: "an ONNX export or int8 model of `mnistlab export` / `compress`",
    PRETRAINED_FORMAT: "a pretrained transformer of `mnistlab pretrain` (safetensors)",
    CLASSIFIER_FORMAT: "a fine-tuned transformer classifier of `mnistlab finetune`",
    ADAPTER_FORMAT: "a LoRA adapter of `mnistlab finetune --mode lora`",
    SKLEARN_FORMAT: "a classic scikit-learn pipeline of `mnistlab train` (skops)",
}
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz")
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".skops")
HINT = "pass a run folder written by mnistlab, its model/ folder, or a model file"


def sha256_bytes(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ModelFile:
    """A model read from disk: its manifest and its verified weights (bytes, read once)."""

    manifest: dict[str, Any]
    manifest_path: Path
    data: bytes

    @property
    def folder(self) -> Path:
        return self.manifest_path.parent

    @property
    def format(self) -> str:
        return str(self.manifest["format"])

    @property
    def weights_path(self) -> Path:
        return self.folder / self.manifest["weights"]

    def tensors(self) -> dict[str, Any]:
        """The weights as named torch tensors (safetensors formats)."""
        from safetensors.torch import load as load_safetensors

        try:
            return load_safetensors(self.data)
        except Exception as exc:  # safetensors raises its own error types
            raise MnistlabError(f"{self.weights_path}: not a safetensors file ({exc})") from None


def tensors_to_bytes(tensors: Mapping[str, Any]) -> bytes:
    """Named torch tensors as safetensors bytes (moved to the CPU, contiguous, unshared)."""
    from safetensors.torch import save as save_safetensors

    return save_safetensors(
        {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    )


def write_model_file(
    folder: str | os.PathLike[str],
    weights: bytes,
    manifest: Mapping[str, Any],
    *,
    fmt: str,
    weights_name: str = "model.safetensors",
    manifest_name: str = MANIFEST_FILE,
) -> Path:
    """Write ``weights`` then the manifest (``model.json``, or ``manifest_name``: ``manifest``
    plus the format, the weights' name and SHA-256) into ``folder``, both atomically. Returns
    the manifest's path.

    Raises:
        MnistlabError: a format outside :data:`FORMATS` (a bug, not a user error).
    """
    if fmt not in FORMATS:
        raise MnistlabError(f"unknown model format {fmt!r}; known: {', '.join(FORMATS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / weights_name, weights)
    record = {
        **manifest,
        "format": fmt,
        "weights": weights_name,
        "weights_sha256": sha256_bytes(weights),
    }
    atomic_write_json(folder / manifest_name, record)
    return folder / manifest_name


def find_manifest(path: str | os.PathLike[str]) -> Path:
    """The ``model.json`` that ``path`` designates: a run folder (``model/model.json``), a
    model folder, the manifest itself, or a weights file with its manifest beside it.

    Raises:
        MnistlabError: nothing there, a pickle file, or no manifest to be found.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise MnistlabError(
            f"{p}: mnistlab does not load pickle-based files ({p.suffix})",
            hint="models are safetensors, ONNX or skops files with a model.json manifest; " + HINT,
        )
    if not p.exists():
        raise MnistlabError(f"{p}: no such file or folder", hint=HINT)
    if p.is_dir():
        for candidate in (p / MANIFEST_FILE, p / "model" / MANIFEST_FILE):
            if candidate.is_file():
                return candidate
        raise MnistlabError(f"{p} holds no model (neither model.json nor model/model.json)", HINT)
    if p.suffix.lower() == ".json":
        return p
    if p.suffix.lower() in WEIGHT_SUFFIXES:
        for candidate in (p.with_suffix(".json"), p.with_name(MANIFEST_FILE)):
            if candidate.is_file() and _names(candidate, p.name):
                return candidate
        raise MnistlabError(
            f"{p}: no manifest describes these weights (looked for {p.with_suffix('.json').name} "
            f"and {MANIFEST_FILE} beside it)",
            hint="keep the model.json written with the weights next to them",
        )
    raise MnistlabError(
        f"{p}: not a model file (expected a folder, model.json, .safetensors, .onnx or .skops)",
        hint=HINT,
    )


def _names(manifest: Path, weights: str) -> bool:
    try:
        return json.loads(manifest.read_text()).get("weights") == weights
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(
    path: str | os.PathLike[str], formats: Iterable[str] | None = None
) -> tuple[dict[str, Any], Path]:
    """``(manifest, its path)`` for ``path`` (see :func:`find_manifest`), its format checked
    against :data:`FORMATS` and ``formats`` (what the caller can load), and its weights name
    checked to stay in the manifest's folder. The weights are not read.

    Raises:
        MnistlabError: unreadable, another format, or an invalid weights entry.
    """
    manifest_path = find_manifest(path)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise MnistlabError(f"{manifest_path}: unreadable model manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise MnistlabError(f"{manifest_path}: a model manifest is a JSON object")
    fmt = manifest.get("format")
    allowed = [f for f in (formats or FORMATS) if f in FORMATS]
    if fmt not in allowed:
        what = FORMATS.get(str(fmt), f"format {fmt!r}")
        raise MnistlabError(
            f"{manifest_path}: {what}, not what is asked for here",
            hint="this needs " + "; or ".join(FORMATS[f] for f in allowed),
        )
    weights = manifest.get("weights")
    if not (
        isinstance(weights, str)
        and weights not in ("", ".", "..")
        and Path(weights).name == weights
    ):
        raise MnistlabError(
            f"{manifest_path}: invalid model manifest: 'weights' must be a file name in the "
            "manifest's folder"
        )
    if not isinstance(manifest.get("weights_sha256"), str):
        raise MnistlabError(f"{manifest_path}: invalid model manifest: 'weights_sha256' is missing")
    return manifest, manifest_path


def read_model_file(
    path: str | os.PathLike[str], formats: Iterable[str] | None = None
) -> ModelFile:
    """Read a model: its manifest (:func:`read_manifest`) and its weights, read once and
    refused when their SHA-256 differs from the manifest's.

    Raises:
        MnistlabError: see :func:`read_manifest`; unreadable or changed weights.
    """
    manifest, manifest_path = read_manifest(path, formats)
    weights = manifest_path.parent / manifest["weights"]
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise MnistlabError(
            f"{weights}: cannot read the model's weights ({exc.strerror or exc})",
            hint=f"{manifest_path} names this file; copy the weights with their manifest",
        ) from None
    if sha256_bytes(data) != manifest["weights_sha256"]:
        raise MnistlabError(
            f"{weights}: SHA-256 differs from {manifest_path.name}: the weights were changed or "
            "damaged, so they are not loaded",
            hint="copy the model folder again from where it was trained or exported",
        )
    return ModelFile(manifest, manifest_path, data)
