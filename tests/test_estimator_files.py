"""Classic models on disk (mnistlab.models.estimator_files): skops files, an explicit list of
trusted types, and refusals.

Every classic recipe is fitted on a real subset of the bundled mnist-mini (1,500 train / 300
test images, small settings), saved, loaded, and must give bit-identical outputs. The security
tests edit saved files the way an attacker (who also rewrites the SHA-256 in model.json) or a
damaged disk would, and check that loading ends in a MnistlabError before any code named by
the file runs.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import pickle
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

import mnistlab.models.files as files
from mnistlab.data import load_dataset
from mnistlab.errors import MnistlabError
from mnistlab.models.classic import RECIPES
from mnistlab.models.estimator_files import (
    OLD_FORMAT,
    TRUSTED,
    WEIGHTS_NAME,
    load_estimator,
    save_estimator,
)
from mnistlab.models.files import PICKLE_SUFFIXES, SKLEARN_FORMAT, sha256_bytes

SMALL = {  # fast settings per recipe; the structure (steps, types) is the recipe's own
    ("logreg", "seed"): {"clf__estimator__max_iter": 200},
    ("knn", "default"): {"pca__n_components": 20},
    ("svm", "default"): {"pca__n_components": 20},
    ("rf", "default"): {"clf__n_estimators": 10},
}
OUTPUTS = ("predict", "predict_proba", "decision_function")


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    train, test = load_dataset("mnist-mini", "train"), load_dataset("mnist-mini", "test")
    return {"X": train.images[:1500], "y": train.labels[:1500], "Xt": test.images[:300]}


@pytest.fixture(scope="module")
def fitted(digits: dict[str, np.ndarray]) -> dict[tuple[str, str], Pipeline]:
    models = {}
    for key, recipe in RECIPES.items():
        pipeline = recipe.build(0).set_params(**SMALL.get(key, {}))
        models[key] = pipeline.fit(digits["X"], digits["y"])
    return models


@pytest.fixture(scope="module")
def small_file(fitted: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved logreg pipeline (PixelScaler + TorchLogisticRegression): small and fast."""
    return save_estimator(fitted["logreg", "default"], tmp_path_factory.mktemp("m") / "model")


def copy_model(folder: Path, to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", WEIGHTS_NAME):
        (to / name).write_bytes((folder / name).read_bytes())
    return to


def resign(folder: Path, data: bytes) -> None:
    """Write ``data`` as the weights and put its SHA-256 in model.json, as an attacker would."""
    (folder / WEIGHTS_NAME).write_bytes(data)
    manifest = json.loads((folder / "model.json").read_text())
    manifest["weights_sha256"] = sha256_bytes(data)
    (folder / "model.json").write_text(json.dumps(manifest))


def edit_skops(
    folder: Path,
    schema: Callable[[dict], Any] | None = None,
    arrays: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> None:
    """Rewrite model.skops: ``schema`` edits schema.json in place; ``arrays`` may replace any
    stored array (return None to keep it). Re-signs model.json."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(folder / WEIGHTS_NAME) as src,
        zipfile.ZipFile(out, "w") as dst,
    ):
        for name in src.namelist():
            data = src.read(name)
            if name == "schema.json" and schema is not None:
                tree = json.loads(data)
                schema(tree)
                data = json.dumps(tree).encode()
            elif name.endswith(".npy") and arrays is not None:
                new = arrays(np.load(io.BytesIO(data), allow_pickle=False))
                if new is not None:
                    buffer = io.BytesIO()
                    np.save(buffer, new, allow_pickle=False)
                    data = buffer.getvalue()
            dst.writestr(name, data)
    resign(folder, out.getvalue())


def nodes(tree: Any) -> list[dict]:
    """Every schema node (a dict with ``__loader__``), depth first."""
    found, stack = [], [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found += [item] if "__loader__" in item else []
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("key", list(RECIPES), ids=lambda k: "-".join(k))
def test_every_recipe_round_trips_exactly(
    key: tuple[str, str], fitted: dict, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    model = fitted[key]
    folder = save_estimator(model, tmp_path / "model", metadata={"recipe": list(key)})
    data = (folder / WEIGHTS_NAME).read_bytes()
    assert set(skops.io.get_untrusted_types(data=data)) <= set(TRUSTED)
    manifest = json.loads((folder / "model.json").read_text())
    assert manifest["format"] == SKLEARN_FORMAT and manifest["weights"] == WEIGHTS_NAME
    assert manifest["metadata"] == {"recipe": list(key)}
    assert manifest["estimator_class"] == "Pipeline"
    # a run folder, the model folder, the manifest and the weights all designate the model
    for path in (tmp_path, folder, folder / "model.json", folder / WEIGHTS_NAME):
        loaded = load_estimator(path)
        assert type(loaded) is Pipeline and loaded is not model
        checked = 0
        for method in OUTPUTS:
            if hasattr(model, method):
                expected = getattr(model, method)(digits["Xt"])
                actual = getattr(loaded, method)(digits["Xt"])
                assert expected.dtype == actual.dtype, method
                assert np.array_equal(expected, actual), f"{method} differs after reloading"
                checked += 1
        assert checked >= 2


def test_torch_logistic_regression_holds_numpy_only(fitted: dict) -> None:
    clf = fitted["logreg", "default"].named_steps["clf"]
    assert isinstance(clf.coef_, np.ndarray) and isinstance(clf.intercept_, np.ndarray)
    assert all(type(v).__module__ in ("builtins", "numpy") for v in vars(clf).values())


def test_saving_leaves_the_estimator_as_it_was(fitted: dict, tmp_path: Path) -> None:
    """Strided arrays (PCA's components_) are saved as copies; the estimator keeps its own."""
    pca = fitted["svm", "default"].named_steps["pca"]
    before = pca.components_
    assert not before.flags.forc  # the case the copy is for
    save_estimator(fitted["svm", "default"], tmp_path)
    assert pca.components_ is before


def test_trusted_is_an_explicit_list_of_types() -> None:
    assert sorted(set(TRUSTED)) == TRUSTED
    for path in TRUSTED:
        module, _, name = path.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), name), type), path
    assert not [p for p in TRUSTED if p.startswith(("builtins.", "numpy.")) and "func" in p]
    for needed in ("sklearn.pipeline.Pipeline", "sklearn.tree._tree.Tree", "numpy.ndarray"):
        assert needed in TRUSTED
    assert "mnistlab.models.logistic.TorchLogisticRegression" in TRUSTED
    assert not [p for p in TRUSTED if p.endswith(("GaussianNB", "KDTree", "FunctionTransformer"))]


def test_loading_never_unpickles(small_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    assert isinstance(load_estimator(small_file), Pipeline)


# --------------------------------------------------------------------------------------------
# What cannot be saved


def test_only_estimators_and_plain_metadata_are_saved(fitted: dict, tmp_path: Path) -> None:
    with pytest.raises(MnistlabError, match="expects a scikit-learn estimator"):
        save_estimator({"not": "an estimator"}, tmp_path / "a")  # type: ignore[arg-type]
    with pytest.raises(MnistlabError, match="cannot save Pipeline"):
        save_estimator(fitted["logreg", "default"], tmp_path / "b", metadata={"x": object()})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_untrusted_types_are_not_saved(fitted: dict, digits: dict, tmp_path: Path) -> None:
    """What load_estimator would refuse is not written (kNN on a KD tree, a GaussianNB)."""
    knn = copy.deepcopy(fitted["knn", "default"]).set_params(
        pca__n_components=10, clf__algorithm="kd_tree"
    )
    knn.fit(digits["X"], digits["y"])
    with pytest.raises(MnistlabError, match="KDTree") as info:
        save_estimator(knn, tmp_path / "knn")
    assert "clf__algorithm=brute" in (info.value.hint or "")
    with pytest.raises(MnistlabError, match="GaussianNB"):
        save_estimator(GaussianNB().fit(digits["X"].reshape(1500, -1), digits["y"]), tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------
# Damaged or edited files


def test_tampered_weights_are_refused(small_file: Path, tmp_path: Path) -> None:
    folder = copy_model(small_file, tmp_path / "m")
    data = bytearray((folder / WEIGHTS_NAME).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(MnistlabError, match="SHA-256"):
        load_estimator(folder)


def test_missing_truncated_and_half_written_files(
    small_file: Path, fitted: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_model(small_file, tmp_path / "m")
    (folder / WEIGHTS_NAME).write_bytes((folder / WEIGHTS_NAME).read_bytes()[:-10])
    with pytest.raises(MnistlabError, match="SHA-256"):
        load_estimator(folder)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(MnistlabError, match="cannot read the model's weights"):
        load_estimator(folder)
    with pytest.raises(MnistlabError, match="no such file"):
        load_estimator(tmp_path / "nothing")
    # weights written, then a crash before the manifest: the old manifest no longer matches
    folder = copy_model(small_file, tmp_path / "n")

    def crash(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files, "atomic_write_json", crash)
    with pytest.raises(OSError, match="disk full"):
        save_estimator(fitted["rf", "default"], folder)
    monkeypatch.undo()
    with pytest.raises(MnistlabError, match="SHA-256"):
        load_estimator(folder)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.floats(0, 1, exclude_max=True), xor=st.integers(1, 255), resign_it=st.booleans())
def test_any_corruption_ends_in_a_clear_error(
    small_file: Path, digits: dict, fitted: dict, where: float, xor: int, resign_it: bool
) -> None:
    """One changed byte anywhere in model.skops: refused by the SHA-256; with the SHA-256
    rewritten, skops' own checks (zip CRCs) refuse it, or it loads the same model (a byte of
    zip metadata such as a timestamp). Never another exception."""
    data = bytearray((small_file / WEIGHTS_NAME).read_bytes())
    data[int(where * len(data))] ^= xor
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_model(small_file, Path(tmp))
        if resign_it:
            resign(folder, bytes(data))
        else:
            (folder / WEIGHTS_NAME).write_bytes(bytes(data))
        try:
            loaded = load_estimator(folder)
        except MnistlabError:
            return
    assert resign_it
    expected = fitted["logreg", "default"].predict_proba(digits["Xt"])
    assert np.array_equal(loaded.predict_proba(digits["Xt"]), expected)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_end_in_a_clear_error(small_file: Path, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_model(small_file, Path(tmp))
        resign(folder, data)
        with pytest.raises(MnistlabError):
            load_estimator(folder)


# --------------------------------------------------------------------------------------------
# Untrusted types, and no code runs while loading


class Trap(BaseEstimator):
    """Writes a marker file when rebuilt, whichever way (``__setstate__`` or ``__reduce__``)."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("code ran")
        self.__dict__.update(state)

    def __reduce__(self) -> tuple:
        return (Path(self.marker).write_text, ("code ran",))


def test_untrusted_sklearn_class_is_refused(digits: dict, tmp_path: Path) -> None:
    """skops itself trusts every scikit-learn estimator; mnistlab trusts only its list."""
    nb = GaussianNB().fit(digits["X"].reshape(1500, -1), digits["y"])
    data = skops.io.dumps(Pipeline([("nb", nb)]))
    assert skops.io.get_untrusted_types(data=data) == []  # skops alone would load it
    files.write_model_file(tmp_path, data, {}, fmt=SKLEARN_FORMAT, weights_name=WEIGHTS_NAME)
    with pytest.raises(
        MnistlabError,
        match=r"refused: types mnistlab does not trust: sklearn\.naive_bayes\.GaussianNB",
    ):
        load_estimator(tmp_path)


def test_no_code_of_an_untrusted_class_runs(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = skops.io.dumps(Pipeline([("trap", Trap(marker=str(marker)))]))
    files.write_model_file(tmp_path, data, {}, fmt=SKLEARN_FORMAT, weights_name=WEIGHTS_NAME)
    with pytest.raises(MnistlabError, match=r"refused: .*\bTrap\b") as info:
        load_estimator(tmp_path)
    assert "Traceback" not in str(info.value)
    assert not marker.exists()
    # control: the trap works when its class is trusted, so the test above means something
    skops.io.loads(data, trusted=[f"{Trap.__module__}.Trap"])
    assert marker.read_text() == "code ran"


def test_a_module_named_in_the_file_is_never_imported(
    small_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker, module = tmp_path / "imported", "mnistlab_test_trap_module"
    (tmp_path / f"{module}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "class Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = copy_model(small_file, tmp_path / "m")

    def name_the_module(schema: dict) -> None:
        schema["content"]["content"]["steps"]["content"][0]["content"][1].update(
            {"__module__": module, "__class__": "Evil"}
        )

    edit_skops(folder, schema=name_the_module)
    with pytest.raises(MnistlabError, match=f"refused: .*{module}.Evil"):
        load_estimator(folder)
    assert not marker.exists() and module not in sys.modules
    importlib.import_module(module)  # control: importing it would have left the marker
    assert marker.exists()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pick=st.integers(0, 10_000),
    module=st.sampled_from(["os", "builtins", "subprocess", "numpy", "sklearn.utils", "x.y"]),
    name=st.sampled_from(["system", "eval", "exec", "Popen", "load", "Bunch", "Z"]),
)
def test_any_node_renamed_to_an_untrusted_type_is_refused(
    small_file: Path, pick: int, module: str, name: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_model(small_file, Path(tmp))

        def rename(schema: dict) -> None:
            found = nodes(schema)
            found[pick % len(found)].update({"__module__": module, "__class__": name})

        edit_skops(folder, schema=rename)
        with pytest.raises(MnistlabError, match=f"refused: .*{module}.{name}"):
            load_estimator(folder)


def test_functions_and_methods_are_refused(fitted: dict, tmp_path: Path) -> None:
    """A function (not a type in the list) and a bound method of a trusted class (skops'
    own audit) are both refused."""
    for i, value in enumerate([np.sum, fitted["logreg", "default"].named_steps["scale"].transform]):
        model = copy.deepcopy(fitted["logreg", "default"])
        model.named_steps["clf"].hook_ = value
        data = skops.io.dumps(model)
        folder = tmp_path / str(i)
        files.write_model_file(folder, data, {}, fmt=SKLEARN_FORMAT, weights_name=WEIGHTS_NAME)
        with pytest.raises(MnistlabError, match="refused"):
            load_estimator(folder)


def test_pickle_files_are_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Trap(marker=str(marker)))
    for suffix in PICKLE_SUFFIXES:
        (tmp_path / f"model{suffix}").write_bytes(payload)
        with pytest.raises(MnistlabError, match="does not load pickle-based files"):
            load_estimator(tmp_path / f"model{suffix}")
    # a pickle under a manifest that names it, with the right SHA-256: not a skops file
    folder = tmp_path / "m"
    files.write_model_file(folder, payload, {}, fmt=SKLEARN_FORMAT, weights_name="model.pkl")
    with pytest.raises(MnistlabError, match="not a valid skops file"):
        load_estimator(folder)
    files.write_model_file(folder, payload, {}, fmt=SKLEARN_FORMAT, weights_name=WEIGHTS_NAME)
    with pytest.raises(MnistlabError, match="not a valid skops file"):
        load_estimator(folder)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# Arrays that scikit-learn's Cython code reads without bounds checks


def tree_nodes(change: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], Any]:
    def edit(array: np.ndarray) -> np.ndarray | None:
        if array.dtype.names is None or "left_child" not in array.dtype.names:
            return None
        array = array.copy()
        change(array)
        return array

    return edit


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda a: a["left_child"].__setitem__(0, 10**6), id="child-out-of-range"),
        pytest.param(lambda a: a["right_child"].__setitem__(0, 0), id="child-loops-back"),
        pytest.param(lambda a: a["left_child"].__setitem__(0, -1), id="half-a-leaf"),
        pytest.param(lambda a: a["feature"].__setitem__(0, 784), id="feature-out-of-range"),
        pytest.param(lambda a: a["feature"].__setitem__(0, -5), id="feature-negative"),
    ],
)
def test_crafted_tree_nodes_are_refused(
    change: Callable[[np.ndarray], None], fitted: dict, tmp_path: Path
) -> None:
    folder = save_estimator(fitted["rf", "default"], tmp_path / "m")
    edit_skops(folder, arrays=tree_nodes(change))
    data = (folder / WEIGHTS_NAME).read_bytes()
    skops.io.loads(data, trusted=TRUSTED)  # skops and scikit-learn accept it: the check is ours
    with pytest.raises(MnistlabError, match="tree nodes link to missing nodes or features"):
        load_estimator(folder)


def test_tree_of_another_width_is_refused(fitted: dict, tmp_path: Path) -> None:
    folder = save_estimator(fitted["rf", "default"], tmp_path / "m")

    def narrow(schema: dict) -> None:
        for node in nodes(schema):
            if node["__loader__"] == "TreeNode":
                node["__reduce__"]["args"]["content"][0]["content"] = "10"  # n_features

    edit_skops(folder, schema=narrow)
    with pytest.raises(MnistlabError, match="tree's sizes disagree"):
        load_estimator(folder)


def test_tree_wider_than_its_estimator_is_refused(digits: dict, tmp_path: Path) -> None:
    X = digits["X"].reshape(1500, -1)
    tree = DecisionTreeClassifier(max_depth=4, random_state=0).fit(X, digits["y"])
    folder = save_estimator(Pipeline([("tree", tree)]), tmp_path / "m")

    def narrow(schema: dict) -> None:
        for node in nodes(schema):
            if node["__loader__"] == "ObjectNode" and node["__class__"] == "DecisionTreeClassifier":
                node["content"]["content"]["n_features_in_"]["content"] = "10"

    edit_skops(folder, schema=narrow)
    with pytest.raises(MnistlabError, match="tree's sizes disagree"):
        load_estimator(folder)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda svc: setattr(svc, "_n_support", svc._n_support + 1), id="n_support"),
        pytest.param(
            lambda svc: setattr(svc, "support_vectors_", svc.support_vectors_[:, :-1]),
            id="sv-columns",
        ),
        pytest.param(
            lambda svc: setattr(svc, "_dual_coef_", svc._dual_coef_[:, :-3]), id="dual-coef"
        ),
        pytest.param(lambda svc: setattr(svc, "_intercept_", svc._intercept_[:-1]), id="intercept"),
        pytest.param(lambda svc: delattr(svc, "support_"), id="missing-attribute"),
    ],
)
def test_inconsistent_svm_is_refused(
    change: Callable[[Any], None], fitted: dict, tmp_path: Path
) -> None:
    model = copy.deepcopy(fitted["svm", "default"])
    change(model.named_steps["clf"])
    folder = save_estimator(model, tmp_path / "m")
    with pytest.raises(MnistlabError, match="do not fit together"):
        load_estimator(folder)


# --------------------------------------------------------------------------------------------
# Runs saved by an older mnistlab


def test_old_format_is_refused_with_the_way_out(tmp_path: Path) -> None:
    run = tmp_path / "knn-mnist-20250101-120000"
    (run / "model").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"kind": "classic", "model": "knn"}))
    (run / "model" / "arrays.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    old = {"format": OLD_FORMAT, "format_version": 1, "weights": {"file": "arrays.safetensors"}}
    (run / "model" / "model.json").write_text(json.dumps(old))
    for path in (
        run,
        run / "model",
        run / "model" / "model.json",
        run / "model" / "arrays.safetensors",
    ):
        with pytest.raises(MnistlabError, match="saved by an older mnistlab") as info:
            load_estimator(path)
        assert f"mnistlab train --config {run}" in (info.value.hint or "")
        assert "version that saved it" in (info.value.hint or "")
