"""Requests: JSON -> tensors and tf.Examples, following TF Serving's REST JSON mapping (api_rest,
json_tensor.cc). Answers (tensors -> JSON, classify and regress results): serving/responses.py.

Extension over TF Serving, for models whose signature takes serialized tf.Examples (like ours):
`:predict` also accepts feature dicts (`{"instances": [{"fare": 7.5, "company": "X", ...}]}`) and
builds the tf.Examples itself, typed by the features the model parses (int64 / float / bytes),
exactly as `:classify` and `:regress` do. Unknown features and wrong types are 400s.
"""

from __future__ import annotations

import base64
import binascii
import math
import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2

from serving.errors import BadRequest
from serving.servable import BYTES, FLOAT, INT, FeatureSpec, Signature, TensorSpec

FLT_MAX = float(np.finfo(np.float32).max)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT_RANGES = {
    types_pb2.DT_INT8: (-(2**7), 2**7 - 1), types_pb2.DT_UINT8: (0, 2**8 - 1),
    types_pb2.DT_INT16: (-(2**15), 2**15 - 1), types_pb2.DT_UINT16: (0, 2**16 - 1),
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1), types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_INT64: (INT64_MIN, INT64_MAX), types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_NUMPY_DTYPE = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_HALF: np.float16,
    types_pb2.DT_INT8: np.int8, types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT16: np.int16,
    types_pb2.DT_UINT16: np.uint16, types_pb2.DT_INT32: np.int32, types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT64: np.uint64, types_pb2.DT_BOOL: np.bool_,
    types_pb2.DT_STRING: object,
}
MAX_ERROR_VALUE_CHARS = 80


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= MAX_ERROR_VALUE_CHARS else text[:MAX_ERROR_VALUE_CHARS] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def decode_b64(value: dict) -> bytes:
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadRequest("Unable to base64 decode") from err


# ---------------------------------------------------------------------------------------------
# tf.Example from a JSON feature dict (classify / regress / predict with feature dicts)


def _add_values(feature: example_pb2.Feature, name: str, values: Sequence[Any], kind: Optional[str]) -> None:
    if kind is None:  # no spec: TF Serving's typing by JSON value
        first = values[0] if values else None
        if isinstance(first, bool) or (isinstance(first, int)):
            kind = INT
        elif isinstance(first, float):
            kind = FLOAT
        else:
            kind = BYTES
    if kind == INT:
        out = feature.int64_list.value
        for v in values:
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if not isinstance(v, int):
                raise BadRequest(f"Feature: {name} expects int64 values but got {_json_type(v)} {_show(v)}")
            if not INT64_MIN <= v <= INT64_MAX:
                raise BadRequest(f"Feature: {name} value {_show(v)} does not fit in int64")
            out.append(int(v))
    elif kind == FLOAT:
        out = feature.float_list.value
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise BadRequest(f"Feature: {name} expects float values but got {_json_type(v)} {_show(v)}")
            try:
                f = float(v)
            except OverflowError as err:
                raise BadRequest(f"Cannot convert JSON value: {_show(v)} to float without loss of precision.") from err
            if math.isfinite(f) and abs(f) > FLT_MAX:
                raise BadRequest(f"Cannot convert JSON value: {_show(v)} to float without loss of precision.")
            out.append(f)
    else:
        out = feature.bytes_list.value
        for v in values:
            if isinstance(v, str):
                out.append(v.encode("utf-8", "surrogatepass"))
            elif is_b64(v):
                out.append(decode_b64(v))
            else:
                raise BadRequest(f"Feature: {name} expects string values but got {_json_type(v)} {_show(v)}")


def _fill_example(example: example_pb2.Example, obj: Any, spec: Optional[FeatureSpec], what: str) -> None:
    if not isinstance(obj, dict):
        raise BadRequest(f"{what} must be JSON object but got JSON {_json_type(obj)}")
    features = example.features.feature
    for name, content in obj.items():
        kind = None
        if spec is not None:
            kind = spec.kinds.get(name)
            if kind is None:
                raise BadRequest(
                    f"Feature: {name} is not a feature of this model (expected some of: "
                    f"{', '.join(sorted(spec.kinds))})"
                )
        values = content if isinstance(content, list) else [content]
        for v in values:
            if v is None or isinstance(v, list) or (isinstance(v, dict) and not is_b64(v)):
                raise BadRequest(f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")
        if name in features:
            raise BadRequest(f"Feature: {name} appears in both the context and the example")
        _add_values(features[name], name, values, kind)


def serialize_examples(items: Sequence[Any], spec: Optional[FeatureSpec], context: Any = None,
                       encoder=None) -> List[bytes]:
    """Serialized tf.Examples from JSON feature dicts (with an optional shared context dict).

    `encoder` (the signature's ExampleEncoder) writes the common case without protobuf objects;
    whatever it declines goes through the protobuf path below, which also words the errors.
    """
    if encoder is not None and context is None:
        fast = encoder.encode_all(items)
        if fast is not None:
            return fast
    base = None
    if context is not None:
        base = example_pb2.Example()
        _fill_example(base, context, spec, "Context")
    out = []
    for item in items:
        example = example_pb2.Example()
        if base is not None:
            example.CopyFrom(base)
        _fill_example(example, item, spec, "Example")
        out.append(example.SerializeToString())
    return out


def examples_from_classify_request(body: Any, spec: Optional[FeatureSpec], verb: str, encoder=None) -> List[bytes]:
    if not isinstance(body, dict):
        raise BadRequest(f"JSON Value: {_show(body)} Is not object")
    examples = body.get("examples")
    if "examples" not in body:
        raise BadRequest(f"When method is {verb}, key 'examples' is expected and was not found")
    if not isinstance(examples, list):
        raise BadRequest("Expecting 'examples' value to be an list/array")
    if not examples:
        raise BadRequest("'examples' value is an empty array")
    return serialize_examples(examples, spec, body.get("context"), encoder)


# ---------------------------------------------------------------------------------------------
# Tensors from JSON (predict)


def _shape_of(value: Any) -> List[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: List[int], level: int, out: list, leaf) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise BadRequest(
                f"JSON Value: {_show(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {len(shape)}"
            )
        out.append(leaf(value))
        return
    if level >= len(shape):
        raise BadRequest(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise BadRequest(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: {shape[level]}"
        )
    for item in value:
        _flatten(item, shape, level + 1, out, leaf)


def _leaf_converter(dtype: int, name: str, spec: Optional[FeatureSpec], example_input: bool, encoder=None):
    dtype_name = types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() else str(dtype)

    def type_error(v):
        return BadRequest(f"JSON Value: {_show(v)} Type: {_json_type(v)} is not of expected type: {dtype_name}")

    if dtype == types_pb2.DT_STRING:
        def leaf(v):
            if isinstance(v, str):
                return v.encode("utf-8", "surrogatepass")
            if isinstance(v, dict):
                if is_b64(v):
                    return decode_b64(v)
                if example_input:  # extension: a feature dict becomes a serialized tf.Example
                    fast = encoder.encode(v) if encoder is not None else None
                    return fast if fast is not None else serialize_examples([v], spec)[0]
            raise type_error(v)
        return leaf
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF):
        limit = FLT_MAX if dtype == types_pb2.DT_FLOAT else (65504.0 if dtype == types_pb2.DT_HALF else None)

        def leaf(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise type_error(v)
            try:
                f = float(v)
            except OverflowError as err:
                raise BadRequest(f"Cannot convert JSON value: {_show(v)} to {dtype_name} without loss of precision.") from err
            if limit is not None and math.isfinite(f) and abs(f) > limit:
                raise BadRequest(f"Cannot convert JSON value: {_show(v)} to {dtype_name} without loss of precision.")
            return f
        return leaf
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]

        def leaf(v):
            if isinstance(v, bool) or not isinstance(v, int):
                raise type_error(v)
            if not low <= v <= high:
                raise BadRequest(f"JSON Value: {_show(v)} is out of range for {dtype_name}")
            return v
        return leaf
    if dtype == types_pb2.DT_BOOL:
        def leaf(v):
            if not isinstance(v, bool):
                raise type_error(v)
            return v
        return leaf

    def unsupported(v):
        raise BadRequest(f"Conversion of JSON Value: {_show(v)} to type: {dtype_name} is not supported")
    return unsupported


_FLOAT_TYPES = frozenset((float, int))


def _scalar_column(items: Sequence[Any], tspec: TensorSpec):
    """The common case, fast: a rank-1 input given as a flat list of JSON scalars of its own type
    (a row-format column of one value per instance, or a columnar flat list). Returns None when
    anything is unusual (other types, values out of range, other shapes), and the general path
    then converts the input or makes the error message, so both paths give the same results."""
    if not items or (tspec.shape is not None and (len(tspec.shape) != 1 or tspec.shape[0] not in (None, len(items)))):
        return None
    dtype = tspec.dtype
    if dtype == types_pb2.DT_STRING:
        if set(map(type, items)) == {str}:  # exact types (bool is an int subclass): others go the long way
            return [v.encode("utf-8", "surrogatepass") for v in items]
        return None
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if not set(map(type, items)) <= _FLOAT_TYPES:
            return None
        try:
            array = np.array(items, dtype=np.float64)  # ints through float64, as float(v) does
        except OverflowError:
            return None
        if dtype == types_pb2.DT_DOUBLE:
            return array
        big = np.abs(array) > FLT_MAX  # inf and -inf too (they stay), nan compares False
        if big.any() and np.isfinite(array[big]).any():
            return None
        return array.astype(np.float32)
    if dtype in (types_pb2.DT_INT64, types_pb2.DT_INT32):
        if set(map(type, items)) != {int}:
            return None
        try:
            array = np.array(items, dtype=np.int64)
        except OverflowError:
            return None
        if dtype == types_pb2.DT_INT32:
            low, high = _INT_RANGES[dtype]
            if array.min() < low or array.max() > high:
                return None
            return array.astype(np.int32)
        return array
    return None


def tensor_from_json(value: Any, name: str, tspec: TensorSpec, sig: Signature, batched_items: Optional[Sequence] = None):
    """A numpy array (or, for text, a list of bytes) for input `name` from its JSON value (nested
    lists), checked against the signature."""
    items = batched_items if batched_items is not None else value
    example_input = sig.example_input == name
    if isinstance(items, (list, tuple)) and items:
        if example_input and sig.encoder is not None and "b64" not in sig.feature_spec.kinds and (
                tspec.shape is None or tspec.shape[0] in (None, len(items))):
            # feature dicts, one per instance: encoded in one pass (None: one needs the general path)
            fast = sig.encoder.encode_all(items)
        else:
            fast = _scalar_column(items, tspec)
        if fast is not None:
            return fast
    leaf = _leaf_converter(tspec.dtype, name, sig.feature_spec, example_input, sig.encoder)
    flat: list = []
    if batched_items is not None:  # row format: each item is one instance of the input
        if not batched_items:
            raise BadRequest("No values in 'instances' array")
        shape = _shape_of(batched_items[0])
        for i, item in enumerate(batched_items):
            if _shape_of(item) != shape:
                raise BadRequest(
                    f"Failed to process element: {i} of 'instances' list. Error: Expecting shape "
                    f"{shape} but got: {_shape_of(item)}"
                )
            try:
                _flatten(item, shape, 0, flat, leaf)
            except BadRequest as err:
                raise BadRequest(f"Failed to process element: {i} of 'instances' list. Error: {err.message}") from err
        shape = [len(batched_items)] + shape
    else:
        shape = _shape_of(value)
        _flatten(value, shape, 0, flat, leaf)
    if tspec.shape is not None:
        if len(shape) != len(tspec.shape) or any(
            want is not None and want != got for want, got in zip(tspec.shape, shape)
        ):
            want = "[" + ",".join("-1" if d is None else str(d) for d in tspec.shape) + "]"
            raise BadRequest(f"input {name!r} has shape {shape}, the signature expects {want}")
    dtype = _NUMPY_DTYPE.get(tspec.dtype)
    if dtype is None:
        raise BadRequest(f"input {name!r} has a type this server does not convert from JSON")
    if dtype is object:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=dtype).reshape(shape)


def predict_feeds(body: Any, sig: Signature) -> Tuple[Dict[str, np.ndarray], bool]:
    """Inputs of a :predict request and whether it used the row format (instances)."""
    if not isinstance(body, dict):
        raise BadRequest(f"JSON Value: {_show(body)} Is not object")
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances and has_inputs:
        raise BadRequest("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if not has_instances and not has_inputs:
        raise BadRequest("Missing 'inputs' or 'instances' key")
    names = sorted(sig.inputs)
    if has_instances:
        instances = body["instances"]
        if not isinstance(instances, list):
            raise BadRequest("Excepting 'instances' to be an list/array")
        if not instances:
            raise BadRequest("No values in 'instances' array")
        example_input = sig.example_input

        def named(item) -> bool:
            return isinstance(item, dict) and not is_b64(item) and set(item) == set(names)

        if len(names) == 1 and not named(instances[0]):
            return {names[0]: tensor_from_json(None, names[0], sig.inputs[names[0]], sig, instances)}, True
        if len(names) > 1 and not isinstance(instances[0], dict):
            raise BadRequest(
                "instances is a plain list, but expecting list of objects as multiple input tensors "
                "required as per tensorinfo_map"
            )
        keys = set(names)
        for i, item in enumerate(instances):
            if not (isinstance(item, dict) and item.keys() == keys) or is_b64(item):
                raise BadRequest(
                    f"Failed to process element: {i} of 'instances' list. JSON object: {_show(item)} "
                    f"must only have keys: {','.join(names)}"
                    + (" (or be a feature dict of a tf.Example)" if example_input else "")
                )
        # One tuple per input, each holding that input's value of every instance.
        columns = zip(*map(operator.itemgetter(*names), instances)) if len(names) > 1 else (
            [item[names[0]] for item in instances],)
        return {n: tensor_from_json(None, n, sig.inputs[n], sig, column) for n, column in zip(names, columns)}, True
    inputs = body["inputs"]
    if isinstance(inputs, dict) and not is_b64(inputs):
        if len(names) == 1 and set(inputs) != set(names) and sig.example_input:
            # a single feature dict as the whole input: one example
            return {names[0]: tensor_from_json([inputs], names[0], sig.inputs[names[0]], sig)}, False
        feeds = {}
        for n in names:
            if n not in inputs:
                raise BadRequest(f"Missing named input: {n} in 'inputs' object.")
            feeds[n] = tensor_from_json(inputs[n], n, sig.inputs[n], sig)
        unknown = sorted(set(inputs) - set(names))
        if unknown:
            raise BadRequest(f"'inputs' has keys that are not inputs of the signature: {', '.join(unknown)}")
        return feeds, False
    if len(names) > 1:
        raise BadRequest(
            "inputs is a plain value/list, but expecting an object as multiple input tensors required "
            "as per tensorinfo_map"
        )
    return {names[0]: tensor_from_json(inputs, names[0], sig.inputs[names[0]], sig)}, False
