"""Pretraining, fine-tuning and generation runs on tiny configs (real mnist-mini images, one
CPU thread): labels are never read by pretraining, resume is exact, every fine-tuning mode
(full, probe, LoRA + merge, few labels, semi-supervised, transfer, scratch) writes its run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models.inference import resolve_precision
from mnistlab.models.inference import vit_predict_proba as predict_proba
from mnistlab.pretraining import (
    FinetuneConfig,
    PretrainConfig,
    finetune,
    generate_digits,
    load_classifier,
    load_pretrained,
    merge_adapter,
    pretrain,
)
from mnistlab.pretraining.finetune import label_subset
from mnistlab.training import evaluate_run

TINY = {"preset": "tiny", "patch_size": 7, "num_threads": 1, "seed": 0}


class NoLabels:
    """A training split whose labels raise when read: pretraining must not touch them."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    @property
    def labels(self) -> np.ndarray:
        raise AssertionError("pretraining read the labels")


@pytest.fixture(scope="module")
def mini() -> np.ndarray:
    return load_dataset("mnist-mini", "train").images[:512]


@pytest.fixture(scope="module")
def mae_run(tmp_path_factory: pytest.TempPathFactory, mini: np.ndarray) -> Path:
    out = tmp_path_factory.mktemp("mae") / "run"
    config = PretrainConfig(objective="mae", dataset="mnist-mini", epochs=2, batch_size=64, **TINY)
    result = pretrain(config, out=out, data=NoLabels(mini), progress=False)
    assert result.finished
    return out


def test_mae_pretraining_writes_its_run_without_labels(mae_run: Path) -> None:
    for name in (
        "config.json",
        "environment.json",
        "metrics.jsonl",
        "report.html",
        "report.json",
        "reconstructions.png",
        "pretraining_curves.png",
        "model/model.safetensors",
    ):
        assert (mae_run / name).is_file(), name
    lines = (mae_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    saved = json.loads((mae_run / "config.json").read_text())  # what it computed in, recorded
    assert saved["precision_used"] == resolve_precision(torch.device("cpu"), saved["precision"])
    assert PretrainConfig.from_run(mae_run, {}).precision == saved["precision"]  # replays
    _, meta, codebook = load_pretrained(mae_run)
    assert meta["objective"] == "mae" and codebook is None
    assert json.loads((mae_run / "report.json").read_text())["parameters"] == meta["parameters"]


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path, mini: np.ndarray) -> None:
    config = PretrainConfig(
        objective="mae", dataset="mnist-mini", epochs=2, batch_size=128, max_images=256, **TINY
    )
    pretrain(config, out=tmp_path / "a", data=NoLabels(mini), progress=False)
    first = pretrain(config, out=tmp_path / "b", data=NoLabels(mini), max_rounds=1, progress=False)
    assert not first.finished and not (tmp_path / "b" / "model").exists()
    resumed = pretrain(resume=tmp_path / "b", data=NoLabels(mini), progress=False)
    assert resumed.finished and resumed.history[0] == first.history[0]
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gpt_unconditional_never_reads_labels_and_conditional_generates(
    tmp_path: Path, mini: np.ndarray
) -> None:
    base = {
        "objective": "gpt",
        "dataset": "mnist-mini",
        "epochs": 1,
        "batch_size": 64,
        "codebook_size": 16,
        **TINY,
    }
    pretrain(PretrainConfig(**base), out=tmp_path / "u", data=NoLabels(mini), progress=False)
    assert (tmp_path / "u" / "samples.png").is_file()
    with pytest.raises(MnistlabError, match="without digit prefixes"):
        generate_digits(tmp_path / "u", [3], n=2)
    cond = PretrainConfig(**{**base, "conditional": True, "max_images": 256})
    pretrain(cond, out=tmp_path / "c", progress=False)
    generated = generate_digits(tmp_path / "c", [1, 7], n=3, seed=1)
    assert generated.images.shape == (6, 28, 28) and generated.images.dtype == np.uint8
    assert generated.digits.tolist() == [1, 1, 1, 7, 7, 7]
    again = generate_digits(tmp_path / "c", [1, 7], n=3, seed=1)
    assert np.array_equal(generated.images, again.images)


def test_label_subset_is_stratified_and_seeded() -> None:
    labels = load_dataset("mnist-mini", "train").labels
    idx = label_subset(labels, 100, seed=3)
    assert len(idx) == 100 and np.bincount(labels[idx], minlength=10).tolist() == [10] * 10
    assert np.array_equal(idx, label_subset(labels, 100, seed=3))
    assert not np.array_equal(idx, label_subset(labels, 100, seed=4))
    assert len(label_subset(labels, 0, 0)) == len(labels)


def _ft(mae_run: Path | None, tmp: Path, name: str, **kw) -> object:
    settings = {"dataset": "mnist-mini", "labels": 100, "steps": 10, "batch_size": 32,
                "eval_every": 10, "patch_size": 7, "preset": "tiny", "num_threads": 1}  # fmt: skip
    config = FinetuneConfig(pretrained=str(mae_run) if mae_run else None, **{**settings, **kw})
    return finetune(config, out=tmp / name, progress=False, misclassified=4)


def test_full_probe_and_scratch(mae_run: Path, tmp_path: Path) -> None:
    full = _ft(mae_run, tmp_path, "full", mode="full")
    assert full.trainable_parameters == full.total_parameters
    # A linear probe on a 2-epoch tiny MAE learns slowly: 50 steps (features computed once).
    probe = _ft(mae_run, tmp_path, "probe", mode="probe", lr=0.01, steps=50, eval_every=50)
    assert probe.trainable_parameters == 64 * 10 + 10  # the linear head only
    scratch = _ft(None, tmp_path, "scratch", mode="full")
    for r in (full, probe, scratch):
        assert 0.1 < r.test_accuracy <= 1  # learned something in 10-50 steps on 100 labels
        report = json.loads((r.run_dir / "report.json").read_text())
        assert report["num_labeled"] == 100 and report["num_test"] == 1000
        model, _ = load_classifier(r.run_dir)
        probs = predict_proba(model, load_dataset("mnist-mini", "test").images)
        assert float((probs.argmax(1) == load_dataset("mnist-mini", "test").labels).mean()) == (
            pytest.approx(r.test_accuracy)
        )
    # The probe kept the pretrained encoder; full fine-tuning changed it.
    pre = load_pretrained(mae_run)[0].encoder.state_dict()
    probe_enc = load_classifier(probe.run_dir)[0].encoder.state_dict()
    full_enc = load_classifier(full.run_dir)[0].encoder.state_dict()
    assert all(torch.equal(pre[k], probe_enc[k]) for k in pre)
    assert not all(torch.equal(pre[k], full_enc[k]) for k in pre)
    with pytest.raises(MnistlabError, match="needs a pretrained model"):
        FinetuneConfig(mode="lora")
    # `mnistlab evaluate` reloads the classifier and gets the same accuracy, keeping what the
    # training had (the probe trained only its head).
    (probe.run_dir / "report.json").unlink(missing_ok=False)
    first = json.loads((full.run_dir / "report.json").read_text())
    again = evaluate_run(full.run_dir)
    assert again["test_accuracy"] == pytest.approx(full.test_accuracy)
    assert again["evaluated_again"] and again["trainable_parameters"] == first["total_parameters"]
    assert "Training curves" in (full.run_dir / "report.html").read_text()
    saved = json.loads((full.run_dir / "config.json").read_text())
    assert saved["precision_used"] == resolve_precision(torch.device("cpu"), saved["precision"])
    assert FinetuneConfig.from_run(full.run_dir, {}).mode == "full"  # replays
    assert evaluate_run(probe.run_dir)["test_accuracy"] == pytest.approx(probe.test_accuracy)


def test_lora_semi_supervised_and_merge(mae_run: Path, tmp_path: Path) -> None:
    run = _ft(
        mae_run, tmp_path, "lora", mode="lora", lora_rank=2, semi_steps=10, semi_threshold=0.3
    )
    assert (run.run_dir / "adapter" / "adapter.safetensors").is_file()
    assert not (run.run_dir / "model").exists()
    assert run.adapter_bytes < 4 * run.total_parameters / 3
    last = run.history[-1]
    assert "train_kept" in last and "train_unlabeled_loss" in last  # the semi-supervised stage ran
    test = load_dataset("mnist-mini", "test")
    unmerged, _ = load_classifier(run.run_dir)
    folder, diff = merge_adapter(run.run_dir, check_images=test.images[:64])
    assert diff < 1e-4
    merged, meta = load_classifier(folder.parent)
    assert meta["merged_from"].endswith("lora")
    a, b = predict_proba(unmerged, test.images), predict_proba(merged, test.images)
    assert np.abs(a - b).max() < 1e-5 and (a.argmax(1) == b.argmax(1)).all()
    assert float((b.argmax(1) == test.labels).mean()) == pytest.approx(run.test_accuracy)
    with pytest.raises(MnistlabError, match="exists"):
        merge_adapter(run.run_dir)
    again = evaluate_run(run.run_dir)  # base model + adapter, unmerged
    assert again["test_accuracy"] == pytest.approx(run.test_accuracy)
    assert again["adapter_bytes"] == run.adapter_bytes


def test_external_encoder_weights_from_a_local_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from mnistlab.models.transformer import Classifier, get_preset

    torch.manual_seed(5)
    arch = get_preset("tiny")
    encoder = Classifier(type(arch)(**{**arch.to_dict(), "patch_size": 7})).encoder
    save_file(
        {f"encoder.{k}": v for k, v in encoder.state_dict().items()}, tmp_path / "vit.safetensors"
    )
    run = _ft(tmp_path / "vit.safetensors", tmp_path, "ext", mode="lora")
    _, meta = load_classifier(run.run_dir)
    assert meta["base_model"].endswith("vit.safetensors")
    _, diff = merge_adapter(run.run_dir)
    assert diff < 1e-4
    with pytest.raises(MnistlabError, match="do not fit"):
        finetune(
            FinetuneConfig(pretrained=str(tmp_path / "vit.safetensors"), dataset="mnist-mini",
                           preset="tiny", patch_size=4, labels=50, steps=1),
            out=tmp_path / "bad", progress=False,
        )  # fmt: skip


def test_transfer_from_fashion_mnist(mnist_home: Path, tmp_path: Path) -> None:
    fashion = load_dataset("fashion-mnist", "train", home=mnist_home)
    config = PretrainConfig(
        objective="mae", dataset="fashion-mnist", epochs=1, batch_size=64, max_images=256, **TINY
    )
    pretrain(
        config, out=tmp_path / "pre", data=NoLabels(fashion.images), home=mnist_home, progress=False
    )
    run = _ft(tmp_path / "pre", tmp_path, "transfer", mode="full")
    saved = json.loads((run.run_dir / "config.json").read_text())
    assert saved["dataset"] == "mnist-mini" and saved["pretrained"].endswith("pre")
    assert run.test_accuracy > 0.1


def test_cli_pretrain_finetune_merge_generate(mae_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["--preset", "tiny", "--patch-size", "7", "--threads", "1", "-d", "mnist-mini"]

    def ok(*args: str | Path) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    gpt, ft, png = tmp_path / "gpt", tmp_path / "ft", tmp_path / "g.png"
    pre = "pretrain --objective gpt --conditional --epochs 1 --max-images 128 --codebook-size 16"
    ok(*pre.split(), "--out", gpt, *common)
    tune = "finetune --mode lora --labels 50 --steps 10 --eval-every 10"
    ok(*tune.split(), "--from", mae_run, "--out", ft, *common)
    assert "merged model" in ok("merge", ft)
    assert "accuracy" in ok("evaluate", ft).lower()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((ft / "config.json").read_text())
    bad = runner.invoke(app, ["evaluate", str(unfinished)])
    assert bad.exit_code == 1 and "did not finish" in " ".join(bad.output.split())
    out = ok("generate", "--from", gpt, "--digit", "7", "-n", "4", "--out", png,
             "--classifier", ft / "merged")  # fmt: skip
    assert png.is_file() and "digit 7: classifier agrees" in out
    bad = runner.invoke(app, ["finetune", "--mode", "probe", "-d", "mnist-mini"])
    assert bad.exit_code == 1 and "needs a pretrained model" in " ".join(bad.output.split())
    bad = runner.invoke(app, ["generate", "--from", str(mae_run), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "generation needs a GPT run" in " ".join(bad.output.split())
