"""Dynamic batching for the API: single-image requests that are waiting at the same moment are
classified in one call of the model.

Under concurrent clients the server answers one request after another; each pays the model's
fixed cost per call (for ONNX Runtime on a small CNN most of the ~35 µs of a one-image call).
:class:`MicroBatcher` collects the images that requests hand it while the event loop is busy
and classifies them together the moment the loop is free again: no timer, so a lone request
waits for nothing (one turn of the event loop), and eight requests that arrived together make
one batch of eight. TorchServe and Triton call this dynamic batching (there with a wait of a
few milliseconds for a batch to fill, which a CPU server whose model takes microseconds does
not need). docs/benchmarks.md, "Serving latency", has the measurements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["MicroBatcher"]


class MicroBatcher:
    """Classify concurrent single images in batches.

    Args:
        predict: uint8 ``(N, 28, 28)`` -> N results, in order (e.g.
            :meth:`mnistlab.shipping.model.ShippedModel.predict`); called on the event loop.
        max_batch: most images per call; more waiting images make several calls.

    ``await batcher(image)`` (a uint8 ``(28, 28)`` array) returns that image's result; an
    exception raised by ``predict`` is raised to every request of the batch.
    """

    def __init__(self, predict: Callable[[np.ndarray], Sequence[Any]], max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1; got {max_batch}")
        self._predict = predict
        self.max_batch = max_batch
        self._waiting: list[tuple[np.ndarray, asyncio.Future[Any]]] = []

    async def __call__(self, image: np.ndarray) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((image, future))
        if len(self._waiting) == 1:  # the first of a batch: classify once the loop is free
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for start in range(0, len(waiting), self.max_batch):
            part = waiting[start : start + self.max_batch]
            try:
                results = self._predict(np.stack([image for image, _ in part]))
            except Exception as exc:  # the model's failure is each request's answer
                for _, future in part:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(part, results, strict=True):
                if not future.done():  # a request whose client left was cancelled
                    future.set_result(result)
