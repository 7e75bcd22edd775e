"""Requests built from real rows, sent to every signature of a running server over REST and gRPC.

What a client of the pushed model will do, in miniature: read the signature defs the server
exposes (`GET .../metadata`), then call each signature with the same rows through REST `:predict`
and gRPC `Predict`, and check that each answers OK with one row of output per row sent (every
output tensor, over gRPC). A signature that takes serialized tf.Examples (the model's
`serving_default`) gets the rows as they are stored; one that takes named tensors
(`serving_features`) gets each input from the feature of the same name, 0 or "" when a row lacks
it (what docs/serving.md tells clients to send). A failure raises NotServable naming the signature,
the API and the server's own error.
"""

from __future__ import annotations

import base64
from typing import Dict, List, Sequence

import numpy as np

from components.infra_validator.candidate_server import NotServable
from serving.net import http

REQUEST_TIMEOUT = 30.0
STRING, INT = "DT_STRING", ("DT_INT64", "DT_INT32", "DT_INT16", "DT_INT8")
NUMPY_TYPES = {"DT_STRING": object, "DT_INT64": np.int64, "DT_INT32": np.int32, "DT_INT16": np.int16,
               "DT_INT8": np.int8, "DT_DOUBLE": np.float64, "DT_HALF": np.float16}  # others: float32


def read_examples(files: Sequence[str], limit: int) -> List[bytes]:
    """The first `limit` serialized tf.Examples of TFRecord files (gzipped when named `*.gz`)."""
    import tensorflow as tf

    out: List[bytes] = []
    for path in files:
        compression = "GZIP" if str(path).endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(str(path), compression_type=compression).take(limit - len(out)):
            out.append(record.numpy())
        if len(out) >= limit:
            break
    return out


def signature_defs(rest_url: str) -> Dict[str, dict]:
    """{name: signature def as JSON} of what the server serves (init ops left out)."""
    code, body = http(f"{rest_url}/metadata", timeout=REQUEST_TIMEOUT)
    if code != 200 or not isinstance(body, dict):
        raise NotServable(f"GET {rest_url}/metadata answered {code}: {_error(body)}")
    defs = body.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    return {name: sdef for name, sdef in defs.items() if not name.startswith("__")}


def _error(body) -> str:
    text = body.get("error") if isinstance(body, dict) and "error" in body else body
    return " ".join(str(text).split())[:300]


def _takes_examples(sdef: dict) -> bool:
    inputs = list(sdef.get("inputs", {}).values())
    return len(inputs) == 1 and inputs[0].get("dtype") == STRING


def _dims(info: dict) -> List[int]:
    return [int(d.get("size", -1)) for d in info.get("tensor_shape", {}).get("dim", [])]


def _features(serialized: bytes) -> dict:
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        if values:
            out[name] = values[0]
    return out


def _value(raw, dtype: str):
    if dtype == STRING:
        return raw if isinstance(raw, bytes) else str(raw).encode()
    if dtype in INT:
        return int(raw) if not isinstance(raw, bytes) else 0
    return float(raw) if not isinstance(raw, bytes) else 0.0


def _columns(sdef: dict, examples: List[bytes]) -> Dict[str, np.ndarray]:
    """{input name: array of the rows} for the signature's inputs."""
    if _takes_examples(sdef):
        (name,) = sdef["inputs"]
        return {name: np.array(examples, dtype=object)}
    rows = [_features(e) for e in examples]
    columns = {}
    for name, info in sdef.get("inputs", {}).items():
        dtype = info.get("dtype", "")
        missing = b"" if dtype == STRING else 0
        values = [_value(row.get(name, missing), dtype) for row in rows]
        dims = _dims(info)
        shape = [len(rows)] + [1] * max(0, len(dims) - 1)
        columns[name] = np.array(values, dtype=NUMPY_TYPES.get(dtype, np.float32)).reshape(shape)
    return columns


def _json_value(value):
    if isinstance(value, np.ndarray):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}
    return value.item() if hasattr(value, "item") else value


def rest_predict(rest_url: str, name: str, sdef: dict, columns: Dict[str, np.ndarray], rows: int) -> None:
    if _takes_examples(sdef):
        (values,) = columns.values()
        instances = [{"b64": base64.b64encode(v).decode()} for v in values]
    else:
        instances = [{key: _json_value(column[i]) for key, column in columns.items()} for i in range(rows)]
    code, body = http(f"{rest_url}:predict", "POST", {"signature_name": name, "instances": instances},
                      timeout=REQUEST_TIMEOUT)
    if code != 200:
        raise NotServable(f"signature {name} answered {code} over REST :predict: {_error(body)}")
    predictions = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(predictions, list) or len(predictions) != rows:
        got = len(predictions) if isinstance(predictions, list) else "no"
        raise NotServable(f"signature {name} answered {got} predictions for {rows} rows over REST :predict")


def grpc_predict(target: str, model_name: str, name: str, sdef: dict, columns: Dict[str, np.ndarray],
                 rows: int) -> None:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model_name, name
    for key, column in columns.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(column))
    with grpc.insecure_channel(target) as channel:
        try:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                                          timeout=REQUEST_TIMEOUT)
        except grpc.RpcError as err:
            raise NotServable(f"signature {name} answered {err.code().name} over gRPC Predict: "
                              f"{' '.join(str(err.details()).split())[:300]}") from err
    expected = set(sdef.get("outputs", {}))
    if set(response.outputs) != expected:
        raise NotServable(f"signature {name} answered outputs {sorted(response.outputs)} over gRPC Predict, "
                          f"its signature def names {sorted(expected)}")
    for key, tensor in response.outputs.items():
        first = tensor.tensor_shape.dim[0].size if tensor.tensor_shape.dim else None
        if first != rows:
            raise NotServable(f"signature {name} answered {first} rows of output {key} for {rows} rows over gRPC "
                              "Predict")


def probe_all(rest_url: str, grpc_target: str, model_name: str, examples: List[bytes],
              required: Sequence[str]) -> List[str]:
    """Calls every signature over REST and gRPC; returns the signature names. NotServable on the
    first failure, or when a `required` signature is not served."""
    defs = signature_defs(rest_url)
    missing = [name for name in required if name not in defs]
    if missing:
        raise NotServable(f"the model has no signature {', '.join(missing)} (clients call it); it has: "
                          f"{', '.join(sorted(defs)) or 'none'}")
    for name in sorted(defs):
        columns = _columns(defs[name], examples)
        rest_predict(rest_url, name, defs[name], columns, len(examples))
        grpc_predict(grpc_target, model_name, name, defs[name], columns, len(examples))
    return sorted(defs)
