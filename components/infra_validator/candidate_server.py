"""A throwaway model server for one candidate: `mlops serve`, the process that serves production.

The candidate is served exactly as a push would be: a model directory whose only version, 1, is the
candidate's SavedModel (a symlink: nothing is copied), in a process of its own started with the
command `make up` uses (pipelines/model_server.py), on free ports on 127.0.0.1. A separate process,
not the calling one: the server's TensorFlow session, its gRPC server and a crash while loading
stay out of the pipeline's process, and what loads here loads the same way in production.

Not a fork of the node (which has TensorFlow imported already and would save the ~3.9 s of CPU the
new process spends importing): tried, the forked server listened 0.1 s after the fork but its model
load never finished (TensorFlow used after a fork of a process that had used it).

Its `--home` is a temporary directory: it never registers as a project home's model server; its
log is the caller's file. `stop()` always ends it by its pid (SIGTERM, then SIGKILL on its session)
and reaps it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

from serving.errors import ConfigError
from serving.files import tail
from serving.net import HOST, free_port, http
from serving.processes import wait_until_ready

STOP_SECONDS = 10.0  # SIGTERM -> exit; the server drains for --grace-seconds 1, then exits at once
GRACE_SECONDS = 1.0
POLL_SECONDS = 0.5
PORT_ATTEMPTS = 3  # a free port taken by someone else between our check and the server's bind


class NotServable(Exception):
    """The candidate did not load or did not answer; `str()` is the reason recorded on the blessing."""


def mlops_command() -> str:
    """The `mlops` command of the running environment (beside its Python, as `make up` finds it)."""
    beside = Path(sys.executable).parent / "mlops"
    found = str(beside) if beside.is_file() else shutil.which("mlops")
    if not found:
        raise ConfigError(f"no `mlops` command beside {sys.executable} or on PATH to start the model server",
                          "install the project into this environment: `make` (pip install -e .)")
    return found


def _two_ports() -> Tuple[int, int]:
    rest = free_port()
    grpc = free_port()
    while grpc == rest:
        grpc = free_port()
    return rest, grpc


class CandidateServer:
    """`mlops serve` over `<workdir>/models/<model_name>/1 -> model_dir`, logging to `log_path`."""

    def __init__(self, model_dir: Path, model_name: str, workdir: Path, log_path: Path):
        self.model_dir, self.model_name = Path(model_dir), model_name
        self.workdir, self.log_path = Path(workdir), Path(log_path)
        self.base = self.workdir / "models" / model_name
        self.pid: Optional[int] = None
        self.rest_port = self.grpc_port = 0

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}/v1/models/{self.model_name}"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    def begin(self) -> None:
        """Starts the server process (it imports TensorFlow and loads the candidate meanwhile)."""
        self.base.mkdir(parents=True, exist_ok=True)
        version = self.base / "1"
        if not version.exists():
            version.symlink_to(self.model_dir.resolve(), target_is_directory=True)
        self._start()

    def finish_start(self, timeout: float) -> None:
        """Waits until version 1 is AVAILABLE; NotServable when the server failed to load it, exited
        or did not finish within `timeout` seconds."""
        for attempt in range(PORT_ATTEMPTS):
            try:
                state = self._wait(timeout)
                break
            except ConfigError as err:
                log_text = tail(self.log_path, 40)
                self.stop()
                port_taken = "cannot listen" in log_text or "Address already in use" in log_text
                if port_taken and attempt + 1 < PORT_ATTEMPTS:
                    self._start()  # another process took a port between free_port() and the bind
                    continue
                raise NotServable(f"the model server did not start: {err.problem}") from err
        status = state.get("status") or {}
        if state.get("state") != "AVAILABLE":
            raise NotServable("the server did not load the model: "
                              + (status.get("error_message") or f"state {state.get('state')}"))

    def _start(self) -> None:
        self.rest_port, self.grpc_port = _two_ports()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid = self._spawn()

    def _spawn(self) -> int:
        command = [mlops_command(), "--home", str(self.workdir), "serve", "--model-name", self.model_name,
                   "--model-base-path", str(self.base), "--host", HOST, "--rest-port", str(self.rest_port),
                   "--grpc-port", str(self.grpc_port), "--grace-seconds", str(GRACE_SECONDS),
                   "--poll-seconds", str(POLL_SECONDS)]
        env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "MLOPS_HOME")}
        # Its temporary files (TensorFlow's autograph, ...) go with the work directory.
        env.update(TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(self.workdir))
        with open(self.log_path, "ab") as log:
            log.write(f"===== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(command)} =====\n".encode())
            log.flush()
            # stop() signals and reaps it by its pid (Popen copes: a reaped child is ECHILD to it).
            return subprocess.Popen(command, cwd=str(self.workdir), env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True).pid

    def _wait(self, timeout: float) -> dict:
        """Version 1's status once it is final (AVAILABLE, or ended with a load error)."""
        final = {}

        def answered(_name: str) -> bool:
            code, body = http(f"{self.rest_url}/versions/1", timeout=2.0)
            statuses = body.get("model_version_status") if code == 200 and isinstance(body, dict) else None
            state = (statuses or [{}])[0]
            error = (state.get("status") or {}).get("error_code", "OK") not in ("OK", 0)
            if state.get("state") == "AVAILABLE" or (state.get("state") == "END" and error):
                final.update(state)
                return True
            return False

        wait_until_ready({"server": self.pid}, answered, lambda _: self.log_path,
                         lambda _: "the model server", lambda _: f"{self.rest_url}/versions/1", timeout)
        return final

    def stop(self) -> None:
        """Ends the server and everything in its session, by its pid, and reaps it (no zombie)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and not _reaped(pid):
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # its session: nothing it started outlives it
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True
