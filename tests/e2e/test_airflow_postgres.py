"""`mlops airflow up --backend postgres` (`make up BACKEND=postgres`): Airflow on PostgreSQL with the
CeleryExecutor (Redis broker, one Celery worker) and ML Metadata on MariaDB, one nightly run end to end.

One project home (one small span) and one set of services, shared by the tests below. The setup
(tests/prepared.py, lane "services": after `make up`'s own shared setup, never beside it) starts
the variant on a free port, triggers nightly_retrain for the newest complete day through the REST
API, unpauses it and waits for the run. The tests then check, in this order:
  1. `up` started MariaDB, PostgreSQL and Redis (state in var/db/), created ML Metadata's schema,
     gave every Airflow service MLOPS_MLMD / MLOPS_MLMD_PASSWORD and printed or logged no password;
  2. the run succeeded, and at least two TFX nodes ran at the same time (task instances' start and
     end times): the mlmd_writers pool is wider than SQLite's one slot;
  3. Celery ran every task: each task instance's Celery task id has a SUCCESS row in the result
     backend (PostgreSQL) and a "succeeded" line in the worker's log;
  4. ML Metadata holds the run in MariaDB, and there is no var/metadata.sqlite;
  5. `down` stops every process, the database servers included, and frees every port.
The services are stopped in teardown whatever happens.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pipelines import airflow_env, db_servers, services
from serving import processes
from serving.net import port_free
from tests import prepared
from tests.conftest import REPO, SMALL_ROWS, make_home, mlops

DAG = airflow_env.NIGHTLY_DAG
RUN_TIMEOUT = 15 * 60  # about 1.5 min here
# Few training steps (FAST_RUN_ARGS) and a one-day window: the first night of a small home.
RUN_CONF = {"train_steps": 60, "eval_steps": 10, "window_days": 1, "auc_floor": 0.0}
ENV = {"MLOPS_SERVING_REST_PORT": str(services.free_port()), "MLOPS_SERVING_GRPC_PORT": str(services.free_port()),
       "MLOPS_MONITORING_INTERVAL_SECONDS": "5"}


def last_complete_day(now: dt.datetime) -> dt.date:
    """The logical day of the newest due nightly run: triggering the run for it before unpausing
    means the scheduler, which skips dates that have a run, starts no scheduled run beside it."""
    return (now - dt.timedelta(days=1, hours=2)).date()


def api(out: dict, path: str, method: str = "GET", body=None, attempts: int = 5):
    """(status, answer) of one REST call as admin. The token is kept (Airflow's last an hour); a call
    nothing answered (status 0: the api-server busy past the 10 s timeout while the shared setups
    load both cores) is tried again, up to `attempts` times (a GET; a write once), before the status
    is returned."""
    for attempt in range(attempts):
        if not out.get("token"):
            try:
                out["token"] = services.token(out["url"], services.admin_password(out["home"]))
            except services.ConfigError:
                if attempt == attempts - 1:
                    raise
                time.sleep(2)
                continue
        status, answer = services.http(out["url"] + path, method, body, token=out["token"])
        if status == 401:
            out["token"] = None  # expired: log in again
        if status not in (0, 401) or attempt == attempts - 1 or (status == 0 and method != "GET"):
            return status, answer  # a write that may have happened is not sent twice
        time.sleep(2)
    return status, answer


def _stop(home: Path) -> subprocess.CompletedProcess:
    down = mlops(home, "airflow", "down", check=False, timeout=300, env=ENV)
    if down.returncode != 0:  # still stop what runs, then report
        services.Services(home, emit=lambda _: None).down()
    return down


@prepared.setup("airflow_postgres", lane="services")
def _airflow_postgres(tmp_path_factory) -> dict:
    day = last_complete_day(dt.datetime.now(dt.timezone.utc))
    home = make_home(tmp_path_factory.mktemp("airflow-postgres"), days=1, rows=SMALL_ROWS, end=day)
    port = services.free_port()
    run_id = f"postgres_{day.isoformat()}"
    started = time.monotonic()
    try:
        up = mlops(home, "airflow", "up", "--backend", "postgres", "--port", str(port), timeout=600, env=ENV)
        out = dict(home=home, port=port, url=f"http://127.0.0.1:{port}", up=up, up_seconds=time.monotonic() - started,
                   run_id=run_id, servers=db_servers.read_state(home))
        out["trigger"] = api(out, f"/api/v2/dags/{DAG}/dagRuns", "POST", {
            "dag_run_id": run_id, "logical_date": f"{day.isoformat()}T02:00:00Z", "conf": RUN_CONF})
        out["unpause"] = api(out, f"/api/v2/dags/{DAG}", "PATCH", {"is_paused": False})
        began = time.monotonic()
        while True:
            status, run = api(out, f"/api/v2/dags/{DAG}/dagRuns/{run_id}")
            if status != 200 or run.get("state") in ("success", "failed") or time.monotonic() - began > RUN_TIMEOUT:
                break
            time.sleep(2)
        out.update(run=run, run_seconds=time.monotonic() - began)
        out["task_instances"] = api(out, f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances")[1]["task_instances"]
        return out
    except BaseException:
        _stop(home)
        raise


@pytest.fixture(scope="module")
def airflow_postgres(request):
    out = prepared.result(request, "airflow_postgres")
    try:
        yield out
    finally:
        down = _stop(out["home"])
        assert down.returncode == 0, f"mlops airflow down failed\n{down.stdout}\n{down.stderr}"


def psql(out: dict, sql: str) -> list:
    """Rows of `sql` in Airflow's database, as Airflow's user."""
    home = out["home"]
    result = subprocess.run(
        ["psql", "-X", "-A", "-t", "-F", "|", "-h", "127.0.0.1", "-p", str(out["servers"]["postgresql"]["port"]),
         "-U", db_servers.AIRFLOW_USER, "-d", db_servers.AIRFLOW_DATABASE, "-c", sql],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PGPASSWORD=db_servers.password(home, "postgresql", db_servers.AIRFLOW_USER)))
    assert result.returncode == 0, result.stderr
    return [line.split("|") for line in result.stdout.splitlines() if line]


def mariadb(out: dict, sql: str) -> list:
    """Rows of `sql` in ML Metadata's database, as its user."""
    home = out["home"]
    result = subprocess.run(
        ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(out["servers"]["mariadb"]["port"]), "-u",
         db_servers.MLMD_USER, "-N", "-B", "-e", sql, db_servers.MLMD_DATABASE],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, MYSQL_PWD=db_servers.password(home, "mariadb", db_servers.MLMD_USER)))
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


# ----------------------------------------------------------------------------------- 1. up


def test_up_starts_the_servers_then_airflow_on_postgresql_with_a_celery_worker(airflow_postgres):
    home, up = airflow_postgres["home"], airflow_postgres["up"]
    print(f"up --backend postgres took {airflow_postgres['up_seconds']:.1f}s; servers: "
          + ", ".join(f"{name} ready in {record['seconds']}s" for name, record in airflow_postgres["servers"].items()))
    for title in ("MariaDB", "PostgreSQL", "Redis"):
        assert f"{title}" in up.stdout and "started in" in up.stdout
    assert "ML Metadata: mysql://mlmd@127.0.0.1:" in up.stdout
    assert airflow_env.backend(home) == "postgres"
    status = mlops(home, "airflow", "status", env=ENV)
    assert "backend: postgres" in status.stdout and "CeleryExecutor" in status.stdout
    for name in (*services.services_of("postgres"), *db_servers.SERVERS):
        assert any(line.startswith(name) and "running" in line for line in status.stdout.splitlines()), name

    # What the services were started with (their /proc/<pid>/environ is no witness: Airflow's and Celery's
    # process titles overwrite it); test 4 shows that the node tasks inherited ML Metadata's part.
    state = services._read_state(home)
    env = services.service_environment(home, airflow_postgres["port"], state["worker_log_port"],
                                       state["trigger_log_port"], "postgres")
    mariadb_port = airflow_postgres["servers"]["mariadb"]["port"]
    assert env["MLOPS_MLMD"] == f"mysql://mlmd@127.0.0.1:{mariadb_port}/mlmd"
    assert env["MLOPS_MLMD_PASSWORD"] == db_servers.password(home, "mariadb", "mlmd")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:")

    secrets = [path.read_text().strip() for path in (home / "var" / "db").glob("*/*.password")]
    assert len(secrets) == 5
    logs = [*(home / "var" / "log").glob("*.log"), *(home / "var" / "db").glob("*/*.log")]
    written = up.stdout + up.stderr + status.stdout + "".join(path.read_text(errors="replace") for path in logs)
    assert not [secret for secret in secrets if secret in written], "a database password was printed or logged"


# ----------------------------------------------------------------------------------- 2. the run


def overlapping_pairs(task_instances: list) -> list:
    def when(text: str) -> dt.datetime:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))

    spans = sorted((when(ti["start_date"]), when(ti["end_date"]), ti["task_id"])
                   for ti in task_instances if ti["start_date"] and ti["end_date"])
    return [(a[2], b[2]) for i, a in enumerate(spans) for b in spans[i + 1:] if b[0] < a[1]]


def test_the_nightly_run_succeeds_with_nodes_running_in_parallel(airflow_postgres):
    status, _ = airflow_postgres["trigger"]
    assert status == 200, airflow_postgres["trigger"]
    run = airflow_postgres["run"]
    states = {ti["task_id"]: ti["state"] for ti in airflow_postgres["task_instances"]}
    assert run["state"] == "success", (run, states)
    print(f"the DAG run took {airflow_postgres['run_seconds']:.1f}s")
    nodes = [ti for ti in airflow_postgres["task_instances"] if ti["pool"] == airflow_env.POOL]
    manifest = json.loads((REPO / "dags" / "taxi_manifest.json").read_text())
    assert sorted(ti["task_id"] for ti in nodes) == sorted(n["id"] for n in manifest["nodes"]), states
    assert all(ti["state"] == "success" for ti in nodes), states
    pairs = overlapping_pairs(nodes)
    print(f"nodes that overlapped in time: {pairs}")
    assert pairs, "no two TFX nodes ran at the same time"
    status, pool = api(airflow_postgres, f"/api/v2/pools/{airflow_env.POOL}")
    assert status == 200 and pool["slots"] == airflow_env.POOL_SLOTS["postgres"] > 1, pool
    # Only our run: the scheduled run unpausing could have made falls on the same logical date.
    status, runs = api(airflow_postgres, f"/api/v2/dags/{DAG}/dagRuns")
    assert [r["dag_run_id"] for r in runs["dag_runs"]] == [airflow_postgres["run_id"]]


# ----------------------------------------------------------------------------------- 3. Celery


def test_celery_ran_every_task_of_the_run(airflow_postgres):
    # A task's Celery result turns SUCCESS when its supervisor is done, a few seconds after the task
    # instance reported success (the last ones: after the run did).
    deadline = time.monotonic() + 60
    while True:
        rows = psql(airflow_postgres, "SELECT ti.task_id, ti.external_executor_id, m.status FROM task_instance ti "
                                      "LEFT JOIN celery_taskmeta m ON m.task_id = ti.external_executor_id "
                                      f"WHERE ti.run_id = '{airflow_postgres['run_id']}'")
        unfinished = [row for row in rows if not row[1] or row[2] != "SUCCESS"]
        if not unfinished or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(rows) == len(airflow_postgres["task_instances"]) == 18
    assert unfinished == []
    log = services.log_file(airflow_postgres["home"], services.CELERY_WORKER).read_text(errors="replace")
    for task_id, celery_id, _ in rows:
        assert f"execute_workload[{celery_id}] succeeded" in log, task_id


# ----------------------------------------------------------------------------------- 4. ML Metadata


def test_ml_metadata_holds_the_run_in_mariadb(airflow_postgres):
    home = airflow_postgres["home"]
    context = f"{DAG}__{airflow_postgres['run_id']}"
    executions = mariadb(airflow_postgres, (
        "SELECT e.last_known_state FROM Execution e JOIN Association a ON a.execution_id = e.id "
        f"JOIN Context c ON c.id = a.context_id WHERE c.name = '{context}'"))
    print(f"ML Metadata on MariaDB: {len(executions)} executions of {context}")
    assert len(executions) >= 10, executions
    assert not (home / "var" / "metadata.sqlite").exists()
    # Commands typed by hand in the home, without MLOPS_MLMD, read the same store while the variant runs.
    assert "MLOPS_MLMD" not in os.environ
    info = json.loads(mlops(home, "metadata", "info", "--json").stdout)
    assert info["url"] == f"mysql://mlmd@127.0.0.1:{airflow_postgres['servers']['mariadb']['port']}/mlmd"
    assert info["counts"]["executions"] >= len(executions)
    summary = mlops(home, "summary", "--run-id", context, "--json").stdout
    assert json.loads(summary[summary.index("{"):])["run_id"] == context


# ----------------------------------------------------------------------------------- 5. down


def test_down_stops_every_process_and_frees_the_ports(airflow_postgres):
    home = airflow_postgres["home"]
    pids = {name: services.running_pid(home, name) for name in services.services_of("postgres")}
    pids.update({name: db_servers.running_pid(home, name) for name in db_servers.SERVERS})
    assert all(pids.values()), pids
    state = services._read_state(home)
    ports = [airflow_postgres["port"], state["worker_log_port"],
             *(record["port"] for record in airflow_postgres["servers"].values())]
    down = mlops(home, "airflow", "down", env=ENV, timeout=300)
    for name, pid in pids.items():
        assert not processes.pid_alive(pid), f"{name} (pid {pid}) still runs"
    for title in ("MariaDB", "PostgreSQL", "Redis", services.CELERY_WORKER):
        assert f"stopped {title}" in down.stdout
    deadline = time.monotonic() + 10
    while not all(port_free(port) for port in ports) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [port for port in ports if not port_free(port)] == []
    assert airflow_env.backend(home) == "sqlite"
    status = mlops(home, "airflow", "status", check=False, env=ENV)
    assert status.returncode == 3 and "backend: sqlite" in status.stdout
