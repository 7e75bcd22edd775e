"""The model server `make up` starts beside Airflow: `mlops serve` for the home, in the background.

REST on 127.0.0.1:8501 and gRPC on 127.0.0.1:8500 ($MLOPS_SERVING_REST_PORT /
$MLOPS_SERVING_GRPC_PORT override; $MLOPS_SERVING_WORKERS=N: N worker processes, serving/supervisor.py),
base path <home>/serving/models/taxi, and
<home>/serving/models.config whenever it exists. With no model pushed yet it serves nothing
(status 404) and picks up the first version the Pusher writes. It is recorded as the home's model
server (serving/home.py) so that `make status`, `make down` and rollbacks find it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

from pipelines.errors import ConfigError
from pipelines.http import http, port_free
from serving import home as home_record
from serving.files import tail
from serving.home import HOST, MODEL_SERVER, STARTED_BY_UP, read_json
from serving.processes import spawn_logged

MODEL_NAME = home_record.DEFAULT_MODEL
SERVING_REST_PORT = 8501
SERVING_GRPC_PORT = 8500


def serving_ports() -> tuple:
    """(REST, gRPC) ports for the model server `up` starts."""
    return (int(os.environ.get("MLOPS_SERVING_REST_PORT") or SERVING_REST_PORT),
            int(os.environ.get("MLOPS_SERVING_GRPC_PORT") or SERVING_GRPC_PORT))


def serving_workers() -> int:
    """Worker processes of the model server `up` starts (`mlops serve --workers`; 1: a single process)."""
    value = os.environ.get("MLOPS_SERVING_WORKERS") or "1"
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"MLOPS_SERVING_WORKERS={value!r} is not a number of processes",
                          "set it to 1 or more (or unset it: one process)")
    return int(value)


def log_file(home: Path) -> Path:
    return Path(home) / "var" / "log" / f"{MODEL_SERVER}.log"


def start(home: Path, emit: Callable[[str], None]) -> Optional[int]:
    """`mlops serve` for this home in the background, unless it already runs; its pid."""
    found = home_record.running_model_server(home)
    if found is not None:
        if found.started_by != STARTED_BY_UP:
            emit(f"model server: already running for {home} (pid {found.pid}, started by "
                 f"`{found.started_by}`): using it; `make down` leaves it running")
        return found.pid
    pid = home_record.running_pid(home)
    if pid:
        return pid
    rest_port, grpc_port = serving_ports()
    workers = serving_workers()
    for port in (rest_port, grpc_port):
        if not port_free(port):
            raise ConfigError(f"model server port {port} on {HOST} is already in use",
                              "stop what uses it, or pick others: MLOPS_SERVING_REST_PORT=8511 "
                              "MLOPS_SERVING_GRPC_PORT=8510 make up")
    import sys

    from serving.config import default_config_path

    # On the home's defaults: <home>/serving/models/taxi, and <home>/serving/models.config
    # (labels, pinned versions) whenever it exists, also when it is written later.
    base = home / "serving" / "models" / MODEL_NAME
    cmd = [str(Path(sys.executable).parent / "mlops"), "--home", str(home), "serve",
           "--model-name", MODEL_NAME, "--host", HOST, "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    home_record.run_dir(home).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    pid = spawn_logged(cmd, log_file(home), f"mlops airflow up: {MODEL_SERVER}", home, env)
    home_record.record_model_server(home, pid, rest_port, grpc_port, base, default_config_path(home))
    return pid


def wait_ready(home: Path, emit: Callable[[str], None], timeout: float) -> None:
    """Until the REST port answers (any HTTP status: 404 while no model is pushed)."""
    state = read_json(home_record.state_file(home))
    url = f"http://{HOST}:{state.get('rest_port', serving_ports()[0])}/v1/models/{MODEL_NAME}"
    deadline = time.monotonic() + timeout
    while True:
        if not home_record.running_pid(home):
            raise ConfigError(f"the model server exited while starting; last lines of "
                              f"{log_file(home)}:\n{tail(log_file(home))}",
                              "fix the cause above, then `make up` again")
        status, _ = http(url, timeout=2.0)
        if status:
            break
        if time.monotonic() > deadline:
            raise ConfigError(f"the model server did not answer on {url} within {timeout:.0f}s",
                              f"read {log_file(home)}")
        time.sleep(0.5)
    emit(f"model server: REST http://{HOST}:{state.get('rest_port')}/v1/models/{MODEL_NAME}, "
         f"gRPC {HOST}:{state.get('grpc_port')} (serving {state.get('base_path')}; "
         f"{'no model yet' if status == 404 else f'HTTP {status}'}); log {log_file(home)}")


def status(home: Path, emit: Callable[[str], None]) -> None:
    """One `make status` line: pid, ports, the versions it serves, where it logs."""
    pid = home_record.running_pid(home)
    state = read_json(home_record.state_file(home)) if pid else {}
    where = ""
    if pid:
        status, body = http(f"http://{HOST}:{state.get('rest_port')}/v1/models/{MODEL_NAME}", timeout=2.0)
        served = [s.get("version") for s in (body or {}).get("model_version_status", [])
                  if s.get("state") == "AVAILABLE"] if status == 200 and isinstance(body, dict) else []
        where = (f", REST :{state.get('rest_port')} gRPC :{state.get('grpc_port')}, "
                 + (f"serving version {', '.join(map(str, served))}" if served else f"no model (HTTP {status})"))
    logs = log_file(home)
    if pid and state.get("started_by") not in (None, STARTED_BY_UP):
        where += f", started by `{state['started_by']}`"
        logs = "the stderr of the terminal or supervisor that started it"
    state_text = f"running (pid {pid}){where}" if pid else "stopped"
    emit(f"{MODEL_SERVER:14} {state_text}  log: {logs}")

