"""The DCGAN of ``mnistlab gan`` on tiny configs (real mnist-mini images, one CPU thread): its
run folder, the simultaneous step's gradients, exact resume, ``mnistlab generate`` from GAN
and GPT runs, the Fréchet distance, and the generator's model file refusing tampering."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from shipping_support import trained_run
from typer.testing import CliRunner

from mnistlab.cli.main import app
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.evaluation.generative import class_coverage, classifier_features, frechet_distance
from mnistlab.models import files
from mnistlab.models.gan import GAN, GanShape, generator_from_file
from mnistlab.models.inference import resolve_precision
from mnistlab.pretraining import PretrainConfig, generate_digits, pretrain
from mnistlab.pretraining.gan import gan_step, train_gan
from mnistlab.pretraining.gan_config import GanConfig

TINY = {"dataset": "mnist-mini", "z_dim": 8, "width": 4, "embed_dim": 4, "batch_size": 32,
        "max_images": 256, "epochs": 2, "num_threads": 1, "seed": 0}  # fmt: skip


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cgan") / "run"
    result = train_gan(GanConfig(conditional=True, **TINY), out=out, progress=False)
    assert result.finished
    return out


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gan") / "run"
    images = load_dataset("mnist-mini", "train").images

    class NoLabels:  # an unconditional GAN never reads the labels
        def __init__(self) -> None:
            self.images = images

        @property
        def labels(self) -> np.ndarray:
            raise AssertionError("an unconditional GAN read the labels")

    train_gan(GanConfig(**{**TINY, "epochs": 1}), out=out, data=NoLabels(), progress=False)
    return out


def test_gan_writes_its_run_folder(cgan_run: Path) -> None:
    for name in ("config.json", "environment.json", "metrics.jsonl", "gan_losses.png",
                 "samples.png", "samples/epoch_001.png", "samples/epoch_002.png",
                 "report.html", "model/model.json", "model/model.safetensors"):  # fmt: skip
        assert (cgan_run / name).is_file(), name
    assert any((cgan_run / "checkpoint").iterdir())
    saved = json.loads((cgan_run / "config.json").read_text())  # what it computed in, recorded
    assert saved["precision_used"] == resolve_precision(torch.device("cpu"), saved["precision"])
    assert GanConfig.from_run(cgan_run, {}).precision == saved["precision"]  # replays
    lines = [json.loads(x) for x in (cgan_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        assert np.isfinite(r["train_d_loss"]) and np.isfinite(r["train_g_loss"])
        assert r["train_diversity"] > 0  # the mode-seeking term of a conditional GAN
        assert 0 < r["train_d_real"] < 1 and 0 < r["train_d_fake"] < 1
    manifest = json.loads((cgan_run / "model" / "model.json").read_text())
    assert manifest["format"] == files.GAN_FORMAT and manifest["shape"]["conditional"]
    generator, _ = generator_from_file(cgan_run)
    assert not generator.training


def test_each_network_gets_the_gradient_of_its_own_loss() -> None:
    torch.manual_seed(0)
    model = GAN(GanShape(z_dim=8, width=4, conditional=True, embed_dim=4))
    real, z = torch.rand(6, 1, 28, 28) * 2 - 1, torch.randn(6, 8)
    digits = torch.arange(6)
    gan_step(model, real, digits, z, digits, mode_seeking=1.0)[0].backward()
    seeking = {n: p.grad.clone() for n, p in model.discriminator.named_parameters()}
    model.zero_grad()
    loss, sums = gan_step(model, real, digits, z, digits)
    loss.backward()
    combined = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # D alone: its loss on real and detached fakes; G alone: the non-saturating loss.
    G, D = model.generator, model.discriminator
    fake = G(z, digits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    d_real, d_fake = D(real, digits), D(fake.detach(), digits)
    (bce(d_real, torch.ones_like(d_real)) + bce(d_fake, torch.zeros_like(d_fake))).backward()
    for n, p in D.named_parameters():
        assert torch.allclose(combined[f"discriminator.{n}"], p.grad, atol=1e-6), n
        assert torch.allclose(seeking[n], p.grad, atol=1e-6), n  # the term reaches G only
    model.zero_grad()
    g_logits = D(G(z, digits), digits)
    bce(g_logits, torch.ones_like(g_logits)).backward()
    for n, p in G.named_parameters():
        assert torch.allclose(combined[f"generator.{n}"], p.grad, atol=1e-6), n
    assert torch.isclose(loss * 6, sums["d_loss"] + sums["g_loss"])


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path) -> None:
    config = GanConfig(conditional=True, **TINY)
    train_gan(config, out=tmp_path / "a", progress=False)
    first = train_gan(config, out=tmp_path / "b", max_rounds=1, progress=False)
    assert not first.finished and not (tmp_path / "b" / "model").exists()
    resumed = train_gan(resume=tmp_path / "b", progress=False)
    assert resumed.finished and resumed.history[0] == first.history[0]
    a = load_file(tmp_path / "a" / "model" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "b" / "metrics.jsonl").read_text()
    assert [json.loads(x)["epoch"] for x in lines.splitlines()] == [1, 2]


def test_gan_command_trains_and_resumes(tmp_path: Path) -> None:
    sets = [arg for k, v in TINY.items() if k != "num_threads" for arg in ("--set", f"{k}={v}")]
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["gan", "--threads", "1", "--out", str(out), *sets])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.json").is_file()
    again = CliRunner().invoke(app, ["gan", "--resume", str(out), "--epochs", "3"])
    assert again.exit_code == 1 and "--resume continues a run" in again.output


def _cli(args: list[str]) -> object:
    return CliRunner().invoke(app, ["generate", *args])


def test_generate_from_gan_and_gpt_runs(cgan_run: Path, gan_run: Path, tmp_path: Path) -> None:
    png = tmp_path / "sevens.png"
    result = _cli(["--from", str(cgan_run), "--digit", "7", "-n", "9", "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    generated = generate_digits(cgan_run, [7], 5, seed=3)
    assert generated.digits.tolist() == [7] * 5
    assert np.array_equal(generated.images, generate_digits(cgan_run, [7], 5, seed=3).images)
    free = tmp_path / "free.png"
    result = _cli(["--from", str(gan_run), "-n", "8", "--out", str(free)])
    assert result.exit_code == 0 and free.is_file(), result.output
    gpt = tmp_path / "gpt"
    config = PretrainConfig(objective="gpt", dataset="mnist-mini", epochs=1, batch_size=64,
                            codebook_size=16, preset="tiny", patch_size=7, conditional=True,
                            max_images=256, num_threads=1)  # fmt: skip
    pretrain(config, out=gpt, progress=False)
    result = _cli(["--from", str(gpt), "--digit", "3", "-n", "4", "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 0 and (tmp_path / "g.png").is_file(), result.output


@pytest.mark.parametrize(
    ("which", "digit", "message"),
    [
        ("cgan", "12", "digits must be in 0..9"),
        ("cgan", "-1", "digits must be in 0..9"),
        ("gan", "7", "cannot draw a given digit"),
    ],
)
def test_generate_refuses_clearly(
    cgan_run: Path, gan_run: Path, tmp_path: Path, which: str, digit: str, message: str
) -> None:
    run = cgan_run if which == "cgan" else gan_run
    result = _cli(["--from", str(run), "--digit", digit, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "error:" in result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "x.png").exists()


def test_frechet_distance() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 16))
    b = rng.normal(size=(2000, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    same = frechet_distance(a, b)  # two draws of one distribution: small
    shifted = frechet_distance(a, b + 1.0)  # mean moved by 1 in 16 dims: about 16 more
    noised = frechet_distance(a, b * 2.0)
    assert same < 0.2 < 10 < shifted and noised > 5
    assert shifted == pytest.approx(16 + same, rel=0.05)
    assert frechet_distance(b + 1.0, a) == pytest.approx(shifted, rel=1e-9)  # symmetric
    assert frechet_distance(a, b * 2.0) == pytest.approx(frechet_distance(b * 2.0, a), rel=1e-9)
    with pytest.raises(MnistlabError, match="same D"):
        frechet_distance(a, b[:, :3])
    with pytest.raises(MnistlabError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_class_coverage_and_classifier_features(tmp_path_factory: pytest.TempPathFactory) -> None:
    collapsed = np.eye(10)[[3] * 95 + [5] * 5]
    coverage = class_coverage(collapsed)
    assert coverage.covered == 2 and coverage.histogram[3] == 95 and coverage.total == 100
    assert class_coverage(np.eye(10)[np.arange(100) % 10]).covered == 10
    run = trained_run(tmp_path_factory)
    images = load_dataset("mnist-mini", "test").images[:50]
    features, proba = classifier_features(run, images)
    assert features.shape[0] == 50 and features.ndim == 2 and proba.shape == (50, 10)
    assert np.allclose(proba.sum(1), 1, atol=1e-5)
    assert frechet_distance(features[:25], features[25:]) > 0


def _tamper(run: Path, tmp_path: Path, weights: bytes | None = None, **manifest: object) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir(parents=True)
    for name in ("model.json", "model.safetensors"):
        (copy / name).write_bytes((run / "model" / name).read_bytes())
    meta = json.loads((copy / "model.json").read_text())
    if weights is not None:
        (copy / "model.safetensors").write_bytes(weights)
        meta["weights_sha256"] = files.sha256_bytes(weights)
    meta.update(manifest)
    (copy / "model.json").write_text(json.dumps(meta))
    return copy


def test_generator_file_refuses_tampering(cgan_run: Path, tmp_path: Path) -> None:
    data = (cgan_run / "model" / "model.safetensors").read_bytes()
    broken = data[:8] + b"{not json" + data[17:]  # a corrupted safetensors header, hash matched
    with pytest.raises(MnistlabError, match="not a safetensors file"):
        generator_from_file(_tamper(cgan_run, tmp_path / "h", broken))
    changed = tmp_path / "c"
    changed.mkdir()
    copy = _tamper(cgan_run, changed)
    (copy / "model.safetensors").write_bytes(data[:-4] + b"\0\0\0\0")  # hash no longer matches
    with pytest.raises(MnistlabError, match="SHA-256 differs"):
        generator_from_file(copy)
    bad_shape = {"z_dim": 8, "width": 999, "conditional": True, "embed_dim": 4}
    with pytest.raises(MnistlabError, match="width must be an integer"):
        generator_from_file(_tamper(cgan_run, tmp_path / "s", shape=bad_shape))
    wrong = {"z_dim": 9, "width": 4, "conditional": True, "embed_dim": 4}
    with pytest.raises(MnistlabError, match="do not fit"):
        generator_from_file(_tamper(cgan_run, tmp_path / "w", shape=wrong))
    result = _cli(["--from", str(_tamper(cgan_run, tmp_path / "x", broken)), "--digit", "1",
                   "--out", str(tmp_path / "x.png")])  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    with pytest.raises(MnistlabError, match="not a GAN generator"):  # a classifier
        generator_from_file(_tamper(cgan_run, tmp_path / "f", format=files.TORCH_FORMAT))
