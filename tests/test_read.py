"""Reading whole numbers (mnistlab.shipping.read): synthetic numbers of real MNIST digits,
touching and not, clean and photographed; blank, noisy and hostile pictures; the command line
and the HTTP endpoint. The model is the shipping tests' small fast-cnn (mnist-mini, 3 epochs)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import mnistlab
from mnistlab.cli.main import app
from mnistlab.data.numbers import number_set, render_number
from mnistlab.errors import MnistlabError
from mnistlab.shipping import load_model, read_number, read_number_file
from mnistlab.shipping.read import load_number_model, number_line
from mnistlab.shipping.serve import ServeConfig, create_app
from tests.shipping_support import encode, trained_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def model(run: Path):
    return load_model(run)


@pytest.fixture(scope="module")
def sure_digits(model):
    """mnist-mini test digits that the small model reads right with confidence 0.95 or more as
    single digits: numbers made of them test the reading of numbers, not the model."""
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    images, labels = test.images, test.labels
    p = model.probabilities(images)
    keep = (p.argmax(1) == labels) & (p.max(1) >= 0.95)
    return images[keep], labels[keep]


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_number_sets_are_deterministic_and_honour_their_settings(sure_digits) -> None:
    images, labels = sure_digits
    a = number_set(images, labels, 4, seed=3, touching=0.0)
    b = number_set(images, labels, 4, seed=3, touching=0.0)
    assert [x.data for x in a] == [x.data for x in b] and [x.text for x in a] == [x.text for x in b]
    assert all(len(x.text) == 5 and not any(x.touching) for x in a)
    assert all(all(x.touching) for x in number_set(images, labels, 4, seed=3, touching=1.0))
    for picture in a:
        h, w = picture.image.shape
        assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in picture.boxes)
        assert Image.open(io.BytesIO(picture.data)).format == "JPEG"
    with pytest.raises(ValueError):
        number_set(images[:3], labels[:3], 1, digits=5)


@pytest.mark.parametrize("photo", [False, True])
def test_reads_numbers_whose_digits_stand_apart(model, sure_digits, photo: bool) -> None:
    images, labels = sure_digits
    pictures = number_set(images, labels, 12, seed=1, digits=4, touching=0.0, photo=photo)
    right = 0
    for picture in pictures:
        reading = read_number_file(picture.data, model)
        if reading.text == picture.text:
            right += 1
            for digit, box in zip(reading.digits, picture.boxes, strict=True):
                # the box found lies on the digit drawn (which holds faint edge pixels too)
                centre = (digit.box[0] + digit.box[2]) / 2
                assert box[0] <= centre <= box[2] and iou(digit.box, box) > 0.2, (digit.box, box)
            assert 0 < reading.confidence <= 1
            product = np.prod([d.confidence for d in reading.digits])
            assert reading.confidence == pytest.approx(product)
    assert right >= 11, right


def test_cuts_touching_digits_apart(model, sure_digits) -> None:
    images, labels = sure_digits
    pictures = number_set(images, labels, 12, seed=2, digits=3, touching=1.0, photo=False)
    right = sum(read_number_file(p.data, model).text == p.text for p in pictures)
    lengths = [len(read_number_file(p.data, model).text) for p in pictures]
    assert right >= 8, right  # every pair touches: the cuts are found by recognition
    assert lengths.count(3) >= 10, lengths


def test_blank_noisy_and_odd_pictures_get_an_answer_not_a_crash(model, sure_digits) -> None:
    blank = read_number(np.full((60, 200), 230.0), model)
    assert blank.text == "" and "blank" in blank.reason
    tiny = read_number(np.zeros((2, 2)), model)
    assert tiny.text == "" and tiny.reason
    rng = np.random.default_rng(0)
    for grey in (rng.uniform(0, 255, (80, 300)), rng.uniform(0, 255, (300, 5)),
                 np.tile(np.arange(256.0), (40, 1))):  # fmt: skip
        reading = read_number(grey, model)
        assert isinstance(reading.text, str) and len(reading.text) <= 32
        assert reading.text or reading.reason
    images, labels = sure_digits
    one = render_number([images[0]], [labels[0]], np.random.default_rng(0), photo=False)
    assert read_number_file(one.data, model).text == str(labels[0])
    with pytest.raises(mnistlab.shipping.InputError):
        read_number(np.full((10, 10), np.nan), model)
    with pytest.raises(mnistlab.shipping.InputError) as info:
        read_number_file(b"not a picture", model)
    assert info.value.status == 415


def test_read_command(run: Path, sure_digits, tmp_path: Path) -> None:
    images, labels = sure_digits
    picture = number_set(images, labels, 1, seed=5, digits=4, photo=False)[0]
    path = tmp_path / "number.png"
    path.write_bytes(picture.data)
    blank = tmp_path / "blank.png"
    blank.write_bytes(encode(np.full((40, 120), 255)))
    result = runner.invoke(app, ["read", str(run), str(path), str(blank), "--annotate",
                                 str(tmp_path / "seen")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert picture.text in result.output and "blank" in result.output
    assert (tmp_path / "seen" / "number.read.png").is_file()
    result = runner.invoke(app, ["read", str(run), str(path), "--json"])
    row = json.loads(result.output.splitlines()[0])
    assert row["text"] == picture.text and len(row["digits"]) == 4 and row["digits"][0]["box"]
    missing = runner.invoke(app, ["read", str(run), str(tmp_path / "nope.png")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    assert "Traceback" not in missing.output


def test_read_endpoint(run: Path, sure_digits) -> None:
    client = TestClient(create_app(run, ServeConfig(max_pixels=1_000_000)))
    images, labels = sure_digits
    picture = number_set(images, labels, 1, seed=6, digits=4)[0]
    # By default the shipped number reader reads; reader=None (`serve --reader model`) cuts
    # the line apart with the served classifier.
    cutting = TestClient(create_app(run, ServeConfig(max_pixels=1_000_000, reader=None)))
    for served, by in ((client, "number reader"), (cutting, "fast-cnn")):
        files = {"file": ("n.jpg", picture.data, "image/jpeg")}
        response = served.post("/v1/read", files=files)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["text"] == picture.text and len(body["digits"]) == 4
        assert by in body["model"], body["model"]
    blank = client.post("/v1/read", content=encode(np.full((40, 120), 255)),
                        headers={"content-type": "image/png"})  # fmt: skip
    assert blank.status_code == 200 and blank.json()["text"] == "" and blank.json()["reason"]
    huge = client.post("/v1/read", content=encode(np.full((1200, 1200), 255)),
                       headers={"content-type": "image/png"})  # fmt: skip
    assert huge.status_code == 413, huge.text
    text = client.post("/v1/read", content=b"hello", headers={"content-type": "text/plain"})
    assert text.status_code == 415
    array = client.post("/v1/read", json={"image": [[0] * 28] * 28})
    assert array.status_code == 422 and array.json()["error"]["code"] == "not_a_picture"


# -- the number reader that ships (pretrained:number-reader: CTC, the whole line at once)


@pytest.fixture(scope="module")
def reader():
    return load_number_model("pretrained:number-reader", threads=1)


def test_the_shipped_reader_reads_numbers_it_never_saw(reader) -> None:
    """Numbers made of MNIST *test* digits (all of mnist-mini's, not only sure ones)."""
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    apart = number_set(test.images, test.labels, 20, seed=1, digits=4, touching=0.0)
    right = 0
    for picture in apart:
        reading = read_number(picture.image, reader)
        if reading.text == picture.text:
            right += 1
            for digit, box in zip(reading.digits, picture.boxes, strict=True):
                centre = (digit.box[0] + digit.box[2]) / 2
                # each digit's own mark, not its strip with a neighbour's edge (_digit_ink)
                assert box[0] <= centre <= box[2] and iou(digit.box, box) > 0.7, (digit.box, box)
            product = np.prod([d.confidence for d in reading.digits])
            assert reading.confidence == pytest.approx(product)
    assert right >= 18, right
    # Every neighbouring pair touches or overlaps (the cutting reader's weak spot).
    touching = number_set(test.images, test.labels, 20, seed=1, digits=5, touching=1.0)
    right = sum(read_number(p.image, reader).text == p.text for p in touching)
    assert right >= 14, right


def test_a_classifier_reads_again_what_the_reader_found(reader) -> None:
    """The second opinion changes which digit, never how many or where."""
    both = load_number_model("pretrained:number-reader", threads=1,
                             classifier="pretrained:handwriting")  # fmt: skip
    assert both.classifier is not None and reader.classifier is None
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    pictures = number_set(test.images, test.labels, 20, seed=2, digits=4, touching=0.3)
    alone_right = both_right = 0
    for picture in pictures:
        alone, again = read_number(picture.image, reader), read_number(picture.image, both)
        assert [d.box for d in alone.digits] == [d.box for d in again.digits]
        for digit in again.digits:
            assert digit.digit == digit.top[0][0] and 0 < digit.confidence <= 1
            assert sum(p for _, p in digit.top) <= 1 + 1e-9
        alone_right += alone.text == picture.text
        both_right += again.text == picture.text
    assert both_right >= max(alone_right - 1, 16), (alone_right, both_right)


def test_three_views_of_the_line_read_at_least_as_well_as_one() -> None:
    """The line read as it is and stretched (models.reader.consensus) against the line alone;
    with one view the reading is the plain greedy decoding of that view."""
    from mnistlab.models.reader import decode

    one = load_number_model("pretrained:number-reader", threads=1)
    one.stretches = ()
    three = load_number_model("pretrained:number-reader", threads=1)
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    pictures = number_set(test.images, test.labels, 30, seed=4, digits=5, touching=0.3,
                          photo=True)  # fmt: skip
    right = {"one": 0, "three": 0}
    changed = 0
    for picture in pictures:
        a, b = read_number(picture.image, one), read_number(picture.image, three)
        right["one"] += a.text == picture.text
        right["three"] += b.text == picture.text
        changed += a.text != b.text
        line = number_line(picture.image)
        assert line is not None
        with torch.inference_mode():
            greedy = decode(one.net(torch.from_numpy(line.pixels)[None, None])[0])
        if len(greedy) == len(a.text):  # the count check left the reader's count alone
            assert "".join(str(d.digit) for d in greedy) == a.text
    assert right["three"] >= right["one"] >= 20, right
    assert changed <= 6, changed  # the views settle disagreements, they do not reread all


def test_the_reader_answers_blank_and_odd_pictures(reader) -> None:
    blank = read_number(np.full((60, 200), 230.0), reader)
    assert blank.text == "" and "blank" in blank.reason
    rng = np.random.default_rng(0)
    for grey in (rng.uniform(0, 255, (80, 300)), rng.uniform(0, 255, (300, 5)),
                 np.zeros((2, 2)), np.full((3000, 40), 128.0)):  # fmt: skip
        reading = read_number(grey, reader)
        assert len(reading.text) <= 32 and (reading.text or reading.reason)
        assert all(d.box[2] <= grey.shape[1] and d.box[3] <= grey.shape[0] for d in reading.digits)
    with pytest.raises(mnistlab.shipping.InputError):
        read_number(np.full((10, 10), np.inf), reader)


def test_read_command_and_endpoint_with_the_number_reader(run: Path, tmp_path: Path) -> None:
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    picture = number_set(test.images, test.labels, 1, seed=4, digits=5, touching=0.3)[0]
    path = tmp_path / "number.jpg"
    path.write_bytes(picture.data)
    result = runner.invoke(app, ["read", "pretrained:number-reader", str(path), "--json"],
                           env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[0])["text"] == picture.text
    # the model left out: `mnistlab read PICTURE...` reads with the shipped reader, the same
    twice = runner.invoke(app, ["read", str(path), str(path), "--json"], env={"COLUMNS": "80"})
    assert twice.exit_code == 0, twice.output
    assert [json.loads(line) for line in twice.output.splitlines()] == [
        json.loads(result.output.splitlines()[0])] * 2  # fmt: skip
    alone = runner.invoke(app, ["read", "pretrained:number-reader"], env={"COLUMNS": "80"})
    assert alone.exit_code == 1 and "no pictures given to read" in alone.output
    assert "Traceback" not in alone.output and "mnistlab read photo.jpg" in alone.output
    client = TestClient(create_app(run, ServeConfig(reader="pretrained:number-reader")))
    body = client.post("/v1/read", files={"file": ("n.jpg", picture.data, "image/jpeg")}).json()
    assert body["text"] == picture.text and "number reader" in body["model"]
    with pytest.raises(MnistlabError, match="no pretrained model"):
        create_app(run, ServeConfig(reader="pretrained:nope"))


def test_a_known_length_reads_exactly_that_many_digits(run: Path, reader, tmp_path: Path) -> None:
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    pictures = number_set(test.images, test.labels, 20, seed=5, digits=4, touching=0.3)
    free = known = 0
    for picture in pictures:
        for n in (3, 4, 5):
            assert len(read_number(picture.image, reader, digits=n).text) == n
        free += read_number(picture.image, reader).text == picture.text
        reading = read_number(picture.image, reader, digits=4)
        known += reading.text == picture.text
        assert reading.confidence == pytest.approx(np.prod([d.confidence for d in reading.digits]))
    assert known >= max(free, 17), (free, known)
    one = number_set(test.images, test.labels, 1, seed=5, digits=1)[0]
    short = read_number(one.image, reader, digits=32)  # more digits than its line holds
    assert short.text == "" and "exactly 32 digits" in short.reason
    cutter = load_model(run)
    for bad, code in ((0, "bad_digits"), (33, "bad_digits"), (True, "bad_digits"),
                      (2.5, "bad_digits")):  # fmt: skip
        with pytest.raises(mnistlab.shipping.InputError) as caught:
            read_number(pictures[0].image, reader, digits=bad)
        assert caught.value.code == code
    with pytest.raises(mnistlab.shipping.InputError, match="needs a number reader"):
        read_number(pictures[0].image, cutter, digits=4)
    # the endpoint and the command line
    picture = pictures[1]
    client = TestClient(create_app(run, ServeConfig(reader="pretrained:number-reader")))
    files = {"file": ("n.jpg", picture.data, "image/jpeg")}
    body = client.post("/v1/read?digits=4", files=files).json()
    assert len(body["text"]) == 4 and len(body["digits"]) == 4
    for query, code in (("digits=0", "bad_digits"), ("digits=abc", "invalid_request")):
        answer = client.post(f"/v1/read?{query}", files=files)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == code, answer.text
    cutting = TestClient(create_app(run, ServeConfig(reader=None)))
    answer = cutting.post("/v1/read?digits=4", files=files)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "digits_need_reader"
    assert "number reader" in answer.json()["error"]["message"]
    path = tmp_path / "number.jpg"
    path.write_bytes(picture.data)
    result = runner.invoke(app, ["read", "pretrained:number-reader", str(path), "--json",
                                 "--digits", "4"], env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output.splitlines()[0])["text"]) == 4
    for model, digits, code in (("pretrained:number-reader", "0", 2), (str(run), "4", 1)):
        result = runner.invoke(app, ["read", model, str(path), "--digits", digits],
                               env={"COLUMNS": "80"})  # fmt: skip
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output and "digits" in result.output


def test_a_digit_alone_in_its_mark_gives_the_classifier_more_say() -> None:
    """The product of experts: plain for a digit that shares its mark with a neighbour, the
    reader's probabilities square-rooted for one alone (its crop is clean)."""
    from mnistlab.shipping.preprocess import to_mnist
    from mnistlab.shipping.read import ALONE_READER_WEIGHT, _second_opinion

    classifier = load_model("pretrained:handwriting")
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    fours = test.images[test.labels == 4]
    q = classifier.probabilities(fours)
    four = fours[int(q[:, 4].argmax())]
    q = classifier.probabilities(to_mnist(four.astype(np.float32))[None])[0]  # as it is shown
    other = int(np.argsort(q)[-2])  # the classifier's second choice
    k = q[4] / q[other]
    odds = k**-1.5  # reader's odds of 4 against `other`: below 1/k, above 1/k**2
    reader = np.zeros(10)
    reader[4], reader[other] = odds / (1 + odds), 1 / (1 + odds)
    crop = [four.astype(np.float32) / 255.0]
    shared = _second_opinion([reader], crop, classifier, [False])[0]
    alone = _second_opinion([reader], crop, classifier, [True])[0]
    assert shared.argmax() == other and alone.argmax() == 4
    expected = reader**ALONE_READER_WEIGHT * q
    np.testing.assert_allclose(alone, expected / expected.sum(), rtol=1e-6)
    assert shared.sum() == pytest.approx(1) and alone.sum() == pytest.approx(1)


def test_the_count_check_takes_away_an_unsure_digit_in_a_narrow_mark() -> None:
    """A mark of ink no wider than ONE_DIGIT_WIDE digit heights read as two digits, one below
    DOUBT, holds one digit (a broken 0 read as "10"); a sure pair there (touching 1s), or an
    unsure pair in a wider mark (touching 5 and 3), stays two; digits alone are never taken."""
    from mnistlab.models.reader import LineDigit
    from mnistlab.shipping.read import DOUBT, ONE_DIGIT_WIDE, _by_mark, _recount

    height = 50.0

    def count(confidences: list[float], width: float, centres: list[float]) -> int:
        found = [LineDigit(1, c, 2 * k, 2 * k + 1, np.zeros(10))
                 for k, c in enumerate(confidences)]  # fmt: skip
        spans = [(100, 100 + round(width * height)), (300, 340)]
        return _recount(found, _by_mark(centres, spans), spans, height)

    narrow, wide = ONE_DIGIT_WIDE, ONE_DIGIT_WIDE + 0.3
    unsure, sure = DOUBT - 0.2, min(1.0, DOUBT + 0.05)
    assert count([1.0, unsure, 1.0], narrow, [110, 130, 320]) == 2
    assert count([unsure, 1.0, 1.0], narrow, [110, 130, 320]) == 2
    assert count([sure, 1.0, 1.0], narrow, [110, 130, 320]) == 3
    assert count([1.0, unsure, 1.0], wide, [110, 140, 320]) == 3
    assert count([unsure, unsure], narrow, [110, 320]) == 2  # one digit per mark: kept
    assert count([unsure, unsure], narrow, [110, 130]) == 1  # both in the narrow mark
    assert _by_mark([99.0, 100.0, 144.5, 145.0], [(100, 145)]) == [[1, 2]]


def test_a_digit_alone_in_its_mark_owns_the_whole_mark_and_nothing_else() -> None:
    """A narrow 1 between two wide digits gets its own ink, not the edges of its neighbours
    that fall in its strip; a wide digit keeps the edge that falls in a narrow neighbour's
    strip; two digits in one mark share it along the path of least ink (with even ink: the
    middle between them), without the next mark's ink; a loose piece goes with the digit
    whose strip holds it; a digit read between marks gets its strip of all ink."""
    from mnistlab.shipping.read import _digit_ink, _Line

    h, w = 40, 220
    ink = np.zeros((h, w), np.float32)
    marks = []
    for x0, x1 in ((10, 50), (60, 66), (76, 116), (130, 200)):  # 0, 1, 8, a touching pair
        mark = np.zeros((h, w), bool)
        mark[5:35, x0:x1] = True
        ink[mark] = 0.5 + x0 / 1000  # each mark's ink tells whose it is
        marks.append(mark)
    line = _Line(ink, marks, height=30.0, scale=1.0)
    spans = [(10, 50), (60, 66), (76, 116), (130, 200)]
    boxes, crops, alone = _digit_ink(line, [30.0, 63.0, 96.0, 150.0, 180.0], spans)
    assert boxes == [(10, 5, 50, 35), (60, 5, 66, 35), (76, 5, 116, 35),
                     (130, 5, 165, 35), (165, 5, 200, 35)]  # fmt: skip
    assert alone == [True, True, True, False, False]
    for crop, box in zip(crops, boxes, strict=True):
        assert crop is not None and crop.shape == (box[3] - box[1], box[2] - box[0])
    assert set(np.unique(crops[1])) == {np.float32(0.5 + 60 / 1000)}  # the 1's ink only
    assert crops[3].max() == crops[3].min() and crops[4].max() == crops[4].min()
    # a loose piece no digit was read in (a 5's bar) goes with the digit whose strip holds it
    bar = np.zeros((h, w), bool)
    bar[5:9, 118:126] = True
    line.ink[bar] = 0.3
    with_bar = _Line(line.ink, [*marks[:3], bar, marks[3]], height=30.0, scale=1.0)
    spans_bar = [*spans[:3], (118, 126), spans[3]]
    boxes, crops, alone = _digit_ink(with_bar, [30.0, 63.0, 96.0, 150.0, 180.0], spans_bar)
    assert boxes[2] == (76, 5, 126, 35) and alone[2]
    assert boxes[3] == (130, 5, 165, 35) and crops[3].min() > 0  # the pair keeps its own ink
    # a digit read at 122, between the 8 and the pair: its strip [109, 136) of all ink
    right = _Line(line.ink, marks[2:], height=30.0, scale=1.0)
    boxes, crops, alone = _digit_ink(right, [96.0, 122.0, 150.0], spans[2:])
    assert boxes == [(76, 5, 116, 35), (109, 5, 136, 35), (130, 5, 200, 35)]
    assert alone == [True, False, True]


def test_touching_digits_share_their_mark_along_the_path_of_least_ink() -> None:
    """Two touching digits whose meeting line is slanted: each gets its own side of it, not
    a straight cut at the middle between the two centres (which would give each a slice of
    the other)."""
    from mnistlab.shipping.read import _digit_ink, _Line

    h, w = 40, 80
    ink = np.zeros((h, w), np.float32)
    for y in range(5, 35):
        meet = 28 + (y - 5) // 3  # the slanted line where they touch: columns 28 to 37
        ink[y, 5:meet] = 0.6  # the left digit
        ink[y, meet] = 0.05  # faint ink where they meet
        ink[y, meet + 1 : 70] = 0.7  # the right digit
    mark = ink > 0
    line = _Line(ink, [mark], height=30.0, scale=1.0)
    boxes, crops, alone = _digit_ink(line, [20.0, 50.0], [(5, 70)])  # middle: column 35
    assert alone == [False, False]
    left, right = crops
    assert left is not None and right is not None
    assert 0.7 not in np.unique(left) and 0.6 not in np.unique(right)
    assert boxes[0][2] == 37 and boxes[1][0] == 28  # up to the slanted line, and from it
