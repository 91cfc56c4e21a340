"""Models that travel: a run as a Hugging Face-style folder (read back through the one
model-file reader), a LoRA adapter in PEFT's layout (loaded by PEFT itself), and classic
runs exported to ONNX with skl2onnx, predicted and served, checked against scikit-learn.
Real components on tiny runs (mnist-mini, one CPU thread)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from shipping_support import copy_run, encode, trained_run
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.evaluation import evaluate_run
from mnistlab.models.estimator_files import load_estimator
from mnistlab.models.inference import load_predictor, predict_scores
from mnistlab.pretraining import FinetuneConfig, PretrainConfig, finetune, pretrain
from mnistlab.shipping import load_model
from mnistlab.shipping.classic import PROBABILITY_TOLERANCE, SAME_LABELS
from mnistlab.shipping.hf import export_hf, export_peft
from mnistlab.shipping.onnx import export_onnx
from mnistlab.shipping.serve import ServeConfig, create_app
from mnistlab.training.classic import train_classic

TINY = {"preset": "tiny", "patch_size": 7, "num_threads": 1, "seed": 0}
QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("mnist-mini", "test")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def vit_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vit")
    images = load_dataset("mnist-mini", "train").images[:512]
    config = PretrainConfig(objective="mae", dataset="mnist-mini", epochs=1, batch_size=64, **TINY)
    pretrain(config, out=root / "mae", data=_NoLabels(images), progress=False)
    settings = {"dataset": "mnist-mini", "labels": 100, "steps": 10, "batch_size": 32,
                "eval_every": 10, "patch_size": 7, "preset": "tiny", "num_threads": 1}  # fmt: skip
    runs = {}
    for mode, extra in (("full", {}), ("lora", {"lora_rank": 2})):
        ft = FinetuneConfig(pretrained=str(root / "mae"), mode=mode, **settings, **extra)
        runs[mode] = finetune(ft, out=root / mode, progress=False).run_dir
    return runs


@pytest.fixture(scope="module")
def classic_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classic")
    params = {"logreg": {}, "rf": {"clf__n_estimators": 40}, "svm": {"pca__n_components": 20}}
    runs = {}
    for model, p in params.items():
        runs[model] = train_classic(
            model, dataset="mnist-mini", out=root / model, params=p, **QUIET
        )
    return {model: result.run_dir for model, result in runs.items()}


class _NoLabels:
    def __init__(self, images: np.ndarray) -> None:
        self.images = images


# ------------------------------------------------------------------ Hugging Face-style folders


def test_hf_export_round_trip_gives_identical_probabilities(
    cnn_run: Path, tmp_path: Path, test_split
) -> None:
    run = copy_run(cnn_run, tmp_path / "run")
    exported = export_hf(run)
    folder = run / "hf"
    assert exported.folder == folder
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    original = load_model(run).probabilities(test_split.images)
    travelled = load_model(folder).probabilities(test_split.images)
    assert np.array_equal(original, travelled)  # the same bytes, the same reader
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "mnistlab" and config["architectures"] == ["fast-cnn"]
    assert config["num_labels"] == 10 and config["id2label"]["3"] == "3"
    assert config["format"] == "mnistlab-torch-model/1" and config["mnistlab"]["export"]
    assert (
        config["normalization"]
        == json.loads((run / "model" / "model.json").read_text())["normalization"]
    )
    # The card: front matter, the measured accuracy, one run, the limits.
    accuracy = json.loads((run / "metrics.json").read_text())["test_accuracy"]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: mnistlab\n")
    assert 'datasets:\n- "mnist-mini"' in card and "metrics:\n- accuracy" in card
    assert f"value: {accuracy:.4f}" in card and f"**{accuracy:.4f}**" in card
    assert "one run" in card and "whole numbers" in card and "train 5,000" in card
    # evaluate takes the folder (through the same reader) and measures the same accuracy.
    assert evaluate_run(folder)["test_accuracy"] == pytest.approx(accuracy)
    # served: the API answers with the run's prediction
    client = TestClient(create_app(folder, ServeConfig(max_batch=8)))
    answer = client.post("/v1/predict", json={"image": test_split.images[0].tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == str(original[0].argmax())
    # The weights file alone, with config.json beside it, is a model too.
    again = load_model(folder / "model.safetensors").probabilities(test_split.images[:8])
    assert np.array_equal(again, original[:8])


def test_hf_export_refuses_to_overwrite_and_replaces_atomically(
    cnn_run: Path, tmp_path: Path
) -> None:
    run = copy_run(cnn_run, tmp_path / "run")
    out = tmp_path / "out"
    export_hf(run, out)
    before = (out / "config.json").read_bytes()
    with pytest.raises(OverwriteError, match="not empty"):
        export_hf(run, out)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OverwriteError, match="not empty"):
        export_hf(run, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(MnistlabError, match="holds the model being exported"):
        export_hf(run, run, overwrite=True)
    assert (run / "model" / "model.json").is_file()
    export_hf(run, out, overwrite=True)
    assert (out / "config.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "out", "run"]  # no leftovers
    (tmp_path / "empty").mkdir()
    export_hf(run, tmp_path / "empty")  # an empty folder is not overwritten, just used
    assert (tmp_path / "empty" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.update(weights="../run/model/model.safetensors"), "file name"),
        (lambda c: c.update(format="pickle-model/1"), "format 'pickle-model/1'"),
        (lambda c: c.update(num_classes=-5), "num_classes"),
        (lambda c: c.update(normalization={"mean": 0.1, "std": 0}), "normalization"),
        (lambda c: c.update(architecture="os.system"), "architecture"),
        (lambda c: c.update(weights_sha256="0" * 64), "SHA-256"),
        (lambda c: c.update(class_names=["x"] * 2_000), "classes"),
    ],
)
def test_hostile_hf_config_is_refused_by_the_reader(
    cnn_run: Path, tmp_path: Path, change, message: str
) -> None:
    folder = tmp_path / "hf"
    export_hf(cnn_run, folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MnistlabError, match=message):
        load_model(folder)
    picture = tmp_path / "digit.png"
    picture.write_bytes(encode(load_dataset("mnist-mini", "test").images[0]))
    result = CliRunner().invoke(app, ["predict", str(folder), str(picture)])
    assert result.exit_code == 1 and "error:" in result.output
    assert "Traceback" not in result.output


def test_hf_config_that_is_no_object_or_too_large_is_refused(cnn_run: Path, tmp_path: Path):
    folder = tmp_path / "hf"
    export_hf(cnn_run, folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(MnistlabError, match="JSON object"):
        load_model(folder)
    (folder / "config.json").write_text(json.dumps({"pad": "x" * (2 << 20)}))
    with pytest.raises(MnistlabError, match="refused unread"):
        load_predictor(folder)


def test_hf_export_of_transformer_runs(vit_runs: dict[str, Path], test_split) -> None:
    for mode, run in vit_runs.items():
        exported = export_hf(run)
        config = json.loads((exported.folder / "config.json").read_text())
        assert config["model_type"] == "mnistlab-vit" and config["kind"] == "finetune"
        reference = load_model(run).probabilities(test_split.images)  # the run, served
        travelled = load_model(exported.folder).probabilities(test_split.images)
        # full: the same weights; LoRA: merged into them, W + (alpha / r) B A
        assert np.abs(reference - travelled).max() < (1e-12 if mode == "full" else 1e-5)
        assert (reference.argmax(1) == travelled.argmax(1)).all()
        # as `mnistlab evaluate` scores the run (its softmax in float32)
        scored = load_predictor(run).predict_proba(test_split.images)
        assert np.abs(scored - travelled).max() < 1e-5
    with pytest.raises(MnistlabError, match="--format hf"):
        export_onnx(vit_runs["full"])
    # a transformer's config.json that does not describe its weights: refused before building
    folder = vit_runs["full"] / "hf"
    config = json.loads((folder / "config.json").read_text())
    for change, message in (
        ({"transformer": {**config["transformer"], "dim": 128}}, "differ from what"),
        ({"transformer": {**config["transformer"], "dim": 10**9}}, "invalid model manifest"),
        ({"transformer": {"depth": "many"}}, "'transformer'"),
        ({"num_classes": -5}, "num_classes"),
    ):
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(MnistlabError, match=message):
            load_model(folder)


# ------------------------------------------------------------------------- PEFT's layout


def test_peft_layout_loads_with_peft(vit_runs: dict[str, Path], test_split) -> None:
    from peft import LoraConfig, PeftModel
    from peft.utils import load_peft_weights

    from mnistlab.models.transformer import Classifier, TransformerConfig
    from mnistlab.models.vit_files import pretrained_encoder

    run = vit_runs["lora"]
    folder = export_peft(run).folder
    assert folder == run / "peft"
    adapter = json.loads((run / "adapter" / "adapter.json").read_text())
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 16.0
    assert config["target_modules"] == adapter["layers"]
    assert config["modules_to_save"] == ["head"]
    with safe_open(folder / "adapter_model.safetensors", "pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    dim = adapter["transformer"]["dim"]
    qkv = "base_model.model.encoder.transformer.blocks.0.attn.qkv"
    assert shapes[f"{qkv}.lora_A.weight"] == (2, dim)
    assert shapes[f"{qkv}.lora_B.weight"] == (3 * dim, 2)
    assert shapes["base_model.model.head.weight"] == (10, dim)
    assert len(shapes) == 2 * len(adapter["layers"]) + 2
    # PEFT's own loaders read it, and PEFT on the base model predicts as the run does.
    assert LoraConfig.from_pretrained(str(folder)).r == 2
    assert set(load_peft_weights(str(folder))) == set(shapes)
    tc = TransformerConfig.from_dict(adapter["transformer"])
    base = Classifier(tc, adapter["num_classes"])
    base.encoder.load_state_dict(pretrained_encoder(adapter["base_model"], tc)[1])
    peft_model = PeftModel.from_pretrained(base, str(folder)).eval()
    with torch.no_grad():
        x = torch.from_numpy(test_split.images[:, None]).float() / 255
        by_peft = torch.softmax(peft_model(x), 1).double().numpy()
    reference = load_predictor(run).predict_proba(test_split.images)
    assert np.abs(by_peft - reference).max() < 1e-6
    card = (folder / "README.md").read_text()
    assert '- "peft"' in card and "base_model:" in card
    with pytest.raises(MnistlabError, match="not a LoRA adapter"):
        export_peft(vit_runs["full"])


# --------------------------------------------------------------------- classic runs, ONNX


@pytest.mark.parametrize("model", ["logreg", "rf"])
def test_classic_onnx_agrees_with_scikit_learn(
    classic_runs: dict[str, Path], test_split, model: str
) -> None:
    run = classic_runs[model]
    result = export_onnx(run, overwrite=True)
    v = result.verification
    assert v["passed"] and v["images"] == 1000
    assert v["max_abs_diff"] <= PROBABILITY_TOLERANCE and v["label_agreement"] >= SAME_LABELS
    estimator = load_estimator(run)
    reference = predict_scores(estimator, test_split.images)
    onnx_model = load_model(result.folder)
    skops_model = load_model(run)
    assert onnx_model.backend == "onnxruntime" and skops_model.backend == "scikit-learn"
    by_onnx = onnx_model.probabilities(test_split.images)
    assert np.abs(by_onnx - reference).max() <= PROBABILITY_TOLERANCE
    predicted = estimator.predict(test_split.images).astype(int)
    assert (by_onnx.argmax(1) == predicted).mean() >= 0.99  # strictly the same label
    # and where not, a tie in scikit-learn's own probabilities (RF: equal votes)
    rows = np.arange(len(predicted))
    tied = reference[rows, by_onnx.argmax(1)] == reference[rows, predicted]
    assert ((by_onnx.argmax(1) == predicted) | tied).mean() >= SAME_LABELS
    # scikit-learn's float32 probabilities, renormalized in float64 by the shipped model
    by_skops = skops_model.probabilities(test_split.images)
    assert np.abs(by_skops - reference).max() < 1e-6
    assert np.array_equal(by_skops.argmax(1), reference.argmax(1))
    manifest = json.loads((result.folder / "model.json").read_text())
    assert manifest["format"] == "mnistlab-sklearn-onnx/1" and manifest["verification"]["passed"]
    # served: the API answers as scikit-learn does
    client = TestClient(create_app(result.folder, ServeConfig(max_batch=8)))
    answer = client.post("/v1/predict", json={"image": test_split.images[0].tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == str(reference[0].argmax())
    assert client.get("/v1/models").status_code == 200
    skops_client = TestClient(create_app(run, ServeConfig(max_batch=8)))
    answer = skops_client.post("/v1/predict", json={"image": test_split.images[1].tolist()})
    assert answer.status_code == 200 and answer.json()["label"] == str(reference[1].argmax())


def test_classic_models_that_do_not_convert_are_refused(classic_runs: dict[str, Path]) -> None:
    with pytest.raises(MnistlabError, match=r"logreg .* and rf") as caught:
        export_onnx(classic_runs["svm"])
    assert "Deskewer" in str(caught.value) and "Deskewer" in (caught.value.hint or "")
    assert not (classic_runs["svm"] / "model" / "onnx").exists()
    with pytest.raises(MnistlabError, match="ONNX instead"):
        export_hf(classic_runs["logreg"])


# ----------------------------------------------------------------------------- the commands


def test_export_commands(
    cnn_run: Path, classic_runs: dict[str, Path], vit_runs: dict[str, Path], tmp_path: Path
) -> None:
    runner = CliRunner()
    run = copy_run(cnn_run, tmp_path / "run")
    done = runner.invoke(app, ["export", str(run), "--format", "hf"])
    assert done.exit_code == 0, done.output
    assert "model card: test accuracy 0.9" in done.output and (run / "hf" / "README.md").is_file()
    again = runner.invoke(app, ["export", str(run), "--format", "hf"])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(app, ["export", str(run), "-f", "hf", "--overwrite"]).exit_code == 0
    peft = runner.invoke(app, ["export", str(run), "--format", "peft"])
    assert peft.exit_code == 1 and "LoRA adapter" in peft.output
    lora = runner.invoke(app, ["export", str(vit_runs["lora"]), "-f", "peft", "--out",
                               str(tmp_path / "adapter")])  # fmt: skip
    assert lora.exit_code == 0, lora.output
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    classic = copy_run(classic_runs["logreg"], tmp_path / "logreg")
    onnx = runner.invoke(app, ["export", str(classic), "--out", str(tmp_path / "classic")])
    assert onnx.exit_code == 0, onnx.output
    assert "same label on 100.00%" in onnx.output
    svm = runner.invoke(app, ["export", str(classic_runs["svm"])])
    assert svm.exit_code == 1 and "logreg" in svm.output and "Traceback" not in svm.output
    picture = tmp_path / "digit.png"
    test = load_dataset("mnist-mini", "test")
    picture.write_bytes(encode(test.images[0]))
    labels = []
    for model in (classic, tmp_path / "classic", run / "hf"):
        shown = runner.invoke(app, ["predict", str(model), str(picture), "--json"])
        assert shown.exit_code == 0, shown.output
        labels.append(json.loads(shown.output.splitlines()[0])["label"])
    assert labels[0] == labels[1] and labels[2] == str(test.labels[0])
    shutil.rmtree(run / "hf")
