"""Label encodings: one-hot, smoothing, decoding and top-k, as properties and error cases."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnistlab.features import decode, one_hot, smooth_labels, top_k


@st.composite
def labelled(draw) -> tuple[np.ndarray, int]:
    """Integer labels and a class count that covers them."""
    num_classes = draw(st.integers(1, 20))
    n = draw(st.integers(0, 50))
    labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, num_classes - 1)))
    return labels, num_classes


@st.composite
def scores(draw) -> np.ndarray:
    """Score matrices (N, C) with ties likely: values from a small set, in float32 or float64."""
    n = draw(st.integers(1, 30))
    c = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    values = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, -3.0, 7.5])
    return draw(hnp.arrays(dtype, (n, c), elements=values | st.floats(-10, 10, width=32)))


@settings(max_examples=200, deadline=None)
@given(labelled())
def test_one_hot_rows(case):
    labels, num_classes = case
    out = one_hot(labels, num_classes)
    assert out.shape == (len(labels), num_classes) and out.dtype == np.float32
    np.testing.assert_array_equal(out.sum(axis=1), 1)
    assert set(np.unique(out)) <= {0.0, 1.0}
    np.testing.assert_array_equal(decode(out), labels)


@settings(max_examples=200, deadline=None)
@given(labelled(), st.floats(0, 1, exclude_max=True))
def test_smoothing_sums_to_one_and_matches_formula(case, epsilon):
    labels, num_classes = case
    out = smooth_labels(labels, epsilon, num_classes)
    assert out.shape == (len(labels), num_classes) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=1), 1, rtol=1e-5)
    expected = (1 - epsilon) * one_hot(labels, num_classes) + epsilon / num_classes
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # Already one-hot input gives the same targets.
    np.testing.assert_array_equal(smooth_labels(one_hot(labels, num_classes), epsilon), out)


@settings(max_examples=200, deadline=None)
@given(labelled(), st.data())
def test_smoothing_preserves_argmax(case, data):
    labels, num_classes = case
    if num_classes < 2:
        return  # 1 - 1/C = 0: no epsilon to test
    epsilon = data.draw(st.floats(0, 1 - 1 / num_classes, exclude_max=True))
    np.testing.assert_array_equal(decode(smooth_labels(labels, epsilon, num_classes)), labels)


def test_smoothing_known_values():
    out = smooth_labels(np.array([2, 0]), 0.1, 4)
    np.testing.assert_allclose(out, [[0.025, 0.025, 0.925, 0.025], [0.925, 0.025, 0.025, 0.025]])
    np.testing.assert_array_equal(smooth_labels(np.array([1]), 0.0, 3), [[0, 1, 0]])


@settings(max_examples=300, deadline=None)
@given(scores(), st.data())
def test_top_k_sorted_and_consistent_with_argsort(probabilities, data):
    c = probabilities.shape[1]
    k = data.draw(st.integers(1, c))
    indices, values = top_k(probabilities, k)
    assert indices.shape == values.shape == (len(probabilities), k)
    assert indices.dtype == np.int64 and values.dtype == probabilities.dtype
    np.testing.assert_array_equal(values, np.take_along_axis(probabilities, indices, axis=1))
    assert (np.diff(values, axis=1) <= 0).all()
    # The same as a stable descending argsort, ties in class order; the first is decode's.
    reference = np.argsort(-probabilities.astype(np.float64), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(indices, reference)
    np.testing.assert_array_equal(indices[:, 0], decode(probabilities))
    for row, chosen in zip(probabilities, indices, strict=True):
        assert len(set(chosen)) == k
        rest = np.delete(row, chosen)
        assert rest.size == 0 or rest.max() <= row[chosen].min()


def test_top_k_ties_and_integer_scores():
    indices, values = top_k(np.array([[0.2, 0.4, 0.4, 0.0]]), 3)
    np.testing.assert_array_equal(indices, [[1, 2, 0]])
    np.testing.assert_allclose(values, [[0.4, 0.4, 0.2]])
    indices, values = top_k(np.array([[0, 255, 3]], dtype=np.uint8), 2)
    np.testing.assert_array_equal(indices, [[1, 2]])
    np.testing.assert_array_equal(values, [[255, 3]])


def test_decode_on_logits_and_probabilities():
    logits = np.array([[1.0, -2.0, 3.0], [0.5, 0.5, 0.1]])
    np.testing.assert_array_equal(decode(logits), [2, 0])
    assert decode(logits).dtype == np.int64
    assert decode(np.zeros((0, 3))).shape == (0,)


@pytest.mark.parametrize(
    ("labels", "num_classes", "match"),
    [
        (np.array([0, 10]), 10, "label 10 at index 1 is outside the class range 0..9"),
        (np.array([-1, 2]), 10, "label -1 at index 0"),
        (np.array([[0, 1]]), 10, "1-D"),
        (np.array([0.0, 1.0]), 10, "integers"),
        (np.array([0, 1]), 0, "num_classes must be >= 1"),
        (np.array([0, 1]), 2.0, "num_classes must be an int"),
    ],
)
def test_one_hot_errors(labels, num_classes, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        one_hot(labels, num_classes)


@pytest.mark.parametrize("epsilon", [-0.1, 1.0, 1.5, float("nan")])
def test_smoothing_rejects_epsilon_outside_unit_interval(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        smooth_labels(np.array([0, 1]), epsilon, 2)


def test_smoothing_shape_errors():
    with pytest.raises(ValueError, match="num_classes is required"):
        smooth_labels(np.array([0, 1]), 0.1)
    with pytest.raises(ValueError, match="3 columns but num_classes is 4"):
        smooth_labels(np.eye(3), 0.1, 4)
    with pytest.raises(ValueError, match="outside the class range"):
        smooth_labels(np.array([0, 5]), 0.1, 3)


@pytest.mark.parametrize(
    ("probabilities", "match"),
    [
        (np.array([0.1, 0.9]), "2-D"),
        (np.zeros((2, 3, 4)), "2-D"),
        (np.zeros((2, 0)), "C >= 1"),
        (np.array([[0.1, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "real numbers"),
    ],
)
def test_decode_and_top_k_reject_bad_probabilities(probabilities, match):
    with pytest.raises(ValueError, match=match):
        decode(probabilities)
    with pytest.raises(ValueError, match=match):
        top_k(probabilities, 1)


@pytest.mark.parametrize("k", [0, 4, -1, 1.5, True])
def test_top_k_rejects_bad_k(k):
    with pytest.raises(ValueError, match=re.escape("k must be an int in 1..3")):
        top_k(np.ones((2, 3)), k)
