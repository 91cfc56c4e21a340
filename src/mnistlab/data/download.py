"""Fetching datasets from their mirrors: retries, resume, verification, locking.

Written on the standard library's ``urllib`` rather than ``requests``: one dependency less,
and Range requests, timeouts and streaming are all it needs.

For each file of a dataset, :func:`fetch_dataset` tries the mirrors in order. Transient
failures (connection errors, timeouts, HTTP 5xx/408/429, a body cut short) are retried with
exponential backoff, and a cut download resumes with an HTTP ``Range`` request when the
server supports it (it restarts when the server answers 200 instead of 206). Other
failures (404, 403, wrong bytes) move on to the next mirror. Bytes go to a ``.part`` file;
only a verified payload is renamed to its final name, and the dataset's manifest is written
last. A file lock makes concurrent fetches of one dataset safe.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import os
import shutil
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mnistlab.data.cache import (
    MANIFEST,
    dataset_dir,
    files_dir,
    get_spec,
    is_cached,
    new_manifest,
)
from mnistlab.data.idx import MAX_IDX_BYTES, read_idx_header
from mnistlab.data.registry import DatasetSpec, RemoteFile
from mnistlab.errors import ChecksumError, DatasetFormatError, DownloadError
from mnistlab.io import CHUNK, atomic_write_json, sha256_file

log = logging.getLogger("mnistlab")

MIRRORS_ENV = "MNISTLAB_MIRRORS"
_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth retrying on the same mirror."""


class _MirrorFailed(Exception):
    """A failure that moves on to the next mirror."""

    def __init__(self, reason: str, dead: bool = False) -> None:
        super().__init__(reason)
        self.dead = dead  # the host is unreachable: skip it for the dataset's other files


@dataclass(frozen=True)
class FetchOptions:
    """How hard to try. ``backoff`` is the first retry's delay in seconds (then doubled)."""

    retries: int = 3
    timeout: float = 30.0
    backoff: float = 0.5
    progress: bool = True


def resolve_mirrors(spec: DatasetSpec, mirrors: Sequence[str] | None = None) -> list[str]:
    """The mirror list to use: ``mirrors`` if given, else ``$MNISTLAB_MIRRORS``
    (space-separated), else the registry's."""
    if mirrors is None and (env := os.environ.get(MIRRORS_ENV, "").strip()):
        mirrors = env.split()
    return list(spec.mirrors if mirrors is None else mirrors)


def _is_local(base: str) -> bool:
    return urllib.parse.urlsplit(base).scheme in ("", "file") or (
        len(base) > 1 and base[1] == ":"  # a Windows drive letter
    )


def _local_path(base: str) -> Path:
    parts = urllib.parse.urlsplit(base)
    if parts.scheme == "file":
        return Path(urllib.request.url2pathname(parts.path))
    return Path(base).expanduser()


def _join(base: str, name: str) -> str:
    return base if base.endswith(name) else base.rstrip("/") + "/" + name


# ---------------------------------------------------------------------------- verification


def _decompress_limited(
    src: Path, dest: Path, limit: int | None, source: str = "the file"
) -> tuple[int, str]:
    """Gunzip ``src`` into ``dest``, streaming; a gzip bomb guard. Returns (size, sha256).

    Never reads past ``limit`` (the registry's payload size; ``None``: unknown) nor past the
    size the payload's IDX header declares: a declared size over the limit is refused before
    the data, and decompression stops at the first byte past it. With no known limit the
    payload must be IDX and at most MAX_IDX_BYTES.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
            bound = MAX_IDX_BYTES if limit is None else limit
            what = (
                f"the most mnistlab reads ({bound:,} bytes)"
                if limit is None
                else f"the expected {bound:,} bytes"
            )
            chunk = fin.read(4)
            chunk += fin.read(4 * chunk[3]) if len(chunk) == 4 else b""
            try:
                _, shape, declared = read_idx_header(io.BytesIO(chunk), source)
            except DatasetFormatError as exc:
                if limit is None:  # nothing else to check it against
                    raise ChecksumError(exc.message) from exc
                declared = None  # not IDX: the registry's size and checksum decide
            if declared is not None:
                if declared > bound:
                    raise ChecksumError(
                        f"its IDX header declares shape {shape}, {declared:,} bytes, more "
                        f"than {what}; refused before decompressing the data"
                    )
                bound = declared
                what = f"the {declared:,} bytes its IDX header declares (shape {shape})"
            while chunk:
                size += len(chunk)
                if size > bound:
                    raise ChecksumError(
                        f"decompresses to more than {what} (stopped at byte {bound + 1:,})"
                    )
                digest.update(chunk)
                fout.write(chunk)
                chunk = fin.read(min(CHUNK, bound + 1 - size))
    except (OSError, EOFError, zlib.error) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk, not the file
            raise
        raise ChecksumError(f"not a valid gzip file ({exc})") from exc
    if declared is not None and size < declared:
        raise ChecksumError(
            f"truncated: its IDX header declares {declared:,} bytes, it decompresses to {size:,}"
        )
    return size, digest.hexdigest()


def _mismatch(what: str, got: str, expected: str) -> str:
    return f"{what} SHA-256 mismatch: got {got[:16]}..., expected {expected[:16]}..."


def verify_download(part: Path, remote: RemoteFile, dest: Path) -> None:
    """Check a downloaded file and write its verified, decompressed payload to ``dest``.

    Accepted: the published file (size and SHA-256 match), or any gzip (or plain) file
    whose decompressed payload matches the payload size and SHA-256.

    Raises:
        ChecksumError: nothing matched; ``dest`` is not created.
    """
    with open(part, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    size = part.stat().st_size
    published_ok = (
        remote.sha256 is not None and size == remote.size and sha256_file(part) == remote.sha256
    )
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if compressed:
            payload_size, payload_sha = _decompress_limited(
                part, tmp, remote.payload_size, remote.name
            )
        else:
            payload_size, payload_sha = size, sha256_file(part)
            shutil.copyfile(part, tmp)
        if remote.payload_size is not None and payload_size != remote.payload_size:
            raise ChecksumError(
                f"wrong size: {payload_size:,} bytes decompressed, expected {remote.payload_size:,}"
            )
        if remote.payload_sha256 is not None:
            if payload_sha != remote.payload_sha256:
                raise ChecksumError(_mismatch("payload", payload_sha, remote.payload_sha256))
        elif not published_ok:
            expected = remote.sha256 or "?"
            raise ChecksumError(
                _mismatch("file", sha256_file(part), expected) + f" ({size:,} bytes)"
                if compressed or remote.sha256
                else "no checksum is known for this file's payload"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def check_payload(path: Path, remote: RemoteFile, compressed: bool = False) -> str | None:
    """Re-check a cached file against its registry entry.

    Returns:
        ``None`` when size and SHA-256 match, else the reason it does not.
    """
    if not path.is_file():
        return "missing"
    if compressed:  # bundled files are kept as .gz in the package
        with gzip.open(path, "rb") as handle:
            data = handle.read()
        size, sha = len(data), hashlib.sha256(data).hexdigest()
    else:
        size, sha = path.stat().st_size, sha256_file(path)
    if remote.payload_size is not None and size != remote.payload_size:
        return f"wrong size: {size:,} bytes, expected {remote.payload_size:,}"
    if remote.payload_sha256 is not None and sha != remote.payload_sha256:
        return _mismatch("payload", sha, remote.payload_sha256)
    return None


# ---------------------------------------------------------------------------- transfer


class _Reporter:
    """Progress bar for one file's transfer (a no-op without a Progress)."""

    def __init__(self, progress: Progress | None, label: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=None) if progress else None

    def update(self, completed: int, total: int | None = None) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=completed, total=total)

    def advance(self, n: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)

    def done(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)


def _http_once(url: str, part: Path, opts: FetchOptions, limit: int, report: _Reporter) -> None:
    """One HTTP request, appending to ``part`` from its current size. Raises _Transient
    or _MirrorFailed; returns when the body was received completely."""
    have = part.stat().st_size if part.exists() else 0
    from mnistlab import __version__

    headers = {"User-Agent": f"mnistlab/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=opts.timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:
            return  # our partial file already holds the whole body; verification decides
        if exc.code in _TRANSIENT_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise _MirrorFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):  # retrying will not fix it
            raise _MirrorFailed(f"TLS certificate not trusted ({reason.verify_message})") from exc
        if isinstance(reason, socket.gaierror):
            raise _MirrorFailed(f"cannot resolve host ({reason})", dead=True) from exc
        if isinstance(reason, (OSError, TimeoutError)):
            raise _Transient(f"connection failed ({reason})") from exc
        raise _MirrorFailed(f"bad URL ({reason})") from exc
    except (TimeoutError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc

    with response:
        if have and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                part.unlink()
                raise _Transient(f"server sent an unexpected Content-Range {content_range!r}")
            mode = "ab"
        else:
            mode, have = "wb", 0  # the server ignored Range (or there was none): restart
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length and length.isdigit() else None
        if expected is not None and expected > limit:
            raise _MirrorFailed(f"file is {expected:,} bytes, far more than expected")
        received = have
        report.update(received, expected)
        try:
            with open(part, mode) as out:
                while chunk := response.read(CHUNK):
                    received += len(chunk)
                    if received > limit:
                        raise _MirrorFailed(f"more than {limit:,} bytes received, far too many")
                    out.write(chunk)
                    report.advance(len(chunk))
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise _Transient(f"transfer interrupted at {received:,} bytes ({exc})") from exc
        if expected is not None and received < expected:
            raise _Transient(f"body cut short at {received:,} of {expected:,} bytes")


def _fetch_from_mirror(
    base: str, remote: RemoteFile, directory: Path, opts: FetchOptions, progress: Progress | None
) -> str:
    """Fetch one file from one mirror into ``directory``. Returns the mirror used."""
    dest = directory / remote.local_name
    if _is_local(base):
        folder = _local_path(base)
        for candidate in (folder / remote.name, folder / remote.local_name):
            if candidate.is_file():
                try:
                    verify_download(candidate, remote, dest)
                except ChecksumError as exc:
                    raise _MirrorFailed(f"{candidate}: {exc.message}") from exc
                return str(folder.resolve())
        raise _MirrorFailed(f"not found: {folder / remote.name}")

    url = _join(base, remote.name)
    url_id = hashlib.sha1(url.encode()).hexdigest()[:10]
    part = directory / f".{remote.name}.{url_id}.part"
    limit = (
        max(remote.size or 0, remote.payload_size or 0) + (1 << 20)
        if (remote.size or remote.payload_size)
        else 1 << 31
    )
    report = _Reporter(progress, remote.name)
    resumed = part.exists()
    attempt, last = 0, ""
    try:
        while True:
            try:
                _http_once(url, part, opts, limit, report)
                verify_download(part, remote, dest)
                part.unlink(missing_ok=True)
                return base
            except ChecksumError as exc:
                part.unlink(missing_ok=True)
                if resumed:  # a stale partial file from an earlier run: try once from scratch
                    resumed = False
                    continue
                raise _MirrorFailed(exc.message) from exc
            except _MirrorFailed:
                part.unlink(missing_ok=True)
                raise
            except _Transient as exc:
                last = str(exc)
                attempt += 1
                if attempt > opts.retries:
                    dead = not part.exists() or part.stat().st_size == 0
                    raise _MirrorFailed(
                        f"{last} (gave up after {attempt} attempts)", dead=dead
                    ) from exc
                delay = opts.backoff * 2 ** (attempt - 1)
                log.warning("%s: %s; retry %d/%d in %.1fs", url, last, attempt, opts.retries, delay)
                time.sleep(delay)
    finally:
        report.done()


def _manual_hint(spec: DatasetSpec) -> str:
    names = ", ".join(f.name for f in spec.files)
    return (
        f"download {names} by hand (from any mirror above or another copy you trust) into one "
        f"folder, then run `mnistlab data import FOLDER --name {spec.name}`; or point mnistlab at "
        f"a mirror that works: `{MIRRORS_ENV}='https://host/path/ /local/folder'` or "
        f"`mnistlab data fetch {spec.name} --mirror URL`"
    )


def fetch_dataset(
    name: str,
    *,
    mirrors: Sequence[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    force: bool = False,
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 0.5,
    progress: bool = True,
) -> Path:
    """Download, verify and cache a registered dataset.

    Args:
        name: a registered dataset, e.g. ``"mnist"`` (see ``mnistlab data list``).
        mirrors: base URLs or folders to try in order; default ``$MNISTLAB_MIRRORS``
            (space-separated), else the registry's list. ``https://``, ``http://``,
            ``file://`` and plain paths work.
        home: cache root (default :func:`mnistlab.data.cache.default_home`).
        force: download again even if the dataset is cached.
        retries: retries per file and mirror for transient failures.
        timeout: seconds to wait for a connection or for data before retrying.
        backoff: delay before the first retry in seconds, doubled each time.
        progress: show a progress bar.

    Returns:
        The folder holding the verified files (for bundled datasets, inside the package).

    Raises:
        DownloadError: every mirror failed for a file; lists each mirror and why.
        DatasetNotFoundError: unknown name.
    """
    spec = get_spec(name, home)
    if spec.bundled or (spec.origin == "imported" and not force):
        return files_dir(spec, home)
    if spec.origin == "imported":
        raise DownloadError(
            f"dataset {name!r} was imported, it has no mirrors to fetch from",
            hint=f"re-import it: `mnistlab data import PATH --name {name} --overwrite`",
        )
    directory = dataset_dir(name, home)
    directory.mkdir(parents=True, exist_ok=True)
    if is_cached(spec, home) and not force:
        return directory
    if spec.builder is not None:  # built locally (e.g. from scikit-learn's bundled digits)
        import importlib

        module, _, function = spec.builder.partition(":")
        return getattr(importlib.import_module(module), function)(spec, directory, force)
    bases = resolve_mirrors(spec, mirrors)
    if not bases:
        raise DownloadError(f"no mirrors to fetch {name!r} from", hint=_manual_hint(spec))
    opts = FetchOptions(retries=retries, timeout=timeout, backoff=backoff, progress=progress)

    lock = FileLock(str(directory.parent / f".{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another process is fetching %r; waiting for it", name)
        lock.acquire()
    try:
        if is_cached(spec, home) and not force:  # the other process finished it
            return directory
        if force:
            (directory / MANIFEST).unlink(missing_ok=True)
        for leftover in directory.glob(".*.tmp"):  # from a process killed mid-verification
            leftover.unlink(missing_ok=True)
        bar = (
            Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
                console=Console(stderr=True),
            )
            # Only on a terminal: elsewhere (CI logs, pipes) a transient bar leaves blank lines.
            if progress and Console(stderr=True).is_terminal
            else None
        )
        sources = []
        with bar if bar is not None else nullcontext():
            dead: dict[str, str] = {}
            for remote in spec.files:
                if not force and check_payload(directory / remote.local_name, remote) is None:
                    sources.append("cache")
                    continue  # verified by an earlier, interrupted fetch
                sources.append(_fetch_file(spec, remote, bases, directory, opts, bar, dead))
        # Every file is verified: partial downloads left by other mirrors are of no use now.
        for remote in spec.files:
            for stale in directory.glob(f".{remote.name}.*.part"):
                stale.unlink(missing_ok=True)
        used = list(dict.fromkeys(s for s in sources if s != "cache"))
        source = " ".join(used) if used else "cache"
        # Where the registry knows only the published file's hash (KMNIST, QMNIST), record the
        # verified payload's, so that `data verify` can re-check the cache later.
        measured = {
            f.local_name: sha256_file(directory / f.local_name)
            for f in spec.files
            if f.payload_sha256 is None
        }
        atomic_write_json(directory / MANIFEST, new_manifest(spec, source, measured))
        log.info("fetched and verified %s into %s", name, directory)
        return directory
    finally:
        lock.release()


def _fetch_file(
    spec: DatasetSpec,
    remote: RemoteFile,
    bases: list[str],
    directory: Path,
    opts: FetchOptions,
    bar: Progress | None,
    dead: dict[str, str],
) -> str:
    failures: list[tuple[str, str]] = []
    for base in bases:
        where = base if _is_local(base) else _join(base, remote.name)
        if base in dead:
            failures.append((where, f"skipped: {dead[base]}"))
            continue
        try:
            return _fetch_from_mirror(base, remote, directory, opts, bar)
        except _MirrorFailed as exc:
            failures.append((where, str(exc)))
            if exc.dead:
                dead[base] = str(exc)
            if base is not bases[-1]:
                log.warning("%s failed: %s; trying the next mirror", where, exc)
    listing = "\n".join(f"  - {where}: {reason}" for where, reason in failures)
    raise DownloadError(
        f"could not fetch {remote.name} of {spec.name!r}; every mirror failed:\n{listing}",
        hint=_manual_hint(spec),
        failures=failures,
    )
