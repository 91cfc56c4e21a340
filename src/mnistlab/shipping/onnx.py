"""Export a trained model to ONNX, verified against PyTorch on the whole test split.

``export_onnx`` writes a model folder (``model.onnx`` + ``model.json``, format
``mnistlab-onnx-model/1``) that :func:`mnistlab.shipping.load_model`, ``mnistlab predict`` and
``mnistlab serve`` run with ONNX Runtime. The graph takes float32 ``images`` of shape
``(batch, 1, 28, 28)``, normalized as the manifest says, with a dynamic batch dimension, and
returns ``logits`` ``(batch, classes)``. Opset 17 by default.

Verification runs both models on every image of the model's test split: the largest absolute
difference of the logits must be at most ``tolerance`` (1e-4) and the accuracies equal; the
result is stored in the manifest (``verification``) and an export that fails it is refused.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs no package beyond
``onnx``, and these convolutional nets have no control flow for the newer exporter to help with.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.models.files import SKLEARN_FORMAT
from mnistlab.shipping.model import (
    ONNX_FORMAT,
    TORCH_FORMAT,
    ShippedModel,
    load_model,
    write_model,
)

__all__ = ["DEFAULT_OPSET", "TOLERANCE", "ExportResult", "export_onnx", "onnx_bytes", "verify"]

DEFAULT_OPSET = 17
TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how the check went."""

    folder: Path  # the ONNX model folder
    onnx_path: Path  # model.onnx
    verification: dict[str, Any]  # see verify()


def onnx_bytes(model: ShippedModel, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialize a PyTorch :class:`ShippedModel` to ONNX (dynamic batch), checked by
    ``onnx.checker``.

    Raises:
        MnistlabError: not a PyTorch model, an opset below 17, or the exporter failed.
    """
    import onnx
    import torch

    if model.backend != "torch":
        raise MnistlabError(
            f"{model.manifest_path}: already an ONNX model",
            hint="export the PyTorch model (the run folder) instead",
        )
    if model.manifest.get("format") != TORCH_FORMAT:
        raise MnistlabError(
            f"{model.manifest_path}: ONNX export takes the CNNs of `mnistlab train` and classic "
            f"runs, not {model.name!r}",
            hint="a transformer of `mnistlab finetune` travels as --format hf (or, for a LoRA "
            "adapter, --format peft)",
        )
    if opset < DEFAULT_OPSET:
        raise MnistlabError(f"opset {opset} is too old: use {DEFAULT_OPSET} or newer")
    buffer = io.BytesIO()
    dummy = torch.zeros(2, 1, 28, 28)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model.module,
                (dummy,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["logits"],
                dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            )
        proto = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise MnistlabError(
            f"ONNX export of {model.name!r} failed ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    proto.doc_string = f"mnistlab {model.name}: float32 images (batch, 1, 28, 28) -> logits"
    return proto.SerializeToString()


def verify(
    reference: ShippedModel,
    candidate: ShippedModel,
    images: np.ndarray,
    labels: np.ndarray,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Compare two models' logits and accuracies on ``images`` (uint8 ``(N, 28, 28)``).

    Returns:
        ``{"images", "max_abs_diff", "tolerance", "reference_accuracy", "candidate_accuracy",
        "same_predictions", "passed"}``; ``passed`` needs the difference within ``tolerance``
        and equal accuracies.
    """
    a = reference.logits(images)
    b = candidate.logits(images)
    labels = np.asarray(labels)
    acc_a = float((a.argmax(1) == labels).mean())
    acc_b = float((b.argmax(1) == labels).mean())
    diff = float(np.abs(a - b).max()) if len(a) else 0.0
    return {
        "images": len(labels),
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "reference_accuracy": acc_a,
        "candidate_accuracy": acc_b,
        "same_predictions": int((a.argmax(1) == b.argmax(1)).sum()),
        "passed": diff <= tolerance and acc_a == acc_b,
    }


def export_onnx(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = TOLERANCE,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Export ``model`` (run folder, model folder or file) to an ONNX model folder. A classic
    run goes to :func:`mnistlab.shipping.classic.export_classic_onnx` (skl2onnx, checked
    against scikit-learn; ``tolerance`` is then its own probability tolerance).

    Args:
        model: a PyTorch CNN or a classic run (see :func:`mnistlab.shipping.load_model`).
        out: the folder to write; default ``onnx/`` inside the model folder.
        opset: ONNX opset, at least 17.
        check: run :func:`verify` on the model's whole test split (its manifest's dataset).
        tolerance: largest absolute logit difference accepted.
        overwrite: replace an existing ``model.onnx`` in ``out``.
        home: dataset cache root for the test split.

    Returns:
        An :class:`ExportResult`; its ``verification`` is also in the manifest.

    Raises:
        OverwriteError: ``out`` holds a model and ``overwrite`` is false.
        MnistlabError: the model cannot be exported, or the check failed (nothing is left
            in ``out`` then).
    """
    source = load_model(model)
    if source.manifest.get("format") == SKLEARN_FORMAT:  # a classic run: skl2onnx, checked
        from mnistlab.shipping.classic import export_classic_onnx

        return export_classic_onnx(model, out, check=check, overwrite=overwrite, home=home)
    folder = Path(out).expanduser() if out is not None else source.folder / "onnx"
    if (folder / "model.onnx").exists() and not overwrite:
        raise OverwriteError(
            f"{folder / 'model.onnx'} exists", hint="pass --overwrite, or choose another --out"
        )
    data = onnx_bytes(source, opset)
    verification: dict[str, Any] = {"checked": False}
    if check:
        from mnistlab.data import load_dataset

        dataset = source.manifest.get("config", {}).get("dataset", "mnist")
        test = load_dataset(dataset, "test", home=home)
        candidate = _session_model(source, data)
        verification = {
            "checked": True,
            "dataset": dataset,
            "split": "test",
            **verify(source, candidate, test.images, test.labels, tolerance),
        }
        if not verification["passed"]:
            raise MnistlabError(
                f"ONNX export of {source.name!r} differs from PyTorch on {dataset}/test: max "
                f"|logit difference| {verification['max_abs_diff']:.3g} (tolerance "
                f"{tolerance:g}), accuracy {verification['candidate_accuracy']:.4f} vs "
                f"{verification['reference_accuracy']:.4f}; nothing was written"
            )
    manifest = write_model(
        folder,
        data,
        "model.onnx",
        source.manifest,
        fmt=ONNX_FORMAT,
        source=source.manifest_path,
        opset=opset,
        input={"name": "images", "shape": ["batch", 1, 28, 28], "dtype": "float32"},
        output={"name": "logits", "shape": ["batch", len(source.class_names)]},
        verification=verification,
    )
    return ExportResult(manifest.parent, manifest.parent / "model.onnx", verification)


def _session_model(source: ShippedModel, data: bytes) -> ShippedModel:
    """A :class:`ShippedModel` running ``data`` with ONNX Runtime (before anything is written)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return ShippedModel(
        {**source.manifest, "format": ONNX_FORMAT},
        source.manifest_path,
        "onnxruntime",
        lambda x: session.run(None, {name: x})[0],
        source.calibration,
        session,
    )
