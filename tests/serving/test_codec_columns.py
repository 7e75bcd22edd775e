"""The codec's fast path for rank-1 inputs given as flat lists of JSON scalars (`_scalar_column`):
for any column, it must give exactly what the general element-by-element path gives, and leave
every value it does not take plainly (wrong types, bools, out-of-range numbers, nested lists, b64
objects) to the general path, so that the 400 messages are unchanged."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2

from serving import codec
from serving.errors import BadRequest
from serving.servable import Signature, TensorSpec

POOLS = {
    types_pb2.DT_FLOAT: [0, 1, -7, 2**31, 2**70, 10**400, 0.5, -0.0, 1e-45, 3.4028234663852886e38, 1e39, -1e39,
                         float("inf"), float("-inf"), float("nan"), True, "1.5", None, [1.0], {"b64": "AA=="}],
    types_pb2.DT_DOUBLE: [0, 3, 0.1, -0.0, 1e308, 10**400, float("inf"), float("nan"), False, "x", None, [2.0]],
    types_pb2.DT_INT64: [0, 1, -1, 2**62, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 1.0, True, "3", None, [1]],
    types_pb2.DT_INT32: [0, 5, -5, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2.5, False, None, [3]],
    types_pb2.DT_STRING: ["", "Cash", "Flash Cab", "naïve", "\u20ac", "\ud800", {"b64": "YWJj"}, {"b64": "!"},
                          {"fare": 1.0}, 7, None, True, ["a"]],
}
PLAIN = {  # values the fast path must take itself
    types_pb2.DT_FLOAT: [0, 1, -7, 0.5, -0.0, 1e-45, float("inf"), float("nan"), 3.4028234663852886e38],
    types_pb2.DT_DOUBLE: [0, 3, 0.1, -0.0, 1e308, float("inf")],
    types_pb2.DT_INT64: [0, 1, -1, 2**63 - 1, -(2**63)],
    types_pb2.DT_INT32: [0, 5, -5, 2**31 - 1, -(2**31)],
    types_pb2.DT_STRING: ["", "Cash", "naïve", "\u20ac", "\ud800"],
}


def _signature(dtype) -> Signature:
    return Signature(name="s", method_name="tensorflow/serving/predict", fn=None,
                     inputs={"x": TensorSpec(dtype, (None,))}, outputs={}, feature_spec=None)


def _convert(column, dtype, row_format: bool):
    sig = _signature(dtype)
    try:
        if row_format:
            return codec.tensor_from_json(None, "x", sig.inputs["x"], sig, column)
        return codec.tensor_from_json(column, "x", sig.inputs["x"], sig)
    except BadRequest as err:
        return BadRequest, err.message


def _general(column, dtype, row_format: bool, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(codec, "_scalar_column", lambda items, tspec: None)
        return _convert(column, dtype, row_format)


def _same(fast, general) -> bool:
    if isinstance(general, tuple):  # an error: the same message
        return fast == general
    if isinstance(fast, tuple):
        return False
    if general.dtype == object:  # text: the fast path gives a list of bytes
        return list(fast) == general.tolist()
    return (isinstance(fast, np.ndarray) and fast.dtype == general.dtype and fast.shape == general.shape
            and fast.tobytes() == general.tobytes())  # bit for bit: -0.0, nan, float32 rounding


@pytest.mark.parametrize("dtype", list(POOLS), ids=[types_pb2.DataType.Name(d) for d in POOLS])
def test_random_columns_convert_like_the_general_path(dtype, monkeypatch):
    rng = random.Random(dtype)
    pool, plain = POOLS[dtype], PLAIN[dtype]
    for trial in range(300):
        size = rng.randint(1, 12)
        # mostly plain columns (the fast path's own), some with one odd value anywhere
        column = [rng.choice(plain) for _ in range(size)]
        if trial % 3 == 0:
            column[rng.randrange(size)] = rng.choice(pool)
        for row_format in (True, False):
            fast = _convert(column, dtype, row_format)
            general = _general(column, dtype, row_format, monkeypatch)
            assert _same(fast, general), (column, row_format, fast, general)


@pytest.mark.parametrize("dtype", list(PLAIN), ids=[types_pb2.DataType.Name(d) for d in PLAIN])
def test_plain_columns_take_the_fast_path(dtype):
    column = PLAIN[dtype] * 3
    assert codec._scalar_column(column, TensorSpec(dtype, (None,))) is not None


@pytest.mark.parametrize("column,dtype,expected", [
    ([True, 1.0], types_pb2.DT_FLOAT, "JSON Value: True Type: True is not of expected type: DT_FLOAT"),
    ([1, 1.5], types_pb2.DT_INT64, "JSON Value: 1.5 Type: Number is not of expected type: DT_INT64"),
    ([1e39], types_pb2.DT_FLOAT, "Cannot convert JSON value: 1e+39 to DT_FLOAT without loss of precision."),
    ([2**63], types_pb2.DT_INT64, "JSON Value: 9223372036854775808 is out of range for DT_INT64"),
    ([2**31], types_pb2.DT_INT32, "JSON Value: 2147483648 is out of range for DT_INT32"),
    (["a", 7], types_pb2.DT_STRING, "JSON Value: 7 Type: Number is not of expected type: DT_STRING"),
])
def test_values_the_fast_path_leaves_get_the_general_error(column, dtype, expected):
    assert codec._scalar_column(column, TensorSpec(dtype, (None,))) is None
    got = _convert(column, dtype, row_format=True)
    assert got[0] is BadRequest and expected in got[1], got


def test_fixed_size_and_other_rank_inputs_are_left_to_the_general_path():
    column = [1.0, 2.0, 3.0]
    assert codec._scalar_column(column, TensorSpec(types_pb2.DT_FLOAT, (3,))) is not None
    assert codec._scalar_column(column, TensorSpec(types_pb2.DT_FLOAT, (2,))) is None
    assert codec._scalar_column(column, TensorSpec(types_pb2.DT_FLOAT, (None, 1))) is None
    assert codec._scalar_column([], TensorSpec(types_pb2.DT_FLOAT, (None,))) is None
    assert codec._scalar_column(column, TensorSpec(types_pb2.DT_HALF, (None,))) is None  # not fast-pathed


def test_named_row_format_builds_one_column_per_input():
    sig = Signature(name="s", method_name="tensorflow/serving/predict", fn=None, feature_spec=None, outputs={},
                    inputs={"fare": TensorSpec(types_pb2.DT_FLOAT, (None,)),
                            "company": TensorSpec(types_pb2.DT_STRING, (None,)),
                            "hour": TensorSpec(types_pb2.DT_INT64, (None,))})
    body = json.loads('{"instances": [{"fare": 7.25, "company": "A", "hour": 3},'
                      ' {"hour": 23, "fare": 10, "company": ""}]}')
    feeds, row_format = codec.predict_feeds(body, sig)
    assert row_format
    assert feeds["fare"].dtype == np.float32 and feeds["fare"].tolist() == [7.25, 10.0]
    assert list(feeds["company"]) == [b"A", b""]
    assert feeds["hour"].dtype == np.int64 and feeds["hour"].tolist() == [3, 23]
    # a missing or an extra key names the element and the keys
    for bad in ({"fare": 1.0, "company": "A"}, {"fare": 1.0, "company": "A", "hour": 1, "x": 0}):
        with pytest.raises(BadRequest, match=r"Failed to process element: 1 .*must only have keys: company,fare,hour"):
            codec.predict_feeds({"instances": [body["instances"][0], bad]}, sig)
    assert math.isclose(float(feeds["fare"][0]), 7.25)
