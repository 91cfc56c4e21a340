"""The IDX reader and writer: round trips, every malformed-input case, and fuzzing."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.data.idx import IDX_DTYPES, idx_bytes, parse_idx, read_idx, write_idx
from mnistlab.errors import DatasetFormatError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
CODE_OF = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B}
CODE_OF |= {np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}
SHAPES = [(1,), (7,), (3, 4), (2, 28, 28), (2, 3, 4, 5), (0,), (0, 28, 28)]


def header(code: int, dims: tuple[int, ...] | list[int]) -> bytes:
    return struct.pack(f">HBB{len(dims)}I", 0, code, len(dims), *dims)


def sample(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(size=shape) * 1e3).astype(dtype)


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip(tmp_path: Path, dtype: type, shape: tuple[int, ...]) -> None:
    array = sample(dtype, shape)
    path = tmp_path / "data.idx"
    write_idx(path, array)

    raw = path.read_bytes()
    ndim = len(shape)
    assert raw[:4] == bytes([0, 0, CODE_OF[np.dtype(dtype)], ndim])
    assert len(raw) == 4 + 4 * ndim + array.nbytes

    for back in (read_idx(path), parse_idx(raw), parse_idx(bytearray(raw))):
        assert back.shape == shape
        assert back.dtype == np.dtype(dtype)  # native byte order, whatever the file holds
        assert back.dtype.isnative
        np.testing.assert_array_equal(back, array)
    assert read_idx(path).flags.writeable


def test_big_endian_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "x.idx"
    write_idx(path, np.array([1, -2, 0x01020304], dtype=np.int32))
    assert path.read_bytes() == header(0x0C, (3,)) + bytes.fromhex("00000001fffffffe01020304")
    write_idx(path, np.array([1.5], dtype="<f8"))  # little-endian input is swapped on write
    assert path.read_bytes()[8:] == struct.pack(">d", 1.5)


def test_parse_uint8_is_zero_copy_view() -> None:
    buf = bytearray(header(0x08, (2, 2)) + bytes([1, 2, 3, 4]))
    array = parse_idx(buf)
    assert array.flags.writeable
    buf[-1] = 9
    assert array[1, 1] == 9


def test_real_mnist_labels_file(shared_datasets: Path) -> None:
    raw = gzip.decompress((shared_datasets / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    labels = parse_idx(raw)
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first digits


def test_idx_bytes_refuses_unsupported_arrays() -> None:
    with pytest.raises(ValueError, match="cannot write"):
        idx_bytes(np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="cannot write"):
        idx_bytes(np.array(5, dtype=np.uint8))  # 0-d


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "keep.idx"
    write_idx(path, np.arange(3, dtype=np.uint8))
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_idx(path, np.zeros(3, dtype=np.uint64))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.idx"]


# ---------------------------------------------------------------------------- malformed input

GOOD = header(0x08, (2, 3)) + bytes(range(6))

BAD_CASES = {
    "wrong magic (gzip bytes)": (b"\x1f\x8b\x08\x00" + GOOD[4:], "wrong magic number"),
    "nonzero leading bytes": (b"\x01\x00" + GOOD[2:], "wrong magic number"),
    "unknown type code": (b"\x00\x00\x0a\x02" + GOOD[4:], "wrong magic number"),
    "zero dimensions": (b"\x00\x00\x08\x00", "NN >= 1 dimensions"),
    "shorter than magic": (b"\x00\x00", "shorter than the 4-byte magic number"),
    "empty": (b"", "shorter than the 4-byte magic number"),
    "truncated header": (GOOD[:10], "truncated header: 2 dimensions need 12 bytes"),
    "truncated data": (GOOD[:-1], "truncated data"),
    "no data": (GOOD[:12], "truncated data"),
    "extra trailing bytes": (GOOD + b"\x00\x00", "2 extra"),
    "wide type truncated": (header(0x0E, (2,)) + bytes(15), "truncated data"),
    "wide type misaligned tail": (header(0x0C, (1,)) + bytes(5), "1 extra"),
}


@pytest.mark.parametrize("case", BAD_CASES, ids=str)
def test_malformed_bytes_raise_format_error(tmp_path: Path, case: str) -> None:
    data, expected = BAD_CASES[case]
    with pytest.raises(DatasetFormatError, match=expected) as info:
        parse_idx(data, source="some/file-idx3-ubyte")
    assert str(info.value).startswith("some/file-idx3-ubyte: ")
    assert info.value.hint and "re-fetch" in info.value.hint

    path = tmp_path / "bad-idx"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=expected) as info:
        read_idx(path)
    assert str(path) in info.value.message


def test_gzip_file_hint_mentions_compression(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(GOOD))
    with pytest.raises(DatasetFormatError) as info:
        read_idx(path)
    assert "gzip" in info.value.hint


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


@pytest.mark.parametrize(
    "dims",
    [
        (2**32 - 1,),
        (2**32 - 1, 2**32 - 1, 2**32 - 1),
        (60000, 2**32 - 1, 28),
    ],
    ids=str,
)
def test_huge_declared_shape_is_refused_without_allocating(dims: tuple[int, ...]) -> None:
    data = header(0x0E, dims) + bytes(64)
    with pytest.raises(DatasetFormatError, match="truncated data"):
        parse_idx(data)


@pytest.mark.parametrize(
    "dims",
    [(2**32 - 1, 2**32 - 1, 0), (0, 2**32 - 1, 2**32 - 1, 2**32 - 1), (0,) * 70, (1,) * 70],
    ids=["overflowing-zero-size", "too-big-zero-size", "70-dims-empty", "70-dims"],
)
def test_shapes_numpy_cannot_hold(tmp_path: Path, dims: tuple[int, ...]) -> None:
    data = header(0x08, dims) + (b"x" if all(d == 1 for d in dims) else b"")
    with pytest.raises(DatasetFormatError, match="numpy cannot represent"):
        parse_idx(data)
    path = tmp_path / "odd-idx"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match="numpy cannot represent"):
        read_idx(path)


def test_zero_size_with_huge_dim_is_fine() -> None:
    array = parse_idx(header(0x08, (0, 2**32 - 1)))
    assert array.shape == (0, 2**32 - 1) and array.size == 0


# ---------------------------------------------------------------------------- fuzzing

CODES = sorted(IDX_DTYPES)


def expected_size(data: bytes) -> tuple[np.dtype, tuple[int, ...]] | None:
    """Independent reading of a header: (dtype, shape) when ``data`` is exactly valid."""
    if len(data) < 4 or data[0] or data[1] or data[2] not in IDX_DTYPES or data[3] == 0:
        return None
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        return None
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = 1
    for d in shape:
        count *= d
    if len(data) != 4 + 4 * ndim + count * IDX_DTYPES[data[2]].itemsize:
        return None
    return IDX_DTYPES[data[2]], shape


def check_parse(data: bytes) -> None:
    expected = expected_size(data)
    try:
        array = parse_idx(data)
    except DatasetFormatError as exc:
        assert exc.message and exc.hint
        if expected is not None:  # valid per the header, yet refused: only if numpy can't
            assert "numpy cannot represent" in exc.message
        return
    assert expected is not None, "accepted bytes whose header does not match their length"
    dtype, shape = expected
    assert array.shape == shape
    assert array.dtype == dtype.newbyteorder("=")
    assert array.nbytes == len(data) - 4 - 4 * len(shape)


@settings(max_examples=400, deadline=500)
@given(st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_parse(data)


dims_strategy = st.lists(
    st.one_of(
        st.integers(0, 6),
        st.integers(0, 2**32 - 1),
        st.sampled_from([0, 1, 28, 255, 256, 2**16, 2**31 - 1, 2**31, 2**32 - 1]),
    ),
    min_size=1,
    max_size=8,
)


@st.composite
def headed_data(draw: st.DrawFn) -> bytes:
    code = draw(st.sampled_from(CODES))
    dims = draw(dims_strategy)
    head = header(code, dims)
    count = 1
    for d in dims:
        count *= d
    exact = count * IDX_DTYPES[code].itemsize
    how = draw(st.sampled_from(["exact", "near", "random"]))
    if how == "exact" and exact <= 4096:
        n = exact
    elif how == "near" and exact <= 4096:
        n = max(0, exact + draw(st.integers(-9, 9)))
    else:
        n = draw(st.integers(0, 2048))
    body = draw(st.binary(min_size=n, max_size=n))
    cut = draw(st.one_of(st.none(), st.integers(0, len(head))))  # sometimes a short header
    return head[:cut] if cut is not None else head + body


@settings(max_examples=500, deadline=500, suppress_health_check=[HealthCheck.too_slow])
@given(headed_data())
def test_fuzz_valid_headers_random_lengths(data: bytes) -> None:
    check_parse(data)


@settings(max_examples=25, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(headed_data(), st.binary(max_size=512)))
def test_fuzz_read_idx_file(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "f-idx"
    path.write_bytes(data)
    expected = expected_size(data)
    try:
        array = read_idx(path)
    except DatasetFormatError as exc:
        assert str(path) in exc.message
        if expected is not None:
            assert "numpy cannot represent" in exc.message
        return
    assert expected is not None
    assert array.shape == expected[1]
    np.testing.assert_array_equal(array, parse_idx(data))
