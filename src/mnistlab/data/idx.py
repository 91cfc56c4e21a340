"""Reading and writing the IDX format that MNIST and its family are published in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the data in C order, big-endian.
The parser checks the header against the data length *before* touching the data, so any
input either gives a valid array or raises :class:`DatasetFormatError` — never a crash, a
huge allocation or a hang (this is fuzzed with hypothesis in the tests).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnistlab.errors import DatasetFormatError
from mnistlab.io import CHUNK, atomic_writer

#: IDX type code -> numpy dtype (big-endian as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}

#: The largest IDX file mnistlab reads from a stream (a ``.gz`` being decompressed): 1 GiB.
#: MNIST's largest file is 47 MB, EMNIST ByClass's 547 MB. A header declaring more is refused
#: before any data is read, and no stream is read past the size its header declares.
MAX_IDX_BYTES = 1 << 30

_FIX = "re-fetch it (`mnistlab data fetch NAME --force`) or re-import the original files"


def parse_idx_header(
    header: bytes, source: str = "<bytes>"
) -> tuple[np.dtype, tuple[int, ...], int]:
    """Decode an IDX header.

    Args:
        header: the first bytes of the file (at least ``4 + 4 * ndim``).
        source: a name for error messages (usually the file path).

    Returns:
        ``(dtype, shape, header_length)``.

    Raises:
        DatasetFormatError: bad magic number, unknown type code or a short header.
    """
    if len(header) < 4:
        raise DatasetFormatError(
            f"{source}: not an IDX file: {len(header)} bytes is shorter than the "
            "4-byte magic number",
            hint=_FIX,
        )
    zero, code, ndim = struct.unpack(">HBB", header[:4])
    if zero != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DatasetFormatError(
            f"{source}: wrong magic number 0x{header[:4].hex()} (expected 0x0000TTNN with a type "
            f"code TT in {{08,09,0b,0c,0d,0e}} and NN >= 1 dimensions)",
            hint="the file is not IDX (or is still gzip-compressed); " + _FIX,
        )
    header_length = 4 + 4 * ndim
    if len(header) < header_length:
        raise DatasetFormatError(
            f"{source}: truncated header: {ndim} dimensions need {header_length} bytes, "
            f"the file has {len(header)}",
            hint=_FIX,
        )
    shape = struct.unpack(f">{ndim}I", header[4:header_length])
    return IDX_DTYPES[code], tuple(int(d) for d in shape), header_length


def idx_size(dtype: np.dtype, shape: tuple[int, ...], header_length: int) -> int:
    """The size in bytes of the IDX file a header declares (header included)."""
    return header_length + dtype.itemsize * int(np.prod(shape, dtype=object))


def read_idx_header(
    stream: BinaryIO, source: str = "<stream>"
) -> tuple[bytes, tuple[int, ...], int]:
    """Read and decode the header at the start of a binary stream (e.g. a gzip stream).

    Returns:
        ``(header_bytes, shape, declared_size)``; the stream is left just past the header.

    Raises:
        DatasetFormatError: not an IDX header.
    """
    head = stream.read(4)
    if len(head) == 4:
        head += stream.read(4 * head[3])
    dtype, shape, header_length = parse_idx_header(head, source)
    return head, shape, idx_size(dtype, shape, header_length)


def copy_idx_stream(
    stream: BinaryIO,
    write: Callable[[bytes], object],
    source: str = "<stream>",
    limit: int = MAX_IDX_BYTES,
    limit_name: str = "the most mnistlab reads",
) -> int:
    """Copy one IDX file from ``stream`` to ``write``, never reading past its declared size.

    The header is read first: a declared size over ``limit`` is refused before any data is
    read, and reading stops at the first byte past the declared size (a gzip bomb costs at
    most the declared size, never what it would decompress to).

    Returns:
        The number of bytes copied (the declared size).

    Raises:
        DatasetFormatError: not an IDX header, a declared size over ``limit``, fewer or more
            bytes than the header declares.
    """
    head, shape, size = read_idx_header(stream, source)
    if size > limit:
        raise DatasetFormatError(
            f"{source}: the IDX header declares shape {shape}, {size:,} bytes, more than "
            f"{limit_name} ({limit:,} bytes); refused before reading the data",
            hint=_FIX,
        )
    write(head)
    done = len(head)
    while done < size:
        chunk = stream.read(min(CHUNK, size - done))
        if not chunk:
            raise DatasetFormatError(
                f"{source}: truncated data: the header declares shape {shape} ({size:,} bytes "
                f"with the header) but the file has {done:,} bytes",
                hint=_FIX,
            )
        write(chunk)
        done += len(chunk)
    if stream.read(1):
        raise DatasetFormatError(
            f"{source}: more data than the IDX header declares: shape {shape} is {size:,} "
            f"bytes with the header, but the file goes on (reading stopped at byte {size + 1:,})",
            hint=_FIX,
        )
    return size


def _check_length(
    dtype: np.dtype, shape: tuple[int, ...], header_length: int, total: int, source: str
) -> None:
    expected = idx_size(dtype, shape, header_length)
    if total < expected:
        raise DatasetFormatError(
            f"{source}: truncated data: the header declares shape {shape} ({expected:,} bytes "
            f"with the header) but the file has {total:,} bytes",
            hint=_FIX,
        )
    if total > expected:
        raise DatasetFormatError(
            f"{source}: dimensions do not match the data length: shape {shape} needs "
            f"{expected:,} bytes but the file has {total:,} ({total - expected:,} extra)",
            hint=_FIX,
        )


def _reshape(array: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    # Zero-size data can still declare shapes numpy refuses: more than its maximum number of
    # dimensions, or dimensions whose product (ignoring the zero) overflows.
    try:
        return array.reshape(shape)
    except ValueError as exc:
        raise DatasetFormatError(
            f"{source}: numpy cannot represent the declared shape {shape} ({exc})", hint=_FIX
        ) from exc


def _native(array: np.ndarray) -> np.ndarray:
    # uint8 (every image file) needs no conversion; wider types are byte-swapped once.
    return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))


def parse_idx(buffer: bytes | bytearray | memoryview, source: str = "<bytes>") -> np.ndarray:
    """Parse an in-memory IDX file.

    Args:
        buffer: the whole file's bytes (decompressed).
        source: a name for error messages.

    Returns:
        An array of the declared shape in native byte order. For uint8 data it is a
        zero-copy view of ``buffer`` (writable only if ``buffer`` is).

    Raises:
        DatasetFormatError: the bytes are not a well-formed IDX file.
    """
    view = memoryview(buffer)
    dtype, shape, header_length = parse_idx_header(bytes(view[: 4 + 4 * 255]), source)
    _check_length(dtype, shape, header_length, len(view), source)
    array = np.frombuffer(view, dtype=dtype, offset=header_length)
    return _native(_reshape(array, shape, source))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an uncompressed IDX file from disk with one read into a fresh, writable array.

    Raises:
        DatasetFormatError: the file is not a well-formed IDX file.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    total = path.stat().st_size
    with open(path, "rb") as handle:
        dtype, shape, header_length = parse_idx_header(handle.read(4 + 4 * 255), str(path))
        _check_length(dtype, shape, header_length, total, str(path))
        handle.seek(header_length)
        count = int(np.prod(shape, dtype=np.int64))
        array = np.fromfile(handle, dtype=dtype, count=count)
    if array.size != count:  # the file shrank while we read it
        raise DatasetFormatError(f"{path}: truncated data while reading", hint=_FIX)
    return _native(_reshape(array, shape, str(path)))


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialize an array as IDX bytes (header + big-endian data).

    Raises:
        ValueError: the dtype has no IDX type code or the array has no dimensions.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot write dtype {array.dtype} with {array.ndim} dimensions as IDX")
    code = _CODES[native]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an uncompressed IDX file, atomically."""
    data = idx_bytes(array)
    with atomic_writer(path) as handle:
        handle.write(data)
