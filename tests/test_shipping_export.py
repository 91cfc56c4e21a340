"""ONNX export (verified against PyTorch on the whole test split) and compression (int8
quantization, magnitude pruning), through the library and the commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from shipping_support import copy_run, trained_run
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.shipping import load_model
from mnistlab.shipping.compress import compress_model, prune_model
from mnistlab.shipping.onnx import export_onnx
from mnistlab.training.engine import load_trained_model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("mnist-mini", "test", download=False)


@pytest.fixture(scope="module")
def exported(run: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_onnx(run, tmp_path_factory.mktemp("onnx") / "fp32")


def test_onnx_matches_pytorch_on_the_whole_test_split(run: Path, exported, test_split) -> None:
    v = exported.verification
    assert v["checked"] and v["passed"]
    assert v["dataset"] == "mnist-mini" and v["images"] == len(test_split.labels) == 1000
    assert v["max_abs_diff"] <= 1e-4
    assert v["candidate_accuracy"] == v["reference_accuracy"] > 0.95
    # Check it again independently of the stored verification.
    torch_model = load_model(run)
    onnx_model = load_model(exported.folder)
    assert onnx_model.backend == "onnxruntime"
    a = torch_model.logits(test_split.images)
    b = onnx_model.logits(test_split.images)
    assert np.abs(a - b).max() <= 1e-4
    assert (a.argmax(1) == b.argmax(1)).all()


def test_onnx_file_is_opset_17_with_a_dynamic_batch(exported, test_split) -> None:
    proto = onnx.load(str(exported.onnx_path))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    model = load_model(exported.onnx_path)  # the .onnx file itself names the model
    for n in (1, 7, 300):
        assert model.logits(test_split.images[:n]).shape == (n, 10)


def test_onnx_manifest_records_its_origin(run: Path, exported) -> None:
    manifest = json.loads((exported.folder / "model.json").read_text())
    source = json.loads((run / "model" / "model.json").read_text())
    assert manifest["format"] == "mnistlab-onnx-model/1"
    assert manifest["opset"] == 17
    assert manifest["source"]["weights_sha256"] == source["weights_sha256"]
    assert manifest["class_names"] == source["class_names"]
    assert manifest["normalization"] == source["normalization"]
    assert manifest["mnistlab_version"] and "mnist-mini" in manifest["data_sha256"]
    assert manifest["verification"]["passed"]


def test_export_refuses_to_overwrite_and_to_reexport(run: Path, exported) -> None:
    with pytest.raises(OverwriteError):
        export_onnx(run, exported.folder)
    with pytest.raises(MnistlabError, match="already an ONNX model"):
        export_onnx(exported.folder, exported.folder.parent / "again")


def test_changed_onnx_file_is_refused(exported, tmp_path: Path) -> None:
    folder = tmp_path / "onnx"
    folder.mkdir()
    for name in ("model.onnx", "model.json"):
        (folder / name).write_bytes((exported.folder / name).read_bytes())
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(MnistlabError, match="SHA-256 differs"):
        load_model(folder)


def test_export_command(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(copy), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    assert "verified on mnist-mini/test (1,000 images)" in result.output
    assert (copy / "model" / "onnx" / "model.onnx").is_file()
    again = CliRunner().invoke(app, ["export", str(copy)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    wrong = CliRunner().invoke(app, ["export", str(copy), "--format", "tflite"])
    assert wrong.exit_code == 1 and "unknown export format" in wrong.output


def test_pruning_zeroes_the_smallest_weights_and_keeps_them_zero(run: Path, tmp_path: Path):
    manifest = prune_model(run, tmp_path / "pruned", amount=0.6, finetune_epochs=1)
    pruned = load_model(manifest)
    info = json.loads(manifest.read_text())["pruning"]
    assert info["amount"] == 0.6 and info["finetune_epochs"] == 1
    assert info["sparsity"] == pytest.approx(0.6, abs=0.01)
    module, _ = load_trained_model(manifest.parent)  # the engine's loader reads it too
    original, _ = load_trained_model(run)
    zeroed, kept = [], []
    for (name, w), (_, w0) in zip(
        module.named_parameters(), original.named_parameters(), strict=True
    ):
        if name.endswith("weight") and w.ndim >= 2:  # conv and linear weights
            zeroed.append(w0[w == 0].abs().flatten())
            kept.append(w0[w != 0].abs().flatten())
    # Global magnitude pruning: every weight zeroed was smaller than every weight kept, and
    # fine-tuning left the zeros at zero.
    assert torch.cat(zeroed).max() <= torch.cat(kept).min()
    assert torch.cat(zeroed).numel() / (torch.cat(zeroed).numel() + torch.cat(kept).numel()) == (
        pytest.approx(0.6, abs=0.01)
    )
    assert pruned.manifest["variant"] == "pruned-60%"
    # One epoch of fine-tuning brings the accuracy back near the original's.
    test = load_dataset("mnist-mini", "test", download=False)
    before = (load_model(run).logits(test.images).argmax(1) == test.labels).mean()
    after = (pruned.logits(test.images).argmax(1) == test.labels).mean()
    assert after >= before - 0.015


def test_compress_table_and_variants(run: Path, tmp_path: Path, test_split) -> None:
    result = compress_model(
        run, tmp_path / "compressed", finetune_epochs=0, calibration_size=256, seconds=0.02
    )
    rows = {(r["variant"], r["backend"]): r for r in result.rows}
    assert set(rows) == {
        ("fp32", "torch"),
        ("fp32", "onnxruntime"),
        ("int8-dynamic", "onnxruntime"),
        ("int8-static", "onnxruntime"),
        ("pruned-50%", "torch"),
    }
    fp32 = rows[("fp32", "onnxruntime")]
    for key in ("int8-dynamic", "int8-static"):
        row = rows[(key, "onnxruntime")]
        assert row["size_bytes"] < fp32["size_bytes"] / 2  # int8 weights
        assert row["accuracy"] >= fp32["accuracy"] - 0.01  # 1,000 images: 10 at most
        assert row["latency_b1_ms"] > 0 and row["throughput_per_s"] > 0
    pruned = rows[("pruned-50%", "torch")]
    assert pruned["gzip_bytes"] < rows[("fp32", "torch")]["gzip_bytes"] * 0.8
    assert pruned["accuracy"] >= rows[("fp32", "torch")]["accuracy"] - 0.05  # not fine-tuned
    stored = json.loads((result.folder / "compress.json").read_text())
    assert len(stored["rows"]) == 5 and stored["split"] == "test"
    # Every variant is a model folder that predicts like the original.
    reference = load_model(run).logits(test_split.images[:100]).argmax(1)
    for sub in ("fp32", "int8-dynamic", "int8-static", "pruned"):
        model = load_model(result.folder / sub)
        agree = (model.logits(test_split.images[:100]).argmax(1) == reference).mean()
        assert agree >= 0.95, sub
    with pytest.raises(OverwriteError):
        compress_model(run, result.folder)


def test_compress_command(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "c"
    args = ["compress", str(run), "--out", str(out), "--method", "int8-static"]
    result = CliRunner().invoke(app, [*args, "--seconds", "0.05", "--calibration-size", "128"])
    assert result.exit_code == 0, result.output
    assert "int8" in result.output and "variants and compress.json in" in result.output
    assert (out / "int8-static" / "model.onnx").is_file()
    bad = CliRunner().invoke(
        app, ["compress", str(run), "--out", str(tmp_path / "d"), "--method", "fp4"]
    )
    assert bad.exit_code == 1 and "unknown compression method" in bad.output
