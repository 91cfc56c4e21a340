"""The served JSON fast path: dynamic batching of single-image requests (shipping/batching.py),
the batcher on its own and in the app, and the byte-level check that lets a 28x28 array of
plain numbers skip the per-value type check (shipping/requests.py)."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shipping_support import trained_run

from mnistlab.data import load_dataset
from mnistlab.shipping import load_model
from mnistlab.shipping.batching import MicroBatcher
from mnistlab.shipping.requests import _numbers_only
from mnistlab.shipping.serve import ServeConfig, create_app


def _images(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.uint8)[:, None, None] * np.ones((1, 28, 28), np.uint8)


class Recorder:
    """A 'model' that answers each image's first pixel and records the batches it saw."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def __call__(self, images: np.ndarray) -> list[int]:
        self.batches.append(len(images))
        if self.fail:
            raise RuntimeError("broken model")
        return [int(image[0, 0]) for image in images]


def test_waiting_images_make_one_batch_and_each_gets_its_own_answer() -> None:
    model = Recorder()
    batcher = MicroBatcher(model, max_batch=4)

    async def main() -> list[int]:
        return await asyncio.gather(*(batcher(image) for image in _images(10)))

    assert asyncio.run(main()) == list(range(10))
    assert model.batches == [4, 4, 2]  # all ten waited together; max_batch splits them


def test_a_lone_request_is_not_held_back() -> None:
    model = Recorder()
    batcher = MicroBatcher(model)

    async def main() -> list[int]:
        return [await batcher(image) for image in _images(3)]  # one after another

    assert asyncio.run(main()) == [0, 1, 2]
    assert model.batches == [1, 1, 1]


def test_the_models_error_reaches_every_request_of_the_batch() -> None:
    batcher = MicroBatcher(Recorder(fail=True))

    async def main() -> list[object]:
        calls = (batcher(image) for image in _images(3))
        return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(main())
    assert [str(a) for a in answers] == ["broken model"] * 3


def test_a_cancelled_request_leaves_the_others_their_answers() -> None:
    model = Recorder()
    batcher = MicroBatcher(model)

    async def main() -> tuple[list[int], bool]:
        tasks = [asyncio.create_task(batcher(image)) for image in _images(4)]
        await asyncio.sleep(0)  # every task is waiting for the batch
        tasks[1].cancel()
        answers = await asyncio.gather(tasks[0], tasks[2], tasks[3])
        return answers, tasks[1].cancelled()

    answers, cancelled = asyncio.run(main())
    assert answers == [0, 2, 3] and cancelled
    assert model.batches == [4]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(Recorder(), max_batch=0)


def test_concurrent_json_requests_are_batched_and_answered_each_for_its_image(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Eight requests at once through the app: one call of the model, and every answer is the
    one the model gives that image alone."""
    model = load_model(trained_run(tmp_path_factory))
    images = load_dataset("mnist-mini", "test", download=False).images[:8]
    alone = [model.predict(image)[0] for image in images]
    app = create_app(model, ServeConfig())

    async def main() -> tuple[list[httpx.Response], str]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answers = await asyncio.gather(
                *(client.post("/v1/predict", json={"image": im.tolist()}) for im in images)
            )
            metrics = (await client.get("/metrics")).text
        return answers, metrics

    answers, metrics = asyncio.run(main())
    for answer, expected in zip(answers, alone, strict=True):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] == expected.label
        assert body["confidence"] == pytest.approx(expected.confidence, abs=1e-5)
    assert re.search(r"^mnistlab_model_calls_total 1$", metrics, re.M), metrics
    assert sum(
        int(n) for n in re.findall(r"^mnistlab_predictions_total\{.*\} (\d+)$", metrics, re.M)
    ) == len(images)
    assert json.loads(answers[0].text)["model"] == model.name


def _leaves(value: object) -> list[object]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from(["image", "images"]))
def test_the_numbers_only_check_passes_nothing_but_numbers(value: object, key: str) -> None:
    body = json.dumps({key: value}).encode()
    if _numbers_only(body, key):
        leaves = _leaves(json.loads(body)[key])
        assert all(type(leaf) in (int, float) for leaf in leaves), body


def test_the_numbers_only_check_on_typical_bodies() -> None:
    digit = [[0, 12.5, 255] * 9 + [1]] * 28
    assert _numbers_only(json.dumps({"image": digit}).encode(), "image")
    assert _numbers_only(json.dumps({"image": digit}, indent=2).encode(), "image")
    for bad in ([[True]], [[None]], [["1"]], [[float("nan")]], [[float("inf")]]):
        assert not _numbers_only(json.dumps({"image": bad}).encode(), "image")
    assert not _numbers_only(b'{"image": [[1]], "image": [["x"]]}', "image")
    assert not _numbers_only(b'{"\\u0069mage": [[1]]}', "image")
