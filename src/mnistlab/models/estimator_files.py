"""Classic models on disk: ``model.skops`` (:mod:`skops.io`, no pickle) + ``model.json``, via
:mod:`mnistlab.models.files` (format and SHA-256). Every type in the file must be in
:data:`TRUSTED`, checked on its schema before anything is imported (skops alone trusts every
scikit-learn estimator); the arrays that trees and libsvm read unchecked are checked after.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import sklearn
import skops.io
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelBinarizer
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from mnistlab.errors import MnistlabError
from mnistlab.features import preprocess
from mnistlab.models.files import SKLEARN_FORMAT, ModelFile, read_model_file, write_model_file
from mnistlab.models.logistic import TorchLogisticRegression

WEIGHTS_NAME = "model.skops"
OLD_FORMAT = "mnistlab-sklearn-estimator"  # mnistlab's own JSON + safetensors files, until 0.1

# What the classic recipes hold once fitted (see skops.io.get_untrusted_types), nothing else.
_SKLEARN = (Pipeline, PCA, SVC, KNeighborsClassifier, RandomForestClassifier, LabelBinarizer)
_SKLEARN_INNER = (DecisionTreeClassifier, LogisticRegression, OneVsRestClassifier)
_FEATURES = tuple(getattr(preprocess, name) for name in preprocess.__all__ if name[0].isupper())
_NUMPY = (np.ndarray, np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16)
_NUMPY_MORE = (np.uint32, np.uint64, np.float16, np.float32, np.float64)
_TYPES = (*_SKLEARN, *_SKLEARN_INNER, TorchLogisticRegression, *_FEATURES, *_NUMPY, *_NUMPY_MORE)
TRUSTED: list[str] = sorted(
    [f"{t.__module__}.{t.__qualname__}" for t in (*_TYPES, dict, list, tuple, str)]
    + ["sklearn.tree._tree.Tree"]  # no public import; its node arrays are checked on loading
)


def save_estimator(
    estimator: BaseEstimator, folder: str | os.PathLike[str], *, metadata: dict | None = None
) -> Path:
    """Write ``estimator`` as ``model.skops`` + ``model.json`` into ``folder``; returns it.

    Raises:
        MnistlabError: not an estimator, metadata not JSON, a type outside :data:`TRUSTED`.
    """
    name = type(estimator).__name__
    if not isinstance(estimator, BaseEstimator):
        raise MnistlabError(f"save_estimator expects a scikit-learn estimator, got {name}")
    try:
        json.dumps(metadata or {}, allow_nan=False)
        data = _skops_bytes(estimator)
    except (TypeError, ValueError) as exc:
        raise MnistlabError(f"cannot save {name}: {exc}") from None
    if untrusted := _untrusted(data, Path(folder) / WEIGHTS_NAME):
        raise MnistlabError(
            f"cannot save {name}: it holds types mnistlab does not load: " + ", ".join(untrusted),
            hint="kNN: --set clf__algorithm=brute avoids KD/ball trees, which are not checked",
        )
    from mnistlab import __version__

    versions = {"mnistlab": __version__, "scikit-learn": sklearn.__version__}  # skops: in the file
    manifest = {"estimator_class": name, "versions": versions, "metadata": metadata or {}}
    write_model_file(folder, data, manifest, fmt=SKLEARN_FORMAT, weights_name=WEIGHTS_NAME)
    return Path(folder)


def load_estimator(path: str | os.PathLike[str] | ModelFile) -> BaseEstimator:
    """The estimator :func:`save_estimator` wrote (``path``: a run or model folder, a file, or
    the :class:`ModelFile` already read and hash-checked).

    Raises:
        MnistlabError: missing, changed, older, untrusted, or inconsistent: never another error.
    """
    if isinstance(path, ModelFile):
        model = path
    else:
        _refuse_old_format(Path(path))  # first: read_model_file would say only "another format"
        model = read_model_file(path, [SKLEARN_FORMAT])
    where = model.weights_path
    if untrusted := _untrusted(model.data, where):
        raise MnistlabError(
            f"{where}: refused: types mnistlab does not trust: " + ", ".join(untrusted),
            hint="mnistlab loads only the types in mnistlab.models.estimator_files.TRUSTED",
        )
    try:
        estimator = skops.io.loads(model.data, trusted=TRUSTED)
    except Exception as exc:  # skops (untrusted methods...), zipfile, numpy, sklearn errors
        raise MnistlabError(f"{where}: refused: {type(exc).__name__}: {exc}") from None
    try:
        problems = [p for est in _estimators(estimator) for p in _array_problems(est)]
        problems += [] if isinstance(estimator, BaseEstimator) else ["the root is no estimator"]
    except Exception as exc:  # a crafted file can leave out or swap any attribute
        problems = [f"{type(exc).__name__}: {exc}"]
    if problems:
        raise MnistlabError(
            f"{where}: refused: its parts do not fit together: " + "; ".join(problems),
            hint="the file was made or edited by hand; train the model again",
        )
    return estimator


def _skops_bytes(estimator: BaseEstimator) -> bytes:
    """skops bytes, strided arrays saved as copies in their memory order (skops would store
    them C-ordered: PCA's ``components_``, a Fortran slice, would give matmuls that differ)."""
    swapped = [
        (est, key, value)
        for est in _estimators(estimator)
        for key, value in vars(est).items()
        if isinstance(value, np.ndarray) and not value.flags.forc
    ]
    try:
        for est, key, value in swapped:
            vars(est)[key] = value.copy(order="F" if value.strides[0] < value.strides[-1] else "C")
        return skops.io.dumps(estimator)
    finally:
        for est, key, value in swapped:
            vars(est)[key] = value


def _refuse_old_format(p: Path) -> None:
    candidates = (p, p / "model.json", p / "model" / "model.json", p.parent / "model.json")
    for manifest in [m for m in candidates if m.suffix == ".json" and m.is_file()][:1]:
        try:
            old = json.loads(manifest.read_text()).get("format") == OLD_FORMAT
        except (OSError, ValueError, AttributeError):
            return
        if old:
            run = manifest.parent.parent if manifest.parent.name == "model" else manifest.parent
            raise MnistlabError(
                f"{manifest}: saved by an older mnistlab ({OLD_FORMAT!r}, before skops files)",
                hint=f"train it again with `mnistlab train --config {run}` (replays the run), "
                "or load it with the mnistlab version that saved it",
            )


def _untrusted(data: bytes, where: Path) -> list[str]:
    """The types named in a skops file's ``schema.json`` that are not in :data:`TRUSTED`."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            found, stack = set(), [json.loads(archive.read("schema.json"))]
    except Exception as exc:  # zipfile and json raise several types on damaged bytes
        raise MnistlabError(f"{where}: not a valid skops file ({type(exc).__name__})") from None
    while stack:
        node = stack.pop()
        if isinstance(node, dict) and "__loader__" in node:
            found.add(f"{node.get('__module__')}.{node.get('__class__')}")
        stack.extend(node.values() if isinstance(node, dict) else [])
        stack.extend(node if isinstance(node, list) else [])
    return sorted(found - set(TRUSTED))


def _estimators(root: object) -> list[BaseEstimator]:
    """``root`` and every estimator it holds (pipeline steps, wrapped and ensemble members)."""
    seen, stack = {}, [root]
    while stack:
        obj = stack.pop()
        if isinstance(obj, list | tuple):
            stack.extend(obj)
        elif isinstance(obj, BaseEstimator) and id(obj) not in seen:
            seen[id(obj)] = obj
            stack.extend(vars(obj).values())
    return list(seen.values())


def _array_problems(est: BaseEstimator) -> list[str]:
    """What would make a tree or libsvm (Cython, no bounds checks) read outside its arrays."""
    n_in, d, name = getattr(est, "n_features_in_", None), vars(est), type(est).__name__
    if (tree := d.get("tree_")) is not None:
        if not (0 <= tree.node_count <= tree.capacity and tree.n_features == n_in):
            return [f"{name}: the tree's sizes disagree with the estimator's"]
        left, right = tree.children_left.astype(np.int64), tree.children_right.astype(np.int64)
        inner, index, feature = left != -1, np.arange(tree.node_count), tree.feature[left != -1]
        links = [(a[inner] > index[inner]) & (a[inner] < tree.node_count) for a in (left, right)]
        features = ((feature >= 0) & (feature < n_in)).all()
        if not (np.array_equal(inner, right != -1) and all(x.all() for x in links) and features):
            return [f"{name}: tree nodes link to missing nodes or features"]
    if isinstance(est, SVC) and "support_vectors_" in d:
        # libsvm reads _dual_coef_, _intercept_ (the public ones may be sign-flipped copies)
        dual, intercept = d.get("_dual_coef_", est.dual_coef_), d.get("_intercept_", est.intercept_)
        sv, n_sv, k = est.support_vectors_, est.n_support_, len(est.classes_)
        pairs = max(k * (k - 1) // 2, 1)
        if not (
            sv.shape[1] == n_in
            and n_sv.shape == (k,)
            and int(n_sv.sum()) == len(sv) == len(est.support_) == dual.shape[1]
            and dual.shape[0] == max(k - 1, 1)
            and intercept.shape == (pairs,)
            and all(np.size(d.get(p, ())) in (0, pairs) for p in ("_probA", "_probB"))
        ):
            return [f"{name}: support vectors, their counts and coefficients disagree"]
    return []
