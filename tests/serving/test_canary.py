"""Canary rollout end to end (issue 26): real `mlops serve` processes, real ML Metadata, the real rollback.

Each test builds its own home from the session's pipeline home (tests/serving/conftest.py
`taxi_model`, read only): a consistent copy of its ML Metadata store and, as the stable version, the
bytes of its newest push (the Trainer's model the push records), under that push's version number.
The canary is published by `serving.canary.begin`, the function the Pusher calls with canary on:
a bias-shifted copy of the model (healthy) or a wrapper that fails every request of more than one
row at predict time (it loads and warms up on one row, as a model that breaks only under real
traffic does). Clients send 4 rows a request.
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from serving import canary
from serving.config import default_config_path
from serving.versions import publish_version
from tests.conftest import make_home, mlops
from tests.serving.helpers import Http, Server
from tests.serving.load import Load

MODEL = "/v1/models/taxi"


def _copy_home(source: Path, root: Path):
    """A home with a copy of `source`'s ML Metadata and its newest push's model as the served version."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.config import ProjectPaths
    from pipelines.rollback import list_pushes

    home = make_home(root, days=0)
    target_db = ProjectPaths(home).metadata_path
    target_db.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(str(ProjectPaths(source).metadata_path))
    dst = sqlite3.connect(str(target_db))
    src.backup(dst)  # consistent even while another test writes to the source
    src.close()
    dst.close()
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(target_db)
    newest = list_pushes(connection)[-1]
    model = metadata_store.MetadataStore(connection).get_artifacts_by_id([newest.model_id])[0]
    serving_dir = Path(model.uri) / "Format-Serving"
    base = home / "serving" / "models" / "taxi"
    base.mkdir(parents=True)
    shutil.copytree(serving_dir if serving_dir.is_dir() else Path(model.uri), base / str(newest.version))
    return home, base, newest.version


def failing_model(source: Path, target: Path) -> Path:
    """The taxi model behind a signature that fails (InvalidArgument: HTTP 400) for more than one row."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(source))
    inner = loaded.signatures["serving_default"]
    (name, spec), = inner.structured_input_signature[1].items()

    class Faulty(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = loaded

        @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype, name=name)])
        def serve(self, examples):
            outputs = self.model.signatures["serving_default"](**{name: examples})
            check = tf.debugging.assert_less(tf.shape(examples)[0], 2, message="canary fault: batch over 1 row")
            with tf.control_dependencies([check]):
                return {k: tf.identity(v) for k, v in outputs.items()}

    module = Faulty()
    tf.saved_model.save(module, str(target), signatures={"serving_default": module.serve.get_concrete_function()})
    return target


def _predict(http: Http, body: dict, request_id=None):
    headers = {"X-Request-Id": request_id} if request_id else None
    code, headers, answer = http.request("POST", f"{MODEL}:predict", body, headers)
    return code, int(headers.get("X-Model-Version") or 0)


def _clients(port: int, body: dict, per_client: int, ids=None, threads: int = 8):
    """`threads` concurrent clients, `per_client` requests each: [(code, version)]; ids: f(client, n) -> id."""
    answers, lock = [], threading.Lock()

    def run(k: int) -> None:
        http = Http(port)
        mine = [_predict(http, body, ids(k, n) if ids else None) + ((ids(k, n) if ids else None),)
                for n in range(per_client)]
        http.close()
        with lock:
            answers.extend(mine)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(300)
    return answers


def _within_binomial(count: int, n: int, p: float, sds: float = 4.0) -> bool:
    return abs(count - n * p) <= sds * math.sqrt(n * p * (1 - p))


def _load(port: int, body: dict) -> Load:
    """8 clients sending :predict until stopped, each pausing 0.02 s between requests (leaving the
    2 cores some room for the decision's own process); every answer as (time it came, status, version)."""

    def request(http: Http):
        code, version = _predict(http, body)
        return time.monotonic(), code, version

    return Load(port, request, pause=0.02)


def _models_list(home: Path) -> list:
    return json.loads(mlops(home, "models", "list", "--json").stdout)


def _open_canary(home: Path, base: Path, stable: int, model_dir: Path, server: Server) -> int:
    version, window = canary.begin(home, base, lambda: publish_version(model_dir, base), stable)
    assert window is not None and window.canary == version == stable + 1, window
    server.wait_until(lambda: server.available_versions() == [stable, version], 120, "stable and canary loaded")
    server.wait_until(lambda: server.status(f"{MODEL}/labels/canary")[1].get("model_version_status", [{}])[0]
                      .get("version") == str(version), 30, "the canary label")
    return version


def test_canary_split_is_the_configured_share_pinned_by_request_id_survives_a_restart_and_promotes_under_load(
        taxi_model, shifted, tmp_path):
    home, base, stable = _copy_home(taxi_model["home"], tmp_path)
    body = {"instances": taxi_model["rows"][:4]}
    # The CLI's settings; a generous p99 margin: two equal models on 2 busy cores differ by noise only.
    mlops(home, "models", "canary", "enable", "--share", "30%", "--soak", "1h", "--min-requests", "20",
          "--latency-margin", "4")
    settings = canary.load_settings(canary.state_path(default_config_path(home)))
    assert settings.enabled and settings.share == pytest.approx(0.3) and settings.soak_seconds == 3600
    server = Server(home, tmp_path / "server.log")
    try:
        server.wait_serving(stable)
        version = _open_canary(home, base, stable, shifted, server)

        # 8 concurrent clients without request ids: about 30% canary (binomial, 4 standard deviations).
        answers = _clients(server.rest_port, body, 100)
        assert {code for code, _, _ in answers} == {200}
        seen = Counter(v for _, v, _ in answers)
        assert set(seen) == {stable, version}
        assert _within_binomial(seen[version], len(answers), 0.3), seen

        # A request id always meets the same version, in REST and gRPC alike, whichever client sends it.
        ids = lambda k, n: f"order-{(k * 31 + n) % 60}"  # noqa: E731 -- 60 ids, each sent by several clients
        pinned = _clients(server.rest_port, body, 30, ids)
        by_id = {}
        for code, v, rid in pinned:
            assert code == 200
            by_id.setdefault(rid, set()).add(v)
        assert all(len(vs) == 1 for vs in by_id.values()), by_id
        assert {next(iter(vs)) for vs in by_id.values()} == {stable, version}
        assert all((next(iter(vs)) == version) == (canary.request_fraction(rid) < 0.3) for rid, vs in by_id.items())
        assert _grpc_version(server, "order-7", taxi_model["rows"][:4]) == next(iter(by_id["order-7"]))
        # Naming a version or a label gets exactly that.
        code, headers, _ = Http(server.rest_port).request("POST", f"{MODEL}/labels/stable:predict", body,
                                                          {"X-Request-Id": "order-7"})
        assert code == 200 and headers["X-Model-Version"] == str(stable)

        # Status: the split and both versions' numbers; `models list` shows both labels.
        status = json.loads(mlops(home, "models", "canary", "status", "--json").stdout)
        assert status["window"]["canary"] == version and status["window"]["stable"] == stable
        assert status["window"]["share"] == pytest.approx(0.3) and 3000 < status["soak_seconds_left"] <= 3600
        assert status["versions"][str(version)]["requests"] >= 20 and status["verdict"] == "promote"
        rows = {row["version"]: row for row in _models_list(home) if row["kind"] != "unrecorded" or row["on_disk"]}
        assert rows[stable]["labels"] == ["stable"] and rows[version]["labels"] == ["canary"]
        assert rows[stable]["serving"] and rows[version]["loaded"] and not rows[version]["serving"]
        text = mlops(home, "models", "canary", "status").stdout
        assert f"version {version} (canary) answers 30%" in text and "if decided now: promote" in text, text

        # A restarted server resumes the same split: same labels, same share, same ids on the same versions.
        assert server.stop() == 0
        server = Server(home, tmp_path / "server2.log")
        server.wait_until(lambda: server.available_versions() == [stable, version], 120, "both versions again")
        again = _clients(server.rest_port, body, 30, ids)
        assert all({v} == by_id[rid] for _, v, rid in again)
        fresh = Counter(v for _, v, _ in _clients(server.rest_port, body, 40))
        assert _within_binomial(fresh[version], sum(fresh.values()), 0.3), fresh

        # Not yet: the soak period runs (nothing changes).
        assert "no decision" in mlops(home, "models", "canary", "check").stdout
        # Promotion while 8 clients keep sending: no request fails, and afterwards all go to the canary.
        with _load(server.rest_port, body) as load:
            server.wait_until(lambda: len(load.answers) > 50, 30, "clients running")
            decided = json.loads(mlops(home, "models", "canary", "check", "--now", "--json").stdout)
            done = time.monotonic()
            server.wait_until(lambda: any(t > done + 1.5 for t, _, _ in load.answers), 30, "answers after it")
        assert decided["verdict"] == "promote" and decided["version"] == version, decided
        assert not load.failures and {code for _, code, _ in load.answers} == {200}
        assert {v for t, _, v in load.answers if t > done + 1.5} == {version}
        assert canary.windows(canary.state_path(default_config_path(home))) == {}
        promoted = [row for row in _models_list(home) if row["kind"] == "promotion"]
        assert len(promoted) == 1 and promoted[0]["version"] == version and promoted[0]["replaced_version"] == stable
        assert "canary promoted" in promoted[0]["reason"] and promoted[0]["labels"] == ["stable"]
        assert promoted[0]["serving"]
        assert "promotion" in mlops(home, "models", "list").stdout
    finally:
        server.stop()


def _grpc_version(server: Server, request_id: str, rows) -> int:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tests.serving.helpers import example_bytes

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxi"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example_bytes(r) for r in rows]))
    reply = stub.Predict(request, timeout=30, metadata=(("x-request-id", request_id),))
    return reply.model_spec.version.value


def test_a_canary_that_answers_errors_is_rolled_back_audited_while_clients_keep_running(taxi_model, tmp_path):
    home, base, stable = _copy_home(taxi_model["home"], tmp_path)
    faulty = failing_model(base / str(stable), tmp_path / "faulty")
    body = {"instances": taxi_model["rows"][:4]}
    mlops(home, "models", "canary", "enable", "--share", "0.5", "--soak", "20s", "--min-requests", "20")
    server = Server(home, tmp_path / "server.log")
    try:
        server.wait_serving(stable)
        version = _open_canary(home, base, stable, faulty, server)
        answers = _clients(server.rest_port, body, 20)
        by_version = Counter((v, code) for code, v, _ in answers)
        assert set(by_version) == {(stable, 200), (version, 400)}, by_version  # the canary fails, stable does not

        with _load(server.rest_port, body) as load:
            server.wait_until(lambda: len(load.answers) > 50, 30, "clients running")
            decided = json.loads(mlops(home, "models", "canary", "check", "--now", "--json", timeout=600).stdout)
            done = time.monotonic()
            server.wait_until(lambda: any(t > done + 1.5 for t, _, _ in load.answers), 30, "answers after it")
        assert decided["verdict"] == "rollback", decided
        restored = decided["version"]
        assert restored == version + 1 and "canary error rate" in decided["why"] and "vs stable 0.0%" in decided["why"]
        # No request failed but the canary's own answers before its traffic stopped; none after the rollback.
        assert not load.failures
        assert {v for _, code, v in load.answers if code != 200} <= {version}
        assert {(code, v) for t, code, v in load.answers if t > done + 1.5} == {(200, restored)}

        rows = _models_list(home)
        rolled = [row for row in rows if row["version"] == restored]
        assert len(rolled) == 1 and rolled[0]["kind"] == "rollback" and rolled[0]["trigger"] == "canary"
        assert rolled[0]["kind_label"] == "rollback (canary)" and rolled[0]["replaced_version"] == version
        assert rolled[0]["reason"] == decided["why"] and rolled[0]["labels"] == ["stable"] and rolled[0]["serving"]
        assert "rollback (canary)" in mlops(home, "models", "list").stdout
        assert json.loads(mlops(home, "models", "canary", "status", "--json").stdout)["window"] is None
        # Rolled back: the restored version answers everything that names no version.
        http = Http(server.rest_port)
        assert {_predict(http, body, f"id-{i}") for i in range(20)} == {(200, restored)}
    finally:
        server.stop()
