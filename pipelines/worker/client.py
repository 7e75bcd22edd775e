"""The warm worker's client: what `mlops` calls to start a worker, run a command in it, ping or stop it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

from pipelines.worker.protocol import (DEFAULT_IDLE_TIMEOUT, ENV_IN_WORKER, HEADER, START_TIMEOUT, enabled,
                                       read_line, recv_exact, socket_path)

# What the forked child runs: `mlops <argv>` in the warm process.
CLI_ENTRY = "pipelines.cli:main"

__all__ = ["CLI_ENTRY", "enabled", "ensure_worker", "request", "run_remote", "socket_path"]


def _connect(path: Path) -> Optional[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def ensure_worker(home: Path, log_dir: Path, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                  entry: str = CLI_ENTRY) -> Optional[Path]:
    """The socket of a running worker for `home`, starting one if needed; None if it cannot start.

    `entry`: "module:function" the worker runs for each request, with the request's argv."""
    path = socket_path(home)
    if request(path, "ping"):
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time; others find it running
        if request(path, "ping"):
            return path
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / "worker.log"
        print(f"starting a warm worker (imports TFX once, ~10 s); log: {log_path}", file=sys.stderr, flush=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "pipelines.worker.server", "--socket", str(path),
                 "--idle-timeout", str(idle_timeout), "--entry", entry],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                env={**os.environ, ENV_IN_WORKER: "1"},
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                print(f"warm worker exited with {process.returncode} while starting (see {log_path})",
                      file=sys.stderr, flush=True)
                return None
            if request(path, "ping"):
                return path
            time.sleep(0.2)
        print(f"warm worker did not start within {START_TIMEOUT:.0f}s (see {log_path})", file=sys.stderr, flush=True)
        return None


def run_remote(path: Path, argv: List[str]) -> Optional[int]:
    """Runs `mlops <argv>` in a fork of the worker; streams its output; returns its exit code.

    None when the worker went away before it started the request (the caller runs it cold)."""
    sock = _connect(path)
    if sock is None:
        return None
    with sock:
        try:
            sock.sendall(json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode() + b"\n")
        except OSError:
            return None
        outputs = {b"o": sys.stdout, b"e": sys.stderr}
        while True:
            header = recv_exact(sock, HEADER.size)
            if header is None:
                print("warm worker closed the connection without an exit code", file=sys.stderr, flush=True)
                return 1
            kind, size = HEADER.unpack(header)
            payload = recv_exact(sock, size) or b""
            if kind in outputs:
                stream = outputs[kind]
                stream.flush()
                # The real console streams take bytes; a redirected one (tests) takes text.
                target = getattr(stream, "buffer", None)
                if target is not None:
                    target.write(payload)
                    target.flush()
                else:
                    stream.write(payload.decode(errors="replace"))
            elif kind == b"x":
                return int(payload)


def request(path: Path, op: str) -> Optional[dict]:
    """A control request (`ping`, `stop`); None when no worker listens on `path`."""
    sock = _connect(path)
    if sock is None:
        return None
    try:
        with sock:
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = read_line(sock)
        return json.loads(data) if data else None
    except (OSError, ValueError):
        return None
