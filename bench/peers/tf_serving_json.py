"""TF Serving's `:predict` JSON over a SavedModel, written the way a team writes it by hand.

Shared by the benchmark's peer servers (bench/peers/fastapi_server.py, bench/peers/kserve_server.py),
so that both do the same model work and differ only in the serving framework around it. Only
TensorFlow and numpy: it runs in the TFX environment (.venv) and in the KServe one (.venv-kserve).

What it understands (TF Serving's REST API, the parts the benchmark sends and a little more):
- `{"instances": [...]}` (row form) -> `{"predictions": [...]}`, `{"inputs": ...}` (columnar) ->
  `{"outputs": ...}`, with an optional `signature_name` (default `serving_default`);
- a signature whose inputs are named tensors: rows are dicts of those names (or bare values for a
  single input), columns a dict of lists;
- a signature with one string input of serialized tf.Examples (the TFX Trainer's `serving_default`):
  `{"b64": ...}` values as they are, or feature dicts made into tf.Examples with the protobuf API,
  each value typed by its Python type (int -> int64_list, float -> float_list, str -> bytes_list),
  which is what most hand-written servers do (no schema lookup).
Nothing is tuned: the public `ConcreteFunction` call, `tf.constant` per input, `.numpy().tolist()`.
"""

from __future__ import annotations

import base64
from typing import Any

import tensorflow as tf


class BadRequest(ValueError):
    """The request does not fit the signature (the servers answer 400)."""


def load(model_dir: str):
    """The SavedModel as `tf.saved_model.load` gives it."""
    return tf.saved_model.load(model_dir)


def _to_example(row: dict) -> bytes:
    example = tf.train.Example()
    for name, value in row.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        for item in values:
            if isinstance(item, str):
                feature.bytes_list.value.append(item.encode())
            elif isinstance(item, bool) or not isinstance(item, (int, float)):
                raise BadRequest(f"feature {name!r}: unsupported value {item!r}")
            elif isinstance(item, int):
                feature.int64_list.value.append(item)
            else:
                feature.float_list.value.append(item)
    return example.SerializeToString()


def _string_value(value: Any) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, dict):
        return _to_example(value)
    if isinstance(value, str):
        return value.encode()
    raise BadRequest(f"expected a string, {{'b64': ...}} or a feature dict, got {value!r}")


def _columns(body: dict, specs: dict) -> tuple:
    """(input name -> list of values, row form?) from a request body."""
    names = list(specs)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise BadRequest("'instances' must be a list")
        if len(names) == 1 and not all(isinstance(r, dict) and set(r) == set(names) for r in rows):
            return {names[0]: rows}, True
        try:
            return {name: [row[name] for row in rows] for name in names}, True
        except (KeyError, TypeError) as err:
            raise BadRequest(f"every instance needs the inputs {names}: {err}") from err
    if "inputs" in body:
        inputs = body["inputs"]
        if isinstance(inputs, dict) and set(inputs) == set(names):
            return inputs, False
        if len(names) == 1:
            return {names[0]: inputs}, False
        raise BadRequest(f"'inputs' must name the inputs {names}")
    raise BadRequest("the body needs 'instances' or 'inputs'")


def predict(model, body: dict) -> dict:
    """TF Serving's `:predict` answer to `body` (a parsed JSON object)."""
    name = body.get("signature_name") or "serving_default"
    if name not in model.signatures:
        raise BadRequest(f"no signature {name!r}; the model has {sorted(model.signatures)}")
    function = model.signatures[name]
    specs = function.structured_input_signature[1]
    columns, row_form = _columns(body, specs)
    feeds = {}
    for input_name, spec in specs.items():
        values = columns[input_name]
        if spec.dtype == tf.string:
            values = [_string_value(v) for v in values]
        try:
            feeds[input_name] = tf.constant(values, dtype=spec.dtype)
        except (TypeError, ValueError) as err:
            raise BadRequest(f"input {input_name!r}: {err}") from err
    try:
        outputs = {key: value.numpy() for key, value in function(**feeds).items()}
    except (tf.errors.InvalidArgumentError, TypeError, ValueError) as err:
        raise BadRequest(str(err).splitlines()[0]) from err
    if not row_form:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {key: value.tolist() for key, value in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    lists = {key: value.tolist() for key, value in outputs.items()}
    rows = len(next(iter(lists.values())))
    return {"predictions": [{key: value[i] for key, value in lists.items()} for i in range(rows)]}
