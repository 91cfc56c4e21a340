"""Evaluation: metrics checked against scikit-learn, the figures, report.json and report.html."""

from __future__ import annotations

import base64
import json
import warnings
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

import mnistlab
from mnistlab.evaluation import (
    FIGURE_FILES,
    REPORT_FILES,
    ReportSection,
    classification_metrics,
    confusion_matrix,
    html_table,
    misclassified_indices,
    misclassified_title,
    most_confused_pairs,
    plot_confusion_matrix,
    plot_misclassified,
    plot_per_class_accuracy,
    render_report_html,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REQUIRED_KEYS = {
    "dataset",
    "model",
    "test_accuracy",
    "train_seconds",
    "num_test",
    "num_classes",
    "class_names",
    "macro_precision",
    "macro_recall",
    "macro_f1",
    "weighted_f1",
    "per_class",
    "most_confused",
    "confusion_matrix",
    "log_loss",
    "created",
    "files",
}


# ---------------------------------------------------------------------------- metrics vs sklearn


def _sklearn_reference(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, Any]:
    labels = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about classes absent from y_true/y_pred
        p, r, f, s = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0
        )
        macro = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average="macro", zero_division=0
        )
        weighted = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average="weighted", zero_division=0
        )
        confusion = skm.confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision": p,
        "recall": r,
        "f1": f,
        "support": s,
        "macro": macro[:3],
        "weighted": weighted[:3],
        "confusion": confusion,
    }


def _assert_matches_sklearn(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> None:
    m = classification_metrics(y_true, y_pred, k)
    ref = _sklearn_reference(y_true, y_pred, k)
    assert m.num_samples == len(y_true) and m.num_classes == k
    assert m.accuracy == pytest.approx(ref["accuracy"], abs=1e-12)
    np.testing.assert_allclose(m.precision, ref["precision"], atol=1e-12)
    np.testing.assert_allclose(m.recall, ref["recall"], atol=1e-12)
    np.testing.assert_allclose(m.f1, ref["f1"], atol=1e-12)
    assert m.support == ref["support"].tolist()
    np.testing.assert_allclose(
        (m.macro_precision, m.macro_recall, m.macro_f1), ref["macro"], atol=1e-12
    )
    np.testing.assert_allclose(
        (m.weighted_precision, m.weighted_recall, m.weighted_f1), ref["weighted"], atol=1e-12
    )
    assert m.weighted_recall == pytest.approx(m.accuracy, abs=1e-12)
    assert m.confusion == ref["confusion"].tolist()
    assert m.log_loss is None


@st.composite
def label_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    """(y_true, y_pred, num_classes), often with classes missing from one side or both."""
    k = draw(st.integers(1, 12))
    n = draw(st.integers(1, 200))
    # Labels drawn from (possibly small) subsets of the classes: absent classes are common.
    true_pool = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    pred_pool = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    y_true = draw(st.lists(st.sampled_from(true_pool), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.sampled_from(pred_pool), min_size=n, max_size=n))
    return np.array(y_true), np.array(y_pred), k


@settings(max_examples=300, deadline=None)
@given(label_pairs())
def test_metrics_match_sklearn(case: tuple[np.ndarray, np.ndarray, int]) -> None:
    _assert_matches_sklearn(*case)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12), st.integers(1, 150), st.integers(0, 2**32 - 1), st.booleans())
def test_log_loss_matches_sklearn(k: int, n: int, seed: int, float32: bool) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    probs = rng.dirichlet(np.full(k, 0.3), size=n)  # peaked rows, some near-zero entries
    probs[rng.random(n) < 0.2, :] = 0.0  # some rows give the true class exactly 0
    zero_rows = ~probs.any(axis=1)
    probs[zero_rows, (y_true[zero_rows] + 1) % k] = 1.0
    if float32:
        probs = probs.astype(np.float32)
    y_pred = probs.argmax(axis=1)
    m = classification_metrics(y_true, y_pred, k, probs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 rows sum to 1 only within float32 precision
        ref = skm.log_loss(y_true, probs, labels=list(range(k)))
    assert m.log_loss == pytest.approx(ref, rel=1e-5 if float32 else 1e-10)


def test_metrics_edge_cases() -> None:
    cases = [
        ([0, 0, 0], [0, 0, 0], 1),  # one class, all right
        ([0, 1, 2, 3], [0, 0, 0, 0], 4),  # one class predicted for everything
        ([1, 1, 1], [2, 2, 2], 5),  # nothing right; most classes absent from both sides
        ([0, 1, 2], [0, 1, 2], 10),  # classes 3..9 absent everywhere: they count as 0 in macro
        ([3, 3, 1, 1], [3, 1, 1, 0], 4),  # class 0 only predicted, class 2 absent
    ]
    for y_true, y_pred, k in cases:
        _assert_matches_sklearn(np.array(y_true), np.array(y_pred), k)

    m = classification_metrics([0, 1, 2], [0, 1, 2], 10)
    assert m.accuracy == 1.0 and m.macro_f1 == pytest.approx(0.3)
    assert m.most_confused == []
    # Plain Python lists and other integer dtypes are accepted.
    assert classification_metrics(np.array([1, 0], np.uint8), [1, 1], 2).accuracy == 0.5


def test_metrics_to_dict_is_json_ready() -> None:
    m = classification_metrics([0, 1, 2, 2], [0, 2, 2, 1], 3, np.full((4, 3), 1 / 3))
    data = json.loads(json.dumps(m.to_dict()))
    assert data["accuracy"] == 0.5 and data["support"] == [1, 1, 2]
    assert data["most_confused"] == [[1, 2, 1], [2, 1, 1]]
    assert data["log_loss"] == pytest.approx(np.log(3))
    assert data["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_metrics_reject_bad_input() -> None:
    good = np.full((3, 3), 1 / 3)
    bad_inputs = [
        (([0, 1], [0, 1, 2], 3), {}, "differ in length"),
        (([0, 1, 3], [0, 1, 2], 3), {}, "outside 0..2"),
        (([0, -1, 2], [0, 1, 2], 3), {}, "outside 0..2"),
        (([0, 1, 2], [0, 1, 9], 3), {}, "y_pred has labels outside"),
        (([0.0, 1.0, 2.0], [0, 1, 2], 3), {}, "integer labels"),
        (([[0, 1, 2]], [[0, 1, 2]], 3), {}, "1-D"),
        (([], [], 3), {}, "no examples"),
        (([0], [0], 0), {}, "num_classes"),
        (([0, 1, 2], [0, 1, 2], 3), {"probabilities": good[:2]}, r"shape .*\(3, 3\)"),
        (([0, 1, 2], [0, 1, 2], 3), {"probabilities": good[:, :2]}, r"\(3, 3\)"),
        (([0, 1, 2], [0, 1, 2], 3), {"probabilities": good * 4}, r"\[0, 1\]"),
        (([0, 1, 2], [0, 1, 2], 3), {"probabilities": good - 0.5}, r"\[0, 1\]"),
        (([0, 1, 2], [0, 1, 2], 3), {"probabilities": good * 0.9}, "sum to 1"),
        (([0, 1, 2], [0, 1, 2], 3), {"probabilities": np.full((3, 3), np.nan)}, "NaN"),
    ]
    for args, kwargs, match in bad_inputs:
        with pytest.raises(ValueError, match=match):
            classification_metrics(*args, **kwargs)


def test_confusion_matrix_counts_true_rows_predicted_columns() -> None:
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 0], 4)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [0, 0, 0, 0]]


# ---------------------------------------------------------------------------- most confused


def test_most_confused_order_and_ties() -> None:
    cm = np.array(
        [
            [50, 3, 0, 7],
            [3, 40, 9, 0],
            [0, 9, 30, 1],
            [2, 0, 0, 99],  # the diagonal never counts, however large
        ]
    )
    assert most_confused_pairs(cm) == [
        (1, 2, 9),
        (2, 1, 9),
        (0, 3, 7),
        (0, 1, 3),
        (1, 0, 3),
        (3, 0, 2),
        (2, 3, 1),
    ]
    assert most_confused_pairs(cm, top=2) == [(1, 2, 9), (2, 1, 9)]
    assert most_confused_pairs(cm, top=0) == []
    assert most_confused_pairs(np.diag([5, 5, 5])) == []


@settings(max_examples=200, deadline=None)
@given(label_pairs(), st.integers(0, 15))
def test_most_confused_is_a_sorted_off_diagonal_listing(
    case: tuple[np.ndarray, np.ndarray, int], top: int
) -> None:
    y_true, y_pred, k = case
    m = classification_metrics(y_true, y_pred, k, top_confused=top)
    cm = _sklearn_reference(y_true, y_pred, k)["confusion"]
    everything = sorted(
        ((t, p, int(cm[t, p])) for t in range(k) for p in range(k) if t != p and cm[t, p] > 0),
        key=lambda x: (-x[2], x[0], x[1]),
    )
    assert m.most_confused == everything[:top]


# ---------------------------------------------------------------------------- figures


def _assert_png(path: Path, min_side: int = 150) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= min_side
    assert pixels[..., :3].std() > 0.05, f"{path.name} is (nearly) blank"
    return pixels


def _frame_is_blank(pixels: np.ndarray, width: int = 2) -> bool:
    """Whether the outer ``width`` pixels of a picture are all background (white): a label
    cut off by the figure's edge leaves ink there."""
    frame = np.ones(pixels.shape[:2], dtype=bool)
    frame[width:-width, width:-width] = False
    return bool((pixels[frame][:, :3] > 0.97).all())


@pytest.mark.parametrize(
    "names",
    [
        [str(d) for d in range(10)],
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"],
        ["a", "WWWWWWWWWWWWWWWWWWWWWWWW", "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"],
        [f"class {i}" for i in range(47)],
    ],
    ids=["digits", "fashion", "wide-names", "47-classes"],
)
def test_figures_fit_their_labels(names: list[str], tmp_path: Path) -> None:
    """The confusion matrix and the per-class bars are laid out with fixed margins computed
    from the names: every label lands inside the picture, whatever the names' length."""
    k = len(names)
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, k, 50 * k)
    y_pred = np.where(rng.random(50 * k) < 0.7, y_true, rng.integers(0, k, 50 * k))
    m = classification_metrics(y_true, y_pred, k)
    for path in (
        plot_confusion_matrix(m.confusion, names, tmp_path / "cm.png"),
        plot_confusion_matrix(m.confusion, names, tmp_path / "cmn.png", normalize=True),
        plot_per_class_accuracy(m.recall, names, tmp_path / "acc.png", accuracy=m.accuracy),
    ):
        assert _frame_is_blank(_assert_png(path, 100)), f"{path.name}: a label is cut off"


def test_misclassified_title_format() -> None:
    assert misclassified_title("7", "2", 0.93) == "7 → 2 (0.93)"
    assert misclassified_title("7", "2", 0.9349) == "7 → 2 (0.93)"
    assert misclassified_title("T-shirt/top", "Shirt", 1.0) == "T-shirt/top → Shirt (1.00)"


def test_misclassified_are_most_confident_first() -> None:
    y_true = np.array([0, 1, 2, 3, 4, 5, 6])
    y_pred = np.array([0, 2, 2, 0, 1, 1, 6])
    conf = np.array([0.99, 0.6, 0.99, 0.95, 0.6, 0.7, 0.5])
    assert misclassified_indices(y_true, y_pred, conf).tolist() == [3, 5, 1, 4]
    assert misclassified_indices(y_true, y_pred, conf, n=2).tolist() == [3, 5]
    assert misclassified_indices(y_true, y_true, conf).tolist() == []


def test_the_image_mosaic_puts_each_image_in_its_cell(tmp_path: Path) -> None:
    """One canvas for the whole grid: each image lands where its cell is, float images on
    their own range, nothing drawn where no image is."""
    from mnistlab.plotting import image_mosaic, save_figure

    images = [np.full((28, 28), v, dtype=np.float32) for v in (0.0, 0.5, 1.0)]
    images[0][10:18, 10:18] = 1.0  # the first on its own range: a black square on white
    fig = image_mosaic(images, ["a", "b", "c"], cols=2, cell=(1.0, 1.5), side=0.9, title="t",
                       value_range=None)  # fmt: skip
    canvas = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    scale = 28 / 0.9  # canvas pixels per inch

    def cell(r: int, c: int) -> np.ndarray:
        return canvas[round(r * 1.5 * scale) : round((r + 1) * 1.5 * scale),
                      round(c * scale) : round((c + 1) * scale)]  # fmt: skip

    filled = [[int(np.isfinite(cell(r, c)).sum()) for c in range(2)] for r in range(2)]
    assert filled == [[28 * 28, 28 * 28], [28 * 28, 0]]  # row-major, the last cell empty
    assert np.nanmax(cell(0, 0)) == 1.0 and np.nanmin(cell(0, 0)) == 0.0
    assert np.nanmax(cell(0, 1)) == 0.0  # a flat image on its own range: all blank
    _assert_png(save_figure(fig, tmp_path / "m.png"), 100)
    with pytest.raises(ValueError, match="does not fit"):
        image_mosaic(images, ["a", "b", "c"], cols=2, cell=(1.0, 1.0), side=0.9, title="t")


def test_plots_on_long_class_names(tmp_path: Path) -> None:
    names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 10, 400)
    y_pred = np.where(rng.random(400) < 0.8, y_true, rng.integers(0, 10, 400))
    m = classification_metrics(y_true, y_pred, 10)
    for normalize in (False, True):
        path = plot_confusion_matrix(
            m.confusion, names, tmp_path / f"cm{normalize}.png", normalize=normalize
        )
        _assert_png(path, 500)
    _assert_png(plot_per_class_accuracy(m.recall, names, tmp_path / "acc.png", accuracy=0.8))
    images = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)
    path = plot_misclassified(images, y_true, y_pred, rng.random(400), names, tmp_path / "mis.png")
    _assert_png(path, 500)
    # No mistakes: still a valid (small) figure saying so.
    path = plot_misclassified(images, y_true, y_true, rng.random(400), names, tmp_path / "no.png")
    _assert_png(path, 100)
    with pytest.raises(ValueError, match="shape"):
        plot_confusion_matrix(m.confusion, names[:9], tmp_path / "x.png")
    with pytest.raises(ValueError, match="differ in length"):
        plot_misclassified(images[:5], y_true, y_pred, rng.random(400), names, tmp_path / "x.png")


# ---------------------------------------------------------------------------- HTML parsing


class _Page(HTMLParser):
    """Collects what a self-containment check needs: tags, URL attributes, images, text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data") and value:
                self.urls.append(value)
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _assert_self_contained(page: str, parsed: _Page) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    for url in parsed.urls:
        assert url.startswith(("data:", "#")), f"external reference: {url[:80]}"
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page and "@import" not in page


# ---------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def mini_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A logistic regression trained on mnist-mini train, reported on mnist-mini test."""
    train = mnistlab.load_dataset("mnist-mini", "train", download=False)
    test = mnistlab.load_dataset("mnist-mini", "test", download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=40).fit(
            train.images.reshape(len(train), -1) / 255.0, train.labels
        )
    probs = clf.predict_proba(test.images.reshape(len(test), -1) / 255.0)
    out = tmp_path_factory.mktemp("run")
    extra = {"predict_seconds": 0.012, "config": {"C": 1.0, "max_iter": 40}}
    report = write_report(
        out,
        images=test.images,
        labels=test.labels,
        probabilities=probs,
        class_names=test.class_names,
        dataset="mnist-mini",
        model="logistic-regression",
        train_seconds=1.5,
        extra=extra,
    )
    return {"out": out, "report": report, "probs": probs, "test": test, "clf": clf}


def test_report_json_on_real_data(mini_report: dict[str, Any]) -> None:
    out: Path = mini_report["out"]
    test = mini_report["test"]
    y_pred = mini_report["probs"].argmax(axis=1)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == mini_report["report"]
    assert set(on_disk) >= REQUIRED_KEYS
    assert on_disk["dataset"] == "mnist-mini" and on_disk["model"] == "logistic-regression"
    assert on_disk["train_seconds"] == 1.5 and on_disk["num_test"] == 1000
    assert on_disk["predict_seconds"] == 0.012 and on_disk["config"]["max_iter"] == 40

    accuracy = skm.accuracy_score(test.labels, y_pred)
    assert on_disk["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert accuracy == pytest.approx(
        mini_report["clf"].score(test.images.reshape(len(test), -1) / 255.0, test.labels), abs=1e-12
    )
    assert 0.8 < accuracy < 1.0  # a real, imperfect model: the gallery has content
    ref = _sklearn_reference(test.labels, y_pred, 10)
    assert list(on_disk["per_class"]) == list(test.class_names)
    for c, name in enumerate(test.class_names):
        row = on_disk["per_class"][name]
        assert row["precision"] == pytest.approx(ref["precision"][c], abs=1e-12)
        assert row["recall"] == pytest.approx(ref["recall"][c], abs=1e-12)
        assert row["f1"] == pytest.approx(ref["f1"][c], abs=1e-12)
        assert row["support"] == 100
    assert on_disk["macro_f1"] == pytest.approx(ref["macro"][2], abs=1e-12)
    assert on_disk["log_loss"] == pytest.approx(
        skm.log_loss(test.labels, mini_report["probs"], labels=list(range(10))), rel=1e-10
    )
    assert on_disk["confusion_matrix"] == ref["confusion"].tolist()
    pairs = on_disk["most_confused"]
    assert 0 < len(pairs) <= 10
    counts = [p["count"] for p in pairs]
    assert counts == sorted(counts, reverse=True)
    for p in pairs:
        t, q = int(p["true"]), int(p["predicted"])
        assert t != q and ref["confusion"][t, q] == p["count"]
    assert on_disk["files"] == list(REPORT_FILES)
    assert sorted(f.name for f in out.iterdir()) == sorted(REPORT_FILES)  # no temp files left


def test_report_figures_on_real_data(mini_report: dict[str, Any]) -> None:
    out: Path = mini_report["out"]
    for name in FIGURE_FILES.values():
        _assert_png(out / name, 300)


def test_report_html_on_real_data(mini_report: dict[str, Any]) -> None:
    out: Path = mini_report["out"]
    report = mini_report["report"]
    page = (out / "report.html").read_text(encoding="utf-8")
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    pngs = [src for src in parsed.images if src.startswith("data:image/png;base64,")]
    assert len(pngs) == 3
    embedded = {base64.b64decode(src.split(",", 1)[1], validate=True) for src in pngs}
    assert embedded == {(out / name).read_bytes() for name in FIGURE_FILES.values()}
    text = " ".join(parsed.text)
    assert f"{report['test_accuracy']:.2%}" in text
    for name in report["class_names"]:
        assert name in parsed.text  # a cell of its own in the per-class table
    for needle in ("logistic-regression", "mnist-mini", "1.5 s", "prediction time", "1,000"):
        assert needle in text
    assert len(page) < 2_000_000


# ---------------------------------------------------------------------------- HTML rendering


def _small_report(tmp_path: Path, names: list[str], **kwargs: Any) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    labels = np.arange(60) % len(names)
    probs = rng.dirichlet(np.ones(len(names)), size=60)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    return write_report(
        tmp_path,
        images=images,
        labels=labels,
        probabilities=probs,
        class_names=names,
        dataset=kwargs.pop("dataset", "toy"),
        model=kwargs.pop("model", "random"),
        train_seconds=kwargs.pop("train_seconds", 75.0),
        **kwargs,
    )


def test_html_escapes_every_text(tmp_path: Path) -> None:
    names = ["<script>alert(1)</script>", 'say "hi" & bye', "plain"]
    report = _small_report(
        tmp_path, names, model="<b>model</b>", dataset="a&b", extra={"<i>key</i>": "<u>v</u>"}
    )
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert "<script" not in page and "<b>model" not in page and "<i>key" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "say &quot;hi&quot; &amp; bye" in page
    for name in names:
        assert name in parsed.text  # the parser un-escapes: the reader sees the real names
    assert "<b>model</b> on a&b" in "".join(parsed.text)
    assert report["per_class"].keys() == set(names)
    assert "1 min 15 s" in page


def test_extra_sections_and_figures(tmp_path: Path) -> None:
    curve = plot_per_class_accuracy([0.5, 1.0], ["a", "b"], tmp_path / "curve.png", accuracy=0.7)
    sections = [
        ReportSection("Training curves", figure=curve, caption="loss < 1 & falling"),
        ("Calibration", html_table(("bin", "confidence"), [("0-10%", 0.05), ("<10%>", 0.5)])),
        ("Raw figure", curve),
    ]
    report = _small_report(tmp_path / "run", ["a", "b"], sections=sections)
    assert report["sections"] == ["Training curves", "Calibration", "Raw figure"]
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert len(parsed.images) == 5  # the three standard figures and the two extra ones
    assert page.index("Misclassified test images") < page.index("Training curves")
    assert page.index("Training curves") < page.index("Calibration") < page.index("Raw figure")
    assert "loss &lt; 1 &amp; falling" in page and "&lt;10%&gt;" in page and "0.05" in page
    assert 'href="#training-curves"' in page and 'id="training-curves"' in page


def test_render_report_html_alone(tmp_path: Path) -> None:
    report = {
        "dataset": "mnist",
        "model": "cnn",
        "test_accuracy": 0.9912,
        "train_seconds": None,
        "num_test": 10000,
    }
    png = plot_per_class_accuracy([0.9, 1.0], ["x", "y"], tmp_path / "f.png")
    page = render_report_html(report, {"per_class_accuracy": png})
    parsed = _parse(page)
    _assert_self_contained(page, parsed)
    assert len(parsed.images) == 1 and "99.12%" in page and "n/a" in page
    assert "Per-class metrics" not in page  # sections without data are left out
    with pytest.raises(ValueError, match="embed"):
        render_report_html(report, {}, [("Bad", tmp_path / "notes.txt")])


def test_write_report_rejects_bad_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = np.zeros((10, 28, 28), np.uint8)
    labels = np.arange(10) % 3
    probs = rng.dirichlet(np.ones(3), size=10)
    base = dict(
        images=images,
        labels=labels,
        probabilities=probs,
        class_names=["a", "b", "c"],
        dataset="d",
        model="m",
        train_seconds=1.0,
    )
    cases = [
        ({"class_names": ["a", "a", "c"]}, "unique"),
        ({"class_names": ["a", "b"]}, "shape"),
        ({"images": images[:9]}, "differ in length"),
        ({"images": images.reshape(10, -1)}, r"\(N, H, W\)"),
        ({"probabilities": probs[:, :2]}, "shape"),
        ({"probabilities": np.log(probs)}, r"\[0, 1\]"),
        ({"labels": labels + 1}, "outside"),
        ({"extra": {"test_accuracy": 1.0}}, "standard report keys"),
        ({"extra": {"when": object()}}, "JSON"),
        ({"extra": {"nan": float("nan")}}, "JSON"),
    ]
    for change, match in cases:
        with pytest.raises(ValueError, match=match):
            write_report(tmp_path / "r", **{**base, **change})
    assert not (tmp_path / "r" / "report.json").exists()


def test_training_curves_from_a_runs_epoch_records(tmp_path: Path) -> None:
    """``plot_training_curves`` draws what a deep run's metrics.jsonl holds: per-step curves,
    epoch means and, when there is a validation split, validation points."""
    from mnistlab.evaluation import plot_training_curves

    history = [
        {"epoch": e, "step": 10 * e, "train_loss": 1.0 / e, "train_accuracy": 1 - 0.1 / e,
         "val_loss": 1.2 / e, "val_accuracy": 1 - 0.12 / e,
         "curve": {"step": list(range(10 * e - 9, 10 * e + 1)),
                   "loss": [1.0 / e] * 10, "accuracy": [1 - 0.1 / e] * 10}}
        for e in (1, 2, 3)
    ]  # fmt: skip
    _assert_png(plot_training_curves(history, tmp_path / "curves.png"), 300)
    without_val = [{k: v for k, v in r.items() if not k.startswith("val_")} for r in history]
    _assert_png(plot_training_curves(without_val, tmp_path / "train_only.png"), 300)
