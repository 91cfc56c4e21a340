"""Image augmentation: geometric facts on real digits and synthetic images, checks against
scipy.ndimage as the reference resampler, seeding, noise statistics, and input validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mnistlab
from mnistlab.features.augment import (
    AUGMENT_PRESETS,
    AugmentConfig,
    Augmenter,
    affine,
    augment_batch,
    augment_images,
    elastic,
    elastic_displacement,
    gaussian_noise,
    get_augment_preset,
    rotate,
    salt_pepper,
    scale,
    translate,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SOME = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    """256 real MNIST training digits, uint8 (256, 28, 28)."""
    split = mnistlab.load_dataset("mnist-mini", "train", download=False)
    return torch.from_numpy(split.images[:256].copy())


def _margin_free(images: torch.Tensor, margin: int) -> torch.Tensor:
    """The images whose outer ``margin`` pixels are all background."""
    inner = images[:, margin:-margin, margin:-margin].flatten(1).sum(1)
    return images[inner == images.flatten(1).sum(1)]


@pytest.fixture(scope="module")
def framed(digits: torch.Tensor) -> torch.Tensor:
    """Real digits with a 4-pixel empty border: shifts of up to 3 px keep all their ink."""
    images = _margin_free(digits, 4)
    assert len(images) >= 30
    return images


def com(images: torch.Tensor) -> torch.Tensor:
    """Centre of mass (x, y) in pixel indices, per image: (N, 2) float64."""
    im = images.double()
    h, w = im.shape[-2:]
    xs, ys = torch.arange(w, dtype=im.dtype), torch.arange(h, dtype=im.dtype)
    mass = im.sum((-2, -1))
    return torch.stack([(im.sum(-2) * xs).sum(-1) / mass, (im.sum(-1) * ys).sum(-1) / mass], -1)


def central_moments(images: torch.Tensor) -> torch.Tensor:
    """Second central moments (var_x, var_y) in pixels^2, per image: (N, 2) float64."""
    im = images.double()
    h, w = im.shape[-2:]
    c = com(im)
    xs, ys = torch.arange(w, dtype=im.dtype), torch.arange(h, dtype=im.dtype)
    mass = im.sum((-2, -1))
    vx = (im.sum(-2) * (xs - c[:, :1]) ** 2).sum(-1) / mass
    vy = (im.sum(-1) * (ys - c[:, 1:]) ** 2).sum(-1) / mass
    return torch.stack([vx, vy], -1)


def blob(cx: float, cy: float, sx: float, sy: float, size: int = 40) -> torch.Tensor:
    """A float64 (1, size, size) anisotropic Gaussian blob centred at pixel (cx, cy)."""
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64),
        torch.arange(size, dtype=torch.float64),
        indexing="ij",
    )
    return torch.exp(-0.5 * (((xs - cx) / sx) ** 2 + ((ys - cy) / sy) ** 2))[None]


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """np.roll by (dy, dx) with zero fill instead of wrap-around."""
    out = np.roll(images, (dy, dx), axis=(-2, -1))
    if dy > 0:
        out[..., :dy, :] = 0
    elif dy < 0:
        out[..., dy:, :] = 0
    if dx > 0:
        out[..., :, :dx] = 0
    elif dx < 0:
        out[..., :, dx:] = 0
    return out


def inverse_matrix(degrees: float, factor: float, shear: float) -> np.ndarray:
    """Output-to-input 2x2 matrix in centred (x right, y down) pixel coordinates."""
    a, h = math.radians(degrees), math.radians(shear)
    rotation = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])  # CCW shown
    shear_m = np.array([[1.0, -math.tan(h)], [0.0, 1.0]])  # italic slant
    return np.linalg.inv(factor * rotation @ shear_m)


def scipy_affine(
    image: np.ndarray, degrees: float, dx: float, dy: float, factor: float, shear: float
) -> np.ndarray:
    """Reference: the same warp with scipy.ndimage.affine_transform (bilinear, zero outside)."""
    m = inverse_matrix(degrees, factor, shear)
    m_rc = np.array([[m[1, 1], m[1, 0]], [m[0, 1], m[0, 0]]])  # (row, col) order
    centre = (np.array(image.shape, dtype=float) - 1) / 2
    offset = centre - m_rc @ (centre + np.array([dy, dx]))
    return ndi.affine_transform(
        image.astype(np.float64), m_rc, offset, order=1, mode="grid-constant", cval=0.0
    )


# --- identity -----------------------------------------------------------------------------------


def test_identity_parameters_return_uint8_images_exactly(digits: torch.Tensor) -> None:
    n = len(digits)
    zeros, ones = torch.zeros(n), torch.ones(n)
    assert torch.equal(rotate(digits, 0.0), digits)
    # Tensor parameters go through grid_sample: the identity must still be exact for uint8.
    assert torch.equal(rotate(digits, zeros), digits)
    assert torch.equal(translate(digits, zeros, zeros), digits)
    assert torch.equal(scale(digits, ones), digits)
    assert torch.equal(affine(digits, zeros, zeros, zeros, ones, zeros), digits)
    assert torch.equal(elastic(digits, zeros, 4.0, generator=0), digits)
    assert torch.equal(elastic(digits, 0.0, 4.0, generator=0), digits)
    assert torch.equal(gaussian_noise(digits, zeros, generator=0), digits)
    assert torch.equal(salt_pepper(digits, zeros, generator=0), digits)
    assert torch.equal(augment_batch(digits, "none", 0), digits)
    out = rotate(digits, 0.0)
    assert out.data_ptr() != digits.data_ptr()  # a copy, never the input itself


def test_identity_on_float_images_is_exact_up_to_rounding(digits: torch.Tensor) -> None:
    x = digits.float() / 255
    assert torch.equal(rotate(x, 0.0), x)
    assert (rotate(x, torch.zeros(len(x))) - x).abs().max() < 1e-5


# --- rotation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 27])
def test_rotation_by_90_is_rot90_counter_clockwise(digits: torch.Tensor, size: int) -> None:
    x = digits[:, :size, :size]
    assert torch.equal(rotate(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.equal(rotate(x, -90.0), torch.rot90(x, -1, dims=(-2, -1)))
    assert torch.equal(rotate(x, 180.0), torch.rot90(x, 2, dims=(-2, -1)))
    four = x
    for _ in range(4):
        four = rotate(four, 90.0)
    assert torch.equal(four, x)


def test_positive_angle_moves_a_point_right_of_centre_upwards() -> None:
    x = torch.zeros(1, 29, 29, dtype=torch.uint8)
    x[0, 14, 24] = 255  # 10 px right of the centre pixel (14, 14)
    out = rotate(x, 90.0)
    assert out[0, 4, 14] == 255 and out.sum() == 255  # now 10 px above: counter-clockwise


def test_rotating_back_recovers_the_image(digits: torch.Tensor) -> None:
    b = blob(17.0, 21.0, 3.0, 4.0)
    for angle in (7.0, 30.0, 45.0):
        back = rotate(rotate(b, angle), -angle)
        assert (back - b).abs().max() < 0.05  # two bilinear resamplings of a smooth image
    x = digits.double()
    back = rotate(rotate(x, 30.0), -30.0)
    a = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    r = back.flatten(1) - back.flatten(1).mean(1, keepdim=True)
    correlation = (a * r).sum(1) / (a.norm(dim=1) * r.norm(dim=1))
    assert correlation.min() > 0.9  # sharp strokes blur a little, twice


@pytest.mark.parametrize("angle", [-75.0, 10.0, 33.3, 135.0])
def test_rotation_keeps_mass_and_centre_for_centred_content(angle: float) -> None:
    b = blob(19.5, 19.5, 3.0, 5.0)
    out = rotate(b, angle)
    assert torch.allclose(com(out), com(b), atol=1e-6)
    assert math.isclose(out.sum().item(), b.sum().item(), rel_tol=1e-3)


# --- translation --------------------------------------------------------------------------------


@SOME
@given(dx=st.integers(-6, 6), dy=st.integers(-6, 6))
def test_integer_translation_is_a_pure_shift(digits: torch.Tensor, dx: int, dy: int) -> None:
    expected = shifted(digits.numpy(), dx, dy)
    assert np.array_equal(translate(digits, float(dx), float(dy)).numpy(), expected)
    as_float = translate(digits.double(), dx, dy).numpy()
    np.testing.assert_allclose(as_float, expected, atol=1e-3)


@SOME
@given(dx=st.floats(-3, 3), dy=st.floats(-3, 3))
def test_translation_moves_the_centre_of_mass_exactly(
    framed: torch.Tensor, dx: float, dy: float
) -> None:
    x = framed.double()
    out = translate(x, dx, dy)
    assert torch.allclose(com(out) - com(x), torch.tensor([dx, dy], dtype=torch.float64), atol=1e-5)
    assert torch.allclose(out.sum((-2, -1)), x.sum((-2, -1)), rtol=1e-6)


def test_positive_shifts_move_content_right_and_down() -> None:
    x = torch.zeros(1, 1, 10, 10, dtype=torch.uint8)
    x[0, 0, 5, 5] = 200
    out = translate(x, 2.0, 3.0)
    assert out[0, 0, 8, 7] == 200 and out.sum() == 200


# --- scaling and shear --------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.7, 0.8, 0.9, 1.1, 1.25, 1.4])
def test_scaling_multiplies_moments_by_factor_squared(factor: float) -> None:
    b = blob(15.0, 22.0, 2.5, 3.5)
    out = scale(b, factor)
    centre = (40 - 1) / 2
    # The centre of mass moves away from the image centre by the factor ...
    assert torch.allclose(com(out) - centre, factor * (com(b) - centre), atol=0.02)
    # ... and bilinear interpolation adds a triangle kernel's variance, 1/6 px^2 per axis.
    expected = factor**2 * (central_moments(b) + 1 / 6)
    assert torch.allclose(central_moments(out), expected, rtol=0.015)


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_scaling_real_digits_about_the_centre(framed: torch.Tensor, factor: float) -> None:
    x = framed.double()
    out = scale(x, factor)
    centre = 13.5
    err = (com(out) - centre) - factor * (com(x) - centre)
    assert err.abs().max() < 0.15  # thin strokes alias a little when resampled
    ratio = central_moments(out) / (factor**2 * (central_moments(x) + 1 / 6))
    assert 0.97 < ratio.mean() < 1.03


def test_scale_above_one_enlarges_content(framed: torch.Tensor) -> None:
    ink = (scale(framed, 1.2) > 64).flatten(1).sum(1)
    assert (ink > (framed > 64).flatten(1).sum(1)).float().mean() > 0.9


def test_positive_shear_slants_like_italics() -> None:
    x = torch.zeros(1, 28, 28, dtype=torch.uint8)
    x[0, 4:24, 14] = 255  # a vertical stroke
    out = affine(x, shear=20.0)
    cols = torch.arange(28, dtype=torch.float64)
    top = (out[0, 5].double() * cols).sum() / out[0, 5].double().sum()
    bottom = (out[0, 22].double() * cols).sum() / out[0, 22].double().sum()
    assert top > 14 + 2 and bottom < 14 - 2


@SOME
@given(
    degrees=st.floats(-180, 180),
    dx=st.floats(-4, 4),
    dy=st.floats(-4, 4),
    factor=st.floats(0.6, 1.6),
    shear=st.floats(-30, 30),
    index=st.integers(0, 255),
)
def test_affine_matches_scipy_reference(
    digits: torch.Tensor,
    degrees: float,
    dx: float,
    dy: float,
    factor: float,
    shear: float,
    index: int,
) -> None:
    image = digits[index : index + 1]
    reference = scipy_affine(image[0].numpy(), degrees, dx, dy, factor, shear)
    ours = affine(image.double(), degrees, dx, dy, factor, shear)[0].numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-6)  # grey levels; float64 throughout
    rounded = affine(image, degrees, dx, dy, factor, shear)[0].numpy().astype(np.float64)
    np.testing.assert_allclose(rounded, reference, atol=0.5 + 0.05)  # float32 grid, then rounded


def test_affine_on_a_non_square_image_matches_scipy() -> None:
    image = torch.rand(1, 20, 33, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for params in [(30.0, 1.5, -2.0, 1.2, 10.0), (90.0, 0.0, 0.0, 1.0, 0.0)]:
        ours = affine(image, *params)[0].numpy()
        np.testing.assert_allclose(ours, scipy_affine(image[0].numpy(), *params), atol=1e-5)


def test_affine_resamples_once(framed: torch.Tensor) -> None:
    x = framed.double()
    fused = affine(x, degrees=20.0, dx=1.5, factor=1.1)
    chained = translate(scale(rotate(x, 20.0), 1.1), 1.5, 0.0)
    # The same geometry: the two agree on where ink is, but chaining blurs three times.
    assert torch.allclose(com(fused), com(chained), atol=0.1)
    assert (fused**2).sum() > 1.05 * (chained**2).sum()


# --- per-sample parameters, layouts, dtypes, devices, sizes -------------------------------------


def test_per_sample_parameters_apply_per_sample(digits: torch.Tensor) -> None:
    x = digits[:5]
    degrees = torch.tensor([0.0, 90.0, -33.0, 180.0, 12.5])
    dx = torch.tensor([0.0, 1.0, -2.5, 0.0, 3.0])
    factor = torch.tensor([1.0, 0.8, 1.2, 1.0, 1.1])
    batch = affine(x, degrees=degrees, dx=dx, factor=factor)
    for i in range(5):
        one = affine(x[i : i + 1], float(degrees[i]), float(dx[i]), 0.0, float(factor[i]))
        assert torch.equal(batch[i : i + 1], one)
    alpha = torch.tensor([0.0, 34.0, 0.0, 34.0, 0.0])
    warped = elastic(x, alpha, 4.0, generator=0)
    assert torch.equal(warped[alpha == 0], x[alpha == 0])
    assert not torch.equal(warped[alpha > 0], x[alpha > 0])
    std = torch.tensor([0.0, 0.1, 0.0, 0.1, 0.0])
    noisy = gaussian_noise(x, std, generator=0)
    assert torch.equal(noisy[std == 0], x[std == 0])
    assert not torch.equal(noisy[std > 0], x[std > 0])


def test_layouts_and_dtypes_are_kept(digits: torch.Tensor) -> None:
    x = digits[:8]
    flat = rotate(x, 15.0)
    assert flat.shape == x.shape and flat.dtype == torch.uint8
    chan = rotate(x[:, None], 15.0)
    assert chan.shape == (8, 1, 28, 28) and torch.equal(chan[:, 0], flat)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        out = rotate(x.to(dtype) / 255, 15.0)
        assert out.dtype == dtype
        assert (out.double() * 255 - flat.double()).abs().max() < 2  # half precision rounds
    rgb = torch.rand(2, 3, 12, 12)
    out = affine(rgb, 90.0)
    assert torch.allclose(out, torch.rot90(rgb, 1, dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_batches(n: int, digits: torch.Tensor) -> None:
    x = digits[:n]
    config = get_augment_preset("mnist-sota")
    noisy = AugmentConfig(noise_std=0.1, salt_pepper=0.05)
    for out in (
        rotate(x, 10.0),
        translate(x, torch.ones(n), torch.ones(n)),
        scale(x, 1.1),
        affine(x, 5.0, 1.0, 1.0, 0.9, 3.0),
        elastic(x, 34.0, 4.0, generator=0),
        gaussian_noise(x, 0.1, generator=0),
        salt_pepper(x, 0.1, generator=0),
        augment_batch(x, config, 0),
        augment_batch(x, noisy, 0),
    ):
        assert out.shape == x.shape and out.dtype == torch.uint8
    assert augment_images(x.numpy(), config).shape == (n, 28, 28)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator(digits: torch.Tensor) -> None:
    config = get_augment_preset("mnist-sota")
    cpu = augment_batch(digits, config, torch.Generator().manual_seed(3))
    cuda = augment_batch(digits.cuda(), config, torch.Generator().manual_seed(3))
    assert cuda.device.type == "cuda" and cuda.dtype == torch.uint8
    assert (cuda.cpu().int() - cpu.int()).abs().max() <= 1
    fast = augment_batch(digits.cuda(), config, torch.Generator("cuda").manual_seed(3))
    assert torch.equal(fast, augment_batch(digits.cuda(), config, 3))


# --- elastic ------------------------------------------------------------------------------------


def test_elastic_field_is_smoothed_uniform_noise_as_in_simard() -> None:
    n, h, w, sigma = 3, 28, 31, 4.0
    gen = torch.Generator().manual_seed(5)
    noise = (torch.rand((n, 2, h, w), generator=gen) * 2 - 1).double().numpy()
    field = elastic_displacement(n, h, w, 34.0, sigma, generator=5).double().numpy()
    for i in range(n):
        for axis in range(2):
            reference = 34.0 * ndi.gaussian_filter(noise[i, axis], sigma, mode="constant")
            np.testing.assert_allclose(field[i, axis], reference, atol=1e-5)


def test_elastic_field_scales_with_alpha_and_has_the_expected_size() -> None:
    one = elastic_displacement(500, 28, 28, 1.0, 4.0, generator=0)
    assert torch.allclose(elastic_displacement(500, 28, 28, 34.0, 4.0, generator=0), 34 * one)
    # Smoothed U[-1, 1]: std = sqrt(1/3 * sum of the squared 2-D kernel) ~ 1/sqrt(12 pi) / sigma.
    rms = (34 * one[:, :, 10:18, 10:18]).pow(2).mean().sqrt().item()
    assert rms == pytest.approx(34 / math.sqrt(12 * math.pi) / 4.0, rel=0.05)


def test_elastic_is_seeded(digits: torch.Tensor) -> None:
    a = elastic(digits, 34.0, 4.0, generator=7)
    assert torch.equal(a, elastic(digits, 34.0, 4.0, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(a, elastic(digits, 34.0, 4.0, generator=8))
    assert not torch.equal(a, digits)
    # Ink is moved around locally (strokes thin and thicken), not destroyed or carried away.
    mass = a.double().sum((-2, -1)) / digits.double().sum((-2, -1))
    assert 0.97 < mass.mean() < 1.03
    assert (com(a) - com(digits)).abs().mean() < 1.0


def test_affine_and_elastic_are_fused_in_the_documented_order(digits: torch.Tensor) -> None:
    """augment_batch samples the input at A^-1 (p + d(p)): affine first, then elastic."""
    cfg = AugmentConfig(
        rotate_degrees=20, translate_px=2, scale_range=(0.9, 1.1), shear_degrees=10,
        elastic_alpha=30, elastic_sigma=5,
    )  # fmt: skip
    x = digits[:16].double()
    n = len(x)
    out = augment_batch(x, cfg, 11).numpy()
    gen = torch.Generator().manual_seed(11)
    u = torch.rand((n, 6), generator=gen).double().numpy()
    on = torch.rand((n,), generator=gen) < cfg.elastic_p
    field = elastic_displacement(n, 28, 28, cfg.elastic_alpha * on.float(), 5.0, gen).double()
    rows, cols = np.meshgrid(np.arange(28.0), np.arange(28.0), indexing="ij")
    for i in range(n):
        degrees, dx, dy = (2 * u[i, :3] - 1) * [20, 2, 2]
        factor, shear = 0.9 + 0.2 * u[i, 3], (2 * u[i, 4] - 1) * 10
        m = inverse_matrix(degrees, factor, shear)
        px = cols - 13.5 + field[i, 0].numpy() - dx  # displaced output point, minus the shift
        py = rows - 13.5 + field[i, 1].numpy() - dy
        src_x, src_y = m[0, 0] * px + m[0, 1] * py + 13.5, m[1, 0] * px + m[1, 1] * py + 13.5
        reference = ndi.map_coordinates(
            x[i].numpy(), [src_y, src_x], order=1, mode="grid-constant", cval=0.0
        )
        np.testing.assert_allclose(out[i], reference, atol=0.05)


# --- noise --------------------------------------------------------------------------------------


def test_gaussian_noise_has_the_requested_std() -> None:
    grey = torch.full((64, 28, 28), 128, dtype=torch.uint8)
    out = gaussian_noise(grey, 0.05, generator=0)
    diff = out.double() - 128
    assert diff.std().item() == pytest.approx(0.05 * 255, rel=0.02)
    assert abs(diff.mean().item()) < 0.1
    half = torch.full((64, 28, 28), 0.5)
    noisy = gaussian_noise(half, 0.1, generator=0)
    assert (noisy - 0.5).std().item() == pytest.approx(0.1, rel=0.02)


def test_noise_clamps_to_the_full_scale() -> None:
    white = torch.full((16, 28, 28), 255, dtype=torch.uint8)
    out = gaussian_noise(white, 0.2, generator=0)
    assert out.dtype == torch.uint8 and out.max() == 255
    assert 0.45 < (out == 255).double().mean() < 0.6  # the upper half of the noise is clipped
    black = gaussian_noise(torch.zeros(16, 28, 28, dtype=torch.uint8), 0.2, generator=0)
    assert black.min() == 0 and 0.45 < (black == 0).double().mean() < 0.6
    ones = torch.ones(16, 28, 28)
    assert gaussian_noise(ones, 0.2, generator=0).max() == 1.0
    assert gaussian_noise(ones, 0.2, generator=0, clamp=False).max() > 1.0


def test_salt_and_pepper() -> None:
    grey = torch.full((32, 28, 28), 100, dtype=torch.uint8)
    out = salt_pepper(grey, 0.1, generator=0)
    assert (out != 100).double().mean().item() == pytest.approx(0.1, abs=0.01)
    assert (out == 0).double().mean().item() == pytest.approx(0.05, abs=0.01)
    assert (out == 255).double().mean().item() == pytest.approx(0.05, abs=0.01)
    assert set(out.unique().tolist()) == {0, 100, 255}
    floats = salt_pepper(torch.full((4, 28, 28), 0.4), 0.5, generator=0)
    assert floats.unique().tolist() == pytest.approx([0.0, 0.4, 1.0])


# --- random augmentation: seeding, probabilities, presets ---------------------------------------


def test_same_seed_same_batch_different_seed_different(digits: torch.Tensor) -> None:
    config = get_augment_preset("mnist-sota")
    a = augment_batch(digits, config, torch.Generator().manual_seed(0))
    assert torch.equal(a, augment_batch(digits, config, torch.Generator().manual_seed(0)))
    assert torch.equal(a, augment_batch(digits, config, 0))  # an int seed is a fresh generator
    assert not torch.equal(a, augment_batch(digits, config, 1))
    gen = torch.Generator().manual_seed(0)
    first, second = augment_batch(digits, config, gen), augment_batch(digits, config, gen)
    assert torch.equal(first, a) and not torch.equal(first, second)  # the generator advances
    with torch.random.fork_rng():  # None: torch's global random state
        torch.manual_seed(123)
        c = augment_batch(digits, config)
        torch.manual_seed(123)
        assert torch.equal(c, augment_batch(digits, config))


def test_augmenter_replays_a_sequence_of_batches(digits: torch.Tensor) -> None:
    batches = [digits[:64], digits[64:128], digits[128:]]
    first = Augmenter("light", seed=4)
    seq1 = [first(b) for b in batches]
    second = Augmenter(AUGMENT_PRESETS["light"], seed=4)
    assert all(torch.equal(a, second(b)) for a, b in zip(seq1, batches, strict=True))
    assert torch.equal(seq1[0], augment_batch(batches[0], "light", 4))
    # The generator advances: the second batch is not augmented like a first one.
    assert not torch.equal(seq1[1], Augmenter("light", seed=4)(batches[1]))
    assert "seed=4" in repr(first)


def test_probabilities_choose_images(digits: torch.Tensor) -> None:
    off = AugmentConfig(rotate_degrees=30, translate_px=3, affine_p=0.0)
    assert torch.equal(augment_batch(digits, off, 0), digits)
    half = AugmentConfig(rotate_degrees=30, translate_px=3, affine_p=0.5)
    unchanged = (augment_batch(digits, half, 0) == digits).flatten(1).all(1).double().mean()
    assert 0.35 < unchanged < 0.65
    noisy = AugmentConfig(noise_std=0.1, noise_p=0.25)
    unchanged = (augment_batch(digits, noisy, 0) == digits).flatten(1).all(1).double().mean()
    assert 0.6 < unchanged < 0.9


def test_augment_batch_ranges_are_respected(framed: torch.Tensor) -> None:
    x = framed.double()
    shift = AugmentConfig(translate_px=2.0)
    moved = com(augment_batch(x, shift, 0)) - com(x)
    assert moved.abs().max() <= 2.0 + 1e-6 and moved.abs().max() > 1.5
    assert moved.std(0).min() > 0.8  # ~ U[-2, 2] (std 1.15) in each axis


def test_presets_are_valid_and_round_trip_through_json(digits: torch.Tensor) -> None:
    assert {"none", "light", "mnist-sota"} <= set(AUGMENT_PRESETS)
    for name, config in AUGMENT_PRESETS.items():
        data = json.loads(json.dumps(config.to_dict()))
        assert AugmentConfig.from_dict(data) == config
        out = augment_batch(digits, name, 0)
        assert out.shape == digits.shape and out.dtype == torch.uint8
        if name != "none":
            assert not torch.equal(out, digits)
    assert get_augment_preset("light").rotate_degrees == 10
    assert AugmentConfig(scale_range=[0.9, 1.1]).scale_range == (0.9, 1.1)  # type: ignore[arg-type]


def test_numpy_scalars_are_numbers(digits: torch.Tensor) -> None:
    assert torch.equal(rotate(digits, np.float32(90)), rotate(digits, 90.0))
    assert torch.equal(elastic(digits, np.float64(34), np.float32(4), 0), elastic(digits, 34, 4, 0))


def test_augment_images_numpy(digits: torch.Tensor) -> None:
    images = digits.numpy()
    out = augment_images(images, "mnist-sota", seed=3)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(out, augment_images(images, "mnist-sota", seed=3))
    assert not np.array_equal(out, augment_images(images, "mnist-sota", seed=4))
    assert np.array_equal(out, augment_batch(digits, "mnist-sota", 3).numpy())  # one batch
    chunked = augment_images(images, "mnist-sota", seed=3, batch_size=100)
    assert chunked.shape == images.shape and np.array_equal(
        chunked[:100], augment_batch(digits[:100], "mnist-sota", 3).numpy()
    )
    assert np.array_equal(augment_images(images, "none"), images)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: scale(x, 0.0), "factor must be > 0"),
        (lambda x: scale(x, -1.0), "factor must be > 0"),
        (lambda x: rotate(x, float("nan")), "degrees must be finite"),
        (lambda x: rotate(x, torch.zeros(3)), r"shape \(4,\)"),
        (lambda x: translate(x, torch.zeros(2, 2), 0.0), r"shape \(4,\)"),
        (lambda x: rotate(x, "10"), "must be a number"),
        (lambda x: affine(x, shear=90.0), r"shear must be in \(-90, 90\)"),
        (lambda x: elastic(x, 34.0, 0.0), "sigma must be"),
        (lambda x: elastic(x, -1.0, 4.0), "alpha must be >= 0"),
        (lambda x: gaussian_noise(x, -0.1), "std must be >= 0"),
        (lambda x: salt_pepper(x, 1.5), r"amount must be in \[0, 1\]"),
        (lambda x: rotate(x[0], 10.0), r"shape \(N, H, W\) or \(N, C, H, W\)"),
        (lambda x: rotate(x.int(), 10.0), "uint8 or floating point"),
        (lambda x: augment_batch(x, "heavy"), "unknown augmentation preset 'heavy'.*light"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message: str) -> None:
    x = torch.zeros(4, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match=message):
        call(x)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"scale_range": (1.1, 0.9)}, "0 < low <= high"),
        ({"scale_range": (0.0, 1.0)}, "0 < low <= high"),
        ({"scale_range": (1.0,)}, r"\(low, high\)"),
        ({"rotate_degrees": -5.0}, r"rotate_degrees must be in \[0, 180\]"),
        ({"rotate_degrees": 200.0}, r"rotate_degrees must be in \[0, 180\]"),
        ({"translate_px": -1.0}, "translate_px must be >= 0"),
        ({"shear_degrees": 90.0}, "shear_degrees"),
        ({"elastic_sigma": 0.0}, "elastic_sigma must be > 0"),
        ({"noise_std": float("nan")}, "finite"),
        ({"affine_p": 1.5}, r"affine_p must be in \[0, 1\]"),
        ({"salt_pepper": -0.1}, r"salt_pepper must be in \[0, 1\]"),
    ],
)
def test_bad_config_raises_clear_errors(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**fields)
    with pytest.raises(ValueError, match="unknown AugmentConfig fields: rotate"):
        AugmentConfig.from_dict({"rotate": 10})


def test_non_tensor_inputs_are_refused() -> None:
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        rotate(np.zeros((1, 28, 28), dtype=np.uint8), 10.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="numpy array"):
        augment_images(torch.zeros(1, 28, 28, dtype=torch.uint8), "light")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        gaussian_noise(torch.zeros(1, 28, 28), 0.1, generator="seed")  # type: ignore[arg-type]


def test_a_low_resolution_scan_blurs_keeps_the_peak_and_is_seeded(digits: torch.Tensor) -> None:
    x = digits[:16]
    coarse = augment_batch(x, {"lowres_p": 1.0, "lowres_sides": [10, 10]}, 0)
    fine = augment_batch(x, {"lowres_p": 1.0, "lowres_sides": [27, 27]}, 0)
    assert coarse.dtype == torch.uint8 and coarse.shape == x.shape
    # the brightest level is kept; a coarse grid moves ink much further than a fine one
    assert torch.equal(coarse.flatten(1).amax(1), x.flatten(1).amax(1))
    far = (coarse.float() - x.float()).abs().mean()
    near = (fine.float() - x.float()).abs().mean()
    assert far > 2 * near > 0
    # soft strokes: much less change from one pixel to the next than in the scan it came from

    def variation(images: torch.Tensor) -> float:
        f = images.float()
        return float((f[:, 1:] - f[:, :-1]).abs().sum() + (f[:, :, 1:] - f[:, :, :-1]).abs().sum())

    assert variation(coarse) < 0.75 * variation(x)
    assert torch.equal(coarse, augment_batch(x, {"lowres_p": 1.0, "lowres_sides": [10, 10]}, 0))
    half = augment_batch(x, {"lowres_p": 0.5, "lowres_sides": [9, 20]}, 1)
    unchanged = (half == x).flatten(1).all(1)
    assert 0 < int(unchanged.sum()) < len(x)
    with pytest.raises(ValueError, match="lowres_sides"):
        AugmentConfig(lowres_p=0.5, lowres_sides=(12, 8))
    with pytest.raises(ValueError, match="lowres_p"):
        AugmentConfig(lowres_p=1.5)
    assert AugmentConfig.from_dict(get_augment_preset("handwriting").to_dict()) == (
        get_augment_preset("handwriting")
    )
