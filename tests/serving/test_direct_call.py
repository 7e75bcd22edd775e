"""The server's fast path into a loaded model (servable.DirectCall): it must answer exactly like
the public `ConcreteFunction` call, and step aside whenever an input does not fit the signature
or a gradient tape records, so that errors stay TensorFlow's own."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving.errors import BadRequest
from serving.servable import DirectCall, load_servable
from tests.serving.helpers import example_bytes


@pytest.fixture(scope="module")
def servable(taxi_model):
    return load_servable("taxi", 1, taxi_model["model"])


def test_warm_up_enables_the_direct_call_on_every_signature_of_the_pushed_model(servable):
    # serving_default and transform_features take tf.Examples; serving_features takes 16 named tensors
    assert {"serving_default", "serving_features", "transform_features"} <= set(servable.signatures)
    assert len(servable.signature("serving_features").inputs) > 1
    for sig in servable.signatures.values():
        assert isinstance(sig.direct, DirectCall), f"{sig.name}: warm-up did not enable the direct call"


def test_direct_call_of_a_named_input_signature_answers_like_the_public_call(servable, taxi_model):
    sig = servable.signature("serving_features")
    rows = taxi_model["rows"][:9]
    feeds = {}
    for name, spec in sig.inputs.items():
        dtype = tf.dtypes.as_dtype(spec.dtype)
        feeds[name] = tf.constant([r.get(name, "" if dtype == tf.string else 0) for r in rows], dtype=dtype)
    assert sig.direct.takes(feeds)
    public = sig.fn(**feeds)["probabilities"].numpy()
    fast = sig.run(feeds)["probabilities"]
    assert fast.shape == (9, 1) and len(np.unique(fast)) > 1
    np.testing.assert_allclose(fast, public, rtol=1e-6)
    # one input of the wrong dtype: the public path and its error
    wrong = dict(feeds, fare=tf.constant([1] * 9, dtype=tf.int64))
    assert not sig.direct.takes(wrong)
    with pytest.raises(BadRequest):
        sig.run(wrong)


@pytest.mark.parametrize("rows", [1, 7, 50])
def test_direct_call_answers_like_the_public_call(servable, taxi_model, rows):
    sig = servable.signature("serving_default")
    batch = [example_bytes(r) for r in (taxi_model["rows"] * 3)[:rows]]
    feeds = {"examples": tf.constant(batch)}
    assert sig.direct.takes(feeds)
    public = {k: v.numpy() for k, v in sig.fn(**feeds).items()}
    fast = sig.run(feeds)
    assert fast.keys() == public.keys() == set(sig.outputs)
    for name in public:
        assert fast[name].shape == (rows, 1)
        np.testing.assert_allclose(fast[name], public[name], rtol=1e-6)
    # distinct rows give distinct answers: the comparison above is not between constants
    if rows > 1:
        assert len(np.unique(fast["probabilities"])) > 1


def test_inputs_that_do_not_fit_take_the_public_path_and_its_error(servable):
    sig = servable.signature("serving_default")
    wrong_dtype = {"examples": tf.constant([1.0, 2.0])}
    wrong_rank = {"examples": tf.constant([[b"a"], [b"b"]])}
    extra = {"examples": tf.constant([b""]), "other": tf.constant([b""])}
    for feeds in (wrong_dtype, wrong_rank, extra):
        assert not sig.direct.takes(feeds)
    with pytest.raises(BadRequest):
        sig.run(wrong_dtype)
    with pytest.raises(BadRequest):
        sig.run(wrong_rank)


def test_a_recording_gradient_tape_takes_the_public_path(servable, taxi_model):
    sig = servable.signature("serving_default")
    feeds = {"examples": tf.constant([example_bytes(taxi_model["rows"][0])])}
    assert sig.direct.takes(feeds)
    with tf.GradientTape():
        assert not sig.direct.takes(feeds)
        inside = sig.run(feeds)
    np.testing.assert_allclose(inside["probabilities"], sig.run(feeds)["probabilities"], rtol=1e-6)


def test_a_function_with_captured_variables_is_called_with_their_current_values(tmp_path):
    """Captured inputs are resource handles, listed once at load: a variable's value is read when
    the function runs, so the fast path sees the same state as the public one."""
    module = tf.Module()
    module.scale = tf.Variable(2.0)
    module.f = tf.function(lambda x: {"y": x * module.scale}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f.get_concrete_function()})
    loaded = tf.saved_model.load(str(tmp_path))
    fn = loaded.signatures["serving_default"]
    from serving.servable import TensorSpec
    from tensorflow.core.framework import types_pb2

    direct = DirectCall.build(fn, {"x": TensorSpec(types_pb2.DT_FLOAT, (None,))})
    assert direct is not None
    feeds = {"x": tf.constant([1.0, 3.0])}
    np.testing.assert_array_equal(direct(feeds)["y"].numpy(), [2.0, 6.0])
    loaded.scale.assign(5.0)
    np.testing.assert_array_equal(direct(feeds)["y"].numpy(), fn(**feeds)["y"].numpy())
    np.testing.assert_array_equal(direct(feeds)["y"].numpy(), [5.0, 15.0])


def test_warm_up_runs_the_pushed_model_on_the_single_threaded_executor(servable, taxi_model):
    from tensorflow.python.eager import context

    from serving.servable import SINGLE_THREADED_EXECUTOR

    sig = servable.signature("serving_default")
    assert sig.direct.executor == SINGLE_THREADED_EXECUTOR
    before = context.context().function_call_options.executor_type
    feeds = {sig.example_input: tf.constant([example_bytes(row) for row in taxi_model["rows"][:5]])}
    fast = sig.run(feeds)
    assert context.context().function_call_options.executor_type == before  # the thread's setting is restored
    public = {name: value.numpy() for name, value in sig.fn(**feeds).items()}
    for name, value in public.items():
        np.testing.assert_allclose(fast[name], value, rtol=1e-6)
    # `mlops serve --no-single-threaded-executor`: the direct call on TensorFlow's default executor
    plain = load_servable("taxi", 1, taxi_model["model"], single_threaded=False)
    assert plain.signature("serving_default").direct.executor is None


def test_a_graph_the_single_threaded_executor_cannot_run_keeps_the_default_one(tmp_path, caplog):
    """tf.cond and tf.while_loop lower to Switch/Merge, which the single-threaded executor refuses:
    warm-up finds out and the signature keeps TensorFlow's default executor, answering as before."""
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def f(x):
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: x * 2.0, lambda: x - 1.0)
        return {"y": tf.while_loop(lambda i, a: i < 3, lambda i, a: (i + 1, a + 1.0), [0, y])[1]}

    module.f = f
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": f.get_concrete_function()})
    with caplog.at_level("INFO", logger="serving"):
        sig = load_servable("m", 1, tmp_path / "1").signature("serving_default")
    assert isinstance(sig.direct, DirectCall) and sig.direct.executor is None
    assert "Single-threaded executor does not support" in caplog.text, caplog.text
    np.testing.assert_array_equal(sig.run({"x": tf.constant([1.0, 2.0])})["y"], [5.0, 7.0])
    np.testing.assert_array_equal(sig.run({"x": tf.constant([-1.0, -2.0])})["y"], [1.0, 0.0])
