"""The cache: default home, manifests, and `verify` for datasets whose registry entry lacks
payload hashes (KMNIST, QMNIST), which rely on the hashes recorded at fetch time."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnistlab.data.cache import (
    MANIFEST,
    dataset_dir,
    default_home,
    is_cached,
    new_manifest,
    verify_dataset,
)
from mnistlab.data.registry import REGISTRY
from mnistlab.errors import DatasetNotCachedError
from mnistlab.io import atomic_write_json, sha256_file


def test_default_home_honours_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MNISTLAB_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    monkeypatch.delenv("MNISTLAB_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_home() == tmp_path / "xdg" / "mnistlab"


def test_manifest_records_measured_hashes_only_where_registry_has_none():
    qmnist = REGISTRY["qmnist"]
    measured = {f.local_name: f"sha-of-{f.local_name}" for f in qmnist.files}
    manifest = new_manifest(qmnist, "somewhere", measured)
    entry = manifest["splits"]["test"]["labels"]
    assert entry == {
        "file": "qmnist-test-labels-idx2-int",
        "size": 12 + 60000 * 8 * 4,
        "sha256": "sha-of-qmnist-test-labels-idx2-int",
    }
    mnist = new_manifest(REGISTRY["mnist"], "x", {"train-images-idx3-ubyte": "ignored"})
    assert mnist["splits"]["train"]["images"]["sha256"].startswith("ba891046")


def _fake_qmnist_cache(home: Path) -> Path:
    """A qmnist cache as a fetch leaves it: payloads of the right size, hashes in the manifest."""
    spec = REGISTRY["qmnist"]
    directory = dataset_dir("qmnist", home)
    directory.mkdir(parents=True)
    for i, f in enumerate(spec.files):
        with open(directory / f.local_name, "wb") as out:
            out.write(bytes([i]) * 16)
            out.truncate(f.payload_size)
    measured = {f.local_name: sha256_file(directory / f.local_name) for f in spec.files}
    atomic_write_json(directory / MANIFEST, new_manifest(spec, "test", measured))
    return directory


def test_verify_uses_recorded_hashes_and_catches_same_size_corruption(home: Path):
    directory = _fake_qmnist_cache(home)
    assert is_cached(REGISTRY["qmnist"], home)
    assert all(check.ok for check in verify_dataset("qmnist", home))

    victim = directory / "qmnist-train-images-idx3-ubyte"
    with open(victim, "r+b") as handle:  # same size, one byte different
        handle.seek(1000)
        handle.write(b"\x01")
    checks = {c.file: c for c in verify_dataset("qmnist", home)}
    assert not checks[victim.name].ok
    assert "SHA-256 mismatch" in checks[victim.name].reason
    assert sum(not c.ok for c in checks.values()) == 1


def test_verify_uncached_dataset_says_how_to_fetch(home: Path):
    with pytest.raises(DatasetNotCachedError, match="not cached") as info:
        verify_dataset("kmnist", home)
    assert "mnistlab data fetch kmnist" in (info.value.hint or "")
