"""Pictures of digits into MNIST form: the steps MNIST was made with, on real digits turned
into photos and scans of every kind, and refusal of everything that is not a picture."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage
from shipping_support import encode, photo

from mnistlab.data import load_dataset
from mnistlab.features.preprocess import image_moments
from mnistlab.shipping import InputError, decode_image, preprocess_image, to_mnist
from mnistlab.shipping.preprocess import validate_array


@pytest.fixture(scope="module")
def digits():
    test = load_dataset("mnist-mini", "test", download=False)
    return test.images[:200], test.labels[:200]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel correlation of two 28x28 images, best over shifts of up to one pixel (centring
    rounds the centre of mass to a whole pixel, as MNIST did, so half-pixel differences in
    the source may land one pixel apart)."""
    best = -1.0
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(b, (dy, dx), axis=(0, 1)).ravel().astype(float)
            best = max(best, float(np.corrcoef(a.ravel().astype(float), shifted)[0, 1]))
    return best


def test_mnist_digits_come_back_nearly_unchanged(digits) -> None:
    images, _ = digits
    out = np.stack([to_mnist(x) for x in images])
    assert out.dtype == np.uint8 and out.shape == images.shape
    scores = [correlation(a, b) for a, b in zip(images, out, strict=True)]
    assert np.median(scores) > 0.97


def test_output_is_fitted_and_centred_like_mnist(digits) -> None:
    images, _ = digits
    rng = np.random.default_rng(0)
    out = np.stack([preprocess_image(photo(x, rng, size=160)) for x in images[:60]])
    moments = image_moments(out.astype(np.float32))
    assert np.abs(moments["cy"] - 14).max() <= 0.75  # whole-pixel shifts, as MNIST
    assert np.abs(moments["cx"] - 14).max() <= 0.75
    for x in out:
        rows = np.flatnonzero(x.any(1))
        cols = np.flatnonzero(x.any(0))
        assert max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) in (19, 20, 21)
        assert x.max() == 255 and x[0].max() == 0 and x[-1].max() == 0


def test_every_kind_of_picture_gives_the_same_digit(digits) -> None:
    images, _ = digits
    digit = images[3]
    reference = to_mnist(digit)
    big = np.asarray(Image.fromarray(digit).resize((300, 300), Image.Resampling.BICUBIC))
    wide = np.pad(big, ((20, 20), (200, 40)))  # off-centre in a wide frame
    rgba = np.zeros((*wide.shape, 4), np.uint8)
    rgba[..., 3] = wide  # black ink whose shape is in the alpha channel (a canvas export)
    pictures = {
        "light on dark PNG": encode(wide),
        "dark on light PNG": encode(255 - wide),
        "dark on light JPEG": encode(255 - wide, "JPEG", quality=70),
        "colour JPEG": encode(np.stack([255 - wide, 200 - wide // 2, 255 - wide], -1), "JPEG"),
        "transparent PNG": encode(rgba),
        "16-bit PNG": _png16(wide.astype(np.uint16) * 257),
        "palette GIF": _save(Image.fromarray(255 - wide).convert("P"), "GIF"),
        "BMP": encode(255 - wide, "BMP"),
        "WebP": encode(255 - wide, "WEBP", quality=90),
    }
    for name, data in pictures.items():
        out = preprocess_image(data)
        assert correlation(out, reference) > 0.9, name


def test_exif_rotation_is_applied(digits) -> None:
    images, _ = digits
    digit = np.asarray(Image.fromarray(images[5]).resize((120, 120)))
    rotated = Image.fromarray(255 - np.rot90(digit))  # stored turned 90° anticlockwise...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with the orientation tag saying "rotate 90° clockwise to view"
    data = _save(rotated, "JPEG", exif=exif, quality=95)
    upright = preprocess_image(encode(255 - digit))
    assert correlation(preprocess_image(data), upright) > 0.9


def test_thin_strokes_are_thickened(digits) -> None:
    images, _ = digits
    big = np.asarray(Image.fromarray(images[7]).resize((400, 400), Image.Resampling.BICUBIC))
    thin = ndimage.grey_erosion(big, size=(33, 33))  # a fine pen: strokes a few pixels wide
    thin = np.where(thin > 128, 255, 0).astype(np.uint8)
    assert 0 < (thin > 0).mean() < 0.25 * (big > 128).mean()
    out = preprocess_image(encode(255 - thin))
    reference = to_mnist(images[7])
    assert (out > 128).sum() > 0.6 * (reference > 128).sum()
    assert correlation(out, reference) > 0.8


def test_specks_of_dirt_do_not_move_the_crop(digits) -> None:
    images, _ = digits
    big = np.asarray(Image.fromarray(images[2]).resize((200, 200), Image.Resampling.BICUBIC))
    frame = np.zeros((400, 400), np.uint8)
    frame[100:300, 100:300] = big
    frame[10:13, 380:383] = 255  # a speck far from the digit
    assert correlation(preprocess_image(encode(frame)), to_mnist(images[2])) > 0.9


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty"),
        (b"plain text, not a picture", 415, "not_an_image"),
        (b"%PDF-1.4\n", 415, "not_an_image"),
        (encode(np.zeros((40, 40), np.uint8), "TIFF"), 415, "not_an_image"),  # not allowed
        (encode(np.full((40, 40), 128, np.uint8)), 422, "blank_image"),
    ],
)
def test_bad_pictures_are_refused(data: bytes, status: int, code: str) -> None:
    with pytest.raises(InputError) as info:
        preprocess_image(data)
    assert (info.value.status, info.value.code) == (status, code)


def test_truncated_picture() -> None:
    data = encode(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(InputError) as info:
        preprocess_image(data[: len(data) // 2])
    assert info.value.code == "corrupt_image"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # An 8,000 x 8,000 PNG: 64 megapixels that compress to about 64 kB.
    bomb = _png_bomb(8_000, 8_000)
    assert len(bomb) < 200_000
    with pytest.raises(InputError) as info:
        decode_image(bomb, max_pixels=25_000_000)
    assert info.value.status == 413
    small_limit = encode(np.zeros((100, 100), np.uint8))
    with pytest.raises(InputError, match="more than the limit"):
        decode_image(small_limit, max_pixels=5_000)


def test_validate_array() -> None:
    ok = validate_array([[0.4] * 28] * 27 + [[254.6] * 28])
    assert ok.dtype == np.uint8 and ok[0, 0] == 0 and ok[-1, 0] == 255
    cases = {
        "bad_shape": [[0] * 28] * 27,
        "not_finite": [[float("nan")] * 28] * 28,
        "out_of_range": [[-1] * 28] * 28,
    }
    for code, value in cases.items():
        with pytest.raises(InputError) as info:
            validate_array(value)
        assert info.value.code == code
    for value in ("text", None, [[0] * 28] * 27 + [[0] * 27], [["a"] * 28] * 28, 5):
        with pytest.raises(InputError):
            validate_array(value)
    with pytest.raises(InputError, match="infinite"):
        validate_array([[1e400] * 28] * 28)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 120),
    st.integers(1, 120),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["noise", "flat", "dot", "line"]),
)
def test_any_picture_gives_mnist_form_or_a_clear_error(h: int, w: int, seed: int, kind: str):
    rng = np.random.default_rng(seed)
    if kind == "noise":
        grey = rng.integers(0, 256, (h, w)).astype(np.float32)
    elif kind == "flat":
        grey = np.full((h, w), float(rng.integers(0, 256)), np.float32)
    else:
        grey = np.full((h, w), 255.0, np.float32)
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        if kind == "dot":
            grey[y, x] = 0
        else:
            grey[y, :] = 0
    try:
        out = to_mnist(grey)
    except InputError as exc:
        assert exc.code == "blank_image"
        return
    assert out.shape == (28, 28) and out.dtype == np.uint8 and out.max() == 255


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png16(pixels: np.ndarray) -> bytes:
    return _save(Image.fromarray(pixels.astype(np.uint16)), "PNG")


def _png_bomb(width: int, height: int) -> bytes:
    """A valid grey PNG of zeros, built chunk by chunk so it is never held decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + b"\x00" * width
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
