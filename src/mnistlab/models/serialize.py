"""Save and load fitted scikit-learn estimators without pickle.

A saved estimator is a folder with two files:

``arrays.safetensors``
    Every numpy array the estimator holds, written with :mod:`safetensors.numpy`.
``model.json``
    The manifest: format version, library versions, the caller's ``metadata``, the SHA-256 and
    size of ``arrays.safetensors``, and the estimator tree. Each object in the tree names its
    class (``"module.QualName"``), its constructor parameter names, and its fitted state (what
    ``__getstate__()`` returns), encoded as JSON; arrays are references into the weights file.

Both files are written atomically, the weights first and the manifest last, so a reader sees
either the old model or the new one (a crash in between leaves an old manifest whose hash no
longer matches, which :func:`load_estimator` refuses).

Loading never unpickles, ``eval``-s or calls anything named by the file. An object is rebuilt
only if its class path starts with one of ``allowed_prefixes`` -- checked before anything is
imported -- and the class found there is a :class:`sklearn.base.BaseEstimator` subclass (rebuilt
with ``cls.__new__(cls)`` + ``__setstate__(state)``) or a loss function of
``sklearn._loss._loss.CyLossFunction``. A few fixed internal types have their own code paths:

- ``sklearn.tree._tree.Tree`` (held by trees and forests): rebuilt from its ``__reduce__``
  arguments and state; the node array is a structured array, stored field by field, and it is
  checked (child links point forward and in range, features in range) before sklearn's Cython
  code walks it, so that a crafted file cannot make ``predict`` read out of bounds.
- ``sklearn.neighbors.KDTree`` / ``BallTree`` (held by ``KNeighbors*`` as ``_tree``): not
  stored node by node; the file keeps their constructor inputs (data, ``leaf_size``, metric and
  its parameters, sample weights) and the tree is rebuilt by the public constructor at load
  time. Building is deterministic; :func:`save_estimator` rebuilds the tree once and refuses if
  the result differs from the fitted one, so what is saved reloads to identical queries.
- ``numpy.random.RandomState`` (a ``random_state`` parameter): its MT19937 state.
- ``sklearn.utils.Bunch`` (``named_estimators_`` of voting and stacking ensembles).

Anything else -- functions, lambdas, sparse matrices, other objects -- makes
:func:`save_estimator` fail with a message that names the attribute, and is refused by
:func:`load_estimator` if a hand-made file contains it.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy
import sklearn
from sklearn.base import BaseEstimator
from sklearn.neighbors import BallTree, KDTree
from sklearn.tree._tree import Tree
from sklearn.utils import Bunch

from mnistlab.errors import MnistlabError
from mnistlab.io import atomic_write_bytes, atomic_write_json, sha256_file

__all__ = [
    "DEFAULT_ALLOWED_PREFIXES",
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "EstimatorLoadError",
    "EstimatorSaveError",
    "load_estimator",
    "read_manifest",
    "save_estimator",
]

FORMAT = "mnistlab-sklearn-estimator"
FORMAT_VERSION = 1
MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "arrays.safetensors"
DEFAULT_ALLOWED_PREFIXES: tuple[str, ...] = ("sklearn.", "mnistlab.")


class EstimatorSaveError(MnistlabError, TypeError):
    """The estimator holds something that cannot be saved without pickle."""


class EstimatorLoadError(MnistlabError, ValueError):
    """A saved estimator is missing, damaged, malformed, or names a class that is refused."""


# --------------------------------------------------------------------------------------------
# Types with fixed code paths


_TREE_PATH = "sklearn.tree._tree.Tree"
_TREE_STATE_KEYS = ("max_depth", "node_count", "nodes", "values")
_BINARY_TREES: dict[str, type] = {
    "sklearn.neighbors._kd_tree.KDTree": KDTree,
    "sklearn.neighbors._ball_tree.BallTree": BallTree,
}
_RANDOM_STATE_PATH = "numpy.random.mtrand.RandomState"
_BUNCH_PATH = "sklearn.utils._bunch.Bunch"

# dtypes safetensors stores natively (safetensors.numpy._TYPES); other plain-data dtypes are
# stored as their raw little-endian bytes.
_NATIVE_TYPES = (
    np.bool_,
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
)
_NATIVE_DTYPES = frozenset(np.dtype(t) for t in _NATIVE_TYPES)
_PLAIN_KINDS = "biufcmMS"  # fixed-size plain data: bytes in, same value out
_SCALAR_KINDS = "biuU"  # + floats up to 64 bits, handled separately

# Types (not instances) that appear as parameter values, e.g. ``dtype=np.float64``.
_TYPE_NAMES: dict[str, type] = {
    f"builtins.{t.__name__}": t for t in (bool, int, float, complex, str, bytes, object)
} | {
    f"numpy.{t.__name__}": t
    for t in (
        *_NATIVE_TYPES,
        np.longdouble,
        np.complex128,
        np.str_,
        np.bytes_,
        np.object_,
    )
}
_TYPE_OF_NAME = {v: k for k, v in _TYPE_NAMES.items()}

_CLASS_PATH_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _cy_loss_base() -> type | None:
    try:
        from sklearn._loss._loss import CyLossFunction
    except ImportError:  # pragma: no cover - private module moved in another sklearn
        return None
    return CyLossFunction


def _metric_classes() -> dict[type, list[str]]:
    """DistanceMetric class -> its string names (inverse of sklearn's METRIC_MAPPING64)."""
    from sklearn.metrics._dist_metrics import METRIC_MAPPING64

    names: dict[type, list[str]] = {}
    for name, cls in METRIC_MAPPING64.items():
        if isinstance(name, str):
            names.setdefault(cls, []).append(name)
    return names


# --------------------------------------------------------------------------------------------
# Saving


class _Encoder:
    """Turns an estimator tree into JSON-ready nodes plus a dict of named arrays."""

    def __init__(self) -> None:
        self.tensors: dict[str, np.ndarray] = {}
        self.memo: dict[int, int] = {}  # id(object) -> node id, for shared objects
        self.keep: list[Any] = []  # keeps memoized objects alive so their ids stay unique
        self.active: set[int] = set()  # containers being encoded (cycle guard)

    # -- helpers

    def _fail(self, path: str, what: str, hint: str | None = None) -> EstimatorSaveError:
        return EstimatorSaveError(f"cannot save {path}: {what}", hint=hint)

    def _new_id(self, obj: Any) -> int:
        node_id = len(self.memo)
        self.memo[id(obj)] = node_id
        self.keep.append(obj)
        return node_id

    def _tensor_name(self, path: str) -> str:
        path = path.encode("ascii", "backslashreplace").decode("ascii")
        name, n = path, 1
        while name in self.tensors:
            n += 1
            name = f"{path}#{n}"
        return name

    def _container(self, value: Any, path: str) -> None:
        if id(value) in self.active:
            raise self._fail(path, "the object graph has a cycle through a list, tuple or dict")

    # -- dispatch

    def encode(self, value: Any, path: str) -> Any:
        t = type(value)
        if value is None or t is bool or t is int or t is str:
            return value
        if t is float:
            return value if math.isfinite(value) else {"$": "float", "value": repr(value)}
        if isinstance(value, np.generic):
            return self._scalar(value, path)
        if t in (list, tuple, set, frozenset, dict):
            self._container(value, path)
            self.active.add(id(value))
            try:
                if t is list:
                    return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
                if t is tuple:
                    items = [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
                    return {"$": "tuple", "items": items}
                if t is dict:
                    return self._dict(value, path)
                items = [self.encode(v, f"{path}{{{i}}}") for i, v in enumerate(_ordered(value))]
                return {"$": t.__name__, "items": items}
            finally:
                self.active.discard(id(value))
        if isinstance(value, type) and value in _TYPE_OF_NAME:
            return {"$": "type", "name": _TYPE_OF_NAME[value]}
        if isinstance(value, np.dtype):
            if value.kind not in _PLAIN_KINDS + "U" or value.fields is not None:
                raise self._fail(path, f"dtype {value} is not supported")
            return {"$": "dtype", "dtype": value.str}

        # Objects that may be shared: the second sighting is a reference to the first.
        if id(value) in self.memo:
            return {"$": "ref", "id": self.memo[id(value)]}
        if isinstance(value, np.ndarray):
            return self._array(value, path)
        if isinstance(value, BaseEstimator):
            return self._estimator(value, path)
        if t is Bunch:
            node_id = self._new_id(value)
            body = self._dict(value, path)
            del body["$"]
            return {"$": "bunch", "id": node_id, "class": _BUNCH_PATH, **body}
        if t is Tree:
            return self._tree(value, path)
        if t in (KDTree, BallTree):
            return self._binary_tree(value, path)
        if t is np.random.RandomState:
            return self._random_state(value, path)
        loss_base = _cy_loss_base()
        if loss_base is not None and isinstance(value, loss_base):
            return self._loss(value, path)
        raise self._fail(
            path,
            f"values of type {_class_path(t)} are not supported",
            hint=_unsupported_hint(value),
        )

    def _dict(self, value: dict, path: str) -> dict:
        if all(type(k) is str for k in value):
            return {
                "$": "dict",
                "value": {k: self.encode(v, f"{path}[{k!r}]") for k, v in value.items()},
            }
        items = [
            [self.encode(k, f"{path}<key {k!r}>"), self.encode(v, f"{path}[{k!r}]")]
            for k, v in value.items()
        ]
        return {"$": "dict", "items": items}

    def _scalar(self, value: np.generic, path: str) -> dict:
        dt = value.dtype
        if dt.kind in _SCALAR_KINDS:
            return {"$": "scalar", "dtype": dt.str, "value": value.item()}
        if dt.kind == "f" and dt.itemsize <= 8:
            x = float(value)
            return {"$": "scalar", "dtype": dt.str, "value": x if math.isfinite(x) else repr(x)}
        raise self._fail(path, f"numpy scalars of dtype {dt} are not supported")

    # -- arrays

    def _array(self, arr: np.ndarray, path: str) -> dict:
        if isinstance(arr, np.matrix | np.ma.MaskedArray):
            raise self._fail(path, f"{type(arr).__name__} arrays are not supported")
        node_id = self._new_id(arr)
        arr = np.asarray(arr)  # np.memmap and other thin subclasses -> plain ndarray
        dt = arr.dtype
        node: dict[str, Any] = {"$": "ndarray", "id": node_id, "shape": list(arr.shape)}
        if dt.fields is not None:
            names = list(dt.names or ())
            formats, offsets = [], []
            for name in names:
                fdt, offset = dt.fields[name][:2]
                if fdt.kind not in _PLAIN_KINDS or fdt.fields is not None or fdt.shape:
                    raise self._fail(path, f"structured field {name!r} has unsupported dtype {fdt}")
                formats.append(fdt.str)
                offsets.append(offset)
            node["dtype"] = {
                "names": names,
                "formats": formats,
                "offsets": offsets,
                "itemsize": dt.itemsize,
            }
            node["fields"] = {name: self._store(arr[name], f"{path}.{name}") for name in names}
        elif dt.kind in "OU":  # objects and unicode strings: inline JSON, in memory order
            axes = _memory_axes(arr)
            flat = arr.transpose(axes).reshape(-1)
            node["dtype"] = "|O" if dt.kind == "O" else dt.str
            node["order"] = _order_name(axes)
            if dt.kind == "O":
                node["values"] = [self.encode(v, f"{path}.flat[{i}]") for i, v in enumerate(flat)]
            else:
                node["values"] = flat.tolist()
        elif dt.kind in _PLAIN_KINDS:
            node.update(self._store(arr, path))
        else:
            raise self._fail(path, f"arrays of dtype {dt} are not supported")
        return node

    def _store(self, arr: np.ndarray, path: str) -> dict:
        """Put one plain-data array in the weights file; return how to find and rebuild it."""
        dt = arr.dtype
        axes = _memory_axes(arr)
        data = np.asarray(arr.transpose(axes), order="C")  # (ascontiguousarray makes 0-d 1-d)
        if data.dtype.byteorder == ">" or (data.dtype.byteorder == "=" and sys.byteorder == "big"):
            data = data.astype(data.dtype.newbyteorder("<"))
        entry: dict[str, Any] = {"dtype": dt.str, "order": _order_name(axes)}
        if data.dtype.newbyteorder("=") in _NATIVE_DTYPES:
            entry["storage"] = "native"
        else:  # plain data safetensors has no name for: its bytes
            data = data.reshape(-1).view(np.uint8)
            entry["storage"] = "bytes"
        name = self._tensor_name(path)
        self.tensors[name] = data
        entry["tensor"] = name
        return entry

    # -- objects

    def _estimator(self, est: BaseEstimator, path: str) -> dict:
        cls = type(est)
        class_path = _class_path(cls)
        module = sys.modules.get(cls.__module__)
        if (
            not _IDENT_RE.fullmatch(cls.__qualname__)
            or module is None
            or getattr(module, cls.__qualname__, None) is not cls
        ):
            raise self._fail(
                path,
                f"class {class_path} cannot be found again by its name",
                hint="define estimator classes at the top level of an importable module",
            )
        node_id = self._new_id(est)
        try:
            params = sorted(est.get_params(deep=False))
        except Exception as exc:
            raise self._fail(path, f"get_params() failed: {exc}") from exc
        state = est.__getstate__() if hasattr(est, "__getstate__") else dict(est.__dict__)
        if state is None:
            state = {}
        if not isinstance(state, dict) or not all(type(k) is str for k in state):
            raise self._fail(path, "__getstate__() did not return a dict with string keys")
        return {
            "$": "estimator",
            "id": node_id,
            "class": class_path,
            "params": params,
            "state": {k: self.encode(v, f"{path}.{k}") for k, v in state.items()},
        }

    def _tree(self, tree: Tree, path: str) -> dict:
        node_id = self._new_id(tree)
        cls, args, state = tree.__reduce__()
        if cls is not Tree or len(args) != 3 or set(state) != set(_TREE_STATE_KEYS):
            raise self._fail(path, "this scikit-learn's Tree pickles in an unknown way")
        n_features, n_classes, n_outputs = args
        return {
            "$": "tree",
            "id": node_id,
            "class": _TREE_PATH,
            "n_features": int(n_features),
            "n_classes": self.encode(np.asarray(n_classes), f"{path}.n_classes"),
            "n_outputs": int(n_outputs),
            "state": {k: self.encode(state[k], f"{path}.{k}") for k in state},
        }

    def _binary_tree(self, tree: KDTree | BallTree, path: str) -> dict:
        cls = type(tree)
        state = tree.__getstate__()
        data, leaf_size, dist_metric, sample_weight = state[0], state[4], state[11], state[12]
        metric_state = dist_metric.__getstate__()
        names = [n for n in _metric_classes().get(type(dist_metric), []) if n in cls.valid_metrics]
        if not names or names[0] == "pyfunc":
            raise self._fail(
                path,
                f"{cls.__name__} with metric {type(dist_metric).__name__} is not supported",
                hint="use a named metric, or algorithm='brute'",
            )
        metric_params = _metric_params(type(dist_metric).__name__, metric_state)
        try:
            rebuilt = cls(
                data,
                leaf_size=leaf_size,
                metric=names[0],
                sample_weight=sample_weight,
                **metric_params,
            )
            same = _same_binary_tree(state, rebuilt.__getstate__())
        except Exception:
            same = False
        if not same:
            raise self._fail(
                path,
                f"rebuilding the {cls.__name__} from its data does not reproduce it exactly",
                hint="fit the neighbours model with algorithm='brute'",
            )
        node_id = self._new_id(tree)
        return {
            "$": "binary_tree",
            "id": node_id,
            "class": _class_path(cls),
            "data": self.encode(data, f"{path}.data"),
            "leaf_size": int(leaf_size),
            "metric": names[0],
            "metric_params": self._dict(metric_params, f"{path}.metric_params"),
            "sample_weight": self.encode(sample_weight, f"{path}.sample_weight"),
        }

    def _random_state(self, rng: np.random.RandomState, path: str) -> dict:
        state = rng.get_state()
        if not isinstance(state, tuple) or state[0] != "MT19937":
            raise self._fail(path, "only RandomState with the MT19937 generator is supported")
        node_id = self._new_id(rng)
        return {
            "$": "random_state",
            "id": node_id,
            "class": _RANDOM_STATE_PATH,
            "state": self.encode(state, f"{path}.state"),
        }

    def _loss(self, loss: Any, path: str) -> dict:
        reduced = loss.__reduce__()
        if (
            len(reduced) != 2
            or reduced[0] is not type(loss)
            or not all(type(a) in (int, float) and math.isfinite(a) for a in reduced[1])
        ):
            raise self._fail(path, f"loss {type(loss).__name__} pickles in an unknown way")
        node_id = self._new_id(loss)
        return {
            "$": "loss",
            "id": node_id,
            "class": _class_path(type(loss)),
            "args": list(reduced[1]),
        }


def _memory_axes(arr: np.ndarray) -> list[int]:
    """Axes from slowest- to fastest-varying in memory (``[0, 1, ...]`` for C order).

    Arrays are stored contiguously in this axis order and transposed back on load, so that a
    Fortran-ordered or transposed array (e.g. PCA's ``components_``, a view of an F-ordered
    SVD result) keeps its memory layout: BLAS takes a different path for another layout, and
    the last bits of a matrix product would differ.
    """
    if arr.flags.c_contiguous or arr.ndim < 2:
        return list(range(arr.ndim))
    if arr.flags.f_contiguous:
        return list(reversed(range(arr.ndim)))
    return sorted(range(arr.ndim), key=lambda a: -abs(arr.strides[a]))


def _order_name(axes: list[int]) -> str | list[int]:
    """How the manifest writes a memory order: "C", "F", or the axes, slowest first."""
    if axes == sorted(axes):
        return "C"
    if axes[::-1] == sorted(axes):
        return "F"
    return axes


def _ordered(values: Iterable[Any]) -> list[Any]:
    """Set items in a stable order where they can be sorted (for reproducible files)."""
    items = list(values)
    try:
        return sorted(items)
    except TypeError:
        return items


def _unsupported_hint(value: Any) -> str:
    if callable(value):
        return (
            "functions and other callables cannot be saved without pickle; "
            "use a named option (e.g. kernel='rbf', metric='euclidean') instead"
        )
    if type(value).__module__.startswith("scipy.sparse"):
        return "sparse matrices are not supported; convert with .toarray() before fitting"
    return "only estimators, numpy arrays and plain Python values can be saved"


def _metric_params(class_name: str, metric_state: tuple) -> dict[str, Any]:
    """Keyword arguments that rebuild a DistanceMetric from its pickled state (p, vec, mat)."""
    p, vec, mat = metric_state[:3]
    base = class_name.removesuffix("64").removesuffix("32")
    if base == "MinkowskiDistance":
        params: dict[str, Any] = {"p": float(p)}
        if np.asarray(vec).size:
            params["w"] = np.array(vec)
        return params
    if base == "SEuclideanDistance":
        return {"V": np.array(vec)}
    if base == "MahalanobisDistance":
        return {"VI": np.array(mat)}
    return {}


def _same_array(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _same_binary_tree(a: tuple, b: tuple) -> bool:
    """Whether two KDTree/BallTree states are the same tree (query counters 7-10 aside)."""
    arrays_same = all(_same_array(a[i], b[i]) for i in (0, 1, 2, 3, 12))
    ints_same = all(int(a[i]) == int(b[i]) for i in (4, 5, 6))
    ma, mb = a[11].__getstate__(), b[11].__getstate__()
    metric_same = (
        type(a[11]) is type(b[11])
        and float(ma[0]) == float(mb[0])
        and all(_same_array(x, y) for x, y in zip(ma[1:3], mb[1:3], strict=True))
    )
    return arrays_same and ints_same and metric_same


def _versions() -> dict[str, str]:
    try:
        from mnistlab import __version__ as mnistlab_version
    except ImportError:  # pragma: no cover
        mnistlab_version = "unknown"
    return {
        "mnistlab_version": mnistlab_version,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "safetensors_version": safetensors.__version__,
    }


def save_estimator(
    estimator: BaseEstimator,
    directory: str | os.PathLike[str],
    *,
    metadata: dict | None = None,
) -> Path:
    """Save a (fitted) scikit-learn estimator to ``directory`` without pickle.

    Writes ``arrays.safetensors`` (every array) and then ``model.json`` (the manifest), each
    atomically; existing files of a previous save are replaced. Nested estimators (pipelines,
    ensembles, one-vs-rest wrappers) are saved with their parent; an object held in two places
    is stored once and reloads shared.

    Args:
        estimator: any :class:`~sklearn.base.BaseEstimator` whose state holds only estimators,
            numpy arrays and scalars, plain Python values and the internal types listed in the
            module docstring.
        directory: the folder to write (created if missing).
        metadata: JSON-serializable information stored in the manifest as is (e.g. training
            settings and metrics); read it back with :func:`read_manifest`.

    Returns:
        The folder the model was saved in.

    Raises:
        EstimatorSaveError: the estimator holds something that cannot be saved without pickle
            (a function, a sparse matrix, an unknown object); the message names the attribute.
    """
    if not isinstance(estimator, BaseEstimator):
        raise EstimatorSaveError(
            f"save_estimator expects a scikit-learn estimator, got {type(estimator).__name__}"
        )
    if metadata is None:
        metadata = {}
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EstimatorSaveError(
            f"metadata is not plain JSON: {exc}",
            hint="use dicts, lists, strings, finite numbers, booleans and None",
        ) from exc

    encoder = _Encoder()
    tree = encoder.encode(estimator, type(estimator).__name__)

    directory = Path(directory)
    weights_path = directory / WEIGHTS_NAME
    payload = safetensors.numpy.save(encoder.tensors, metadata={"format": "np"})
    atomic_write_bytes(weights_path, payload)
    del payload
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator_class": tree["class"],
        **_versions(),
        "weights": {
            "file": WEIGHTS_NAME,
            "sha256": sha256_file(weights_path),
            "size": weights_path.stat().st_size,
            "tensors": len(encoder.tensors),
        },
        "metadata": metadata,
        "estimator": tree,
    }
    atomic_write_json(directory / MANIFEST_NAME, manifest)
    return directory


# --------------------------------------------------------------------------------------------
# Loading


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``model.json`` of a saved estimator (format checked; nothing is rebuilt).

    Use it to read ``metadata`` or the versions without loading the model.

    Raises:
        EstimatorLoadError: no ``model.json``, not valid JSON, or not this format.
    """
    path = Path(directory) / MANIFEST_NAME
    hint = "save the model again with mnistlab.models.serialize.save_estimator"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EstimatorLoadError(
            f"{path} not found: {directory} does not hold a saved estimator", hint=hint
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EstimatorLoadError(f"cannot read {path}: {exc}", hint=hint) from exc
    try:
        manifest = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys
        )
    except (ValueError, RecursionError) as exc:
        raise EstimatorLoadError(
            f"{path} is not valid JSON (truncated or damaged?): {exc}", hint=hint
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EstimatorLoadError(f"{path} is not a mnistlab estimator manifest", hint=hint)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise EstimatorLoadError(
            f"{path} has format version {version!r}; this mnistlab reads version {FORMAT_VERSION}",
            hint="use the mnistlab version that saved it, or save the model again",
        )
    for key, kind in (("weights", dict), ("metadata", dict), ("estimator", dict)):
        if not isinstance(manifest.get(key), kind):
            raise EstimatorLoadError(f"{path} is malformed: {key!r} is missing", hint=hint)
    return manifest


def _load_weights(directory: Path, weights: Mapping[str, Any]) -> dict[str, np.ndarray]:
    path = directory / WEIGHTS_NAME
    hint = "the files were damaged or edited after saving; save the model again"
    sha, size = weights.get("sha256"), weights.get("size")
    if weights.get("file") != WEIGHTS_NAME or not isinstance(sha, str) or type(size) is not int:
        raise EstimatorLoadError(f"{directory / MANIFEST_NAME} is malformed: bad 'weights' entry")
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        raise EstimatorLoadError(
            f"{path} not found: the weights of the saved estimator are missing", hint=hint
        ) from None
    if actual_size != size:
        raise EstimatorLoadError(
            f"{path}: the weights do not match the manifest (size {actual_size} bytes, "
            f"expected {size}; truncated or replaced?)",
            hint=hint,
        )
    digest = sha256_file(path)
    if digest != sha:
        raise EstimatorLoadError(
            f"{path}: the weights do not match the manifest (SHA-256 {digest}, expected {sha})",
            hint=hint,
        )
    try:
        loaded = safetensors.numpy.load_file(path)
    except Exception as exc:
        raise EstimatorLoadError(f"{path} is not a valid safetensors file: {exc}") from exc
    # Own, aligned, writable copies (not views of a buffer or a memory map).
    return {name: np.array(t, copy=True) for name, t in loaded.items()}


class _Decoder:
    """Rebuilds objects from manifest nodes, refusing anything not explicitly allowed."""

    def __init__(self, tensors: dict[str, np.ndarray], allowed_prefixes: tuple[str, ...]):
        self.tensors = tensors
        self.used: set[str] = set()
        self.allowed_prefixes = allowed_prefixes
        self.memo: dict[int, Any] = {}

    # -- helpers

    def _bad(self, path: str, what: str) -> EstimatorLoadError:
        return EstimatorLoadError(
            f"{MANIFEST_NAME} is malformed at {path}: {what}",
            hint="the file was damaged or edited after saving; save the model again",
        )

    def _field(self, node: dict, key: str, kind: type | tuple[type, ...], path: str) -> Any:
        if key not in node:
            raise self._bad(path, f"missing {key!r}")
        value = node[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if type(value) not in kinds:
            raise self._bad(path, f"{key!r} has the wrong type ({type(value).__name__})")
        return value

    def _int(self, node: dict, key: str, path: str, minimum: int = 0) -> int:
        value = self._field(node, key, int, path)
        if value < minimum:
            raise self._bad(path, f"{key!r} must be at least {minimum}, got {value}")
        return value

    def _register(self, node: dict, obj: Any, path: str) -> None:
        node_id = self._field(node, "id", int, path)
        if node_id in self.memo:
            raise self._bad(path, f"object id {node_id} is defined twice")
        self.memo[node_id] = obj

    def _fixed_class(self, node: dict, expected: str | tuple[str, ...], path: str) -> str:
        """The class of a node that only one fixed internal type (or a few) may fill."""
        name = self._field(node, "class", str, path)
        allowed = (expected,) if isinstance(expected, str) else expected
        if name not in allowed:
            raise EstimatorLoadError(
                f"refused to load class {name!r} (at {path}): a {node['$']!r} node can only be "
                + " or ".join(allowed),
                hint="the file was not written by save_estimator",
            )
        return name

    def _prefix_allowed(self, name: str) -> bool:
        for prefix in self.allowed_prefixes:
            if prefix.endswith("."):
                if name.startswith(prefix):
                    return True
            elif name == prefix or name.startswith(prefix + "."):
                return True
        return False

    def _resolve(self, node: dict, path: str, base: type, what: str) -> type:
        """The class a node names, if allowed; the prefix is checked before any import."""
        name = self._field(node, "class", str, path)
        if not _CLASS_PATH_RE.fullmatch(name):
            raise self._bad(path, f"{name!r} is not a class path")
        if not self._prefix_allowed(name):
            raise EstimatorLoadError(
                f"refused to load class {name!r} (at {path}): it is not under the allowed "
                f"prefixes {list(self.allowed_prefixes)}",
                hint="only trusted packages are imported; if you trust this file and that "
                "package, pass allowed_prefixes including it",
            )
        module_name, _, qualname = name.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise EstimatorLoadError(
                f"refused to load class {name!r} (at {path}): module {module_name!r} cannot be "
                f"imported ({type(exc).__name__}: {exc})",
                hint="install the package (and version) that saved the model",
            ) from exc
        cls = getattr(module, qualname, None)
        if not isinstance(cls, type) or not issubclass(cls, base) or _class_path(cls) != name:
            raise EstimatorLoadError(
                f"refused to load class {name!r} (at {path}): it is not {what}",
                hint="a saved estimator only contains scikit-learn estimator classes and a few "
                "fixed internal types",
            )
        return cls

    def _axes(self, node: dict, ndim: int, path: str) -> list[int]:
        """The memory order of an array node as its axes, slowest first."""
        order = self._field(node, "order", (str, list), path)
        if order == "C":
            return list(range(ndim))
        if order == "F":
            return list(reversed(range(ndim)))
        if (
            isinstance(order, list)
            and all(type(a) is int for a in order)
            and sorted(order) == list(range(ndim))
        ):
            return order
        raise self._bad(path, f"'order' {order!r} is not C, F or a permutation of the axes")

    def _tensor(self, entry: dict, shape: list[int], path: str) -> np.ndarray:
        """One stored plain-data array, checked against what the manifest says it is."""
        name = self._field(entry, "tensor", str, path)
        dtype = _plain_dtype(self._field(entry, "dtype", str, path), path, self)
        axes = self._axes(entry, len(shape), path)
        storage = self._field(entry, "storage", str, path)
        if storage not in ("native", "bytes"):
            raise self._bad(path, f"unknown 'storage' {storage!r}")
        if name not in self.tensors:
            raise self._bad(path, f"tensor {name!r} is not in {WEIGHTS_NAME}")
        self.used.add(name)
        data = self.tensors[name]
        stored_shape = tuple(shape[a] for a in axes)
        little = dtype.newbyteorder("<")
        if storage == "native":
            if little not in _NATIVE_DTYPES or data.dtype != little or data.shape != stored_shape:
                raise self._bad(path, f"tensor {name!r} is not {dtype} {stored_shape}")
        else:
            count = math.prod(stored_shape)
            if data.dtype != np.uint8 or data.shape != (count * dtype.itemsize,):
                raise self._bad(path, f"tensor {name!r} does not hold {count} {dtype} values")
            data = data.view(little).reshape(stored_shape)
        if dtype != little:
            data = data.astype(dtype)
        return data.transpose(np.argsort(axes))

    # -- dispatch

    def decode(self, node: Any, path: str) -> Any:
        t = type(node)
        if node is None or t in (bool, int, float, str):
            return node
        if t is list:
            return [self.decode(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if t is not dict:
            raise self._bad(path, f"unexpected {t.__name__}")
        kind = node.get("$")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise EstimatorLoadError(
                f"refused to load {MANIFEST_NAME}: unknown node type {kind!r} at {path}",
                hint="this format never contains pickled or executable objects; the file was "
                "not written by save_estimator, or by a newer mnistlab",
            )
        return handler(self, node, path)

    def _d_ref(self, node: dict, path: str) -> Any:
        node_id = self._field(node, "id", int, path)
        if node_id not in self.memo:
            raise self._bad(path, f"reference to undefined object id {node_id}")
        return self.memo[node_id]

    def _d_float(self, node: dict, path: str) -> float:
        text = self._field(node, "value", str, path)
        if text not in ("nan", "inf", "-inf"):
            raise self._bad(path, f"bad float {text!r}")
        return float(text)

    def _d_tuple(self, node: dict, path: str) -> tuple:
        items = self._field(node, "items", list, path)
        return tuple(self.decode(v, f"{path}[{i}]") for i, v in enumerate(items))

    def _d_set(self, node: dict, path: str) -> set | frozenset:
        items = self._field(node, "items", list, path)
        kind = set if node["$"] == "set" else frozenset
        try:
            return kind(self.decode(v, f"{path}{{{i}}}") for i, v in enumerate(items))
        except TypeError as exc:
            raise self._bad(path, f"unhashable set item ({exc})") from exc

    def _dict_value(self, node: dict, path: str) -> dict:
        if "value" in node:
            value = self._field(node, "value", dict, path)
            return {k: self.decode(v, f"{path}[{k!r}]") for k, v in value.items()}
        items = self._field(node, "items", list, path)
        result = {}
        for i, item in enumerate(items):
            if type(item) is not list or len(item) != 2:
                raise self._bad(path, f"dict item {i} is not a [key, value] pair")
            key = self.decode(item[0], f"{path}<key {i}>")
            try:
                result[key] = self.decode(item[1], f"{path}[{key!r}]")
            except TypeError as exc:
                raise self._bad(path, f"unhashable dict key ({exc})") from exc
        return result

    def _d_dict(self, node: dict, path: str) -> dict:
        return self._dict_value(node, path)

    def _d_bunch(self, node: dict, path: str) -> Bunch:
        self._fixed_class(node, _BUNCH_PATH, path)
        bunch = Bunch()
        self._register(node, bunch, path)
        items = self._dict_value(node, path)
        if not all(type(k) is str for k in items):
            raise self._bad(path, "Bunch keys must be strings")
        bunch.update(items)
        return bunch

    def _d_type(self, node: dict, path: str) -> type:
        name = self._field(node, "name", str, path)
        if name not in _TYPE_NAMES:
            raise EstimatorLoadError(
                f"refused to load type {name!r} (at {path}): only numpy and builtin value "
                "types are allowed"
            )
        return _TYPE_NAMES[name]

    def _d_dtype(self, node: dict, path: str) -> np.dtype:
        text = self._field(node, "dtype", str, path)
        dtype = _plain_dtype(text, path, self, allow_unicode=True)
        return dtype

    def _d_scalar(self, node: dict, path: str) -> np.generic:
        dtype = _plain_dtype(self._field(node, "dtype", str, path), path, self, allow_unicode=True)
        value = node.get("value")
        try:
            if dtype.kind == "b" and type(value) is bool:
                return dtype.type(value)
            if dtype.kind in "iu" and type(value) is int:
                return np.array(value, dtype=dtype)[()]  # raises on overflow
            if dtype.kind == "U" and type(value) is str:
                return np.array(value, dtype=dtype)[()]
            numeric = type(value) in (int, float) or value in ("nan", "inf", "-inf")
            if dtype.kind == "f" and dtype.itemsize <= 8 and numeric:
                return np.array(float(value), dtype=dtype)[()]
        except (OverflowError, ValueError) as exc:
            raise self._bad(path, f"scalar {value!r} does not fit {dtype}") from exc
        raise self._bad(path, f"bad scalar {value!r} of dtype {dtype}")

    def _d_ndarray(self, node: dict, path: str) -> np.ndarray:
        shape = self._field(node, "shape", list, path)
        if not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
            raise self._bad(path, f"bad shape {shape!r}")
        count = math.prod(shape)
        dtype_desc = node.get("dtype")
        if isinstance(dtype_desc, dict):
            arr = self._structured(node, dtype_desc, shape, path)
        elif isinstance(dtype_desc, str) and "values" in node:
            values = self._field(node, "values", list, path)
            axes = self._axes(node, len(shape), path)
            if len(values) != count:
                raise self._bad(path, f"{len(values)} values for shape {shape}")
            if dtype_desc == "|O":
                flat = np.empty(count, dtype=object)
                for i, v in enumerate(values):
                    flat[i] = self.decode(v, f"{path}.flat[{i}]")
            else:
                dtype = _plain_dtype(dtype_desc, path, self, allow_unicode=True)
                if dtype.kind != "U" or not all(type(v) is str for v in values):
                    raise self._bad(path, "inline values must be the strings of a unicode array")
                flat = np.array(values, dtype=dtype).reshape(count)
            arr = flat.reshape([shape[a] for a in axes]).transpose(np.argsort(axes))
        else:
            arr = self._tensor(node, shape, path)
        self._register(node, arr, path)
        return arr

    def _structured(self, node: dict, desc: dict, shape: list[int], path: str) -> np.ndarray:
        names = self._field(desc, "names", list, path)
        formats = self._field(desc, "formats", list, path)
        offsets = self._field(desc, "offsets", list, path)
        itemsize = self._int(desc, "itemsize", path, minimum=1)
        fields = self._field(node, "fields", dict, path)
        if (
            not names
            or len(set(map(str, names))) != len(names)
            or not all(type(n) is str for n in names)
            or len(formats) != len(names)
            or len(offsets) != len(names)
            or not all(type(o) is int and o >= 0 for o in offsets)
            or not all(type(f) is str for f in formats)
            or set(fields) != set(names)
            or itemsize > 1 << 16
        ):
            raise self._bad(path, "bad structured dtype description")
        field_dtypes = [_plain_dtype(f, path, self) for f in formats]
        try:
            dtype = np.dtype(
                {"names": names, "formats": field_dtypes, "offsets": offsets, "itemsize": itemsize}
            )
        except (TypeError, ValueError) as exc:
            raise self._bad(path, f"bad structured dtype ({exc})") from exc
        arr = np.zeros(shape, dtype=dtype)
        for name, fdt in zip(names, field_dtypes, strict=True):
            entry = self._field(fields, name, dict, path)
            if _plain_dtype(self._field(entry, "dtype", str, path), path, self) != fdt:
                raise self._bad(path, f"field {name!r} dtype differs from the description")
            arr[name] = self._tensor(entry, shape, f"{path}.{name}")
        return arr

    def _d_estimator(self, node: dict, path: str) -> BaseEstimator:
        cls = self._resolve(node, path, BaseEstimator, "a scikit-learn estimator class")
        params = self._field(node, "params", list, path)
        state_node = self._field(node, "state", dict, path)
        if not all(type(p) is str for p in params):
            raise self._bad(path, "'params' must be a list of names")
        est = cls.__new__(cls)
        self._register(node, est, path)
        state = {k: self.decode(v, f"{path}.{k}") for k, v in state_node.items()}
        try:
            est.__setstate__(state)
        except Exception as exc:
            raise EstimatorLoadError(
                f"cannot rebuild {cls.__name__} at {path}: {type(exc).__name__}: {exc}"
            ) from exc
        _check_consistency(est, path)
        return est

    def _d_tree(self, node: dict, path: str) -> Tree:
        self._fixed_class(node, _TREE_PATH, path)
        n_features = self._int(node, "n_features", path, minimum=1)
        n_outputs = self._int(node, "n_outputs", path, minimum=1)
        n_classes = self.decode(self._field(node, "n_classes", dict, path), f"{path}.n_classes")
        if (
            not isinstance(n_classes, np.ndarray)
            or n_classes.dtype.kind not in "iu"
            or n_classes.shape != (n_outputs,)
            or np.any(n_classes < 1)
        ):
            raise self._bad(path, "n_classes must hold one positive count per output")
        state_node = self._field(node, "state", dict, path)
        if set(state_node) != set(_TREE_STATE_KEYS):
            raise self._bad(path, "a tree state has max_depth, node_count, nodes and values")
        max_depth = self._int(state_node, "max_depth", path)
        node_count = self._int(state_node, "node_count", path, minimum=1)
        nodes = self.decode(state_node["nodes"], f"{path}.nodes")
        values = self.decode(state_node["values"], f"{path}.values")
        if not isinstance(nodes, np.ndarray) or not isinstance(values, np.ndarray):
            raise self._bad(path, "tree nodes and values must be arrays")
        _check_tree_nodes(nodes, node_count, n_features, path, self)
        tree = Tree(n_features, np.asarray(n_classes, dtype=np.intp), n_outputs)
        try:
            tree.__setstate__(
                {"max_depth": max_depth, "node_count": node_count, "nodes": nodes, "values": values}
            )
        except (ValueError, TypeError, MemoryError) as exc:
            raise self._bad(path, f"scikit-learn refused the tree ({exc})") from exc
        self._register(node, tree, path)
        return tree

    def _d_binary_tree(self, node: dict, path: str) -> KDTree | BallTree:
        name = self._fixed_class(node, tuple(_BINARY_TREES), path)
        cls = _BINARY_TREES[name]
        leaf_size = self._int(node, "leaf_size", path, minimum=1)
        metric = self._field(node, "metric", str, path)
        if metric not in cls.valid_metrics or metric == "pyfunc":
            raise self._bad(path, f"metric {metric!r} is not valid for {cls.__name__}")
        data = self.decode(self._field(node, "data", dict, path), f"{path}.data")
        params = self._dict_value(self._field(node, "metric_params", dict, path), path)
        sample_weight = self.decode(node.get("sample_weight"), f"{path}.sample_weight")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.float64
            or data.ndim != 2
            or not all(type(k) is str and _IDENT_RE.fullmatch(k) for k in params)
            or not (sample_weight is None or isinstance(sample_weight, np.ndarray))
        ):
            raise self._bad(path, "bad data, metric parameters or sample weights for the tree")
        try:
            tree = cls(
                data, leaf_size=leaf_size, metric=metric, sample_weight=sample_weight, **params
            )
        except (ValueError, TypeError) as exc:
            raise self._bad(path, f"cannot rebuild the {cls.__name__} ({exc})") from exc
        self._register(node, tree, path)
        return tree

    def _d_random_state(self, node: dict, path: str) -> np.random.RandomState:
        self._fixed_class(node, _RANDOM_STATE_PATH, path)
        state = self.decode(self._field(node, "state", dict, path), f"{path}.state")
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != "MT19937":
            raise self._bad(path, "a RandomState state is ('MT19937', keys, pos, has_gauss, g)")
        rng = np.random.RandomState()
        try:
            rng.set_state(state)
        except (ValueError, TypeError) as exc:
            raise self._bad(path, f"bad RandomState state ({exc})") from exc
        self._register(node, rng, path)
        return rng

    def _d_loss(self, node: dict, path: str) -> Any:
        base = _cy_loss_base()
        if base is None:  # pragma: no cover
            raise EstimatorLoadError(f"this scikit-learn has no loss objects (at {path})")
        cls = self._resolve(node, path, base, "a scikit-learn loss function class")
        args = self._field(node, "args", list, path)
        if not all(type(a) in (int, float) for a in args):
            raise self._bad(path, "loss arguments must be numbers")
        try:
            loss = cls(*args)
        except (TypeError, ValueError) as exc:
            raise self._bad(path, f"cannot rebuild {cls.__name__} ({exc})") from exc
        self._register(node, loss, path)
        return loss


_HANDLERS = {
    "ref": _Decoder._d_ref,
    "float": _Decoder._d_float,
    "tuple": _Decoder._d_tuple,
    "set": _Decoder._d_set,
    "frozenset": _Decoder._d_set,
    "dict": _Decoder._d_dict,
    "bunch": _Decoder._d_bunch,
    "type": _Decoder._d_type,
    "dtype": _Decoder._d_dtype,
    "scalar": _Decoder._d_scalar,
    "ndarray": _Decoder._d_ndarray,
    "estimator": _Decoder._d_estimator,
    "tree": _Decoder._d_tree,
    "binary_tree": _Decoder._d_binary_tree,
    "random_state": _Decoder._d_random_state,
    "loss": _Decoder._d_loss,
}


def _plain_dtype(
    text: str, path: str, decoder: _Decoder, *, allow_unicode: bool = False
) -> np.dtype:
    """A fixed-size plain-data dtype from its ``dtype.str``; never object or structured."""
    if not re.fullmatch(r"[<>|=][a-zA-Z][0-9]{1,6}(\[[a-zA-Z0-9]+\])?", text):
        raise decoder._bad(path, f"unsupported dtype {text!r}")
    try:
        dtype = np.dtype(text)
    except TypeError as exc:
        raise decoder._bad(path, f"unsupported dtype {text!r}") from exc
    kinds = _PLAIN_KINDS + ("U" if allow_unicode else "")
    if dtype.kind not in kinds or dtype.fields is not None or dtype.hasobject:
        raise decoder._bad(path, f"unsupported dtype {text!r}")
    return dtype


def _check_tree_nodes(
    nodes: np.ndarray, node_count: int, n_features: int, path: str, decoder: _Decoder
) -> None:
    """Refuse node arrays that would make sklearn's Cython tree walk read out of bounds.

    Child links must point forward (sklearn builds parents before children, so this also rules
    out cycles) and stay inside the array; split features must be valid column indices.
    """
    needed = {"left_child", "right_child", "feature", "threshold", "missing_go_to_left"}
    if nodes.dtype.names is None or not needed <= set(nodes.dtype.names):
        raise decoder._bad(path, "tree nodes lack the fields of sklearn's node dtype")
    if nodes.ndim != 1 or nodes.shape[0] != node_count:
        raise decoder._bad(path, f"tree has {nodes.shape} nodes but node_count {node_count}")
    left = nodes["left_child"].astype(np.int64)
    right = nodes["right_child"].astype(np.int64)
    feature = nodes["feature"].astype(np.int64)
    index = np.arange(node_count, dtype=np.int64)
    leaf = left == -1
    internal = ~leaf
    ok = (
        np.array_equal(leaf, right == -1)
        and np.all(left[internal] > index[internal])
        and np.all(left[internal] < node_count)
        and np.all(right[internal] > index[internal])
        and np.all(right[internal] < node_count)
        and np.all(feature[internal] >= 0)
        and np.all(feature[internal] < n_features)
        and np.all(np.isin(nodes["missing_go_to_left"], (0, 1)))
    )
    if not ok:
        raise decoder._bad(path, "tree nodes link to missing nodes or features")


def _check_consistency(est: BaseEstimator, path: str) -> None:
    """Cross-checks between an estimator and the Cython structures it hands its input to.

    sklearn validates the input against ``n_features_in_`` and then lets trees and libsvm read
    it without bounds checks, so these sizes must agree.
    """
    problems: list[str] = []
    n_in = getattr(est, "n_features_in_", None)
    tree = est.__dict__.get("tree_")
    if isinstance(tree, Tree) and type(n_in) is int and tree.n_features != n_in:
        problems.append(f"tree_ has {tree.n_features} features, n_features_in_ is {n_in}")
    try:
        from sklearn.ensemble._forest import BaseForest
        from sklearn.svm._base import BaseLibSVM, BaseSVC
    except ImportError:  # pragma: no cover - private modules moved in another sklearn
        BaseForest = BaseLibSVM = BaseSVC = ()  # type: ignore[assignment]
    if isinstance(est, BaseForest) and type(n_in) is int:
        for i, sub in enumerate(est.__dict__.get("estimators_", [])):
            sub_tree = getattr(sub, "tree_", None)
            if not isinstance(sub_tree, Tree) or sub_tree.n_features != n_in:
                problems.append(f"estimators_[{i}] does not have a {n_in}-feature tree")
    if isinstance(est, BaseLibSVM) and "support_vectors_" in est.__dict__:
        problems += _svm_problems(est, isinstance(est, BaseSVC))
    if problems:
        raise EstimatorLoadError(
            f"cannot rebuild {type(est).__name__} at {path}: its parts are inconsistent: "
            + "; ".join(problems),
            hint="the file was damaged or edited after saving; save the model again",
        )


def _svm_problems(est: Any, is_classifier: bool) -> list[str]:
    d = est.__dict__
    sv = d.get("support_vectors_")
    n_support = d.get("_n_support")
    dual = d.get("_dual_coef_")
    intercept = d.get("_intercept_")
    support = d.get("support_")
    shape_fit = d.get("shape_fit_")
    arrays = (sv, n_support, dual, intercept, support)
    if not all(isinstance(a, np.ndarray) for a in arrays):
        return ["libsvm arrays are missing or sparse"]
    problems = []
    if sv.ndim != 2 or dual.ndim != 2 or intercept.ndim != 1 or n_support.ndim != 1:
        return ["libsvm arrays have the wrong number of dimensions"]
    n_sv = sv.shape[0]
    fit_ok = isinstance(shape_fit, tuple) and len(shape_fit) == 2 and sv.shape[1] == shape_fit[1]
    if d.get("kernel") != "precomputed" and not fit_ok:
        problems.append("support vectors and shape_fit_ disagree on the number of features")
    if support.shape != (n_sv,) or dual.shape[1] != n_sv:
        problems.append("support_, support_vectors_ and dual_coef_ disagree on their count")
    if is_classifier:
        classes = d.get("classes_")
        n_class = len(classes) if isinstance(classes, np.ndarray) else -1
        pairs = n_class * (n_class - 1) // 2
        if n_support.shape != (n_class,) or int(n_support.sum()) != n_sv:
            problems.append("_n_support does not add up to the support vectors per class")
        if dual.shape[0] != max(n_class - 1, 1) or intercept.shape != (max(pairs, 1),):
            problems.append("dual_coef_ or intercept_ do not match the number of classes")
        for name in ("_probA", "_probB"):
            prob = d.get(name)
            if isinstance(prob, np.ndarray) and prob.size not in (0, max(pairs, 1)):
                problems.append(f"{name} does not match the number of classes")
    return problems


def _normalize_prefixes(allowed_prefixes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(allowed_prefixes, str | bytes):
        raise EstimatorLoadError(
            "allowed_prefixes must be a tuple of strings, not a single string",
            hint='write allowed_prefixes=("sklearn.", "mnistlab.")',
        )
    prefixes = tuple(allowed_prefixes)
    if not all(isinstance(p, str) and p.strip(".") for p in prefixes):
        raise EstimatorLoadError("allowed_prefixes must be non-empty module prefixes")
    return prefixes


def load_estimator(
    directory: str | os.PathLike[str],
    *,
    allowed_prefixes: Iterable[str] = DEFAULT_ALLOWED_PREFIXES,
) -> BaseEstimator:
    """Load an estimator saved by :func:`save_estimator`; no pickle, no code named by the file.

    Args:
        directory: the folder with ``model.json`` and ``arrays.safetensors``.
        allowed_prefixes: module prefixes whose estimator classes may be imported and rebuilt.
            ``"pkg."`` allows everything under ``pkg``; an entry without a trailing dot allows
            that module or class path and what is under it. The prefix is checked before the
            module is imported.

    Returns:
        The estimator, with the same parameters and fitted state; predictions are identical.

    Raises:
        EstimatorLoadError: a file is missing, truncated or damaged ("the weights do not match
            the manifest"), the manifest is malformed, or it names a class that is not allowed.
    """
    prefixes = _normalize_prefixes(allowed_prefixes)
    directory = Path(directory)
    manifest = read_manifest(directory)
    tensors = _load_weights(directory, manifest["weights"])
    decoder = _Decoder(tensors, prefixes)
    root = manifest["estimator"]
    if root.get("$") != "estimator":
        raise decoder._bad("estimator", "the root is not an estimator")
    try:
        estimator = decoder.decode(root, "estimator")
    except RecursionError as exc:
        raise decoder._bad("estimator", "nested too deeply") from exc
    unused = set(tensors) - decoder.used
    if unused:
        raise EstimatorLoadError(
            f"{directory / WEIGHTS_NAME}: the weights do not match the manifest "
            f"({len(unused)} arrays are not referenced, e.g. {sorted(unused)[0]!r})",
            hint="the files were damaged or edited after saving; save the model again",
        )
    return estimator
