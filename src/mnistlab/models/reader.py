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


def decode(log_probs: torch.Tensor | np.ndarray, length: int | None = None) -> list[LineDigit]:
    """Greedy CTC decoding of one line's ``(T, NUM_OUTPUTS)`` log-probabilities (its first
    ``length`` frames): the most likely output per frame, runs of one digit merged, blanks
    dropped. A digit's confidence is its highest probability within its run."""
    p = np.exp(np.asarray(log_probs, dtype=np.float64))[: length or None]
    best = p.argmax(1)
    out: list[LineDigit] = []
    t = 0
    while t < len(best):
        k = int(best[t])
        stop = t + 1
        while stop < len(best) and best[stop] == k:
            stop += 1
        if k != BLANK:
            surest = t + int(p[t:stop, k].argmax())
            digits = p[surest, :BLANK] / max(p[surest, :BLANK].sum(), 1e-12)
            out.append(LineDigit(k, float(p[t:stop, k].max()), t, stop, digits))
        t = stop
    return out


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
