"""Classic-model training into run folders: files, reload, determinism, recipes, search, CLI.

Everything runs on the bundled mnist-mini (5,000 / 1,000 real MNIST images) with small
settings, so the whole file stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.multiclass import OneVsRestClassifier
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.data.splits import recipe_split
from mnistlab.errors import MnistlabError, OverwriteError
from mnistlab.models import TorchLogisticRegression, get_recipe
from mnistlab.models.estimator_files import load_estimator
from mnistlab.runs import list_runs
from mnistlab.training import (
    evaluate_run,
    predict_scores,
    search_classic,
    train_classic,
)

QUIET = {"log": lambda *_: None}
SMALL = {
    "logreg": {},
    "knn": {"pca__n_components": 20},
    "svm": {"pca__n_components": 20},
    "rf": {"clf__n_estimators": 15},
}


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs") / "logreg"
    return train_classic("logreg", dataset="mnist-mini", out=out, **QUIET)


def test_run_folder_holds_config_environment_model_and_report(logreg_run):
    run = logreg_run.run_dir
    for name in (
        "config.json",
        "environment.json",
        "metrics.json",
        "report.json",
        "report.html",
        "confusion_matrix.png",
        "misclassified.png",
        "per_class_accuracy.png",
        "model/model.json",
        "model/model.skops",
    ):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "logreg" and config["seed"] == 0
    assert config["split"] == "official" and config["num_train"] == 5000
    # the full config: every hyper-parameter, defaults included
    clf = config["estimator"]["params"]["steps"][1][1]
    assert clf["class"].endswith("TorchLogisticRegression")
    assert clf["params"]["alpha"] == 1e-4 and clf["params"]["max_iter"] == 60
    assert clf["params"]["matmul_dtype"] == "auto"
    # threads: chosen from the CPUs free (0 = auto), recorded like a deep run's
    assert config["num_threads"] == 0 and config["threads"] >= 1
    assert json.loads((run / "metrics.json").read_text())["threads"] == config["threads"]
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["scikit-learn"] and env["packages"]["numpy"]
    assert env["data_sha256"]["mnist-mini"]["train-images-idx3-ubyte"].startswith("29166188")
    report = json.loads((run / "report.json").read_text())
    assert report["dataset"] == "mnist-mini" and report["model"].startswith("logreg")
    assert report["train_seconds"] == pytest.approx(logreg_run.train_seconds)
    assert 0.85 < report["test_accuracy"] == logreg_run.test_accuracy


def test_saved_model_reloads_to_identical_predictions(logreg_run):
    import torch

    from mnistlab.models.inference import native_bf16

    test = load_dataset("mnist-mini", "test")
    model = load_estimator(logreg_run.run_dir / "model")
    # "auto": bf16 matmuls only where the CPU has bf16 kernels (emulated, they were 5x slower)
    bf16 = native_bf16(torch.device("cpu"))
    assert model.named_steps["clf"].matmul_dtype_used_ == ("bfloat16" if bf16 else "float32")
    proba = predict_scores(model, test.images)
    assert np.mean(proba.argmax(1) == test.labels) == pytest.approx(logreg_run.test_accuracy)
    again = evaluate_run(logreg_run.run_dir)
    assert again["test_accuracy"] == logreg_run.test_accuracy
    assert again["evaluated_again"] is True


def test_same_seed_same_model(tmp_path: Path, logreg_run):
    second = train_classic("logreg", dataset="mnist-mini", out=tmp_path / "again", **QUIET)
    a = load_estimator(logreg_run.run_dir / "model").named_steps["clf"]
    b = load_estimator(second.run_dir / "model").named_steps["clf"]
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)
    assert second.test_accuracy == logreg_run.test_accuracy


@pytest.mark.parametrize("model", ["knn", "svm", "rf"])
def test_every_classic_model_trains_saves_and_reloads(tmp_path: Path, model: str):
    result = train_classic(
        model, dataset="mnist-mini", out=tmp_path / model, params=SMALL[model], **QUIET
    )
    assert result.test_accuracy > {"knn": 0.9, "svm": 0.93, "rf": 0.85}[model]
    test = load_dataset("mnist-mini", "test")
    reloaded = load_estimator(result.run_dir / "model")
    proba = predict_scores(reloaded, test.images)
    assert np.mean(proba.argmax(1) == test.labels) == result.test_accuracy
    assert json.loads((result.run_dir / "config.json").read_text())["params"] == SMALL[model]


def test_pooled_split_is_the_tutorials_80_20_split():
    train, test = recipe_split("mnist-mini", "pooled-80-20")
    assert (len(train), len(test)) == (4800, 1200)
    a, b = load_dataset("mnist-mini", "train"), load_dataset("mnist-mini", "test")
    images = np.concatenate([a.images, b.images])
    labels = np.concatenate([a.labels, b.labels])
    _, x_test, _, y_test = train_test_split(images, labels, test_size=0.2, random_state=42)
    assert np.array_equal(test.images, x_test) and np.array_equal(test.labels, y_test)


def test_seed_recipe_is_the_tutorial_model():
    recipe = get_recipe("logreg", "seed")
    assert recipe.split == "pooled-80-20"
    pipeline = recipe.build(0)
    scale, clf = pipeline.named_steps["scale"], pipeline.named_steps["clf"]
    assert scale.dtype == "float64"
    assert isinstance(clf, OneVsRestClassifier)
    assert isinstance(clf.estimator, LogisticRegression)
    assert clf.estimator.solver == "lbfgs" and clf.estimator.max_iter == 1000


def test_torch_logreg_matches_sklearn_on_the_same_objective():
    """Reference check: same penalised multinomial objective, float32 matmuls."""
    train, test = load_dataset("mnist-mini", "train"), load_dataset("mnist-mini", "test")
    x = train.images.reshape(len(train), -1) / 255.0
    xt = test.images.reshape(len(test), -1) / 255.0
    alpha = 1e-2
    ours = TorchLogisticRegression(alpha=alpha, max_iter=500, tol=1e-7, matmul_dtype="float32").fit(
        x, train.labels
    )
    # sklearn minimises sum(loss) + 0.5/C ||W||^2; ours mean(loss) + 0.5 alpha ||W||^2
    # tol 1e-5: the coefficients then differ by ~5e-4 (1e-8 took 8 s more for 4e-4)
    ref = LogisticRegression(C=1.0 / (alpha * len(x)), max_iter=2000, tol=1e-5).fit(x, train.labels)
    agree = np.mean(ours.predict(xt) == ref.predict(xt))
    assert agree > 0.99
    assert np.abs(ours.coef_ - ref.coef_).max() < 0.01
    assert np.allclose(ours.predict_proba(xt), ref.predict_proba(xt), atol=0.02)


def test_errors_are_clear(tmp_path: Path, logreg_run):
    with pytest.raises(MnistlabError, match="unknown classic model 'cnn'"):
        train_classic("cnn", dataset="mnist-mini", **QUIET)
    with pytest.raises(MnistlabError, match=r"no recipe 'fast'.*default"):
        train_classic("knn", recipe="fast", dataset="mnist-mini", **QUIET)
    with pytest.raises(MnistlabError, match="unknown hyper-parameter") as info:
        train_classic("svm", dataset="mnist-mini", params={"clf__gama": 1}, **QUIET)
    assert "clf__gamma" in info.value.hint
    with pytest.raises(OverwriteError):
        train_classic("logreg", dataset="mnist-mini", out=logreg_run.run_dir, **QUIET)


def test_search_is_cross_validated_seeded_and_budgeted():
    space = {"clf__n_neighbors": [1, 3, 5]}
    kwargs = {"dataset": "mnist-mini", "space": space, "cv": 2, "subsample": 1000, **QUIET}
    result = search_classic("knn", budget_seconds=60, **kwargs)
    assert len(result.rows) == 3 and result.subsample == 1000
    accuracies = [row["mean_accuracy"] for row in result.rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert result.best_params == result.rows[0]["params"]
    assert "clf__n_neighbors" in result.to_markdown()
    again = search_classic("knn", budget_seconds=60, **kwargs)
    assert again.rows == [
        {**r, "fit_seconds": a["fit_seconds"]} for r, a in zip(result.rows, again.rows, strict=True)
    ]
    tiny = search_classic("knn", budget_seconds=1e-9, **kwargs)
    assert len(tiny.rows) == 1  # the first candidate runs, then the budget stops the search


def test_runs_list_shows_the_run(logreg_run):
    rows = list_runs(logreg_run.run_dir.parent)
    row = next(r for r in rows if r.path == logreg_run.run_dir)
    assert row.model == "logreg" and row.dataset == "mnist-mini"
    assert row.test_accuracy == logreg_run.test_accuracy


def test_cli_train_evaluate_runs_search(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "runs" / "knn"
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "knn",
            "--dataset",
            "mnist-mini",
            "--set",
            "pca__n_components=20",
            "--set",
            "num_threads=1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and (out / "report.html").is_file()
    assert "1 thread(s) (as configured)" in " ".join(result.output.split())
    assert json.loads((out / "config.json").read_text())["threads"] == 1
    bad = ["train", "--model", "knn", "-d", "mnist-mini", "--set", "num_threads=-1"]
    result = runner.invoke(app, bad)
    assert result.exit_code == 1 and "num_threads must be a whole number" in result.output
    result = runner.invoke(app, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["runs", "list", "--root", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "knn" in result.output and "mnist-mini" in result.output
    result = runner.invoke(
        app,
        [
            "search",
            "--model",
            "knn",
            "--dataset",
            "mnist-mini",
            "--budget",
            "1",
            "--subsample",
            "600",
            "--cv",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "best: mnistlab train --model knn" in result.output
    result = runner.invoke(app, ["train", "--model", "nope", "--dataset", "mnist-mini"])
    assert result.exit_code == 1 and "error:" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 1 and "not a complete run folder" in " ".join(result.output.split())


def test_seed_cnn_recipe_is_the_tutorial_recipe():
    from mnistlab.training import get_deep_recipe

    config = get_deep_recipe("seed-cnn", "seed")
    assert (config.model, config.epochs, config.batch_size) == ("seed-cnn", 10, 128)
    assert (config.optimizer, config.lr, config.weight_decay) == ("adamw", 1e-3, 0.0)
    assert (config.schedule, config.warmup, config.augment) == ("constant", 0.0, None)
    assert config.label_smoothing == 0.0 and config.val_size == 0
    with pytest.raises(MnistlabError, match="unknown training config key"):
        get_deep_recipe("fast-cnn", "default", epoch=3)
    with pytest.raises(MnistlabError, match="has no recipe"):
        get_deep_recipe("fast-cnn", "seed")


def test_cli_trains_evaluates_and_refuses_to_resume_a_finished_deep_run(tmp_path: Path):
    runner = CliRunner()
    out = tmp_path / "fast"
    args = [
        "train",
        "--model",
        "fast-cnn",
        "--dataset",
        "mnist-mini",
        "--epochs",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "deep" and config["epochs"] == 1 and config["model"] == "fast-cnn"
    assert report["test_accuracy"] > 0.5
    result = runner.invoke(app, ["evaluate", str(out)])
    assert result.exit_code == 0, result.output
    again = json.loads((out / "report.json").read_text())
    assert again["test_accuracy"] == report["test_accuracy"]
    assert "Training curves" in (out / "report.html").read_text()
    result = runner.invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 1 and "error:" in result.output
    assert "Traceback" not in result.output
