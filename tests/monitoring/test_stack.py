"""The home's monitoring stack (monitoring/stack.py) with the real Prometheus, Alertmanager and
Pushgateway from Debian (`make monitoring`) and the real alert webhook, in a temporary home, every
part scraping and evaluating each second. No pipeline, no Airflow: `make test-fast` runs these.
Starting or stopping the whole stack takes well under a second here."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
import yaml

from monitoring import metrics, stack
from pipelines import cli
from serving import home as home_record
from serving.errors import ConfigError
from serving.processes import pid_alive


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def prometheus_api(record: dict, path: str, **params):
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    answer = get_json(f"{record['prometheus']['url']}/api/v1/{path}{query}")
    assert answer["status"] == "success", answer
    return answer["data"]


def eventually(check: Callable[[], object], timeout: float = 10.0, every: float = 0.2):
    """`check()`'s first truthy value within `timeout` seconds (scrapes and evaluations run every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def sockets_of(pid: int) -> List[Tuple[str, str, int]]:
    """(protocol, address, port) of every listening TCP socket and every UDP socket of `pid` (/proc/net)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode not in inodes or (protocol.startswith("tcp") and state != "0A"):  # 0A: LISTEN
                continue
            address, port = local.split(":")
            if protocol in ("tcp", "udp"):  # IPv4, in host (little-endian) byte order
                address = socket.inet_ntoa(bytes.fromhex(address)[::-1])
            found.append((protocol, address, int(port, 16)))
    return found


def parts_running(home: Path) -> Dict[str, int]:
    return {part.name: part.pid for part in stack.status(home) if part.pid}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """One stack for the tests that only look at it: (settings, stack.json record, start's lines)."""
    home = tmp_path_factory.mktemp("stack-home")
    settings = stack.StackSettings.from_env(home, interval_seconds=1)
    lines: List[str] = []
    try:
        record = stack.start(settings, lines.append)
        yield settings, record, lines
    finally:
        stack.stop(home, lambda _: None)


@pytest.fixture
def fresh(tmp_path):
    """A stack of the test's own, for tests that change or stop it."""
    settings = stack.StackSettings.from_env(tmp_path, interval_seconds=1)
    try:
        yield settings, stack.start(settings, lambda _: None)
    finally:
        stack.stop(tmp_path, lambda _: None)


# ----------------------------------------------------------------------------------- running


def test_every_part_is_ready_and_stack_json_says_where(running, monkeypatch):
    settings, record, _ = running
    parts = stack.status(settings.home)
    assert [p.name for p in parts] == ["prometheus", "alertmanager", "pushgateway", "webhook"]
    assert all(p.pid and p.ready for p in parts), parts
    on_disk = json.loads(metrics.stack_file(settings.home).read_text())
    assert on_disk == record
    for part in parts:
        assert on_disk[part.name] == {"url": f"http://127.0.0.1:{part.port}", "pid": part.pid, "port": part.port,
                                      "log": str(settings.home / "var" / "log" / f"{part.name}.log")}
    assert (on_disk["interval_seconds"], on_disk["auto_rollback"]) == (1, False)
    # The contract with the pipeline: its metrics go to this Pushgateway while the stack runs.
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    assert metrics.pushgateway_url(settings.home) == record["pushgateway"]["url"]
    # `mlops monitoring status`: exit 0 when every part runs.
    assert cli.main(["--home", str(settings.home), "monitoring", "status"]) == 0


def test_every_part_listens_on_loopback_only(running):
    _, record, _ = running
    for part in ("prometheus", "alertmanager", "pushgateway", "webhook"):
        found = sockets_of(record[part]["pid"])
        # Alertmanager's cluster gossip (0.0.0.0:9094, TCP and UDP) is off: only its web port is left.
        assert found == [("tcp", "127.0.0.1", record[part]["port"])], (part, found)


def test_state_is_under_the_homes_var(running):
    settings, record, _ = running
    var = settings.home / "var" / "monitoring"
    assert (var / "prometheus" / "wal").is_dir()  # the TSDB
    commands = {part: Path(f"/proc/{record[part]['pid']}/cmdline").read_bytes().split(b"\0")
                for part in ("alertmanager", "pushgateway")}
    assert f"--storage.path={var / 'alertmanager'}".encode() in commands["alertmanager"]
    assert f"--persistence.file={var / 'pushgateway.store'}".encode() in commands["pushgateway"]
    assert b"--cluster.listen-address=" in commands["alertmanager"]
    secret = stack.secret_file(settings.home)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_text()) >= 40
    assert all((settings.home / "var" / "log" / f"{part}.log").stat().st_size > 0
               for part in ("prometheus", "alertmanager", "pushgateway"))


def test_a_pushed_metric_reaches_prometheus_with_the_pipelines_labels(running):
    settings, record, _ = running
    registry = metrics.node_registry("stacktest", "Trainer", "complete", 12.5)
    assert metrics.push(record["pushgateway"]["url"], metrics.JOB_NODE,
                        {"pipeline": "stacktest", "node": "Trainer"}, registry) is None

    def seen():
        return prometheus_api(record, "query", query='mlops_node_duration_seconds{pipeline="stacktest"}')["result"]

    result = eventually(seen)
    assert result, "the pushed metric did not reach Prometheus within 10 s"
    # honor_labels: the pushed job, not "pushgateway"; the Pushgateway's empty instance label is dropped.
    assert result[0]["metric"] == {"__name__": "mlops_node_duration_seconds", "job": "mlops_node",
                                   "pipeline": "stacktest", "node": "Trainer"}
    assert float(result[0]["value"][1]) == 12.5
    # Persisted under the home within an interval of the push.
    assert eventually(lambda: b"stacktest" in stack.pushgateway_file(settings.home).read_bytes()
                      if stack.pushgateway_file(settings.home).exists() else False, timeout=5)


def test_prometheus_scrapes_the_stack_and_the_model_server_job_and_loads_the_rules(running):
    _, record, _ = running

    def healths():
        targets = prometheus_api(record, "targets")["activeTargets"]
        return {t["labels"]["job"]: (t["health"], t["scrapeUrl"]) for t in targets}

    assert eventually(lambda: all(healths().get(job, ("",))[0] == "up"
                                  for job in ("prometheus", "alertmanager", "pushgateway")))
    found = healths()
    assert found["pushgateway"][1] == f"{record['pushgateway']['url']}/metrics"
    # No model server record in this home: the default REST port, so that ServingDown can fire.
    assert found["model_server"][1] == "http://127.0.0.1:8501/monitoring/prometheus/metrics"
    alertmanagers = prometheus_api(record, "alertmanagers")["activeAlertmanagers"]
    assert [a["url"] for a in alertmanagers] == [f"{record['alertmanager']['url']}/api/v2/alerts"]
    loaded = {group["file"] for group in prometheus_api(record, "rules")["groups"]}
    assert loaded == {str(path) for path in stack.rule_files()}


def test_the_pushgateways_exposition_passes_promtool(running):
    _, record, _ = running
    metrics.push(record["pushgateway"]["url"], metrics.JOB_RUN_SUCCESS, {"pipeline": "stacktest"},
                 metrics.success_registry("stacktest"))
    with urllib.request.urlopen(f"{record['pushgateway']['url']}/metrics", timeout=5) as response:
        exposition = response.read()
    assert b"mlops_run_last_success_timestamp_seconds" in exposition
    checked = subprocess.run([str(stack.BIN_DIR / "promtool"), "check", "metrics"], input=exposition,
                             capture_output=True, timeout=30)
    report = (checked.stdout + checked.stderr).decode()
    # Exit 1 is a parse error; exit 3 lists lint problems ("<metric> <problem>"). Lint problems are
    # accepted only for metrics that are not ours (the Pushgateway's own and Go runtime ones, which
    # we cannot change); ours (mlops_*) must be clean.
    assert checked.returncode in (0, 3), report
    ours = [line for line in report.splitlines() if line.startswith("mlops_")]
    assert not ours, report


def test_starting_again_starts_nothing_and_keeps_the_secret(running):
    settings, record, _ = running
    before = parts_running(settings.home)
    secret = stack.secret_file(settings.home).read_text()
    lines: List[str] = []
    again = stack.start(settings, lines.append)
    assert parts_running(settings.home) == before
    assert {part: again[part]["pid"] for part in before} == before
    assert {part: again[part]["port"] for part in before} == {part: record[part]["port"] for part in before}
    assert any("already running" in line for line in lines), lines
    assert stack.secret_file(settings.home).read_text() == secret


def test_alertmanager_reaches_the_webhook_with_the_homes_secret(running):
    """The generated receiver's URL and credentials_file are right: an alert sent to Alertmanager ends
    as a decision of the webhook, which answers 401 to a request without the secret."""
    settings, record, _ = running
    # Labelled like the serving alerts the committed routes send to the webhook; no `version` label,
    # so that the webhook rolls nothing back whatever it is told.
    labels = {"alertname": "ServingErrorRateHigh", "severity": "critical", "component": "serving",
              "action": "rollback", "model": "taxi", "stack_test": "wiring"}
    alert = [{"labels": labels}]
    request = urllib.request.Request(f"{record['alertmanager']['url']}/api/v2/alerts", method="POST",
                                     data=json.dumps(alert).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    decisions = settings.home / "var" / "monitoring" / "webhook" / "decisions.jsonl"

    def decided():
        lines = decisions.read_text().splitlines() if decisions.exists() else []
        return [d for d in map(json.loads, lines) if d["alert"]["labels"].get("stack_test") == "wiring"]

    found = eventually(decided, timeout=10)
    assert found and found[0]["decision"] == "ignored-no-version", found
    unsigned = urllib.request.Request(f"{record['webhook']['url']}/alerts", method="POST",
                                      data=json.dumps({"alerts": alert}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=5)
    assert refused.value.code == 401


# ----------------------------------------------------------------------------------- changes


def test_up_again_switches_auto_rollback_by_restarting_only_the_webhook_and_reloads_prometheus(fresh):
    settings, record = fresh
    home_record.run_dir(settings.home).mkdir(parents=True)
    home_record.state_file(settings.home).write_text(json.dumps({"rest_port": 8599}))  # a model server record
    again = stack.start(stack.StackSettings.from_env(settings.home, auto_rollback=True, interval_seconds=1),
                        lambda _: None)
    assert again["auto_rollback"] is True
    assert again["webhook"]["pid"] != record["webhook"]["pid"] and not pid_alive(record["webhook"]["pid"])
    assert b"\0--auto-rollback" in Path(f"/proc/{again['webhook']['pid']}/cmdline").read_bytes()
    assert all(again[part]["pid"] == record[part]["pid"] for part in ("prometheus", "alertmanager", "pushgateway"))
    assert again["webhook"]["port"] == record["webhook"]["port"]  # Alertmanager's receiver stays right
    assert stack.status(settings.home)[-1].ready

    def model_server_target():
        targets = prometheus_api(again, "targets")["activeTargets"]
        return [t["scrapeUrl"] for t in targets if t["labels"]["job"] == "model_server"]

    # The running Prometheus reread its config: the model server's recorded port.
    # Up again without saying: the running webhook is left alone; saying off restarts it without.
    kept = stack.start(stack.StackSettings.from_env(settings.home, interval_seconds=1), lambda _: None)
    assert (kept["webhook"]["pid"], kept["auto_rollback"]) == (again["webhook"]["pid"], True)
    off = stack.start(stack.StackSettings.from_env(settings.home, auto_rollback=False, interval_seconds=1),
                      lambda _: None)
    assert off["webhook"]["pid"] != again["webhook"]["pid"] and off["auto_rollback"] is False
    assert b"--auto-rollback" not in Path(f"/proc/{off['webhook']['pid']}/cmdline").read_bytes()
    # (Prometheus hands new targets to its scrapers at most every 5 s.)
    assert eventually(lambda: model_server_target() == ["http://127.0.0.1:8599/monitoring/prometheus/metrics"],
                      timeout=10), model_server_target()


def test_a_taken_port_makes_a_part_take_another(tmp_path, monkeypatch):
    with socket.socket() as blocker, socket.socket() as probe:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
        probe.close()
        monkeypatch.setitem(stack.PREFERRED_PORTS, "pushgateway", taken)
        monkeypatch.setitem(stack.PREFERRED_PORTS, "prometheus", free)
        settings = stack.StackSettings.from_env(tmp_path, interval_seconds=1)
        try:
            record = stack.start(settings, lambda _: None)
            assert record["pushgateway"]["port"] != taken
            assert record["prometheus"]["port"] == free  # the preferred one, while it is free
            assert len({record[part]["port"] for part in stack.PARTS}) == 4
            assert all(part.ready for part in stack.status(tmp_path))
        finally:
            stack.stop(tmp_path, lambda _: None)


def test_stop_ends_every_part_and_removes_stack_json(fresh, capsys, monkeypatch):
    settings, record = fresh
    pids = [record[part]["pid"] for part in stack.PARTS]
    assert cli.main(["--home", str(settings.home), "monitoring", "down"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("stopped webhook")  # first: no rollback from alerts about the others
    assert not any(pid_alive(pid) for pid in pids)
    assert not metrics.stack_file(settings.home).exists()
    assert not list((settings.home / "var" / "monitoring" / "run").iterdir())
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    assert metrics.pushgateway_url(settings.home) is None  # pipeline runs stop pushing
    # Alertmanager wrote its silences and notification log under the home when it stopped.
    assert {p.name for p in stack.alertmanager_dir(settings.home).iterdir()} >= {"nflog", "silences"}
    assert cli.main(["--home", str(settings.home), "monitoring", "status"]) == 3
    assert "stopped" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- refusals


def test_a_missing_binary_names_the_makefile_step(tmp_path):
    settings = stack.StackSettings(home=tmp_path, interval_seconds=1, bin_dir=tmp_path / "no-bin")
    with pytest.raises(ConfigError) as refused:
        stack.start(settings, lambda _: None)
    assert "make monitoring" in refused.value.fix
    assert str(tmp_path / "no-bin" / "prometheus-alertmanager") in refused.value.problem
    assert not (tmp_path / "var" / "monitoring" / "run").exists() and not metrics.stack_file(tmp_path).exists()


def test_a_rule_file_promtool_rejects_stops_the_start_and_is_named(tmp_path, monkeypatch):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "broken.yml").write_text("groups:\n  - name: broken\n    rules:\n      - alert: Bad\n        expr: rate(x[\n")
    monkeypatch.setattr(stack, "RULES_DIR", rules)
    home = tmp_path / "home"
    with pytest.raises(ConfigError) as refused:
        stack.start(stack.StackSettings.from_env(home, interval_seconds=1), lambda _: None)
    assert "promtool check config" in refused.value.problem and str(rules / "broken.yml") in refused.value.problem
    assert parts_running(home) == {} and not metrics.stack_file(home).exists()


def test_the_interval_must_be_whole_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv(stack.INTERVAL_ENV, "0.5")
    with pytest.raises(ConfigError, match=stack.INTERVAL_ENV):
        stack.StackSettings.from_env(tmp_path)
    monkeypatch.setenv(stack.INTERVAL_ENV, "7")
    assert stack.StackSettings.from_env(tmp_path).interval_seconds == 7
    assert stack.StackSettings.from_env(tmp_path, interval_seconds=2).interval_seconds == 2
    monkeypatch.delenv(stack.INTERVAL_ENV)
    assert stack.StackSettings.from_env(tmp_path).interval_seconds == 15


def test_monitoring_down_refuses_the_options_of_up(tmp_path, capsys):
    assert cli.main(["--home", str(tmp_path), "monitoring", "down", "--auto-rollback"]) == 2
    assert "only `mlops monitoring up`" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- configs


def test_the_alertmanager_config_points_the_webhook_receiver_at_this_home(tmp_path):
    config = stack.alertmanager_config(tmp_path, 1, 9999)
    hooks = [r for r in config["receivers"] if r["name"] == stack.WEBHOOK_RECEIVER][0]["webhook_configs"]
    assert hooks[0]["url"] == "http://127.0.0.1:9999/alerts"
    assert hooks[0]["http_config"]["authorization"]["credentials_file"] == str(stack.secret_file(tmp_path))
    assert (config["route"]["group_wait"], config["route"]["group_interval"]) == ("1s", "1s")
    committed = yaml.safe_load(stack.ALERTMANAGER_TEMPLATE.read_text()) if stack.ALERTMANAGER_TEMPLATE.is_file() else {}
    slow = stack.alertmanager_config(tmp_path, 15, 9999)
    assert slow["route"].get("group_wait") == (committed.get("route") or {}).get("group_wait")
    # Short timings never lengthen one: the rollback route's group_wait 0s stays 0s at 1 s intervals.
    rollback = [r for r in config["route"]["routes"] if r.get("receiver") == stack.WEBHOOK_RECEIVER]
    assert rollback and rollback[0]["group_wait"] == "0s", config["route"]["routes"]


def test_durations_are_read_like_prometheus_does():
    assert [stack._seconds(d) for d in ("0s", "30s", "1m", "1h30m", "500ms")] == [0, 30, 60, 5400, 0.5]
    with pytest.raises(stack.ConfigError, match="not a duration"):
        stack._seconds("soon")


def test_the_alertmanager_template_must_have_the_webhook_receiver(tmp_path):
    fallback = stack.alertmanager_config(tmp_path, 1, 9999, template=tmp_path / "absent.yml")
    assert fallback["route"]["receiver"] == stack.WEBHOOK_RECEIVER
    template = tmp_path / "alertmanager.yml"
    template.write_text(yaml.safe_dump({"route": {"receiver": "pager"}, "receivers": [{"name": "pager"}]}))
    with pytest.raises(ConfigError, match=stack.WEBHOOK_RECEIVER):
        stack.alertmanager_config(tmp_path, 1, 9999, template=template)
