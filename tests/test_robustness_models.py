"""Robustness checks on a tiny trained fast-cnn (mnist-mini, 2 epochs): attacks stay in the
ε-ball and in [0, 1] and PGD is at least as strong as FGSM; temperature scaling fitted on the
validation split lowers held-out NLL and is written where mnistlab.shipping reads it; OOD
against Fashion-MNIST; the whole ``evaluate_robustness`` run with its report section and CLI;
PGD adversarial training through the engine."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from robustness_fixtures import one_torch_thread  # noqa: F401 (autouse fixture)
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.robustness.attacks import PixelSpaceModel, fgsm, pgd, pgd_training_inputs
from mnistlab.robustness.attacks import robust_accuracy as robust
from mnistlab.robustness.calibration import (
    calibrate_run,
    load_run_model,
    negative_log_likelihood,
    predict_logits,
)
from mnistlab.robustness.ood import evaluate_ood
from mnistlab.robustness.suite import evaluate_robustness
from mnistlab.training import evaluate_run
from mnistlab.training.config import TrainConfig
from mnistlab.training.engine import train_model

TINY = TrainConfig(
    model="fast-cnn",
    dataset="mnist-mini",
    epochs=2,
    batch_size=128,
    lr=4e-3,
    val_size=500,
    seed=0,
    num_threads=1,
    device="cpu",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained fast-cnn run folder with a validation split (~3 s)."""
    out = tmp_path_factory.mktemp("robust") / "run"
    train_model(TINY, out=out, progress=False)
    return out


@pytest.fixture(scope="module")
def loaded(run: Path, mini):
    model, meta, _ = load_run_model(run)
    test = mini["test"]
    x = torch.from_numpy(test.images[:128]).float().div(255).unsqueeze(1)
    y = torch.from_numpy(test.labels[:128].astype(np.int64))
    return PixelSpaceModel.from_meta(model, meta).eval(), x, y, meta


# ---------------------------------------------------------------------------- attacks


def test_attacks_stay_in_the_eps_ball_and_in_range(loaded) -> None:
    model, x, y, _ = loaded
    for eps in (0.0, 0.05, 0.3, 1.0):
        for x_adv in (
            fgsm(model, x, y, eps),
            pgd(model, x, y, eps, steps=3, restarts=2, generator=torch.Generator().manual_seed(0)),
            pgd(model, x, y, eps, steps=2, step_size=0.5),  # huge steps: projection must hold
        ):
            assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
            assert float((x_adv - x).abs().max()) <= eps + 1e-6
            assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    with pytest.raises(MnistlabError, match="eps must be in"):
        fgsm(model, x, y, 1.5)


def test_pgd_is_at_least_as_strong_as_fgsm(loaded) -> None:
    model, x, y, _ = loaded

    def accuracy(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(images).argmax(1) == y).float().mean())

    clean = accuracy(x)
    assert clean > 0.85
    for eps in (0.1, 0.2):
        f = accuracy(fgsm(model, x, y, eps))
        one = accuracy(pgd(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(0)))
        two = accuracy(
            pgd(model, x, y, eps, steps=10, restarts=2, generator=torch.Generator().manual_seed(0))
        )
        assert two <= one <= f < clean, (eps, clean, f, one, two)
    assert accuracy(pgd(model, x, y, 0.3, steps=10)) < 0.2  # an undefended net breaks


def test_robust_accuracy_table(run: Path, mini) -> None:
    model, meta, _ = load_run_model(run)
    test = mini["test"]
    rows, examples = robust(
        model, test.images[:100], test.labels[:100], meta["normalization"], eps=(0.1,), steps=5
    )
    assert [(r.attack, r.eps, r.num_images) for r in rows] == [
        ("fgsm", 0.1, 100),
        ("pgd", 0.1, 100),
    ]
    assert rows[1].accuracy <= rows[0].accuracy
    assert rows[1].step_size == pytest.approx(2.5 * 0.1 / 5)
    assert examples["pgd@0.1"].dtype == np.uint8 and examples["pgd@0.1"].shape == (8, 28, 28)
    with pytest.raises(MnistlabError, match="unknown attack"):
        robust(model, test.images[:4], test.labels[:4], meta["normalization"], attacks=["cw"])


def test_robust_accuracy_counts_smaller_budgets(run: Path, mini) -> None:
    """An image fooled at a smaller eps is not robust at a larger one: the rows are monotone,
    never above the single-budget attack, and come back in the order the budgets were given."""
    model, meta, _ = load_run_model(run)
    test = mini["test"]
    rows, _ = robust(
        model, test.images[:100], test.labels[:100], meta["normalization"],
        attacks=["fgsm"], eps=(0.3, 0.05, 0.15),
    )  # fmt: skip
    assert [r.eps for r in rows] == [0.3, 0.05, 0.15]
    by_eps = {r.eps: r for r in rows}
    assert by_eps[0.05].accuracy >= by_eps[0.15].accuracy >= by_eps[0.3].accuracy
    for r in rows:
        assert r.accuracy <= r.single_eps_accuracy
    assert by_eps[0.05].accuracy == by_eps[0.05].single_eps_accuracy  # nothing smaller
    # FGSM at 0.3 overshoots on some images a smaller budget fools: the union is stricter.
    single = {r.eps: r.single_eps_accuracy for r in rows}
    assert by_eps[0.3].accuracy <= min(single.values())


def test_pgd_training_inputs_restores_mode_and_normalizes(loaded) -> None:
    model, x, y, _ = loaded
    net = model.model.train()
    images = (x[:32] * 255).round().to(torch.uint8)
    z = pgd_training_inputs(
        net, images, y[:32], model.mean, model.std, eps=0.2, steps=2, channels_last=True
    )
    assert net.training  # back in training mode after the attack ran in eval mode
    assert z.is_contiguous(memory_format=torch.channels_last)
    pixels = z * model.std + model.mean
    assert float((pixels - images.float() / 255).abs().max()) <= 0.2 + 1e-5
    net.eval()


# ---------------------------------------------------------------------------- calibration


def test_calibration_on_the_validation_split(run: Path) -> None:
    result = calibrate_run(run, fit_on="val", figure=run / "reliability.png")
    saved = json.loads((run / "model" / "calibration.json").read_text())
    assert saved == result
    assert {"temperature", "fitted_on", "ece_before", "ece_after", "ood"} <= saved.keys()
    assert saved["fitted_on"] == "val" and saved["num_fit"] == 500 and saved["num_eval"] == 1000
    assert saved["ood"]["score"] == "max_softmax" and 0 < saved["ood"]["threshold"] < 1
    # Fitted on the validation images, measured on the test split: the NLL goes down.
    assert saved["nll_after"] < saved["nll_before"]
    model, meta, _ = load_run_model(run)
    test = load_dataset("mnist-mini", "test")
    logits = predict_logits(model, test.images, meta["normalization"])
    assert negative_log_likelihood(logits, test.labels, saved["temperature"]) == pytest.approx(
        saved["nll_after"]
    )
    assert (run / "reliability.png").stat().st_size > 0


def test_calibrated_model_changes_shipping_predictions(run: Path, mini) -> None:
    """The contract with mnistlab.shipping: calibration.json changes its probabilities and
    its low_confidence flags."""
    from mnistlab.shipping import load_model

    cal = calibrate_run(run, fit_on="val")
    images = mini["test"].images[:300]
    plain = load_model(run, check_calibration=False)
    shipped = load_model(run)
    assert shipped.calibration.temperature == pytest.approx(cal["temperature"])
    assert shipped.calibration.threshold == pytest.approx(cal["ood"]["threshold"])
    p0, p1 = plain.probabilities(images), shipped.probabilities(images)
    assert not np.allclose(p0, p1) and np.array_equal(p0.argmax(1), p1.argmax(1))
    flags = [p.low_confidence for p in shipped.predict(images)]
    assert flags == list(p1.max(1) < cal["ood"]["threshold"])
    assert 0 < sum(flags) < len(flags)


def test_val_calibration_needs_a_validation_split(tmp_path: Path, run: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    other = tmp_path / "noval"
    other.mkdir()
    for name in ("model", "config.json"):
        src = run / name
        if src.is_dir():
            (other / name).mkdir()
            for f in src.iterdir():
                (other / name / f.name).write_bytes(f.read_bytes())
    (other / "config.json").write_text(json.dumps({**config, "val_size": 0}))
    with pytest.raises(MnistlabError, match="without a validation split"):
        calibrate_run(other, fit_on="val")
    assert calibrate_run(other)["fitted_on"] == "test-half"  # auto falls back, and says so


# ---------------------------------------------------------------------------- OOD, suite, CLI


def test_ood_fashion_vs_digits(run: Path, mini, mnist_home: Path) -> None:
    model, meta, _ = load_run_model(run)
    fashion = load_dataset("fashion-mnist", "test", home=mnist_home).images[:1000]
    result = evaluate_ood(model, meta["normalization"], mini["test"].images, fashion)
    assert result.num_in == 1000 and result.num_out == 1000
    assert result.auroc["max_softmax"] > 0.8 and result.auroc["energy"] > 0.8
    assert result.mean_max_softmax_in > result.mean_max_softmax_out
    # Order does not matter (and no labels are involved).
    shuffled = mini["test"].images[np.random.default_rng(0).permutation(1000)]
    again = evaluate_ood(model, meta["normalization"], shuffled, fashion)
    assert again.auroc == pytest.approx(result.auroc)


def test_evaluate_robustness_writes_results_and_report(run: Path, mnist_home: Path) -> None:
    kwargs = dict(
        corruptions=["rotate", "inverse", "fog"],
        severities=[1, 5],
        eps=[0.1],
        pgd_steps=3,
        attack_limit=64,
        limit=200,
        ood_dataset="fashion-mnist",
        home=mnist_home,
    )
    result = evaluate_robustness(run, **kwargs)
    saved = json.loads((run / "robustness" / "robustness.json").read_text())
    assert saved == json.loads(json.dumps(result))
    table = result["corruptions"]["per_corruption"]
    assert set(table) == {"rotate", "inverse", "fog"}
    assert set(table["rotate"]) == {"1", "5", "mean"} and set(table["inverse"]) == {"1", "mean"}
    assert result["corruptions"]["mean_accuracy"] == pytest.approx(
        np.mean([row["mean"] for row in table.values()])
    )
    assert table["rotate"]["5"] < table["rotate"]["1"] <= 1
    assert result["calibration"]["fitted_on"] == "val"
    assert result["ood"]["raw"]["auroc"]["max_softmax"] > 0.8
    for name in result["files"].values():
        assert (run / "robustness" / name).stat().st_size > 0
    report = json.loads((run / "report.json").read_text())
    page = (run / "report.html").read_text()
    assert report["sections"][0] == "Training curves"  # the engine's section is kept
    assert "Robustness: corruptions" in report["sections"]
    assert page.count("<h2>Training curves</h2>") == 1 and "Robustness: calibration" in page
    # Running again replaces the robustness sections instead of adding more.
    evaluate_robustness(run, **{**kwargs, "attacks": [], "corruptions": [], "calibrate": False})
    report = json.loads((run / "report.json").read_text())
    assert report["sections"] == ["Training curves", "Robustness: out-of-distribution"]
    assert (run / "report.html").read_text().count("Robustness: corruptions") == 0
    # `mnistlab evaluate` rewrites the report and keeps the robustness sections.
    evaluate_run(run, home=mnist_home)
    report = json.loads((run / "report.json").read_text())
    assert report["sections"] == ["Training curves", "Robustness: out-of-distribution"]


def test_cli_robustness_and_errors(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "robustness", str(run), "--corruptions", "shear", "--severities", "2",
            "--attacks", "fgsm", "--eps", "0.1", "--attack-limit", "32", "--limit", "100",
            "--ood-dataset", "none", "--no-calibrate",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "mean corrupted" in result.output and "fgsm" in result.output
    bad = runner.invoke(app, ["robustness", str(tmp_path)])
    assert bad.exit_code == 1 and "not a complete run folder" in " ".join(bad.output.split())
    bad = runner.invoke(app, ["robustness", str(run), "--corruptions", "snow"])
    assert bad.exit_code == 1 and "unknown corruption 'snow'" in bad.output
    bad = runner.invoke(app, ["train", "--model", "logreg", "--adversarial-training"])
    assert bad.exit_code == 1 and "needs a deep model" in bad.output


# ---------------------------------------------------------------------------- training


def test_pgd_adversarial_training_makes_the_model_more_robust(run: Path, tmp_path: Path) -> None:
    adv_config = TrainConfig.from_dict(
        {
            **TINY.to_dict(),
            "epochs": 1,
            "adversarial_eps": 0.2,
            "adversarial_steps": 2,
            "val_size": 0,
        }
    )
    result = train_model(adv_config, out=tmp_path / "adv", progress=False)
    saved = json.loads((tmp_path / "adv" / "config.json").read_text())
    assert saved["adversarial_eps"] == 0.2 and saved["adversarial_steps"] == 2
    test = load_dataset("mnist-mini", "test")
    plain, meta, _ = load_run_model(run)
    hardened, meta_adv, _ = load_run_model(tmp_path / "adv")
    kwargs = dict(attacks=["pgd"], eps=(0.2,), steps=10)
    plain_acc = robust(plain, test.images[:300], test.labels[:300], meta["normalization"], **kwargs)
    adv_acc = robust(
        hardened, test.images[:300], test.labels[:300], meta_adv["normalization"], **kwargs
    )
    assert adv_acc[0][0].accuracy > plain_acc[0][0].accuracy + 0.2
    assert result.test_accuracy > 0.8
    with pytest.raises(MnistlabError, match="adversarial_eps must be in"):
        TrainConfig(adversarial_eps=2.0)
