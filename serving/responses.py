"""Answers: model outputs -> JSON (TF Serving's REST mapping, row or columnar), and `:classify` /
`:regress` results read off a signature's outputs. Requests: serving/codec.py."""

from __future__ import annotations

import base64
import json
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import orjson

from serving.errors import BadRequest
from serving.servable import Signature


# ---------------------------------------------------------------------------------------------
# Outputs to JSON


def _text_to_json(as_bytes: bool):
    def text(v):
        if isinstance(v, bytes):
            if not as_bytes:
                try:
                    return v.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(v).decode("ascii")}
        return str(v)
    return text


def array_to_json(array: np.ndarray, name: str) -> Any:
    array = np.asarray(array)
    if array.dtype == np.float32 or array.dtype == np.float16:
        # numpy prints each value in the shortest form that round-trips in its own precision
        # (0.2, not 0.200000003); parsed back as float64, json writes exactly those digits.
        # In C: 80 us for 100 rows, where float(str(v)) per value took 210.
        return array.astype(str).astype(np.float64).tolist()
    if array.dtype.kind == "f":  # float64 as it is; wider floats rounded to it, as float(v) does
        return array.astype(np.float64, copy=False).tolist()
    if array.dtype.kind in "iub":
        return array.tolist()
    leaf = _text_to_json(name.endswith("_bytes"))  # strings, bytes; anything else as str(v)

    def build(a):
        if a.ndim == 0:
            return leaf(a.item() if a.dtype.kind in "OSU" else a[()])
        if a.ndim == 1:
            return [leaf(v) for v in (a.tolist() if a.dtype.kind in "OSU" else a)]
        return [build(x) for x in a]
    return build(array)


def predict_response(outputs: Dict[str, np.ndarray], row_format: bool, convert=None) -> Dict[str, Any]:
    """The :predict answer as JSON values (`convert` turns each output array into them:
    `array_to_json` unless told otherwise)."""
    array_to_json_ = convert or array_to_json
    names = sorted(outputs)
    if not row_format:
        if len(names) == 1:
            return {"outputs": array_to_json_(outputs[names[0]], names[0])}
        return {"outputs": {n: array_to_json_(outputs[n], n) for n in names}}
    batch = None
    for n in names:
        a = outputs[n]
        if a.ndim == 0:
            raise BadRequest(f"Tensor name: {n} has no shape information")
        if batch is not None and a.shape[0] != batch:
            raise BadRequest(f"Tensor name: {n} has inconsistent batch size: {a.shape[0]} expecting: {batch}")
        batch = a.shape[0]
    if len(names) == 1:
        return {"predictions": array_to_json_(outputs[names[0]], names[0])}
    columns = {n: array_to_json_(outputs[n], n) for n in names}
    return {"predictions": [{n: columns[n][i] for n in names} for i in range(batch or 0)]}


_ORJSON_DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                                 np.uint8, np.uint16, np.uint32, np.uint64, np.bool_))


def _as_is(array, name):
    return array


def json_bytes(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def predict_body(outputs: Dict[str, np.ndarray], row_format: bool) -> bytes:
    """The :predict response body.

    Numeric outputs holding only finite values go to orjson as numpy arrays: it writes float32 in
    the shortest form that round-trips in float32 (the digits `array_to_json` gives) and every
    other number exactly, in C: 7 us for 100 probabilities where `array_to_json` + `json` took
    145. Anything else (text, NaN and infinities, which orjson would write as null, 0-d or
    non-contiguous arrays) takes `predict_response` + `json` as before; both give the same JSON
    values (tests/serving/test_codec_json.py)."""
    if all(getattr(a, "dtype", None) in _ORJSON_DTYPES and (a.dtype.kind != "f" or np.isfinite(a).all())
           for a in outputs.values()):
        try:
            return orjson.dumps(predict_response(outputs, row_format, convert=_as_is), option=orjson.OPT_SERIALIZE_NUMPY)
        except orjson.JSONEncodeError:  # 0-d or non-contiguous arrays
            pass
    return json_bytes(predict_response(outputs, row_format))


# ---------------------------------------------------------------------------------------------
# Classify / regress on top of a signature's outputs


def _single_score_output(sig: Signature, outputs: Dict[str, np.ndarray]) -> Optional[np.ndarray]:
    floats = [n for n, a in outputs.items() if a.dtype.kind == "f"]
    if len(outputs) == 1 and len(floats) == 1:
        return outputs[floats[0]]
    return None


def classify_results(sig: Signature, outputs: Dict[str, np.ndarray], batch: int) -> List[List[Tuple[str, float]]]:
    """[[(label, score), ...] per example]. A predict signature with one float output of shape [n]
    or [n, 1] is read as a binary classifier (labels "0" and "1"); [n, k] as k classes "0".."k-1"."""
    if sig.method_name == "tensorflow/serving/classify":
        classes, scores = outputs.get("classes"), outputs.get("scores")
        if classes is None and scores is None:
            raise BadRequest(f"signature {sig.name} has neither 'classes' nor 'scores' outputs")
        ref = scores if scores is not None else classes
        ref = ref.reshape(batch, -1)
        results = []
        for i in range(batch):
            row = []
            for j in range(ref.shape[1]):
                label = classes.reshape(batch, -1)[i, j] if classes is not None else b""
                label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                score = float(str(scores.reshape(batch, -1)[i, j])) if scores is not None else 0.0
                row.append((label, score))
            results.append(row)
        return results
    scores = _single_score_output(sig, outputs)
    if scores is None or scores.ndim not in (1, 2) or scores.shape[0] != batch:
        raise BadRequest(
            f"signature {sig.name} ({sig.method_name}) cannot classify: it needs 'classes'/'scores' outputs "
            "or a single float output of shape [batch] or [batch, k]"
        )
    scores = scores.reshape(batch, -1)
    if scores.shape[1] == 1:
        return [[("0", float(str(np.float32(1.0) - s))), ("1", float(str(s)))] for s in scores[:, 0]]
    return [[(str(j), float(str(s))) for j, s in enumerate(row)] for row in scores]


def regress_results(sig: Signature, outputs: Dict[str, np.ndarray], batch: int) -> List[float]:
    if sig.method_name == "tensorflow/serving/regress":
        values = outputs.get("outputs")
    else:
        values = _single_score_output(sig, outputs)
    if values is None or values.size != batch or values.shape[0] != batch:
        raise BadRequest(
            f"signature {sig.name} ({sig.method_name}) cannot regress: it needs one float output of shape "
            "[batch] or [batch, 1]"
        )
    return [float(str(v)) for v in values.reshape(batch)]


def example_input_of(sig: Signature, verb: str) -> str:
    name = sig.example_input
    if name is None:
        raise BadRequest(f"signature {sig.name} does not take serialized tf.Examples, so it cannot {verb}")
    return name
