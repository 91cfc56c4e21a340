"""Generated digits (data/synthetic.py): MNIST form, the fonts kept and dropped, stroke
templates, determinism, and training with them (``generated_digits``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_engine import BASE, tiny

import mnistlab
from mnistlab.data import synthetic as sy
from mnistlab.errors import MnistlabError
from mnistlab.training.engine import train_model

MATPLOTLIB_FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@pytest.fixture(scope="module")
def fonts() -> list[Path]:
    """matplotlib's own fonts: on every machine that has mnistlab."""
    return sy.find_fonts([MATPLOTLIB_FONTS])


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 60), st.integers(1, 60)),
              elements=st.floats(0, 1, width=32)))  # fmt: skip
@example(np.full((3, 3), 1e-40, dtype=np.float32))  # subnormal ink: once NaN, cast to uint8
@example(np.array([[1.0] + [1e-45] * 20], dtype=np.float32))  # subnormal beside full ink
def test_mnist_form_fits_the_box_and_centres_the_mass(ink: np.ndarray) -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is harmless
        out = sy.mnist_form(ink)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    if not (ink > 0).any():
        assert not out.any()
        return
    if not out.any():  # ink so faint that Lanczos rounds it away: nothing to check
        return
    assert out.max() == 255
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22  # 20 and Lanczos' ringing
    # The centre of mass lands on (14, 14) to a whole pixel's rounding unless the patch had
    # to be kept inside the field, which a centre in the middle of the ink never needs.
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float64)
    inside = []
    for axis in (1, 0):
        profile = crop.sum(axis=axis)
        centre = profile @ np.arange(len(profile)) / profile.sum()
        inside.append(0.35 <= (centre + 0.5) / len(profile) <= 0.65)
    mass = out.astype(np.float64)
    centres = ((mass.sum(axis=1) @ np.arange(28)) / mass.sum(),
               (mass.sum(axis=0) @ np.arange(28)) / mass.sum())  # fmt: skip
    for centre, middle in zip(centres, inside, strict=True):
        assert not middle or abs(centre - 14) <= 0.75, centres


def test_a_digit_is_fitted_like_mnist_fits_its_digits() -> None:
    ink = np.zeros((100, 40), dtype=np.float32)
    ink[10:90, 15:25] = 1.0  # a bar 80 high, 10 wide: a 1
    out = sy.mnist_form(ink)
    rows, cols = np.flatnonzero(out.any(axis=1) > 0), np.flatnonzero(out.any(axis=0) > 0)
    assert 20 <= rows[-1] - rows[0] + 1 <= 22 and cols[-1] - cols[0] + 1 <= 5
    mass = out.astype(np.float64)
    assert abs((mass.sum(axis=1) @ np.arange(28)) / mass.sum() - 14) <= 0.5
    assert abs((mass.sum(axis=0) @ np.arange(28)) / mass.sum() - 14) <= 0.5


def test_fonts_that_draw_digits_are_kept_and_symbol_fonts_dropped(fonts: list[Path]) -> None:
    names = {f.name for f in fonts}
    assert {"DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "cmr10.ttf"} <= names
    # Computer Modern's symbol and extension fonts put signs where the digits go
    assert not {"cmsy10.ttf", "cmex10.ttf"} & names
    assert fonts == sorted(fonts)
    assert sy.find_fonts([MATPLOTLIB_FONTS / "nowhere"]) == []
    digest = sy.fonts_digest(fonts)
    assert digest == sy.fonts_digest(list(fonts)) and digest != sy.fonts_digest(fonts[:-1])


def test_generated_digits_are_seeded_balanced_and_in_mnist_form(fonts: list[Path]) -> None:
    images, labels = sy.generate_digits(200, seed=3, fonts=fonts)
    again, labels_again = sy.generate_digits(200, seed=3, fonts=fonts)
    other, _ = sy.generate_digits(200, seed=4, fonts=fonts)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    assert (images.reshape(200, -1).max(axis=1) == 255).all()
    # the border MNIST leaves blank stays nearly blank
    assert images[:, :2].mean() < 2 and images[:, :, :2].mean() < 2


def test_templates_alone_draw_the_styles_mnist_lacks() -> None:
    images, labels = sy.generate_digits(60, seed=0, fonts=[], template_share=1.0)
    templated = {d for d, _ in sy.STYLES}
    # without fonts, only the digits that have a template are drawn, in equal numbers
    assert set(labels.tolist()) == templated
    assert len(set(np.bincount(labels)[sorted(templated)].tolist())) == 1
    assert (images.reshape(60, -1).max(axis=1) == 255).all()
    rng = np.random.default_rng(0)
    for digit in templated:
        ink = sy.draw_template(digit, rng)
        assert ink.max() == 1.0 and 0.05 < ink.mean() < 0.5
    with pytest.raises(ValueError, match="no stroke template for digit 8"):
        sy.draw_template(8, rng)


def test_a_crossbar_is_drawn_through_the_seven(fonts: list[Path]) -> None:
    from PIL import ImageFont

    seven = sy._glyphs(ImageFont.truetype(str(fonts[0]), sy.GLYPH))[7]
    crossed = sy.cross_seven(seven, np.random.default_rng(0))
    added = (crossed > 0.5) & ~(seven > 0.5)
    rows = np.flatnonzero(added.any(axis=1))
    assert added.sum() > 20 and rows.size  # new ink ...
    middle = (rows.mean() / seven.shape[0])
    assert 0.35 < middle < 0.7  # ... across the middle
    assert np.array_equal(crossed >= seven, np.ones_like(seven, dtype=bool))  # nothing erased


def test_pen_width_reaches_the_width_asked_for() -> None:
    ink = np.zeros((80, 80), dtype=np.float32)
    ink[5:75, 38:42] = 1.0  # a stroke 4 wide, 70 high: 0.057 of the height
    for target in (0.1, 0.2):
        out = sy.pen_width(ink, target)
        width = (out > 0.5).sum(axis=1).max()
        assert abs(width - target * 70) <= 2.5
    assert sy.pen_width(np.zeros((5, 5), np.float32), 0.1).sum() == 0


def test_bad_arguments_are_refused(fonts: list[Path]) -> None:
    with pytest.raises(ValueError, match="shares"):
        sy.generate_digits(10, template_share=1.5, fonts=fonts)
    with pytest.raises(ValueError, match="no font"):
        sy.generate_digits(10, fonts=[])
    fashion = mnistlab.load_dataset("mnist-mini", "train", download=False)
    fashion = replace(fashion, class_names=("T-shirt",) * 10)
    with pytest.raises(MnistlabError, match="digits 0-9"):
        sy.with_generated_digits(fashion, 10)


def test_a_run_trains_on_generated_digits_and_records_the_fonts(tmp_path: Path) -> None:
    config = replace(BASE, epochs=1, augment=None, generated_digits=120)
    result = train_model(config, out=tmp_path / "run", model_factory=tiny, progress=False)
    saved = json.loads((result.run_dir / "config.json").read_text())
    real = len(mnistlab.load_dataset("mnist-mini", "train", download=False))
    assert saved["generated_digits"] == 120
    assert saved["num_train"] == real - 500 + 120  # validation stays real data
    assert saved["num_val"] == 500
    assert saved["generated"]["fonts"] and len(saved["generated"]["fonts_sha256"]) == 64
    # the same config gives the same generated digits: the same training data
    again = train_model(config, out=tmp_path / "again", model_factory=tiny, progress=False)
    saved_again = json.loads((again.run_dir / "config.json").read_text())
    assert saved_again["generated"]["train_sha256"] == saved["generated"]["train_sha256"]
    with pytest.raises(MnistlabError, match="generated_digits must be >= 0"):
        replace(BASE, generated_digits=-1)


# -- the shipped digit model (pretrained:handwriting), what `mnistlab serve` serves by default


def test_the_shipped_handwriting_model_reads_other_writers_and_is_served_by_default() -> None:
    from typer.testing import CliRunner

    from mnistlab.cli.main import app
    from mnistlab.models.hub import get_pretrained
    from mnistlab.shipping import load_model

    card = get_pretrained("handwriting")
    assert card.weights_bytes <= 5_000_000  # the budget
    assert card.card["architecture"] == "resnet-small"
    assert "generated_digits=" in card.card["command"]
    assert len(card.card["data"]["fonts_sha256"]) == 64
    model = load_model("pretrained:handwriting", threads=1)
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    accuracy = float((model.probabilities(test.images).argmax(1) == test.labels).mean())
    assert accuracy >= 0.99, accuracy
    # 1,797 digits by 13 writers who are not in MNIST, from 8x8 scans
    other = mnistlab.load_dataset("sklearn-digits", "test")
    accuracy = float((model.probabilities(other.images).argmax(1) == other.labels).mean())
    assert accuracy >= 0.95, accuracy
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=80)
    assert result.exit_code == 0
    assert "pretrained:handwriting" in " ".join(result.output.split())
    shown = CliRunner().invoke(app, ["models", "show", "handwriting"], terminal_width=80)
    text = " ".join(shown.output.split())
    assert shown.exit_code == 0 and "sklearn-digits test split (1,797 digits):" in text
    assert "abstaining on the least sure 2 %" in text and "None" not in text
    from fastapi.testclient import TestClient

    from mnistlab.cli.shipping import DEFAULT_MODEL
    from mnistlab.shipping.serve import create_app

    client = TestClient(create_app(DEFAULT_MODEL))
    answer = client.post("/v1/predict", json={"image": test.images[0].tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == str(test.labels[0])
