"""A recognizer of whole numbers: a convolutional net that reads a line of handwritten digits
left to right, trained with CTC (connectionist temporal classification, Graves et al. 2006).

A digit classifier needs the digits cut apart first, and touching or overlapping digits have
no clean cut. This net never cuts: it looks at the whole line (a grey picture
:data:`LINE_HEIGHT` pixels high, any width; see :func:`mnistlab.shipping.read.number_line`)
and gives, for every :data:`FRAME_PX` columns, the probability of each digit and of "no new
digit here" (the *blank*). CTC trains it from (picture, digit string) pairs alone, without
telling it where each digit is; greedy decoding (:func:`decode`) reads the string back as
the runs of frames with the same most likely digit, which also says where each digit is.

The layers: three convolution blocks (32, 64 and 96 channels; height 32 -> 4, width halved
once, so one frame per two columns: a narrow 1 still spans several frames, and two 1s in a
row have room for the blank between them), the height folded into the channels, then two 1-D
convolutions along the line that let a frame see its neighbours (about a digit and a half
either side), and a linear layer to the 11 outputs (digits 0-9, blank).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnistlab.errors import MnistlabError
from mnistlab.models.files import READER_FORMAT, ModelFile, read_model_file

LINE_HEIGHT = 32  # pixels: the height of the line the net reads (a digit is about 22 of them)
FRAME_PX = 2  # columns of the line per output frame
BLANK = 10  # the CTC blank's output index; digits 0-9 are outputs 0-9
NUM_OUTPUTS = 11
# A line is also read stretched across by these factors (test-time views; consensus)
STRETCHES = (0.85, 1.15)


class NumberReader(nn.Module):
    """Line of digits ``(B, 1, LINE_HEIGHT, W)`` in [0, 1] (ink bright on 0) -> log-probabilities
    ``(B, W // FRAME_PX, NUM_OUTPUTS)``."""

    reads_lines = True  # what :func:`mnistlab.shipping.read.read_number` dispatches on

    def __init__(self, width: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]  # fmt: skip

        self.width = width
        self.features = nn.Sequential(
            *block(1, 32),
            nn.MaxPool2d(2),  # 16 x W/2
            *block(32, 64),
            nn.MaxPool2d((2, 1)),  # 8 x W/2
            *block(64, 96),
            *block(96, 96),
            nn.MaxPool2d((2, 1)),  # 4 x W/2
        )
        self.sequence = nn.Sequential(
            nn.Conv1d(96 * 4, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(width, width, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(width, NUM_OUTPUTS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)  # (B, 96, 4, T)
        f = self.sequence(f.flatten(1, 2))  # (B, width, T)
        return torch.log_softmax(self.head(f.transpose(1, 2)).float(), dim=-1)


@dataclass
class LineDigit:
    """One digit read from a line: ``digit`` 0-9, its probability, the frames ``[start, stop)``
    where it was read, and the probabilities of all ten digits at its surest frame."""

    digit: int
    confidence: float
    start: int
    stop: int
    probabilities: np.ndarray


def decode(
    log_probs: torch.Tensor | np.ndarray,
    length: int | None = None,
    *,
    digits: int | None = None,
    text: str | None = None,
) -> list[LineDigit]:
    """CTC decoding of one line's ``(T, NUM_OUTPUTS)`` log-probabilities (its first ``length``
    frames) into digits; a digit's confidence is its highest probability within its run of
    frames.

    Without ``digits`` or ``text``: greedy (the most likely output per frame, runs of one
    digit merged, blanks dropped). With ``digits``: the most likely frame labelling that holds
    exactly that many digits (:func:`best_path`), for numbers whose length is known (a
    postcode, a form's field). With ``text`` (a string of digits): where the line holds those
    digits (:func:`align`). An empty list when the line is too short for them.
    """
    lp = np.asarray(log_probs, dtype=np.float64)[: length or None]
    p = np.exp(lp)
    if text is not None:
        labels = align(lp, [int(c) for c in text])
    else:
        labels = p.argmax(1) if digits is None else best_path(lp, digits)
    if labels is None:
        return []
    out: list[LineDigit] = []
    t = 0
    while t < len(labels):
        k = int(labels[t])
        stop = t + 1
        while stop < len(labels) and labels[stop] == k:
            stop += 1
        if k != BLANK:
            surest = t + int(p[t:stop, k].argmax())
            shares = p[surest, :BLANK] / max(p[surest, :BLANK].sum(), 1e-12)
            out.append(LineDigit(k, float(p[t:stop, k].max()), t, stop, shares))
        t = stop
    return out


def best_path(log_probs: np.ndarray, digits: int) -> np.ndarray | None:
    """The most likely output per frame (``(T,)`` labels) among the labellings of ``(T,
    NUM_OUTPUTS)`` log-probabilities that read as exactly ``digits`` digits under CTC's rule
    (runs of one label merged, blanks dropped); None when no labelling of T frames does.

    Dynamic programming (Viterbi) over states (digits read so far, label of this frame):
    a frame either repeats the label before it (the same digit goes on, or another blank) or
    changes it (a blank, or a new digit: one more read). T x (digits + 1) x 11 x 11 steps.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    frames_, outputs = lp.shape
    if digits < 0 or frames_ == 0:
        return None
    is_digit = np.arange(outputs) != BLANK
    # entering label c from label c' adds a digit when c is a digit and differs from c'
    adds = (is_digit[None, :] & (np.arange(outputs)[:, None] != np.arange(outputs)[None, :]))
    adds = adds.astype(np.int64)  # (from c', to c)
    score = np.full((digits + 1, outputs), -np.inf)
    score[0, BLANK] = lp[0, BLANK]
    if digits:
        score[1, is_digit] = lp[0, is_digit]
    back = np.zeros((frames_, digits + 1, outputs, 2), dtype=np.int64)  # (k', c') per state
    # candidate[k, c', c]: the score of state (k - adds[c', c], c') before entering (k, c)
    source_k = np.arange(digits + 1)[:, None, None] - adds[None, :, :]
    valid = source_k >= 0
    rows, columns = np.clip(source_k, 0, digits), np.arange(outputs)[None, :, None]
    for t in range(1, frames_):
        candidate = np.where(valid, score[rows, columns], -np.inf)
        best_from = candidate.argmax(axis=1)  # (k, c): the best c'
        best = np.take_along_axis(candidate, best_from[:, None, :], axis=1)[:, 0, :]
        back[t, :, :, 0] = np.take_along_axis(source_k, best_from[:, None, :], axis=1)[:, 0, :]
        back[t, :, :, 1] = best_from
        score = best + lp[t][None, :]
    last = int(score[digits].argmax())
    if not np.isfinite(score[digits, last]):
        return None
    labels = np.empty(frames_, dtype=np.int64)
    k, c = digits, last
    for t in range(frames_ - 1, -1, -1):
        labels[t] = c
        if t:
            k, c = int(back[t, k, c, 0]), int(back[t, k, c, 1])
    return labels


def align(log_probs: np.ndarray, digits: list[int]) -> np.ndarray | None:
    """The most likely output per frame (``(T,)`` labels) among the labellings of ``(T,
    NUM_OUTPUTS)`` log-probabilities that read as exactly the string ``digits`` under CTC's
    rule (a forced alignment: where each digit of a known reading lies); None when T frames
    cannot hold it (two equal digits in a row need a blank between them).

    Viterbi over CTC's extended sequence (a blank, the first digit, a blank, ..., a blank): a
    frame stays on its state, moves to the next, or skips a blank between two different
    digits.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    extended = np.full(2 * len(digits) + 1, BLANK, dtype=np.int64)
    extended[1::2] = digits
    states = len(extended)
    if len(lp) == 0:
        return None
    may_skip = np.zeros(states, dtype=bool)  # from state s - 2: a digit after another digit
    may_skip[3::2] = extended[3::2] != extended[1:-2:2]
    score = np.full(states, -np.inf)
    score[0] = lp[0, BLANK]
    if states > 1:
        score[1] = lp[0, extended[1]]
    back = np.zeros((len(lp), states), dtype=np.int8)  # steps back: 0, 1 or 2 states
    for t in range(1, len(lp)):
        moves = np.full((3, states), -np.inf)  # from state s, s - 1, s - 2
        moves[0], moves[1, 1:], moves[2, 2:] = score, score[:-1], score[:-2]
        moves[2, ~may_skip] = -np.inf
        back[t] = moves.argmax(axis=0)
        score = moves.max(axis=0) + lp[t, extended]
    ends = [states - 1] + ([states - 2] if states > 1 else [])
    s = max(ends, key=lambda e: score[e])
    if not np.isfinite(score[s]):
        return None
    labels = np.empty(len(lp), dtype=np.int64)
    for t in range(len(lp) - 1, -1, -1):
        labels[t] = extended[s]
        s -= int(back[t, s])
    return labels


def log_likelihood(log_probs: torch.Tensor | np.ndarray, text: str) -> float:
    """log P(``text`` | the line): the CTC probability of a string of digits summed over every
    frame labelling that reads as it, from ``(T, NUM_OUTPUTS)`` log-probabilities; -inf when
    the line cannot hold it."""
    lp = torch.as_tensor(np.asarray(log_probs, dtype=np.float32))
    if not text:
        return float(lp[:, BLANK].sum())
    nll = torch.nn.functional.ctc_loss(
        lp[:, None], torch.tensor([[int(c) for c in text]]), torch.tensor([len(lp)]),
        torch.tensor([len(text)]), blank=BLANK, reduction="sum",
    )  # fmt: skip
    return -float(nll)


def consensus(views: list[torch.Tensor | np.ndarray], digits: int | None = None) -> list[LineDigit]:
    """Read a line seen several ways (the log-probabilities of :data:`STRETCHES`' views of it,
    the line as it is first): each view's reading (greedy, or with ``digits`` the best of
    that many) is a candidate, and the one with the highest CTC likelihood summed over the
    views wins (a product of the views' probabilities of the *string*, which does not care
    where each view puts its digits; averaging their frames does, and fails). Decoded where
    the first view puts it (:func:`decode` with ``text``)."""
    views = [np.asarray(v, dtype=np.float64) for v in views]  # once, not at every scoring
    first = decode(views[0], digits=digits)
    text = "".join(str(d.digit) for d in first)
    readings = {"".join(str(d.digit) for d in decode(v, digits=digits)) for v in views[1:]}
    readings = sorted(readings - {"", text})
    if not readings:
        return first
    best = max([text, *readings], key=lambda r: sum(log_likelihood(v, r) for v in views))
    return first if best == text else decode(views[0], text=best)


def stretched(
    pixels: np.ndarray, stretches: tuple[float, ...] | None = None
) -> list[torch.Tensor]:
    """A line ``(LINE_HEIGHT, W)`` as the reader's batch ``(1, 1, LINE_HEIGHT, W')``, as it is
    and stretched across by each of ``stretches`` (None: :data:`STRETCHES`, within the
    reader's training variants; ``()``: the line alone), for :func:`consensus`."""
    stretches = STRETCHES if stretches is None else stretches
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None, None]
    return [x] + [
        torch.nn.functional.interpolate(x, size=(x.shape[2], max(8, round(x.shape[3] * s))),
                                        mode="bilinear", align_corners=False)
        for s in stretches
    ]  # fmt: skip


def frames(width: int) -> int:
    """Output frames of a line ``width`` columns wide."""
    return width // FRAME_PX


def load_reader(path: str | os.PathLike[str] | ModelFile) -> tuple[NumberReader, dict]:
    """A number reader written by ``mnistlab train-reader`` (a run folder, its ``model/`` or
    the manifest), in eval mode, with its manifest; the weights' SHA-256 is checked.

    Raises:
        MnistlabError: not a number reader, or changed or unreadable weights.
    """
    model_file = path if isinstance(path, ModelFile) else read_model_file(
        path, [READER_FORMAT], wanted="a number reader of `mnistlab train-reader`"
    )
    manifest = model_file.manifest
    width = manifest.get("width")
    if not (isinstance(width, int) and not isinstance(width, bool) and 8 <= width <= 1024):
        raise MnistlabError(  # checked before a module of that size is built
            f"{model_file.manifest_path}: `width` must be an integer in [8, 1024]; got {width!r}"
        )
    net = NumberReader(width=width)
    try:
        net.load_state_dict(model_file.tensors())
    except RuntimeError as exc:
        raise MnistlabError(
            f"{model_file.weights_path}: the weights do not fit a number reader ({exc})"
        ) from None
    return net.eval(), manifest
