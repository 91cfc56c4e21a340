"""Self-training (a few-label teacher's pseudo-labels train a CNN student) and distribution
alignment of the semi-supervised stage, on tiny configs over real mnist-mini images."""

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
from mnistlab.models.inference import vit_predict_proba as predict_proba
from mnistlab.models.vit_files import load_classifier
from mnistlab.pretraining import FinetuneConfig, finetune, pseudo_label, self_train
from mnistlab.pretraining.finetune import (
    align_distribution,
    alignment_factors,
    label_subset,
)
from mnistlab.training import evaluate_run
from mnistlab.training.engine import train_model
from mnistlab.training.recipes import get_deep_recipe

TEACHER = {
    "dataset": "mnist-mini",
    "labels": 100,
    "preset": "tiny",
    "patch_size": 7,
    "steps": 20,
    "batch_size": 32,
    "eval_every": 10,
    "num_threads": 1,
    "seed": 2,
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "ft"
    finetune(FinetuneConfig(**TEACHER), out=out, progress=False, misclassified=4)
    return out


def _student(epochs: int = 1) -> object:
    return get_deep_recipe("fast-cnn", dataset="mnist-mini", epochs=epochs, num_threads=1)


def test_alignment_moves_torn_images_to_the_under_predicted_class() -> None:
    target = torch.full((3,), 1 / 3)
    mean = torch.tensor([0.2, 0.2, 0.6])  # class 2 absorbs images of the others
    factors = alignment_factors(target, mean)
    assert torch.allclose(factors, torch.tensor([5 / 3, 5 / 3, 5 / 9]))
    probs = torch.tensor([[0.35, 0.05, 0.60], [0.01, 0.01, 0.98], [0.5, 0.3, 0.2]])
    aligned = align_distribution(probs, factors)
    assert torch.allclose(aligned.sum(1), torch.ones(3))
    assert aligned.argmax(1).tolist() == [0, 2, 0]  # the torn row flips, the confident one stays
    assert aligned[1, 2] > 0.9
    # A model whose predictions already match the target is left alone.
    same = align_distribution(probs, alignment_factors(target, target))
    assert torch.allclose(same, probs)


def test_aligned_semi_supervised_stage_resumes_exactly(tmp_path: Path) -> None:
    semi = {"steps": 30, "semi_steps": 20, "semi_threshold": 0.2}
    config = FinetuneConfig(**{**TEACHER, **semi, "semi_align": True})
    whole = finetune(config, out=tmp_path / "a", progress=False, misclassified=4)
    assert whole.history[-1]["train_kept"] > 0
    part = finetune(config, out=tmp_path / "b", progress=False, max_rounds=4)
    assert np.isnan(part.test_accuracy)
    resumed = finetune(None, resume=tmp_path / "b", progress=False, misclassified=4)
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_accuracy == whole.test_accuracy
    finetune(
        FinetuneConfig(**{**TEACHER, **semi}),
        out=tmp_path / "c",
        progress=False,
        misclassified=4,
    )
    c = load_file(tmp_path / "c" / "model" / "model.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)  # alignment changed the training


def test_pseudo_labels_keep_the_true_labels_and_the_teachers_predictions(teacher: Path) -> None:
    train = load_dataset("mnist-mini", "train")
    labeled = label_subset(train.labels, 100, seed=2)
    model, _ = load_classifier(teacher)
    probs = predict_proba(model, train.images)
    everything = pseudo_label(teacher)
    assert (everything.num_labeled, everything.num_pseudo, everything.num_dropped) == (
        100,
        len(train) - 100,
        0,
    )
    split = everything.split
    assert np.array_equal(split.images, train.images)  # the training split, in its order
    expected = probs.argmax(1)
    expected[labeled] = train.labels[labeled]
    assert np.array_equal(split.labels, expected)
    unlabeled = np.setdiff1d(np.arange(len(train)), labeled)
    agreement = float((probs.argmax(1)[unlabeled] == train.labels[unlabeled]).mean())
    assert everything.pseudo_label_accuracy == pytest.approx(agreement)

    confident = pseudo_label(teacher, threshold=0.6)
    kept = unlabeled[probs[unlabeled].max(1) >= 0.6]
    assert confident.num_pseudo == len(kept) and confident.num_dropped == len(unlabeled) - len(kept)
    assert len(confident.split) == 100 + len(kept) < len(train)
    assert np.array_equal(confident.split.images, train.images[np.sort(np.r_[labeled, kept])])
    with pytest.raises(MnistlabError, match=r"threshold must be in \[0, 1\)"):
        pseudo_label(teacher, threshold=1.0)


def test_self_training_writes_a_student_run_that_is_an_ordinary_model(
    teacher: Path, tmp_path: Path
) -> None:
    result = self_train(teacher, _student(2), out=tmp_path / "student", progress=False)
    config = json.loads((result.run_dir / "config.json").read_text())
    data = config["train_data"]
    assert config["kind"] == "deep" and config["model"] == "fast-cnn"
    assert data["source"] == "self-training" and data["teacher"]["run"] == str(teacher.resolve())
    assert (data["labels"], data["label_seed"], data["num_labeled"]) == (100, 2, 100)
    assert data["num_images"] == config["num_train"] == 5000
    teacher_acc = json.loads((teacher / "metrics.json").read_text())["test_accuracy"]
    assert data["teacher"]["test_accuracy"] == teacher_acc
    assert 0.3 < result.test_accuracy <= 1
    assert evaluate_run(result.run_dir)["test_accuracy"] == pytest.approx(result.test_accuracy)

    # The student can teach the next round; it carries the teacher's labelled subset.
    second = self_train(result.run_dir, _student(1), out=tmp_path / "round2", progress=False)
    data2 = json.loads((second.run_dir / "config.json").read_text())["train_data"]
    assert data2["teacher"]["kind"] == "deep" and (data2["labels"], data2["label_seed"]) == (
        100,
        2,
    )

    # Resuming makes the same pseudo-labels again (SHA-256 checked): a finished run says so.
    with pytest.raises(MnistlabError, match="finished training already"):
        self_train(resume=result.run_dir, progress=False)
    # The plain engine cannot resume it without its data, nor with other data.
    with pytest.raises(MnistlabError, match="cannot be resumed without that data"):
        train_model(resume=result.run_dir, progress=False)
    other = load_dataset("mnist-mini", "train")
    with pytest.raises(MnistlabError, match="differs from the data"):
        train_model(resume=result.run_dir, train_split=other, progress=False)


def test_self_training_refuses_bad_teachers_and_datasets(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(MnistlabError, match="not a run folder"):
        self_train(tmp_path, _student(), out=tmp_path / "x", progress=False)
    full = train_model(
        get_deep_recipe("fast-cnn", dataset="mnist-mini", epochs=1, num_threads=1),
        out=tmp_path / "full",
        progress=False,
    )
    with pytest.raises(MnistlabError, match="no unlabeled images"):
        self_train(full.run_dir, _student(), out=tmp_path / "y", progress=False)
    with pytest.raises(MnistlabError, match="the teacher learned 'mnist-mini'"):
        self_train(teacher, get_deep_recipe("fast-cnn", dataset="mnist"), out=tmp_path / "z")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((teacher / "config.json").read_text())
    with pytest.raises(MnistlabError, match="has not finished"):
        self_train(unfinished, _student(), out=tmp_path / "w", progress=False)
    with pytest.raises(MnistlabError, match="not a self-training run"):
        self_train(resume=full.run_dir, progress=False)


def test_cli_self_train(teacher: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["self-train", "--teacher", str(teacher), "--epochs", "1", "--out", str(out), "-q"]
    result = runner.invoke(app, [*args, "--set", "num_threads=1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "100 labelled + 4,900 pseudo-labelled" in text and "test accuracy" in text
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already holds a run" in " ".join(again.output.split())
    missing = runner.invoke(app, ["self-train"])
    assert missing.exit_code == 1 and "--teacher" in missing.output
    classic = runner.invoke(app, ["self-train", "--teacher", str(teacher), "--model", "svm"])
    assert classic.exit_code == 1 and "deep model" in classic.output


def test_cli_finetune_align_flag(tmp_path: Path) -> None:
    args = "finetune --labels 100 --steps 10 --semi-steps 10 --eval-every 10 --align --threads 1"
    out = tmp_path / "aligned"
    result = CliRunner().invoke(
        app,
        [
            *args.split(),
            "--preset",
            "tiny",
            "--patch-size",
            "7",
            "-d",
            "mnist-mini",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["semi_align"] is True and config["semi_steps"] == 10


def test_train_split_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    from dataclasses import replace

    train = load_dataset("mnist-mini", "train").subset(np.arange(64))
    config = _student()
    bad = {
        "not uint8": replace(train, images=train.images.astype(np.float32)),
        "integers in 0..9": replace(train, labels=train.labels + 5),
        "classes": replace(train, class_names=tuple("abcdefghij")),
    }
    for message, split in bad.items():
        with pytest.raises(MnistlabError, match=message):
            train_model(config, out=tmp_path / "bad", train_split=split, progress=False)
    with pytest.raises(MnistlabError, match="pass both or neither"):
        train_model(config, out=tmp_path / "bad", train_source={"x": 1}, progress=False)
    ok = train_model(config, out=tmp_path / "ok", train_split=train, progress=False)
    recorded = json.loads((ok.run_dir / "config.json").read_text())["train_data"]
    assert recorded["num_images"] == 64 and len(recorded["sha256"]) == 64
