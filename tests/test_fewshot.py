"""Few labels: the SimCLR backbone objective, the shipped backbone and its card, and
``mnistlab fewshot`` (FixMatch on the one loop) on tiny configs: real mnist-mini images, one
CPU thread. Hidden labels are never read; resume is exact; the run folder is an ordinary run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pretraining_runs import NoLabels  # a split whose labels raise when read

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.features.augment import augment_batch, cutout, stroke_width
from mnistlab.models.hub import get_pretrained, list_pretrained, resolve_pretrained
from mnistlab.models.inference import resolve_precision
from mnistlab.pretraining import (
    FewshotConfig,
    PretrainConfig,
    fewshot,
    load_backbone,
    load_pretrained,
    pretrain,
)
from mnistlab.pretraining.contrastive import nt_xent
from mnistlab.pretraining.fewshot import recalibrate_batchnorm, split_labels
from mnistlab.pretraining.finetune import balance_classes
from mnistlab.training import evaluate_run, load_trained_model

SHIPPED = "simclr-fast-cnn-wide"
TINY = {"dataset": "mnist-mini", "num_threads": 1, "seed": 0}
FEW = {**TINY, "method": "consistency", "labels": 50, "steps": 12, "eval_every": 4,
       "batch_size": 16, "unlabeled_ratio": 2, "student": None}  # fmt: skip


class Split:
    """A training split given to fewshot(): images, labels (-1 = unlabeled), class names."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels, self.class_names = images, labels, [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def mini() -> tuple[np.ndarray, np.ndarray]:
    train = load_dataset("mnist-mini", "train")
    return train.images[:1024], train.labels[:1024].astype(np.int64)


@pytest.fixture(scope="module")
def simclr_run(tmp_path_factory: pytest.TempPathFactory, mini: tuple) -> Path:
    out = tmp_path_factory.mktemp("simclr") / "run"
    config = PretrainConfig(objective="simclr", epochs=2, batch_size=64, optimizer="sgd",
                            lr=0.1, **TINY)  # fmt: skip
    result = pretrain(config, out=out, data=NoLabels(mini[0]), progress=False)
    assert result.finished and np.isfinite(result.final_loss)
    return out


# -- augmentation of the strong view


def test_cutout_erases_a_clipped_square_and_stroke_width_dilates_or_erodes() -> None:
    x = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    y = cutout(x, 10, 14, 0)  # centred on the left border: 10 rows x 5 columns
    assert (y == 0).sum().item() == 2 * 10 * 5 and y[:, :, 9:19, :5].eq(0).all()
    assert torch.equal(cutout(x, 0, 5, 5), x)
    line = torch.zeros(1, 28, 28, dtype=torch.uint8)
    line[0, 10:18, 13] = 255  # an 8-pixel vertical stroke, 1 px wide
    assert stroke_width(line, 1).gt(0).sum().item() == 10 * 3
    assert stroke_width(line, -1).gt(0).sum().item() == 0
    assert torch.equal(stroke_width(line, 0), line)
    with pytest.raises(ValueError, match="-1, 0 or"):
        stroke_width(line, 2)
    with pytest.raises(ValueError, match="size"):
        cutout(x, -1, 0, 0)


def test_strong_preset_is_seeded_and_keeps_layout() -> None:
    x = torch.from_numpy(load_dataset("mnist-mini", "train").images[:64]).unsqueeze(1)
    a = augment_batch(x, "strong", 3)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, augment_batch(x, "strong", 3))
    assert not torch.equal(a, x) and not torch.equal(a, augment_batch(x, "strong", 4))


# -- SimCLR


def test_nt_xent_rewards_agreeing_views() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen))
    same = torch.cat([z, z])  # both views identical: the positives are the nearest rows
    shuffled = torch.cat([z, z.roll(1, 0)])
    assert nt_xent(same, 0.2) < nt_xent(shuffled, 0.2)
    n = 8  # by hand, row 0: -log softmax over the 15 other rows, positive at row 8
    sim = same @ same.T / 0.2
    row = torch.cat([sim[0, 1:]])
    expected = -(sim[0, n] - torch.logsumexp(row, 0))
    per_row = torch.nn.functional.cross_entropy(
        sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf")),
        torch.cat([torch.arange(n, 2 * n), torch.arange(n)]), reduction="none",
    )  # fmt: skip
    assert per_row[0].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        nt_xent(z[:3], 0.2)


def test_simclr_run_reads_no_label_and_writes_a_backbone(simclr_run: Path) -> None:
    model, meta, codebook = load_pretrained(simclr_run)
    assert meta["objective"] == "simclr" and meta["backbone"] == "fast-cnn-wide"
    assert codebook is None and (simclr_run / "views.png").is_file()
    state, info = load_backbone(simclr_run, "fast-cnn-wide")
    assert set(state) == set(model.features.state_dict())
    assert info["weights_sha256"] == meta["weights_sha256"]


def test_load_backbone_refuses_another_architecture_and_unknown_names(simclr_run: Path) -> None:
    with pytest.raises(MnistlabError, match="not a fast-cnn backbone"):
        load_backbone(simclr_run, "fast-cnn")
    with pytest.raises(MnistlabError, match="no pretrained model pretrained:nope") as info:
        load_backbone("pretrained:nope", "fast-cnn-wide")
    assert SHIPPED in str(info.value)


# -- the shipped backbone


def test_the_shipped_backbone_loads_with_its_card() -> None:
    names = [c.name for c in list_pretrained()]
    assert SHIPPED in names
    card = get_pretrained(SHIPPED)
    assert card.weights_bytes <= 5_000_000  # the budget: <= 5 MB
    assert card.card["objective"] == "simclr" and card.card["architecture"] == "fast-cnn-wide"
    assert "mnistlab pretrain --objective simclr" in card.card["command"]
    assert len(card.card["data"]["sha256"]["train-images-idx3-ubyte"]) == 64
    _, info = load_backbone("pretrained:" + SHIPPED, "fast-cnn-wide")
    assert info["weights_sha256"] == card.card["weights_sha256"]
    assert resolve_pretrained("pretrained:" + SHIPPED) == card.folder / "model"


# -- fewshot


def test_too_few_labels_and_a_student_without_unlabeled_images_fail_before_training(
    tmp_path: Path,
) -> None:
    with pytest.raises(MnistlabError, match="without one") as info:
        fewshot(FewshotConfig(**{**FEW, "labels": 5}), out=tmp_path / "five", progress=False)
    assert "--labels 10" in info.value.hint and not (tmp_path / "five").exists()
    with pytest.raises(MnistlabError, match="nothing to pseudo-label"):
        fewshot(FewshotConfig(**{**FEW, "labels": 0, "student": "fast-cnn"}), progress=False)


def test_labels_of_minus_one_mark_the_unlabeled_images() -> None:
    labels = np.array([3, -1, -1, 7, -1])
    idx, how = split_labels(labels, 2, 0)
    assert idx.tolist() == [0, 3] and "-1" in how
    full = np.repeat(np.arange(10), 10)
    idx, _ = split_labels(full, 20, 1)
    assert np.bincount(full[idx]).tolist() == [2] * 10
    idx, how = split_labels(full, 0, 1)
    assert len(idx) == 100 and how == "all of them"


def test_hidden_labels_are_never_read(tmp_path: Path, mini: tuple) -> None:
    """The same run with every label outside the drawn subset replaced by -1 gives bit-identical
    weights: nothing but the drawn labels reaches training."""
    images, labels = mini
    config = FewshotConfig(pretrained=None, **FEW)
    a = fewshot(config, out=tmp_path / "a", data=Split(images, labels), progress=False)
    drawn, _ = split_labels(labels, config.labels, config.seed)
    hidden = np.full_like(labels, -1)
    hidden[drawn] = labels[drawn]
    b = fewshot(config, out=tmp_path / "b", data=Split(images, hidden), progress=False)
    pairs = zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True)
    for (name, x), (_, y) in pairs:
        assert torch.equal(x, y), name
    assert a.test_accuracy == b.test_accuracy and a.num_labeled == 50
    with pytest.raises(MnistlabError, match="student stage"):  # it would label mnist-mini
        fewshot(FewshotConfig(**{**FEW, "student": "fast-cnn"}), data=Split(images, hidden))


def test_fewshot_from_a_backbone_writes_an_ordinary_run_and_resumes_exactly(
    tmp_path: Path, simclr_run: Path
) -> None:
    config = FewshotConfig(pretrained=str(simclr_run), **FEW)
    whole = fewshot(config, out=tmp_path / "whole", progress=False)
    part = fewshot(config, out=tmp_path / "part", progress=False, max_rounds=1)
    assert np.isnan(part.test_accuracy)
    done = fewshot(None, resume=tmp_path / "part", progress=False)
    assert done.test_accuracy == whole.test_accuracy
    pairs = zip(whole.model.state_dict().items(), done.model.state_dict().items(), strict=True)
    for (name, x), (_, y) in pairs:
        assert torch.equal(x, y), name
    run = whole.run_dir
    saved = json.loads((run / "config.json").read_text())
    assert saved["kind"] == "fewshot" and saved["num_labeled"] == 50
    assert saved["precision_used"] == resolve_precision(torch.device("cpu"), saved["precision"])
    assert FewshotConfig.from_run(run, {}).labels == 50  # replays
    assert saved["backbone"]["weights_sha256"] == load_pretrained(simclr_run)[1]["weights_sha256"]
    _, meta = load_trained_model(run)  # the `mnistlab train` model format
    assert meta["architecture"] == "fast-cnn-wide" and meta["fewshot_config"]["labels"] == 50
    report = evaluate_run(run)  # evaluate takes it like any run
    assert report["test_accuracy"] == pytest.approx(whole.test_accuracy)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 3 and all(0 <= r["train_kept"] <= 1 for r in history)


def test_recalibrated_batchnorm_is_the_mean_over_the_images() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    images = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    recalibrate_batchnorm(net, images, batch_size=16)
    with torch.no_grad():
        out = net[0](images.float() / 255)
    assert torch.allclose(net[1].running_mean, out.mean((0, 2, 3)), atol=1e-5)
    assert net[1].momentum == 0.1 and not net.training


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 64),
    st.integers(2, 12),
    st.floats(0.1, 8.0),
    st.integers(0, 2**31 - 1),
)
def test_balanced_pseudo_labels_are_distributions_with_the_target_shares(
    batch: int, classes: int, scale: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(batch, classes, generator=g) * scale, 1)
    target = torch.rand(classes, generator=g) + 0.1
    out = balance_classes(probs, target, iterations=20)
    assert out.shape == probs.shape and out.dtype == probs.dtype
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.allclose(out.sum(1), torch.ones(batch), atol=1e-5)
    share = target / target.sum()
    before, after = (probs.mean(0) - share).abs().sum(), (out.mean(0) - share).abs().sum()
    assert after <= before + 1e-5  # the classes' shares never move away from the target


def test_balancing_moves_torn_images_off_an_over_predicted_class() -> None:
    # Nine images of three classes, three each; two nines look like sevens to the model.
    one, nine, seven = [0.96, 0.02, 0.02], [0.02, 0.96, 0.02], [0.02, 0.02, 0.96]
    torn = [0.02, 0.40, 0.58]
    probs = torch.tensor([one] * 3 + [nine] + [torn] * 2 + [seven] * 3)
    classes = ["1", "9", "7"]
    assert [classes[i] for i in probs.argmax(1)].count("7") == 5
    out = balance_classes(probs, torch.ones(3))
    assert [classes[i] for i in out.argmax(1)] == ["1"] * 3 + ["9"] * 3 + ["7"] * 3
    sure = [0, 1, 2, 3, 6, 7, 8]
    assert (out[sure].max(1).values > out[[4, 5]].max(1).values.max()).all()  # still surer
    # A training-sized batch in which the model favours one class: three rounds (SwAV's)
    # take most of the excess off it and give it to the others.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(448, 10, generator=g) * 3
    logits[:, 7] += 2
    before = torch.softmax(logits, 1).mean(0)
    after = balance_classes(torch.softmax(logits, 1), torch.ones(10)).mean(0)
    assert before[7] > 0.25 and after[7] - 0.1 < 0.2 * (before[7] - 0.1)
    assert (after[:7] > before[:7]).all() and (after - 0.1).abs().max() < 0.02
    balanced = torch.tensor([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.05, 0.9]])
    assert torch.allclose(balance_classes(balanced, torch.ones(3)), balanced, atol=1e-6)


def test_converged_balancing_gives_a_confident_cluster_back_to_the_short_class() -> None:
    """A batch in which six sevens (say, with a crossbar) are confidently called twos: the
    seven class is six short, the two class six over. Three rounds leave them twos; run to
    convergence, balancing hands them to the seven class, the surest twos stay twos."""

    def row(k: int, other: int | None = None, p_other: float = 0.0) -> torch.Tensor:
        r = torch.full((10,), 1e-7)
        r[k] = 0.9999
        if other is not None:
            r[other] = p_other
        return r / r.sum()

    rows = [row(c) for c in range(10) for _ in range(39 if c == 7 else 45)]
    rows += [row(2, other=7, p_other=1e-4)] * 6  # twos to the model, a little seven-like
    probs = torch.stack(rows)
    few = balance_classes(probs, torch.ones(10), iterations=3)
    assert (few[-6:].argmax(1) == 2).all()
    many = balance_classes(probs, torch.ones(10), iterations=100)
    assert (many[-6:].argmax(1) == 7).all()
    assert (many[:-6].argmax(1) == probs[:-6].argmax(1)).all()


def test_a_run_recorded_before_balancing_replays_without_it(tmp_path: Path) -> None:
    old = {"kind": "fewshot", "labels": 10, "num_labeled": 10}  # a config.json without it
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert FewshotConfig.from_run(tmp_path).balance is False
    assert FewshotConfig.from_dict({"labels": 10}).balance is True  # a user's file: default
    again = FewshotConfig.from_run(tmp_path, {"balance": True})
    assert again.balance is True and again.labels == 10


def test_fewshot_cli_with_a_student_and_models_cli(tmp_path: Path) -> None:
    out = tmp_path / "run"
    text = cli("fewshot", "-d", "mnist-mini", "--method", "consistency", "--labels", "20",
               "--steps", "4", "--eval-every",
               "2", "--from", "scratch", "--threads", "1", "--set", "batch_size=8",
               "--set", "unlabeled_ratio=1", "--student", "fast-cnn", "--student-epochs", "1",
               "--no-balance", "--out", out)  # fmt: skip
    assert "test accuracy" in text and (out / "model" / "model.json").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["pretrained"] is None and saved["balance"] is False
    student = json.loads((out / "student" / "config.json").read_text())
    assert student["kind"] == "deep" and student["epochs"] == 1
    teacher = student["train_data"]["teacher"]
    assert teacher["kind"] == "fewshot" and teacher["labels"] == 20
    # the path after it may wrap at 80 columns: read it unwrapped
    assert "final model:" in text and "student" in text.split("final model:")[1].replace("\n", "")
    again = cli("fewshot", "--resume", out)  # finished: both stages are reused, not redone
    assert "final model:" in again
    assert json.loads((out / "student" / "config.json").read_text()) == student
    listed = cli("models", "list")
    assert "pretrained:" + SHIPPED in listed and "simclr" in listed  # the name is never folded
    shown = cli("models", "show", SHIPPED)
    assert "rebuild: python scripts/build_backbone.py" in shown
    card = json.loads(cli("models", "show", SHIPPED, "--json"))
    assert card["name"] == SHIPPED
    missing = cli("models", "show", "nope", code=1)
    assert "no pretrained model" in missing
    bad = cli("fewshot", "-d", "mnist-mini", "--from", str(tmp_path / "none"), code=1)
    assert "none" in bad


def test_finetune_points_a_shipped_cnn_backbone_to_fewshot() -> None:
    text = cli("finetune", "--from", "pretrained:" + SHIPPED, "--labels", "100", code=1)
    assert "transformer" in text and f"mnistlab fewshot --from pretrained:{SHIPPED}" in text
    assert "Traceback" not in text
    unknown = cli("finetune", "--from", "pretrained:nope", code=1)
    assert "shipped: " in unknown and "pretrained:" + SHIPPED in unknown
