"""Cutting a mark of ink into digits by recognition, for a digit classifier that reads one
centred digit (step 3 of :mod:`mnistlab.shipping.read`; a number reader needs no cuts).

For each mark, every way of cutting it at candidate columns into pieces 0.12-1.3 digit
heights wide is scored, and the best is found by dynamic programming. A cut is a path of
least ink from top to bottom near its column (it slips between overlapping digits where a
straight cut would slice both). A piece's score is the classifier's log-probability of its
best digit, plus how typical the piece's width-to-height ratio is for that digit (measured on
MNIST's training digits: a 1 is narrow, a 0 wide; two digits side by side are wider than any
one), minus a small cost per piece and per stroke a cut crosses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from mnistlab.shipping.errors import InputError
from mnistlab.shipping.preprocess import to_mnist

__all__ = ["cut_mark", "least_ink_path"]

PIECE_WIDTH = (0.12, 1.3)  # a digit's width as a share of the digit height
CUT_STEP = 1 / 14  # candidate cut columns every this share of the digit height
PIECE_COST = 0.25  # score subtracted per digit: splitting must earn its keep
STROKE_COST = 0.4  # score subtracted per stroke a cut crosses (touching digits meet in one)
STROKE_SHARE = 0.1  # a stroke's width as a share of the digit height (MNIST: 0.117)
SEAM_REACH = 0.25  # a cut path strays at most this share of the digit height from its column
ASPECT_WEIGHT = 0.5  # weight of the width-to-height prior against the log-probability
# log(width / height) of each digit's ink box on MNIST's 60,000 training digits (ink > 64):
# mean and standard deviation per digit 0-9.
ASPECT_MEAN = (-0.106, -0.931, -0.071, -0.235, -0.241, -0.074, -0.326, -0.264, -0.282, -0.395)
ASPECT_STD = (0.196, 0.459, 0.218, 0.212, 0.212, 0.258, 0.217, 0.215, 0.221, 0.205)


def _piece(ink: np.ndarray, mark: np.ndarray, left: np.ndarray, right: np.ndarray):
    """The ink of ``mark`` between two cut paths (per row: columns ``left[y] <= x < right[y]``)
    in MNIST form, with its box ``(x0, y0, x1, y1)`` and width-to-height ratio; None if empty."""
    columns = np.arange(mark.shape[1])[None, :]
    inside = mark & (columns >= left[:, None]) & (columns < right[:, None])
    rows = np.flatnonzero(inside.any(axis=1))
    if not len(rows):
        return None
    cols = np.flatnonzero(inside.any(axis=0))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    part = np.where(inside[y0:y1, x0:x1], ink[y0:y1, x0:x1], 0.0)
    labels, count = ndimage.label(part > 0, structure=np.ones((3, 3)))
    if count > 1:  # slivers of a neighbour left by the cut
        areas = np.bincount(labels.ravel())[1:]
        keep = np.concatenate([[False], areas >= 0.15 * areas.max()])
        part = np.where(keep[labels], part, 0.0)
    try:
        image = to_mnist(part * 255.0)
    except InputError:
        return None
    return image, (x0, y0, x1, y1), (x1 - x0) / (y1 - y0)


def _aspect_score(aspect: float) -> np.ndarray:
    """Log-likelihood (0 at the mean and below) of a piece's log aspect ratio for each digit
    0-9: only pieces wider than the digit usually is are penalized (narrower ones are often
    a slanted or condensed hand; wider ones, two digits)."""
    mean, std = np.asarray(ASPECT_MEAN), np.asarray(ASPECT_STD)
    z = np.maximum((math.log(max(aspect, 1e-3)) - mean) / std, 0.0)
    return -0.5 * z**2


def least_ink_path(ink: np.ndarray, centre: int, reach: int) -> tuple[np.ndarray, float]:
    """The cheapest top-to-bottom path through ``ink`` that stays within ``reach`` columns of
    ``centre`` and moves at most one column per row (it slips between overlapping digits
    where a straight cut would slice both). Returns its column per row and the ink it
    crosses."""
    h, w = ink.shape
    lo, hi = max(centre - reach, 0), min(centre + reach + 1, w)
    cost = ink[:, lo:hi].astype(np.float64) + 0.02 * np.abs(np.arange(lo, hi) - centre)[None]
    total = cost[0].copy()
    moves = np.zeros((h, hi - lo), dtype=np.int8)
    for y in range(1, h):
        left = np.concatenate([[np.inf], total[:-1]])
        right = np.concatenate([total[1:], [np.inf]])
        stacked = np.stack([left, total, right])
        choice = np.argmin(stacked, axis=0)
        moves[y] = choice - 1
        total = stacked[choice, np.arange(hi - lo)] + cost[y]
    x = int(np.argmin(total))
    path = np.empty(h, dtype=np.int64)
    for y in range(h - 1, -1, -1):
        path[y] = x + lo
        x = min(max(x + int(moves[y, x]), 0), hi - lo - 1) if y else x
    crossed = float(ink[np.arange(h), path].sum())
    return path, crossed


def cut_mark(ink: np.ndarray, mark: np.ndarray, height: float, model: Any) -> list[tuple]:
    """The best cut of one ``mark`` (a boolean mask over ``ink``, the picture's ink strength,
    paper 0; digits ``height`` pixels high) into digits read by ``model`` (a digit classifier
    with ``probabilities(uint8 (N, 28, 28))``): ``[(box, probabilities), ...]`` left to right,
    boxes ``(x0, y0, x1, y1)`` in ``ink``'s pixels."""
    cols = np.flatnonzero(mark.any(axis=0))
    left, right = int(cols[0]), int(cols[-1]) + 1
    width = right - left
    h = mark.shape[0]
    low, high = PIECE_WIDTH[0] * height, PIECE_WIDTH[1] * height
    step = max(1, round(CUT_STEP * height))
    paths = [np.full(h, left), np.full(h, right)]
    crossed = [0.0, 0.0]
    positions = [left, right]
    if width > low * 2 and width > 0.9 * height:
        masked = np.where(mark, ink, 0.0)
        reach = max(1, round(SEAM_REACH * height))
        for c in range(left + max(1, round(low)), right - round(low) + 1, step):
            path, ink_crossed = least_ink_path(masked, c, reach)
            paths.insert(-1, path)
            crossed.insert(-1, ink_crossed)
            positions.insert(-1, c)
    n = len(paths)
    spans = [(i, j) for i in range(n) for j in range(i + 1, n)
             if positions[j] - positions[i] <= max(high, 1) or (i == 0 and j == n - 1)]  # fmt: skip
    found = []
    for i, j in spans:
        piece = _piece(ink, mark, paths[i], paths[j])
        if piece is not None:
            found.append(((i, j), *piece))
    if not found:
        return []
    probabilities = model.probabilities(np.stack([f[1] for f in found]))
    score: dict[tuple[int, int], tuple[float, tuple, np.ndarray]] = {}
    for ((i, j), _, box, aspect), p in zip(found, probabilities, strict=True):
        p10 = p[:10] if len(p) >= 10 else p
        total = np.log(np.maximum(p10, 1e-12)) + ASPECT_WEIGHT * _aspect_score(aspect)[: len(p10)]
        score[(i, j)] = (float(total.max()) - PIECE_COST, box, p)
    stroke = max(STROKE_SHARE * height, 1.0)  # ink a cut through one stroke crosses
    best = [-math.inf] * n
    back: list[int | None] = [None] * n
    best[0] = 0.0
    for j in range(1, n):
        cut = 0.0 if j == n - 1 else STROKE_COST * crossed[j] / stroke
        for i in range(j):
            if (i, j) not in score or best[i] == -math.inf:
                continue
            total = best[i] + score[(i, j)][0] - cut
            if total > best[j]:
                best[j], back[j] = total, i
    if back[-1] is None:
        return []
    out, j = [], n - 1
    while j:
        i = back[j]
        assert i is not None
        out.append(score[(i, j)][1:])
        j = i
    return out[::-1]
