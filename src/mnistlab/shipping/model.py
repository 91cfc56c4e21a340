"""Shipped models: load a trained model from a run folder, a model folder or a model file, and
predict digits with it.

A model is a weights file plus a JSON manifest beside it, ``model.json``, the format that
:func:`mnistlab.models.files.read_model_file` reads: architecture and training config,
input normalization, class names, metrics and the weights' SHA-256. Two kinds of weights:

* ``mnistlab-torch-model/1``: ``model.safetensors``, written by ``mnistlab train`` (and by
  ``mnistlab compress`` for pruned models), run with PyTorch;
* ``mnistlab-onnx-model/1``: ``model.onnx``, written by ``mnistlab export`` and
  ``mnistlab compress`` (int8), run with ONNX Runtime.

What can be passed wherever a MODEL is asked for: a run folder (``<run>/model/model.json``), a
model folder (``model.json``), the manifest itself, or the weights file (``.safetensors`` or
``.onnx``) with its manifest beside it. Loading reads the manifest, refuses a weights path that
leaves the model folder, hashes the weights and refuses them when the SHA-256 differs; nothing
is unpickled (pickle files such as ``.pt`` are refused outright).

Calibration (written by ``mnistlab.robustness.calibration``): when ``calibration.json`` lies
beside the manifest, logits are divided by its ``temperature`` before the softmax and a
prediction whose top probability is below ``ood.threshold`` is flagged ``low_confidence``;
without it the temperature is 1 and the threshold :data:`DEFAULT_CONFIDENCE_THRESHOLD`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import MnistlabError
from mnistlab.models import files
from mnistlab.models.files import ONNX_FORMAT, TORCH_FORMAT, find_manifest

__all__ = [
    "CALIBRATION_FILE",
    "DEFAULT_CONFIDENCE_THRESHOLD",
    "MANIFEST_FILE",
    "ONNX_FORMAT",
    "PREPROCESSING",
    "TEMPERATURE_RANGE",
    "TORCH_FORMAT",
    "Calibration",
    "Prediction",
    "ShippedModel",
    "check_calibration",
    "find_manifest",
    "load_model",
    "read_calibration",
    "read_manifest",
    "refuse_external_data",
    "write_model",
]

MANIFEST_FILE = files.MANIFEST_FILE
CALIBRATION_FILE = "calibration.json"
DEFAULT_CONFIDENCE_THRESHOLD = 0.5
# Temperatures a calibration may hold: fit_temperature's search interval. Outside it the
# softmax degenerates (1e-308 turns logits into inf and probabilities into NaN).
TEMPERATURE_RANGE = (0.05, 20.0)
BATCH = 1024  # images per forward pass
PREPROCESSING = {
    "model_input": "float32 (N, 1, 28, 28): uint8 pixels / 255, then (x - mean) / std",
    "pixels": "uint8 28x28, light ink on a black (0) background, as in MNIST",
    "pictures": "mnistlab.shipping.preprocess.to_mnist: grey levels, polarity from the border, "
    "crop to the ink, fit the longer side to 20 px (anti-aliased), centre of mass at (14, 14)",
}


@dataclass(frozen=True)
class Calibration:
    """How probabilities are tempered and when a prediction is flagged as unsure."""

    temperature: float = 1.0  # logits are divided by this before the softmax
    threshold: float = DEFAULT_CONFIDENCE_THRESHOLD  # top probability below this: low confidence
    source: str | None = None  # the calibration.json read, or None for the defaults

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {"temperature": self.temperature, "threshold": self.threshold, "source": self.source}


@dataclass(frozen=True)
class Prediction:
    """One image's prediction."""

    label: str  # class name of the most probable class
    index: int  # its index
    confidence: float  # its probability (after temperature scaling)
    top3: list[tuple[str, float]] = field(default_factory=list)  # best classes, best first
    low_confidence: bool = False  # confidence below the model's threshold

    def to_dict(self) -> dict[str, Any]:
        """``{"label", "index", "confidence", "top3": [{"label", "probability"}], ...}``."""
        return {
            "label": self.label,
            "index": self.index,
            "confidence": self.confidence,
            "top3": [{"label": name, "probability": p} for name, p in self.top3],
            "low_confidence": self.low_confidence,
        }


def read_manifest(manifest_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a deep model's manifest: format (through the one model-file reader,
    :func:`mnistlab.models.files.read_manifest`), weights file name, classes, normalization.

    Raises:
        MnistlabError: unreadable, not a deep model, or missing / inconsistent fields.
    """
    manifest = _checked_manifest(manifest_path)
    files.check_deep_fields(manifest, Path(manifest_path))
    return manifest


def _checked_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    return files.read_manifest(path, **_DEEP)[0]


# The deep models' manifests (CNNs and their ONNX exports), said in shipping's words when a
# model file is of another kind.
_DEEP = {
    "formats": [TORCH_FORMAT, ONNX_FORMAT],
    "wanted": "a deep-learning model",
    "hint": "this reads the CNNs of `mnistlab train --model fast-cnn` (or lenet5, seed-cnn, "
    "mlp, resnet-small) and their ONNX exports",
}
# What `predict`, `serve` and load_model run: CNNs (PyTorch or ONNX), fine-tuned transformers
# (a LoRA run: its adapter on its base model), classic pipelines (skops or their ONNX export).
_SHIPPED = {
    "formats": [
        TORCH_FORMAT,
        ONNX_FORMAT,
        files.CLASSIFIER_FORMAT,
        files.ADAPTER_FORMAT,
        files.SKLEARN_FORMAT,
        files.SKLEARN_ONNX_FORMAT,
    ],
    "wanted": "a model that classifies images",
    "hint": "pass a run of `mnistlab train` (CNN or classic), `mnistlab finetune`, or a folder "
    "written by `mnistlab export` (ONNX or --format hf)",
}


def check_calibration(data: Any, where: str | os.PathLike[str]) -> Calibration:
    """The one rule for a calibration's values, applied when ``calibration.json`` is read
    (:func:`read_calibration`, :func:`mnistlab.robustness.calibration.read_calibration`) and
    written (:func:`mnistlab.robustness.calibration.write_calibration`): a JSON object whose
    ``temperature`` (1 when absent) is a number in :data:`TEMPERATURE_RANGE` and whose
    ``ood.threshold``, when there is an ``ood``, is a number in [0, 1]. Booleans are not
    numbers.

    Returns:
        The :class:`Calibration` (``source`` is ``where``).

    Raises:
        MnistlabError: anything else.
    """
    if not isinstance(data, dict):
        raise MnistlabError(f"{where}: a calibration is a JSON object")
    low, high = TEMPERATURE_RANGE
    temperature = data.get("temperature", 1.0)
    if not (files._is_number(temperature) and low <= temperature <= high):
        raise MnistlabError(
            f"{where}: temperature must be a number in [{low:g}, {high:g}]; got {temperature!r}",
            hint="temperatures fitted by `mnistlab calibrate` lie in that range; fit it again",
        )
    threshold = DEFAULT_CONFIDENCE_THRESHOLD
    ood = data.get("ood")
    if ood is not None:
        value = ood.get("threshold") if isinstance(ood, dict) else None
        if not (files._is_number(value) and 0 <= value <= 1):
            raise MnistlabError(
                f"{where}: 'ood.threshold' must be a number in [0, 1]; got {value!r}"
            )
        threshold = float(value)
    return Calibration(float(temperature), threshold, str(where))


def read_calibration(folder: str | os.PathLike[str]) -> Calibration:
    """The calibration in ``<folder>/calibration.json``, or the defaults when there is none.

    Raises:
        MnistlabError: the file exists but is unreadable, larger than
            :data:`~mnistlab.models.files.MAX_MANIFEST_BYTES`, or holds invalid values (see
            :func:`check_calibration`; a model is never served with a calibration silently
            ignored).
    """
    path = Path(folder) / CALIBRATION_FILE
    if not path.exists():
        return Calibration()
    return check_calibration(read_calibration_json(path), path)


def read_calibration_json(path: Path) -> Any:
    """The JSON value of a ``calibration.json``, read bounded, its values not checked.

    Raises:
        MnistlabError: unreadable, not JSON, or over 1 MiB.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(files.MAX_MANIFEST_BYTES + 1)
        if len(raw) > files.MAX_MANIFEST_BYTES:
            raise MnistlabError(
                f"{path}: a calibration of more than {files.MAX_MANIFEST_BYTES:,} bytes is "
                "refused unread"
            )
        return json.loads(raw)
    except (OSError, ValueError, RecursionError) as exc:
        raise MnistlabError(f"{path}: unreadable calibration ({exc})") from None


class ShippedModel:
    """A loaded model, ready to predict on uint8 28x28 images. Build it with :func:`load_model`.

    Thread-safe: the API calls :meth:`predict` from several threads at once.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        manifest_path: Path,
        backend: str,
        forward: Callable[[np.ndarray], np.ndarray],
        calibration: Calibration,
        module: Any = None,
    ) -> None:
        self.manifest = manifest
        self.manifest_path = manifest_path
        self.folder = manifest_path.parent
        self.backend = backend  # "torch" or "onnxruntime"
        self.calibration = calibration
        self.module = module  # the torch.nn.Module or the onnxruntime.InferenceSession
        self._forward = forward
        norm = manifest["normalization"]
        self._mean = float(norm["mean"])
        self._std = float(norm["std"])

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, in output order."""
        return list(self.manifest["class_names"])

    @property
    def name(self) -> str:
        """``architecture`` plus the variant (e.g. ``fast-cnn`` or ``fast-cnn int8-static``)."""
        variant = self.manifest.get("variant")
        arch = str(self.manifest.get("architecture", "model"))
        return f"{arch} {variant}" if variant else arch

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, 28, 28)`` -> float32 ``(N, 1, 28, 28)``, the model's input."""
        x = np.asarray(images, dtype=np.float32)[:, None] * np.float32(1 / 255)
        return (x - np.float32(self._mean)) / np.float32(self._std)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """float32 logits of already normalized input ``(N, 1, 28, 28)`` (see :meth:`normalize`)."""
        return self._forward(x)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Raw float32 logits ``(N, classes)`` of uint8 images ``(N, 28, 28)``."""
        images = _check_images(images)
        out = [
            self._forward(self.normalize(images[i : i + BATCH]))
            for i in range(0, len(images), BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float64 ``(N, classes)``: softmax of logits / temperature.

        Raises:
            MnistlabError: a probability that is not finite (status 500 for the API).
        """
        z = self.logits(images).astype(np.float64) / self.calibration.temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probabilities = e / e.sum(axis=1, keepdims=True)
        if not np.isfinite(probabilities).all():
            error = MnistlabError(
                f"{self.manifest_path}: the model gives non-finite probabilities (NaN or "
                "infinite logits): its weights or calibration are broken",
                hint="train or export the model again",
            )
            error.status = 500  # type: ignore[attr-defined]  # the model's fault, not the input's
            error.code = "internal"  # type: ignore[attr-defined]
            raise error
        return probabilities

    def predict(self, images: np.ndarray, top: int = 3) -> list[Prediction]:
        """One :class:`Prediction` per image of uint8 ``(N, 28, 28)`` (or one ``(28, 28)``)."""
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        probs = self.probabilities(images)
        names = self.class_names
        k = min(top, len(names))
        result = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:k]
            best = int(order[0])
            result.append(
                Prediction(
                    label=names[best],
                    index=best,
                    confidence=float(row[best]),
                    top3=[(names[int(i)], float(row[i])) for i in order],
                    low_confidence=bool(row[best] < self.calibration.threshold),
                )
            )
        return result

    def info(self) -> dict[str, Any]:
        """What ``GET /v1/models`` shows: name, backend, manifest, metrics, calibration, and
        the run's provenance (mnistlab version, data hashes) when the run folder is there."""
        return {
            "name": self.name,
            "backend": self.backend,
            "path": str(self.manifest_path),
            "format": self.manifest["format"],
            "class_names": self.class_names,
            "metrics": self.manifest.get("metrics", {}),
            "calibration": self.calibration.to_dict(),
            "preprocessing": self.manifest.get("preprocessing", PREPROCESSING),
            "provenance": provenance(self.manifest_path),
            "manifest": self.manifest,
        }


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise MnistlabError(
            f"expected uint8 images of shape (N, 28, 28); got {images.dtype} {images.shape}",
            hint="mnistlab.shipping.preprocess.preprocess_image turns pictures into that form",
        )
    return images


def provenance(manifest_path: Path) -> dict[str, Any]:
    """mnistlab version and data hashes: the manifest's own, else the run's environment.json."""
    manifest = json.loads(Path(manifest_path).read_text())
    found = {k: manifest[k] for k in ("mnistlab_version", "data_sha256") if k in manifest}
    if len(found) == 2:
        return found
    for folder in (manifest_path.parent, manifest_path.parent.parent):
        env_path = folder / "environment.json"
        if env_path.is_file():
            try:
                env = json.loads(env_path.read_text())
            except (OSError, ValueError):
                continue
            found.setdefault("mnistlab_version", env.get("mnistlab"))
            found.setdefault("data_sha256", env.get("data_sha256"))
            found.setdefault("packages", env.get("packages"))
            break
    return found


def load_model(
    path: str | os.PathLike[str], *, threads: int | None = None, check_calibration: bool = True
) -> ShippedModel:
    """Load a model for prediction (see the module docstring for what ``path`` may be).

    Args:
        path: run folder (a CNN, classic or fine-tuning run), model folder, a folder of
            ``mnistlab export`` (ONNX or ``--format hf``), ``model.json``, ``.safetensors``,
            ``.onnx`` or ``.skops`` file.
        threads: CPU threads per forward pass (``None``: the runtime's default). ONNX Runtime
            takes it as a session option; for PyTorch it is applied in every thread that
            calls the model (OpenMP keeps the setting per thread, so a web server's worker
            threads would otherwise each use all cores).
        check_calibration: read ``calibration.json`` when present (else use the defaults).

    Returns:
        A :class:`ShippedModel` on the CPU.

    Raises:
        MnistlabError: no model there, a pickle file, a weights SHA-256 that differs from the
            manifest, or weights that do not fit the architecture.
    """
    # (a LoRA run: its adapter, on its base model)
    model_file = files.read_model_file(files.adapter_or_path(path), **_SHIPPED)
    manifest, manifest_path = model_file.manifest, model_file.manifest_path
    calibration = read_calibration(manifest_path.parent) if check_calibration else Calibration()
    fmt = manifest["format"]
    if fmt == ONNX_FORMAT:  # (a CNN's fields are checked by cnn_from_file)
        files.check_deep_fields(manifest, manifest_path)
        return _load_onnx(manifest, manifest_path, model_file.data, calibration, threads)
    if fmt in (files.SKLEARN_FORMAT, files.SKLEARN_ONNX_FORMAT):
        from mnistlab.shipping.classic import load_classic

        return load_classic(model_file, calibration, threads)
    if fmt in (files.CLASSIFIER_FORMAT, files.ADAPTER_FORMAT):
        return _load_transformer(model_file, calibration, threads)
    return _load_torch(model_file, calibration, threads)


def _load_torch(
    model_file: files.ModelFile, calibration: Calibration, threads: int | None
) -> ShippedModel:
    from mnistlab.models.cnn import cnn_from_file

    manifest, manifest_path = model_file.manifest, model_file.manifest_path
    try:
        module = cnn_from_file(model_file)  # the bytes read and hash-checked above, not again
    except MnistlabError:
        raise
    except Exception as exc:  # safetensors / state-dict errors: say which file, not a traceback
        raise MnistlabError(
            f"{manifest_path.parent}: the weights do not load into "
            f"{manifest.get('architecture')!r} ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    return _torch_model(module, manifest, manifest_path, calibration, threads)


def _torch_model(
    module: Any,
    manifest: dict[str, Any],
    manifest_path: Path,
    calibration: Calibration,
    threads: int | None,
) -> ShippedModel:
    import torch

    module.eval()

    def forward(x: np.ndarray) -> np.ndarray:
        if threads and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            return module(torch.from_numpy(x)).float().numpy()

    return ShippedModel(manifest, manifest_path, "torch", forward, calibration, module)


def _load_transformer(
    model_file: files.ModelFile, calibration: Calibration, threads: int | None
) -> ShippedModel:
    """A fine-tuned transformer classifier (or a LoRA adapter on its base model): its input is
    ``pixels / 255`` (normalization mean 0, std 1)."""
    from mnistlab.models.vit_files import load_classifier

    meta, path = model_file.manifest, model_file.manifest_path
    count = meta.get("num_classes")
    preset = meta.get("finetune_config", {}).get("preset")
    manifest = {
        "architecture": f"vit-{preset}" if preset else "vit",
        "class_names": [str(i) for i in range(count)] if isinstance(count, int) else None,
        **meta,
        "normalization": {"mean": 0.0, "std": 1.0},  # the input is pixels / 255
    }
    files.check_deep_fields(manifest, path)
    if model_file.format == files.CLASSIFIER_FORMAT:
        _check_transformer_shapes(model_file)
    module, _ = load_classifier(model_file)
    return _torch_model(module, manifest, path, calibration, threads)


def _check_transformer_shapes(model_file: files.ModelFile) -> None:
    """Refuse a classifier whose ``transformer`` and ``num_classes`` describe other tensors
    than the weights' header holds, before anything is allocated (the model is built on
    PyTorch's meta device, which allocates nothing).

    Raises:
        MnistlabError: an invalid ``transformer`` entry, or shapes that differ.
    """
    import torch

    from mnistlab.models.transformer import Classifier, TransformerConfig

    meta, path = model_file.manifest, model_file.manifest_path
    try:
        with torch.device("meta"):
            config = TransformerConfig.from_dict(meta["transformer"])
            probe = Classifier(config, meta["num_classes"])
    except MnistlabError:
        raise
    except Exception as exc:  # a hand-made 'transformer' entry: missing keys, wrong types
        raise MnistlabError(
            f"{path}: invalid model manifest: 'transformer' ({type(exc).__name__}: "
            f"{str(exc)[:200]})"
        ) from None
    expected = {name: list(t.shape) for name, t in probe.state_dict().items()}
    if expected != files.safetensors_shapes(model_file.data, model_file.weights_path):
        raise MnistlabError(
            f"{path}: the weights' tensors differ from what 'transformer' and 'num_classes' "
            "describe, so they are not loaded",
            hint="copy the model folder again from where it was trained or exported",
        )


def _load_onnx(
    manifest: dict[str, Any],
    manifest_path: Path,
    data: bytes,
    calibration: Calibration,
    threads: int | None,
) -> ShippedModel:
    session = onnx_session(data, manifest_path.parent / manifest["weights"], threads)
    input_name = session.get_inputs()[0].name

    def forward(x: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: x})[0]

    return ShippedModel(manifest, manifest_path, "onnxruntime", forward, calibration, session)


def onnx_session(data: bytes, where: str | os.PathLike[str], threads: int | None) -> Any:
    """An ONNX Runtime session (CPU) of hash-checked model bytes, after
    :func:`refuse_external_data`; ``threads`` per call (``None``: the runtime's default).

    Raises:
        MnistlabError: external data, or a model ONNX Runtime cannot load.
    """
    import onnxruntime as ort

    refuse_external_data(data, where)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise MnistlabError(f"{where}: ONNX Runtime cannot load it ({str(exc)[:300]})") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (a run's ``config.json``, ``metrics.json``, ...), or ``{}``
    when it is missing, unreadable or no object: for what is informative only."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def refuse_external_data(data: bytes, where: str | os.PathLike[str]) -> None:
    """Refuse an ONNX model with a tensor stored outside it (``data_location: EXTERNAL``):
    ONNX Runtime would read that file relative to the working directory, and the manifest's
    SHA-256 covers only ``model.onnx``. mnistlab exports keep every weight inside.

    Raises:
        MnistlabError: not an ONNX model, or one that uses external data.
    """
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise MnistlabError(f"{where}: not an ONNX model ({str(exc)[:300]})") from None
    graphs = [proto.graph]
    tensors: list[Any] = []
    nodes = [node for function in proto.functions for node in function.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            tensors += graph.initializer
            for sparse in graph.sparse_initializer:
                tensors += [sparse.values, sparse.indices]
            nodes += graph.node
            continue
        for attribute in nodes.pop().attribute:
            tensors += [attribute.t, *attribute.tensors]
            for sparse in [attribute.sparse_tensor, *attribute.sparse_tensors]:
                tensors += [sparse.values, sparse.indices]
            graphs += [attribute.g, *attribute.graphs]
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "?")
            raise MnistlabError(
                f"{where}: tensor {tensor.name!r} is stored outside the model (external data "
                f"{location!r}): refused, only the model file is hash-checked",
                hint="export the model again with `mnistlab export`: it keeps every weight "
                "inside model.onnx",
            )


def write_model(
    folder: str | os.PathLike[str],
    weights: bytes,
    weights_name: str,
    base: dict[str, Any],
    *,
    fmt: str,
    source: Path | None = None,
    **fields: Any,
) -> Path:
    """Write a model folder: the weights, then a manifest derived from ``base`` (the source
    model's manifest) naming them with their SHA-256, the preprocessing, the mnistlab version
    and the data hashes, plus ``fields``. Both files are written atomically; a
    ``calibration.json`` beside ``source`` is copied along.

    Returns:
        The manifest's path.
    """
    from mnistlab import __version__
    from mnistlab.io import atomic_write_bytes

    folder = Path(folder)
    manifest = {
        **{k: v for k, v in base.items() if k not in ("format", "weights", "weights_sha256")},
        "preprocessing": PREPROCESSING,
        "mnistlab_version": __version__,
    }
    if source is not None:
        origin = provenance(source)
        manifest["data_sha256"] = origin.get("data_sha256")
        manifest["source"] = {
            "path": str(source),
            "weights_sha256": base.get("weights_sha256"),
            "mnistlab_version": origin.get("mnistlab_version"),
        }
        calibration = source.parent / CALIBRATION_FILE
        if calibration.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(folder / CALIBRATION_FILE, calibration.read_bytes())
    manifest.update(fields)
    return files.write_model_file(folder, weights, manifest, fmt=fmt, weights_name=weights_name)
