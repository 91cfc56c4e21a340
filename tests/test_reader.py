"""The number reader (models/reader.py, shipping/reader_training.py): CTC decoding, the line a
reader sees, deterministic training pictures, a tiny training run that resumes exactly, and
reading through the library and the command line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_support import cli
from hypothesis import given, settings
from hypothesis import strategies as st

import mnistlab
from mnistlab.data.numbers import number_set
from mnistlab.errors import MnistlabError
from mnistlab.models.reader import (
    BLANK,
    LINE_HEIGHT,
    NumberReader,
    align,
    best_path,
    consensus,
    decode,
    load_reader,
    log_likelihood,
    stretched,
)
from mnistlab.shipping.read import LineReader, load_number_model, number_line, read_number
from mnistlab.shipping.reader_config import ReaderConfig
from mnistlab.shipping.reader_training import load_lines, make_lines, train_reader

TINY = {"dataset": "mnist-mini", "numbers": 120, "epochs": 2, "batch_size": 16,
        "test_numbers": 4, "max_digits": 4, "num_threads": 1, "width": 16,
        "generated_digits": 0}  # fmt: skip


def _frames(*outputs: int, sure: float = 0.9) -> torch.Tensor:
    """Log-probabilities whose most likely output per frame is ``outputs``."""
    p = torch.full((len(outputs), 11), (1 - sure) / 10)
    for t, k in enumerate(outputs):
        p[t, k] = sure
    return p.log()


def test_greedy_decoding_merges_runs_and_drops_blanks() -> None:
    b = BLANK
    found = decode(_frames(b, 1, 1, b, 1, 7, 7, 7, b, b, 0))
    assert [d.digit for d in found] == [1, 1, 7, 0]  # a blank separates two ones
    assert [(d.start, d.stop) for d in found] == [(1, 3), (4, 5), (5, 8), (10, 11)]
    assert all(d.confidence == pytest.approx(0.9) for d in found)
    assert all(d.probabilities.sum() == pytest.approx(1) for d in found)
    assert decode(_frames(b, b, b)) == []
    assert [d.digit for d in decode(_frames(3, 4, 5), length=2)] == [3, 4]


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 40), st.integers(0, 2**31 - 1), st.floats(0.1, 10))
def test_decoding_any_output_gives_ordered_disjoint_digits(frames: int, seed: int, scale: float):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(frames, 11, generator=g) * scale, -1)
    found = decode(log_probs)
    assert len(found) <= frames
    for a, b in itertools.pairwise(found):
        assert a.stop <= b.start and (a.stop < b.start or a.digit != b.digit)
    for d in found:
        assert 0 <= d.digit <= 9 and 0 < d.confidence <= 1 and 0 <= d.start < d.stop <= frames
        assert d.probabilities.argmax() == d.digit  # the surest frame's best digit is the digit


def _collapse(labels) -> list[int]:
    """CTC's rule: runs of one label merged, blanks dropped."""
    return [int(a) for i, a in enumerate(labels) if a != BLANK and (i == 0 or labels[i - 1] != a)]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(0, 4), st.integers(0, 2**31 - 1), st.floats(0.2, 5))
def test_the_best_path_of_a_known_length_is_the_best_of_all_labellings(
    frames: int, digits: int, seed: int, scale: float
) -> None:
    """Checked against every labelling of a few frames (11 ** 4 of them at most)."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(frames, 11, generator=g) * scale, -1).double().numpy()
    best, best_score = None, -np.inf
    for labels in itertools.product(range(11), repeat=frames):
        score = log_probs[np.arange(frames), labels].sum()
        if len(_collapse(labels)) == digits and score > best_score:
            best, best_score = labels, score
    found = best_path(log_probs, digits)
    if best is None:  # e.g. more digits than frames
        assert found is None
        return
    assert found is not None and len(_collapse(found)) == digits
    assert log_probs[np.arange(frames), found].sum() == pytest.approx(best_score, abs=1e-9)
    read = decode(log_probs, digits=digits)
    assert [d.digit for d in read] == _collapse(found)


def test_a_known_length_mends_a_digit_read_twice_or_missed() -> None:
    b = BLANK
    twice = _frames(b, 4, b, 1, 4, b, 7, b)  # a weak 1 read between two 4s
    twice[3] = torch.log(torch.tensor([0.05] + [0.5] + [0.05] * 8 + [0.4]))
    assert [d.digit for d in decode(twice)] == [4, 1, 4, 7]
    assert [d.digit for d in decode(twice, digits=3)] == [4, 4, 7]
    missed = _frames(b, 2, b, b, b, 8, b)
    missed[3] = torch.log(torch.tensor([0.02] * 3 + [0.4] + [0.02] * 6 + [0.44]))
    assert [d.digit for d in decode(missed, digits=3)] == [2, 3, 8]
    assert decode(_frames(b, 1, b), digits=4) == []  # three frames cannot hold four digits


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.lists(st.integers(0, 9), max_size=3), st.integers(0, 2**31 - 1),
       st.floats(0.2, 5))  # fmt: skip
def test_alignment_and_likelihood_of_a_string_agree_with_every_labelling(
    frames: int, text: list[int], seed: int, scale: float
) -> None:
    """Checked against every labelling of a few frames: the forced alignment is the best one
    that reads as the string, the likelihood the sum over all of them."""
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.log_softmax(torch.randn(frames, 11, generator=g) * scale, -1).double().numpy()
    best, best_score, total = None, -np.inf, 0.0
    for labels in itertools.product(range(11), repeat=frames):
        if _collapse(labels) == text:
            score = log_probs[np.arange(frames), labels].sum()
            total += np.exp(score)
            if score > best_score:
                best, best_score = labels, score
    string = "".join(map(str, text))
    found = align(log_probs, text)
    if best is None:  # the frames cannot hold the string
        assert found is None and log_likelihood(log_probs, string) == -np.inf
        assert decode(log_probs, text=string) == []
        return
    assert found is not None and _collapse(found) == text
    assert log_probs[np.arange(frames), found].sum() == pytest.approx(best_score, abs=1e-9)
    assert log_likelihood(log_probs, string) == pytest.approx(np.log(total), abs=1e-4)
    assert [d.digit for d in decode(log_probs, text=string)] == text


def test_the_views_agree_on_the_string_they_find_most_likely_together() -> None:
    b = BLANK
    sure = _frames(b, 4, b, 7, b, 1, b)
    torn = _frames(b, 4, b, 7, b, 1, b)  # the line as it is: the 1 unsure, a blank near it
    torn[5] = torch.log(torch.tensor([0.02] + [0.45] + [0.02] * 8 + [0.39]))
    assert [d.digit for d in decode(torn)] == [4, 7, 1]
    torn[5] = torch.log(torch.tensor([0.02] + [0.39] + [0.02] * 8 + [0.45]))
    assert [d.digit for d in decode(torn)] == [4, 7]
    # two other views read 471 surely: their likelihood outweighs the first view's doubt
    read = consensus([torn, sure, sure])
    assert [d.digit for d in read] == [4, 7, 1] and read[2].start == 5
    assert [d.digit for d in consensus([torn])] == [4, 7]  # one view: its own reading
    assert [d.digit for d in consensus([sure, torn, torn])] == [4, 7, 1]
    assert [d.digit for d in consensus([torn, sure, sure], digits=2)] == [4, 7]
    line = np.random.default_rng(0).random((LINE_HEIGHT, 50)).astype(np.float32)
    views = stretched(line)
    assert [tuple(v.shape) for v in views] == [(1, 1, LINE_HEIGHT, 50), (1, 1, LINE_HEIGHT, 42),
                                               (1, 1, LINE_HEIGHT, 57)]  # fmt: skip
    assert torch.equal(views[0][0, 0], torch.from_numpy(line))


def test_the_reader_sees_a_line_of_fixed_height_and_nothing_in_a_blank_picture() -> None:
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    for picture in number_set(test.images, test.labels, 6, seed=3, touching=0.5):
        line = number_line(picture.image)
        assert line is not None
        assert line.pixels.shape[0] == LINE_HEIGHT and line.pixels.dtype == np.float32
        assert line.pixels.min() >= 0 and line.pixels.max() <= 1 and line.pixels.max() > 0.5
        # the line's first and last ink columns map back to the number's ends in the picture
        cols = np.flatnonzero(line.pixels.max(axis=0) > 0.3)
        left = (cols[0] - 4) / line.factor + line.x0
        right = (cols[-1] + 1 - 4) / line.factor + line.x0
        h = picture.boxes[0][3] - picture.boxes[0][1]
        assert abs(left - picture.boxes[0][0]) < 0.25 * h
        assert abs(right - max(b[2] for b in picture.boxes)) < 0.25 * h
    assert number_line(np.full((40, 90), 230, dtype=np.uint8)) is None


def test_training_pictures_are_the_same_whatever_the_number_of_processes() -> None:
    config = ReaderConfig(**{**TINY, "numbers": 60})
    one = make_lines(config, workers=1)
    two = make_lines(config, workers=2)
    assert one.texts == two.texts and np.array_equal(one.pixels, two.pixels)
    assert all(1 <= len(t) <= 4 for t in one.texts)
    assert one.pixels.shape == (LINE_HEIGHT, one.widths.sum())


def test_a_tiny_reader_trains_resumes_exactly_and_reads(tmp_path: Path) -> None:
    config = ReaderConfig(**TINY)
    whole = train_reader(config, out=tmp_path / "whole", progress=False)
    part = train_reader(config, out=tmp_path / "part", progress=False, max_epochs=1)
    assert part.metrics == {}
    lines = load_lines(tmp_path / "part" / "lines.npz")  # made once, kept for the resume
    assert len(lines) == len(load_lines(tmp_path / "whole" / "lines.npz"))
    done = train_reader(None, resume=tmp_path / "part", progress=False)
    for (name, x), (_, y) in zip(whole.model.state_dict().items(),
                                 done.model.state_dict().items(), strict=True):  # fmt: skip
        assert torch.equal(x, y), name
    history = [json.loads(r) for r in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[1]["train_loss"] < history[0]["train_loss"]
    metrics = json.loads((whole.run_dir / "metrics.json").read_text())
    assert set(metrics["test"]) == {"photo, digits apart", "photo, 30 % of pairs touching"}
    net, manifest = load_reader(whole.run_dir)
    assert isinstance(net, NumberReader) and manifest["config"]["numbers"] == 120
    reader = load_number_model(whole.run_dir, threads=1)
    assert isinstance(reader, LineReader)
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    picture = number_set(test.images, test.labels, 1, seed=1)[0]
    reading = read_number(picture.image, reader)
    assert reading.reason is None or reading.text == ""
    for digit in reading.digits:  # whatever a tiny reader reads, its boxes lie in the picture
        x0, y0, x1, y1 = digit.box
        assert 0 <= x0 < x1 <= picture.image.shape[1] and 0 <= y0 < y1 <= picture.image.shape[0]
        assert digit.digit in "0123456789" and 0 <= digit.confidence <= 1
    listed = cli("runs", "list", "--root", tmp_path)
    assert "number-reader" in listed and "?" not in listed.split("created")[1]
    # The command line takes the run like any model; a CNN run is not a number reader.
    out = cli("read", whole.run_dir, tmp_path / "none.png", code=1)
    assert "none.png" in out and "Traceback" not in out
    with pytest.raises(MnistlabError, match="number reader"):
        load_reader(tmp_path / "whole" / "config.json")


def test_train_reader_cli_refuses_bad_settings_before_work(tmp_path: Path) -> None:
    text = cli("train-reader", "--numbers", "0", "--out", tmp_path / "r", code=1)
    assert "numbers must be >= 1" in text and not (tmp_path / "r").exists()
    text = cli("train-reader", "--set", "max_touching=2", "--out", tmp_path / "r", code=1)
    assert "max_touching" in text
    assert "touching" in cli("train-reader", "--help")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"kind": "fewshot", "labels": 10}))
    assert "not a number reader training" in cli("train-reader", "--resume", other, code=1)


def test_a_reader_manifest_with_a_bad_width_is_refused_before_building(tmp_path: Path) -> None:
    from mnistlab.models.files import READER_FORMAT, tensors_to_bytes, write_model_file

    weights = tensors_to_bytes(dict(NumberReader(16).state_dict()))
    for width in (10**9, "16", True, 4):
        write_model_file(tmp_path / str(width), weights, {"width": width}, fmt=READER_FORMAT)
        with pytest.raises(MnistlabError, match="width"):
            load_reader(tmp_path / str(width))
    write_model_file(tmp_path / "wrong", weights, {"width": 32}, fmt=READER_FORMAT)
    with pytest.raises(MnistlabError, match="do not fit"):
        load_reader(tmp_path / "wrong")
    write_model_file(tmp_path / "ok", weights, {"width": 16}, fmt=READER_FORMAT)
    assert load_reader(tmp_path / "ok")[0].width == 16


def test_line_variants_stay_in_range_keep_their_padding_and_are_seeded() -> None:
    from mnistlab.shipping.reader_training import augment_lines

    lines = make_lines(ReaderConfig(**{**TINY, "numbers": 16}), workers=1)
    offsets, widths = lines.offsets(), torch.from_numpy(lines.widths[:8])
    x = torch.zeros(8, 1, LINE_HEIGHT, int(widths.max()))
    for i in range(8):
        w = int(widths[i])
        x[i, 0, :, :w] = torch.from_numpy(lines.pixels[:, offsets[i] : offsets[i] + w]) / 255
    same, same_widths = augment_lines(x, widths, torch.Generator().manual_seed(0), 0.0)
    assert same is x and same_widths is widths  # strength 0: the lines as they are
    y, new = augment_lines(x, widths, torch.Generator().manual_seed(0), 1.0)
    again, _ = augment_lines(x, widths, torch.Generator().manual_seed(0), 1.0)
    other, _ = augment_lines(x, widths, torch.Generator().manual_seed(1), 1.0)
    assert torch.equal(y, again) and not torch.equal(y, other)
    assert y.shape == (8, 1, LINE_HEIGHT, int(new.max())) and y.min() >= 0 and y.max() <= 1
    ratio = new.double() / widths.double()
    assert ((ratio >= 0.79) & (ratio <= 1.21)).all() and (ratio != 1).any()
    for i in range(8):  # nothing beyond a line's new width: the padding the CTC lengths skip
        assert not y[i, :, :, int(new[i]) :].any()
        assert y[i].sum() > 0.15 * x[i].sum()  # the ink is still there, if thinner ...
    assert y.sum() > 0.5 * x.sum()  # ... and most of it, over a batch


def test_digit_variants_change_the_pictures_and_old_runs_replay_without_them(
    tmp_path: Path,
) -> None:
    plain = make_lines(ReaderConfig(**{**TINY, "numbers": 8}))
    varied = make_lines(ReaderConfig(**{**TINY, "numbers": 8, "digit_augment": "mnist-sota"}))
    assert plain.texts == varied.texts  # the same numbers, drawn from other variants
    assert not np.array_equal(plain.pixels, varied.pixels)
    old = {k: v for k, v in ReaderConfig(**TINY).to_dict().items()
           if k not in ("augment", "digit_augment", "generated_digits")}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps({"kind": "reader", **old}))
    replayed = ReaderConfig.from_run(tmp_path)  # a run made before these settings existed
    assert replayed.augment == 0.0 and replayed.digit_augment == "none"
    assert replayed.generated_digits == 0 and ReaderConfig().generated_digits == 20000
    with pytest.raises(MnistlabError, match="digit_augment must be a preset"):
        ReaderConfig(digit_augment="wobbly")
    with pytest.raises(MnistlabError, match="augment is a strength"):
        ReaderConfig(augment=2.0)


def test_generated_digits_join_the_digits_lines_are_drawn_from() -> None:
    """Generated digits in the pool: made once, handed to every worker (the same pictures with
    one or two processes), and other pictures than MNIST's digits alone give."""
    config = ReaderConfig(**{**TINY, "numbers": 12, "generated_digits": 2000})
    one = make_lines(config, workers=1)
    two = make_lines(config, workers=2)
    assert one.texts == two.texts and np.array_equal(one.pixels, two.pixels)
    plain = make_lines(ReaderConfig(**{**TINY, "numbers": 12}), workers=1)
    assert one.texts != plain.texts  # the pool is larger: other digits are drawn
    with pytest.raises(MnistlabError, match="generated_digits must be >= 0"):
        ReaderConfig(generated_digits=-1)
