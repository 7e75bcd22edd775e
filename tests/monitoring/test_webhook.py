"""The alert webhook (monitoring/webhook.py), as a real `python -m monitoring.webhook` process.

Fast: no pipeline, no Airflow environment. The push history comes from a stand-in `mlops` (MLOPS_BIN:
a script printing `models list --json` rows) or from the real one on a home without ML Metadata;
Airflow's REST API is a small fake server in this process (token, DAG, dagRuns with 409 on a
repeated id). The real path (make up, the real DAG and rollback) is the lead's end-to-end test;
it can reuse `WebhookProcess` and `monitoring.webhook.alert/send`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from monitoring.webhook import alert, dag_run_id, parse_time, payload, send
from tests.conftest import REPO, VENV_PYTHON

SECRET = "s3cret-token"
PASSWORD = "admin-password"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).isoformat()


class WebhookProcess:
    """`python -m monitoring.webhook` on a free port for `home`; stdout in `home/webhook.out`."""

    def __init__(self, home: Path, auto_rollback: bool = False, secret: str = SECRET,
                 env: Optional[Dict[str, str]] = None):
        self.home = home
        self.secret_file = home / "webhook.secret"
        self.secret_file.write_text(f"  {secret}\n")  # stripped by the webhook
        self.secret = secret
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = home / "webhook.out"
        command = [str(VENV_PYTHON), "-m", "monitoring.webhook", "--host", "127.0.0.1", "--port", str(self.port),
                   "--secret-file", str(self.secret_file), "--home", str(home)]
        if auto_rollback:
            command.append("--auto-rollback")
        full_env = {k: v for k, v in os.environ.items() if k != "MLOPS_BIN"}
        full_env.update(env or {})
        with self.out.open("w") as out:
            self.proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=full_env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.ready() == 200:
                return
            assert self.proc.poll() is None, f"the webhook exited {self.proc.returncode}: {self.output()}"
            time.sleep(0.05)
        raise AssertionError(f"the webhook did not get ready: {self.output()}")

    def ready(self) -> int:
        from monitoring.webhook import _http

        return _http(f"{self.url}/-/ready", timeout=2)[0]

    def send(self, *alerts, secret: Optional[str] = "default"):
        return send(self.url, self.secret if secret == "default" else secret, list(alerts))

    def output(self) -> str:
        return self.out.read_text()

    def decisions(self) -> List[dict]:
        path = self.home / "var" / "monitoring" / "webhook" / "decisions.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def start_webhook():
    started: List[WebhookProcess] = []

    def start(home: Path, **kwargs) -> WebhookProcess:
        process = WebhookProcess(home, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


class FakeAirflow:
    """Airflow 3.3's REST API as far as the webhook uses it; records every request."""

    def __init__(self, paused: bool = True, fail_runs: int = 0):
        self.requests: List[tuple] = []
        self.runs: Dict[str, dict] = {}
        self.paused = paused
        self.fail_runs = fail_runs  # answer 500 to that many dagRuns POSTs first
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _answer(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                body = self._body()
                fake.requests.append((self.command, self.path, body, self.headers.get("Authorization")))
                if self.path == "/auth/token" and self.command == "POST":
                    if body == {"username": "admin", "password": PASSWORD}:
                        return self._answer(201, {"access_token": "tok"})
                    return self._answer(401, {"detail": "Invalid credentials"})
                if self.headers.get("Authorization") != "Bearer tok":
                    return self._answer(401, {"detail": "Not authenticated"})
                if self.path == "/api/v2/dags/model_rollback" and self.command == "GET":
                    return self._answer(200, {"dag_id": "model_rollback", "is_paused": fake.paused})
                if self.path == "/api/v2/dags/model_rollback?update_mask=is_paused" and self.command == "PATCH":
                    fake.paused = bool(body["is_paused"])
                    return self._answer(200, {"dag_id": "model_rollback", "is_paused": fake.paused})
                if self.path == "/api/v2/dags/model_rollback/dagRuns" and self.command == "POST":
                    if fake.fail_runs:
                        fake.fail_runs -= 1
                        return self._answer(500, {"detail": "database is locked"})
                    if "logical_date" not in body:
                        return self._answer(422, {"detail": "logical_date: Field required"})
                    if body["dag_run_id"] in fake.runs:
                        return self._answer(409, {"detail": f"DAG run {body['dag_run_id']} already exists"})
                    fake.runs[body["dag_run_id"]] = body
                    return self._answer(200, {"dag_run_id": body["dag_run_id"], "state": "queued"})
                return self._answer(404, {"detail": "Not Found"})

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls(self, path_part: str) -> List[tuple]:
        return [r for r in self.requests if path_part in r[1]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def airflow():
    fake = FakeAirflow()
    yield fake
    fake.close()


def register_airflow(home: Path, url: str, password: str = PASSWORD) -> None:
    """What `make up` leaves in a home: services.json with the URL, the admin password file."""
    run = home / "var" / "airflow" / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "services.json").write_text(json.dumps({"home": str(home), "url": url, "port": int(url.rsplit(":", 1)[1])}))
    (home / "var" / "airflow" / "simple_auth_manager_passwords.json.generated").write_text(
        json.dumps({"admin": password}))


def fake_mlops(home: Path, rows: List[dict]) -> Dict[str, str]:
    """A stand-in `mlops` printing `rows` as `models list --json` does and logging its arguments."""
    (home / "pushes.json").write_text(json.dumps(rows))
    script = home / "fake-mlops"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{home}/mlops-args.txt"\ncat "{home}/pushes.json"\n')
    script.chmod(0o755)
    return {"MLOPS_BIN": str(script)}


def push_row(version: int, hours_ago: float, kind: str = "nightly", trigger: str = "") -> dict:
    now = dt.datetime.now(dt.timezone.utc)
    return {"version": version, "kind": kind, "trigger": trigger, "model_id": 100 + version,
            "pushed_at": iso(now - dt.timedelta(hours=hours_ago)), "requested_by": "airflow" if kind == "nightly"
            else "oncall", "serving": False, "reason": "blessed by the Evaluator"}


def history() -> List[dict]:
    """Four pushes, their ages counted from now (not from collection: a whole suite runs long before
    this module's tests do)."""
    return [push_row(1, 80), push_row(2, 50), push_row(3, 26, kind="rollback", trigger="manual"), push_row(4, 2)]


# ------------------------------------------------------------------------------------------ pure parts


def test_the_dag_run_id_is_the_same_for_a_resent_alert_and_valid_for_airflow():
    first = dag_run_id("ServingErrorRateHigh", "a1b2c3d4e5f60718", "2026-12-06T01:02:03.123456789Z")
    assert first == "alert__ServingErrorRateHigh__a1b2c3d4e5f60718__20261206T010203Z"
    assert dag_run_id("ServingErrorRateHigh", "a1b2c3d4e5f60718", "2026-12-06T02:02:03+01:00") == first
    assert dag_run_id("ServingErrorRateHigh", "a1b2c3d4e5f60718", "2026-12-06T01:05:00Z") != first  # fired again
    assert dag_run_id("ServingLatencyP99High", "a1b2c3d4e5f60718", "2026-12-06T01:02:03Z") != first
    assert dag_run_id("X", "f/p <x>", "garbage") == "alert__X__f_p__x___garbage"  # Airflow's run id characters only
    assert parse_time("2026-12-06T01:02:03.5Z") == dt.datetime(2026, 12, 6, 1, 2, 3, 500000, tzinfo=dt.timezone.utc)
    assert parse_time("2026-12-06T01:02:03.123456+00:00").microsecond == 123456  # what the Pusher writes
    assert parse_time("yesterday") is None


def test_the_payload_helper_builds_what_alertmanager_sends():
    body = payload([alert(version=3, summary="5% errors", value="0.05", fingerprint="ff")])
    assert body["version"] == "4" and body["status"] == "firing" and len(body["alerts"]) == 1
    one = body["alerts"][0]
    assert one["labels"] == {"alertname": "ServingErrorRateHigh", "model": "taxi", "version": "3"}
    assert one["annotations"] == {"summary": "5% errors", "value": "0.05"} and one["fingerprint"] == "ff"
    assert parse_time(one["startsAt"]) is not None
    assert payload([alert(status="resolved")])["status"] == "resolved"


# ------------------------------------------------------------------------------------------ the process


def test_it_answers_only_with_the_secret_and_survives_bad_input(tmp_path, start_webhook):
    hook = start_webhook(tmp_path, env=fake_mlops(tmp_path, history()))
    assert hook.ready() == 200
    assert "automatic rollback off (automatic rollback is off: make up AUTO_ROLLBACK=1)" in hook.output()

    for secret in (None, "wrong", SECRET + "x", ""):
        status, answer = hook.send(alert(version=4), secret=secret)
        assert status == 401 and "bearer token" in answer["error"], (secret, status, answer)
    from monitoring.webhook import _http

    raw = f"{hook.url}/alerts"
    assert _http(raw, "POST", {"alerts": []}, bearer=None)[0] == 401
    status, answer = _post_raw(raw, b"{not json", SECRET)
    assert status == 400 and "not JSON" in answer["error"]
    status, answer = _post_raw(raw, b"\xff\xfe", SECRET)
    assert status == 400 and "error" in answer
    for body in ([1, 2], {"alerts": "x"}, {"status": "firing"}, "text"):
        status, answer = _http(raw, "POST", body, bearer=SECRET)
        assert status == 400 and "`alerts` list" in answer["error"], body
    assert _http(raw, bearer=SECRET)[0] == 405
    assert _http(f"{hook.url}/nothing", "POST", {"alerts": []}, bearer=SECRET)[0] == 404

    # Items that are not alerts become "error" decisions; the others still get theirs.
    status, answer = _http(raw, "POST", {"alerts": [1, {"labels": "x"}, {"status": "firing", "labels": {
        "alertname": "ServingErrorRateHigh", "version": "three"}}, alert("DiskFull")]}, bearer=SECRET)
    assert status == 200, answer
    assert [d["decision"] for d in answer["decisions"]] == ["error", "ignored-alertname", "ignored-no-version",
                                                            "ignored-alertname"]
    assert hook.ready() == 200 and hook.proc.poll() is None
    # No request so far needed the push history.
    assert not (tmp_path / "mlops-args.txt").exists()
    assert len(hook.decisions()) == 4


def _post_raw(url: str, data: bytes, secret: str):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_other_alerts_and_resolved_ones_are_ignored_and_recorded(tmp_path, start_webhook, airflow):
    register_airflow(tmp_path, airflow.url)
    hook = start_webhook(tmp_path, auto_rollback=True, env=fake_mlops(tmp_path, history()))
    status, answer = hook.send(alert("ModelServerDown", version=4, fingerprint="aa"),
                               alert(version=4, status="resolved", fingerprint="bb"),
                               alert("ServingLatencyP99High", version=4, model="other", fingerprint="cc"))
    assert status == 200
    decisions = answer["decisions"]
    assert [d["decision"] for d in decisions] == ["ignored-alertname", "ignored-resolved", "ignored-model"]
    assert decisions[0]["alert"]["alertname"] == "ModelServerDown" and decisions[0]["dag_run_id"] == ""
    assert "only ServingErrorRateHigh, ServingLatencyP99High" in decisions[0]["reason"]
    recorded = hook.decisions()
    assert [(d["decision"], d["alert"]["fingerprint"]) for d in recorded] == [
        ("ignored-alertname", "aa"), ("ignored-resolved", "bb"), ("ignored-model", "cc")]
    lines = hook.output()
    assert "ignored-alertname: ModelServerDown (firing) model taxi version 4" in lines
    assert "ignored-resolved: ServingErrorRateHigh (resolved)" in lines
    assert airflow.requests == [] and not (tmp_path / "mlops-args.txt").exists()


def test_with_automatic_rollback_off_it_only_says_what_it_would_do(tmp_path, start_webhook, airflow):
    register_airflow(tmp_path, airflow.url)
    hook = start_webhook(tmp_path, env=fake_mlops(tmp_path, history()))
    status, answer = hook.send(alert(version=4, summary="7% of requests fail", value="0.07", fingerprint="f4"),
                               alert("ServingLatencyP99High", version=2, fingerprint="f2"),
                               alert(version=3, fingerprint="f3"),
                               alert(version=9, fingerprint="f9"))
    assert status == 200, answer
    four, two, three, nine = answer["decisions"]
    assert four["decision"] == "skipped-off", four
    assert four["reason"].startswith("would roll back model taxi version 4 (pushed 2.0 h ago)")
    assert "(automatic rollback is off: make up AUTO_ROLLBACK=1)" in four["reason"]
    assert "ServingErrorRateHigh fired for model taxi version 4 since " in four["reason"]
    assert "7% of requests fail (value 0.07, fingerprint f4)" in four["reason"]
    assert four["dag_run_id"].startswith("alert__ServingErrorRateHigh__f4__")
    assert two["decision"] == "skipped-old-version" and "pushed 50.0 h ago" in two["reason"], two
    assert three["decision"] == "skipped-not-nightly" and "is a rollback (by oncall)" in three["reason"], three
    assert nine["decision"] == "error" and "version 9 is not a push ML Metadata records" in nine["reason"], nine
    assert "recorded pushes: 1, 2, 3, 4" in nine["reason"]
    assert "skipped-off: ServingErrorRateHigh (firing) model taxi version 4: would roll back" in hook.output()
    assert airflow.requests == []  # nothing triggered
    assert not (tmp_path / "var" / "monitoring" / "webhook" / "handled.json").exists()
    # The push history was read once for the whole payload, through the CLI, for this home.
    assert (tmp_path / "mlops-args.txt").read_text().splitlines() == [f"--home {tmp_path} models list --json"]
    assert [d["decision"] for d in hook.decisions()] == ["skipped-off", "skipped-old-version", "skipped-not-nightly",
                                                         "error"]


def test_a_home_without_ml_metadata_gives_an_error_decision_not_a_crash(tmp_path, start_webhook):
    # The real `mlops` (no MLOPS_BIN, the home has no .venv: the one beside this Python).
    hook = start_webhook(tmp_path, auto_rollback=True)
    status, answer = hook.send(alert(version=1, fingerprint="e1"))
    assert status == 200, answer
    (decision,) = answer["decisions"]
    assert decision["decision"] == "error"
    assert f"version 1 is not a push ML Metadata records for {tmp_path.resolve()}" in decision["reason"]
    assert "recorded pushes: none" in decision["reason"]
    assert hook.ready() == 200
    # A broken mlops command is an error decision too.
    other = tmp_path / "other"
    other.mkdir()
    broken = start_webhook(other, env={"MLOPS_BIN": str(tmp_path / "no-such-mlops")})
    status, answer = broken.send(alert(version=1, fingerprint="e2"))
    assert status == 200 and answer["decisions"][0]["decision"] == "error"
    assert "cannot run" in answer["decisions"][0]["reason"] and "MLOPS_BIN" in answer["decisions"][0]["reason"]


def test_automatic_rollback_triggers_the_dag_once_per_alert(tmp_path, start_webhook, airflow):
    register_airflow(tmp_path, airflow.url)
    records = tmp_path / "var" / "monitoring" / "webhook"
    records.mkdir(parents=True)
    now = dt.datetime.now(dt.timezone.utc)
    (records / "handled.json").write_text(json.dumps({  # the webhook's record from before: old ones go
        "alert__ServingErrorRateHigh__old__20260101T000000Z": {"time": iso(now - dt.timedelta(days=40))},
        "alert__ServingErrorRateHigh__recent__20261201T000000Z": {"time": iso(now - dt.timedelta(days=2))}}))
    hook = start_webhook(tmp_path, auto_rollback=True, env=fake_mlops(tmp_path, history()))
    starts = "2026-12-06T01:02:03.123456789Z"
    firing = alert(version=4, summary="7% of requests fail", value="0.07", fingerprint="f4", starts_at=starts)
    status, answer = hook.send(firing)
    assert status == 200, answer
    (decision,) = answer["decisions"]
    run_id = "alert__ServingErrorRateHigh__f4__20261206T010203Z"
    assert decision["decision"] == "triggered" and decision["dag_run_id"] == run_id, decision
    assert "unpaused model_rollback first" in decision["reason"]
    assert airflow.paused is False
    assert airflow.calls("/auth/token")[0][2] == {"username": "admin", "password": PASSWORD}
    (run,) = airflow.runs.values()
    assert run["dag_run_id"] == run_id and "logical_date" in run and run["logical_date"] is None
    assert run["conf"] == {
        "reason": f"ServingErrorRateHigh fired for model taxi version 4 since {starts}: 7% of requests fail "
                  "(value 0.07, fingerprint f4)",
        "requested_by": "alertmanager", "trigger": "alert", "only_if_serving": 4}
    assert "triggered: ServingErrorRateHigh (firing) model taxi version 4: triggered model_rollback" in hook.output()
    assert sorted(json.loads((records / "handled.json").read_text())) == [
        "alert__ServingErrorRateHigh__f4__20261206T010203Z", "alert__ServingErrorRateHigh__recent__20261201T000000Z"]

    # Resent (Alertmanager's repeat_interval, or a retry): the webhook's own record answers, Airflow is not called.
    seen = len(airflow.requests)
    status, answer = hook.send(firing)
    assert status == 200 and answer["decisions"][0]["decision"] == "already-triggered"
    assert "Airflow not called again" in answer["decisions"][0]["reason"]
    assert len(airflow.requests) == seen

    # Without that record (deleted), Airflow's 409 for the same run id says the same.
    (tmp_path / "var" / "monitoring" / "webhook" / "handled.json").unlink()
    status, answer = hook.send(firing)
    assert status == 200 and answer["decisions"][0]["decision"] == "already-triggered"
    assert "(409)" in answer["decisions"][0]["reason"]
    assert len(airflow.runs) == 1 and len(airflow.calls("/dagRuns")) == 2

    # Many copies of a new alert at once (a lock serializes them): one more DAG run, no more.
    again = dict(firing, startsAt="2026-12-06T03:00:00Z")
    results = []
    threads = [threading.Thread(target=lambda: results.append(hook.send(again))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r[1]["decisions"][0]["decision"] for r in results) == ["already-triggered"] * 4 + ["triggered"]
    assert sorted(airflow.runs) == [run_id, "alert__ServingErrorRateHigh__f4__20261206T030000Z"]
    assert len(airflow.calls("/dagRuns")) == 3
    assert [d["decision"] for d in hook.decisions()].count("triggered") == 2


def test_when_airflow_is_down_it_answers_503_so_alertmanager_retries(tmp_path, start_webhook):
    hook = start_webhook(tmp_path, auto_rollback=True, env=fake_mlops(tmp_path, history()))
    firing = alert(version=4, fingerprint="d4", starts_at="2026-12-06T01:02:03Z")
    status, answer = hook.send(firing, alert("DiskFull"))
    assert status == 503, answer
    decision = answer["decisions"][0]
    assert decision["decision"] == "error" and decision["retry"] is True
    assert decision["reason"].startswith(f"Airflow is not running for {tmp_path.resolve()} (make up)")
    assert answer["decisions"][1]["decision"] == "ignored-alertname"

    # services.json left behind by a stopped Airflow: nothing answers at its URL.
    register_airflow(tmp_path, f"http://127.0.0.1:{free_port()}")
    status, answer = hook.send(firing)
    assert status == 503 and "nothing answers at http://127.0.0.1:" in answer["decisions"][0]["reason"]

    # Airflow up again, failing once with a 500, then fine: the retry triggers the run.
    airflow = FakeAirflow(paused=False, fail_runs=1)
    try:
        register_airflow(tmp_path, airflow.url)
        status, answer = hook.send(firing)
        assert status == 503 and "(HTTP 500)" in answer["decisions"][0]["reason"]
        status, answer = hook.send(firing)
        assert status == 200 and answer["decisions"][0]["decision"] == "triggered", answer
        assert "unpaused" not in answer["decisions"][0]["reason"] and not airflow.calls("update_mask")
        # A wrong password is not worth a retry: 200, with the error.
        register_airflow(tmp_path, airflow.url, password="stale")
        status, answer = hook.send(alert(version=4, fingerprint="d5"))
        assert status == 200 and answer["decisions"][0]["decision"] == "error"
        assert "refused the admin login (HTTP 401)" in answer["decisions"][0]["reason"]
    finally:
        airflow.close()
    assert [d["decision"] for d in hook.decisions()] == ["error", "ignored-alertname", "error", "error", "triggered",
                                                         "error"]


def test_it_refuses_to_start_without_a_secret_and_explains_itself(tmp_path):
    empty = tmp_path / "empty.secret"
    empty.write_text("\n")
    for secret_file, said in ((empty, "is empty"), (tmp_path / "missing", "cannot read the secret file")):
        done = subprocess.run([str(VENV_PYTHON), "-m", "monitoring.webhook", "--port", str(free_port()),
                               "--secret-file", str(secret_file), "--home", str(tmp_path)],
                              cwd=REPO, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and said in done.stderr, done
    helped = subprocess.run([str(VENV_PYTHON), "-m", "monitoring.webhook", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert helped.returncode == 0
    for must in ("POST /alerts", "GET  /-/ready", "Authorization: Bearer", "--auto-rollback", "MLOPS_BIN",
                 "services.json", "simple_auth_manager_passwords.json.generated", "decisions.jsonl", "503",
                 "skipped-old-version", "only-if-serving", "AUTO_ROLLBACK=1"):
        assert must in helped.stdout, must
