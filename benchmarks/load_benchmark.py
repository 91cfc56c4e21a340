"""Time loading the full MNIST (train + test, 70,000 images) from each library's warm cache.

Compared, in one process and one run:

* mnistlab: ``mnistlab.load_dataset("mnist", "train")`` and ``("mnist", "test")``.
* Keras 3: ``keras.datasets.mnist.load_data()`` (``KERAS_BACKEND=torch``; the backend does
  not take part in ``load_data``, which is ``get_file`` + ``np.load``. The numpy backend
  would need jax, which the mnistlab venv does not have).
* scikit-learn: ``sklearn.datasets.fetch_openml("mnist_784")`` with the installed version's
  defaults (``version="active"``, ``as_frame="auto"``, ``parser="auto"`` = pandas), only
  ``data_home`` set.

Each library gets one untimed warm-up call (imports, page cache), then ``--repeats`` timed
calls (``time.perf_counter``); the median and the minimum are reported. The loaded data is
checked, untimed, against an independent parse of the IDX files.

No network is used. The peers' caches are built by hand in the work directory from the
same IDX data, in the on-disk format each library writes after a download:

* mnistlab: ``mnistlab.fetch_dataset("mnist", mirrors=[SOURCE], home=WORK/mnistlab)``
  (``--source``; without it, mnistlab's own mirrors or ``$MNISTLAB_MIRRORS``).
* Keras: ``$KERAS_HOME/datasets/mnist.npz`` (``KERAS_HOME=WORK/keras``) written with
  ``np.savez_compressed`` (keys x_train, y_train, x_test, y_test; uint8), like the public
  file (11,490,434 bytes for 54.9 MB of arrays, so deflate-compressed). ``load_data`` calls
  ``get_file(..., file_hash="731c5ac6...")``, which re-hashes the cached file with SHA-256
  on every call and re-downloads on a mismatch. Our file cannot have the public bytes, so
  ``keras.src.utils.file_utils.validate_file`` is wrapped: when keras asks for the public
  hash, the wrapper calls keras' own ``validate_file`` with our file's SHA-256 instead. The
  whole file is still hashed on every call (the real cost) and a wrong file still fails.
* scikit-learn: ``WORK/scikit_learn_data/openml/openml.org/<url path>.gz``, the layout of
  ``sklearn.datasets._openml._open_openml_url`` (gzip-compressed responses; paths computed
  with sklearn's own helpers): the JSON responses of data/list (by name, active), data/554
  (description), data/features/554 and data/qualities/554 in OpenML's format, and the data
  file ``data/v1/download/52667/mnist_784.arff`` with the mnist_784 layout (pixel1..pixel784
  numeric, nominal ``class`` {0..9}, 70,000 integer rows: 60k train then 10k test). The
  description's ``md5_checksum`` is that of our ARFF text (sklearn checks it on every call).

While the libraries run, ``socket.getaddrinfo`` and ``socket.socket.connect`` are replaced
by a guard that raises, and the proxy variables point to a closed port; the run fails if
anything tried to reach the network.

Usage::

    python benchmarks/load_benchmark.py --source /path/to/mnist-idx-gz --json results.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import gzip
import hashlib
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

KERAS_BACKEND = "torch"
KERAS_PUBLIC_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
OPENML_NAME = "mnist_784"
OPENML_ID = 554
OPENML_FILE_ID = 52667
OPENML_DATA_URL = f"https://api.openml.org/data/v1/download/{OPENML_FILE_ID}/mnist_784.arff"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
N_TRAIN, N_TEST = 60_000, 10_000

Arrays = tuple[np.ndarray, np.ndarray]  # images uint8 (N, 28, 28), labels int64 (N,)


# --------------------------------------------------------------------------- reference data


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip'd if ``path`` ends in .gz) without mnistlab's code."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def reference_arrays(folder: Path) -> Arrays:
    """Train then test, concatenated: the 70,000 images and labels every library must return."""
    images, labels = [], []
    for split in ("train", "test"):
        for name, out in zip(IDX_FILES[split], (images, labels), strict=True):
            path = folder / f"{name}.gz"
            out.append(read_idx(path if path.exists() else folder / name))
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


# --------------------------------------------------------------------------- cache builders


def write_gzip(path: Path, payload: bytes) -> None:
    """Write ``payload`` gzip-compressed, as sklearn stores a plain (not gzip-encoded) reply."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.GzipFile(tmp, "wb") as handle:  # sklearn's own opener, default level 9
        handle.write(payload)
    tmp.replace(path)


def build_keras_cache(keras_home: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``<KERAS_HOME>/datasets/mnist.npz`` like the public file (savez_compressed)."""
    path = keras_home / "datasets" / "mnist.npz"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("mnist.tmp.npz")
    np.savez_compressed(
        tmp,
        x_train=images[:N_TRAIN],
        y_train=labels[:N_TRAIN].astype(np.uint8),
        x_test=images[N_TRAIN:],
        y_test=labels[N_TRAIN:].astype(np.uint8),
    )
    tmp.replace(path)
    return path


def arff_text(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The mnist_784 ARFF: 784 numeric pixel attributes and a nominal class, integer rows."""
    header = [
        "% MNIST (mnist_784), rebuilt locally from the IDX files for load_benchmark.py",
        "@RELATION mnist_784",
        "",
        *(f"@ATTRIBUTE pixel{i} NUMERIC" for i in range(1, 785)),
        "@ATTRIBUTE class {0,1,2,3,4,5,6,7,8,9}",
        "",
        "@DATA",
    ]
    table = [str(v) for v in range(256)]
    rows = (
        ",".join(map(table.__getitem__, pixels)) + "," + table[label]
        for pixels, label in zip(
            images.reshape(len(images), -1).tolist(), labels.tolist(), strict=True
        )
    )
    return ("\n".join([*header, *rows]) + "\n").encode("utf-8")


def openml_responses(images: np.ndarray, labels: np.ndarray, md5: str) -> dict[str, Any]:
    """The four JSON API responses fetch_openml reads, in OpenML's format (values as text)."""
    counts = np.bincount(labels, minlength=10)
    qualities = [
        {"name": name, "value": f"{float(value)}"}
        for name, value in [
            ("MajorityClassSize", counts.max()),
            ("MinorityClassSize", counts.min()),
            ("NumberOfClasses", 10),
            ("NumberOfFeatures", 785),
            ("NumberOfInstances", len(labels)),
            ("NumberOfInstancesWithMissingValues", 0),
            ("NumberOfMissingValues", 0),
            ("NumberOfNumericFeatures", 784),
            ("NumberOfSymbolicFeatures", 1),
        ]
    ]
    listing = {
        "data": {
            "dataset": [
                {
                    "did": OPENML_ID,
                    "name": OPENML_NAME,
                    "version": 1,
                    "status": "active",
                    "format": "ARFF",
                    "md5_checksum": md5,
                    "file_id": OPENML_FILE_ID,
                    "quality": qualities,
                }
            ]
        }
    }
    description = {
        "data_set_description": {
            "id": str(OPENML_ID),
            "name": OPENML_NAME,
            "version": "1",
            "description": "The MNIST database of handwritten digits (rebuilt locally from the "
            "IDX files by benchmarks/load_benchmark.py; 60,000 train then 10,000 test rows).",
            "format": "ARFF",
            "creator": ["Yann LeCun", "Corinna Cortes", "Christopher J.C. Burges"],
            "upload_date": "2014-09-29T03:28:38",
            "licence": "Public",
            "url": OPENML_DATA_URL,
            "file_id": str(OPENML_FILE_ID),
            "default_target_attribute": "class",
            "version_label": "1",
            "visibility": "public",
            "original_data_url": "http://yann.lecun.com/exdb/mnist/",
            "status": "active",
            "md5_checksum": md5,
        }
    }

    def feature(index: int, name: str, data_type: str, **extra: Any) -> dict[str, Any]:
        return {
            "index": str(index),
            "name": name,
            "data_type": data_type,
            **extra,
            "is_target": "true" if name == "class" else "false",
            "is_ignore": "false",
            "is_row_identifier": "false",
            "number_of_missing_values": "0",
        }

    features = [feature(i, f"pixel{i + 1}", "numeric") for i in range(784)]
    features.append(feature(784, "class", "nominal", nominal_value=[str(d) for d in range(10)]))
    return {
        "list": listing,
        "description": description,
        "features": {"data_features": {"feature": features}},
        "qualities": {"data_qualities": {"quality": qualities}},
    }


def build_sklearn_cache(data_home: Path, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    """Populate fetch_openml's cache under ``data_home`` as a download would have left it."""
    from sklearn.datasets import _openml  # private: the exact URLs and local paths it uses

    root = str(data_home / "openml")  # fetch_openml caches under join(data_home, "openml")

    def local(url: str) -> Path:
        return Path(_openml._get_local_path(_openml._openml_path_from_url(url), root))

    data_path = local(OPENML_DATA_URL)
    urls = {
        "list": _openml._SEARCH_NAME.format(OPENML_NAME) + "/status/active/",
        "description": _openml._DATA_INFO.format(OPENML_ID),
        "features": _openml._DATA_FEATURES.format(OPENML_ID),
        "qualities": _openml._DATA_QUALITIES.format(OPENML_ID),
    }
    paths = [data_path, *(local(url) for url in urls.values())]
    if all(p.exists() for p in paths):
        return paths
    text = arff_text(images, labels)
    responses = openml_responses(images, labels, hashlib.md5(text).hexdigest())
    write_gzip(data_path, text)
    for key, url in urls.items():
        write_gzip(local(url), json.dumps(responses[key]).encode("utf-8"))
    return paths


# --------------------------------------------------------------------------- network guard


class NetworkAccessError(RuntimeError):
    """Raised by the guard when a library tries to open a connection."""


@contextlib.contextmanager
def no_network(attempts: list[str]) -> Iterator[None]:
    """Refuse DNS look-ups and connections (recorded in ``attempts``) and break proxies."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def refuse(what: str) -> None:
        attempts.append(what)
        raise NetworkAccessError(f"load_benchmark: network access refused ({what})")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        refuse(f"getaddrinfo {host}")

    def connect(self: socket.socket, address: Any) -> Any:
        refuse(f"connect {address}")

    proxies = {k: os.environ.get(k) for k in ("http_proxy", "https_proxy", "all_proxy")}
    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect  # type: ignore[method-assign]
    os.environ.update({k: "http://127.0.0.1:9" for k in proxies})
    try:
        yield
    finally:
        socket.getaddrinfo, socket.socket.connect = real_getaddrinfo, real_connect
        for key, value in proxies.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- the libraries


def setup_mnistlab(work: Path, source: Path | None) -> tuple[Callable[[], Any], Path]:
    """Fetch into ``WORK/mnistlab`` (outside the guard); return the load call and the folder."""
    import mnistlab

    home = work / "mnistlab"
    mirrors = [str(source)] if source is not None else None
    folder = mnistlab.fetch_dataset("mnist", mirrors=mirrors, home=home, progress=False)

    def load() -> tuple[Any, Any]:
        return (
            mnistlab.load_dataset("mnist", "train", home=home),
            mnistlab.load_dataset("mnist", "test", home=home),
        )

    return load, Path(folder)


def mnistlab_arrays(result: Any) -> Arrays:
    (x_train, y_train), (x_test, y_test) = result
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


def setup_keras(work: Path, images: np.ndarray, labels: np.ndarray) -> Callable[[], Any]:
    """Build the warm cache, import keras with KERAS_HOME in the work dir, wrap validate_file."""
    keras_home = work / "keras"
    npz = build_keras_cache(keras_home, images, labels)
    os.environ["KERAS_BACKEND"] = KERAS_BACKEND
    os.environ["KERAS_HOME"] = str(keras_home)  # read once, when keras is imported
    import keras
    from keras.src.backend.config import keras_home as keras_home_dir
    from keras.src.utils import file_utils

    if Path(keras_home_dir()) != keras_home:  # keras was imported earlier, with another home
        raise RuntimeError(f"keras uses {keras_home_dir()}, expected {keras_home}")
    local_sha256 = file_utils.hash_file(str(npz), "sha256")
    real_validate = file_utils.validate_file

    def validate_file(fpath: Any, file_hash: Any, algorithm: str = "auto", chunk_size=65535):
        if file_hash == KERAS_PUBLIC_SHA256 and Path(fpath) == npz:
            file_hash = local_sha256  # keras still hashes the whole file, with its own code
        return real_validate(fpath, file_hash, algorithm=algorithm, chunk_size=chunk_size)

    file_utils.validate_file = validate_file  # get_file looks it up in this module
    return keras.datasets.mnist.load_data


def keras_arrays(result: Any) -> Arrays:
    (x_train, y_train), (x_test, y_test) = result
    labels = np.concatenate([y_train, y_test]).astype(np.int64)
    return np.concatenate([x_train, x_test]), labels


def setup_sklearn(work: Path, images: np.ndarray, labels: np.ndarray) -> Callable[[], Any]:
    """Build fetch_openml's cache in ``WORK/scikit_learn_data``; return the default call."""
    from sklearn.datasets import fetch_openml

    data_home = work / "scikit_learn_data"
    build_sklearn_cache(data_home, images, labels)

    def load() -> Any:
        return fetch_openml(OPENML_NAME, data_home=str(data_home))

    return load


def sklearn_arrays(result: Any) -> Arrays:
    data = np.asarray(result.data)
    if data.shape != (N_TRAIN + N_TEST, 784):
        raise ValueError(f"fetch_openml data has shape {data.shape}")
    if np.any(data != np.round(data)) or data.min() < 0 or data.max() > 255:
        raise ValueError("fetch_openml pixels are not integers in 0..255")
    labels = np.asarray(result.target).astype(str).astype(np.int64)
    return data.astype(np.uint8).reshape(-1, 28, 28), labels


# --------------------------------------------------------------------------- timing, report


def time_calls(load: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """One warm-up call (timed, kept out of the stats), then ``repeats`` timed calls."""
    start = time.perf_counter()
    result = load()
    warmup = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        result = None  # free the previous result outside the timed region
        gc.collect()
        start = time.perf_counter()
        result = load()
        times.append(time.perf_counter() - start)
    return warmup, times, result


def same_data(got: Arrays, want: Arrays) -> str | None:
    """None when equal, else what differs."""
    (gi, gl), (wi, wl) = got, want
    if gi.shape != wi.shape or gl.shape != wl.shape:
        return f"shapes {gi.shape} {gl.shape} != {wi.shape} {wl.shape}"
    if gi.dtype != np.uint8 or not np.array_equal(gi, wi):
        return f"images differ ({gi.dtype}, {int(np.sum(gi != wi))} pixels)"
    if not np.array_equal(gl, wl):
        return f"labels differ at {int(np.sum(gl != wl))} places"
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            d: version(d) for d in ("mnistlab", "numpy", "keras", "torch", "scikit-learn", "pandas")
        },
        "keras_backend": KERAS_BACKEND,
    }


def disk_size(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def print_report(info: dict[str, Any], rows: list[dict[str, Any]], repeats: int) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    print(f"date: {info['date']}")
    print(f"machine: {info['cpu']}, {info['logical_cpus']} logical CPUs")
    print(f"python {info['python']} on {info['platform']}")
    print(f"versions: {versions} (KERAS_BACKEND={info['keras_backend']})")
    print(f"full MNIST (70,000 images) from a warm cache, median and min of {repeats} calls\n")
    base = rows[0]["median_s"]
    header = f"{'library':<13}{'median s':>10}{'min s':>10}{'cache MB':>10}  vs mnistlab"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["median_s"] / base
        if row["library"] == "mnistlab":
            text = "baseline"
        elif ratio >= 1:
            text = f"{row['library']} is {ratio:.1f}x slower than mnistlab"
        else:
            text = f"{row['library']} is {1 / ratio:.1f}x faster than mnistlab"
        print(
            f"{row['library']:<13}{row['median_s']:>10.4f}{row['min_s']:>10.4f}"
            f"{row['cache_bytes'] / 1e6:>10.1f}  {text}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per library")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for the three caches (kept and reused); default a temporary folder",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="folder with the MNIST IDX .gz files for mnistlab.fetch_dataset (default: "
        "mnistlab's mirrors or $MNISTLAB_MIRRORS)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def run(args: argparse.Namespace, work: Path) -> int:
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"work dir: {work}", file=sys.stderr)
    load_mnistlab, mnistlab_dir = setup_mnistlab(work, args.source)
    want = reference_arrays(args.source if args.source is not None else mnistlab_dir)
    if want[0].shape != (N_TRAIN + N_TEST, 28, 28):
        raise ValueError(f"reference images have shape {want[0].shape}")
    print("building the keras and scikit-learn caches (untimed)...", file=sys.stderr)
    load_keras = setup_keras(work, *want)
    load_sklearn = setup_sklearn(work, *want)
    libraries = [
        (
            "mnistlab",
            'load_dataset("mnist", "train") + ("mnist", "test")',
            load_mnistlab,
            mnistlab_arrays,
            sorted(mnistlab_dir.iterdir()),
        ),
        (
            "keras",
            "keras.datasets.mnist.load_data()",
            load_keras,
            keras_arrays,
            [work / "keras" / "datasets" / "mnist.npz"],
        ),
        (
            "scikit-learn",
            'fetch_openml("mnist_784")',
            load_sklearn,
            sklearn_arrays,
            sorted((work / "scikit_learn_data").rglob("*.gz")),
        ),
    ]

    attempts: list[str] = []
    rows, failures = [], []
    for name, call, load, to_arrays, cache_files in libraries:
        print(f"timing {name}...", file=sys.stderr)
        with no_network(attempts):
            warmup, times, result = time_calls(load, args.repeats)
        problem = same_data(to_arrays(result), want)
        del result
        if problem:
            failures.append(f"{name}: {problem}")
        rows.append(
            {
                "library": name,
                "call": call,
                "warmup_s": warmup,
                "times_s": times,
                "median_s": statistics.median(times),
                "min_s": min(times),
                "cache_bytes": disk_size(cache_files),
                "data_equal": problem is None,
            }
        )
    for row in rows:
        row["ratio_to_mnistlab"] = row["median_s"] / rows[0]["median_s"]

    info = {"date": date, **machine_info()}
    print_report(info, rows, args.repeats)
    if attempts:
        failures.append(f"network access was attempted: {attempts[:3]}")
    same = "all three return the same 70,000 images and labels (60k train, then 10k test)"
    print("\ndata check: " + ("; ".join(failures) if failures else same))
    print(f"network: {len(attempts)} attempts")
    if args.json:
        report = {
            **info,
            "repeats": args.repeats,
            "work_dir": str(work),
            "network_attempts": attempts,
            "failures": failures,
            "results": rows,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        return run(args, args.work_dir.resolve())
    with tempfile.TemporaryDirectory(prefix="mnist-load-bench-") as tmp:
        return run(args, Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
