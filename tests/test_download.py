"""fetch_dataset against real HTTP servers on 127.0.0.1: mirrors, retries, resume, verification,
size guards, local mirrors, $MNISTLAB_MIRRORS and the cross-process lock.

Nothing is mocked: every test starts :class:`http_mirror.MirrorServer` (a ThreadingHTTPServer
on an ephemeral port) serving the real MNIST ``.gz`` files from ``../shared/datasets/mnist``,
injects faults into chosen requests, and asserts on both the cache and the server's request
log (paths, Range headers, statuses). A full fetch moves ~11 MB over loopback (~0.3 s).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mnistlab
from mnistlab.data.cache import MANIFEST, dataset_dir
from mnistlab.data.registry import MNIST
from mnistlab.errors import DownloadError

try:  # tests/ is on sys.path (pytest's default "prepend" import mode, no __init__.py)
    from http_mirror import Fault, MirrorServer, Request, closed_port_url
except ImportError:  # tests/ is a package
    from tests.http_mirror import Fault, MirrorServer, Request, closed_port_url

IMAGES = "t10k-images-idx3-ubyte.gz"  # 1,648,877 bytes here
LABELS = "t10k-labels-idx1-ubyte.gz"  # 4,542 bytes here
FILES = [f.name for f in MNIST.files]  # train-images, train-labels, t10k-images, t10k-labels
LOCAL = {f.name: f.local_name for f in MNIST.files}
REMOTE = {f.name: f for f in MNIST.files}

MirrorFactory = Callable[..., MirrorServer]


# ---------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="session")
def mnist_gz(shared_datasets: Path) -> dict[str, bytes]:
    """The four real MNIST .gz files, name -> bytes."""
    return {name: (shared_datasets / "mnist" / name).read_bytes() for name in FILES}


@pytest.fixture(scope="session")
def payloads(mnist_gz: dict[str, bytes]) -> dict[str, bytes]:
    """The decompressed (official) IDX payloads, .gz name -> bytes."""
    return {name: gzip.decompress(data) for name, data in mnist_gz.items()}


@pytest.fixture
def mirror(mnist_gz: dict[str, bytes]) -> Iterator[MirrorFactory]:
    """``mirror(files=None, prefix="/mnist/")`` starts a MirrorServer (default: the MNIST
    files); every server is shut down after the test."""
    servers: list[MirrorServer] = []

    def start(files: dict[str, bytes] | None = None, prefix: str = "/mnist/") -> MirrorServer:
        server = MirrorServer(mnist_gz if files is None else files, prefix)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def fetch(home: Path, mirrors: list[str] | None, **kwargs: object) -> Path:
    options: dict = {"retries": 3, "timeout": 5.0, "backoff": 0.01, "progress": False}
    options.update(kwargs)
    return mnistlab.fetch_dataset("mnist", mirrors=mirrors, home=home, **options)


def leftovers(home: Path) -> list[str]:
    """Hidden files (.part, .tmp) left in the dataset folder."""
    directory = dataset_dir("mnist", home)
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def part_files(home: Path, name: str) -> list[Path]:
    return sorted(dataset_dir("mnist", home).glob(f".{name}.*.part"))


def manifest(home: Path) -> dict:
    return json.loads((dataset_dir("mnist", home) / MANIFEST).read_text())


def assert_fetched(home: Path, payloads: dict[str, bytes] | None = None) -> None:
    """The dataset is cached, every file verifies, and nothing temporary is left."""
    directory = dataset_dir("mnist", home)
    assert (directory / MANIFEST).is_file()
    checks = mnistlab.verify_dataset("mnist", home=home)
    assert [c.file for c in checks] == [LOCAL[n] for n in FILES]
    assert all(c.ok for c in checks), checks
    assert leftovers(home) == []
    for name, data in (payloads or {}).items():
        assert (directory / LOCAL[name]).read_bytes() == data


def served_once(server: MirrorServer, names: list[str] = FILES) -> bool:
    """Each file was asked for exactly once and sent completely with 200."""
    return all(
        [(r.status, r.range, r.complete) for r in server.requests(n)] == [(200, None, True)]
        for n in names
    )


def statuses(requests: list[Request]) -> list[int | None]:
    return [r.status for r in requests]


# ---------------------------------------------------------------------------- 1. next mirror


def test_404_on_first_mirror_falls_back_to_second(tmp_path: Path, mirror: MirrorFactory) -> None:
    server = mirror()  # one server, two prefixes: /gone/ has no files (404), /mnist/ has them
    gone = server.url_for("/gone/")

    path = fetch(tmp_path, [gone, server.url])

    assert path == dataset_dir("mnist", tmp_path)
    assert_fetched(tmp_path)
    for name in FILES:  # a 404 is not retried: one request to /gone/, then /mnist/
        log = server.requests(name)
        assert [(r.path, r.status) for r in log] == [
            (f"/gone/{name}", 404),
            (f"/mnist/{name}", 200),
        ]
        assert log[1].complete
    assert manifest(tmp_path)["source"] == server.url


@pytest.mark.parametrize("status", [403, 404, 410])
def test_client_error_moves_on_without_retry(
    tmp_path: Path, mirror: MirrorFactory, status: int
) -> None:
    bad, good = mirror(), mirror()
    bad.inject("*", Fault(status=status), times=None)

    fetch(tmp_path, [bad.url, good.url], retries=3)

    assert_fetched(tmp_path)
    assert sorted(r.name for r in bad.log) == sorted(FILES)  # once per file, no retries
    assert set(statuses(bad.log)) == {status}
    assert served_once(good)


def test_redirect_is_followed_and_keeps_the_range(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    half = size // 2
    front, storage = mirror(files={}), mirror()  # like a CDN redirecting to a bucket
    front.inject("*", Fault(status=302, location=storage.url), times=None)
    storage.inject(IMAGES, Fault(cut_after=half))

    fetch(tmp_path, [front.url])

    assert_fetched(tmp_path)
    assert set(statuses(front.log)) == {302}
    assert [r.range for r in front.requests(IMAGES)] == [None, f"bytes={half}-"]
    assert [(r.range, r.status) for r in storage.requests(IMAGES)] == [
        (None, 200),
        (f"bytes={half}-", 206),  # the Range header survived the redirect
    ]
    assert manifest(tmp_path)["source"] == front.url


# ---------------------------------------------------------------------------- 2. retries


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault(status=500), 500),
        (Fault(status=503), 503),
        (Fault(status=429), 429),
        (Fault(drop=True), None),  # connection closed with no answer at all
    ],
    ids=["500", "503", "429", "dropped"],
)
def test_transient_failure_is_retried(
    tmp_path: Path, mirror: MirrorFactory, fault: Fault, status: int | None
) -> None:
    server = mirror()
    server.inject(LABELS, fault, times=2)

    fetch(tmp_path, [server.url], retries=3, backoff=0.01)

    assert_fetched(tmp_path)
    log = server.requests(LABELS)
    assert statuses(log) == [status, status, 200]
    assert [r.range for r in log] == [None, None, None]
    assert log[-1].complete
    assert served_once(server, [n for n in FILES if n != LABELS])


def test_retries_exhausted_moves_to_next_mirror(tmp_path: Path, mirror: MirrorFactory) -> None:
    flaky, good = mirror(), mirror()
    flaky.inject(LABELS, Fault(status=500), times=None)

    fetch(tmp_path, [flaky.url, good.url], retries=2, backoff=0.01)

    assert_fetched(tmp_path)
    assert statuses(flaky.requests(LABELS)) == [500, 500, 500]  # 1 try + 2 retries
    assert served_once(flaky, [n for n in FILES if n != LABELS])
    assert served_once(good, [LABELS]) and len(good.log) == 1
    assert manifest(tmp_path)["source"] == f"{flaky.url} {good.url}"


# ---------------------------------------------------------------------------- 3. cut + resume


def test_cut_connection_resumes_with_range(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], payloads: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    half = size // 2
    server = mirror()
    server.inject(IMAGES, Fault(cut_after=half))  # full Content-Length, half the body, close

    fetch(tmp_path, [server.url])

    assert_fetched(tmp_path, {IMAGES: payloads[IMAGES]})
    first, second = server.requests(IMAGES)
    assert (first.range, first.status, first.length, first.sent) == (None, 200, size, half)
    assert second.range == f"bytes={half}-"
    assert second.status == 206
    assert second.content_range == f"bytes {half}-{size - 1}/{size}"
    assert second.complete and second.sent == size - half


@pytest.mark.parametrize("progress", [False, True], ids=["quiet", "progress-bar"])
def test_resume_survives_several_cuts(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], progress: bool
) -> None:
    size, step = len(mnist_gz[IMAGES]), 500_000
    server = mirror()
    server.inject(IMAGES, Fault(cut_after=step), times=3)  # each response stops 500 kB in

    fetch(tmp_path, [server.url], retries=3, progress=progress)

    assert_fetched(tmp_path)
    log = server.requests(IMAGES)
    assert [r.range for r in log] == [None, "bytes=500000-", "bytes=1000000-", "bytes=1500000-"]
    assert statuses(log) == [200, 206, 206, 206]
    assert sum(r.sent for r in log) == size  # no byte was downloaded twice


def test_server_ignoring_range_restarts_the_download(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], payloads: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    half = size // 2
    server = mirror()
    server.inject(IMAGES, Fault(cut_after=half))
    server.inject(IMAGES, Fault(ignore_range=True), times=None)  # answers 200, whole body

    fetch(tmp_path, [server.url])

    assert_fetched(tmp_path, {IMAGES: payloads[IMAGES]})
    first, second = server.requests(IMAGES)
    assert (first.status, first.sent) == (200, half)
    assert second.range == f"bytes={half}-"  # asked to resume ...
    assert (second.status, second.content_range) == (200, None)  # ... got the whole file
    assert second.complete and second.sent == size


def test_wrong_content_range_restarts_from_scratch(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], payloads: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    half = size // 2
    server = mirror()
    server.inject(IMAGES, Fault(cut_after=half))
    # A 206 whose Content-Range does not start where the client asked (a broken proxy).
    server.inject(IMAGES, Fault(content_range=f"bytes 0-{size - half - 1}/{size}"))

    fetch(tmp_path, [server.url])

    assert_fetched(tmp_path, {IMAGES: payloads[IMAGES]})
    log = server.requests(IMAGES)
    assert [(r.range, r.status) for r in log] == [
        (None, 200),
        (f"bytes={half}-", 206),
        (None, 200),  # the partial file was dropped, the whole file fetched again
    ]
    assert log[-1].complete


# ---------------------------------------------------------------------------- 4. wrong bytes


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _wrong_bytes(kind: str, mnist_gz: dict[str, bytes], shared_datasets: Path) -> bytes:
    good = mnist_gz[LABELS]
    if kind == "flipped-gzip-byte":  # same size as the real file, one byte changed
        return _flip_middle_byte(good)
    if kind == "corrupted-payload":  # a valid gzip of a payload with one label changed
        return gzip.compress(_flip_middle_byte(gzip.decompress(good)), mtime=0)
    if kind == "other-dataset":  # Fashion-MNIST's test labels: same name and payload size
        return (shared_datasets / "fashion-mnist" / LABELS).read_bytes()
    if kind == "plain-wrong-payload":  # not gzip at all, payload-sized
        return bytes(REMOTE[LABELS].payload_size or 0)
    raise AssertionError(kind)


WRONG = {
    "flipped-gzip-byte": "not a valid gzip file",
    "corrupted-payload": "payload SHA-256 mismatch",
    "other-dataset": "payload SHA-256 mismatch",
    "plain-wrong-payload": "payload SHA-256 mismatch",
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_bytes_are_rejected(
    tmp_path: Path,
    mirror: MirrorFactory,
    mnist_gz: dict[str, bytes],
    shared_datasets: Path,
    kind: str,
) -> None:
    server = mirror()
    server.put(LABELS, _wrong_bytes(kind, mnist_gz, shared_datasets))

    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, [server.url])

    error = info.value
    assert len(error.failures) == 1
    url, reason = error.failures[0]
    assert url == server.url + LABELS
    assert WRONG[kind] in reason
    assert WRONG[kind] in str(error)
    # Checksum failures are not retried, and nothing of the bad file is kept: no payload
    # under its final name, no .part, no .tmp, no manifest. The good files stay, verified.
    assert statuses(server.requests(LABELS)) == [200]
    directory = dataset_dir("mnist", tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        LOCAL[n] for n in FILES if n != LABELS
    )


def test_wrong_bytes_then_good_mirror(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], shared_datasets: Path
) -> None:
    bad, good = mirror(), mirror()
    bad.put(LABELS, _wrong_bytes("other-dataset", mnist_gz, shared_datasets))

    fetch(tmp_path, [bad.url, good.url])

    assert_fetched(tmp_path)
    assert statuses(bad.requests(LABELS)) == [200]  # downloaded, rejected, not retried
    assert served_once(good, [LABELS]) and len(good.log) == 1
    assert manifest(tmp_path)["source"] == f"{bad.url} {good.url}"


# ---------------------------------------------------------------------------- 5. all down


def test_every_mirror_down_raises_one_error_listing_all(
    tmp_path: Path, mirror: MirrorFactory
) -> None:
    refused = closed_port_url()
    missing = mirror(files={})  # 404 for everything
    broken = mirror()
    broken.inject("*", Fault(status=500), times=None)
    mirrors = [refused, missing.url, broken.url]

    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, mirrors, retries=2, backoff=0.01)
    elapsed = time.monotonic() - started

    error = info.value
    first = FILES[0]
    assert [url for url, _ in error.failures] == [base + first for base in mirrors]
    reasons = [reason for _, reason in error.failures]
    assert "connection failed" in reasons[0] and "refused" in reasons[0].lower()
    assert "gave up after 3 attempts" in reasons[0]
    assert "HTTP 404" in reasons[1]
    assert "HTTP 500" in reasons[2] and "gave up after 3 attempts" in reasons[2]
    text = str(error)
    for base, reason in zip(mirrors, reasons, strict=True):
        assert f"{base}{first}: {reason}" in text
    assert "mnistlab data import" in text
    assert "--name mnist" in text
    assert statuses(missing.log) == [404]  # not retried
    assert statuses(broken.log) == [500, 500, 500]  # 1 try + 2 retries
    assert elapsed < 5
    directory = dataset_dir("mnist", tmp_path)
    assert list(directory.iterdir()) == []  # nothing cached, no manifest, no .part


# ---------------------------------------------------------------------------- 6. timeouts


def test_slow_response_times_out_then_retry_succeeds(tmp_path: Path, mirror: MirrorFactory) -> None:
    server = mirror()
    server.inject(LABELS, Fault(delay=3.0))  # silent for 3 s, the client waits 0.5 s

    started = time.monotonic()
    fetch(tmp_path, [server.url], timeout=0.5, backoff=0.01)
    elapsed = time.monotonic() - started

    assert_fetched(tmp_path)
    log = server.requests(LABELS)
    assert len(log) == 2
    assert log[0].status is None or log[0].error  # the client had hung up
    assert log[1].status == 200 and log[1].complete and log[1].range is None
    assert elapsed < 2.5


def test_stalled_body_times_out_and_resumes(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], payloads: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    server = mirror()
    server.inject(IMAGES, Fault(hang_after=1_200_000, hang=5.0))  # stalls, does not close

    fetch(tmp_path, [server.url], timeout=0.5, backoff=0.01)

    assert_fetched(tmp_path, {IMAGES: payloads[IMAGES]})
    first, second = server.requests(IMAGES)
    assert first.sent == 1_200_000
    # It resumes from what it had saved: at most what was sent, and more than nothing.
    assert second.range is not None and second.range.startswith("bytes=")
    offset = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= 1_200_000
    assert second.status == 206 and second.content_range == f"bytes {offset}-{size - 1}/{size}"


# ---------------------------------------------------------------------------- 7. local, env


@pytest.fixture(scope="session")
def payload_folder(tmp_path_factory: pytest.TempPathFactory, payloads: dict[str, bytes]) -> Path:
    """A folder holding the decompressed IDX files (no .gz): also a valid mirror."""
    folder = tmp_path_factory.mktemp("idx-mirror")
    for name, data in payloads.items():
        (folder / LOCAL[name]).write_bytes(data)
    return folder


@pytest.mark.parametrize(
    "form", ["file-url", "plain-path", "decompressed-folder", "file-url-odd-characters"]
)
def test_local_mirrors(
    tmp_path: Path, shared_datasets: Path, payload_folder: Path, form: str
) -> None:
    folder = shared_datasets / "mnist"
    if form == "decompressed-folder":
        folder = payload_folder
    elif form == "file-url-odd-characters":  # percent-encoded in the URL
        folder = tmp_path / "my mirror #1 100%"
        folder.mkdir()
        for name in FILES:
            shutil.copyfile(shared_datasets / "mnist" / name, folder / name)
    base = str(folder) if form in ("plain-path", "decompressed-folder") else folder.as_uri() + "/"

    fetch(tmp_path / "home", [base])

    assert_fetched(tmp_path / "home")
    assert manifest(tmp_path / "home")["source"] == str(folder.resolve())


def test_missing_local_folder_falls_back(tmp_path: Path, mirror: MirrorFactory) -> None:
    server = mirror()
    nowhere = tmp_path / "no-such-folder"

    fetch(tmp_path, [nowhere.as_uri(), str(nowhere), server.url])

    assert_fetched(tmp_path)
    assert served_once(server)


def test_mirrors_env_variable_is_honoured(
    tmp_path: Path,
    mirror: MirrorFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = mirror()
    refused = closed_port_url()
    monkeypatch.setenv("MNISTLAB_MIRRORS", f"  {refused}   {server.url} ")

    fetch(tmp_path, None, retries=1)

    assert_fetched(tmp_path)
    assert served_once(server)
    assert manifest(tmp_path)["source"] == server.url
    # The refused host was tried for the first file only, then skipped as dead.
    refused_msgs = [r.getMessage() for r in caplog.records if refused in r.getMessage()]
    assert refused_msgs and all(FILES[0] in m for m in refused_msgs)


def test_explicit_mirrors_override_env(
    tmp_path: Path, mirror: MirrorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, other = mirror(), mirror()
    monkeypatch.setenv("MNISTLAB_MIRRORS", other.url)

    fetch(tmp_path, [server.url])

    assert served_once(server)
    assert other.log == []


# ---------------------------------------------------------------------------- 8. two processes

_FETCH_SCRIPT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
import mnistlab
path = mnistlab.fetch_dataset(
    "mnist", mirrors=[sys.argv[1]], home=sys.argv[2], retries=3, timeout=30, backoff=0.01,
    progress=False,
)
print(path, flush=True)
"""


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def test_two_processes_download_each_file_once(tmp_path: Path, mirror: MirrorFactory) -> None:
    server = mirror()
    gate = threading.Event()
    server.inject("*", Fault(wait=gate))  # the first request waits until the test opens it
    command = [sys.executable, "-c", _FETCH_SCRIPT, server.url, str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "MNISTLAB_MIRRORS"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = None
    try:
        # The first process holds the lock once it has sent a request: then start the second
        # and keep the first one's download stalled until the second reports it is waiting.
        _wait_for(lambda: len(server.log) >= 1, 30, "the first process's request")
        second = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert second.stderr is not None
        second_err: list[str] = []
        reader = threading.Thread(target=lambda: second_err.extend(second.stderr), daemon=True)
        reader.start()
        try:
            _wait_for(
                lambda: any("another process is fetching" in line for line in second_err),
                30,
                "the second process to wait for the lock",
            )
        finally:
            gate.set()
        out1, err1 = first.communicate(timeout=60)
        second.wait(timeout=60)
        reader.join(timeout=5)
        out2 = second.stdout.read() if second.stdout else ""
    finally:
        gate.set()
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    assert first.returncode == 0, err1.decode()
    assert second.returncode == 0, "".join(second_err)
    directory = str(dataset_dir("mnist", tmp_path))
    assert out1.decode().strip() == directory
    assert out2.strip() == directory
    assert_fetched(tmp_path)
    assert served_once(server)  # every file went over the wire once, for both processes
    assert len(server.log) == len(FILES)


# ---------------------------------------------------------------------------- 9. .part files


def _interrupted_run(home: Path, server: MirrorServer, cut_after: int, name: str = IMAGES) -> Path:
    """A fetch cut short with no retries left: it fails and leaves a .part file."""
    server.inject(name, Fault(cut_after=cut_after))
    with pytest.raises(DownloadError, match="cut short"):
        fetch(home, [server.url], retries=0)
    [part] = part_files(home, name)
    assert part.stat().st_size == cut_after
    assert not (dataset_dir("mnist", home) / MANIFEST).exists()
    return part


def test_part_file_from_interrupted_run_is_resumed(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes], payloads: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    server = mirror()
    _interrupted_run(tmp_path, server, 600_000)
    before = len(server.log)

    fetch(tmp_path, [server.url])  # a new run

    assert_fetched(tmp_path, {IMAGES: payloads[IMAGES]})
    again = server.log[before:]
    # The train files verified during the first run are not downloaded again.
    assert sorted(r.name for r in again) == sorted([IMAGES, LABELS])
    [resumed] = [r for r in again if r.name == IMAGES]
    assert resumed.range == "bytes=600000-"
    assert resumed.status == 206 and resumed.content_range == f"bytes 600000-{size - 1}/{size}"
    assert resumed.complete and resumed.sent == size - 600_000


def test_stale_part_file_is_discarded_and_refetched(
    tmp_path: Path, mirror: MirrorFactory, payloads: dict[str, bytes]
) -> None:
    server = mirror()
    part = _interrupted_run(tmp_path, server, 600_000)
    part.write_bytes(os.urandom(600_000))  # not the file's first bytes any more
    before = len(server.log)

    fetch(tmp_path, [server.url])

    assert_fetched(tmp_path, {IMAGES: payloads[IMAGES]})
    log = [r for r in server.log[before:] if r.name == IMAGES]
    assert [(r.range, r.status) for r in log] == [("bytes=600000-", 206), (None, 200)]
    assert all(r.complete for r in log)


def test_part_file_already_complete_gets_416_and_verifies(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    server = mirror()
    part = _interrupted_run(tmp_path, server, 600_000)
    part.write_bytes(mnist_gz[IMAGES])  # the body had arrived whole before the interruption
    before = len(server.log)

    fetch(tmp_path, [server.url])

    assert_fetched(tmp_path)
    log = [r for r in server.log[before:] if r.name == IMAGES]
    assert [(r.range, r.status) for r in log] == [(f"bytes={size}-", 416)]


def test_stale_part_longer_than_the_file_gets_416_then_restarts(
    tmp_path: Path, mirror: MirrorFactory, mnist_gz: dict[str, bytes]
) -> None:
    size = len(mnist_gz[IMAGES])
    server = mirror()
    part = _interrupted_run(tmp_path, server, 600_000)
    part.write_bytes(os.urandom(size + 1000))
    before = len(server.log)

    fetch(tmp_path, [server.url])

    assert_fetched(tmp_path)
    log = [r for r in server.log[before:] if r.name == IMAGES]
    assert [(r.range, r.status) for r in log] == [(f"bytes={size + 1000}-", 416), (None, 200)]


@pytest.mark.parametrize("when", ["earlier-run", "same-run"])
def test_part_from_another_mirror_is_removed_after_success(
    tmp_path: Path, mirror: MirrorFactory, when: str
) -> None:
    first, second = mirror(), mirror()
    if when == "earlier-run":
        _interrupted_run(tmp_path, first, 600_000)
        mirrors = [second.url]
    else:  # the first mirror keeps cutting the file: it gives up, keeping its .part
        first.inject(IMAGES, Fault(cut_after=600_000), times=None)
        mirrors = [first.url, second.url]

    fetch(tmp_path, mirrors, retries=1)

    assert_fetched(tmp_path)  # no .part of the first mirror is left behind
    assert [(r.range, r.status) for r in second.requests(IMAGES)] == [(None, 200)]


# ---------------------------------------------------------------------------- 10. size guards


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "no-length"])
def test_oversized_body_is_refused(
    tmp_path: Path, mirror: MirrorFactory, with_length: bool
) -> None:
    server = mirror()
    huge = os.urandom(4 << 20)  # 4 MiB for a file that is 4.5 kB (10 kB decompressed)
    server.inject(LABELS, Fault(body=huge, no_length=not with_length))

    with pytest.raises(DownloadError) as info:
        fetch(tmp_path, [server.url])

    [(url, reason)] = info.value.failures
    assert url == server.url + LABELS
    # Refused on the Content-Length alone, or once the stream passes the limit.
    expected = "far more than expected" if with_length else "far too many"
    assert expected in reason
    assert statuses(server.requests(LABELS)) == [200]  # not retried
    directory = dataset_dir("mnist", tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        LOCAL[n] for n in FILES if n != LABELS
    )


def test_gzip_bomb_is_refused_and_next_mirror_used(tmp_path: Path, mirror: MirrorFactory) -> None:
    bomb = gzip.compress(bytes(16 << 20), compresslevel=9, mtime=0)  # 16 MiB of zeros
    assert len(bomb) < 50_000  # well under the transfer limit: only the gunzip guard stops it
    bad, good = mirror(), mirror()
    bad.put(LABELS, bomb)

    with pytest.raises(DownloadError) as info:
        fetch(tmp_path / "alone", [bad.url])
    [(_, reason)] = info.value.failures
    assert "decompresses to more than the expected 10,008 bytes" in reason
    alone = dataset_dir("mnist", tmp_path / "alone")
    assert not (alone / LOCAL[LABELS]).exists() and not (alone / MANIFEST).exists()
    assert leftovers(tmp_path / "alone") == []

    fetch(tmp_path, [bad.url, good.url])
    assert_fetched(tmp_path)
    assert served_once(good, [LABELS]) and len(good.log) == 1
