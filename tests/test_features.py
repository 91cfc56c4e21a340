"""Image transformers: scikit-learn conformance, behaviour on real MNIST (mnist-mini), and
agreement with reference implementations (scipy.ndimage, plain per-pixel loops)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from mnistlab.features import (
    Deskewer,
    Flattener,
    GradientFeatures,
    HOGFeatures,
    PixelScaler,
    ShapeFeatures,
    Standardizer,
    image_moments,
)

SPATIAL = (Deskewer, HOGFeatures, GradientFeatures, ShapeFeatures)

# The parameters let the spatial transformers run on the 2 x 2 "images" (4 features) that some
# checks use (iris); the other checks use 2, 3, 5 or 10 features, which are not square images.
CHECKED = [
    PixelScaler(),
    PixelScaler(dtype="float64"),
    Standardizer(),
    Standardizer(mode="pixel"),
    Flattener(),
    Deskewer(),
    HOGFeatures(cell=1, block=1),
    GradientFeatures(pool=1),
    ShapeFeatures(),
]

_COVERED_BY = {
    "check_dict_unchanged": "test_spatial_transform_leaves_state_alone",
    "check_dont_overwrite_parameters": "test_spatial_transform_leaves_state_alone",
    "check_estimators_overwrite_params": "test_spatial_transform_leaves_state_alone",
    "check_dtype_object": "test_spatial_accepts_dtypes_and_layouts",
    "check_estimators_dtypes": "test_spatial_accepts_dtypes_and_layouts",
    "check_f_contiguous_array_estimator": "test_spatial_accepts_dtypes_and_layouts",
    "check_readonly_memmap_input": "test_spatial_accepts_dtypes_and_layouts",
    "check_transformer_data_not_an_array": "test_spatial_accepts_dtypes_and_layouts",
    "check_transformer_preserve_dtypes": "test_spatial_accepts_dtypes_and_layouts",
    "check_estimators_fit_returns_self": "test_spatial_fit_contract",
    "check_fit_check_is_fitted": "test_spatial_fit_contract",
    "check_fit_score_takes_y": "test_spatial_fit_contract",
    "check_fit2d_1sample": "test_spatial_fit_contract",
    "check_fit_idempotent": "test_spatial_fit_contract",
    "check_transformer_general": "test_spatial_fit_contract",
    "check_estimators_pickle": "test_spatial_fit_contract",
    "check_pipeline_consistency": "test_spatial_fit_contract",
    "check_n_features_in": "test_spatial_rejects_bad_input",
    "check_fit2d_predict1d": "test_spatial_rejects_bad_input",
    "check_estimators_nan_inf": "test_spatial_rejects_bad_input",
    "check_methods_sample_order_invariance": "test_spatial_rows_are_independent",
    "check_methods_subset_invariance": "test_spatial_rows_are_independent",
}


def _expected_failed_checks(estimator) -> dict[str, str]:
    if not isinstance(estimator, SPATIAL):
        return {}
    return {
        check: f"needs square images but the check's data has 2, 3, 5 or 10 features; {test} "
        "covers the same contract on MNIST images"
        for check, test in _COVERED_BY.items()
    }


def _check_name(check) -> str:
    return getattr(getattr(check, "func", check), "__name__", str(check))


# The array-API checks do not apply: these transformers take numpy arrays only (documented),
# and scikit-learn would skip them anyway without SCIPY_ARRAY_API; leave them out rather than
# report skips.
_ALL_CHECKS = parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failed_checks)
_CHECKS = [
    p
    for p in _ALL_CHECKS.args[1]
    if "array_api" not in _check_name(p.values[1] if hasattr(p, "values") else p[1])
]


@pytest.mark.parametrize(_ALL_CHECKS.args[0], _CHECKS, **_ALL_CHECKS.kwargs)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# --- the contracts of the sklearn checks, on square images ------------------------------------

SPATIAL_DEFAULTS = [
    Deskewer(),
    HOGFeatures(),
    HOGFeatures(cell=7),
    GradientFeatures(),
    ShapeFeatures(),
]
ALL_DEFAULTS = [PixelScaler(), Standardizer(), Standardizer(mode="pixel"), *SPATIAL_DEFAULTS]


def _ids(estimators) -> list[str]:
    return [repr(e) for e in estimators]


@pytest.fixture(scope="module")
def images(mini) -> np.ndarray:
    return mini["train"].images[:64]


@pytest.mark.parametrize("estimator", SPATIAL_DEFAULTS, ids=_ids(SPATIAL_DEFAULTS))
def test_spatial_fit_contract(estimator, images):
    est = clone(estimator)
    with pytest.raises(NotFittedError):
        est.transform(images)
    assert est.fit(images, np.zeros(len(images))) is est
    check_is_fitted(est)
    assert est.n_features_in_ == 784 and est.image_side_ == 28
    out = est.transform(images)
    assert out.dtype == np.float32 and out.ndim == 2 and len(out) == len(images)
    assert len(est.get_feature_names_out()) == out.shape[1]
    np.testing.assert_array_equal(clone(estimator).fit_transform(images), out)
    np.testing.assert_array_equal(est.fit(images).transform(images), out)  # idempotent fit
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).transform(images), out)
    np.testing.assert_array_equal(make_pipeline(clone(estimator)).fit_transform(images), out)
    one = clone(estimator).fit(images[:1])
    np.testing.assert_array_equal(one.transform(images), out)


@pytest.mark.parametrize("estimator", SPATIAL_DEFAULTS, ids=_ids(SPATIAL_DEFAULTS))
def test_spatial_transform_leaves_state_alone(estimator, images):
    est = clone(estimator)
    params = est.get_params()
    est.fit(images)
    assert est.get_params() == params
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(est).items()}
    before = images.copy()
    est.transform(images)
    np.testing.assert_array_equal(images, before)
    assert vars(est).keys() == state.keys()
    for key, value in vars(est).items():
        np.testing.assert_array_equal(value, state[key])


@pytest.mark.parametrize("estimator", SPATIAL_DEFAULTS, ids=_ids(SPATIAL_DEFAULTS))
def test_spatial_accepts_dtypes_and_layouts(estimator, images):
    est = clone(estimator).fit(images)
    ref = est.transform(images)
    flat = images.reshape(len(images), -1)
    readonly = images.astype(np.float64)
    readonly.setflags(write=False)
    variants = {
        "flat": flat,
        "float32": images.astype(np.float32),
        "float64": readonly,
        "int64": images.astype(np.int64),
        "object": images.astype(object),
        "fortran": np.asfortranarray(flat),
        "list": images.tolist(),
    }
    for name, X in variants.items():
        out = est.transform(X)
        assert out.dtype == np.float32, name
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError):
        est.transform(np.full(images.shape, "x"))


@pytest.mark.parametrize("estimator", SPATIAL_DEFAULTS, ids=_ids(SPATIAL_DEFAULTS))
def test_spatial_rejects_bad_input(estimator, images):
    with pytest.raises(ValueError, match="square"):
        clone(estimator).fit(np.zeros((4, 30)))
    est = clone(estimator).fit(images)
    with pytest.raises(ValueError, match="features"):
        est.transform(np.zeros((4, 27, 27)))
    with pytest.raises(ValueError):
        est.transform(images[0].ravel())
    for bad in (np.nan, np.inf):
        broken = images.astype(np.float64)
        broken[3, 10, 10] = bad
        with pytest.raises(ValueError):
            est.transform(broken)


@pytest.mark.parametrize("estimator", SPATIAL_DEFAULTS, ids=_ids(SPATIAL_DEFAULTS))
def test_spatial_rows_are_independent(estimator, images):
    est = clone(estimator).fit(images)
    out = est.transform(images)
    order = np.random.default_rng(0).permutation(len(images))
    np.testing.assert_array_equal(est.transform(images[order]), out[order])
    for i in (0, 17, 63):
        np.testing.assert_array_equal(est.transform(images[i : i + 1]), out[i : i + 1])


@pytest.mark.parametrize("estimator", ALL_DEFAULTS, ids=_ids(ALL_DEFAULTS))
def test_fitted_state_is_arrays_and_scalars(estimator, images):
    """A generic serializer saves fitted state from ``__dict__``: nothing else may be there."""
    est = clone(estimator).fit(images)

    def plain(value) -> bool:
        if isinstance(value, tuple | list):
            return all(plain(v) for v in value)
        return isinstance(value, np.ndarray | np.generic | int | float | str | bool)

    for key, value in vars(est).items():
        assert plain(value), f"{type(est).__name__}.{key} is a {type(value).__name__}"


def test_large_batches_are_chunked_identically(mini):
    images = mini["train"].images[:4500]  # more than one 2048-image block
    for est in (Deskewer(), HOGFeatures(), GradientFeatures(), ShapeFeatures()):
        est.fit(images)
        whole = est.transform(images)
        parts = np.concatenate([est.transform(images[i : i + 1000]) for i in range(0, 4500, 1000)])
        np.testing.assert_array_equal(whole, parts)


# --- pixel-wise transformers ------------------------------------------------------------------


def test_pixel_scaler_range(mini):
    images = mini["train"].images
    out = PixelScaler().fit(images).transform(images)
    assert out.shape == (len(images), 784) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, images.reshape(len(images), -1) / 255.0, rtol=1e-6)
    assert list(PixelScaler().fit(images).get_feature_names_out()[:2]) == ["x0", "x1"]
    double = PixelScaler(dtype="float64").fit(images).transform(images)
    assert double.dtype == np.float64
    np.testing.assert_array_equal(double, images.reshape(len(images), -1) / 255.0)
    with pytest.raises(ValueError, match="dtype"):
        PixelScaler(dtype="float16").fit(images)


def test_flattener_keeps_dtype_and_shape(mini):
    images = mini["train"].images
    out = Flattener().fit_transform(images)
    assert out.dtype == np.uint8 and out.shape == (len(images), 784)
    np.testing.assert_array_equal(out[5], images[5].ravel())
    rect = np.zeros((3, 4, 7), dtype=np.float32)  # any image shape: only reshaped
    assert Flattener().fit_transform(rect).shape == (3, 28)


def test_standardizer_statistics_from_training_data(mini):
    train = mini["train"].images.reshape(-1, 784).astype(np.float64)
    test = mini["test"].images.reshape(-1, 784).astype(np.float64)

    glob = Standardizer().fit(mini["train"].images)
    np.testing.assert_allclose(glob.mean_, [train.mean()], rtol=1e-10)
    np.testing.assert_allclose(glob.scale_, [train.std()], rtol=1e-10)
    out = glob.transform(mini["train"].images)
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-4

    pixel = Standardizer(mode="pixel").fit(mini["train"].images)
    std = train.std(axis=0)
    constant = std == 0
    assert constant.any()  # MNIST has pixels that are always background
    np.testing.assert_allclose(pixel.mean_, train.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(pixel.scale_[constant], 1.0)
    np.testing.assert_allclose(pixel.scale_[~constant], std[~constant], rtol=1e-10)
    out = pixel.transform(mini["train"].images)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, ~constant].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out[:, ~constant].std(axis=0), 1, atol=1e-3)

    # The test split is standardized with the training statistics, whatever the batch.
    expected = (test - train.mean(axis=0)) / np.where(constant, 1.0, std)
    out_test = pixel.transform(mini["test"].images)
    np.testing.assert_allclose(out_test, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(pixel.transform(mini["test"].images[:10]), out_test[:10])
    refit = Standardizer(mode="pixel").fit(mini["test"].images)
    assert not np.allclose(refit.mean_, pixel.mean_)


def test_standardizer_rejects_bad_parameters(images):
    with pytest.raises(ValueError, match="mode"):
        Standardizer(mode="channel").fit(images)
    with pytest.raises(ValueError, match="eps"):
        Standardizer(eps=-1).fit(images)


# --- Deskewer ---------------------------------------------------------------------------------


def _skew(images: np.ndarray) -> np.ndarray:
    m = image_moments(images)
    return m["mu11"] / m["mu02"]


def test_deskew_straightens_real_digits(mini):
    images = mini["train"].images
    out = Deskewer().fit(images).transform(images)
    assert out.shape == (len(images), 784) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255  # the input's scale; no overshoot
    deskewed = out.reshape(-1, 28, 28)
    before, after = np.abs(_skew(images)).mean(), np.abs(_skew(deskewed)).mean()
    assert before > 0.15  # handwriting slants
    assert after < 0.01 * before
    m0, m1 = image_moments(images), image_moments(deskewed)
    shift = np.hypot(m1["cy"] - m0["cy"], m1["cx"] - m0["cx"])
    assert shift.max() < 0.5
    # The shear moves ink near the border out of the frame only rarely.
    np.testing.assert_allclose(m1["mass"], m0["mass"], rtol=0.05)


def test_deskew_matches_scipy_affine_transform(mini):
    ndimage = pytest.importorskip("scipy.ndimage")
    images = mini["train"].images[:200]
    out = Deskewer().fit(images).transform(images).reshape(-1, 28, 28)
    m = image_moments(images)
    for i, image in enumerate(images):
        alpha = m["mu11"][i] / m["mu02"][i]
        # Output (y, x) samples the input at (y, alpha * y + x - alpha * cy).
        ref = ndimage.affine_transform(
            image.astype(np.float64),
            np.array([[1.0, 0.0], [alpha, 1.0]]),
            offset=(0.0, -alpha * m["cy"][i]),
            order=1,
            mode="grid-constant",
        )
        np.testing.assert_allclose(out[i], ref, atol=1e-3)


def test_deskew_of_symmetric_upright_image_is_identity():
    yy, xx = np.mgrid[:28, :28]
    radius = np.hypot((yy - 13.5) / 9, (xx - 13.5) / 6)
    ring = np.clip(1 - np.abs(radius - 0.8) * 4, 0, 1) * 255  # an upright "0"
    out = Deskewer().fit_transform(ring[None])
    np.testing.assert_allclose(out.reshape(28, 28), ring, atol=1e-3)


def _bar(slope: float, centre: float = 14.0) -> np.ndarray:
    """An anti-aliased bar, 3 px wide, rows 4..23, along x = centre + slope * (y - 13.5)."""
    yy, xx = np.mgrid[:28, :28].astype(np.float64)
    distance = np.abs(xx - (centre + slope * (yy - 13.5)))
    image = np.clip(2 - distance, 0, 1) * 255
    image[:4] = image[24:] = 0
    return image


def test_deskew_straightens_a_sheared_bar():
    sheared = _bar(slope=0.5)
    assert abs(_skew(sheared[None])[0] - 0.5) < 0.01
    out = Deskewer().fit_transform(sheared[None]).reshape(28, 28)
    assert abs(_skew(out[None])[0]) < 0.01
    # Every row of the bar is now centred on the same column as the whole bar.
    cx = image_moments(sheared[None])["cx"][0]
    rows = out[4:24]
    row_centres = rows @ np.arange(28) / rows.sum(axis=1)
    np.testing.assert_allclose(row_centres, cx, atol=0.05)
    np.testing.assert_allclose(out.sum(), sheared.sum(), rtol=1e-3)
    # The ink is within the bar's half-width (2 px) plus one pixel of interpolation blur.
    far = np.abs(np.arange(28) - cx) > 3
    assert (sheared[:, far] > 0).any()
    np.testing.assert_array_equal(out[:, far], 0)


def test_deskew_leaves_empty_and_flat_images_alone():
    empty = np.zeros((1, 28, 28))
    line = np.zeros((1, 28, 28))
    line[0, 14, 5:20] = 255  # horizontal stroke: no vertical extent to shear along
    for image in (empty, line):
        np.testing.assert_array_equal(Deskewer().fit_transform(image).reshape(1, 28, 28), image)


def test_deskew_needs_non_negative_intensities():
    with pytest.raises(ValueError, match="Negative values"):
        Deskewer().fit(-np.ones((2, 784)))


# --- HOG and gradient features ----------------------------------------------------------------


def _hog_reference(image: np.ndarray, cell: int, bins: int, block: int) -> np.ndarray:
    """Plain per-pixel HOG with the same conventions, in float64."""
    padded = np.pad(image.astype(np.float64), 1)
    cells = image.shape[0] // cell
    hist = np.zeros((cells, cells, bins))
    for r in range(cells * cell):
        for c in range(cells * cell):
            gx = (padded[r + 1, c + 2] - padded[r + 1, c]) / 2
            gy = (padded[r + 2, c + 1] - padded[r, c + 1]) / 2
            magnitude = math.hypot(gx, gy)
            if magnitude == 0:
                continue
            position = (math.degrees(math.atan2(gy, gx)) % 180) / (180 / bins)
            lower = math.floor(position)
            frac = position - lower
            hist[r // cell, c // cell, lower % bins] += (1 - frac) * magnitude
            hist[r // cell, c // cell, (lower + 1) % bins] += frac * magnitude
    out = []
    for br in range(cells - block + 1):
        for bc in range(cells - block + 1):
            v = hist[br : br + block, bc : bc + block].ravel()
            v = v / math.sqrt((v**2).sum() + 1e-12)
            v = np.minimum(v, 0.2)
            out.append(v / math.sqrt((v**2).sum() + 1e-12))
    return np.concatenate(out)


@pytest.mark.parametrize(("cell", "bins", "block"), [(4, 9, 2), (7, 9, 2), (5, 6, 1), (3, 4, 3)])
def test_hog_matches_per_pixel_reference(mini, cell, bins, block):
    images = mini["train"].images[:3]
    hog = HOGFeatures(cell=cell, bins=bins, block=block).fit(images)
    out = hog.transform(images)
    cells = 28 // cell
    assert out.shape == (3, (cells - block + 1) ** 2 * block**2 * bins)
    assert len(hog.get_feature_names_out()) == out.shape[1]
    for image, row in zip(images, out, strict=True):
        np.testing.assert_allclose(row, _hog_reference(image, cell, bins, block), atol=2e-5)


def test_hog_output_sizes_for_mnist(images):
    assert HOGFeatures().fit_transform(images).shape[1] == 1296
    assert HOGFeatures(cell=7).fit_transform(images).shape[1] == 324


def test_hog_of_vertical_edge_is_in_horizontal_gradient_bin():
    image = np.zeros((28, 28))
    image[:, 14:] = 255  # a vertical edge: the gradient points along x, 0 degrees
    out = HOGFeatures(cell=4, bins=9, block=2).fit_transform(image[None])
    blocks = out.reshape(6, 6, 4, 9)
    # Rows of blocks away from the top and bottom border (where the zero padding adds
    # horizontal edges) see only the vertical edges: all their energy is in bin 0.
    interior = blocks[1:5]
    assert interior[..., 0].sum() > 0
    np.testing.assert_allclose(interior[..., 1:], 0, atol=1e-6)
    energy = (blocks**2).sum(axis=(0, 1, 2))
    assert energy.argmax() == 0
    # Transposed: a horizontal edge, 90 degrees, between bins 4 and 5 (centres 80 and 100).
    energy_t = (HOGFeatures().fit_transform(image.T[None]).reshape(6, 6, 4, 9) ** 2).sum(
        axis=(0, 1, 2)
    )
    assert set(np.argsort(energy_t)[-2:]) == {4, 5}


def test_hog_ignores_intensity_scale(images):
    hog = HOGFeatures().fit(images)
    np.testing.assert_allclose(
        hog.transform(images / 255.0), hog.transform(images), rtol=1e-4, atol=1e-5
    )


def test_hog_rejects_bad_geometry(images):
    with pytest.raises(ValueError, match="block"):
        HOGFeatures(cell=7, block=5).fit(images)
    with pytest.raises(ValueError, match="cell"):
        HOGFeatures(cell=0).fit(images)
    with pytest.raises(ValueError, match="bins"):
        HOGFeatures(bins=0).fit(images)


@pytest.mark.parametrize("pool", [4, 7, 5])
def test_gradient_features_match_scipy_sobel(images, pool):
    ndimage = pytest.importorskip("scipy.ndimage")
    est = GradientFeatures(pool=pool).fit(images)
    out = est.transform(images)
    cells = 28 // pool
    assert out.shape == (len(images), 4 * cells * cells)
    names = est.get_feature_names_out()
    assert len(names) == out.shape[1] and names[0] == "gx_pos_r0_c0"
    assert out.min() >= 0
    for image, row in zip(images[:8], out[:8], strict=True):
        image = image.astype(np.float64)
        gx = ndimage.sobel(image, axis=1, mode="constant") / 8
        gy = ndimage.sobel(image, axis=0, mode="constant") / 8
        span = cells * pool
        maps = [np.maximum(g, 0) for g in (gx, -gx, gy, -gy)]
        ref = [m[:span, :span].reshape(cells, pool, cells, pool).mean(axis=(1, 3)) for m in maps]
        np.testing.assert_allclose(row, np.concatenate([r.ravel() for r in ref]), atol=1e-3)


def test_gradient_features_reject_bad_pool(images):
    with pytest.raises(ValueError, match="pool"):
        GradientFeatures(pool=29).fit(images)


# --- ShapeFeatures ----------------------------------------------------------------------------


def test_shape_features_of_rectangles():
    image = np.zeros((2, 28, 28))
    image[0, 5:15, 8:14] = 200  # rows 5..14, columns 8..13: 10 x 6
    image[1, 20:22, 0:28] = 90  # a full-width 2-row band
    est = ShapeFeatures().fit(image)
    out = est.transform(image)
    names = list(est.get_feature_names_out())
    assert names == [
        "ink_area",
        "bbox_top",
        "bbox_left",
        "bbox_height",
        "bbox_width",
        "centroid_row",
        "centroid_col",
        "mu20",
        "mu02",
        "mu11",
        "aspect_ratio",
    ]
    s = 28
    expected = [
        [
            60 / 784,
            5 / s,
            8 / s,
            10 / s,
            6 / s,
            10 / s,
            11 / s,
            35 / 12 / s**2,
            99 / 12 / s**2,
            0,
            0.6,
        ],
        [56 / 784, 20 / s, 0, 2 / s, 1, 21 / s, 14 / s, 783 / 12 / s**2, 0.25 / s**2, 0, 14],
    ]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    # Scale-free: the same features on the [0, 1] scale.
    np.testing.assert_allclose(est.transform(image / 255), out, rtol=1e-5, atol=1e-7)


def test_shape_features_threshold_and_empty_images():
    image = np.zeros((2, 28, 28))
    image[0, 10:12, 10:12] = 255
    image[0, 10:12, 12:14] = 100  # faint: ink at threshold 0.3, not at 0.5
    assert ShapeFeatures(threshold=0.5).fit_transform(image)[0, 4] == pytest.approx(2 / 28)
    assert ShapeFeatures(threshold=0.3).fit_transform(image)[0, 4] == pytest.approx(4 / 28)
    np.testing.assert_array_equal(ShapeFeatures().fit_transform(image)[1], 0)
    with pytest.raises(ValueError, match="threshold"):
        ShapeFeatures(threshold=1.0).fit(image)


def test_shape_features_on_real_digits(mini):
    out = ShapeFeatures().fit_transform(mini["train"].images)
    assert out.shape == (len(mini["train"]), 11) and np.isfinite(out).all()
    names = list(ShapeFeatures().fit(mini["train"].images).get_feature_names_out())
    col = {n: out[:, i] for i, n in enumerate(names)}
    # MNIST digits are centred by centre of mass in a 20 x 20 box inside the 28 x 28 frame.
    np.testing.assert_allclose(np.median(col["centroid_row"]), 0.5, atol=0.03)
    np.testing.assert_allclose(np.median(col["centroid_col"]), 0.5, atol=0.03)
    assert (col["bbox_height"] <= 20 / 28 + 1e-6).all() and (
        col["bbox_width"] <= 20 / 28 + 1e-6
    ).all()
    ones = mini["train"].labels == 1
    assert np.median(col["aspect_ratio"][ones]) < np.median(col["aspect_ratio"][~ones])


# --- pipelines on real data -------------------------------------------------------------------


def test_deskew_pca_logistic_pipeline_accuracy(mini):
    train, test = mini["train"], mini["test"]
    model = Pipeline(
        [
            ("deskew", Deskewer()),
            ("scale", PixelScaler()),
            ("pca", PCA(50, random_state=0)),
            ("classify", LogisticRegression(max_iter=1000)),
        ]
    )
    model.fit(train.images, train.labels)
    accuracy = (model.predict(test.images) == test.labels).mean()
    assert accuracy > 0.92  # measured 0.931 (0.898 without the Deskewer)


def test_pipeline_uses_training_statistics_only(mini):
    train, test = mini["train"], mini["test"]
    model = make_pipeline(Standardizer(mode="pixel"), PCA(20, random_state=0)).fit(train.images)
    scaler = model[0]
    assert scaler.n_features_in_ == 784
    expected = model[1].transform(scaler.transform(test.images))
    np.testing.assert_array_equal(model.transform(test.images), expected)
    # Transforming the test split in pieces gives the same rows: nothing is fitted at transform.
    pieces = np.concatenate(
        [model.transform(test.images[i : i + 100]) for i in range(0, 1000, 100)]
    )
    np.testing.assert_allclose(pieces, expected, rtol=1e-5, atol=1e-5)
