"""`make up` / `make down`: Airflow 3's long-running services for one project home.

`mlops airflow up` starts the api-server (UI + REST API on 127.0.0.1), the scheduler, the
dag-processor and the triggerer of `.venv-airflow` as background processes, each in its own
session, with the environment of `airflow_env.environment(home)` plus the settings below. State
lives under the project home:

    var/airflow/run/<service>.pid        one pid file per service
    var/airflow/run/services.json        port, URL and log-server ports of the running set
    var/log/airflow-<service>.log        each service's stdout and stderr
    var/airflow/run/model-server.pid     the model server (`mlops serve`) started beside Airflow
    var/airflow/run/model-server.json    its ports
    var/log/model-server.log             its stdout and stderr
    var/airflow/simple_auth_manager_passwords.json.generated   the admin password (mode 600)
    var/monitoring/                      the monitoring stack started after them (monitoring/stack.py)

Settings, and why:

- Executor: LocalExecutor. Airflow 3 removed the SequentialExecutor, LocalExecutor is its
  default and the one `airflow standalone` forces, and it runs on SQLite (task processes talk to
  the api-server's execution API, not to the database). Parallelism is cut from 32 to 4: the
  LocalExecutor forks that many workers at start, and the ML Metadata pool (one slot) lets only
  one TFX node run at a time anyway.
- `up --backend postgres` (`make up BACKEND=postgres`): first the home's PostgreSQL, MariaDB and
  Redis (pipelines/db_servers.py, state in var/db/), then `mlops metadata init` (ML Metadata's
  schema on MariaDB, made once before any task: several processes creating it at once fail), then
  the same services on Airflow's database in PostgreSQL with the CeleryExecutor (Redis the broker,
  PostgreSQL the result backend) and one `airflow celery worker` (PARALLELISM processes; it serves
  the task logs on the worker log port); the ML Metadata pool is widened
  (airflow_env.POOL_SLOTS). Every service gets MLOPS_MLMD and MLOPS_MLMD_PASSWORD, which the node
  tasks inherit. `down` stops the worker with the other services and the database servers last.
- Its task supervisors (POSTGRES_TASK_SETTINGS): `[workers] min_heartbeat_interval` 1 s, not 5.
  Airflow's supervisor, when a task process has closed its sockets before it is reaped, waits in
  select() for up to that interval before it sees the exit; a finished task then kept its Celery
  process and executor slot 5 s longer (measured: 0.03 s or 5.04 s after the task's end, nothing
  between; several tasks a run), and with PARALLELISM no wider than the pool the next nodes waited
  for those slots. 1 s bounds it (measured: 0.03 s or 1.05 s), for one heartbeat a second per running
  task (at most PARALLELISM) to the api-server and PostgreSQL. The SQLite default keeps 5 s: its
  one-slot pool never waits for an executor slot, and a heartbeat is a write to SQLite.
- Its scheduler sleeps 0.2 s, not 1 s, after a loop that found nothing to do
  (`[scheduler] scheduler_idle_sleep_time`): a node whose upstream just finished waits up to that
  sleep before it is queued, once per step of the DAG's chain (11 steps after the roots). Polling
  PostgreSQL five times a second is cheap for a server; SQLite keeps 1 s (its one file serialises
  the scheduler's reads with the tasks' writes).
- The Celery worker loads the plugins at its start (CELERY_WORKER_SETTINGS, `[core]
  lazy_load_plugins` False), so its pool processes, forked from it, start each task without
  importing dags/plugins (the UI plugin pulls in FastAPI: 0.15-0.2 s a task, measured; the
  LocalExecutor's processes, forked from the scheduler, have it already). A plugin change then needs
  `make down && make up`, as the scheduler's does.
- Authentication: the SimpleAuthManager (Airflow 3's default and what `airflow standalone`
  uses) with one user, `admin` (role admin). The api-server generates its password into the
  password file the first time; `up` creates that file empty with mode 600 beforehand so the
  password is never world-readable, and prints the password once, when it was just generated.
- The execution API URL follows the chosen port (Airflow's default assumes localhost:8080) and
  the scheduler's and triggerer's log servers get free ports when 8793/8794 are taken, so two
  project homes can run side by side.

The model server (`mlops serve`) starts with them and stops with them: pipelines/model_server.py.
The monitoring stack (Prometheus, Alertmanager, Pushgateway, the alert webhook: monitoring/stack.py)
starts after the model server, so that Prometheus's first scrape finds it, and stops first, the
webhook before anything else, so that alerts about the services `make down` stops trigger no
rollback. Automatic rollback is off unless `up --auto-rollback` (`make up AUTO_ROLLBACK=1`).

Everything here is the standard library: this module runs in `.venv` (TFX) and drives Airflow's
Python 3.11 environment only through subprocesses and HTTP.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from monitoring import stack as monitoring_stack
from pipelines import airflow_env, db_servers, model_server
from pipelines.errors import ConfigError
from pipelines.http import free_port, http, port_free
from serving import home as home_record
from serving.files import tail
from serving.home import HOST, MODEL_SERVER, STARTED_BY_UP, read_json
from serving.processes import live_pid, spawn_logged, stop_in_order

DEFAULT_PORT = 8080
ADMIN = "admin"
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
CELERY_WORKER = "celery-worker"  # the postgres backend's one Celery worker
EXECUTORS = {"sqlite": "LocalExecutor", "postgres": "CeleryExecutor"}
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
PARALLELISM = 4
WORKER_LOG_PORT = 8793
TRIGGER_LOG_PORT = 8794
START_TIMEOUT = 240.0
STOP_TIMEOUT = 30.0
PROJECT_DAGS = (airflow_env.NIGHTLY_DAG, airflow_env.ROLLBACK_DAG, airflow_env.SCORING_DAG, airflow_env.TUNING_DAG)
# The postgres backend's task supervisors and Celery worker: see "Settings, and why" above.
POSTGRES_TASK_SETTINGS = {"AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                          "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"}
CELERY_WORKER_SETTINGS = {"AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False"}


# ----------------------------------------------------------------------------------- paths


def run_dir(home: Path) -> Path:
    return home_record.run_dir(home)  # the model server's record lives there too


def pid_file(home: Path, service: str) -> Path:
    return run_dir(home) / f"{service}.pid"


def state_file(home: Path) -> Path:
    return run_dir(home) / "services.json"


def log_file(home: Path, service: str) -> Path:
    if service == MODEL_SERVER:
        return model_server.log_file(home)
    return Path(home) / "var" / "log" / f"airflow-{service}.log"


def password_file(home: Path) -> Path:
    return airflow_env.airflow_home(home) / "simple_auth_manager_passwords.json.generated"


def admin_password(home: Path) -> Optional[str]:
    try:
        return json.loads(password_file(home).read_text() or "{}").get(ADMIN)
    except (OSError, ValueError):
        return None


def default_port() -> int:
    return int(os.environ.get("AIRFLOW_PORT") or DEFAULT_PORT)


def base_url(port: int) -> str:
    return f"http://{HOST}:{port}"


def services_of(backend: str) -> tuple:
    """The Airflow services `up` runs for `backend`, in start order."""
    return SERVICES + ((CELERY_WORKER,) if backend == "postgres" else ())


def service_environment(home: Path, port: int, worker_log_port: int, trigger_log_port: int,
                        backend: str = "sqlite") -> Dict[str, str]:
    """What every service process of this home runs with (`backend`'s database settings come from
    airflow_env.environment, which reads the home's recorded backend)."""
    env = airflow_env.environment(home)
    env.update(
        AIRFLOW__CORE__EXECUTOR=EXECUTORS[backend],
        AIRFLOW__CELERY__WORKER_CONCURRENCY=str(PARALLELISM),
        AIRFLOW__CORE__PARALLELISM=str(PARALLELISM),
        AIRFLOW__CORE__AUTH_MANAGER=SIMPLE_AUTH_MANAGER,
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(password_file(home)),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base_url(port)}/execution/",
        AIRFLOW__API__HOST=HOST,
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(worker_log_port),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(trigger_log_port),
        TF_USE_LEGACY_KERAS="1",  # the node tasks train Keras models (design.md, section 2)
        PYTHONUNBUFFERED="1",
    )
    if backend == "postgres":
        env.update(POSTGRES_TASK_SETTINGS)
    return env


def _command(service: str, port: int, home: Path) -> List[str]:
    binary = str(airflow_env.check_installed())
    if service == "api-server":
        return [binary, "api-server", "--host", HOST, "--port", str(port), "--workers", "1"]
    if service == CELERY_WORKER:  # one worker: no peers to synchronise with at start or to gossip with
        return [binary, "celery", "worker", "--celery-hostname", f"{celery_worker_name(home)}@%h", "--concurrency",
                str(PARALLELISM), "--without-mingle", "--without-gossip"]
    return [binary, service]


def celery_worker_name(home: Path) -> str:
    """The worker's Celery node name before `@<host>`: one per home. Celery rewrites the worker's process
    title ("[celeryd: <name>@<host>:MainProcess] ..."), so this name, not "airflow", is what its command
    line keeps."""
    return "mlops-" + hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------------- processes


def running_pid(home: Path, service: str) -> Optional[int]:
    """The pid of `service` for this home if it runs; removes a stale pid file."""
    if service == MODEL_SERVER:
        return home_record.running_pid(home)
    marker = f"{celery_worker_name(home)}@" if service == CELERY_WORKER else "airflow"
    return live_pid(pid_file(home, service), marker.encode())


def _read_state(home: Path) -> dict:
    return read_json(state_file(home))


def health(url: str) -> Optional[dict]:
    status, answer = http(f"{url}/api/v2/monitor/health", timeout=5.0)
    return answer if status == 200 and isinstance(answer, dict) else None


def celery_worker_ready(home: Path) -> bool:
    """Has the Celery worker started this time said it is ready ("celery@<host> ready.")?"""
    try:
        text = log_file(home, CELERY_WORKER).read_text(errors="replace")
    except OSError:
        return False
    return " ready." in text.rpartition("\n===== ")[2]  # after the banner of its latest start


def _all_healthy(answer: Optional[dict]) -> bool:
    if not answer:
        return False
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((answer.get(part) or {}).get("status") == "healthy" for part in parts)


def token(url: str, password: str) -> str:
    status, answer = http(f"{url}/auth/token", "POST", {"username": ADMIN, "password": password})
    if status not in (200, 201) or not isinstance(answer, dict) or "access_token" not in answer:
        raise ConfigError(f"Airflow at {url} refused the admin login (HTTP {status})",
                          "check the password file, or `make down && make up`")
    return answer["access_token"]


# ----------------------------------------------------------------------------------- commands


class Services:
    def __init__(self, home: Path, emit: Callable[[str], None] = print):
        self.home = Path(home).resolve()
        self.emit = emit

    # -- status

    def backend(self) -> str:
        return airflow_env.backend(self.home)

    def pids(self, backend: Optional[str] = None) -> Dict[str, Optional[int]]:
        """The services of `backend` (default: the home's recorded one), each with its pid or None."""
        return {service: running_pid(self.home, service) for service in services_of(backend or self.backend())}

    def url(self) -> Optional[str]:
        return _read_state(self.home).get("url")

    def status(self) -> int:
        """Prints each service and each part of the monitoring stack; returns 0 when all run and the
        api-server and the monitoring parts answer, else 3."""
        backend = self.backend()
        pids = self.pids(backend)
        url = self.url()
        answer = health(url) if url and pids["api-server"] else None
        self.emit(f"backend: {airflow_env.describe_backend(backend)}")
        for service, pid in pids.items():
            state = f"running (pid {pid})" if pid else "stopped"
            key = service.replace("-", "_")
            if answer and key in answer:
                state += f", {answer[key].get('status')}"
            self.emit(f"{service:14} {state:28} log: {log_file(self.home, service)}")
        servers = db_servers.status(self.home)
        for line in db_servers.status_lines(servers):
            if backend == "postgres" or "running" in line:
                self.emit(line)
        servers_ok = backend != "postgres" or all(server.pid and server.ready for server in servers)
        model_server.status(self.home, self.emit)
        parts = monitoring_stack.status(self.home)
        for line in monitoring_stack.status_lines(parts):
            self.emit(line)
        monitoring_ok = all(part.pid and part.ready for part in parts)
        if all(pids.values()) and answer and monitoring_ok and servers_ok:
            self.emit(f"Airflow UI: {url}/  user: {ADMIN}  password: in {password_file(self.home)}")
            return 0
        if any(pids.values()) or any(part.pid for part in parts):
            self.emit("some services are not running: `make up` starts the missing ones, `make down` stops all")
        return 3

    # -- up

    def up(self, port: Optional[int] = None, unpause: bool = False, auto_rollback: Optional[bool] = None,
           timeout: float = START_TIMEOUT, backend: Optional[str] = None) -> int:
        """`backend` None: the one the running services use, else `sqlite`."""
        backend = self._settle_backend(backend)
        pids = self.pids(backend)
        state = _read_state(self.home)
        if all(pids.values()):
            url = state.get("url") or base_url(port or default_port())
            if port and state.get("port") and int(state["port"]) != port:
                raise ConfigError(f"Airflow for {self.home} already runs on {url}, not on port {port}",
                                  "`make down` first to move it to another port")
            if backend == "postgres":
                self._start_db_servers(fresh=False)
            self.emit(f"Airflow is already running for {self.home}: {url}/ (user {ADMIN}, password in "
                      f"{password_file(self.home)})")
            model_server.start(self.home, self.emit)
            model_server.wait_ready(self.home, self.emit, timeout)
            self._announce_monitoring(self._start_monitoring(auto_rollback))
            if unpause:
                self.set_paused(airflow_env.NIGHTLY_DAG, False)
            return 0
        if any(pids.values()):  # a partial set: keep the port the running ones were started with
            port = int(state.get("port") or port or default_port())
        port = port or default_port()
        if not pids["api-server"] and not port_free(port):
            raise ConfigError(f"port {port} on {HOST} is already in use",
                              "stop what uses it, or pick another: `make up AIRFLOW_PORT=8093`")
        if backend == "postgres":
            try:
                self._start_db_servers(fresh=True)
            except ConfigError:
                self.down(stop_worker=False, quiet=True)
                raise
        airflow_env.init(self.home, progress=self.emit)
        new_password = self._prepare_password_file()
        worker_log_port, trigger_log_port = self._log_ports(state, pids)
        url = base_url(port)
        run_dir(self.home).mkdir(parents=True, exist_ok=True)
        state_file(self.home).write_text(json.dumps(dict(
            home=str(self.home), port=port, url=url, worker_log_port=worker_log_port,
            trigger_log_port=trigger_log_port, started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        ), indent=2) + "\n")
        env = service_environment(self.home, port, worker_log_port, trigger_log_port, backend)
        model_server.start(self.home, self.emit)
        started = []
        for service in services_of(backend):
            if pids[service]:
                continue
            self._start(service, port, env)
            started.append(service)
        self.emit(f"started {', '.join(started)} for {self.home}; waiting for {url} ...")
        try:
            self._wait_ready(url, timeout, backend)
            model_server.wait_ready(self.home, self.emit, timeout)
            monitoring = self._start_monitoring(auto_rollback)
        except ConfigError:
            self.down(stop_worker=False, quiet=True)
            raise
        if unpause:
            self.set_paused(airflow_env.NIGHTLY_DAG, False)
        self._announce(url, new_password, unpause)
        self._announce_monitoring(monitoring)
        return 0

    def _settle_backend(self, wanted: Optional[str]) -> str:
        """The backend this `up` runs: the running services' one (asking for another is an error), else
        `wanted` or sqlite, recorded for every Airflow call of the home (airflow_env.backend)."""
        current = self.backend()
        running = [service for service, pid in self.pids(current).items() if pid]
        if running:
            if wanted and wanted != current:
                raise ConfigError(f"Airflow for {self.home} already runs with the {current} backend, not {wanted}",
                                  f"`make down` first, then `make up BACKEND={wanted}`")
            return current
        chosen = wanted or "sqlite"
        if chosen not in airflow_env.BACKENDS:
            raise ConfigError(f"unknown backend {chosen!r}", f"choose one of {', '.join(airflow_env.BACKENDS)}")
        airflow_env.set_backend(self.home, chosen)
        return chosen

    def _start_db_servers(self, fresh: bool) -> None:
        """PostgreSQL, MariaDB and Redis (running ones are reused); with `fresh` (Airflow's services are
        about to start) also ML Metadata's schema, before any task can open the empty store."""
        db_servers.start(self.home, self.emit)
        if fresh:
            self._init_metadata()

    def _init_metadata(self) -> None:
        """`mlops metadata init` on the home's MariaDB (idempotent: creates or upgrades the schema)."""
        env = dict(airflow_env.environment(self.home), **db_servers.mlmd_environment(self.home))
        mlops = Path(env["MLOPS_BIN"])
        result = subprocess.run([str(mlops), "--home", str(self.home), "metadata", "init"], env=env,
                                capture_output=True, text=True, timeout=START_TIMEOUT)
        if result.returncode != 0:
            raise ConfigError(f"`mlops metadata init` on MariaDB failed (exit {result.returncode}): "
                              f"{(result.stderr or result.stdout).strip()[-600:]}",
                              f"read {db_servers.log_file(self.home, 'mariadb')}; then `make up BACKEND=postgres` again")
        self.emit(f"ML Metadata: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else 'ready'}")

    def _start_monitoring(self, auto_rollback: Optional[bool]) -> dict:
        """The monitoring stack, after the model server (Prometheus scrapes it); its stack.json record.
        `auto_rollback` None: as the running webhook does (off when it starts now)."""
        settings = monitoring_stack.StackSettings.from_env(self.home, auto_rollback=auto_rollback)
        return monitoring_stack.start(settings, self.emit)

    def _announce_monitoring(self, record: dict) -> None:
        for line in monitoring_stack.describe(record):
            self.emit(line)

    def _prepare_password_file(self) -> bool:
        """Creates the password file empty, mode 600, if there is none; True when it was created.

        The api-server then writes the generated admin password into it (its SimpleAuthManager
        keeps a file's mode and fills in users missing from it)."""
        path = password_file(self.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and admin_password(self.home):
            return False
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        return True

    def _log_ports(self, state: dict, pids: Dict[str, Optional[int]]) -> tuple:
        chosen = []
        # The worker log server runs in the scheduler (LocalExecutor) or in the Celery worker.
        for key, preferred, owner in (("worker_log_port", WORKER_LOG_PORT, "scheduler" if "scheduler" in pids and
                                       CELERY_WORKER not in pids else CELERY_WORKER),
                                      ("trigger_log_port", TRIGGER_LOG_PORT, "triggerer")):
            if pids.get(owner) and state.get(key):
                chosen.append(int(state[key]))  # its server runs: every service must agree on it
            elif port_free(preferred) and preferred not in chosen:
                chosen.append(preferred)
            else:
                chosen.append(free_port())
        return tuple(chosen)

    def _start(self, service: str, port: int, env: Dict[str, str]) -> int:
        if service == CELERY_WORKER:
            env = {**env, **CELERY_WORKER_SETTINGS}
        pid = spawn_logged(_command(service, port, self.home), log_file(self.home, service), f"mlops airflow up: {service}",
                           self.home, env)
        pid_file(self.home, service).write_text(f"{pid}\n")
        return pid

    def _wait_ready(self, url: str, timeout: float, backend: str = "sqlite") -> None:
        """Until every service is healthy (the Celery worker: says it is ready) and the project's DAGs
        are parsed (or one dies)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            for service in services_of(backend):
                if not running_pid(self.home, service):
                    raise ConfigError(
                        f"airflow {service} exited while starting; last lines of {log_file(self.home, service)}:\n"
                        f"{tail(log_file(self.home, service))}",
                        "fix the cause above, then `make up` again",
                    )
            last = health(url)
            if _all_healthy(last) and (backend != "postgres" or celery_worker_ready(self.home)):
                break
            if time.monotonic() > deadline:
                worker = "" if backend != "postgres" or celery_worker_ready(self.home) else "; the Celery worker is not ready"
                raise ConfigError(f"Airflow did not become healthy within {timeout:.0f}s (health: {last}{worker})",
                                  f"read the logs in {log_file(self.home, 'scheduler').parent}")
            time.sleep(1.0)
        password = admin_password(self.home)
        while not password and time.monotonic() < deadline:
            time.sleep(0.5)
            password = admin_password(self.home)
        if not password:
            raise ConfigError(f"the api-server wrote no admin password to {password_file(self.home)}",
                              f"read {log_file(self.home, 'api-server')}")
        auth = token(url, password)
        while True:
            missing = [dag for dag in PROJECT_DAGS if http(f"{url}/api/v2/dags/{dag}", token=auth)[0] != 200]
            if not missing:
                return
            status, errors = http(f"{url}/api/v2/importErrors", token=auth)
            if status == 200 and isinstance(errors, dict) and errors.get("import_errors"):
                first = errors["import_errors"][0]
                raise ConfigError(f"DAG file {first.get('filename')} does not import: "
                                  f"{(first.get('stack_trace') or '').strip().splitlines()[-1:]}",
                                  "fix the DAG file; the dag-processor picks it up again by itself")
            if time.monotonic() > deadline:
                raise ConfigError(f"the dag-processor did not parse {', '.join(missing)} within {timeout:.0f}s",
                                  f"read {log_file(self.home, 'dag-processor')}")
            time.sleep(1.0)

    def _announce(self, url: str, new_password: bool, unpaused: bool) -> None:
        self.emit(f"Airflow UI and API: {url}/")
        self.emit(f"  user: {ADMIN}")
        if new_password:
            self.emit(f"  password: {admin_password(self.home)}  (generated now; shown only this once, "
                      f"kept in {password_file(self.home)})")
        else:
            self.emit(f"  password: in {password_file(self.home)}")
        if unpaused:
            self.emit(f"  DAG {airflow_env.NIGHTLY_DAG} is unpaused: it runs at 02:00")
        else:
            self.emit(f"  DAGs are paused: unpause {airflow_env.NIGHTLY_DAG} in the UI, or `mlops airflow unpause`")
        self.emit(f"  logs: {log_file(self.home, 'scheduler').parent}/airflow-*.log; stop with `make down`")

    # -- down

    def down(self, stop_worker: bool = True, timeout: float = STOP_TIMEOUT, quiet: bool = False) -> int:
        emit = (lambda _: None) if quiet else self.emit
        # First, the webhook first of all: stopping the model server must not trigger a rollback.
        monitoring_stack.stop(self.home, emit)
        pids = {service: pid for service, pid in self.pids("postgres").items() if pid}
        server = home_record.running_model_server(self.home)
        if server is not None and server.started_by != STARTED_BY_UP:
            emit(f"left the model server started by `{server.started_by}` running (pid {server.pid}): "
                 f"`kill {server.pid}` stops it")
        elif pid := running_pid(self.home, MODEL_SERVER):
            pids[MODEL_SERVER] = pid
        # The scheduler first (no new tasks), the api-server last (running tasks report to it).
        # The worker after the scheduler: it finishes (or, after the timeout, loses) the tasks it runs.
        order = [s for s in (MODEL_SERVER, "scheduler", CELERY_WORKER, "triggerer", "dag-processor", "api-server")
                 if s in pids]
        # Whatever is left in a service's session after the timeout (its own children) goes too.
        for service, forced in stop_in_order(pids, order, timeout, poll=0.2).items():
            emit(f"stopped {service} (pid {pids[service]}){' with SIGKILL after ' + str(int(timeout)) + 's' if forced else ''}")
            with contextlib.suppress(OSError):
                pid_file(self.home, service).unlink()
        with contextlib.suppress(OSError):
            state_file(self.home).unlink()
        if MODEL_SERVER in pids:
            with contextlib.suppress(OSError):
                home_record.state_file(self.home).unlink()
        if not order:
            emit(f"Airflow is not running for {self.home}")
        db_servers.stop(self.home, emit)  # after every Airflow process: they are its clients
        airflow_env.set_backend(self.home, None)
        if stop_worker:
            self._stop_worker(emit)
        return 0

    def _stop_worker(self, emit: Callable[[str], None]) -> None:
        from pipelines.worker import client as worker  # standard library only

        answer = worker.request(worker.socket_path(self.home), "stop")
        if answer:
            emit(f"warm worker {answer['pid']} stops after its {answer['running']} running node(s)")

    # -- pause / unpause

    def set_paused(self, dag_id: str, paused: bool) -> None:
        verb = "pause" if paused else "unpause"
        result = airflow_env.run_airflow(self.home, ["dags", verb, dag_id], check=False)
        if result.returncode != 0:
            raise ConfigError(f"`airflow dags {verb} {dag_id}` failed: {(result.stderr or result.stdout).strip()[-300:]}",
                              "is the DAG parsed yet? `make up` waits until it is")
        self.emit(f"DAG {dag_id}: {'paused' if paused else 'unpaused'}")
