"""Classic (scikit-learn) models shipped: run them for ``predict`` and ``serve``, and export
them to ONNX with skl2onnx, verified against scikit-learn on the run's whole test split.

Two ways a classic model is run, both behind :class:`~mnistlab.shipping.model.ShippedModel`:

* ``mnistlab-sklearn-estimator/2`` (a run folder of ``mnistlab train --model logreg|knn|svm|rf``):
  the skops file loaded with mnistlab's trusted types, run by scikit-learn itself;
* ``mnistlab-sklearn-onnx/1`` (``model.onnx`` written by :func:`export_classic_onnx`): run by
  ONNX Runtime. The graph takes the raw pixels, float32 ``(batch, 784)`` on the 0-255 scale,
  and returns ``label`` and ``probabilities``; the pipeline's preprocessing
  (``PixelScaler``: ``x / 255``) is inside the graph.

A classic model gives probabilities, not logits: ``ShippedModel.logits`` are their logarithms
(the softmax of which gives the probabilities back; a calibration temperature applies to them
as it does to a CNN's logits). Models without ``predict_proba`` (an SVM without Platt scaling)
give the softmax of their decision function, as ``mnistlab evaluate`` scores them.

What converts (:data:`EXPORTABLE`): pipelines of ``PixelScaler`` then mnistlab's softmax
regression (``logreg``), scikit-learn's one-vs-rest logistic regression (``logreg --recipe
seed``) or a random forest (``rf``). ``knn`` and ``svm`` deskew their input first
(``Deskewer``: a per-image shear with bilinear sampling), which has no ONNX form here; they are
refused with that reason, and are shipped as the run folder itself.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np

from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.models import files
from mnistlab.shipping.model import (
    Calibration,
    ShippedModel,
    onnx_session,
    read_json_object,
    write_model,
)

__all__ = [
    "EXPORTABLE",
    "PROBABILITY_TOLERANCE",
    "SAME_LABELS",
    "classic_onnx_bytes",
    "export_classic_onnx",
    "label_agreement",
    "load_classic",
]

# Pipeline steps skl2onnx converts here, by class name (mnistlab's two through converters
# registered below), and the classic models they make up.
EXPORTABLE = {
    "PixelScaler": "x / 255 (mnistlab's converter: Div)",
    "TorchLogisticRegression": "softmax regression (as scikit-learn's LogisticRegression)",
    "OneVsRestClassifier": "one-vs-rest logistic regression",
    "RandomForestClassifier": "random forest",
}
EXPORTABLE_MODELS = "logreg (default and seed recipes) and rf"
PROBABILITY_TOLERANCE = 1e-4  # largest |probability difference| to scikit-learn accepted
SAME_LABELS = 0.999  # at least this fraction of the test images must get the same label
TINY = 1e-300  # log(0) guard: a probability of 0 becomes a logit of about -690


def _pixels(x: np.ndarray) -> np.ndarray:
    """The uint8 pixels ``(N, 28, 28)`` back from ``ShippedModel.normalize``'s ``pixels / 255``
    (normalization mean 0, std 1): exact, the error of ``/ 255 * 255`` is far below 0.5."""
    return np.rint(x.reshape(len(x), 28, 28) * np.float32(255)).clip(0, 255).astype(np.uint8)


def _log(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, np.float64), TINY))


def load_classic(
    model_file: files.ModelFile, calibration: Calibration, threads: int | None
) -> ShippedModel:
    """A :class:`ShippedModel` of a classic model file already read and hash-checked: its
    skops pipeline run by scikit-learn, or its ONNX export run by ONNX Runtime.

    Raises:
        MnistlabError: an untrusted or inconsistent skops file, or an ONNX file that does not
            load (see :func:`mnistlab.models.estimator_files.load_estimator`).
    """
    manifest, path = model_file.manifest, model_file.manifest_path
    metadata = manifest.get("metadata") if isinstance(manifest.get("metadata"), dict) else {}
    names = manifest.get("class_names", metadata.get("class_names"))
    model = metadata.get("model", manifest.get("architecture", "classic"))
    shown = {
        "architecture": f"{model} ({metadata.get('recipe', 'default')})",
        **manifest,
        "class_names": names,
        "num_classes": len(names) if isinstance(names, list) else None,
        "normalization": {"mean": 0.0, "std": 1.0},  # the model's own pipeline takes pixels
    }
    files.check_deep_fields(shown, path)
    if model_file.format == files.SKLEARN_ONNX_FORMAT:
        session = onnx_session(model_file.data, model_file.weights_path, threads)
        name = session.get_inputs()[0].name

        def run_onnx(x: np.ndarray) -> np.ndarray:
            flat = _pixels(x).reshape(len(x), -1).astype(np.float32)
            return _log(session.run(["probabilities"], {name: flat})[0])

        return ShippedModel(shown, path, "onnxruntime", run_onnx, calibration, session)
    from mnistlab.models.estimator_files import load_estimator
    from mnistlab.models.inference import predict_scores

    estimator = load_estimator(model_file)
    if len(getattr(estimator, "classes_", names)) != len(names):
        raise MnistlabError(f"{path}: the estimator's classes differ from 'class_names'")

    def run_sklearn(x: np.ndarray) -> np.ndarray:
        return _log(predict_scores(estimator, _pixels(x)))

    return ShippedModel(shown, path, "scikit-learn", run_sklearn, calibration, estimator)


def _register_converters() -> None:
    """skl2onnx converters for mnistlab's own pipeline steps (idempotent)."""
    from skl2onnx import update_registered_converter
    from skl2onnx.algebra.onnx_ops import OnnxDiv
    from skl2onnx.common.data_types import FloatTensorType
    from skl2onnx.operator_converters.linear_classifier import convert_sklearn_linear_classifier
    from skl2onnx.shape_calculators.linear_classifier import (
        calculate_linear_classifier_output_shapes,
    )
    from sklearn.linear_model import LogisticRegression

    from mnistlab.features.preprocess import PixelScaler
    from mnistlab.models.logistic import TorchLogisticRegression

    def scaler_shape(operator: Any) -> None:
        rows = operator.inputs[0].get_first_dimension()
        operator.outputs[0].type = FloatTensorType([rows, operator.raw_operator.n_features_in_])

    def scaler_convert(scope: Any, operator: Any, container: Any) -> None:
        # float32 x / 255, as PixelScaler computes it (its float64 variant differs by < 1e-7)
        OnnxDiv(
            operator.inputs[0],
            np.array([255], dtype=np.float32),
            op_version=container.target_opset,
            output_names=operator.outputs[:1],
        ).add_to(scope, container)

    def logistic_convert(scope: Any, operator: Any, container: Any) -> None:
        # the same function as scikit-learn's multinomial LogisticRegression: softmax(xW^T + b)
        own = operator.raw_operator
        surrogate = LogisticRegression(solver="lbfgs")
        surrogate.coef_ = np.asarray(own.coef_, np.float64)
        surrogate.intercept_ = np.asarray(own.intercept_, np.float64)
        surrogate.classes_ = own.classes_
        surrogate.n_features_in_ = own.n_features_in_
        operator.raw_operator = surrogate
        try:
            convert_sklearn_linear_classifier(scope, operator, container)
        finally:
            operator.raw_operator = own

    update_registered_converter(PixelScaler, "MnistlabPixelScaler", scaler_shape, scaler_convert)
    update_registered_converter(
        TorchLogisticRegression,
        "MnistlabTorchLogisticRegression",
        calculate_linear_classifier_output_shapes,
        logistic_convert,
        options={"zipmap": [True, False, "columns"], "nocl": [True, False]},
    )


def classic_onnx_bytes(estimator: Any, n_features: int = 784) -> bytes:
    """The ONNX form of a fitted classic pipeline: float32 ``pixels`` ``(batch, n_features)``
    on the 0-255 scale -> ``label``, ``probabilities``; checked by ``onnx.checker``.

    Raises:
        MnistlabError: a step skl2onnx cannot convert (the message names what can be).
    """
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    steps = getattr(estimator, "steps", [("model", estimator)])
    refused = [type(step).__name__ for _, step in steps if type(step).__name__ not in EXPORTABLE]
    if refused:
        raise MnistlabError(
            f"{', '.join(refused)} cannot be exported to ONNX: the classic models that can are "
            f"{EXPORTABLE_MODELS} (pipelines of {', '.join(EXPORTABLE)})",
            hint="knn and svm deskew their input (Deskewer), which has no ONNX form; ship the "
            "run folder itself: `mnistlab predict` and `mnistlab serve` take it",
        )
    _register_converters()
    final = steps[-1][1]
    try:
        proto = convert_sklearn(
            copy.deepcopy(estimator),
            "mnistlab-classic",
            [("pixels", FloatTensorType([None, n_features]))],
            options={type(final): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
        onnx.checker.check_model(proto)
    except Exception as exc:  # skl2onnx raises many types
        raise MnistlabError(
            f"ONNX export of {type(final).__name__} failed ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    proto.doc_string = "mnistlab classic: float32 pixels (batch, 784), 0-255 -> probabilities"
    return proto.SerializeToString()


def label_agreement(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int]:
    """``(same, ties)``: the images whose most probable class is the same in both, and those
    where it differs but the candidate's class is tied for the top in ``reference`` (equal
    probabilities, e.g. 9 of 40 trees each: scikit-learn takes the first, a float32 sum in
    another order may take the other). Both count as agreeing labels."""
    ours, theirs = reference.argmax(1), candidate.argmax(1)
    tied = reference[np.arange(len(reference)), theirs] == reference.max(1)
    same = ours == theirs
    return int(same.sum()), int((tied & ~same).sum())


def export_classic_onnx(
    model: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    check: bool = True,
    tolerance: float = PROBABILITY_TOLERANCE,
    overwrite: bool = False,
    home: str | os.PathLike[str] | None = None,
) -> Any:
    """Export a classic run (its ``model.skops``) to an ONNX model folder (``model.onnx`` +
    ``model.json``, format ``mnistlab-sklearn-onnx/1``), verified on the run's test split.

    Verification runs scikit-learn and ONNX Runtime on every test image of the run's split:
    at least :data:`SAME_LABELS` of the predicted labels must agree (a tie in scikit-learn's
    probabilities broken the other way counts as agreeing, see :func:`label_agreement`) and
    the probabilities differ by at most ``tolerance``; the numbers are stored in the manifest
    (``verification``) and an export that fails is refused (nothing is written).

    Returns:
        An :class:`mnistlab.shipping.onnx.ExportResult`.

    Raises:
        OverwriteError: ``out`` holds a model and ``overwrite`` is false.
        MnistlabError: not a classic run, a model that does not convert, or a failed check.
    """
    from mnistlab.models.estimator_files import load_estimator
    from mnistlab.models.inference import predict_scores
    from mnistlab.shipping.onnx import ExportResult

    model_file = files.read_model_file(model, [files.SKLEARN_FORMAT])
    source = load_classic(model_file, Calibration(), None)
    folder = Path(out).expanduser() if out is not None else source.folder / "onnx"
    if (folder / "model.onnx").exists() and not overwrite:
        raise OverwriteError(
            f"{folder / 'model.onnx'} exists", hint="pass --overwrite, or choose another --out"
        )
    estimator = load_estimator(model_file)
    data = classic_onnx_bytes(estimator, int(getattr(estimator, "n_features_in_", 784)))
    verification: dict[str, Any] = {"checked": False}
    meta = source.manifest.get("metadata", {})
    if check:
        from mnistlab.data.splits import recipe_split

        run = _run_config(model_file.folder)
        dataset = run.get("dataset", meta.get("dataset", "mnist"))
        split = run.get("split", "official")
        _, test = recipe_split(dataset, split, home)
        reference = predict_scores(estimator, test.images)
        session = onnx_session(data, folder / "model.onnx", None)
        flat = test.images.reshape(len(test.images), -1).astype(np.float32)
        candidate = session.run(["probabilities"], {"pixels": flat})[0].astype(np.float64)
        same, ties = label_agreement(reference, candidate)
        diff = float(np.abs(reference - candidate).max()) if len(flat) else 0.0
        verification = {
            "checked": True,
            "dataset": dataset,
            "split": f"test ({split})",
            "images": len(flat),
            "max_abs_diff": diff,
            "tolerance": tolerance,
            "same_predictions": same,
            "ties_broken_otherwise": ties,
            "label_agreement": (same + ties) / max(len(flat), 1),
            "reference_accuracy": float((reference.argmax(1) == test.labels).mean()),
            "candidate_accuracy": float((candidate.argmax(1) == test.labels).mean()),
        }
        verification["passed"] = diff <= tolerance and same + ties >= SAME_LABELS * len(flat)
        if not verification["passed"]:
            raise MnistlabError(
                f"ONNX export of {source.name!r} differs from scikit-learn on {dataset}/test: "
                f"max |probability difference| {diff:.3g} (tolerance {tolerance:g}), same "
                f"label on {same + ties:,} of {len(flat):,} images; nothing was written"
            )
    manifest = write_model(
        folder,
        data,
        "model.onnx",
        {k: v for k, v in source.manifest.items() if k not in ("estimator_class", "versions")},
        fmt=files.SKLEARN_ONNX_FORMAT,
        source=model_file.manifest_path,
        preprocessing={"model_input": "float32 (N, 784): the uint8 pixels, 0-255, in the graph"},
        input={"name": "pixels", "shape": ["batch", 784], "dtype": "float32", "scale": "0-255"},
        output={"name": "probabilities", "shape": ["batch", len(source.class_names)]},
        verification=verification,
    )
    return ExportResult(manifest.parent, manifest.parent / "model.onnx", verification)


def _run_config(model_folder: Path) -> dict[str, Any]:
    """The run's ``config.json`` (its dataset and split) when the model lies in a run."""
    for folder in (model_folder.parent, model_folder):
        config = read_json_object(folder / "config.json")
        if config.get("kind") == "classic":
            return config
    return {}
