"""`mlops airflow up|down|status` bookkeeping, without starting Airflow (tests/e2e/test_airflow_ui.py does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from monitoring import stack as monitoring_stack
from pipelines import airflow_env, model_server, services
from serving import home as home_record
from serving import processes
from serving.errors import ConfigError
from tests.conftest import REPO, mlops


def test_service_environment_pins_executor_auth_and_the_port(tmp_path):
    env = services.service_environment(tmp_path, 8093, 8800, 8801)
    assert env["AIRFLOW_HOME"] == str(tmp_path / "var" / "airflow")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("simple_auth_manager.SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(services.password_file(tmp_path))
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8093/execution/"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
    assert (env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"], env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]) == ("8800", "8801")
    assert services._command("api-server", 8093, tmp_path)[1:] == ["api-server", "--host", "127.0.0.1", "--port", "8093", "--workers", "1"]


def test_stale_pid_files_are_not_running_services(tmp_path):
    services.run_dir(tmp_path).mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    services.pid_file(tmp_path, "scheduler").write_text(f"{dead.pid}\n")
    alive_but_not_airflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        services.pid_file(tmp_path, "triggerer").write_text(f"{alive_but_not_airflow.pid}\n")
        assert services.running_pid(tmp_path, "scheduler") is None
        assert services.running_pid(tmp_path, "triggerer") is None  # a reused pid is not ours
        assert not services.pid_file(tmp_path, "scheduler").exists()
    finally:
        alive_but_not_airflow.kill()
        alive_but_not_airflow.wait()


def test_a_service_checked_while_it_is_still_starting_counts_as_running(tmp_path):
    # Right after Popen the child is still in exec() and /proc/<pid>/cmdline reads empty (seen in
    # 194 of 200 starts here): that once made `make up` call a starting triggerer dead.
    services.run_dir(tmp_path).mkdir(parents=True)
    for _ in range(10):  # the window is short: several starts
        starting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "airflow"])
        try:
            assert processes.command_line_has(starting.pid, b"airflow")  # at once, as `make up` checks the last service it started
            services.pid_file(tmp_path, "triggerer").write_text(f"{starting.pid}\n")
            assert services.running_pid(tmp_path, "triggerer") == starting.pid
            assert services.pid_file(tmp_path, "triggerer").exists()
        finally:
            starting.kill()
            starting.wait()


def test_password_file_is_created_private_and_kept(tmp_path):
    manager = services.Services(tmp_path, emit=lambda _: None)
    assert manager._prepare_password_file() is True
    path = services.password_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == ""
    path.write_text(json.dumps({"admin": "s3cret"}) + "\n")  # what the api-server writes
    assert manager._prepare_password_file() is False
    assert services.admin_password(tmp_path) == "s3cret"


def test_down_and_status_when_nothing_runs(tmp_path):
    down = mlops(tmp_path, "airflow", "down")
    assert "Airflow is not running" in down.stdout
    status = mlops(tmp_path, "airflow", "status", check=False)
    assert status.returncode == 3
    assert all(f"{service}" in status.stdout for service in services.SERVICES)
    assert "stopped" in status.stdout


def test_make_help_lists_up_down_status():
    out = subprocess.run(["make", "-s", "-C", str(REPO), "help"], capture_output=True, text=True, check=True).stdout
    for target in ("up", "down", "status", "browser", "monitoring", "servers"):
        assert any(line.startswith(f"{target}\t") for line in out.splitlines()), target
    assert airflow_env.NIGHTLY_DAG in services.PROJECT_DAGS


def test_model_server_starts_with_no_model_pushed_shows_in_status_and_stops_with_down(tmp_path, monkeypatch):
    """What `make up` adds beside Airflow (issue 6), without starting Airflow itself."""
    rest, grpc = services.free_port(), services.free_port()
    monkeypatch.setenv("MLOPS_SERVING_REST_PORT", str(rest))
    monkeypatch.setenv("MLOPS_SERVING_GRPC_PORT", str(grpc))
    lines = []
    manager = services.Services(tmp_path, emit=lines.append)
    try:
        pid = model_server.start(tmp_path, lines.append)
        model_server.wait_ready(tmp_path, lines.append, timeout=90)
        assert model_server.start(tmp_path, lines.append) == pid  # idempotent
        assert services.running_pid(tmp_path, services.MODEL_SERVER) == pid
        # What `mlops rollback` waits on by default.
        # It follows the home's models.config (whenever that exists), as `mlops serve` on the defaults does.
        assert home_record.running_model_server(tmp_path) == home_record.RunningModelServer(
            pid, f"http://127.0.0.1:{rest}", tmp_path / "serving" / "models" / "taxi",
            tmp_path / "serving" / "models.config", home_record.STARTED_BY_UP)
        assert services.log_file(tmp_path, services.MODEL_SERVER) == tmp_path / "var" / "log" / "model-server.log"
        assert any(f"REST http://127.0.0.1:{rest}/v1/models/taxi" in line and "no model yet" in line for line in lines)
        assert services.http(f"http://127.0.0.1:{rest}/v1/models/taxi")[0] == 404
        manager.status()
        assert any(line.startswith("model-server") and f"running (pid {pid})" in line and f"REST :{rest}" in line
                   for line in lines), lines
        manager.down(stop_worker=False)
        assert f"stopped model-server (pid {pid})" in lines
        assert not processes.pid_alive(pid)
        assert not services.pid_file(tmp_path, services.MODEL_SERVER).exists()
        assert home_record.running_model_server(tmp_path) is None
        assert services.http(f"http://127.0.0.1:{rest}/v1/models/taxi", timeout=2)[0] == 0
    finally:
        manager.down(stop_worker=False, quiet=True)


def test_up_starts_the_monitoring_stack_status_lists_it_and_down_stops_it_webhook_first(tmp_path, monkeypatch):
    """What `make up` adds after the model server (issue 21), without starting Airflow itself."""
    monkeypatch.setenv(monitoring_stack.INTERVAL_ENV, "1")
    lines = []
    manager = services.Services(tmp_path, emit=lines.append)
    try:
        record = manager._start_monitoring(auto_rollback=True)
        manager._announce_monitoring(record)
        assert (record["interval_seconds"], record["auto_rollback"]) == (1, True)
        for title, part in (("Prometheus:", "prometheus"), ("Alertmanager:", "alertmanager"),
                            ("Pushgateway:", "pushgateway"), ("alert webhook:", "webhook")):
            assert any(line.startswith(title) and record[part]["url"] in line for line in lines), (title, lines)
        assert any("automatic rollback on" in line for line in lines)
        lines.clear()
        assert manager.status() == 3  # Airflow is not running
        for part in monitoring_stack.SHOWN:
            assert any(line.startswith(part) and f"running (pid {record[part]['pid']})" in line
                       and f"{record[part]['url']}/, ready" in line and f"log: {record[part]['log']}" in line
                       for line in lines), (part, lines)
        lines.clear()
        manager.down(stop_worker=False)
        assert lines[0].startswith("stopped webhook"), lines  # before anything an alert could be about
        assert not any(processes.pid_alive(record[part]["pid"]) for part in monitoring_stack.PARTS)
        assert not (tmp_path / "var" / "monitoring" / "stack.json").exists()
    finally:
        monitoring_stack.stop(tmp_path, lambda _: None)


def test_auto_rollback_is_an_option_of_up_only(tmp_path):
    refused = mlops(tmp_path, "airflow", "status", "--auto-rollback", check=False)
    assert refused.returncode == 2 and "--auto-rollback is for up" in refused.stderr


def test_an_airflow_cli_write_waits_out_a_busy_sqlite_store_instead_of_failing(airflow_project):
    """CI saw `airflow backfill create` die with "database is locked" while the scheduler wrote.

    Another connection holds the write lock for 25 s (the CLI needs ~5-10 s to start, so it meets
    the lock for longer than sqlite3's default 5 s wait); the CLI call must wait and succeed."""
    import sqlite3
    import threading
    import time

    airflow_env.init(airflow_project, progress=lambda _: None)
    holder = sqlite3.connect(airflow_env.airflow_home(airflow_project) / "airflow.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # takes the write lock now
    released = threading.Timer(25.0, lambda: holder.execute("COMMIT"))
    started = time.monotonic()
    released.start()
    try:
        result = airflow_env.run_airflow(airflow_project, ["pools", "set", "busy_probe", "2", "lock test"], check=False)
    finally:
        released.join()
        holder.close()
    waited = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert waited >= 24.5, f"the CLI call finished in {waited:.1f}s, before the lock was released"
    pools = airflow_env.run_airflow(airflow_project, ["pools", "get", "busy_probe", "--output", "json"]).stdout
    assert '"busy_probe"' in pools


def test_make_ups_server_records_what_the_homes_models_config_serves(tmp_path, monkeypatch):
    """With <home>/serving/models.config serving another directory, the record of `make up`'s server
    says so: a rollback of the Pusher's directory does not wait for it (and says why)."""
    rest, grpc = services.free_port(), services.free_port()
    monkeypatch.setenv("MLOPS_SERVING_REST_PORT", str(rest))
    monkeypatch.setenv("MLOPS_SERVING_GRPC_PORT", str(grpc))
    other = tmp_path / "serving" / "models" / "other"
    other.mkdir(parents=True)
    (tmp_path / "serving" / "models.config").write_text(
        'model_config_list { config { name: "taxi" base_path: "serving/models/other" } }\n')
    manager = services.Services(tmp_path, emit=lambda _: None)
    try:
        pid = model_server.start(tmp_path, lambda _: None)
        model_server.wait_ready(tmp_path, lambda _: None, timeout=90)
        deadline = time.monotonic() + 30
        while home_record.running_model_server(tmp_path).base_path != other.resolve() and time.monotonic() < deadline:
            time.sleep(0.2)
        found = home_record.running_model_server(tmp_path)
        assert (found.pid, found.base_path, found.started_by) == (pid, other.resolve(), home_record.STARTED_BY_UP)
        server, why = home_record.model_server_for(tmp_path, tmp_path / "serving" / "models" / "taxi")
        assert server is None and f"serves {other.resolve()}, not " in why
        assert "is not in" in services.log_file(tmp_path, services.MODEL_SERVER).read_text()
    finally:
        manager.down(stop_worker=False, quiet=True)
    assert not processes.pid_alive(pid)


def test_the_model_server_record_is_never_read_half_written(tmp_path):
    """A starting `mlops serve` records itself again over what `make up` wrote; `make status`
    read the state file in between once and asked http://127.0.0.1:None (a CI failure)."""
    import threading

    stop = threading.Event()

    def rewrite():
        while not stop.is_set():
            home_record.record_model_server(tmp_path, os.getpid(), 8501, 8500, tmp_path / "serving" / "models" / "taxi")

    home_record.record_model_server(tmp_path, os.getpid(), 8501, 8500, tmp_path / "serving" / "models" / "taxi")
    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        states = [home_record.read_json(home_record.state_file(tmp_path)) for _ in range(3000)]
    finally:
        stop.set()
        writer.join()
    assert all(state.get("rest_port") == 8501 for state in states)


# ----------------------------------------------------------------------------------- the postgres backend


def test_the_default_backend_stays_sqlite_with_the_local_executor(tmp_path):
    assert airflow_env.backend(tmp_path) == "sqlite"
    assert services.services_of("sqlite") == services.SERVICES
    env = services.service_environment(tmp_path, 8093, 8800, 8801)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("sqlite:///")
    assert "MLOPS_MLMD" not in env and "AIRFLOW__CELERY__BROKER_URL" not in env
    assert airflow_env.POOL_SLOTS["sqlite"] == 1


def test_the_postgres_backend_points_every_airflow_process_at_the_homes_servers(tmp_path):
    from pipelines import db_servers

    try:
        record = db_servers.start(tmp_path, lambda _: None)
        airflow_env.set_backend(tmp_path, "postgres")
        assert airflow_env.backend(tmp_path) == "postgres"
        env = services.service_environment(tmp_path, 8093, 8800, 8801, "postgres")
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        pg, redis, maria = (record[name]["port"] for name in ("postgresql", "redis", "mariadb"))
        conn = f"postgresql+psycopg2://airflow:{db_servers.password(tmp_path, 'postgresql', 'airflow')}@127.0.0.1:{pg}/airflow"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == conn
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + conn
        assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{db_servers.password(tmp_path, 'redis', 'default')}@127.0.0.1:{redis}/0"
        # ML Metadata's contract (pipelines/config.py): the URL without the password, the password apart.
        assert env["MLOPS_MLMD"] == f"mysql://mlmd@127.0.0.1:{maria}/mlmd"
        assert env["MLOPS_MLMD_PASSWORD"] == db_servers.password(tmp_path, "mariadb", "mlmd")
        # Every Airflow CLI call of the home (pools, pause, backfill) talks to the same database.
        assert airflow_env.environment(tmp_path)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == conn
        assert services.services_of("postgres") == (*services.SERVICES, services.CELERY_WORKER)
        worker = services._command(services.CELERY_WORKER, 8093, tmp_path)
        assert worker[1:4] == ["celery", "worker", "--celery-hostname"]
        assert worker[4] == f"{services.celery_worker_name(tmp_path)}@%h"
    finally:
        db_servers.stop(tmp_path, lambda _: None)
        airflow_env.set_backend(tmp_path, None)
    assert airflow_env.backend(tmp_path) == "sqlite"


def test_a_celery_worker_is_known_by_its_node_name_after_it_renames_itself(tmp_path):
    # Celery rewrites the worker's process title to "[celeryd: <name>@<host>:MainProcess] ...": the word
    # "airflow" is gone from its command line, the node name (one per home) is not.
    services.run_dir(tmp_path).mkdir(parents=True)
    name = services.celery_worker_name(tmp_path)
    assert name != services.celery_worker_name(tmp_path / "other")
    renamed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"[celeryd: {name}@vm:MainProcess]"])
    another_homes = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "airflow", "celery", "worker",
                                      "--celery-hostname", f"{services.celery_worker_name(tmp_path / 'other')}@%h"])
    try:
        services.pid_file(tmp_path, services.CELERY_WORKER).write_text(f"{renamed.pid}\n")
        assert services.running_pid(tmp_path, services.CELERY_WORKER) == renamed.pid
        services.pid_file(tmp_path, services.CELERY_WORKER).write_text(f"{another_homes.pid}\n")
        assert services.running_pid(tmp_path, services.CELERY_WORKER) is None
    finally:
        for process in (renamed, another_homes):
            process.kill()
            process.wait()


def test_the_celery_worker_is_ready_when_its_latest_start_says_so(tmp_path):
    log = services.log_file(tmp_path, services.CELERY_WORKER)
    log.parent.mkdir(parents=True)
    assert not services.celery_worker_ready(tmp_path)
    log.write_text("\n===== 2026-01-01T00:00:00 mlops airflow up: celery-worker =====\n... celery@vm ready. ...\n"
                   "\n===== 2026-01-02T00:00:00 mlops airflow up: celery-worker =====\n[config] ...\n")
    assert not services.celery_worker_ready(tmp_path)  # an earlier start's line does not count
    with open(log, "a") as out:
        out.write("2026-01-02T00:00:09Z [info] mlops-0123@vm ready. [celery.apps.worker]\n")
    assert services.celery_worker_ready(tmp_path)


def test_up_refuses_another_backend_while_services_run(tmp_path):
    services.run_dir(tmp_path).mkdir(parents=True)
    airflow_env.set_backend(tmp_path, "postgres")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "airflow"])
    try:
        services.pid_file(tmp_path, "scheduler").write_text(f"{running.pid}\n")
        manager = services.Services(tmp_path, emit=lambda _: None)
        try:
            manager.up(backend="sqlite")
        except ConfigError as err:
            assert "already runs with the postgres backend" in str(err) and "make down" in str(err)
        else:
            raise AssertionError("up switched the backend under running services")
        assert airflow_env.backend(tmp_path) == "postgres"
    finally:
        running.kill()
        running.wait()


def test_backend_is_an_option_of_up_only(tmp_path):
    refused = mlops(tmp_path, "airflow", "status", "--backend", "postgres", check=False)
    assert refused.returncode == 2 and "--backend is for up" in refused.stderr
