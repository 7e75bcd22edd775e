"""Server-side batching on real TensorFlow functions: concurrent requests share model calls, each
gets exactly its own rows back, and one bad request never fails the others."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving.batching import Batcher, attach_batchers, batchable
from serving.errors import BadRequest
from serving.servable import Signature, TensorSpec

CALLS = []  # batch sizes the model saw, in order


def _slow_double(x):
    def record(value):
        CALLS.append(int(value.shape[0]))
        time.sleep(0.05)  # long enough that concurrent requests queue behind a running batch
        return value

    x = tf.py_function(record, [x], tf.float32)
    x.set_shape([None, 2])
    with tf.control_dependencies([tf.debugging.assert_non_negative(x, message="x must be >= 0")]):
        y = tf.identity(x) * 2.0
    return {"y": y, "row": tf.reduce_sum(tf.ones_like(x), axis=-1)}


def make_signature(output_shape=(None, 2)) -> Signature:
    fn = tf.function(_slow_double, input_signature=[tf.TensorSpec([None, 2], tf.float32)]).get_concrete_function()

    def call(x):
        return fn(x)

    return Signature(
        name="serving_default", method_name="tensorflow/serving/predict", fn=call,
        inputs={"x": TensorSpec(types_pb2.DT_FLOAT, (None, 2))},
        outputs={"y": TensorSpec(types_pb2.DT_FLOAT, output_shape), "row": TensorSpec(types_pb2.DT_FLOAT, (None,))},
        feature_spec=None,
    )


def concurrently(batcher: Batcher, inputs: list) -> list:
    results = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def client(i):
        start.wait()
        try:
            results[i] = batcher.run({"x": inputs[i]})
        except Exception as err:  # noqa: BLE001 -- compared below
            results[i] = err

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_requests_share_model_calls_and_get_their_own_rows():
    CALLS.clear()
    sizes = []  # what the metrics hook hears: requests per model call
    batcher = Batcher(make_signature(), on_batch=sizes.append)
    inputs = [np.full((1 + i % 3, 2), float(i), dtype=np.float32) for i in range(12)]
    results = concurrently(batcher, inputs)
    for x, out in zip(inputs, results):
        assert not isinstance(out, Exception), out
        np.testing.assert_array_equal(out["y"], x * 2)
        assert out["row"].shape == (len(x),)
    assert sum(CALLS) == sum(len(x) for x in inputs)
    assert len(CALLS) < len(inputs), f"no two requests shared a call: {CALLS}"
    assert len(sizes) == len(CALLS) and sum(sizes) == len(inputs), (sizes, CALLS)
    assert batcher._leaders == 0 and not batcher._queue


def test_a_request_alone_runs_at_once_as_its_own_batch():
    CALLS.clear()
    batcher = Batcher(make_signature())
    out = batcher.run({"x": np.ones((3, 2), dtype=np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((3, 2), 2.0))
    assert CALLS == [3]


def test_one_bad_request_fails_alone_and_its_batch_mates_are_answered():
    batcher = Batcher(make_signature())
    inputs = [np.full((1, 2), 1.0 if i != 3 else -1.0, dtype=np.float32) for i in range(8)]
    results = concurrently(batcher, inputs)
    assert isinstance(results[3], BadRequest) and "x must be >= 0" in results[3].message
    for i, out in enumerate(results):
        if i != 3:
            np.testing.assert_array_equal(out["y"], np.full((1, 2), 2.0))
    assert batcher._leaders == 0


def test_batches_respect_the_row_limit_and_a_larger_request_runs_alone():
    CALLS.clear()
    batcher = Batcher(make_signature(), max_batch_rows=4)
    inputs = [np.zeros((3, 2), dtype=np.float32) for _ in range(5)] + [np.zeros((9, 2), dtype=np.float32)]
    results = concurrently(batcher, inputs)
    assert all(not isinstance(r, Exception) for r in results)
    assert max(CALLS) == 9 and all(c <= 4 for c in CALLS if c != 9)


def test_two_concurrent_batches_and_random_sizes_never_lose_a_request():
    batcher = Batcher(make_signature(), max_batch_rows=5, max_concurrent_batches=2)
    rng = np.random.default_rng(3)
    inputs = [rng.uniform(0, 9, size=(int(rng.integers(1, 4)), 2)).astype(np.float32) for _ in range(24)]
    results = concurrently(batcher, inputs)
    for x, out in zip(inputs, results):
        np.testing.assert_allclose(out["y"], x * 2)
    assert batcher._leaders == 0 and not batcher._queue


def test_only_batch_major_signatures_get_a_batcher():
    class Version:
        signatures = {"a": make_signature(), "b": make_signature(output_shape=(2,))}

    assert batchable(Version.signatures["a"]) and not batchable(Version.signatures["b"])
    assert attach_batchers(Version) == 1
    assert Version.signatures["a"].batcher is not None and Version.signatures["b"].batcher is None


@pytest.fixture(autouse=True)
def _clear_calls():
    yield
    CALLS.clear()
