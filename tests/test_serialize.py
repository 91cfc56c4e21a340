"""Saving fitted scikit-learn estimators without pickle, and refusing what is not safe to load.

Every model is fitted on the bundled mnist-mini digits (5,000 train / 1,000 test images; most
models on a 30-component PCA of them to keep fits fast), saved, loaded, and must give
bit-identical outputs on the test split (``np.array_equal`` and the same dtype, not
``allclose``) and the same fitted state. The security tests edit saved files the way an
attacker or a damaged disk would and check that nothing is imported, called or rebuilt that the
loader does not explicitly allow.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
import re
import sys
import tempfile
import tokenize
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.base import BaseEstimator, ClassifierMixin, is_classifier
from sklearn.decomposition import PCA
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, VotingClassifier
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import BallTree, KDTree, KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

import mnistlab
from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_json, sha256_file
from mnistlab.models import serialize
from mnistlab.models.serialize import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    EstimatorLoadError,
    EstimatorSaveError,
    load_estimator,
    read_manifest,
    save_estimator,
)

# This module's own classes are importable as f"{__name__}.Class" (pytest imports it by name).
TEST_PREFIXES = ("sklearn.", "mnistlab.", f"{__name__}.")
OUTPUT_METHODS = ("predict", "predict_proba", "decision_function", "transform")
FAITHFUL = "the weights do not match the manifest"


# --------------------------------------------------------------------------------------------
# Estimators defined here: outside the default allowed prefixes


class NearestMean(ClassifierMixin, BaseEstimator):
    """A tiny nearest-class-mean classifier whose state exercises awkward values."""

    def __init__(self, shrink: float = 0.0, label: str = "nm") -> None:
        self.shrink = shrink
        self.label = label

    def fit(self, X: np.ndarray, y: np.ndarray) -> NearestMean:
        self.classes_, index = np.unique(y, return_inverse=True)
        means = np.stack([X[index == k].mean(axis=0) for k in range(len(self.classes_))])
        self.means_ = (1 - self.shrink) * means + self.shrink * X.mean(axis=0)
        self.n_features_in_ = X.shape[1]
        self.info_ = {
            "n": len(X),
            "limits": (float("-inf"), float("inf"), -0.0),
            "missing": float("nan"),
            3: "a non-string key",
            (1, "a"): [np.float32(1.5), np.int16(-3), np.bool_(True), None],
        }
        self.names_ = np.array(["zero", "one", "two"])  # a unicode array: stored inline
        self.tags_ = frozenset({"digits", "toy"})
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return -(((X[:, None, :] - self.means_[None]) ** 2).sum(axis=-1))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.decision_function(X).argmax(axis=1)]


class Holder(BaseEstimator):
    """Carries an arbitrary value in its fitted state (for the property test)."""

    def __init__(self, value: Any = None) -> None:
        self.value = value


# --------------------------------------------------------------------------------------------
# Data and helpers


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    """mnist-mini as float64 rows in [0, 1], plus its 30-component PCA projection."""
    train = mnistlab.load_dataset("mnist-mini", "train")
    test = mnistlab.load_dataset("mnist-mini", "test")
    X = train.images.reshape(len(train), -1) / 255.0
    Xt = test.images.reshape(len(test), -1) / 255.0
    pca = PCA(n_components=30, random_state=0).fit(X)
    Z, Zt = pca.transform(X), pca.transform(Xt)
    return {
        "X": X,
        "Xt": Xt,
        "Z": Z,
        "Zt": Zt,
        "y": train.labels,
        "yt": test.labels,
        # for slow queries (weighted / p=3 Minkowski ball trees)
        "Z-small": Z[:2000],
        "Z-smallt": Zt[:300],
        "Z-small-y": train.labels[:2000],
        "Z-small-yt": test.labels[:300],
    }


def split(digits: dict[str, np.ndarray], inputs: str) -> tuple[np.ndarray, ...]:
    """(X_train, y_train, X_test, y_test) for an input kind: "X", "Z" or "Z-small"."""
    labels = f"{inputs}-y" if f"{inputs}-y" in digits else "y"
    return digits[inputs], digits[labels], digits[f"{inputs}t"], digits[f"{labels}t"]


def without_addresses(text: str) -> str:
    return re.sub(r" at 0x[0-9A-Fa-f]+", " at 0x...", text)


def memory_axes(a: np.ndarray) -> list[int]:
    if a.flags.c_contiguous or a.ndim < 2:
        return list(range(a.ndim))
    if a.flags.f_contiguous:
        return list(reversed(range(a.ndim)))
    return sorted(range(a.ndim), key=lambda i: -abs(a.strides[i]))


def assert_same(a: Any, b: Any, where: str = "value") -> None:
    """Exact equality: same types, bitwise-equal arrays and floats, same memory order."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape}"
        assert memory_axes(a) == memory_axes(b), f"{where}: memory order changed"
        if a.dtype.kind == "O":
            for i, (x, y) in enumerate(zip(a.reshape(-1), b.reshape(-1), strict=True)):
                assert_same(x, y, f"{where}.flat[{i}]")
        else:
            assert a.tobytes() == b.tobytes(), f"{where}: contents differ"
    elif isinstance(a, float | np.floating):
        both_nan = bool(np.isnan(a)) and bool(np.isnan(b))
        assert both_nan or np.asarray(a).tobytes() == np.asarray(b).tobytes(), where
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, BaseEstimator):
        assert_same(a.__getstate__(), b.__getstate__(), f"{where}<{type(a).__name__}>")
    elif isinstance(a, Tree):
        assert_same(a.__reduce__()[1:], b.__reduce__()[1:], f"{where}<Tree>")
    elif isinstance(a, KDTree | BallTree):
        sa, sb = a.__getstate__(), b.__getstate__()
        # 7-10 are query counters (n_trims, n_leaves, n_splits, n_calls), not the tree
        for i in (0, 1, 2, 3, 4, 5, 6, 12):
            assert_same(sa[i], sb[i], f"{where}<tree state {i}>")
        assert_same(sa[11].__getstate__(), sb[11].__getstate__(), f"{where}<metric>")
    elif isinstance(a, np.random.RandomState):
        assert_same(a.get_state(), b.get_state(), f"{where}<RandomState>")
    elif type(a).__module__.startswith(("sklearn._loss", "sklearn.linear_model._sgd_fast")):
        assert a.__reduce__() == b.__reduce__(), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_outputs(model: Any, loaded: Any, X: np.ndarray) -> list[str]:
    checked = []
    for method in OUTPUT_METHODS:
        if hasattr(model, method):
            expected, actual = getattr(model, method)(X), getattr(loaded, method)(X)
            assert expected.dtype == actual.dtype, method
            assert np.array_equal(expected, actual), f"{method} differs after reloading"
            checked.append(method)
    if hasattr(model, "kneighbors"):
        for expected, actual in zip(model.kneighbors(X), loaded.kneighbors(X), strict=True):
            assert np.array_equal(expected, actual)
        checked.append("kneighbors")
    if hasattr(model, "apply"):
        assert np.array_equal(model.apply(X), loaded.apply(X))
        checked.append("apply")
    return checked


def walk_nodes(obj: Any) -> Iterator[dict]:
    """Every JSON object in a manifest, depth first."""
    if isinstance(obj, dict):
        yield obj
        for value in obj.values():
            yield from walk_nodes(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from walk_nodes(value)


def edit_manifest(directory: Path, change: Callable[[dict], Any]) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    change(manifest)
    atomic_write_json(directory / MANIFEST_NAME, manifest)


def edit_weights(directory: Path, change: Callable[[dict[str, np.ndarray]], Any]) -> None:
    """Change the arrays and re-sign the manifest, as a deliberate attacker would."""
    path = directory / WEIGHTS_NAME
    tensors = {k: np.array(v) for k, v in safetensors.numpy.load_file(path).items()}
    change(tensors)
    safetensors.numpy.save_file(tensors, path)

    def resign(manifest: dict) -> None:
        manifest["weights"]["sha256"] = sha256_file(path)
        manifest["weights"]["size"] = path.stat().st_size
        manifest["weights"]["tensors"] = len(tensors)

    edit_manifest(directory, resign)


def root_node(manifest: dict) -> dict:
    return manifest["estimator"]


# --------------------------------------------------------------------------------------------
# Round trips on real data


MODELS = [
    pytest.param(lambda: LogisticRegression(max_iter=300), "Z", id="logreg-multinomial"),
    pytest.param(
        lambda: OneVsRestClassifier(LogisticRegression(max_iter=300)), "Z", id="logreg-ovr"
    ),
    pytest.param(lambda: KNeighborsClassifier(algorithm="brute"), "Z", id="knn-brute"),
    pytest.param(lambda: KNeighborsClassifier(algorithm="kd_tree"), "Z", id="knn-kd_tree"),
    pytest.param(lambda: KNeighborsClassifier(algorithm="ball_tree"), "Z", id="knn-ball_tree"),
    pytest.param(
        lambda: KNeighborsClassifier(algorithm="ball_tree", p=3, weights="distance"),
        "Z-small",
        id="knn-ball_tree-minkowski3",
    ),
    pytest.param(
        lambda: KNeighborsClassifier(
            algorithm="ball_tree", metric="minkowski", metric_params={"w": np.linspace(1, 2, 30)}
        ),
        "Z-small",
        id="knn-ball_tree-weighted",
    ),
    pytest.param(lambda: SVC(kernel="rbf"), "Z", id="svc-rbf"),
    pytest.param(
        lambda: SVC(kernel="rbf", probability=True, random_state=0), "Z", id="svc-rbf-proba"
    ),
    pytest.param(lambda: RandomForestClassifier(n_estimators=10, random_state=0), "Z", id="rf"),
    pytest.param(
        lambda: RandomForestClassifier(n_estimators=3, random_state=np.random.RandomState(0)),
        "Z",
        id="rf-randomstate-param",
    ),
    pytest.param(lambda: ExtraTreesClassifier(n_estimators=10, random_state=0), "Z", id="et"),
    pytest.param(lambda: DecisionTreeClassifier(random_state=0), "Z", id="decision-tree"),
    pytest.param(lambda: PCA(n_components=30, random_state=0), "X", id="pca"),
    pytest.param(
        lambda: PCA(n_components=20, whiten=True, svd_solver="randomized", random_state=0),
        "X",
        id="pca-randomized-whiten",
    ),
    pytest.param(lambda: StandardScaler(), "X", id="standard-scaler"),
    pytest.param(
        lambda: Pipeline(
            [
                ("scale", StandardScaler()),
                ("pca", PCA(n_components=30, random_state=0)),
                ("svc", SVC(kernel="rbf")),
            ]
        ),
        "X",
        id="pipeline-scaler-pca-svc",
    ),
    pytest.param(
        lambda: VotingClassifier(
            [("lr", LogisticRegression(max_iter=300)), ("nb", GaussianNB())], voting="soft"
        ),
        "Z",
        id="voting-soft",
    ),
    pytest.param(lambda: SGDClassifier(random_state=0), "Z", id="sgd-hinge"),
]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # SVC(probability=True) is deprecated
@pytest.mark.parametrize(("make", "inputs"), MODELS)
def test_round_trip_is_exact(
    make: Callable[[], Any],
    inputs: str,
    digits: dict[str, np.ndarray],
    tmp_path: Path,
    record_property: Callable[[str, Any], None],
) -> None:
    X, y, Xt, yt = split(digits, inputs)
    model = make().fit(X, y)
    folder = save_estimator(model, tmp_path / "model", metadata={"inputs": inputs})
    assert folder == tmp_path / "model"
    assert sorted(p.name for p in folder.iterdir()) == [WEIGHTS_NAME, MANIFEST_NAME]

    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        loaded = load_estimator(folder)

    assert type(loaded) is type(model)
    assert without_addresses(repr(loaded)) == without_addresses(repr(model))
    assert_same(model.__getstate__(), loaded.__getstate__(), type(model).__name__)
    checked = assert_same_outputs(model, loaded, Xt)
    assert checked, "no output method was compared"
    if is_classifier(model):
        assert model.score(Xt, yt) > 0.7
    record_property("model_json_bytes", (folder / MANIFEST_NAME).stat().st_size)
    record_property("weights_bytes", (folder / WEIGHTS_NAME).stat().st_size)


def test_shared_objects_reload_shared(digits: dict[str, np.ndarray], tmp_path: Path) -> None:
    voting = VotingClassifier([("lr", LogisticRegression(max_iter=300)), ("nb", GaussianNB())])
    voting.fit(digits["Z"], digits["y"])
    save_estimator(voting, tmp_path / "voting")
    loaded = load_estimator(tmp_path / "voting")
    assert loaded.named_estimators_["lr"] is loaded.estimators_[0]
    assert loaded.named_estimators_.nb is loaded.estimators_[1]  # still a Bunch

    knn = KNeighborsClassifier(algorithm="kd_tree").fit(digits["Z"], digits["y"])
    save_estimator(knn, tmp_path / "knn")
    manifest = read_manifest(tmp_path / "knn")
    assert manifest["weights"]["tensors"] == 3  # classes_, _y, _fit_X: the tree's data is _fit_X
    loaded = load_estimator(tmp_path / "knn")
    assert np.shares_memory(loaded._tree.data, loaded._fit_X)


def test_random_state_keeps_its_stream(digits: dict[str, np.ndarray], tmp_path: Path) -> None:
    rng = np.random.RandomState(7)
    forest = RandomForestClassifier(n_estimators=2, random_state=rng).fit(digits["Z"], digits["y"])
    save_estimator(forest, tmp_path / "rf")
    loaded = load_estimator(tmp_path / "rf")
    assert loaded.random_state is not rng
    assert np.array_equal(loaded.random_state.randint(0, 10**9, 20), rng.randint(0, 10**9, 20))


def test_custom_estimator_needs_its_prefix(digits: dict[str, np.ndarray], tmp_path: Path) -> None:
    model = NearestMean(shrink=0.1).fit(digits["Z"], digits["y"])
    save_estimator(model, tmp_path / "nm")
    class_path = f"{__name__}.NearestMean"
    assert read_manifest(tmp_path / "nm")["estimator_class"] == class_path

    with pytest.raises(EstimatorLoadError, match="refused to load class") as caught:
        load_estimator(tmp_path / "nm")
    assert class_path in caught.value.message and "allowed prefixes" in caught.value.message
    assert "allowed_prefixes" in caught.value.hint

    # A prefix without a trailing dot only matches whole name components.
    with pytest.raises(EstimatorLoadError, match="refused"):
        load_estimator(tmp_path / "nm", allowed_prefixes=("sklearn.", __name__[:-1]))

    for prefixes in (TEST_PREFIXES, (class_path,), (__name__,)):
        loaded = load_estimator(tmp_path / "nm", allowed_prefixes=prefixes)
        assert type(loaded) is NearestMean
        assert_same(model.__getstate__(), loaded.__getstate__(), "NearestMean")
        assert assert_same_outputs(model, loaded, digits["Zt"]) == ["predict", "decision_function"]


def test_custom_step_inside_a_pipeline_is_refused(
    digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    pipe = Pipeline([("scale", StandardScaler()), ("nm", NearestMean())])
    save_estimator(pipe.fit(digits["Z"], digits["y"]), tmp_path / "pipe")
    with pytest.raises(EstimatorLoadError, match=r"NearestMean.*steps\[1\]\[1\]"):
        load_estimator(tmp_path / "pipe")
    loaded = load_estimator(tmp_path / "pipe", allowed_prefixes=TEST_PREFIXES)
    assert np.array_equal(loaded.predict(digits["Zt"]), pipe.predict(digits["Zt"]))


def test_metadata_and_versions(digits: dict[str, np.ndarray], tmp_path: Path) -> None:
    import sklearn

    model = StandardScaler().fit(digits["Z"])
    metadata = {"dataset": "mnist-mini", "val_accuracy": 0.93, "steps": [1, 2], "note": None}
    save_estimator(model, tmp_path / "m", metadata=metadata)
    manifest = read_manifest(tmp_path / "m")
    assert manifest["metadata"] == metadata
    assert manifest["format_version"] == serialize.FORMAT_VERSION
    assert manifest["sklearn_version"] == sklearn.__version__
    assert manifest["mnistlab_version"] == mnistlab.__version__
    assert manifest["weights"]["sha256"] == sha256_file(tmp_path / "m" / WEIGHTS_NAME)
    assert manifest["weights"]["size"] == (tmp_path / "m" / WEIGHTS_NAME).stat().st_size

    with pytest.raises(EstimatorSaveError, match="metadata is not plain JSON"):
        save_estimator(model, tmp_path / "bad", metadata={"x": float("nan")})
    with pytest.raises(EstimatorSaveError, match="metadata is not plain JSON"):
        save_estimator(model, tmp_path / "bad", metadata={"x": np.zeros(2)})
    assert not (tmp_path / "bad").exists()


def test_saving_is_deterministic_and_overwrites(
    digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    model = RandomForestClassifier(n_estimators=3, random_state=0).fit(digits["Z"], digits["y"])
    save_estimator(model, tmp_path / "a")
    save_estimator(model, tmp_path / "b")
    for name in (MANIFEST_NAME, WEIGHTS_NAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()

    other = LogisticRegression(max_iter=300).fit(digits["Z"], digits["y"])
    save_estimator(other, tmp_path / "a")
    assert type(load_estimator(tmp_path / "a")) is LogisticRegression
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [WEIGHTS_NAME, MANIFEST_NAME]


def test_crash_between_the_two_writes_is_detected(
    digits: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights are written first and the manifest last; a crash in between is caught on load."""
    first = DecisionTreeClassifier(random_state=0, max_depth=3).fit(digits["Z"], digits["y"])
    save_estimator(first, tmp_path / "m")

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(serialize, "atomic_write_json", crash)
    second = DecisionTreeClassifier(random_state=1, max_depth=5).fit(digits["Z"], digits["y"])
    with pytest.raises(OSError, match="disk full"):
        save_estimator(second, tmp_path / "m")
    monkeypatch.undo()
    with pytest.raises(EstimatorLoadError, match=FAITHFUL):
        load_estimator(tmp_path / "m")
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]


def test_loading_never_unpickles(
    digits: dict[str, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    save_estimator(pipe.fit(digits["Z"], digits["y"]), tmp_path / "m")

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    loaded = load_estimator(tmp_path / "m")
    assert np.array_equal(loaded.predict(digits["Zt"]), pipe.predict(digits["Zt"]))


def test_module_source_has_no_pickle_or_eval() -> None:
    source = Path(serialize.__file__).read_text()
    names = {
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.NAME
    }
    forbidden = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
    forbidden |= {"eval", "exec", "__import__", "allow_pickle", "Unpickler"}
    assert not names & forbidden
    assert "np.load(" not in source


# --------------------------------------------------------------------------------------------
# What cannot be saved


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(
            lambda d: FunctionTransformer(np.log1p).fit(d["Z"]),
            r"FunctionTransformer\.func: values of type numpy\.ufunc",
            id="function-param",
        ),
        pytest.param(
            lambda d: KNeighborsClassifier(metric=lambda a, b: float(np.abs(a - b).sum())).fit(
                d["Z"][:50], d["y"][:50]
            ),
            r"KNeighborsClassifier\.metric: values of type builtins\.function",
            id="callable-metric",
        ),
        pytest.param(
            lambda d: LogisticRegression(max_iter=300).fit(d["Z"], d["y"]).sparsify(),
            r"LogisticRegression\.coef_: values of type scipy\.sparse",
            id="sparse-coef",
        ),
        pytest.param(
            lambda d: MLPClassifier(hidden_layer_sizes=(8,), max_iter=2).fit(d["Z"], d["y"]),
            r"MLPClassifier\._optimizer: values of type .*AdamOptimizer",
            id="mlp-optimizer",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_unsupported_values_fail_to_save(
    make: Callable[[dict], Any], match: str, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    model = make(digits)
    with pytest.raises(EstimatorSaveError, match=match) as caught:
        save_estimator(model, tmp_path / "m")
    assert isinstance(caught.value, MnistlabError) and caught.value.hint
    assert not (tmp_path / "m").exists()  # nothing is written when encoding fails


def test_only_estimators_can_be_saved(tmp_path: Path) -> None:
    with pytest.raises(EstimatorSaveError, match="expects a scikit-learn estimator"):
        save_estimator({"coef": np.zeros(3)}, tmp_path / "m")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Damaged and hostile files


@pytest.fixture
def saved_tree(digits: dict[str, np.ndarray], tmp_path: Path) -> Path:
    model = DecisionTreeClassifier(max_depth=4, random_state=0).fit(digits["Z"], digits["y"])
    return save_estimator(model, tmp_path / "tree")


@pytest.fixture
def saved_pipeline(digits: dict[str, np.ndarray], tmp_path: Path) -> Path:
    pipe = Pipeline([("scale", StandardScaler()), ("svc", SVC())])
    return save_estimator(pipe.fit(digits["Z"][:1000], digits["y"][:1000]), tmp_path / "pipe")


def test_flipped_byte_in_weights_is_refused(saved_tree: Path) -> None:
    path = saved_tree / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(EstimatorLoadError, match=f"{FAITHFUL}.*SHA-256") as caught:
        load_estimator(saved_tree)
    assert "save the model again" in caught.value.hint


def test_truncated_weights_are_refused(saved_tree: Path) -> None:
    path = saved_tree / WEIGHTS_NAME
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(EstimatorLoadError, match=f"{FAITHFUL}.*size"):
        load_estimator(saved_tree)


def test_missing_and_truncated_files(saved_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(EstimatorLoadError, match="does not hold a saved estimator"):
        load_estimator(tmp_path / "nowhere")

    manifest = (saved_tree / MANIFEST_NAME).read_text()
    (saved_tree / MANIFEST_NAME).write_text(manifest[: len(manifest) // 2])
    with pytest.raises(EstimatorLoadError, match="not valid JSON"):
        load_estimator(saved_tree)

    (saved_tree / MANIFEST_NAME).write_text(manifest)
    (saved_tree / WEIGHTS_NAME).unlink()
    with pytest.raises(EstimatorLoadError, match="weights of the saved estimator are missing"):
        load_estimator(saved_tree)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.update(format="pickle"), id="format-pickle"),
        pytest.param(lambda m: m.update(format_version=2), id="newer-version"),
        pytest.param(lambda m: m.pop("weights"), id="no-weights-entry"),
        pytest.param(lambda m: m["weights"].update(file="../../etc/passwd"), id="weights-path"),
        pytest.param(lambda m: m["weights"].update(size="12"), id="size-not-int"),
    ],
)
def test_malformed_manifest_is_refused(saved_tree: Path, change: Callable[[dict], Any]) -> None:
    edit_manifest(saved_tree, change)
    with pytest.raises(EstimatorLoadError):
        load_estimator(saved_tree)


def test_nan_constants_and_duplicate_keys_are_refused(saved_tree: Path) -> None:
    path = saved_tree / MANIFEST_NAME
    text = path.read_text()
    path.write_text(text.replace('"max_depth": 4', '"max_depth": NaN', 1))
    with pytest.raises(EstimatorLoadError, match="not valid JSON"):
        load_estimator(saved_tree)
    path.write_text(text.replace('"format_version": 1', '"format_version": 1, "format": "x"', 1))
    with pytest.raises(EstimatorLoadError, match="duplicate key"):
        load_estimator(saved_tree)


DANGEROUS_CLASSES = [
    "os.system",
    "builtins.eval",
    "subprocess.Popen",
    "posix.system",
    "importlib.import_module",
    "antigravity.geohash",  # importing antigravity opens a web browser
    "sklearnx.evil.Thing",  # looks like sklearn but is not under "sklearn."
    "mnistlabx.Thing",
]


@pytest.mark.parametrize("class_path", DANGEROUS_CLASSES)
@pytest.mark.parametrize("where", ["root", "nested", "loss", "tree", "binary_tree"])
def test_disallowed_class_is_refused_before_import(
    saved_pipeline: Path, class_path: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def change(manifest: dict) -> None:
        root = root_node(manifest)
        if where == "root":
            root["class"] = class_path
        elif where == "nested":  # the SVC inside the pipeline
            svc = next(n for n in walk_nodes(root) if n.get("class", "").endswith(".SVC"))
            svc["class"] = class_path
        else:
            root["state"]["memory"] = {"$": where, "id": 999, "class": class_path, "args": []}

    edit_manifest(saved_pipeline, change)
    imported: list[str] = []
    real_import = importlib.import_module

    def spy(name: str, package: str | None = None) -> Any:
        imported.append(name)
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", spy)
    with pytest.raises(EstimatorLoadError, match="refused") as caught:
        load_estimator(saved_pipeline)
    assert class_path in caught.value.message
    module = class_path.rpartition(".")[0]
    assert module not in imported
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    ("class_path", "reason"),
    [
        ("sklearn.base.clone", "not a scikit-learn estimator class"),  # a function
        ("sklearn.base.warnings", "not a scikit-learn estimator class"),  # a module
        ("sklearn.utils._bunch.Bunch", "not a scikit-learn estimator class"),  # not an estimator
        ("sklearn.svm.SVC", "not a scikit-learn estimator class"),  # an alias of ..._classes.SVC
        ("sklearn.no_such_module.Thing", "cannot be imported"),
        ("mnistlab.io.atomic_writer", "not a scikit-learn estimator class"),
        ("sklearn.base..BaseEstimator", "not a class path"),
        ("sklearn.base.BaseEstimator.__init__", "cannot be imported"),
    ],
)
def test_allowed_prefix_but_not_an_estimator_is_refused(
    saved_tree: Path, class_path: str, reason: str
) -> None:
    edit_manifest(saved_tree, lambda m: root_node(m).update({"class": class_path}))
    with pytest.raises(EstimatorLoadError, match=reason):
        load_estimator(saved_tree)


@pytest.mark.parametrize(
    "node",
    [
        {"$": "pickle", "data": "gASVIQAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAR0cnVllIWUUpQu"},
        {"$": "reduce", "callable": "os.system", "args": ["true"]},
        {"$": "__reduce__", "id": 999},
        {"py/object": "os.system"},  # jsonpickle style
        {"$": "type", "name": "builtins.eval"},
        {"$": "type", "name": "os.system"},
        {"$": "ndarray", "id": 999, "shape": [1], "dtype": "|O", "tensor": "x"},
        {"$": "dtype", "dtype": "|O"},
        {"$": "scalar", "dtype": "|O", "value": "os.system"},
    ],
    ids=lambda n: n.get("$", "no-tag") + ("-" + n["name"] if "name" in n else ""),
)
def test_pickle_like_or_unknown_nodes_are_refused(saved_tree: Path, node: dict) -> None:
    edit_manifest(saved_tree, lambda m: root_node(m)["state"].update(criterion=node))
    with pytest.raises(EstimatorLoadError):
        load_estimator(saved_tree)


def test_structured_dtype_with_objects_is_refused(saved_tree: Path) -> None:
    def change(manifest: dict) -> None:
        nodes = next(n for n in walk_nodes(manifest) if isinstance(n.get("dtype"), dict))
        nodes["dtype"]["formats"][0] = "|O"

    edit_manifest(saved_tree, change)
    with pytest.raises(EstimatorLoadError, match="unsupported dtype"):
        load_estimator(saved_tree)


def test_manifest_and_weights_must_agree_on_tensors(saved_tree: Path, tmp_path: Path) -> None:
    edit_weights(saved_tree, lambda t: t.update(extra=np.zeros(3)))
    with pytest.raises(EstimatorLoadError, match=f"{FAITHFUL}.*not referenced"):
        load_estimator(saved_tree)

    edit_weights(saved_tree, lambda t: (t.pop("extra"), t.pop(next(iter(t)))))
    with pytest.raises(EstimatorLoadError, match=r"is not in arrays\.safetensors"):
        load_estimator(saved_tree)


def test_tensor_of_another_dtype_or_shape_is_refused(saved_tree: Path) -> None:
    values = "DecisionTreeClassifier.tree_.values"
    edit_weights(saved_tree, lambda t: t.update({values: t[values].astype(np.float32)}))
    with pytest.raises(EstimatorLoadError, match="is not float64"):
        load_estimator(saved_tree)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("left_child", 10**6, "link to missing nodes"),
        ("left_child", 0, "link to missing nodes"),  # a cycle back to the root
        ("right_child", -1, "link to missing nodes"),  # half a leaf
        ("feature", 30, "link to missing nodes"),  # beyond the 30 PCA features
        ("feature", -5, "link to missing nodes"),
        ("missing_go_to_left", 7, "link to missing nodes"),
    ],
)
def test_crafted_tree_is_refused(saved_tree: Path, field: str, value: int, match: str) -> None:
    """Even with a valid hash (an attacker re-signs the file), sklearn's tree is never handed
    links that would make its Cython walk read outside the node array or the input row."""
    name = f"DecisionTreeClassifier.tree_.nodes.{field}"
    edit_weights(saved_tree, lambda t: t[name].__setitem__(0, value))
    with pytest.raises(EstimatorLoadError, match=match):
        load_estimator(saved_tree)


def test_tree_wider_than_its_estimator_is_refused(saved_tree: Path) -> None:
    def change(manifest: dict) -> None:
        tree = next(n for n in walk_nodes(manifest) if n.get("$") == "tree")
        tree["n_features"] = 1000

    edit_manifest(saved_tree, change)
    with pytest.raises(EstimatorLoadError, match="tree_ has 1000 features, n_features_in_ is 30"):
        load_estimator(saved_tree)


def test_inconsistent_svm_is_refused(saved_pipeline: Path) -> None:
    name = "Pipeline.steps[1][1]._n_support"
    edit_weights(saved_pipeline, lambda t: t[name].__setitem__(0, t[name][0] + 5))
    with pytest.raises(EstimatorLoadError, match="_n_support does not add up"):
        load_estimator(saved_pipeline)


def test_version_mismatch_warns_like_sklearn(saved_tree: Path) -> None:
    edit_manifest(saved_tree, lambda m: root_node(m)["state"].update(_sklearn_version="0.0"))
    with pytest.warns(InconsistentVersionWarning):
        load_estimator(saved_tree)


def test_allowed_prefixes_must_be_a_sequence(saved_tree: Path) -> None:
    with pytest.raises(EstimatorLoadError, match="not a single string"):
        load_estimator(saved_tree, allowed_prefixes="sklearn.")
    with pytest.raises(EstimatorLoadError, match="non-empty"):
        load_estimator(saved_tree, allowed_prefixes=("",))


# --------------------------------------------------------------------------------------------
# Any plain value round-trips exactly


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        arr[i] = item
    return arr


def _layouts(arr: np.ndarray) -> st.SearchStrategy[np.ndarray]:
    if arr.ndim == 0:
        return st.just(arr)
    options = [arr, np.asfortranarray(arr), arr.T, arr[::2], arr[..., ::-1]]
    return st.sampled_from(options)


PLAIN_DTYPES = ["?", "i1", "u2", "<i4", ">i8", "u8", "f2", "<f4", ">f8", "c8", "c16", "M8[s]"]
PLAIN_DTYPES += ["m8[ms]", "S3", "U4"]
text = st.text(st.characters(exclude_characters="\x00"), max_size=4)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    *[hnp.from_dtype(np.dtype(d)) for d in ("?", "i1", "u8", "<i4", "f2", "f4", "f8")],
    hnp.from_dtype(np.dtype("U3"), alphabet=st.characters(exclude_characters="\x00")),
    st.sampled_from([np.float64, float, np.int32, np.dtype("<f4"), np.dtype(">i2")]),
    st.frozensets(st.integers(), max_size=3),
    st.sets(text, max_size=3),
)
arrays = (
    st.sampled_from(PLAIN_DTYPES)
    .flatmap(
        lambda dt: hnp.arrays(
            np.dtype(dt),
            hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
            elements=hnp.from_dtype(np.dtype(dt), alphabet=st.characters(exclude_characters="\x00"))
            if dt.startswith("U")
            else None,
        )
    )
    .flatmap(_layouts)
)
values = st.recursive(
    st.one_of(scalars, arrays),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(text, children, max_size=3),
        st.dictionaries(
            st.one_of(st.integers(), st.tuples(st.integers(), text)), children, max_size=3
        ),
        st.lists(children, max_size=3).map(_object_array),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=values)
def test_any_plain_value_round_trips(value: Any) -> None:
    holder = Holder(value=0)
    holder.value_ = value
    with tempfile.TemporaryDirectory() as folder:
        save_estimator(holder, folder)
        loaded = load_estimator(folder, allowed_prefixes=TEST_PREFIXES)
    assert_same(value, loaded.value_)


def test_structured_array_round_trips(tmp_path: Path) -> None:
    dtype = np.dtype(
        {"names": ["a", "b", "c"], "formats": ["<i2", ">f8", "u1"], "offsets": [0, 8, 20]}
    )
    arr = np.zeros((3, 2), dtype=dtype)
    arr["a"] = np.arange(6).reshape(3, 2)
    arr["b"] = np.linspace(-1, 1, 6).reshape(3, 2)
    arr["c"] = 7
    holder = Holder()
    holder.table_ = arr
    save_estimator(holder, tmp_path)
    loaded = load_estimator(tmp_path, allowed_prefixes=TEST_PREFIXES)
    assert loaded.table_.dtype == dtype  # names, formats, offsets, itemsize
    assert loaded.table_.tobytes() == arr.tobytes()
