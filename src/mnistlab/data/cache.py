"""Where datasets live on disk, what is cached, and checking it.

Layout (``home`` is :func:`default_home` unless given)::

    <home>/datasets/<name>/manifest.json            what was fetched or imported, with hashes
    <home>/datasets/<name>/train-images-idx3-ubyte  decompressed IDX payloads, verified
    ...

Payloads are kept decompressed: loading is then one read per file into its final array,
no gzip on the hot path. A dataset counts as cached once its manifest exists; the manifest
is written last, atomically, after every file was verified.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from types import MappingProxyType

from mnistlab.data.registry import REGISTRY, DatasetSpec, RemoteFile, SplitFiles
from mnistlab.errors import DatasetFormatError, DatasetNotFoundError

HOME_ENV = "MNISTLAB_HOME"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def default_home() -> Path:
    """The mnistlab cache root.

    ``$MNISTLAB_HOME`` if set; otherwise the user cache directory: ``$XDG_CACHE_HOME/mnistlab``
    or ``~/.cache/mnistlab`` on Linux, ``~/Library/Caches/mnistlab`` on macOS,
    ``%LOCALAPPDATA%\\mnistlab\\Cache`` on Windows.
    """
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mnistlab"
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "mnistlab" / "Cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mnistlab"


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``home`` as a Path, or :func:`default_home` when ``None``."""
    return Path(home).expanduser() if home is not None else default_home()


def dataset_dir(name: str, home: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of dataset ``name`` (it may not exist yet)."""
    return resolve_home(home) / "datasets" / name


def bundled_dir(name: str) -> Path:
    """The folder inside the installed package holding a bundled dataset's files."""
    return Path(str(resources.files("mnistlab.data") / "bundled" / name))


def files_dir(spec: DatasetSpec, home: str | os.PathLike[str] | None = None) -> Path:
    """Where a dataset's payload files are read from: the package for bundled ones."""
    return bundled_dir(spec.name) if spec.bundled else dataset_dir(spec.name, home)


def validate_name(name: str) -> str:
    """Check that ``name`` can be a dataset name (lowercase, digits, ``.-_``, <= 64 chars)."""
    if not _NAME.match(name):
        raise DatasetNotFoundError(
            f"invalid dataset name {name!r}",
            hint="use lowercase letters, digits, '.', '-' and '_' (at most 64 characters), "
            "e.g. 'my-digits'",
        )
    return name


def read_manifest(directory: Path) -> dict | None:
    """The parsed ``manifest.json`` of a cache folder, or ``None`` if there is none."""
    path = directory / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(
            f"{path}: unreadable manifest ({exc})",
            hint=f"delete {path.parent} and fetch or import the dataset again",
        ) from exc


def new_manifest(spec: DatasetSpec, source: str, measured: dict[str, str] | None = None) -> dict:
    """A manifest describing ``spec``'s cached payload files (written after verification).

    ``measured`` maps a cached file name to the SHA-256 measured for it, for files whose
    payload hash the registry does not know.
    """
    from mnistlab import __version__

    measured = measured or {}

    def entry(f: RemoteFile) -> dict:
        sha = f.payload_sha256 or measured.get(f.local_name)
        return {"file": f.local_name, "size": f.payload_size, "sha256": sha}

    return {
        "format": MANIFEST_FORMAT,
        "name": spec.name,
        "title": spec.title,
        "origin": spec.origin,
        "source": source,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mnistlab_version": __version__,
        "class_names": list(spec.class_names),
        "label_column": spec.label_column,
        "splits": {
            split: {
                "count": files.count,
                "images": entry(files.images),
                "labels": entry(files.labels),
            }
            for split, files in spec.splits.items()
        },
    }


def spec_from_manifest(manifest: dict, where: Path) -> DatasetSpec:
    """Rebuild the spec of an imported dataset from its manifest."""
    try:

        def remote(e: dict) -> RemoteFile:
            return RemoteFile(str(e["file"]), None, None, int(e["size"]), str(e["sha256"]))

        splits = {
            str(split): SplitFiles(remote(s["images"]), remote(s["labels"]), int(s["count"]))
            for split, s in manifest["splits"].items()
        }
        return DatasetSpec(
            name=str(manifest["name"]),
            title=str(manifest.get("title") or manifest["name"]),
            description=f"Imported from {manifest.get('source', '?')}",
            homepage="",
            license="(user data)",
            class_names=tuple(str(c) for c in manifest["class_names"]),
            mirrors=(),
            splits=MappingProxyType(splits),
            label_column=manifest.get("label_column"),
            origin="imported",
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetFormatError(
            f"{where / MANIFEST}: malformed manifest (missing or bad field: {exc})",
            hint=f"delete {where} and import the dataset again",
        ) from exc


def get_spec(name: str, home: str | os.PathLike[str] | None = None) -> DatasetSpec:
    """The spec of a registered dataset, or of one imported into ``home``.

    Raises:
        DatasetNotFoundError: unknown name (the message lists the known ones).
    """
    if name in REGISTRY:
        return REGISTRY[name]
    if _NAME.match(name):
        directory = dataset_dir(name, home)
        manifest = read_manifest(directory)
        if manifest is not None and manifest.get("origin") == "imported":
            return spec_from_manifest(manifest, directory)
    known = list(REGISTRY) + [s.name for s in imported_specs(home)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise DatasetNotFoundError(
        f"unknown dataset {name!r}; known datasets: {', '.join(known)}",
        hint=hint + "`mnistlab data list` shows them all; `mnistlab data import PATH --name NAME` "
        "adds your own",
    )


def imported_specs(home: str | os.PathLike[str] | None = None) -> list[DatasetSpec]:
    """Specs of every dataset imported into ``home``, sorted by name."""
    root = resolve_home(home) / "datasets"
    specs = []
    if root.is_dir():
        for directory in sorted(root.iterdir()):
            if directory.name in REGISTRY or not directory.is_dir():
                continue
            try:
                manifest = read_manifest(directory)
                if manifest is not None and manifest.get("origin") == "imported":
                    specs.append(spec_from_manifest(manifest, directory))
            except DatasetFormatError:
                continue  # a damaged import is reported by `data verify`, not by listing
    return specs


def is_cached(spec: DatasetSpec, home: str | os.PathLike[str] | None = None) -> bool:
    """True when every file of the dataset is available locally (bundled or fetched)."""
    directory = files_dir(spec, home)
    if spec.bundled:
        return all((directory / f.name).is_file() for f in spec.files)
    return (directory / MANIFEST).is_file() and all(
        (directory / f.local_name).is_file() for f in spec.files
    )


@dataclass(frozen=True)
class FileCheck:
    """The result of re-checking one cached file."""

    file: str
    ok: bool
    reason: str


def verify_dataset(name: str, home: str | os.PathLike[str] | None = None) -> list[FileCheck]:
    """Re-hash every cached file of a dataset against the registry (or its import manifest).

    Returns:
        One :class:`FileCheck` per file; ``all(c.ok for c in result)`` means intact.

    Raises:
        DatasetNotFoundError: unknown name.
        DatasetNotCachedError: nothing cached to verify.
    """
    from mnistlab.data.download import check_payload
    from mnistlab.errors import DatasetNotCachedError

    spec = get_spec(name, home)
    if not is_cached(spec, home):
        raise DatasetNotCachedError(
            f"dataset {name!r} is not cached in {dataset_dir(name, home)}",
            hint=f"run `mnistlab data fetch {name}` first",
        )
    directory = files_dir(spec, home)
    recorded = {}
    if not spec.bundled:
        for split in (read_manifest(directory) or {}).get("splits", {}).values():
            for kind in ("images", "labels"):
                entry = split.get(kind) or {}
                if entry.get("file") and entry.get("sha256"):
                    recorded[entry["file"]] = entry["sha256"]
    checks = []
    for remote in spec.files:
        if remote.payload_sha256 is None and remote.local_name in recorded:
            remote = replace(remote, payload_sha256=recorded[remote.local_name])
        path = directory / (remote.name if spec.bundled else remote.local_name)
        reason = check_payload(path, remote, compressed=spec.bundled)
        checks.append(FileCheck(path.name, reason is None, reason or "size and SHA-256 match"))
    return checks
