"""Model files a red team tampered with (issue 15, items 8-12): every bad file is a clean
MnistlabError, through the Python loaders and through ``mnistlab evaluate`` / ``predict``
(exit 1, an ``error:`` line, no traceback). Each test writes a real trained model (the
shipping tests' tiny fast-cnn on ``mnist-mini``) and tampers with a copy of it."""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from shipping_support import copy_run, encode, trained_run
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models import files
from mnistlab.models.inference import load_predictor
from mnistlab.robustness import calibration as robustness_calibration
from mnistlab.shipping import load_model
from mnistlab.shipping.model import TEMPERATURE_RANGE, read_calibration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    path.write_bytes(encode(load_dataset("mnist-mini", "test", download=False).images[0]))
    return path


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "model.json").read_text())


def write_manifest(folder: Path, manifest: Any) -> None:
    (folder / "model.json").write_text(json.dumps(manifest))


def rewrite_weights(folder: Path, weights: bytes, **changes: Any) -> None:
    """New weights with a matching SHA-256 in the manifest (what an attacker who can write the
    folder can always do), plus manifest ``changes``."""
    manifest = manifest_of(folder)
    (folder / manifest["weights"]).write_bytes(weights)
    manifest.update(changes, weights_sha256=files.sha256_bytes(weights))
    write_manifest(folder, manifest)


def assert_clean_cli_error(args: list[str], match: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    assert "Traceback" not in result.output
    assert "error:" in result.output
    assert match in " ".join(result.output.split()), result.output


# ------------------------------------------------------------------ 8, 9: calibration.json


def write_calibration_json(copy: Path, data: Any) -> Path:
    path = copy / "model" / "calibration.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("temperature", [1e-308, 0.0499, 20.5, 1e308, -1.0, True])
def test_calibration_refuses_tiny_temperature(
    run: Path, tmp_path: Path, digit_png: Path, temperature: Any
) -> None:
    copy = copy_run(run, tmp_path / "run")
    write_calibration_json(copy, {"temperature": temperature, "ood": {"threshold": 0.5}})
    with pytest.raises(MnistlabError, match=r"temperature must be a number in \[0.05, 20\]"):
        load_model(copy)
    with pytest.raises(MnistlabError, match="temperature must be"):  # the same rule ...
        robustness_calibration.read_calibration(copy)
    data = {"temperature": temperature, "fitted_on": "val", "ece_before": 0, "ece_after": 0}
    with pytest.raises(MnistlabError, match="temperature must be"):  # ... on both sides
        robustness_calibration.write_calibration(tmp_path / "other", data)
    assert_clean_cli_error(["predict", str(copy), str(digit_png)], "temperature must be")


def test_calibration_refuses_non_finite_temperature(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    for text in ('{"temperature": NaN}', '{"temperature": Infinity}', "[1.0]"):
        (copy / "model" / "calibration.json").write_text(text)
        with pytest.raises(MnistlabError, match=r"temperature|JSON object"):
            read_calibration(copy / "model")
        with pytest.raises(MnistlabError, match=r"temperature|JSON object"):
            robustness_calibration.read_calibration(copy)


def test_calibration_accepts_the_ends_of_its_range(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    images = load_dataset("mnist-mini", "test", download=False).images[:50]
    for temperature in TEMPERATURE_RANGE:
        write_calibration_json(copy, {"temperature": temperature})
        model = load_model(copy)
        assert model.calibration.temperature == temperature
        probs = model.probabilities(images)
        assert np.isfinite(probs).all()
        assert robustness_calibration.read_calibration(copy) == {"temperature": temperature}
        assert all(math.isfinite(p.confidence) for p in model.predict(images))


def test_probabilities_refuse_non_finite_values(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    tensors = files.ModelFile(
        manifest_of(copy / "model"),
        copy / "model" / "model.json",
        (copy / "model" / "model.safetensors").read_bytes(),
    ).tensors()
    tensors["head.1.bias"][3] = float("nan")  # a broken model: NaN logits, hash matching
    rewrite_weights(copy / "model", files.tensors_to_bytes(tensors))
    model = load_model(copy)
    images = load_dataset("mnist-mini", "test", download=False).images[:8]
    with pytest.raises(MnistlabError, match="non-finite probabilities") as info:
        model.predict(images)
    assert info.value.status == 500  # the API answers the model's fault with a 500


@pytest.mark.parametrize("ood", [{"threshold": True}, {"threshold": False}, {"threshold": "0.5"}])
def test_calibration_refuses_boolean_threshold(run: Path, tmp_path: Path, ood: Any) -> None:
    copy = copy_run(run, tmp_path / "run")
    write_calibration_json(copy, {"temperature": 1.5, "ood": ood})
    with pytest.raises(MnistlabError, match=r"'ood.threshold' must be a number in \[0, 1\]"):
        load_model(copy)
    with pytest.raises(MnistlabError, match=r"ood\.threshold"):
        robustness_calibration.read_calibration(copy)
    data = {"temperature": 1.5, "fitted_on": "val", "ece_before": 0, "ece_after": 0, "ood": ood}
    with pytest.raises(MnistlabError, match=r"ood\.threshold"):
        robustness_calibration.write_calibration(tmp_path / "other", data)


# ------------------------------------------------------------------ 10: manifest size, classes


def test_manifest_over_a_megabyte_is_refused_unread(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = copy_run(run, tmp_path / "run")
    manifest = manifest_of(copy / "model")
    names = [f"c{i}" for i in range(1_000_000)]  # the red team's 9.9 MB manifest
    write_manifest(copy / "model", {**manifest, "num_classes": len(names), "class_names": names})
    assert (copy / "model" / "model.json").stat().st_size > files.MAX_MANIFEST_BYTES
    reads: list[int] = []
    real_read = files._manifest_text

    def spy(path: Path) -> str:
        reads.append(path.stat().st_size)
        return real_read(path)

    monkeypatch.setattr(files, "_manifest_text", spy)
    with pytest.raises(MnistlabError, match="refused unread"):
        load_model(copy)
    with pytest.raises(MnistlabError, match="refused unread"):
        load_predictor(copy)
    assert reads  # the bounded reader is the one that read it
    assert_clean_cli_error(["evaluate", str(copy)], "refused unread")


def test_manifest_refuses_too_many_classes(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    manifest = manifest_of(copy / "model")
    names = [""] * 5_000  # small enough to read, too many classes to build
    write_manifest(copy / "model", {**manifest, "num_classes": len(names), "class_names": names})
    with pytest.raises(MnistlabError, match="more than 1,000 classes"):
        load_model(copy)
    with pytest.raises(MnistlabError, match="more than 1,000 classes"):
        load_predictor(copy)
    assert_clean_cli_error(["evaluate", str(copy)], "more than 1,000 classes")


def test_num_classes_must_match_the_weights(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    manifest = manifest_of(copy / "model")
    names = [str(i) for i in range(20)]
    write_manifest(copy / "model", {**manifest, "num_classes": 20, "class_names": names})
    with pytest.raises(MnistlabError, match="'num_classes' is 20 but the weights' last layer"):
        load_model(copy)
    assert_clean_cli_error(["evaluate", str(copy)], "last layer has 10 outputs")


def test_safetensors_shapes_come_from_the_header(run: Path) -> None:
    model_file = files.read_model_file(run, [files.TORCH_FORMAT])
    shapes = files.safetensors_shapes(model_file.data)
    assert shapes == {k: list(v.shape) for k, v in model_file.tensors().items()}
    assert files.output_size(shapes) == 10
    for bad in (b"", b"\xff" * 8 + b"{}", (5).to_bytes(8, "little") + b"[1,2]"):
        with pytest.raises(MnistlabError, match="not a safetensors file"):
            files.safetensors_shapes(bad)


# ------------------------------------------------------------------ 11: `mnistlab evaluate`


def _weights(value: Any) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        write_manifest(folder, {**manifest_of(folder), "weights": value})

    return tamper


def _drop(key: str) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        manifest = manifest_of(folder)
        del manifest[key]
        write_manifest(folder, manifest)

    return tamper


def _fields(**changes: Any) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        write_manifest(folder, {**manifest_of(folder), **changes})

    return tamper


def _symlink_outside(folder: Path) -> None:
    outside = folder.parent.parent / "elsewhere.safetensors"
    (folder / "model.safetensors").rename(outside)  # the same bytes: the SHA-256 matches
    (folder / "model.safetensors").symlink_to(outside)


def _pickle_weights(folder: Path) -> None:
    rewrite_weights(folder, pickle.dumps({"w": [1.0, 2.0]}))


def _json_list(folder: Path) -> None:
    (folder / "model.json").write_text("[1, 2]")


TAMPERED = {
    "weights-up-the-tree": (
        _weights("../../../run/model/model.safetensors"),
        "file name in the manifest's folder",
    ),
    "weights-absolute": (_weights("/etc/passwd"), "file name in the manifest's folder"),
    "weights-dotdot": (_weights("../model.safetensors"), "file name in the manifest's folder"),
    "weights-not-a-string": (_weights(["model.safetensors"]), "file name in the manifest"),
    "weights-symlink-outside": (_symlink_outside, "outside the model's folder"),
    "weights-missing": (_drop("weights"), "'weights' must be a file name"),
    "sha256-missing": (_drop("weights_sha256"), "'weights_sha256' is missing"),
    "manifest-json-list": (_json_list, "a model manifest is a JSON object"),
    "pickle-as-safetensors": (_pickle_weights, "not a safetensors file"),
    "num-classes-negative": (_fields(num_classes=-5), "'num_classes' must be a whole number"),
    "num-classes-bool": (_fields(num_classes=True), "'num_classes' must be a whole number"),
    "std-zero": (_fields(normalization={"mean": 0.1, "std": 0}), "positive std"),
    "std-bool": (_fields(normalization={"mean": 0.1, "std": True}), "positive std"),
    "architecture-unknown": (_fields(architecture="resnet-9000"), "unknown model architecture"),
    "architecture-not-a-name": (_fields(architecture=["fast-cnn"]), "'architecture' must be"),
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_evaluate_refuses_tampered_model_files(
    run: Path, tmp_path: Path, digit_png: Path, name: str
) -> None:
    tamper, message = TAMPERED[name]
    copy = copy_run(run, tmp_path / "run")
    tamper(copy / "model")
    with pytest.raises(MnistlabError, match=re.escape(message)):
        load_predictor(copy)  # what `mnistlab evaluate` loads a deep run with
    with pytest.raises(MnistlabError):
        load_model(copy)  # shipping's loader
    assert_clean_cli_error(["evaluate", str(copy)], message)
    assert_clean_cli_error(["predict", str(copy), str(digit_png)], "error:")


def test_evaluate_still_loads_the_untampered_copy(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    inside = copy / "model" / "weights-link.safetensors"
    inside.symlink_to("model.safetensors")  # a link that stays in the folder is fine
    write_manifest(copy / "model", {**manifest_of(copy / "model"), "weights": inside.name})
    result = CliRunner().invoke(app, ["evaluate", str(copy)])
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------------ 12: ONNX external data


def _onnx_with_external_initializer() -> bytes:
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    weight = numpy_helper.from_array(np.zeros((784, 10), np.float32), "W")
    set_external_data(weight, location="leak.bin")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        ],
        "leaky",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def test_onnx_external_data_is_refused(
    run: Path, tmp_path: Path, digit_png: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    manifest = manifest_of(run / "model")
    folder = tmp_path / "onnx-model"
    data = _onnx_with_external_initializer()
    base = {k: v for k, v in manifest.items() if k not in ("format", "weights", "weights_sha256")}
    files.write_model_file(folder, data, base, fmt=files.ONNX_FORMAT, weights_name="model.onnx")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "leak.bin").write_bytes(np.ones((784, 10), np.float32).tobytes())  # a secret
    monkeypatch.chdir(cwd)
    # The threat is real: ONNX Runtime alone reads ./leak.bin into the weights.
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": np.ones((1, 1, 28, 28), np.float32)})[0]
    assert (logits == 784).all()
    refused = r"stored outside the model \(external data 'leak\.bin'"
    with pytest.raises(MnistlabError, match=refused):
        load_model(folder)
    assert_clean_cli_error(["predict", str(folder), str(digit_png)], "leak.bin")
