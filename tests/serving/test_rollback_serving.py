"""`mlops rollback` end to end against a running server (issue 6): two real pushes, then a rollback.

Uses the session's pipeline home (version 1, pushed by the `taxi_model` fixture's run) and runs
the same span again with more training steps and relaxed gates: only the Trainer, the Evaluator
and the Pusher run again (the rest is cached), and version 2 is a different model. Then it rolls
back while clients poll. Other tests only copy version 1's directory, so the extra versions in this
home's serving directory do not reach them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time

import pytest

from serving import home as home_record
from tests.conftest import DAY1, mlops
from tests.serving.helpers import Http, Server
from tests.serving.test_server_e2e import MODEL, _latest_version, _load, _probabilities


def test_rollback_previous_serves_the_old_model_as_a_new_version_within_5s(taxi_model, tmp_path):
    if os.environ.get("MLOPS_SERVING_TEST_MODEL"):
        pytest.skip("needs the ML Metadata of a real pipeline run (MLOPS_SERVING_TEST_MODEL skips it)")
    home = taxi_model["home"]
    base = home / "serving" / "models" / "taxi"
    body = {"instances": taxi_model["rows"][:4]}
    server = Server(home, tmp_path / "server.log", base=base)
    try:
        server.wait_serving(1)
        code, _, answer = Http(server.rest_port).post(f"{MODEL}:predict", body)
        assert code == 200
        old = tuple(_probabilities(answer))

        mlops(home, "run", "--date", DAY1.isoformat(), "--train-steps", "90", "--eval-steps", "10", "--auc-floor", "0.0",
              "--min-improvement", "-1.0", "--slice-margin", "1.0", timeout=1200)
        server.wait_serving(2, timeout=60)
        server.wait_until(lambda: server.available_versions() == [2], 30, "version 1 unloaded")
        code, headers, answer = Http(server.rest_port).post(f"{MODEL}:predict", body)
        assert code == 200 and headers["X-Model-Version"] == "2"
        new = tuple(_probabilities(answer))
        assert new != pytest.approx(old, rel=1e-4), "the second run pushed the same model: nothing to roll back"

        with _load(server.rest_port, body, threads=2) as load:
            server.wait_until(lambda: len(load.answers) > 20, 30, "clients polling")
            started = time.monotonic()
            # No --server: a `mlops serve` of the home's model directory registered itself as the home's
            # model server, so the rollback waits until it serves the new version.
            assert "registered as the model server of" in server.log()
            done = mlops(home, "rollback", "--previous", "--reason", "too many tips predicted", "--by", "oncall")
            returned = time.monotonic()
            assert f"for the model server of this home (pid {server.proc.pid}, started by `mlops serve`) at " \
                   f"http://127.0.0.1:{server.rest_port} to serve version 3" in done.stdout, done.stdout
            waited = re.search(r"serves version 3 \(([0-9.]+)s after the push\)", done.stdout)
            assert waited and float(waited.group(1)) <= 5.0, done.stdout
            server.wait_until(lambda: _latest_version(load) == 3, 30, "answers from version 3")
            switched = time.monotonic()
            settle = len(load.answers)
            server.wait_until(lambda: len(load.answers) > settle + 10, 30, "more answers from version 3")
        assert load.failures == [], load.failures[:5]
        for answers in load.by_client:
            versions = [v for v, _ in answers]
            assert versions == sorted(versions), "a client saw an older version after a newer one"
            assert set(versions) <= {2, 3}
            for version, probabilities in answers:
                assert probabilities == pytest.approx(new if version == 2 else old, rel=1e-5), version
        assert switched - returned <= 5.0, f"version 3 served {switched - returned:.1f}s after the rollback returned"
        print(f"rollback: command {returned - started:.1f}s, first answer from version 3 "
              f"{switched - returned:.2f}s after it returned; {len(load.answers)} answers, 0 failures")
        server.wait_until(lambda: server.available_versions() == [3], 30, "version 2 unloaded")
        asked = json.loads(mlops(home, "models", "list", "--json", "--server",
                                 f"http://127.0.0.1:{server.rest_port}").stdout)
        assert [(p["version"], p["loaded"], p["serving"]) for p in asked] == [(1, False, False), (2, False, False),
                                                                             (3, True, True)]
    finally:
        server.stop()
    assert home_record.running_model_server(home) is None, "a stopped server stays registered"

    pushes = json.loads(mlops(home, "models", "list", "--json").stdout)
    assert [(p["version"], p["kind"], p["trigger"]) for p in pushes] == [(1, "nightly", ""), (2, "nightly", ""),
                                                                        (3, "rollback", "manual")]
    last = pushes[-1]
    assert (last["reason"], last["requested_by"], last["replaced_version"]) == ("too many tips predicted", "oncall", 2)
    assert last["model_id"] == pushes[0]["model_id"] and last["serving"]

    # A late alert for version 2, which the rollback above replaced: the alert's rollback (the
    # model_rollback DAG run the alert webhook triggers) does nothing and succeeds.
    late = mlops(home, "rollback", "--previous", "--reason", "ServingErrorRateHigh fired for version 2", "--by",
                 "alertmanager", "--trigger", "alert", "--only-if-serving", "2", "--no-server")
    assert late.stdout.strip().splitlines()[-1] == "version 2 is no longer served (now 3): nothing to roll back", \
        late.stdout
    assert len(json.loads(mlops(home, "models", "list", "--json").stdout)) == 3, "the late alert rolled back"

    # A version directory that no push explains (copied in by hand) is served all the same, so
    # `models list` shows it, marked served, instead of marking nothing.
    hand_copied = base / "4"
    shutil.copytree(base / "3", hand_copied)
    try:
        listed = json.loads(mlops(home, "models", "list", "--json").stdout)
        table = mlops(home, "models", "list").stdout
    finally:
        shutil.rmtree(hand_copied)
    assert [(p["version"], p["kind"], p["serving"]) for p in listed] == [
        (1, "nightly", False), (2, "nightly", False), (3, "rollback", False), (4, "unrecorded", True)]
    assert "no push in ML Metadata" in listed[-1]["reason"]
    assert any(line.split()[:3] == ["4", "*", "unrecorded"] for line in table.splitlines()), table
    rollback_line = next(line for line in table.splitlines() if line.split()[:1] == ["3"])
    assert "oncall" in rollback_line and " 2  too many tips predicted" in rollback_line, table


    # The server's models.config decides what is served. Pinned to version 2 (`specific`), `models list`
    # marks 2, and a rollback (a push of a new version) is refused before anything runs.
    config = home / "serving" / "models.config"
    config.write_text('model_config_list { config { name: "taxi" base_path: "serving/models/taxi" '
                      'model_version_policy { specific { versions: 2 } } version_labels { key: "stable" value: 2 } } }')
    try:
        listed = json.loads(mlops(home, "models", "list", "--json").stdout)
        assert [(p["version"], p["serving"], p["loaded"], p["labels"]) for p in listed] == [
            (1, False, False, []), (2, True, True, ["stable"]), (3, False, False, [])]
        refused = mlops(home, "rollback", "--to", "1", "--reason", "pinned", check=False)
        assert refused.returncode == 2, refused
        assert "pins model 'taxi' to version(s) 2" in refused.stderr and "models.config" in refused.stderr, refused.stderr
        assert len(json.loads(mlops(home, "models", "list", "--json").stdout)) == 3, "the refused rollback pushed"

        # `latest` with a label on the served version: the rollback is served, and it says that the
        # label still points at the replaced version.
        config.write_text('model_config_list { config { name: "taxi" base_path: "serving/models/taxi" '
                          'version_labels { key: "stable" value: 3 } } }')
        # ... and with --server naming a server that is not there, the push is still made and
        # recorded, but the command says the server did not take it and exits 1.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            nobody = probe.getsockname()[1]
        # (Triggered by an alert for version 3, which is still served: it rolls back.)
        done = mlops(home, "rollback", "--to", "2", "--reason", "labels stay", "--by", "oncall",
                     "--server", f"http://127.0.0.1:{nobody}", "--wait", "1", "--trigger", "alert",
                     "--only-if-serving", "3", check=False)
        assert done.returncode == 1, done
        assert "did not serve version 4 within 1s (the push is done and recorded" in done.stderr, done.stderr
        assert "version 4 now serves" in done.stdout, done.stdout
        assert "note: label(s) stable in " in done.stdout and "still point at version 3" in done.stdout, done.stdout
        assert "by oncall (alert): labels stay" in done.stdout, done.stdout
        table = mlops(home, "models", "list").stdout
        assert "policy latest 1, labels stable -> 3" in table, table
        assert any(line.split()[:2] == ["4", "*"] for line in table.splitlines()), table
        # The alert-triggered rollback is shown as such (ML Metadata's rollback_trigger), the manual one is not.
        assert any(line.split()[:5] == ["4", "*", str(pushes[1]["model_id"]), "rollback", "(alert)"]
                   for line in table.splitlines()), table
        assert not any("(alert)" in line for line in table.splitlines() if line.split()[:1] == ["3"]), table
        listed = json.loads(mlops(home, "models", "list", "--json").stdout)
        assert [(p["version"], p["kind"], p["trigger"], p["kind_label"]) for p in listed][2:] == [
            (3, "rollback", "manual", "rollback"), (4, "rollback", "alert", "rollback (alert)")]
        assert any(line.split()[0] == "3" and "stable" in line.split() for line in table.splitlines()), table
    finally:
        config.unlink()
