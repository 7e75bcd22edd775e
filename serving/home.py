"""The home's model server: which running `mlops serve` serves this project home's models.

A server of the home's model directory (the Pusher's, `<home>/serving/models/<model>`) with a REST
port is the home's model server while no other one runs. `make up` records the server it starts; a
`mlops serve` started by hand records itself (serving/server.py `HomeRegistration`). `make status`,
`make down`, `mlops rollback` (which waits for the restored version) and retention (which keeps
what it loads) read the record:

    <home>/var/airflow/run/model-server.pid     its pid
    <home>/var/airflow/run/model-server.json    its ports, base path, models.config, who started it

Standard library only: the CLI and the Airflow supervision read it without TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Optional, Tuple

from serving.files import write_atomic
from serving.processes import live_pid

HOST = "127.0.0.1"
MODEL_SERVER = "model-server"
DEFAULT_MODEL = "taxi"
STARTED_BY_UP = "make up"  # `make up` / `mlops airflow up` started it, and `make down` stops it
STARTED_BY_HAND = "mlops serve"  # started by hand; it registered itself, and `make down` leaves it running
# What the command line of a model server process contains (guards against reused pids).
SERVER_MARKER = b"\0serve\0"


def model_dir(home: Path, model: str = DEFAULT_MODEL) -> Path:
    """The directory the Pusher writes `model`'s versions to."""
    return Path(home) / "serving" / "models" / model


def run_dir(home: Path) -> Path:
    """Where the home's long-running processes keep pid and state files (`make up`'s too)."""
    return Path(home) / "var" / "airflow" / "run"


def pid_file(home: Path) -> Path:
    return run_dir(home) / f"{MODEL_SERVER}.pid"


def state_file(home: Path) -> Path:
    return run_dir(home) / f"{MODEL_SERVER}.json"


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def running_pid(home: Path) -> Optional[int]:
    """The pid of the home's recorded model server if it runs; removes a stale pid file."""
    return live_pid(pid_file(home), SERVER_MARKER)


def record_model_server(home: Path, pid: int, rest_port: int, grpc_port: int, base_path: Path,
                        config_file: Optional[Path] = None, started_by: str = STARTED_BY_UP) -> None:
    """Makes a running `mlops serve` this home's model server (`make status`, `make down`, rollbacks,
    retention). `config_file`: the models.config it follows (it may not exist yet)."""
    run_dir(home).mkdir(parents=True, exist_ok=True)
    # Atomic: `make status` and rollbacks read these while a starting server records itself again.
    write_atomic(pid_file(home), f"{pid}\n".encode())
    write_atomic(state_file(home), (json.dumps(dict(
        rest_port=rest_port, grpc_port=grpc_port, base_path=str(base_path), pid=pid,
        model_config_file=str(config_file) if config_file else None, started_by=started_by), indent=2) + "\n").encode())


def unregister_model_server(home: Path, pid: int) -> None:
    """At a model server's shutdown: forgets it, if it is still the one recorded."""
    try:
        recorded = int(pid_file(home).read_text().strip())
    except (OSError, ValueError):
        return
    if recorded == pid:
        for path in (pid_file(home), state_file(home)):
            with contextlib.suppress(OSError):
                path.unlink()


@dataclasses.dataclass(frozen=True)
class RunningModelServer:
    pid: int
    rest_url: str  # http://127.0.0.1:8501
    base_path: Path  # the version directory it serves
    config_file: Optional[Path] = None  # the models.config it follows (may not exist)
    started_by: str = STARTED_BY_UP


def running_model_server(home: Path) -> Optional[RunningModelServer]:
    """This home's model server (started by `make up`, or a `mlops serve` that registered itself) if it runs."""
    pid = running_pid(home)
    state = read_json(state_file(home)) if pid else {}
    if not pid or state.get("pid", pid) != pid or not state.get("rest_port") or not state.get("base_path"):
        return None
    config = state.get("model_config_file")
    return RunningModelServer(pid, f"http://{HOST}:{state['rest_port']}", Path(state["base_path"]),
                              Path(config) if config else None, state.get("started_by") or STARTED_BY_UP)


def model_server_for(home: Path, base_path: Path) -> Tuple[Optional[RunningModelServer], str]:
    """This home's model server if it runs and serves `base_path`; else None and why not."""
    found = running_model_server(home)
    if found is None:
        return None, ("no model server of this home runs (`make up` starts one; a `mlops serve` of the home's "
                      "model directory registers itself)")
    if found.base_path.resolve() != Path(base_path).resolve():
        return None, f"this home's model server serves {found.base_path}, not {base_path}"
    return found, ""
