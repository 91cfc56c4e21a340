"""Model files, the one way: every model mnistlab writes is a folder with a weights file and a
JSON manifest beside it (``model.json``) that names the weights, their SHA-256 and their
format. One writer (:func:`write_model_file`) and one reader (:func:`read_model_file`) serve
every trainer and every consumer; the reader finds the manifest, checks its format against
one allowlist (:data:`FORMATS`), refuses a manifest over :data:`MAX_MANIFEST_BYTES` and a
weights name that leaves the folder (a symbolic link included: the weights' real path must lie
in the manifest's folder), reads the weights once and checks their SHA-256 once. Nothing is
unpickled: pickle-based files (``.pt``, ``.pkl``, ...) are refused outright.

:func:`check_deep_fields` checks what a deep model's manifest says about its classes and its
input normalization (at most :data:`MAX_CLASSES` classes), and :func:`safetensors_shapes`
reads the tensors' shapes from a safetensors header without loading any tensor, so a loader
can compare them with the manifest before it allocates a model. docs/model-files.md describes
the format, the checks and the limits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistlab.data.registry import MAX_CLASSES
from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_bytes, atomic_write_json

MANIFEST_FILE = "model.json"
TORCH_FORMAT = "mnistlab-torch-model/1"
ONNX_FORMAT = "mnistlab-onnx-model/1"
PRETRAINED_FORMAT = "mnistlab-pretrained/1"
CLASSIFIER_FORMAT = "mnistlab-vit-classifier/1"
ADAPTER_FORMAT = "mnistlab-lora-adapter/1"
SKLEARN_FORMAT = "mnistlab-sklearn-estimator/2"
SKLEARN_ONNX_FORMAT = "mnistlab-sklearn-onnx/1"
GAN_FORMAT = "mnistlab-gan-generator/1"
READER_FORMAT = "mnistlab-number-reader/1"
HF_CONFIG_FILE = "config.json"  # a Hugging Face-style folder's manifest (`mnistlab export -f hf`)
FORMATS = {
    TORCH_FORMAT: "a CNN of `mnistlab train` (safetensors)",
    ONNX_FORMAT: "an ONNX export or int8 model of `mnistlab export` / `compress`",
    PRETRAINED_FORMAT: "a pretrained transformer or CNN backbone of `mnistlab pretrain`",
    CLASSIFIER_FORMAT: "a fine-tuned transformer classifier of `mnistlab finetune`",
    ADAPTER_FORMAT: "a LoRA adapter of `mnistlab finetune --mode lora`",
    SKLEARN_FORMAT: "a classic scikit-learn pipeline of `mnistlab train` (skops)",
    SKLEARN_ONNX_FORMAT: "a classic scikit-learn pipeline exported to ONNX by `mnistlab export`",
    GAN_FORMAT: "the generator of a DCGAN of `mnistlab gan` (safetensors)",
    READER_FORMAT: "a number reader of `mnistlab train-reader` (safetensors)",
}
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz")
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".skops")
HINT = "pass a run folder written by mnistlab, its model/ folder, or a model file"
MAX_MANIFEST_BYTES = 1 << 20  # 1 MiB: a manifest is a few kB; larger ones are refused unread
# MAX_CLASSES (imported above): the classes a model may have, the same bound as a dataset's.


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
    """The ``model.json`` that ``path`` designates: a run folder (``model/model.json``, or
    ``student/model/model.json`` for a few-label run whose final model is its student), a
    model folder, the manifest itself, or a weights file with its manifest beside it. A folder
    exported by ``mnistlab export --format hf`` (``model.safetensors`` + ``config.json``, no
    ``model.json``) has its ``config.json`` as manifest, checked like any other.

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
        # A few-label run of the propagate method keeps its one model in student/.
        for candidate in (p / MANIFEST_FILE, p / "model" / MANIFEST_FILE,
                          p / "student" / "model" / MANIFEST_FILE):  # fmt: skip
            if candidate.is_file():
                return candidate
        if (p / HF_CONFIG_FILE).is_file() and (p / "model.safetensors").is_file():
            return p / HF_CONFIG_FILE  # a Hugging Face-style folder: its config.json is checked
        raise MnistlabError(f"{p} holds no model (neither model.json nor model/model.json)", HINT)
    if p.suffix.lower() == ".json":
        return p
    if p.suffix.lower() in WEIGHT_SUFFIXES:
        for candidate in (
            p.with_suffix(".json"),
            p.with_name(MANIFEST_FILE),
            p.with_name(HF_CONFIG_FILE),
        ):
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


def adapter_or_path(path: str | os.PathLike[str]) -> Path:
    """``path``, or for a LoRA run folder (``adapter/`` and no ``model/``) its
    ``adapter/adapter.json``, or for ``pretrained:NAME`` the model folder of that shipped
    model (:mod:`mnistlab.models.hub`): what to read for "the model of this run"."""
    from mnistlab.models.hub import PREFIX, resolve_pretrained

    if os.fspath(path).startswith(PREFIX):
        return resolve_pretrained(path)
    folder = Path(path).expanduser()
    adapter = folder / "adapter" / "adapter.json"
    return adapter if adapter.is_file() and not (folder / "model").is_dir() else folder


def _names(manifest: Path, weights: str) -> bool:
    try:
        return json.loads(_manifest_text(manifest)).get("weights") == weights
    except (OSError, ValueError, AttributeError, MnistlabError):
        return False


def _manifest_text(path: Path) -> str:
    """The manifest's text, reading at most :data:`MAX_MANIFEST_BYTES` (+1 to see that it is
    larger).

    Raises:
        OSError: unreadable; MnistlabError: larger than the limit.
    """
    with path.open("rb") as f:
        raw = f.read(MAX_MANIFEST_BYTES + 1)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise MnistlabError(
            f"{path}: a model manifest of more than {MAX_MANIFEST_BYTES:,} bytes is refused "
            "unread (mnistlab writes a few kB)",
            hint="use the model.json written by mnistlab with these weights",
        )
    return raw.decode("utf-8")


def read_manifest(
    path: str | os.PathLike[str],
    formats: Iterable[str] | None = None,
    *,
    wanted: str = "what is asked for here",
    hint: str | None = None,
) -> tuple[dict[str, Any], Path]:
    """``(manifest, its path)`` for ``path`` (see :func:`find_manifest`), its format checked
    against :data:`FORMATS` and ``formats`` (what the caller can load; ``wanted`` and ``hint``
    say it in the caller's words when the format is another), and its weights name checked to
    stay in the manifest's folder. The weights are not read.

    Raises:
        MnistlabError: unreadable, another format, or an invalid weights entry.
    """
    manifest_path = find_manifest(path)
    try:
        manifest = json.loads(_manifest_text(manifest_path))
    except (OSError, ValueError, RecursionError) as exc:
        raise MnistlabError(f"{manifest_path}: unreadable model manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise MnistlabError(f"{manifest_path}: a model manifest is a JSON object")
    fmt = manifest.get("format")
    allowed = [f for f in (formats or FORMATS) if f in FORMATS]
    if fmt not in allowed:
        what = FORMATS.get(str(fmt), f"format {fmt!r}")
        raise MnistlabError(
            f"{manifest_path}: {what}, not {wanted}",
            hint=hint or "this needs " + "; or ".join(FORMATS[f] for f in allowed),
        )
    weights = manifest.get("weights")
    if not (
        isinstance(weights, str)
        and weights not in ("", ".", "..")
        and "\x00" not in weights
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
    path: str | os.PathLike[str],
    formats: Iterable[str] | None = None,
    *,
    wanted: str = "what is asked for here",
    hint: str | None = None,
) -> ModelFile:
    """Read a model: its manifest (:func:`read_manifest`, with ``formats``, ``wanted`` and
    ``hint``) and its weights, read once and refused when their SHA-256 differs from the
    manifest's.

    Raises:
        MnistlabError: see :func:`read_manifest`; unreadable or changed weights.
    """
    manifest, manifest_path = read_manifest(path, formats, wanted=wanted, hint=hint)
    weights = manifest_path.parent / manifest["weights"]
    _check_inside(weights, manifest_path)
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


def _check_inside(weights: Path, manifest_path: Path) -> None:
    """Refuse weights whose real path (symbolic links followed) leaves the manifest's folder,
    or that are not a regular file."""
    folder = manifest_path.parent.resolve()
    try:
        real = weights.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links: the read says which
        return
    if not real.is_relative_to(folder):
        raise MnistlabError(
            f"{weights}: a link to {real}, outside the model's folder {folder}: not loaded",
            hint="copy the weights into the model folder instead of linking them",
        )
    if not real.is_file():
        raise MnistlabError(f"{weights}: not a regular file, so not loaded as weights")


def check_deep_fields(manifest: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Check what a deep model's manifest (a CNN or its ONNX export) says about its classes
    and its input: 2 to :data:`MAX_CLASSES` (1,000, a dataset's bound) ``class_names``
    (strings), ``num_classes`` equal to their number, and ``normalization`` with a finite
    ``mean`` and a finite ``std > 0``.

    Raises:
        MnistlabError: a field missing or out of range.
    """

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise MnistlabError(f"{path}: invalid model manifest: {what}")

    names = manifest.get("class_names")
    need(
        isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names),
        "'class_names' must list at least two names",
    )
    need(len(names) <= MAX_CLASSES, f"more than {MAX_CLASSES:,} classes ({len(names):,})")
    count = manifest.get("num_classes")
    need(
        isinstance(count, int) and not isinstance(count, bool) and 2 <= count <= MAX_CLASSES,
        f"'num_classes' must be a whole number from 2 to {MAX_CLASSES:,}; got {count!r}",
    )
    need(count == len(names), "'num_classes' differs from 'class_names'")
    norm = manifest.get("normalization")
    need(
        isinstance(norm, dict)
        and all(_is_number(norm.get(k)) for k in ("mean", "std"))
        and math.isfinite(norm["mean"])
        and math.isfinite(norm["std"])
        and norm["std"] > 0,
        "'normalization' needs a finite mean and a positive std",
    )


def _is_number(value: Any) -> bool:
    """An int or float that is not a bool (JSON's ``true`` is no number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def safetensors_shapes(
    data: bytes, where: str | os.PathLike[str] = "weights"
) -> dict[str, list[int]]:
    """The shape of every tensor in safetensors ``data``, from its header alone (nothing is
    allocated for the tensors).

    Raises:
        MnistlabError: not a safetensors header.
    """
    bad = MnistlabError(f"{where}: not a safetensors file (its header is invalid)")
    if len(data) < 8:
        raise bad
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise bad
    try:
        header = json.loads(data[8 : 8 + size])
    except (ValueError, RecursionError):
        raise bad from None
    if not isinstance(header, dict):
        raise bad
    shapes = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, dict) else None
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad
        shapes[name] = shape
    return shapes


def output_size(shapes: Mapping[str, list[int]]) -> int | None:
    """The number of outputs of a CNN's last layer: the rows of the last 2-D weight in
    module order (``classifier.3.weight`` after ``classifier.1.weight``; every
    :data:`mnistlab.models.cnn.CNN_MODELS` architecture ends in a ``Linear`` and has no other
    2-D weights before it in that order). None when there is no 2-D weight."""

    def order(name: str) -> list[tuple[int, int | str]]:
        return [(0, int(p)) if p.isdigit() else (1, p) for p in name.split(".")]

    matrices = [n for n, s in shapes.items() if n.endswith("weight") and len(s) == 2]
    if not matrices:
        return None
    return shapes[max(matrices, key=order)][0]
