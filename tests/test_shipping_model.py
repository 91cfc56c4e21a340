"""Shipped models: what a MODEL may be, hash checks, no pickle, calibration, predictions, and
``mnistlab predict`` on real pictures."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from shipping_support import copy_run, encode, photo, trained_run
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.cli.shipping import compress_table
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.shipping import load_model, preprocess_image
from mnistlab.shipping.compress import compress_model
from mnistlab.shipping.model import DEFAULT_CONFIDENCE_THRESHOLD, find_manifest
from mnistlab.training.engine import load_trained_model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("mnist-mini", "test", download=False)


def test_every_way_to_name_a_model_loads_the_same_weights(run: Path, test_split) -> None:
    model_dir = run / "model"
    paths = [run, model_dir, model_dir / "model.json", model_dir / "model.safetensors"]
    reference, _ = load_trained_model(run)
    expected = None
    for path in paths:
        model = load_model(path)
        assert model.backend == "torch"
        assert model.manifest_path == model_dir / "model.json"
        assert model.class_names == [str(i) for i in range(10)]
        logits = model.logits(test_split.images[:64])
        if expected is None:
            expected = logits
        np.testing.assert_array_equal(logits, expected)
    # The engine's own loader (the format is shared, not a second one) gives the same logits.
    import torch

    x = torch.from_numpy(load_model(run).normalize(test_split.images[:64]))
    with torch.no_grad():
        np.testing.assert_allclose(reference(x).numpy(), expected, atol=1e-6)


def test_accuracy_matches_the_run_report(run: Path, test_split) -> None:
    model = load_model(run)
    predicted = [p.index for p in model.predict(test_split.images)]
    accuracy = float(np.mean(np.asarray(predicted) == test_split.labels))
    report = json.loads((run / "report.json").read_text())
    assert accuracy == pytest.approx(report["test_accuracy"], abs=1e-9)
    assert accuracy > 0.95


def test_prediction_fields(run: Path, test_split) -> None:
    prediction = load_model(run).predict(test_split.images[0])[0]
    data = prediction.to_dict()
    assert set(data) == {"label", "index", "confidence", "top3", "low_confidence"}
    assert data["label"] == str(test_split.labels[0])
    assert data["top3"][0]["label"] == data["label"]
    probs = [t["probability"] for t in data["top3"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
    assert data["confidence"] == probs[0]


def test_changed_weights_are_refused(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    weights = copy / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(MnistlabError, match="SHA-256 differs"):
        load_model(copy)


def test_pickle_and_foreign_files_are_refused(run: Path, tmp_path: Path) -> None:
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(MnistlabError, match="pickle"):
        load_model(evil)
    with pytest.raises(MnistlabError, match="no such file"):
        load_model(tmp_path / "missing")
    with pytest.raises(MnistlabError, match="holds no model"):
        load_model(tmp_path)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(MnistlabError, match="not a model file"):
        load_model(text)


def test_manifest_cannot_point_outside_its_folder(run: Path, tmp_path: Path) -> None:
    copy = copy_run(run, tmp_path / "run")
    manifest = copy / "model" / "model.json"
    data = json.loads(manifest.read_text())
    data["weights"] = "../config.json"
    manifest.write_text(json.dumps(data))
    with pytest.raises(MnistlabError, match="file name in the manifest's folder"):
        load_model(copy)


def test_unknown_model_formats_get_a_clear_message(tmp_path: Path) -> None:
    # (classic runs are shipped now: tests/test_models_that_travel.py)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"format": "mnistlab-model/1", "kind": "logreg"}))
    with pytest.raises(MnistlabError, match="not a model that classifies images") as info:
        load_model(tmp_path)
    assert "classic" in (info.value.hint or "")


def test_weights_file_without_manifest(run: Path, tmp_path: Path) -> None:
    lone = tmp_path / "weights.safetensors"
    shutil.copyfile(run / "model" / "model.safetensors", lone)
    with pytest.raises(MnistlabError, match="no manifest describes"):
        find_manifest(lone)


def test_calibration_json_sets_temperature_and_threshold(run: Path, tmp_path: Path, test_split):
    copy = copy_run(run, tmp_path / "run")
    images = test_split.images[:200]
    plain = load_model(copy)
    assert plain.calibration.temperature == 1.0
    assert plain.calibration.threshold == DEFAULT_CONFIDENCE_THRESHOLD
    base = plain.probabilities(images)
    (copy / "model" / "calibration.json").write_text(
        json.dumps(
            {
                "temperature": 2.0,
                "fitted_on": "mnist-mini/val",
                "ece_before": 0.05,
                "ece_after": 0.01,
                "ood": {"score": "max_softmax", "threshold": 0.99, "note": "test"},
            }
        )
    )
    calibrated = load_model(copy)
    assert calibrated.calibration.temperature == 2.0
    probs = calibrated.probabilities(images)
    logits = calibrated.logits(images).astype(np.float64) / 2.0
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), rtol=1e-9)
    assert (probs.argmax(1) == base.argmax(1)).all()  # tempering never changes the label
    assert probs.max(1).mean() < base.max(1).mean()  # T > 1 softens
    flags = [p.low_confidence for p in calibrated.predict(images)]
    assert flags == list(probs.max(1) < 0.99)
    assert any(flags)
    (copy / "model" / "calibration.json").write_text(json.dumps({"temperature": -1}))
    with pytest.raises(MnistlabError, match="temperature"):
        load_model(copy)


def test_provenance_comes_from_the_run(run: Path) -> None:
    info = load_model(run).info()
    assert info["provenance"]["mnistlab_version"]
    assert "mnist-mini" in info["provenance"]["data_sha256"]
    assert info["metrics"]["test_accuracy"] > 0.95


def test_predict_command_on_photos(run: Path, tmp_path: Path, test_split) -> None:
    rng = np.random.default_rng(1)
    files = []
    for i in range(4):
        path = tmp_path / f"digit{i}.jpg"
        path.write_bytes(photo(test_split.images[i], rng))
        files.append(str(path))
    light = tmp_path / "light.png"  # light ink on dark, small, as a PNG
    light.write_bytes(encode(test_split.images[4]))
    files.append(str(light))
    out = tmp_path / "seen"
    result = CliRunner().invoke(
        app, ["predict", str(run), *files, "--json", "--save-input", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["label"] for r in rows] == [str(v) for v in test_split.labels[:5]]
    assert all({"confidence", "top3", "low_confidence"} <= set(r) for r in rows)
    assert len(list(out.glob("*.28x28.png"))) == 5
    again = CliRunner().invoke(app, ["predict", str(run), files[0], "--save-input", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    table = CliRunner().invoke(app, ["predict", str(run), files[0]])
    assert table.exit_code == 0 and str(test_split.labels[0]) in table.output
    # the model left out: the first argument is a picture, the shipped digit model reads
    shipped = CliRunner().invoke(app, ["predict", *files, "--json"])
    assert shipped.exit_code == 0, shipped.output
    rows = [json.loads(line) for line in shipped.output.splitlines()]
    assert [r["label"] for r in rows] == [str(v) for v in test_split.labels[:5]]
    expected = load_model("pretrained:handwriting").predict(preprocess_image(light.read_bytes()))
    assert rows[-1]["top3"] == expected[0].to_dict()["top3"]


def test_predict_command_reports_bad_files(run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    result = CliRunner().invoke(app, ["predict", str(run), str(bad), "--json"])
    assert result.exit_code == 1
    assert "not an image" in json.loads(result.output.splitlines()[0])["error"]
    missing = CliRunner().invoke(app, ["predict", str(tmp_path / "nothing"), str(bad)])
    assert missing.exit_code == 1 and "no such file" in missing.output


def squash(text: str) -> str:
    """``text`` without any whitespace: compares messages whatever the terminal's width (rich
    wraps lines, and may break a long path, at the console's width)."""
    return "".join(text.split())


def test_predict_command_names_the_path_and_hints_on_unreadable_files(
    run: Path, tmp_path: Path, test_split, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing file, a folder, a file that cannot be read, bytes that are no picture: each
    message names the path and says what to do; the good picture is still classified."""
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.png"
    good.write_bytes(encode(255 - test_split.images[0]))
    folder = tmp_path / "scans"
    folder.mkdir()
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    missing = tmp_path / "no-such-digit.png"
    relative = Path("typo", "seven.jpg")
    cases = {
        str(missing): (f"{missing}: no such file", ["check the path", "PNG, JPEG"]),
        str(relative): (
            f"{relative}: no such file",
            [f"check the path (relative to {Path.cwd()})", "PNG, JPEG"],
        ),
        str(good / "x.png"): (f"{good / 'x.png'}: no such file", ["check the path"]),
        str(folder): (f"{folder} is a folder, not a picture", [f"{folder / '*.png'}"]),
        str(text): (f"{text}: the data is not an image mnistlab can read", ["PNG"]),
    }
    if Path("/proc/self/mem").exists():  # a file that exists and that nobody can read()
        cases["/proc/self/mem"] = ("cannot read /proc/self/mem:", ["readable picture file"])
    locked = tmp_path / "locked.png"
    locked.write_bytes(good.read_bytes())
    locked.chmod(0)
    try:
        locked.read_bytes()  # root (as in many containers) reads it anyway
    except PermissionError:
        cases[str(locked)] = (f"cannot read {locked}: permission denied", ["permissions"])
    try:
        paths = [str(good), *cases]
        result = CliRunner().invoke(app, ["predict", str(run), *paths])
        assert result.exit_code == 1, result.output
        output = squash(result.output)
        for message, hints in cases.values():
            assert squash(f"error: {message}") in output, (message, result.output)
            for hint in hints:
                assert squash(hint) in output, (hint, result.output)
        assert "Nosuchfileordirectory" not in output
        assert squash(str(test_split.labels[0])) in output and "good.png" in output
        # --json: one line per file, in order, with the same message and hint.
        lines = CliRunner().invoke(app, ["predict", str(run), *paths, "--json"]).output
        rows = [json.loads(line) for line in lines.splitlines()]
        assert [r["file"] for r in rows] == paths
        assert rows[0]["label"] == str(test_split.labels[0])
        for row, (message, hints) in zip(rows[1:], cases.values(), strict=True):
            assert row["error"].startswith(message), row
            assert all(hint in row["hint"] for hint in hints), row
    finally:
        os.chmod(locked, 0o600)


def test_compress_table_fits_80_columns(run: Path, tmp_path: Path) -> None:
    """Every value of every variant is printed whole at 80 columns (no "…"), for the real
    measurements and for ones far larger (a big model on a slow machine)."""
    result = compress_model(
        run, tmp_path / "compressed", finetune_epochs=0, calibration_size=256, seconds=0.02
    )
    big = [
        {
            **row,
            "size_bytes": row["size_bytes"] * 100,
            "gzip_bytes": row["gzip_bytes"] * 100,
            "latency_b1_ms": row["latency_b1_ms"] * 1000,
            "throughput_per_s": row["throughput_per_s"] * 10,
            "accuracy": row["accuracy"] / 8,
        }
        for row in result.rows
    ]
    for rows in (result.rows, big):
        console = Console(width=80, record=True, color_system=None)
        console.print(compress_table(rows, 1))
        text = console.export_text()
        assert "…" not in text and "..." not in text, text
        lines = text.splitlines()
        assert max(len(line.rstrip()) for line in lines) <= 80
        for row in rows:
            words = [row["variant"], row["backend"], f"{row['accuracy']:.4f}"]
            words.append(f"{row['throughput_per_s']:,.0f}")
            words.append(f"{row['latency_b1_ms']:.3f}")
            assert any(
                line.split()[:2] == words[:2] and set(words) <= set(line.split())
                for line in lines
                if line.strip()
            ), (words, text)
        assert {r["variant"] for r in rows} == {"fp32", "int8-dynamic", "int8-static", "pruned-50%"}


def test_preprocess_then_predict_in_the_library(run: Path, test_split) -> None:
    rng = np.random.default_rng(2)
    model = load_model(run)
    pictures = np.stack([preprocess_image(photo(x, rng)) for x in test_split.images[:40]])
    predicted = np.asarray([p.index for p in model.predict(pictures)])
    assert (predicted == test_split.labels[:40]).mean() >= 0.9
