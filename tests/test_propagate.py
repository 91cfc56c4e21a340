"""Label propagation (``mnistlab fewshot --method propagate``, the default): the graph search,
the propagation, the embedding, and the whole method on real mnist-mini images with the
shipped backbone (tiny student, one CPU thread). Hidden labels are never read; the run folder
is an ordinary run; an interrupted or finished run resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fewshot import Split  # a training split with labels of -1 for unlabeled images

from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models.cnn import build_model
from mnistlab.pretraining import FewshotConfig, fewshot, load_backbone
from mnistlab.pretraining.config import GENERATED_DIGITS
from mnistlab.pretraining.fewshot import split_labels
from mnistlab.pretraining.propagate import embed_images, knn_graph, propagate_labels
from mnistlab.training import evaluate_run

SHIPPED = "pretrained:simclr-fast-cnn-wide"
PROP = {"dataset": "mnist-mini", "num_threads": 1, "seed": 0, "labels": 50,
        "student": "fast-cnn", "student_epochs": 1}  # fmt: skip


@pytest.fixture(scope="module")
def mini() -> tuple[np.ndarray, np.ndarray]:
    train = load_dataset("mnist-mini", "train")
    return train.images[:1500], train.labels[:1500].astype(np.int64)


# -- the algorithm


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 40), d=st.integers(2, 6), k=st.integers(1, 39), seed=st.integers(0, 99))
def test_knn_graph_is_the_brute_force_top_k_without_self(n: int, d: int, k: int, seed: int) -> None:
    k = min(k, n - 1)
    z = torch.nn.functional.normalize(
        torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1
    )
    neighbours, sims = knn_graph(z, k, chunk=7)  # several chunks: the self-mask is offset
    assert neighbours.shape == (n, k) and sims.shape == (n, k)
    assert not (neighbours == torch.arange(n)[:, None]).any()
    full = z @ z.T
    full.fill_diagonal_(-torch.inf)
    expected = full.topk(k, dim=1).values
    assert torch.allclose(sims, expected, atol=1e-6)
    assert torch.allclose(full.gather(1, neighbours), sims, atol=1e-6)
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(z, n)


def _two_rings() -> torch.Tensor:
    """Two rings of 30 points on parallel planes: neighbours are always on the same ring."""
    angle = torch.linspace(0, 2 * torch.pi, 31)[:-1]
    ring = torch.stack([angle.cos(), angle.sin()], 1)
    a = torch.cat([ring, torch.zeros(30, 1)], 1)
    b = torch.cat([ring, torch.full((30, 1), 5.0)], 1)
    return torch.nn.functional.normalize(torch.cat([a, b]) + torch.tensor([0, 0, 1.0]), dim=1)


def test_labels_spread_along_their_own_cluster_only() -> None:
    z = _two_rings()
    neighbours, sims = knn_graph(z, 2)
    assert ((neighbours < 30) == (torch.arange(60) < 30)[:, None]).all()  # two components
    probs = propagate_labels(neighbours, sims, torch.tensor([0, 45]), torch.tensor([1, 0]), 3)
    assert torch.allclose(probs.sum(1), torch.ones(60))
    assert (probs[:30].argmax(1) == 1).all() and (probs[30:].argmax(1) == 0).all()
    # class 2 has no label: no image gets it; a component with no label is uniform
    only_a = propagate_labels(neighbours, sims, torch.tensor([3]), torch.tensor([2]), 3)
    assert (only_a[:30].argmax(1) == 2).all()
    assert torch.allclose(only_a[30:], torch.full((30, 3), 1 / 3))


def test_class_mass_normalisation_stops_a_class_winning_by_numbers() -> None:
    """One ring, class 0 labelled on 5 neighbouring points, class 1 on the opposite point:
    without the per-class normalisation class 0 would take the whole ring."""
    z = _two_rings()[:30]
    neighbours, sims = knn_graph(z, 2)
    labelled = torch.tensor([0, 1, 2, 28, 29, 15])
    probs = propagate_labels(
        neighbours, sims, labelled, torch.tensor([0, 0, 0, 0, 0, 1]), 2, alpha=0.99
    )
    assert probs[15].argmax() == 1 and probs[0].argmax() == 0
    assert 5 <= int((probs.argmax(1) == 1).sum()) <= 25


def test_bad_propagation_arguments_are_clear_errors() -> None:
    neighbours, sims = knn_graph(_two_rings(), 2)
    with pytest.raises(ValueError, match="alpha"):
        propagate_labels(neighbours, sims, torch.tensor([0]), torch.tensor([0]), 2, alpha=1.0)
    with pytest.raises(ValueError, match="class indices"):
        propagate_labels(neighbours, sims, torch.tensor([0]), torch.tensor([2]), 2)
    with pytest.raises(ValueError, match="same length"):
        propagate_labels(neighbours, sims, torch.tensor([0, 1]), torch.tensor([0]), 2)


def test_embedding_is_seeded_unit_length_and_reduced(mini: tuple) -> None:
    state, _ = load_backbone(SHIPPED, "fast-cnn-wide")
    net = build_model("fast-cnn-wide")
    net.features.load_state_dict(state)
    images = mini[0][:300]
    before = torch.random.get_rng_state()
    z = embed_images(net.features, images, dims=16, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())  # the caller's stream is untouched
    assert z.shape == (300, 16) and torch.allclose(z.norm(dim=1), torch.ones(300), atol=1e-5)
    assert torch.equal(z, embed_images(net.features, images[:, None], dims=16, seed=3))
    full = embed_images(net.features, images, dims=None)
    assert full.shape == (300, 128 * 3 * 3)


# -- the method: config, run folder, hidden labels, resume


def test_propagate_needs_a_backbone_and_a_student() -> None:
    with pytest.raises(MnistlabError, match="needs a backbone") as info:
        FewshotConfig(pretrained=None)
    assert "--method consistency" in info.value.hint
    with pytest.raises(MnistlabError, match="a student must learn them"):
        FewshotConfig(student=None)
    with pytest.raises(MnistlabError, match="method must be one of"):
        FewshotConfig(method="magic")
    FewshotConfig(method="consistency", pretrained=None, student=None)  # fine there


def test_a_run_recorded_before_the_methods_replays_as_consistency(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"kind": "fewshot", "labels": 10}))
    assert FewshotConfig.from_run(tmp_path).method == "consistency"
    assert FewshotConfig.from_dict({"labels": 10}).method == "propagate"


@pytest.mark.parametrize("generated", [0, 100])
def test_hidden_labels_are_never_read_by_propagation(
    tmp_path: Path, mini: tuple, generated: int
) -> None:
    """The same run with every label outside the drawn subset replaced by -1 gives the same
    pseudo-labels and a bit-identical student; generated digits, labelled nodes of the graph
    recorded with their fonts, change nothing to that, and are not trained on."""
    images, labels = mini
    config = FewshotConfig(**{**PROP, "generated_digits": generated})
    a = fewshot(config, out=tmp_path / "a", data=Split(images, labels), progress=False)
    drawn, _ = split_labels(labels, config.labels, config.seed)
    hidden = np.full_like(labels, -1)
    hidden[drawn] = labels[drawn]
    b = fewshot(config, out=tmp_path / "b", data=Split(images, hidden), progress=False)
    pairs = zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True)
    for (name, x), (_, y) in pairs:
        assert torch.equal(x, y), name
    assert a.final_accuracy == b.final_accuracy and a.final_dir == a.run_dir / "student"
    facts = json.loads((b.run_dir / "propagation.json").read_text())
    assert facts["num_labeled"] == 50 and facts["num_pseudo"] == 1450
    assert facts["pseudo_label_accuracy"] is None  # no hidden label to compare with
    student = json.loads((b.final_dir / "config.json").read_text())["train_data"]
    assert student["source"] == "label-propagation" and student["labels"] is None
    assert student["num_images"] == 1500  # the real images alone
    if generated:
        assert facts["generated_digits"]["count"] == generated
        assert len(facts["generated_digits"]["fonts_sha256"]) == 64
    else:
        assert facts["generated_digits"] is None


def test_propagate_run_from_the_cli_is_an_ordinary_run_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    text = cli("fewshot", "-d", "mnist-mini", "--labels", "50", "--student", "fast-cnn",
               "--student-epochs", "2", "--threads", "1", "--out", out)  # fmt: skip
    flat = " ".join(text.split())  # wrapped at any terminal width
    assert "pseudo-labels in" in flat and "right (the hidden labels, read after)" in flat
    assert "final model:" in flat and "consistency training" not in flat
    facts = json.loads((out / "propagation.json").read_text())
    assert facts["labels"] == 50 and facts["neighbors"] == 10
    assert 0.8 < facts["pseudo_label_accuracy"] <= 1  # the shipped backbone on real digits
    saved = json.loads((out / "config.json").read_text())
    assert saved["kind"] == "fewshot" and saved["method"] == "propagate"
    metrics = json.loads((out / "metrics.json").read_text())
    report = evaluate_run(out)  # the run folder leads to its one model, the student
    assert report["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert metrics["test_accuracy"] > 0.6
    again = cli("fewshot", "--resume", out)  # finished: reused, not redone
    assert "final model:" in again and "pseudo-labels" not in again
    # An interrupted student: its checkpoint is continued after the labels are made again.
    (out / "student" / "metrics.json").unlink()
    shutil.rmtree(out / "student" / "model")
    resumed = cli("fewshot", "--resume", out)
    assert "pseudo-labels" in resumed
    after = json.loads((out / "metrics.json").read_text())
    assert after["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    teacher = cli("self-train", "--teacher", out / "student", "--epochs", "1", "--quiet",
                  "--out", tmp_path / "next")  # fmt: skip
    assert "test accuracy" in teacher
    scratch = cli("fewshot", "-d", "mnist-mini", "--from", "scratch", code=1)
    flat = " ".join(scratch.split())
    assert "needs a backbone" in flat and "--method consistency" in flat


# -- generated digits as more labelled nodes


def test_generated_digits_by_default_only_for_digits_and_propagation(tmp_path: Path) -> None:
    digits = [str(d) for d in range(10)]
    clothes = ["T-shirt", "Trouser", *(f"c{i}" for i in range(8))]
    assert FewshotConfig().generated_count(digits) == GENERATED_DIGITS == 100
    assert FewshotConfig().generated_count(clothes) == 0
    assert FewshotConfig(method="consistency").generated_count(digits) == 0
    assert FewshotConfig(generated_digits=0).generated_count(digits) == 0
    assert FewshotConfig(generated_digits=7).generated_count(digits) == 7
    # a run recorded before the setting existed replays without generated digits
    (tmp_path / "config.json").write_text(json.dumps({"kind": "fewshot", "method": "propagate"}))
    assert FewshotConfig.from_run(tmp_path).generated_count(digits) == 0


def test_generated_digits_need_propagation_and_a_digit_dataset(tmp_path: Path) -> None:
    with pytest.raises(MnistlabError, match="generated_digits must be >= 0"):
        FewshotConfig(generated_digits=-1)
    with pytest.raises(MnistlabError, match="need method propagate"):
        FewshotConfig(method="consistency", generated_digits=10)
    train = load_dataset("mnist-mini", "train")
    clothes = Split(train.images[:200], train.labels[:200].astype(np.int64))
    clothes.class_names = ["T-shirt", "Trouser", *(f"c{i}" for i in range(8))]
    config = FewshotConfig(**{**PROP, "generated_digits": 10})
    with pytest.raises(MnistlabError, match="digits 0-9") as info:
        fewshot(config, out=tmp_path / "run", data=clothes, progress=False)
    assert "generated_digits" in info.value.hint and not (tmp_path / "run").exists()


def test_generated_digits_lift_the_pseudo_labels_of_one_label_per_class(tmp_path: Path) -> None:
    """One label per class on mnist-mini: the generated digits' labels reach the styles the
    ten drawn images do not show (on full MNIST: 95.9 % -> 98.6 % of pseudo-labels right)."""
    right = {}
    for count in (0, 100):
        config = FewshotConfig(**{**PROP, "labels": 10, "generated_digits": count})
        fewshot(config, out=tmp_path / f"g{count}", progress=False)
        facts = json.loads((tmp_path / f"g{count}" / "propagation.json").read_text())
        right[count] = facts["pseudo_label_accuracy"]
    assert right[100] > right[0] + 0.01, right
