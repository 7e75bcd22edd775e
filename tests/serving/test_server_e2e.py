"""The model server end to end: a real `mlops serve` process, the model a real pipeline run pushed,
real HTTP and gRPC clients.

Servers (each start imports TensorFlow, a few seconds):
  contract: versions 1 (pipeline model) and 2 (same model, shifted output) pinned by a models.config
            with labels; REST and gRPC contracts, errors, limits, metrics, fuzz, config reload, prune.
  reload:   `latest` policy over a fresh directory; hot reload under load, broken versions, then
            SIGKILL + restart, then SIGTERM with requests in flight.
"""

from __future__ import annotations

import base64
import json
import random
import re
import signal
import socket
import string
import threading
import time
from pathlib import Path

import pytest

from pipelines import services
from serving import home as home_record
from tests.conftest import mlops
from tests.serving.helpers import Http, Server, example_bytes, publish
from tests.serving.load import Load, predict_ok


MODEL = "/v1/models/taxi"


def _config_text(base: Path, versions, labels) -> str:
    policy = " ".join(f"versions: {v}" for v in versions)
    label_text = " ".join(f'version_labels {{ key: "{k}" value: {v} }}' for k, v in labels.items())
    return (f'model_config_list {{ config {{ name: "taxi" base_path: "{base}" model_platform: "tensorflow" '
            f"model_version_policy {{ specific {{ {policy} }} }} {label_text} }} }}\n")


def _probabilities(answer) -> list:
    return [p[0] for p in answer["predictions"]]


@pytest.fixture(scope="module")
def contract(taxi_model, shifted, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    base = root / "models"
    base.mkdir()
    publish(taxi_model["model"], base, 1)
    publish(shifted, base, 2)
    config = root / "models.config"
    config.write_text(_config_text(base, (1, 2), {"stable": 1, "canary": 2}))
    server = Server(taxi_model["home"], root / "server.log", config=config)
    try:
        server.wait_until(lambda: server.available_versions() == [1, 2], what="versions 1 and 2 loaded")
        yield {"server": server, "base": base, "config": config, "rows": taxi_model["rows"],
               "home": taxi_model["home"], "root": root}
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# REST contract


def test_rest_model_status_for_model_version_and_label(contract):
    http = contract["server"].http
    code, _, body = http.get(MODEL)
    assert code == 200
    assert body == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
    ]}
    code, _, body = http.get(f"{MODEL}/versions/1")
    assert code == 200 and [s["version"] for s in body["model_version_status"]] == ["1"]
    code, _, body = http.get(f"{MODEL}/labels/canary")
    assert code == 200 and [s["version"] for s in body["model_version_status"]] == ["2"]


def test_rest_metadata(contract):
    http = contract["server"].http
    code, _, body = http.get(f"{MODEL}/metadata")
    assert code == 200
    assert body["model_spec"] == {"name": "taxi", "signature_name": "", "version": "2"}
    sig = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["examples"]["dtype"] == "DT_STRING"
    assert sig["inputs"]["examples"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert sig["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    code, _, body = http.get(f"{MODEL}/labels/stable/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1"
    code, _, body = http.get(f"{MODEL}/versions/1/metadata")
    assert code == 200 and body["model_spec"]["version"] == "1"


def test_rest_predict_row_and_columnar_formats_agree(contract):
    http, rows = contract["server"].http, contract["rows"][:5]
    code, headers, row = http.post(f"{MODEL}/versions/1:predict", {"instances": rows})
    assert code == 200, row
    assert headers["X-Model-Version"] == "1"
    probabilities = _probabilities(row)
    assert len(probabilities) == 5 and all(0.0 <= p <= 1.0 for p in probabilities)
    # the same examples, serialized by the client, as TF Serving takes them
    b64 = [{"b64": base64.b64encode(example_bytes(r)).decode()} for r in rows]
    code, _, as_b64 = http.post(f"{MODEL}/versions/1:predict", {"instances": b64})
    assert code == 200 and _probabilities(as_b64) == pytest.approx(probabilities, rel=1e-5)
    code, _, named = http.post(f"{MODEL}/versions/1:predict", {"instances": [{"examples": b} for b in b64]})
    assert code == 200 and _probabilities(named) == pytest.approx(probabilities, rel=1e-5)
    # columnar: a list, or an object naming the input
    for inputs in (rows, {"examples": b64}):
        code, _, columnar = http.post(f"{MODEL}/versions/1:predict", {"inputs": inputs, "signature_name": "serving_default"})
        assert code == 200, columnar
        assert set(columnar) == {"outputs"}
        assert [p[0] for p in columnar["outputs"]] == pytest.approx(probabilities, rel=1e-5)
    # versions and labels pick different models: version 2 is the shifted one
    code, headers, shifted = http.post(f"{MODEL}/labels/canary:predict", {"instances": rows})
    assert code == 200 and headers["X-Model-Version"] == "2"
    assert _probabilities(shifted) != pytest.approx(probabilities, rel=1e-3)
    code, headers, latest = http.post(f"{MODEL}:predict", {"instances": rows})
    assert headers["X-Model-Version"] == "2" and _probabilities(latest) == pytest.approx(_probabilities(shifted))
    # another signature: the transform graph
    labelled = [dict(r, tips=1.0) for r in rows[:2]]  # this signature also parses the label
    code, _, transformed = http.post(f"{MODEL}/versions/1:predict",
                                     {"signature_name": "transform_features", "instances": labelled})
    assert code == 200 and isinstance(transformed["predictions"][0], dict), transformed
    assert "fare_xf" in transformed["predictions"][0]


def _features_of(row: dict, metadata_inputs: dict) -> dict:
    """What a JSON client sends to `serving_features`: every input, 0 or "" for a missing value."""
    return {name: row.get(name, "" if spec["dtype"] == "DT_STRING" else 0) for name, spec in metadata_inputs.items()}


def test_rest_serving_features_answers_like_the_examples_signature(contract):
    """The Trainer's second signature takes the raw features as named tensors (TF Serving's own row
    and columnar formats, no tf.Example): for the same trips, missing values included, it must give
    the probabilities serving_default gives."""
    http, rows = contract["server"].http, contract["rows"][:20]
    code, _, meta = http.get(f"{MODEL}/versions/1/metadata")
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_features"]
    inputs = sig["inputs"]
    assert {"fare", "company", "trip_start_hour"} <= set(inputs) and "tips" not in inputs
    assert "trip_start_timestamp" not in inputs  # not a model input: not asked for
    assert inputs["fare"]["dtype"] == "DT_FLOAT" and inputs["company"]["dtype"] == "DT_STRING"
    assert inputs["trip_start_hour"]["dtype"] == "DT_INT64"
    missing = sum(1 for r in rows for name in inputs if name not in r)
    assert missing > 0, "the test rows should include trips with missing values"
    code, _, by_example = http.post(f"{MODEL}/versions/1:predict", {"instances": rows})
    assert code == 200, by_example
    features = [_features_of(r, inputs) for r in rows]
    code, _, by_features = http.post(f"{MODEL}/versions/1:predict",
                                     {"signature_name": "serving_features", "instances": features})
    assert code == 200, by_features
    assert _probabilities(by_features) == pytest.approx(_probabilities(by_example), rel=1e-5, abs=1e-6)
    assert len(set(_probabilities(by_features))) > 1  # distinct trips, distinct answers
    columns = {name: [f[name] for f in features] for name in inputs}
    code, _, columnar = http.post(f"{MODEL}/versions/1:predict",
                                  {"signature_name": "serving_features", "inputs": columns})
    assert code == 200, columnar
    assert [p[0] for p in columnar["outputs"]] == pytest.approx(_probabilities(by_example), rel=1e-5, abs=1e-6)
    # bad input: the same 400s as for any named-input signature, naming the value and the type
    wrong_type = dict(features[0], fare="7.5")
    code, _, err = http.post(f"{MODEL}/versions/1:predict",
                             {"signature_name": "serving_features", "instances": [features[1], wrong_type]})
    assert code == 400 and "'7.5'" in err["error"] and "DT_FLOAT" in err["error"], err
    code, _, err = http.post(f"{MODEL}/versions/1:predict",
                             {"signature_name": "serving_features", "instances": [dict(features[0], fare=True)]})
    assert code == 400 and "DT_FLOAT" in err["error"], err
    incomplete = {k: v for k, v in features[0].items() if k != "company"}
    code, _, err = http.post(f"{MODEL}/versions/1:predict",
                             {"signature_name": "serving_features", "instances": [incomplete]})
    assert code == 400 and "must only have keys" in err["error"] and "company" in err["error"], err


def test_rest_classify_and_regress(contract):
    http, rows = contract["server"].http, contract["rows"][:3]
    _, _, predicted = http.post(f"{MODEL}/versions/1:predict", {"instances": rows})
    p = _probabilities(predicted)
    code, headers, classified = http.post(f"{MODEL}/versions/1:classify", {"examples": rows})
    assert code == 200 and headers["X-Model-Version"] == "1"
    assert [[label for label, _ in result] for result in classified["results"]] == [["0", "1"]] * 3
    assert [result[1][1] for result in classified["results"]] == pytest.approx(p, rel=1e-5)
    assert [result[0][1] + result[1][1] for result in classified["results"]] == pytest.approx([1.0] * 3, rel=1e-5)
    code, _, regressed = http.post(f"{MODEL}/versions/1:regress", {"examples": rows})
    assert code == 200 and regressed["results"] == pytest.approx(p, rel=1e-5)
    # context: features shared by all examples
    shared = {"payment_type": rows[0]["payment_type"]}
    examples = [{k: v for k, v in r.items() if k != "payment_type"} for r in rows[:1]]
    code, _, with_context = http.post(f"{MODEL}/versions/1:regress", {"context": shared, "examples": examples})
    assert code == 200 and with_context["results"] == pytest.approx(p[:1], rel=1e-5)


ROW_ERRORS = [
    # (what, method, path, body, status)
    ("unknown model", "POST", "/v1/models/nope:predict", {"instances": [{}]}, 404),
    ("unknown model status", "GET", "/v1/models/nope", None, 404),
    ("unknown version", "POST", f"{MODEL}/versions/99:predict", "ROWS", 404),
    ("unknown version status", "GET", f"{MODEL}/versions/99", None, 404),
    ("unknown version metadata", "GET", f"{MODEL}/versions/99/metadata", None, 404),
    ("unknown label", "POST", f"{MODEL}/labels/nope:predict", "ROWS", 404),
    ("unknown label status", "GET", f"{MODEL}/labels/nope", None, 404),
    ("unknown path", "GET", "/v2/whatever", None, 404),
    ("unknown verb", "POST", f"{MODEL}:explain", "ROWS", 404),
    ("GET on predict", "GET", f"{MODEL}:predict", None, 405),
    ("POST on status", "POST", MODEL, "ROWS", 405),
    ("DELETE on status", "DELETE", MODEL, None, 405),
    ("malformed JSON", "POST", f"{MODEL}:predict", "{'instances': [", 400),
    ("empty body", "POST", f"{MODEL}:predict", "", 400),
    ("not an object", "POST", f"{MODEL}:predict", [1, 2], 400),
    ("no instances", "POST", f"{MODEL}:predict", {"foo": 1}, 400),
    ("both formats", "POST", f"{MODEL}:predict", {"instances": [], "inputs": []}, 400),
    ("empty instances", "POST", f"{MODEL}:predict", {"instances": []}, 400),
    ("string for a float feature", "POST", f"{MODEL}:predict", {"instances": [{"fare": "expensive"}]}, 400),
    ("float for an int feature", "POST", f"{MODEL}:predict", {"instances": [{"trip_start_hour": 1.5}]}, 400),
    ("number for a string feature", "POST", f"{MODEL}:classify", {"examples": [{"payment_type": 3}]}, 400),
    ("unknown feature", "POST", f"{MODEL}:predict", {"instances": [{"tips": 1.0}]}, 400),
    ("missing required features", "POST", f"{MODEL}:predict", {"instances": [{"fare": 1.0}]}, 400),
    ("not a serialized example", "POST", f"{MODEL}:predict", {"instances": [{"b64": "bm90IGFuIGV4YW1wbGU="}]}, 400),
    ("bad base64", "POST", f"{MODEL}:predict", {"instances": [{"b64": "***"}]}, 400),
    ("nested list", "POST", f"{MODEL}:predict", {"instances": [[["x"]]]}, 400),
    ("unknown signature", "POST", f"{MODEL}:predict", {"signature_name": "nope", "instances": ["x"]}, 400),
    ("no examples", "POST", f"{MODEL}:classify", {"instances": [{}]}, 400),
    ("examples not a list", "POST", f"{MODEL}:regress", {"examples": {}}, 400),
    ("huge int", "POST", f"{MODEL}:classify", {"examples": [{"trip_start_hour": 10**30}]}, 400),
    ("float over float32", "POST", f"{MODEL}:classify", {"examples": [{"fare": 1e300}]}, 400),
    ("null value", "POST", f"{MODEL}:regress", {"examples": [{"fare": None}]}, 400),
    ("nested feature value", "POST", f"{MODEL}:regress", {"examples": [{"fare": [[1.0]]}]}, 400),
]


@pytest.mark.parametrize("what,method,path,body,status", ROW_ERRORS, ids=[e[0] for e in ROW_ERRORS])
def test_rest_errors_have_tf_serving_codes_and_an_error_message(contract, what, method, path, body, status):
    if body == "ROWS":
        body = {"instances": contract["rows"][:1]}
    code, headers, answer = Http(contract["server"].rest_port).request(method, path, body)
    assert code == status, (what, answer)
    assert isinstance(answer, dict) and set(answer) == {"error"} and answer["error"], answer
    assert headers["Content-Type"] == "application/json"


def test_invalid_utf8_and_deep_nesting_are_400(contract):
    http = Http(contract["server"].rest_port)
    assert http.request("POST", f"{MODEL}:predict", b'{"instances": ["\xff\xfe"]}')[0] == 400
    assert http.request("POST", f"{MODEL}:predict", b"[" * 100000 + b"]" * 100000)[0] == 400
    assert http.request("POST", f"{MODEL}:predict", '{"instances": [' + "9" * 6000 + "]}")[0] == 400


def test_oversize_body_is_413_and_the_server_keeps_serving(contract):
    import requests

    port = contract["server"].rest_port
    response = requests.post(f"http://127.0.0.1:{port}{MODEL}:predict", data=b"x" * (9 << 20), timeout=30)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert Http(port).post(f"{MODEL}:predict", {"instances": contract["rows"][:1]})[0] == 200


# ---------------------------------------------------------------------------------------------
# gRPC contract


def test_grpc_predict_classify_regress_metadata_status(contract):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
        predict_pb2, prediction_service_pb2_grpc, regression_pb2,
    )

    rows = contract["rows"][:3]
    rest = contract["server"].http.post(f"{MODEL}/versions/1:predict", {"instances": rows})[2]
    expected = _probabilities(rest)
    channel = grpc.insecure_channel(f"127.0.0.1:{contract['server'].grpc_port}")
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    serialized = [example_bytes(r) for r in rows]

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxi"
    request.model_spec.version_label = "stable"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized))
    reply = predictions.Predict(request, timeout=30)
    assert reply.model_spec.version.value == 1 and reply.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(reply.outputs["probabilities"])[:, 0].tolist() == pytest.approx(expected, rel=1e-5)

    examples = [tf.train.Example.FromString(s) for s in serialized]
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "taxi"
    classify.model_spec.version.value = 1
    classify.input.example_list.examples.extend(examples)
    result = predictions.Classify(classify, timeout=30).result
    assert [c.classes[1].label for c in result.classifications] == ["1"] * 3
    assert [c.classes[1].score for c in result.classifications] == pytest.approx(expected, rel=1e-5)

    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "taxi"
    regress.model_spec.version.value = 1
    regress.input.example_list.examples.extend(examples)
    regressed = predictions.Regress(regress, timeout=30)
    assert [r.value for r in regressed.result.regressions] == pytest.approx(expected, rel=1e-5)

    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "taxi"
    metadata.metadata_field.append("signature_def")
    answer = predictions.GetModelMetadata(metadata, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    answer.metadata["signature_def"].Unpack(signatures)
    assert answer.model_spec.version.value == 2
    assert signatures.signature_def["serving_default"].inputs["examples"].dtype == tf.string.as_datatype_enum

    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "taxi"
    versions = models.GetModelStatus(status, timeout=30).model_version_status
    assert sorted((v.version, v.state) for v in versions) == [(1, 30), (2, 30)]  # 30 = AVAILABLE

    for bad, code in ((("name", "nope"), grpc.StatusCode.NOT_FOUND), (("version", 99), grpc.StatusCode.NOT_FOUND),
                      (("label", "nope"), grpc.StatusCode.NOT_FOUND)):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = bad[1] if bad[0] == "name" else "taxi"
        if bad[0] == "version":
            request.model_spec.version.value = bad[1]
        if bad[0] == "label":
            request.model_spec.version_label = bad[1]
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized))
        with pytest.raises(grpc.RpcError) as err:
            predictions.Predict(request, timeout=30)
        assert err.value.code() == code
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxi"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"garbage"]))
    with pytest.raises(grpc.RpcError) as err:
        predictions.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


# ---------------------------------------------------------------------------------------------
# Metrics, fuzz, config reload, retention against the running server


def test_prometheus_metrics(contract):
    http = Http(contract["server"].rest_port)
    http.post(f"{MODEL}:predict", {"instances": contract["rows"][:1]})
    http.post("/v1/models/nope:predict", {"instances": [1]})
    code, headers, raw = http.get("/monitoring/prometheus/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    text = raw.decode()
    assert 'mlops_serving_requests_total{api="rest",code="200",method="predict",model="taxi",version="2"}' in text
    assert 'mlops_serving_requests_total{api="rest",code="404",method="predict",model="unknown",version=""}' in text
    assert 'mlops_serving_request_latency_seconds_bucket{api="rest",le="0.005",method="predict",model="taxi",version="2"}' in text
    assert 'mlops_serving_loaded_version{model="taxi"} 2.0' in text
    assert 'mlops_serving_model_load_failures_total{model="taxi"} 0.0' in text
    assert 'mlops_serving_requests_total{api="grpc",code="200",method="predict",model="taxi",version="1"}' in text
    # A refused request is counted against the version it reached (the serving alerts roll back by
    # version), over gRPC as over REST (the garbage request of the gRPC test above).
    assert re.search(r'mlops_serving_requests_total\{api="grpc",code="400",method="predict",model="taxi",version="\d+"\}',
                     text), text


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, -(2**63) - 1, 10**40, 1e308, -1e-320, 3.5, float("inf"), float("nan")])
    if kind == 3:
        return "".join(rng.choice(string.printable + "\u00e9\u4e2d\ud800") for _ in range(rng.randrange(12)))
    if kind == 4:
        return {"b64": rng.choice(["", "=", "AAAA", "not base64!", "Zm9v"])}
    if kind == 5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["fare", "company", "trip_miles", "trip_start_hour", "payment_type", "examples", "b64",
                        "instances", "inputs", "x"]): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def _fuzz_bodies(rng: random.Random, rows):
    row = rows[0]
    for _ in range(150):  # random JSON documents
        yield json.dumps(_random_json(rng), allow_nan=True).encode("utf-8", "surrogatepass")
    for _ in range(150):  # a good row with one feature of the wrong type
        broken = dict(row)
        broken[rng.choice(sorted(row))] = _random_json(rng)
        key = rng.choice(["instances", "examples", "inputs"])
        yield json.dumps({key: [broken]}).encode("utf-8", "surrogatepass")
    for _ in range(40):  # huge numbers
        broken = dict(row)
        broken[rng.choice(sorted(row))] = rng.choice([10**400, -10**400, 1e400, 2**64, "1" * 5000])
        text = json.dumps({"instances": [broken]}).replace("Infinity", "1e999")
        yield text.encode()
    for n in (100, 2000, 50000):  # deep nesting
        yield (b'{"instances": ' + b"[" * n + b"]" * n + b"}")
        yield (b'{"examples": [{"fare": ' + b"[" * n + b"1" + b"]" * n + b"}]}")
    for _ in range(40):  # invalid UTF-8 and random bytes
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        yield blob
        yield b'{"instances": [{"company": "' + blob.replace(b'"', b"") + b'"}]}'


def test_fuzzed_requests_get_only_4xx_and_the_server_stays_up(contract):
    server, rng = contract["server"], random.Random(6)
    http = Http(server.rest_port)
    paths = [f"{MODEL}:predict", f"{MODEL}:classify", f"{MODEL}:regress", f"{MODEL}/labels/stable:predict"]
    codes = {}
    for body in _fuzz_bodies(rng, contract["rows"]):
        code, _, answer = http.request("POST", rng.choice(paths), body, {"Content-Type": "application/json"})
        codes[code] = codes.get(code, 0) + 1
        assert 200 <= code < 500, (code, body[:200], answer)
        if code >= 400:
            assert isinstance(answer, dict) and "error" in answer, answer
    assert codes.get(400, 0) > 300, codes
    # garbage on the wire: bad request lines and headers get a 4xx or a closed connection, never a 5xx
    for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /v1/models/taxi HTTP/9.9\r\n\r\n",
                 b"POST /v1/models/taxi:predict HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                 b"POST /v1/models/taxi:predict HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
                 b"POST /v1/models/taxi:predict HTTP/1.1\r\nno colon in this header\r\n\r\n",
                 b"GET /v1/models/taxi HTTP/1.1\r\n" + b"X-A: b\r\n" * 150 + b"\r\n",
                 b"GET /v1/models/taxi HTTP/1.1\r\n folded first\r\n\r\n",
                 b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", bytes(range(256)) * 4):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=10) as sock:
            sock.sendall(junk)
            try:
                answer = sock.recv(200)
            except ConnectionResetError:
                answer = b""
        if answer:
            status = int(answer.split(b" ", 2)[1])
            assert 400 <= status < 500, answer
    assert server.alive()
    code, body = server.status()
    assert code == 200 and {s["state"] for s in body["model_version_status"]} == {"AVAILABLE"}
    metrics = Http(server.rest_port).request("GET", "/monitoring/prometheus/metrics")[2]
    assert b'code="500"' not in metrics


def test_labels_follow_config_file_changes(contract):
    server, base, config = contract["server"], contract["base"], contract["config"]
    publish(contract["home"] / "serving" / "models" / "taxi" / "1", base, 3)  # same bytes as 1
    time.sleep(1.5)
    assert server.available_versions() == [1, 2]  # 3 is not pinned: not loaded
    assert Http(server.rest_port).post(f"{MODEL}/versions/3:predict", {"instances": contract["rows"][:1]})[0] == 404
    config.write_text(_config_text(base, (2, 3), {"stable": 3, "canary": 2}))
    server.wait_until(lambda: server.available_versions() == [2, 3], what="config reload to versions 2, 3")
    code, headers, _ = Http(server.rest_port).post(f"{MODEL}/labels/stable:predict",
                                                   {"instances": contract["rows"][:1]})
    assert code == 200 and headers["X-Model-Version"] == "3"
    assert "config changed" in server.log()


def test_prune_keeps_labelled_and_newest_versions_of_a_served_directory(contract):
    server, base = contract["server"], contract["base"]
    for v in (4, 5):
        publish(contract["home"] / "serving" / "models" / "taxi" / "1", base, v)
    # labels: stable=3, canary=2 (previous test); --keep 1 keeps 5 (newest), 3 and 2 (labels).
    # No --server: the server recorded as the home's (as `make up` records it) is asked what it has loaded.
    home = contract["home"]
    home_record.record_model_server(home, server.proc.pid, server.rest_port, server.grpc_port, base)
    try:
        result = json.loads(mlops(home, "models", "prune", "--keep", "1", "--model-base-path", str(base),
                                  "--model-config-file", str(contract["config"]), "--json").stdout)
    finally:
        services.pid_file(home, services.MODEL_SERVER).unlink(missing_ok=True)
    assert result["deleted"] == [1, 4]
    assert "loaded by the running server" in result["keep"]["2"] and "label 'canary'" in result["keep"]["2"]
    assert sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) == [2, 3, 5]
    code, headers, _ = Http(server.rest_port).post(f"{MODEL}/labels/stable:predict",
                                                   {"instances": contract["rows"][:1]})
    assert code == 200 and headers["X-Model-Version"] == "3"


# ---------------------------------------------------------------------------------------------
# Hot reload, broken versions, SIGKILL + restart, SIGTERM


RELOAD: dict = {}  # the server process the reload tests hand on to each other


@pytest.fixture(scope="module")
def reload_dir(taxi_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("reload")
    base = root / "models"
    base.mkdir()
    publish(taxi_model["model"], base, 1)
    yield root
    server = RELOAD.pop("server", None)
    if server is not None and server.alive():
        server.kill()


def _load(port: int, body: dict, threads: int = 8) -> Load:
    """`threads` clients with keep-alive connections sending :predict until stopped; each client's
    answers (`by_client`) as (version, probabilities); any other status than 200 is a failure."""

    def request(http: Http):
        headers, answer = predict_ok(http, body, f"{MODEL}:predict")
        return int(headers["X-Model-Version"]), tuple(_probabilities(answer))

    return Load(port, request, threads)


def _latest_version(load: Load) -> int:
    """The highest version among the clients' latest answers (0 before any)."""
    return max((a[-1][0] for a in load.by_client if a), default=0)


def test_hot_reload_under_load_then_rollback_drops_no_request(taxi_model, shifted, reload_dir):
    base = reload_dir / "models"
    server = Server(taxi_model["home"], reload_dir / "server.log", base=base)
    body = {"instances": taxi_model["rows"][:4]}
    server.wait_serving(1)
    code, _, first = Http(server.rest_port).post(f"{MODEL}:predict", body)
    assert code == 200
    expected_v1 = tuple(_probabilities(first))
    started = time.monotonic()
    with _load(server.rest_port, body) as load:
        server.wait_until(lambda: len(load.answers) > 40, 30, "load running")
        publish(shifted, base, 2)
        server.wait_until(lambda: _latest_version(load) == 2, 120, "answers from version 2")
        switched_2 = time.monotonic()
        publish(taxi_model["model"], base, 3)  # a rollback: a newer version with the old bytes
        server.wait_until(lambda: _latest_version(load) == 3, 120, "answers from version 3")
        switched_3 = time.monotonic()
        settle = len(load.answers)
        server.wait_until(lambda: len(load.answers) > settle + 40, 30, "more answers from version 3")
    assert load.failures == [], load.failures[:5]
    assert len(load.answers) > 200
    expected = {1: expected_v1, 3: expected_v1}
    for answers in load.by_client:
        versions = [v for v, _ in answers]
        assert versions == sorted(versions), "a client saw an older version after a newer one"
        assert set(versions) <= {1, 2, 3}
        for version, probabilities in answers:
            if version == 2:
                expected.setdefault(2, probabilities)
            assert probabilities == pytest.approx(expected[version], rel=1e-5), version
    assert expected[2] != pytest.approx(expected_v1, rel=1e-3)
    log = server.log()
    for v in (2, 3):
        assert log.index(f"version {v}: loaded and warmed up") < log.index(f"now serving version {v}")
        assert f"version {v - 1}: unloaded" in log
    # every answer above came through the fast path: the direct call on the single-threaded executor
    assert "(serving_default, serving_features, transform_features: direct call, single-threaded executor)" in log
    assert switched_3 - started < 120
    print(f"hot reload: version 2 served {switched_2 - started:.1f}s after the test start, "
          f"version 3 {switched_3 - switched_2:.1f}s after its push; {len(load.answers)} answers, 0 failures")
    RELOAD["server"] = server  # the next tests continue with this process


def _current(reload_dir) -> Server:
    server = RELOAD.get("server")
    if server is None or not server.alive():
        pytest.skip("needs the server of test_hot_reload_under_load_then_rollback_drops_no_request")
    return server


def _remove_variables(path: Path) -> None:
    import shutil

    shutil.rmtree(path / "variables")


def _corrupt_saved_model(path: Path) -> None:
    (path / "saved_model.pb").write_bytes(b"\x08\x01 this is not a SavedModel" * 10)


def _remove_variable_data(path: Path) -> None:
    for data in (path / "variables").glob("variables.data-*"):
        data.unlink()


def test_partial_and_corrupt_versions_are_skipped_while_the_old_one_serves(taxi_model, reload_dir):
    server = _current(reload_dir)
    base = reload_dir / "models"
    body = {"instances": taxi_model["rows"][:2]}
    with _load(server.rest_port, body, threads=2) as load:
        publish(taxi_model["model"], base, 4, mutate=_remove_variables)
        publish(taxi_model["model"], base, 5, mutate=_corrupt_saved_model)
        publish(taxi_model["model"], base, 6, mutate=_remove_variable_data)

        def failed():
            code, status = server.status()
            states = {int(s["version"]): s for s in status["model_version_status"]}
            return all(v in states and states[v]["status"]["error_code"] != "OK" for v in (4, 5, 6)) and states

        states = server.wait_until(failed, 60, "versions 4, 5, 6 reported as failed")
        time.sleep(2.5)  # a few more scans: still not retried, still serving 3
    assert load.failures == []
    assert {v for v, _ in load.answers} == {3}
    assert states[3]["state"] == "AVAILABLE"
    for v in (4, 5, 6):
        assert states[v]["state"] == "END" and states[v]["status"]["error_message"]
    log = server.log()
    assert log.count("version 5: load FAILED") == 1, "retried although its files did not change"
    assert "saved_model.pb" in states[5]["status"]["error_message"]
    assert Http(server.rest_port).post(f"{MODEL}/versions/5:predict", body)[0] == 503
    metrics = Http(server.rest_port).get("/monitoring/prometheus/metrics")[2].decode()
    assert 'mlops_serving_model_load_failures_total{model="taxi"} 3.0' in metrics
    # a version whose files change is tried again: version 4 gets its variables back and serves
    import shutil

    shutil.copytree(taxi_model["model"] / "variables", base / "4" / "variables")
    server.wait_serving(4, 60)


def test_sigkill_then_restart_serves_the_newest_good_version(taxi_model, reload_dir):
    server = _current(reload_dir)
    assert server.kill() == -signal.SIGKILL
    restarted = Server(taxi_model["home"], reload_dir / "server-restarted.log", base=reload_dir / "models")
    RELOAD["server"] = restarted
    restarted.wait_serving(4)
    code, headers, _ = restarted.http.post(f"{MODEL}:predict", {"instances": taxi_model["rows"][:1]})
    assert code == 200 and headers["X-Model-Version"] == "4"
    assert restarted.available_versions() == [4]
    log = restarted.log()
    assert "version 6: load FAILED" in log and "version 5: load FAILED" in log


def test_sigterm_finishes_in_flight_requests_and_exits_0(taxi_model, reload_dir):
    import http.client

    server = _current(reload_dir)
    body = json.dumps({"instances": taxi_model["rows"] * 40}).encode()  # ~2000 examples: a slow request
    results, signalled_at = [], []

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        while not signalled_at:
            sent = None
            try:
                conn.request("POST", f"{MODEL}:predict", body, {"Content-Type": "application/json"})
                sent = time.monotonic()  # the whole request is on the wire
                response = conn.getresponse()
                response.read()
                outcome = response.status
            except Exception as err:  # noqa: BLE001
                outcome = repr(err)
                conn.close()
            results.append((sent, outcome))
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    server.wait_until(lambda: len(results) >= 4, 60, "slow requests answered")
    time.sleep(0.3)
    signalled_at.append(time.monotonic())
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(30)
    exit_seconds = time.monotonic() - signalled_at[0]
    for t in threads:
        t.join(30)
    assert code == 0, server.log()[-2000:]
    # every request that reached the server before the signal got its answer
    in_flight = [outcome for sent, outcome in results if sent is not None and sent < signalled_at[0] - 0.05]
    assert in_flight and all(outcome == 200 for outcome in in_flight), results
    assert "received SIGTERM" in server.log() and "stopped in" in server.log()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.rest_port), timeout=2).close()
    print(f"SIGTERM: exit 0 after {exit_seconds:.1f}s; {len(in_flight)} requests sent before it, all answered 200")
    server.stop()


def test_concurrent_rest_and_grpc_clients_each_get_their_own_answers_from_shared_model_calls(contract):
    """8 clients at once (4 REST, 4 gRPC), each sending its own rows, one bad request among them:
    every good answer equals the answer to the same rows sent alone, the bad one alone is a 400 /
    INVALID_ARGUMENT, and some model calls answered several requests (batching)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    server, rows = contract["server"], contract["rows"]
    version = max(server.available_versions())  # earlier tests change the config; pin what serves now
    path = f"{MODEL}/versions/{version}:predict"
    http = Http(server.rest_port)
    alone = {i: _probabilities(http.post(path, {"instances": rows[i:i + 1 + i % 3]})[2]) for i in range(12)}

    def batch_count() -> float:
        text = Http(server.rest_port).get("/monitoring/prometheus/metrics")[2].decode()
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("mlops_serving_batch_requests_count{") and 'model="taxi"' in line)

    before_batches = batch_count()
    failures, answered = [], [0]
    start = threading.Barrier(8)

    def rest_client(k: int) -> None:
        http = Http(server.rest_port)
        start.wait()
        for n in range(15):
            i = (k * 5 + n) % 12
            if k == 0 and n == 7:
                code, _, body = http.post(path, {"instances": [dict(rows[0], fare="not a number")]})
                if code != 400 or "fare" not in body.get("error", ""):
                    failures.append(("bad REST request", code, body))
                continue
            code, _, body = http.post(path, {"instances": rows[i:i + 1 + i % 3]})
            if code != 200 or _probabilities(body) != pytest.approx(alone[i], rel=1e-5):
                failures.append(("REST", i, code, body))
            answered[0] += 1

    def grpc_client(k: int) -> None:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        start.wait()
        for n in range(15):
            i = (k * 7 + n) % 12
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "taxi"
            request.model_spec.version.value = version
            if k == 0 and n == 4:
                request.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"\xff not an example"]))
                try:
                    stub.Predict(request, timeout=30)
                    failures.append(("bad gRPC request answered",))
                except grpc.RpcError as err:
                    if err.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        failures.append(("bad gRPC request", err.code(), err.details()))
                continue
            request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example_bytes(r) for r in rows[i:i + 1 + i % 3]]))
            reply = stub.Predict(request, timeout=30)
            got = tf.make_ndarray(reply.outputs["probabilities"])[:, 0].tolist()
            if got != pytest.approx(alone[i], rel=1e-5):
                failures.append(("gRPC", i, got, alone[i]))
            answered[0] += 1

    threads = [threading.Thread(target=rest_client if k < 4 else grpc_client, args=(k % 4,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures[:5]
    assert answered[0] == 8 * 15 - 2
    calls = batch_count() - before_batches
    reached_the_model = answered[0] + 1  # the bad REST request is refused before the model, the gRPC one is not
    assert 0 < calls < reached_the_model, f"{calls} model calls for {reached_the_model} requests: nothing was batched"
    assert server.alive()


def test_thread_and_batching_flags_are_applied_and_the_answers_do_not_change(taxi_model, tmp_path):
    base = tmp_path / "models"
    base.mkdir()
    publish(taxi_model["model"], base, 1)
    rows = taxi_model["rows"][:5]
    answers = {}
    for name, extra in (("tuned", ("--tensorflow-inter-op-parallelism", "1", "--tensorflow-intra-op-parallelism", "1",
                                   "--max-batch-size", "2")),
                        ("plain", ("--no-enable-batching",))):
        server = Server(taxi_model["home"], tmp_path / f"{name}.log", base=base, extra=extra)
        try:
            server.wait_serving(1)
            code, _, body = server.http.post(f"{MODEL}:predict", {"instances": rows})
            assert code == 200, body
            answers[name] = _probabilities(body)
        finally:
            server.stop()
        log = server.log()
        if name == "tuned":
            assert "TensorFlow threads: inter-op 1, intra-op 1" in log and "batching up to 2 rows" in log
        else:
            assert "TensorFlow threads: inter-op auto, intra-op auto" in log and "batching off" in log
    assert answers["tuned"] == pytest.approx(answers["plain"], rel=1e-6)
