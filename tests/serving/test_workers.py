"""`mlops serve --workers 2`: two server processes on the same ports under one supervising parent.

Each REST answer names the worker that computed it (`X-Mlops-Worker: <pid>`), and each worker
writes its versions to <home>/var/serving/server-<parent pid>/workers/<pid>.json: the tests prove
what *both* workers do from those, not from whichever one the kernel happened to pick.

Servers (each worker imports TensorFlow and loads the model):
  pair:      versions 1 and 2 pinned by a models.config with labels; the REST and gRPC contract's
             key cases on both workers, and one scrape's metrics covering both.
  lifecycle: `latest` policy; a hot reload under 8 clients, a killed worker restarted, SIGTERM.
  rollback:  a copy of the pipeline home; `mlops rollback` waits for both workers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import pytest

from serving import home as home_record
from serving.store import AVAILABLE, END, LOADING, UNLOADING, VersionStatus
from serving.worker_state import combine, server_dir, workers_dir
from tests.conftest import mlops
from tests.serving.helpers import Http, Server, example_bytes, free_port, publish
from tests.serving.load import Load, predict_ok

MODEL = "/v1/models/taxi"
WORKERS = ("--workers", "2")


def _probabilities(answer) -> List[float]:
    return [p[0] for p in answer["predictions"]]


def _children(pid: int) -> List[int]:
    """Live (not zombie) child processes of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def _worker_states(home: Path, server: Server) -> Dict[int, dict]:
    """pid -> the state file of each worker of `server` (serving/worker_state.py)."""
    states = {}
    for path in workers_dir(server_dir(home, server.proc.pid)).glob("*.json"):
        try:
            states[int(path.stem)] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return states


def _available(state: dict, model: str = "taxi") -> List[int]:
    statuses = state.get("models", {}).get(model, {}).get("statuses", [])
    return sorted(v for v, s, _, _ in statuses if s == AVAILABLE)


def _wait_both_listening(home: Path, server: Server, timeout: float = 240.0) -> List[int]:
    def listening():
        states = _worker_states(home, server)
        pids = sorted(pid for pid, state in states.items() if state.get("listening"))
        return pids if len(pids) == 2 and set(pids) <= set(_children(server.proc.pid)) else None

    return server.wait_until(listening, timeout, "both workers listening")


def _per_worker(port: int, call: Callable[[Http], tuple], workers: int = 2, tries: int = 400) -> Dict[int, tuple]:
    """{worker pid: call's (code, headers, body)} over new connections, until `workers` answered."""
    answers: Dict[int, tuple] = {}
    for _ in range(tries):
        http = Http(port)
        try:
            answer = call(http)
        finally:
            http.close()
        answers.setdefault(int(answer[1]["X-Mlops-Worker"]), answer)
        if len(answers) == workers:
            return answers
    raise AssertionError(f"only workers {sorted(answers)} answered {tries} new connections")


def _config_text(base: Path) -> str:
    return (f'model_config_list {{ config {{ name: "taxi" base_path: "{base}" model_platform: "tensorflow" '
            'model_version_policy { specific { versions: 1 versions: 2 } } '
            'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } } }\n')


@pytest.fixture(scope="module")
def pair(taxi_model, shifted, tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    home = root / "home"
    base = root / "models"
    base.mkdir(parents=True)
    publish(taxi_model["model"], base, 1)
    publish(shifted, base, 2)
    config = root / "models.config"
    config.write_text(_config_text(base))
    home.mkdir()
    server = Server(home, root / "server.log", config=config, extra=WORKERS)
    try:
        pids = _wait_both_listening(home, server)
        server.wait_until(lambda: server.available_versions() == [1, 2], 120, "versions 1 and 2 on both workers")
        yield {"server": server, "home": home, "rows": taxi_model["rows"], "pids": pids}
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------------------------------
# the contract on both workers


def test_both_workers_answer_the_rest_contract(pair):
    port, rows, pids = pair["server"].rest_port, pair["rows"][:3], set(pair["pids"])

    status = _per_worker(port, lambda h: h.get(MODEL))
    assert set(status) == pids, (status.keys(), pids)
    for code, _, body in status.values():
        assert code == 200 and [(s["version"], s["state"]) for s in body["model_version_status"]] == [
            ("2", "AVAILABLE"), ("1", "AVAILABLE")], body
    for code, _, body in _per_worker(port, lambda h: h.get(f"{MODEL}/labels/canary")).values():
        assert code == 200 and [s["version"] for s in body["model_version_status"]] == ["2"], body
    for code, _, body in _per_worker(port, lambda h: h.get(f"{MODEL}/labels/stable/metadata")).values():
        assert code == 200 and body["model_spec"]["version"] == "1", body
        assert "serving_default" in body["metadata"]["signature_def"]["signature_def"]

    stable = _per_worker(port, lambda h: h.post(f"{MODEL}/labels/stable:predict", {"instances": rows}))
    canary = _per_worker(port, lambda h: h.post(f"{MODEL}/versions/2:predict", {"instances": rows}))
    answers = {pid: _probabilities(body) for pid, (code, headers, body) in stable.items()
               if code == 200 and headers["X-Model-Version"] == "1"}
    assert set(answers) == pids, stable
    first, second = answers.values()
    assert first == pytest.approx(second, rel=1e-6), "the workers load the same version differently"
    for code, headers, body in canary.values():
        assert code == 200 and headers["X-Model-Version"] == "2", body
        assert _probabilities(body) != pytest.approx(first, rel=1e-3)

    for code, _, body in _per_worker(port, lambda h: h.post(f"{MODEL}/versions/1:classify",
                                                               {"examples": rows})).values():
        assert code == 200 and [r[1][1] for r in body["results"]] == pytest.approx(first, rel=1e-5), body
    for code, _, body in _per_worker(port, lambda h: h.post(f"{MODEL}/versions/1:regress",
                                                               {"examples": rows})).values():
        assert code == 200 and body["results"] == pytest.approx(first, rel=1e-5), body

    bad = {"instances": [dict(rows[0], fare="expensive")]}
    for code, headers, body in _per_worker(port, lambda h: h.post(f"{MODEL}:predict", bad)).values():
        assert code == 400 and set(body) == {"error"} and "fare" in body["error"], body
        assert headers["Content-Type"] == "application/json"
    for code, _, body in _per_worker(port, lambda h: h.get(f"{MODEL}/versions/7")).values():
        assert code == 404 and set(body) == {"error"}, body


def test_the_grpc_contract_on_new_connections(pair):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
        prediction_service_pb2_grpc, regression_pb2,
    )

    server, rows = pair["server"], pair["rows"][:3]
    expected = _probabilities(Http(server.rest_port).post(f"{MODEL}/versions/1:predict", {"instances": rows})[2])
    serialized = [example_bytes(r) for r in rows]
    examples = [tf.train.Example.FromString(s) for s in serialized]
    for _ in range(6):  # each channel its own connection: the kernel picks a worker for each
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)])
        predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "taxi"
        request.model_spec.version_label = "stable"
        request.inputs["examples"].CopyFrom(tf.make_tensor_proto(serialized))
        reply = predictions.Predict(request, timeout=30)
        assert reply.model_spec.version.value == 1
        assert tf.make_ndarray(reply.outputs["probabilities"])[:, 0].tolist() == pytest.approx(expected, rel=1e-5)

        classify = classification_pb2.ClassificationRequest()
        classify.model_spec.name = "taxi"
        classify.model_spec.version.value = 1
        classify.input.example_list.examples.extend(examples)
        result = predictions.Classify(classify, timeout=30).result
        assert [c.classes[1].score for c in result.classifications] == pytest.approx(expected, rel=1e-5)
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = "taxi"
        regress.model_spec.version.value = 1
        regress.input.example_list.examples.extend(examples)
        assert [r.value for r in predictions.Regress(regress, timeout=30).result.regressions] == pytest.approx(
            expected, rel=1e-5)

        metadata = get_model_metadata_pb2.GetModelMetadataRequest()
        metadata.model_spec.name = "taxi"
        metadata.metadata_field.append("signature_def")
        assert predictions.GetModelMetadata(metadata, timeout=30).model_spec.version.value == 2
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "taxi"
        states = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, timeout=30)
        assert [(s.version, s.state) for s in states.model_version_status] == [(2, 30), (1, 30)]  # AVAILABLE

        broken = predict_pb2.PredictRequest()
        broken.model_spec.name = "taxi"
        broken.inputs["examples"].CopyFrom(tf.make_tensor_proto([b"\xff not an example"]))
        with pytest.raises(grpc.RpcError) as refused:
            predictions.Predict(broken, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        channel.close()


def _predict_count(text: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("mlops_serving_requests_total{") and 'method="predict"' in line
               and 'code="200"' in line and 'api="rest"' in line and 'model="taxi"' in line)


def _latency_count(text: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("mlops_serving_request_latency_seconds_count{") and 'method="predict"' in line
               and 'api="rest"' in line)


def test_one_scrape_counts_the_requests_of_both_workers(pair):
    port, body = pair["server"].rest_port, {"instances": pair["rows"][:1]}

    def scrape() -> str:
        code, headers, text = Http(port).get("/monitoring/prometheus/metrics")
        assert code == 200
        return text.decode()

    before = scrape()
    per_worker: Dict[int, int] = {}
    for _ in range(30):
        http = Http(port)
        code, headers, _ = http.post(f"{MODEL}/versions/1:predict", body)
        http.close()
        assert code == 200
        per_worker[int(headers["X-Mlops-Worker"])] = per_worker.get(int(headers["X-Mlops-Worker"]), 0) + 1
    assert len(per_worker) == 2, f"30 new connections all went to one worker: {per_worker}"
    # One scrape, whichever worker answers it. A request is counted just after its answer is sent,
    # so the last one may still be on its way into the count: scrape again for up to 5 s.
    deadline = time.monotonic() + 5
    after = scrape()
    while _predict_count(after) - _predict_count(before) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
        after = scrape()
    assert _predict_count(after) - _predict_count(before) == 30, per_worker
    assert _latency_count(after) - _latency_count(before) == 30
    # What monitoring/rules/serving.yml computes from: the same names and labels as one process exports.
    assert 'mlops_serving_request_latency_seconds_bucket{api="rest",le="+Inf",method="predict",model="taxi",' \
           'version="1"}' in after
    assert 'mlops_serving_loaded_version{model="taxi"} 2.0' in after
    assert "pid=" not in after, "per-process series leak into the exposition"
    if shutil.which("promtool"):
        checked = subprocess.run(["promtool", "check", "metrics"], input=after, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr


# ---------------------------------------------------------------------------------------------
# hot reload, a worker that dies, SIGTERM


def _reconnecting_load(port: int, body: dict) -> Load:
    """8 clients sending :predict, each on a new connection every 5 requests (so both workers get
    traffic); records (start time, worker, version, probabilities) of every answer; any other
    status than 200 is a failure."""

    def request(http: Http):
        started = time.monotonic()
        headers, answer = predict_ok(http, body, f"{MODEL}:predict")
        return (started, int(headers["X-Mlops-Worker"]), int(headers["X-Model-Version"]),
                tuple(_probabilities(answer)))

    return Load(port, request, requests_per_connection=5, join_seconds=60)


def _sigterm_during_slow_requests(server: Server, rows: List[dict], per_worker: int = 2):
    """Keep-alive clients (`per_worker` on each worker) sending ~2000-example requests, SIGTERM to
    the parent; the (worker, status) of each request that was on the wire before the signal."""
    import http.client

    body = json.dumps({"instances": rows * 40}).encode()
    connections: Dict[int, list] = {}
    for _ in range(200):  # new connections until each worker holds `per_worker` of them
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        conn.request("GET", MODEL)
        response = conn.getresponse()
        response.read()
        mine = connections.setdefault(int(response.getheader("X-Mlops-Worker")), [])
        if len(mine) < per_worker:
            mine.append(conn)
        else:
            conn.close()
        if len(connections) == 2 and all(len(c) == per_worker for c in connections.values()):
            break
    results, signalled = [], []

    def client(worker: int, conn) -> None:
        while not signalled:
            sent = None
            try:
                conn.request("POST", f"{MODEL}:predict", body, {"Content-Type": "application/json"})
                sent = time.monotonic()  # the whole request is on the wire
                response = conn.getresponse()
                response.read()
                outcome = response.status
            except Exception as err:  # noqa: BLE001
                outcome = repr(err)
            results.append((sent, worker, outcome))
            if not isinstance(outcome, int):
                break
        conn.close()

    threads = [threading.Thread(target=client, args=(worker, conn), daemon=True)
               for worker, conns in connections.items() for conn in conns]
    for thread in threads:
        thread.start()
    server.wait_until(lambda: len(results) >= 2 * len(threads), 120, "slow requests answered")
    time.sleep(0.3)
    signalled.append(time.monotonic())
    assert server.stop() == 0, server.log()[-3000:]
    for thread in threads:
        thread.join(30)
    return [(worker, outcome) for sent, worker, outcome in results if sent is not None and sent < signalled[0] - 0.05], \
        signalled[0]


def test_hot_reload_under_load_then_a_killed_worker_comes_back_then_sigterm_stops_everything(
        taxi_model, shifted, tmp_path):
    home, base = tmp_path / "home", tmp_path / "models"
    home.mkdir()
    publish(taxi_model["model"], base, 1)
    body = {"instances": taxi_model["rows"][:4]}
    server = Server(home, tmp_path / "server.log", base=base, extra=WORKERS)
    directory = server_dir(home, server.proc.pid)
    stopped = False
    try:
        first_pids = _wait_both_listening(home, server)
        server.wait_serving(1)
        expected = {1: tuple(_probabilities(Http(server.rest_port).post(f"{MODEL}:predict", body)[2]))}

        with _reconnecting_load(server.rest_port, body) as load:
            server.wait_until(lambda: {w for _, w, _, _ in load.answers} == set(first_pids), 60, "both workers busy")
            published = time.monotonic()
            publish(shifted, base, 2)
            server.wait_until(lambda: server.available_versions() == [2], 240, "version 2 served by the server")
            served = time.monotonic()
            # The status said "2" once both workers serve it; each worker's own record says so too (a
            # worker writes it after its whole scan, unloading included, so it may lag a moment) ...
            server.wait_until(lambda: {pid: _available(state) for pid, state in _worker_states(home, server).items()}
                              == {pid: [2] for pid in first_pids}, 15, "both workers' records of version 2")
            settle = len(load.answers)
            server.wait_until(lambda: len(load.answers) > settle + 40, 60, "answers after the switch")
        assert load.failures == [], load.failures[:5]
        # ... and no request sent after it was answered by version 1, whichever worker took it.
        late = [(worker, version) for started, worker, version, _ in load.answers if started > served]
        assert late and {version for _, version in late} == {2}, sorted(set(late))
        assert {worker for worker, _ in late} == set(first_pids)
        expected[2] = next(p for _, _, version, p in load.answers if version == 2)
        assert expected[2] != pytest.approx(expected[1], rel=1e-3)
        for _, worker, version, probabilities in load.answers:
            assert probabilities == pytest.approx(expected[version], rel=1e-5), (worker, version)
        switched = {worker: min(t for t, w, v, _ in load.answers if w == worker and v == 2) for worker in first_pids}
        print(f"hot reload with 2 workers: served by both {served - published:.1f}s after the publish; "
              f"{len(load.answers)} answers, 0 failures; first version-2 answer per worker "
              + ", ".join(f"{t - published:.1f}s" for t in switched.values()))

        # A worker that dies is restarted (and loads before it listens); the other serves meanwhile.
        victim, survivor = first_pids
        os.kill(victim, signal.SIGKILL)
        server.wait_until(lambda: f"worker 1 (pid {victim}) was killed by SIGKILL" in server.log()
                          or f"worker 2 (pid {victim}) was killed by SIGKILL" in server.log(), 30, "the restart log line")
        # At once, or after 1 s when it had run less than 30 s (the restart back-off's first step).
        assert re.search(rf"\(pid {victim}\) was killed by SIGKILL after [0-9.]+s, unexpectedly: restarting it "
                         r"(now|in 1s \(1 quick exits in a row\))", server.log()), server.log()[-2000:]
        assert Http(server.rest_port).post(f"{MODEL}:predict", body)[0] == 200
        pids = _wait_both_listening(home, server)
        assert survivor in pids and victim not in pids
        assert {pid: _available(state) for pid, state in _worker_states(home, server).items()} == {
            pid: [2] for pid in pids}
        assert set(_per_worker(server.rest_port, lambda h: h.post(f"{MODEL}:predict", body))) == set(pids)
        assert not (directory / "metrics" / f"gauge_livemin_{victim}.db").exists(), "the dead worker's gauges count"

        # SIGTERM with slow requests in flight on both workers: each worker finishes its own, then
        # exits, then the parent, with 0; nothing is left behind.
        in_flight, signalled = _sigterm_during_slow_requests(server, taxi_model["rows"])
        stopped = True
        assert in_flight and all(code == 200 for _, code in in_flight), in_flight
        assert {worker for worker, _ in in_flight} == set(pids), in_flight
    finally:
        if not stopped:
            server.stop()
    assert "all workers stopped" in server.log() and "some had to be killed" not in server.log()
    assert server.log().count("stopped in ") == 2, server.log()[-2000:]
    for pid in (*first_pids, *pids):
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], pid
    assert _children(server.proc.pid) == []
    for port in (server.rest_port, server.grpc_port):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))  # raises when a worker still listens
    assert not directory.exists(), "the server's state and metrics directory is left behind"


# ---------------------------------------------------------------------------------------------
# rollback


def test_rollback_waits_until_both_workers_serve_the_restored_version(taxi_model, shifted, tmp_path):
    if os.environ.get("MLOPS_SERVING_TEST_MODEL"):
        pytest.skip("needs the ML Metadata of a real pipeline run (MLOPS_SERVING_TEST_MODEL skips it)")
    # A copy of the pipeline home (its ML Metadata records version 1's push), so that this rollback
    # leaves the session's home as it was.
    home = tmp_path / "home"
    shutil.copytree(taxi_model["home"], home, ignore=shutil.ignore_patterns("running", "run", "log", "*.sock"))
    base = home / "serving" / "models" / "taxi"
    newest = max(int(p.name) for p in base.iterdir() if p.name.isdigit())
    publish(shifted, base, newest + 1)  # a different model, copied in by hand, serves now
    restored = newest + 2
    server = Server(home, tmp_path / "server.log", extra=WORKERS)  # on the home's defaults: registers itself
    try:
        _wait_both_listening(home, server)
        server.wait_serving(newest + 1)
        server.wait_until(lambda: getattr(home_record.running_model_server(home), "pid", None) == server.proc.pid,
                          30, "the parent registered as the home's model server")
        done = mlops(home, "rollback", "--to", "1", "--reason", "two workers", "--by", "test", "--wait", "120")
        # Right after the command returned, both workers answer with the restored version.
        versions = _per_worker(server.rest_port, lambda h: h.post(f"{MODEL}:predict",
                                                                    {"instances": taxi_model["rows"][:1]}))
        assert {pid: headers["X-Model-Version"] for pid, (_, headers, _) in versions.items()} == {
            pid: str(restored) for pid in versions}
        assert set(versions) == set(_children(server.proc.pid))
        assert f"for the model server of this home (pid {server.proc.pid}, started by `mlops serve`)" in done.stdout, \
            done.stdout
        assert f"serves version {restored} (" in done.stdout, done.stdout
        # Their records agree (each writes its own after its whole scan: it may lag a moment).
        server.wait_until(lambda: {pid: _available(state) for pid, state in _worker_states(home, server).items()}
                          == {pid: [restored] for pid in versions}, 15, "both workers' records")
        listed = json.loads(mlops(home, "models", "list", "--json", "--server",
                                  f"http://127.0.0.1:{server.rest_port}").stdout)
        assert [p["version"] for p in listed if p["loaded"]] == [restored], listed
    finally:
        assert server.stop() == 0
        mlops(home, "worker", "stop", check=False)
    assert home_record.running_model_server(home) is None


# ---------------------------------------------------------------------------------------------
# fast: arguments, and how the workers' states combine


@pytest.mark.parametrize("value", ["0", "-2"])
def test_workers_below_one_is_a_usage_error(tmp_path, value):
    result = mlops(tmp_path, "serve", "--workers", value, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--workers {value} is below 1" in lines[0], result.stderr


def test_more_workers_than_cores_warns_and_a_port_in_use_is_refused_before_any_worker_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = mlops(tmp_path, "serve", "--workers", str((os.cpu_count() or 1) + 1), "--rest-port", str(port),
                       "--grpc-port", str(free_port()), check=False, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"is more than this machine's {os.cpu_count()} CPU cores" in result.stderr, result.stderr
    assert f"cannot listen: [Errno 98] port {port} on 127.0.0.1 is in use" in result.stderr, result.stderr
    assert "worker 1 of" not in result.stderr


def _s(version: int, state: str, code: str = "OK", message: str = "") -> VersionStatus:
    return VersionStatus(version, state, code, message)


@pytest.mark.parametrize("per_worker, expected", [
    ([_s(3, AVAILABLE), _s(3, AVAILABLE)], _s(3, AVAILABLE)),
    ([_s(3, AVAILABLE), None], _s(3, LOADING)),  # one worker has not loaded it yet
    ([_s(3, AVAILABLE), _s(3, LOADING)], _s(3, LOADING)),
    ([_s(2, END), _s(2, AVAILABLE)], _s(2, UNLOADING)),  # one has switched to a newer one already
    ([_s(2, END), None], _s(2, END)),  # a restarted worker never saw the old version
    ([_s(4, END, "UNKNOWN", "no variables"), _s(4, AVAILABLE)], _s(4, END, "UNKNOWN", "no variables")),
    ([None, None], None),
])
def test_a_version_is_available_only_when_every_worker_serves_it(per_worker, expected):
    version = expected.version if expected else 1
    assert combine(version, per_worker) == expected


def test_a_worker_that_keeps_dying_is_restarted_later_and_later_not_in_a_storm(tmp_path):
    from serving.server import ServerOptions
    from serving.supervisor import MAX_RESTART_DELAY, STEADY_SECONDS, Supervisor

    supervisor = Supervisor(ServerOptions(home=tmp_path, workers=2), configs=[])
    slot = supervisor.slots[0]
    delays = []
    for _ in range(8):  # each exits right after its start
        slot.started = time.monotonic()
        supervisor._schedule_restart(slot, 12345, 1)
        delays.append(round(slot.restart_at - time.monotonic()))
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30] and MAX_RESTART_DELAY == 30
    slot.started = time.monotonic() - STEADY_SECONDS - 1  # one that had served for a while: at once
    supervisor._schedule_restart(slot, 12345, -9)
    assert slot.restart_at <= time.monotonic() and slot.quick_failures == 0


@pytest.mark.parametrize("value, workers", [(None, 1), ("1", 1), ("3", 3)])
def test_make_up_starts_as_many_workers_as_mlops_serving_workers_says(monkeypatch, value, workers):
    from pipelines import model_server

    if value is None:
        monkeypatch.delenv("MLOPS_SERVING_WORKERS", raising=False)
    else:
        monkeypatch.setenv("MLOPS_SERVING_WORKERS", value)
    assert model_server.serving_workers() == workers
    monkeypatch.setenv("MLOPS_SERVING_WORKERS", "0")
    with pytest.raises(Exception, match="MLOPS_SERVING_WORKERS='0'"):
        model_server.serving_workers()
