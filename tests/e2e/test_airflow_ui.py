"""`make up` / `make down` with real Airflow 3 services, driven through the UI, the REST API and a backfill.

One project home (3 small spans) and one set of services, started by `make up` on a free port and
shared by the tests below. The setup (`make up`, the API's list of DAGs right after it, then the
backfill of the 3 days until its runs are done) runs beside the other shared setups
(tests/prepared.py); the tests then check, in this order:
  1. `make up` printed the login once, a second `make up` says it is already running, the API
     refuses requests without a login, both DAGs were paused after `make up`;
  2. headless Chromium logs in as admin and finds every TFX node of the manifest as a task of
     nightly_retrain (screenshot: test-artifacts/airflow-ui-nightly_retrain.png);
  3. `airflow backfill create` over the 3 days ran them as 3 DAG runs, one after the other, in
     date order, each TFX run ingesting its own day's span; a model is pushed each night;
  3b. the monitoring stack `make up` started (1 s intervals, AUTO_ROLLBACK=1) scraped the runs; a
     drifted span fires DataGateBlocked; errors after a push fire ServingErrorRateHigh and the
     webhook rolls back through the model_rollback DAG, once; every dashboard query has data;
  3c. Airflow's REST API lists the DAGs' asset events: each night's span accepted (span and TFX run
     id in the extra), each pushed version (span, version, blessing), the alert's rollback;
  3d. the project's pages in the UI (dags/plugins/mlops_ui.py) need the login; the Models page marks
     the served version and its "Roll back to this version" runs model_rollback, audited; a nightly
     run's tab links to its data-gate report and its lineage (screenshots in test-artifacts/);
  4. `make down` stops every service and the warm worker, and says so again when nothing runs.
The services are stopped in teardown whatever happens.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
import subprocess
import time
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import pytest

from pipelines import airflow_env, services
from pipelines.worker import client as worker
from serving.retention import wait_until_served
from serving import home as home_record
from serving import versions
from serving import processes
from tests import prepared
from tests.conftest import REPO, make_home, mlops, readonly_store, require
from tests.e2e import webdriver

ROWS = 1500
DAG = airflow_env.NIGHTLY_DAG
MANIFEST = json.loads((REPO / "dags" / "taxi_manifest.json").read_text())
NODE_IDS = [node["id"] for node in MANIFEST["nodes"]]
# The DAG's tasks: one per node, wired as the manifest says, then the report_metrics teardown after all of them.
TASK_IDS = [*NODE_IDS, "report_metrics"]
EDGES = ({f"{upstream}-{node['id']}" for node in MANIFEST["nodes"] for upstream in node["upstream"]}
         | {f"{node_id}-report_metrics" for node_id in NODE_IDS})
SCREENSHOT = REPO / "test-artifacts" / "airflow-ui-nightly_retrain.png"
# Every night's model is pushed (no gain needed), so versions 1-3 exist for the alert-driven rollback below.
BACKFILL_CONF = {"train_steps": 30, "eval_steps": 5, "auc_floor": 0.0, "min_improvement": -1.0, "slice_margin": 1.0}
BACKFILL_TIMEOUT = 20 * 60  # 3 runs of 3-5 min each on 2 cores
# `make up` without rebuilding the environments even if a stamp looks stale while tests run.
MAKE = ["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.built", "-o", ".venv-airflow/.built"]


def last_complete_day(now: dt.datetime) -> dt.date:
    """The logical day of the newest nightly run that is due (its data interval has ended).

    The 02:00 UTC run of day D+1 has logical date D 02:00. Seeding the spans up to this day means
    the scheduled run that unpausing the DAG creates falls on the backfill's last logical date,
    so the scheduler does not start a second run beside the backfill (it skips existing dates)."""
    return (now - dt.timedelta(days=1, hours=2)).date()


# The model server `make up` starts beside Airflow gets free ports, not 8501/8500.
SERVING_PORTS = {"MLOPS_SERVING_REST_PORT": str(services.free_port()), "MLOPS_SERVING_GRPC_PORT": str(services.free_port())}
# The monitoring stack `make up` starts scrapes and evaluates every second here (15 s by default).
MONITORING = {"MLOPS_MONITORING_INTERVAL_SECONDS": "1"}


def make(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    if args[0] == "up":
        require({"airflow"}, "`make up`")
    return subprocess.run([*MAKE, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **SERVING_PORTS, **MONITORING))


def _stop(home: Path) -> subprocess.CompletedProcess:
    down = make("down", f"MLOPS_HOME={home}", timeout=300)
    if down.returncode != 0:  # still stop what runs, then report
        services.Services(home).down()
    return down


@prepared.setup("airflow_services", lane="services")
def _airflow_services(tmp_path_factory) -> dict:
    """`make up`, what the API says right after it, then the backfill of 3 days until it is done.

    Computed with the other shared setups (tests/prepared.py); the tests below assert on what it
    recorded and on the services, which run until the module ends."""
    last = last_complete_day(dt.datetime.now(dt.timezone.utc))
    days = [last - dt.timedelta(days=n) for n in (2, 1, 0)]
    home = make_home(tmp_path_factory.mktemp("airflow-services"), days=3, rows=ROWS, end=last)
    port = services.free_port()
    started = time.monotonic()
    try:
        up = make("up", f"MLOPS_HOME={home}", f"AIRFLOW_PORT={port}", "AUTO_ROLLBACK=1")
        assert up.returncode == 0, f"make up failed\n{up.stdout}\n{up.stderr}"
        out = dict(home=home, port=port, url=f"http://127.0.0.1:{port}", days=days, up=up,
                   up_seconds=time.monotonic() - started, password=services.admin_password(home))
        # Test 1 reads the DAGs as `make up` left them: the backfill below unpauses nightly_retrain.
        out["dags_after_up"] = api(out, "/api/v2/dags")
        out["backfill"] = _backfill(out)
        return out
    except BaseException:
        _stop(home)
        raise


@pytest.fixture(scope="module")
def airflow_services(request):
    out = prepared.result(request, "airflow_services")
    try:
        yield out
    finally:
        down = _stop(out["home"])
        assert down.returncode == 0, f"make down failed\n{down.stdout}\n{down.stderr}"


def api(airflow_services, path: str, method: str = "GET", body=None, auth: bool = True):
    token = services.token(airflow_services["url"], airflow_services["password"]) if auth else None
    return services.http(airflow_services["url"] + path, method, body, token=token)


# ----------------------------------------------------------------------------------- 1. make up


def test_make_up_prints_the_login_once_is_idempotent_and_keeps_the_api_closed(airflow_services):
    home, up = airflow_services["home"], airflow_services["up"]
    print(f"make up took {airflow_services['up_seconds']:.1f}s")
    assert f"Airflow UI and API: {airflow_services['url']}/" in up.stdout
    assert "user: admin" in up.stdout
    password = airflow_services["password"]
    assert password and f"password: {password}" in up.stdout  # generated now, so shown once
    assert (services.password_file(home).stat().st_mode & 0o777) == 0o600
    for service in (*services.SERVICES, services.MODEL_SERVER):
        assert services.running_pid(home, service), service
        assert services.log_file(home, service).is_file()
    assert f"model server: REST http://127.0.0.1:{SERVING_PORTS['MLOPS_SERVING_REST_PORT']}/" in up.stdout

    again = make("up", f"MLOPS_HOME={home}", f"AIRFLOW_PORT={airflow_services['port']}")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert password not in again.stdout

    status, _ = api(airflow_services, "/api/v2/dags", auth=False)
    assert status in (401, 403), status
    status, _ = services.http(airflow_services["url"] + "/auth/token", "POST",
                              {"username": "admin", "password": "wrong"})
    assert status in (401, 403), status
    status, answer = airflow_services["dags_after_up"]
    assert status == 200, answer
    dags = {dag["dag_id"]: dag for dag in answer["dags"]}
    assert {DAG, airflow_env.ROLLBACK_DAG} <= set(dags)
    assert all(dag["is_paused"] for dag in dags.values()), "DAGs must stay paused unless asked"


# ----------------------------------------------------------------------------------- 2. the UI


def png_facts(data: bytes) -> tuple:
    """(width, height, distinct byte values in a sample of the decoded pixels) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    chunks, offset = [], 8
    while offset < len(data):
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        if kind == b"IDAT":
            chunks.append(data[offset + 8:offset + 8 + size])
        offset += 12 + size
    pixels = zlib.decompress(b"".join(chunks))
    return width, height, len(set(pixels[::101]))


def task_ids_on_page(browser: webdriver.Browser) -> list:
    return browser.execute(
        "const found = new Set();"
        "for (const a of document.querySelectorAll('a[href]')) {"
        "  const m = a.getAttribute('href').match(/\\/dags\\/nightly_retrain\\/tasks\\/([^/?#]+)$/);"
        "  if (m) found.add(decodeURIComponent(m[1]));"
        "}"
        "return Array.from(found);"
    ) or []


def graph_on_page(browser: webdriver.Browser) -> tuple:
    """(task ids, "upstream-downstream" edge ids) drawn in the React Flow graph."""
    return tuple(browser.execute(
        "const ids = (css) => Array.from(document.querySelectorAll(css)).map(e => e.getAttribute('data-id'));"
        "return [ids('.react-flow__node'), ids('.react-flow__edge')];"
    ))


def layout_settled(browser: webdriver.Browser):
    """A condition: true once the graph's node boxes stay where they were at the previous poll."""
    last = {}

    def check() -> bool:
        boxes = browser.execute(
            "return Array.from(document.querySelectorAll('.react-flow__node')).map(e => {"
            "  const r = e.getBoundingClientRect(); return [Math.round(r.x), Math.round(r.y), Math.round(r.width)]; });"
        )
        settled = bool(boxes) and boxes == last.get("boxes")
        last["boxes"] = boxes
        return settled

    return check


def login(browser: webdriver.Browser, url: str, password: str) -> None:
    """Opens `url`, which sends us to Airflow's login page, and signs in as admin."""
    browser.get(url)
    username = browser.wait_element("input[name=username]", timeout=60)
    assert "/auth/login" in browser.url  # not logged in: the UI sends us to the login page
    username.send_keys("admin")
    browser.find("input[name=password]").send_keys(password)
    submit = browser.find("button[type=submit]")
    browser.wait_for(submit.enabled, what="the Sign in button to be enabled")
    submit.click()
    browser.wait_for(lambda: "/auth/login" not in browser.url, timeout=60, what="the login to finish")


def test_ui_login_shows_every_tfx_node_of_nightly_retrain(airflow_services, chromium, tmp_path):
    started = time.monotonic()
    with chromium(log_path=tmp_path / "chromedriver.log") as browser:
        login(browser, f"{airflow_services['url']}/dags/{DAG}", airflow_services["password"])
        assert urllib.parse.urlparse(browser.url).path.rstrip("/") == f"/dags/{DAG}", browser.url

        def grid_drawn():
            found = task_ids_on_page(browser)
            return found if set(found) >= set(NODE_IDS) else None

        found = browser.wait_for(grid_drawn, timeout=90, what=f"the grid to list the tasks {NODE_IDS}")
        text = browser.body_text()
        assert DAG in text
        for node_id in NODE_IDS:
            assert node_id in found and node_id in text, node_id
        # The graph view: one node per task, one edge per upstream link of the manifest.
        browser.find("button[value=graph]").click()
        def graph_drawn():
            nodes, edges = graph_on_page(browser)
            return (nodes, edges) if set(nodes) >= set(TASK_IDS) and set(edges) >= EDGES else None

        nodes, edges = browser.wait_for(graph_drawn, timeout=60, what=f"the graph to draw {TASK_IDS} and {EDGES}")
        assert sorted(nodes) == sorted(TASK_IDS) and set(edges) == EDGES, (nodes, edges)
        browser.wait_for(layout_settled(browser), timeout=30, interval=0.5, what="the graph layout to settle")
        png = browser.screenshot(SCREENSHOT)
    width, height, distinct = png_facts(png)
    print(f"UI check took {time.monotonic() - started:.1f}s; screenshot {SCREENSHOT} {width}x{height}, {len(png)} bytes")
    assert width >= 1000 and height >= 600, (width, height)
    assert len(png) > 20_000 and distinct > 8, "the screenshot looks blank"


# ----------------------------------------------------------------------------------- 3. backfill


def dag_runs(airflow_services) -> list:
    status, answer = api(airflow_services, f"/api/v2/dags/{DAG}/dagRuns?limit=100")
    assert status == 200, answer
    return answer["dag_runs"]


def mlmd_windows(home: Path, run_ids: list) -> dict:
    """{TFX run id: (first execution created, last execution updated)} in ms, from ML Metadata."""
    store = readonly_store(home)
    windows = {}
    for run_id in run_ids:
        context = store.get_context_by_type_and_name("pipeline_run", run_id)
        assert context is not None, f"no pipeline_run {run_id} in ML Metadata"
        executions = store.get_executions_by_context(context.id)
        windows[run_id] = (min(e.create_time_since_epoch for e in executions),
                           max(e.last_update_time_since_epoch for e in executions))
    return windows


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _span_args(days) -> tuple:
    return ("--from-date", days[0].isoformat(), "--to-date", days[-1].isoformat(),
            *[arg for key, value in BACKFILL_CONF.items() for arg in (f"--{key.replace('_', '-')}", str(value))])


def _backfill(airflow_services) -> dict:
    """Creates the backfill of the 3 days and waits until its runs are done (what the test asserts on)."""
    started = time.monotonic()
    # `mlops airflow backfill` wraps `airflow backfill create` (retrying SQLite's "database is
    # locked", which the scheduler's writes caused here on CI) and unpauses the DAG: Airflow 3.3
    # does not schedule a paused DAG's runs, backfill runs included.
    created = mlops(airflow_services["home"], "airflow", "backfill", *_span_args(airflow_services["days"]),
                    check=False, timeout=600)
    out = dict(created=created, runs=[], not_done=None)
    if created.returncode != 0:
        return out
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    while True:
        out["runs"] = runs = dag_runs(airflow_services)
        backfill = [run for run in runs if run["run_type"] == "backfill"]
        if len(backfill) == 3 and all(run["state"] in ("success", "failed") for run in backfill):
            break
        if time.monotonic() >= deadline:
            out["not_done"] = f"backfill not done after {BACKFILL_TIMEOUT}s: " + ", ".join(
                f"{run['run_id']}={run['state']}" for run in runs)
            break
        time.sleep(2)
    out["seconds"] = time.monotonic() - started
    return out


def test_backfill_runs_the_three_spans_one_at_a_time_in_date_order(airflow_services):
    home, days = airflow_services["home"], airflow_services["days"]
    created, runs = airflow_services["backfill"]["created"], airflow_services["backfill"]["runs"]
    assert created.returncode == 0, created.stdout + created.stderr
    assert f"backfill of {DAG} created: 3 run(s), {days[0]}" in created.stdout, created.stdout
    assert f"DAG {DAG}: unpaused" in created.stdout, created.stdout
    assert airflow_services["backfill"]["not_done"] is None, airflow_services["backfill"]["not_done"]
    backfill = [run for run in runs if run["run_type"] == "backfill"]
    print(f"backfill of 3 spans took {airflow_services['backfill']['seconds']:.0f}s")

    assert [run["state"] for run in backfill] == ["success"] * 3, [(r["run_id"], r["state"]) for r in backfill]
    for run in backfill:
        assert {k: run["conf"][k] for k in BACKFILL_CONF} == BACKFILL_CONF, run["conf"]
    again = mlops(home, "airflow", "backfill", *_span_args(days), timeout=600)  # idempotent: nothing new
    assert "nothing to backfill" in again.stdout, again.stdout
    assert len(dag_runs(airflow_services)) == 3
    assert len(runs) == 3, f"a run beside the backfill: {[(r['run_id'], r['run_type']) for r in runs]}"
    backfill.sort(key=lambda run: run["start_date"])
    assert [_time(run["logical_date"]).date() for run in backfill] == days  # executed in date order
    for earlier, later in zip(backfill, backfill[1:]):
        assert _time(earlier["end_date"]) <= _time(later["start_date"]), "two DAG runs overlapped"

    tfx_run_ids = [f"{DAG}__{run['dag_run_id']}" for run in backfill]
    for day, tfx_run_id in zip(days, tfx_run_ids):
        summary = json.loads(mlops(home, "summary", "--run-id", tfx_run_id, "--json").stdout)
        assert summary["span"] == day.isoformat(), (tfx_run_id, summary["span"])
        assert set(summary["node_states"]) == set(NODE_IDS), summary["node_states"]
        assert set(summary["node_states"].values()) <= {"complete", "cached"}, summary["node_states"]
    windows = mlmd_windows(home, tfx_run_ids)
    for earlier, later in zip(tfx_run_ids, tfx_run_ids[1:]):
        assert windows[earlier][1] <= windows[later][0], f"TFX runs {earlier} and {later} overlapped"

    models = home / "serving" / "models" / "taxi"
    pushed = sorted(int(p.name) for p in models.iterdir() if p.name.isdigit()) if models.is_dir() else []
    assert pushed, f"no model version pushed to {models}"
    assert (models / str(pushed[0]) / "saved_model.pb").is_file()
    # The model server `make up` started beside Airflow serves what the DAG pushed (it watches the
    # directory), and it is what `mlops rollback` and `mlops models prune` find for this home.
    server = home_record.running_model_server(home)
    assert server is not None and server.base_path.resolve() == models.resolve(), server
    waited = wait_until_served(server.rest_url, "taxi", pushed[-1], timeout=60)
    assert waited is not None, f"the make-up model server does not serve version {pushed[-1]}"


# ----------------------------------------------------------------------------------- 3b. monitoring and alerts
# The monitoring stack `make up` started (Prometheus, Alertmanager, Pushgateway, the webhook; every
# second here) watched the backfill. Then: a drifted span fires DataGateBlocked, a server answering
# errors after a push fires ServingErrorRateHigh, and the webhook (AUTO_ROLLBACK=1) rolls the model
# back through the model_rollback DAG, audited with the alert as its reason.


def stack(airflow_services) -> dict:
    return json.loads((airflow_services["home"] / "var" / "monitoring" / "stack.json").read_text())


def prom(airflow_services, query: str) -> list:
    url = stack(airflow_services)["prometheus"]["url"].rstrip("/")
    status, answer = services.http(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    assert status == 200 and answer["status"] == "success", (query, status, answer)
    return answer["data"]["result"]


def firing(airflow_services, alertname: str) -> list:
    url = stack(airflow_services)["prometheus"]["url"].rstrip("/")
    status, answer = services.http(f"{url}/api/v1/alerts")
    assert status == 200, answer
    return [a for a in answer["data"]["alerts"] if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def wait_for(what: str, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        time.sleep(1)


def test_the_monitoring_stack_scraped_every_nightly_run(airflow_services):
    record = stack(airflow_services)
    for part in ("prometheus", "alertmanager", "pushgateway", "webhook"):
        assert record[part]["url"].startswith("http://127.0.0.1:"), record
    for job in ("prometheus", "alertmanager", "pushgateway", "model_server"):
        assert [float(r["value"][1]) for r in prom(airflow_services, f'up{{job="{job}"}}')] == [1.0], job
    # The last-success time moved with each of the 3 nights (pushed by the DAG's report_metrics teardown).
    moves = prom(airflow_services, 'changes(mlops_run_last_success_timestamp_seconds{pipeline="taxi"}[2h])')
    assert moves and float(moves[0]["value"][1]) >= 2, moves
    assert [float(r["value"][1]) for r in prom(airflow_services, 'mlops_run_outcome{outcome="success"}')] == [1.0]
    # Every node of the manifest pushed its duration, with no instance label and the node's own group.
    nodes = {r["metric"]["node"]: r["metric"] for r in prom(airflow_services, "mlops_node_duration_seconds")}
    assert set(NODE_IDS) <= set(nodes), sorted(nodes)
    assert all(m["job"] == "mlops_node" and not m.get("instance") for m in nodes.values())
    assert not firing(airflow_services, "NightlyRetrainFailed")
    # What Prometheus scrapes passes promtool's lint: the model server's and the Pushgateway's expositions.
    server = home_record.running_model_server(airflow_services["home"])
    for url in (f"{server.rest_url}/monitoring/prometheus/metrics", f"{record['pushgateway']['url'].rstrip('/')}/metrics"):
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read()
        assert b"mlops_" in text, url
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
        # The Pushgateway's own go_*/pushgateway_* metrics are not ours to fix; ours must be clean.
        ours = [line for line in (lint.stdout + lint.stderr).decode().splitlines() if line.startswith("mlops_")]
        assert not ours and (lint.returncode == 0 or "error while linting" not in lint.stderr.decode()), (url, lint)


def test_a_drifted_span_fires_data_gate_blocked_naming_the_feature(airflow_services):
    home = airflow_services["home"]
    day = airflow_services["days"][-1] + dt.timedelta(days=1)
    mlops(home, "data", "make-span", "--date", day.isoformat(), "--fault", "drift")
    run = mlops(home, "run", "--date", day.isoformat(), "--train-steps", "30", "--eval-steps", "5", check=False,
                timeout=900)
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    alerts = wait_for("DataGateBlocked firing", lambda: firing(airflow_services, "DataGateBlocked"), 150)
    assert {a["labels"]["feature"] for a in alerts} == {"trip_miles"}, alerts
    assert {a["labels"]["baseline"] for a in alerts} <= {"previous_span", "served_model_training"}
    summary = alerts[0]["annotations"]["summary"]
    assert "trip_miles" in summary and day.isoformat() in summary, summary
    assert alerts[0]["annotations"]["runbook_url"].endswith("#datagateblocked")


def _alert_rollbacks(home) -> list:
    pushes = json.loads(mlops(home, "models", "list", "--json").stdout)
    return [p for p in pushes if p["kind"] == "rollback" and p.get("trigger") == "alert"]


def test_serving_errors_after_a_push_roll_back_through_airflow_once(airflow_services):
    from monitoring import webhook

    home = airflow_services["home"]
    models = home / "serving" / "models" / "taxi"
    server = home_record.running_model_server(home)
    before = sorted(int(p.name) for p in models.iterdir() if p.name.isdigit())
    assert len(before) >= 2, before
    bad, previous = before[-1], before[-2]
    # Requests the pushed model refuses (400), about 20 a second, until a new version serves the
    # previous model's bytes again.
    refused = {"instances": [{"trip_miles": "not a number"}]}
    started = time.monotonic()
    restored = None
    while time.monotonic() - started < 240:
        for _ in range(10):
            services.http(f"{server.rest_url}/v1/models/taxi:predict", "POST", refused)
        now = sorted(int(p.name) for p in models.iterdir() if p.name.isdigit())
        if now[-1] > bad and versions.model_fingerprint(models / str(now[-1])) == versions.model_fingerprint(
                models / str(previous)):
            restored = now[-1]
            if wait_until_served(server.rest_url, "taxi", restored, timeout=30) is not None:
                break
        time.sleep(0.5)
    seconds = time.monotonic() - started
    assert restored, f"no rollback within {seconds:.0f}s of errors on version {bad}"
    print(f"errors on version {bad} -> version {restored} (the model of {previous}) served after {seconds:.0f}s")
    # Audited: a rollback in ML Metadata, asked by Alertmanager, with the alert as its reason.
    [rollback] = _alert_rollbacks(home)
    assert rollback["version"] == restored and rollback["requested_by"] == "alertmanager", rollback
    assert "ServingErrorRateHigh" in rollback["reason"] and f"version {bad}" in rollback["reason"], rollback
    runs = [r for r in api(airflow_services, "/api/v2/dags/model_rollback/dagRuns")[1]["dag_runs"]]
    assert len(runs) == 1 and runs[0]["dag_run_id"].startswith("alert__"), runs
    # The same alert again (Alertmanager resends while it fires): nothing more happens.
    secret = (home / "var" / "monitoring" / "webhook.secret").read_text().strip()
    decisions_file = home / "var" / "monitoring" / "webhook" / "decisions.jsonl"
    decisions = [json.loads(line) for line in decisions_file.read_text().splitlines()]
    triggered = [d for d in decisions if d["decision"] == "triggered"]
    assert len(triggered) == 1, decisions
    first = triggered[0]["alert"]
    again = webhook.alert(first["alertname"], int(first["version"]), fingerprint=first["fingerprint"],
                          starts_at=first["startsAt"])
    status, resent = webhook.send(stack(airflow_services)["webhook"]["url"], secret, [again])
    assert status == 200 and [d["decision"] for d in resent["decisions"]] == ["already-triggered"], resent
    assert len(api(airflow_services, "/api/v2/dags/model_rollback/dagRuns")[1]["dag_runs"]) == 1
    assert len(_alert_rollbacks(home)) == 1
    # Without the secret: 401, and nothing is decided.
    status, answer = services.http(stack(airflow_services)["webhook"]["url"].rstrip("/") + "/alerts", "POST",
                                   {"alerts": []})
    assert status == 401 and "error" in answer, (status, answer)
    wait_for("RollbackPerformed firing", lambda: firing(airflow_services, "RollbackPerformed"), 60)


def test_every_dashboard_panel_query_returns_data(airflow_services):
    from monitoring import dashboards

    empty = [(title, expr) for title, expr in dashboards.panel_queries("1m") if not prom(airflow_services, expr)]
    assert not empty, "panels with no data from the live Prometheus:\n" + "\n".join(f"{t}: {e}" for t, e in empty)


# ----------------------------------------------------------------------------------- 3c. assets
# The nightly DAG declares what it reads and writes as Airflow assets (dags/mlops_common.py): a span
# that passed the data gates is an event on `taxi_span`, a pushed version (nightly or rollback) one on
# `taxi_model`, with the span, the version and the blessing in the event's extra.


def asset_events(airflow_services, **query) -> list:
    status, answer = api(airflow_services, "/api/v2/assets/events?" + urllib.parse.urlencode({"limit": 100, **query}))
    assert status == 200, answer
    return answer["asset_events"]


def test_the_nightly_runs_and_the_rollback_are_asset_events_with_span_and_version(airflow_services):
    home, days = airflow_services["home"], airflow_services["days"]
    backfill = sorted((r for r in airflow_services["backfill"]["runs"] if r["run_type"] == "backfill"),
                      key=lambda run: run["logical_date"])
    assert len(backfill) == 3, backfill
    events = asset_events(airflow_services, source_dag_id=DAG)
    spans = [e for e in events if e["name"] == "taxi_span"]
    models = [e for e in events if e["name"] == "taxi_model"]
    print(f"{len(spans)} span events, {len(models)} model events from {DAG}")
    # One "span accepted" event per night that passed the data gates (every night here: none blocked),
    # by the DriftValidator task, naming its span and its TFX run; one model event per pushed version.
    assert len(spans) == len([r for r in backfill if r["state"] == "success"]), spans
    pushed = []
    for day, run in zip(days, backfill):
        tfx_run_id = f"{DAG}__{run['dag_run_id']}"
        [span] = [e for e in spans if e["source_run_id"] == run["dag_run_id"]]
        assert span["source_task_id"] == "DriftValidator", span
        assert span["extra"] == {"span": day.isoformat(), "run_id": tfx_run_id}, span
        assert span["uri"] == f"file://{home.resolve()}/data/incoming", span
        summary = json.loads(mlops(home, "summary", "--run-id", tfx_run_id, "--json").stdout)
        mine = [e for e in models if e["source_run_id"] == run["dag_run_id"]]
        if not summary["pushed_version"]:  # a night that pushed nothing has no model event
            assert mine == [], mine
            continue
        [model] = mine
        pushed.append(summary["pushed_version"])
        assert model["source_task_id"] == "AtomicPusher" and model["uri"] == f"file://{home.resolve()}/serving/models/taxi"
        extra = model["extra"]
        assert extra["pushed_version"] == summary["pushed_version"] and extra["span"] == day.isoformat(), extra
        assert extra["kind"] == "nightly" and extra["blessed"] is True and extra["run_id"] == tfx_run_id, extra
        assert extra["blessing_reason"] == summary["blessing_reason"] and extra["blessing_reason"], extra
    assert pushed and len(models) == len(pushed), (pushed, models)  # BACKFILL_CONF blesses every night
    # The rollback the alert triggered (section 3b) pushed too: a model event of kind rollback.
    rollback_runs = api(airflow_services, "/api/v2/dags/model_rollback/dagRuns")[1]["dag_runs"]
    for run in rollback_runs:
        wait_for(f"model_rollback run {run['dag_run_id']} done", lambda: api(
            airflow_services, f"/api/v2/dags/model_rollback/dagRuns/{run['dag_run_id']}")[1]["state"]
            in ("success", "failed"), 90)
    rollbacks = asset_events(airflow_services, source_dag_id="model_rollback")
    alert_pushes = _alert_rollbacks(home)
    assert len(rollbacks) == len(alert_pushes), (rollbacks, alert_pushes)
    for event, push in zip(rollbacks, alert_pushes):
        assert event["name"] == "taxi_model" and event["source_task_id"] == "rollback", event
        assert event["extra"]["kind"] == "rollback" and event["extra"]["pushed_version"] == push["version"], event
        assert event["extra"]["trigger"] == "alert" and event["extra"]["requested_by"] == "alertmanager", event


def test_the_assets_view_lists_the_span_and_the_model_with_their_tasks(airflow_services):
    """What the UI's Assets view shows: both assets, which tasks read and produce them. The model asset
    is materialized through the Pusher's alias; the scheduler activates it within a cleanup interval."""
    def listed():
        status, answer = api(airflow_services, "/api/v2/assets?name_pattern=taxi_")
        assert status == 200, answer
        found = {a["name"]: a for a in answer["assets"]}
        return found if {"taxi_span", "taxi_model"} <= set(found) else None

    assets = wait_for("taxi_span and taxi_model in the Assets view", listed, 150)
    span, model = assets["taxi_span"], assets["taxi_model"]
    assert {t["task_id"] for t in span["consuming_tasks"]} == {"SpanCheck", "CsvExampleGen"}, span
    assert {t["task_id"] for t in span["producing_tasks"]} == {"DriftValidator"}, span
    assert [a["name"] for a in model["aliases"]] == ["taxi_model_pushes"], model
    assert model["last_asset_event"] and model["last_asset_event"]["id"], model


# ----------------------------------------------------------------------------------- 3d. the mlops pages
# The plugin in dags/plugins/mlops_ui.py: a Models page (with a rollback action) in the UI's menu and
# a "Data gates & lineage" tab on every DAG run, behind Airflow's login, fed by the project's CLI.

PAGES = {"models": REPO / "test-artifacts" / "airflow-ui-models.png",
         "run": REPO / "test-artifacts" / "airflow-ui-run-data-gates.png"}
UI_ROLLBACK_REASON = "bad canary seen in the UI"


def raw_get(url: str) -> tuple:
    """(status, Location header) of a GET that does not follow redirects."""
    import http.client

    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("GET", parsed.path + (f"?{parsed.query}" if parsed.query else ""))
        answer = connection.getresponse()
        return answer.status, answer.getheader("location") or ""
    finally:
        connection.close()


def embedded_page(browser: webdriver.Browser, css: str) -> str:
    """The URL of the plugin page the Airflow UI shows in its frame, once `css` is drawn in it."""
    browser.wait_for(lambda: browser.execute(
        "const f = document.querySelector('iframe');"
        "return f && f.contentDocument && f.contentDocument.querySelector(arguments[0]) ? true : null;", css),
        timeout=60, what=f"the plugin page's frame to show {css}")
    return browser.execute("return document.querySelector('iframe').src;")


def test_the_mlops_pages_need_the_airflow_login(airflow_services):
    url = airflow_services["url"]
    for path in ("/mlops/models", f"/mlops/run/{DAG}/any", "/mlops/lineage?version=1"):
        status, location = raw_get(url + path)
        assert status in (302, 303, 307) and "/auth/login" in location, (path, status, location)
    for path in ("/mlops/api/models", "/mlops/api/lineage"):
        status, _ = api(airflow_services, path, auth=False)
        assert status == 401, (path, status)
    # With a login: the same rows as `mlops models list`, and the served version's lineage.
    listed = json.loads(mlops(airflow_services["home"], "models", "list", "--json").stdout)
    status, rows = api(airflow_services, "/mlops/api/models")
    assert status == 200 and [r["version"] for r in rows] == [r["version"] for r in listed], rows
    status, doc = api(airflow_services, "/mlops/api/lineage")
    assert status == 200 and doc["chain"]["version"] == next(r["version"] for r in listed if r["serving"]), doc
    status, answer = api(airflow_services, "/mlops/api/lineage?version=999")
    assert status == 404 and "no pushed version 999" in answer["error"], answer
    # A form post without Airflow's own page as its origin is refused, even with a valid login.
    token = services.token(url, airflow_services["password"])
    request = urllib.request.Request(f"{url}/mlops/rollback", data=b"version=1&reason=forged", method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/x-www-form-urlencoded"})
    try:
        urllib.request.urlopen(request, timeout=30)
        raise AssertionError("a rollback without an origin was accepted")
    except urllib.error.HTTPError as err:
        assert err.code == 403, err.code
    assert json.loads(mlops(airflow_services["home"], "models", "list", "--json").stdout) == listed


def test_the_models_page_marks_the_served_version_and_its_rollback_action_goes_through_the_dag(
        airflow_services, chromium, tmp_path):
    home, url = airflow_services["home"], airflow_services["url"]
    before = json.loads(mlops(home, "models", "list", "--json").stdout)
    served = next(r for r in before if r["serving"])
    # The newest earlier version whose model differs from the one serving: rolling back to it changes something.
    target = max((r for r in before if r["on_disk"] and r["kind"] != "unrecorded" and r["fingerprint"] != served["fingerprint"]),
                 key=lambda r: r["version"])
    runs_before = {r["dag_run_id"] for r in api(airflow_services, "/api/v2/dags/model_rollback/dagRuns")[1]["dag_runs"]}
    with chromium(log_path=tmp_path / "chromedriver.log") as browser:
        login(browser, f"{url}/plugin/mlops-models", airflow_services["password"])  # the "Models" menu entry
        page = embedded_page(browser, "#models")
        assert page == f"{url}/mlops/models", page
        browser.screenshot(PAGES["models"])  # the page inside Airflow's UI
        browser.get(page)
        browser.wait_element("#models", timeout=60)
        rows = browser.execute("return Array.from(document.querySelectorAll('#models tr[data-version]'))"
                               ".map(r => [Number(r.dataset.version), r.classList.contains('serving')]);")
        assert sorted(v for v, _ in rows) == sorted(r["version"] for r in before), rows
        assert [v for v, serving in rows if serving] == [served["version"]], rows
        text = browser.body_text()
        assert served["reason"] in text and "Roll back to this version" in text
        # Roll back to the target with a reason: the page posts it, Airflow runs model_rollback.
        browser.execute("const row = document.querySelector(`#models tr[data-version='${arguments[0]}']`);"
                        "row.querySelector('input[name=reason]').value = arguments[1];"
                        "row.querySelector('form').requestSubmit();", target["version"], UI_ROLLBACK_REASON)
        browser.wait_for(lambda: "note=" in browser.url or "error=" in browser.url, timeout=60,
                         what="the page to answer the rollback")
        note = browser.body_text()
        assert f"rollback to version {target['version']} requested: model_rollback run" in note, note

    def new_run():
        runs = api(airflow_services, "/api/v2/dags/model_rollback/dagRuns")[1]["dag_runs"]
        mine = [r for r in runs if r["dag_run_id"] not in runs_before]
        return mine[0] if mine and mine[0]["state"] in ("success", "failed") else None

    run = wait_for("the model_rollback run the page triggered", new_run, 180)
    assert run["state"] == "success" and run["conf"]["to_version"] == target["version"], run
    assert run["conf"]["requested_by"] == "admin" and run["conf"]["reason"] == UI_ROLLBACK_REASON, run
    after = json.loads(mlops(home, "models", "list", "--json").stdout)
    newest = after[-1]
    assert newest["kind"] == "rollback" and newest["serving"] and newest["version"] > served["version"], newest
    assert newest["model_id"] == target["model_id"] and newest["requested_by"] == "admin", newest
    assert newest["reason"] == UI_ROLLBACK_REASON and newest["trigger"] == "manual", newest
    # Audited like the CLI's: its lineage names the DAG run that pushed it.
    chain = json.loads(mlops(home, "lineage", "--json").stdout)["chain"]
    assert chain["push"]["execution"]["airflow"]["run_id"] == run["dag_run_id"], chain["push"]


def test_a_nightly_run_links_to_its_data_gate_report_and_its_lineage(airflow_services, chromium, tmp_path):
    url = airflow_services["url"]
    run = sorted((r for r in airflow_services["backfill"]["runs"] if r["run_type"] == "backfill"),
                 key=lambda r: r["logical_date"])[-1]
    run_id, day = run["dag_run_id"], airflow_services["days"][-1]
    with chromium(log_path=tmp_path / "chromedriver.log") as browser:
        login(browser, f"{url}/dags/{DAG}/runs/{urllib.parse.quote(run_id, safe='')}/plugin/mlops-run",
              airflow_services["password"])  # the run's "Data gates & lineage" tab
        page = embedded_page(browser, "#gates")
        assert urllib.parse.unquote(page) == f"{url}/mlops/run/{DAG}/{run_id}", page
        browser.screenshot(PAGES["run"])  # the run's tab inside Airflow's UI
        browser.get(page)
        browser.wait_element("#gates", timeout=60)
        gates = browser.execute("return Array.from(document.querySelectorAll('#gates tr[data-gate]'))"
                                ".map(r => [r.dataset.gate, r.innerText, r.querySelector('a') ? r.querySelector('a').href : null]);")
        assert [g[0] for g in gates] == ["span_check", "drift_validator"], gates
        assert all("passed" in g[1] and day.isoformat() in g[1] for g in gates), gates
        lineage_link = browser.execute("return Array.from(document.querySelectorAll('a')).find(a => "
                                       "a.innerText === 'Lineage of this run').href;")
        browser.get(gates[1][2])  # the DriftValidator's HTML report
        browser.wait_for(lambda: day.isoformat() in browser.title, timeout=30, what="the data-gate report")
        assert f"Span {day.isoformat()}: passed" in browser.body_text()
        browser.get(lineage_link)
        lineage_text = browser.wait_element("#lineage", timeout=60).text
    assert lineage_text.startswith(f"run {DAG}__{run_id} (Airflow run {run_id})"), lineage_text[:300]
    assert "execution" in lineage_text and f"span        {day.isoformat()}" in lineage_text, lineage_text


# ----------------------------------------------------------------------------------- 4. make down


def test_make_down_stops_every_service_and_the_warm_worker(airflow_services):
    home = airflow_services["home"]
    pids = {service: services.running_pid(home, service) for service in (*services.SERVICES, services.MODEL_SERVER)}
    down = make("down", f"MLOPS_HOME={home}", timeout=300)
    assert down.returncode == 0, down.stderr
    for service, pid in pids.items():
        if pid:
            assert f"stopped {service} (pid {pid})" in down.stdout
            assert not processes.pid_alive(pid), f"{service} (pid {pid}) still runs"
        assert not services.pid_file(home, service).exists()
    assert services.health(airflow_services["url"]) is None
    deadline = time.monotonic() + 30
    while worker.request(worker.socket_path(home), "ping") is not None:  # it finishes running nodes first
        assert time.monotonic() < deadline, "the warm worker still answers after `make down`"
        time.sleep(0.5)
    again = make("down", f"MLOPS_HOME={home}", timeout=120)
    assert again.returncode == 0 and "not running" in again.stdout
