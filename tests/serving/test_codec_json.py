"""Output tensors to JSON: float32 values in the shortest form that round-trips (what a client
reading 0.2 expects, not 0.200000003), exact ints and bools, any shape."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from serving.responses import array_to_json, predict_response


def _flat(value):
    if isinstance(value, list):
        for item in value:
            yield from _flat(item)
    else:
        yield value


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("shape", [(), (1,), (100, 1), (3, 4, 5)])
def test_half_and_single_floats_are_written_in_their_shortest_round_trip_form(dtype, shape):
    rng = np.random.default_rng(7)
    finfo = np.finfo(dtype)
    exponent = 4 if dtype == np.float16 else 30  # stay inside the type's range
    values = rng.standard_normal(shape) * 10.0 ** rng.integers(-exponent, exponent, shape)
    array = np.asarray(values).astype(dtype)
    if array.size >= 6:
        array.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, finfo.tiny, finfo.max]
    out = array_to_json(array, "probabilities")
    assert np.shape(out) == shape
    for got, want in zip(_flat(out), array.reshape(-1)):
        assert type(got) is float
        if math.isnan(want):
            assert math.isnan(got)
            continue
        assert dtype(got) == want and math.copysign(1, got) == math.copysign(1, want)  # round-trips
        assert repr(got) == repr(float(str(want)))  # no digit more than numpy's shortest form


def test_known_values_print_as_written():
    out = array_to_json(np.array([[0.2], [0.1], [1e-6], [123456.7]], dtype=np.float32), "y")
    assert json.dumps(out) == "[[0.2], [0.1], [1e-06], [123456.7]]"


@pytest.mark.parametrize("array", [np.array([[1, -2], [2**62, 0]], dtype=np.int64), np.array([True, False]),
                                   np.array(0.30000000000000004), np.array([3], dtype=np.uint8)])
def test_ints_bools_and_doubles_are_exact(array):
    out = array_to_json(array, "y")
    assert out == array.tolist()
    assert all(type(v) is type(w) for v, w in zip(_flat(out), _flat(array.tolist())))


def test_strings_and_bytes_outputs_still_go_through_the_text_path():
    out = predict_response({"label": np.array([b"cash", b"\xff"], dtype=object)}, row_format=True)
    assert out == {"predictions": ["cash", {"b64": "/w=="}]}


def _values(text):
    """JSON values with their types and signs kept (-0.0 vs 0.0, 1 vs 1.0, nan)."""
    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return (type(v).__name__, repr(v))
    return walk(json.loads(text))


def _random_outputs(rng, batch):
    outputs = {}
    for i in range(rng.integers(1, 4)):
        dtype = rng.choice([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_, np.float16])
        shape = (batch,) + tuple(rng.integers(1, 4, rng.integers(0, 3)))
        if np.dtype(dtype).kind == "f":
            exponent = 4 if dtype == np.float16 else 8  # inside the type's range
            values = rng.standard_normal(shape) * 10.0 ** rng.integers(-exponent, exponent, shape)
            array = values.astype(dtype)
            if rng.random() < 0.2:
                array.flat[0] = rng.choice([np.nan, np.inf, -np.inf])
            if rng.random() < 0.3:
                array.flat[-1] = -0.0
        elif dtype == np.bool_:
            array = rng.random(shape) < 0.5
        else:
            info = np.iinfo(dtype)
            array = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        outputs[f"out{i}"] = array
    return outputs


def test_predict_body_gives_the_json_values_of_predict_response():
    from serving.responses import json_bytes, predict_body

    rng = np.random.default_rng(11)
    fast = 0
    for trial in range(400):
        outputs = _random_outputs(rng, int(rng.integers(1, 6)))
        for row_format in (True, False):
            body = predict_body(outputs, row_format)
            want = json_bytes(predict_response(outputs, row_format))
            assert _values(body) == _values(want), (outputs, row_format)
            fast += b"NaN" not in want and b"Infinity" not in want and body != want
    assert fast > 100  # most bodies took the orjson path (and differ in bytes, not in values)


def test_predict_body_keeps_nan_and_infinity_and_odd_arrays_on_the_json_path():
    from serving.responses import json_bytes, predict_body

    nan = {"p": np.array([[0.5], [np.nan], [np.inf]], dtype=np.float32)}
    assert predict_body(nan, True) == json_bytes(predict_response(nan, True)) == b'{"predictions":[[0.5],[NaN],[Infinity]]}'
    strided = {"p": np.arange(6, dtype=np.float32).reshape(2, 3)[:, 1]}  # not C-contiguous: orjson refuses it
    assert predict_body(strided, False) == json_bytes(predict_response(strided, False)) == b'{"outputs":[1.0,4.0]}'
    probabilities = {"p": np.array([[0.2], [1e-6]], dtype=np.float32)}
    assert json.loads(predict_body(probabilities, True)) == {"predictions": [[0.2], [1e-6]]}
