"""What the warm worker's client and server share: settings, the socket path, the framing."""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
ENV_SWITCH = "MLOPS_WARM_WORKER"  # "0" runs every node in a cold process
ENV_IN_WORKER = "MLOPS_IN_WORKER"
DEFAULT_IDLE_TIMEOUT = float(os.environ.get("MLOPS_WORKER_IDLE_SECONDS", "900"))
START_TIMEOUT = 180.0
KILL_GRACE = 10.0
HEADER = struct.Struct("!cI")  # frame kind (o, e, x) + payload length

# What a node needs, imported once in the worker (about 7 s and 800 MB here).
PRELOAD = (
    "tensorflow",
    "tf_keras",
    "apache_beam",
    "tensorflow_data_validation",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tfx.components",
    "tfx.dsl.compiler.compiler",
    "tfx.orchestration.portable.launcher",
    "tfx.orchestration.local.runner_utils",
    "pipelines.pipeline",
    "pipelines.node_runner",
    "pipelines.summary",
    "components.drift_validator.executor",
    "components.span_check.executor",
    "components.evaluator.executor",
    "components.pusher.executor",
    "pipelines.taxi.model",
    "pipelines.taxi.preprocessing",
)


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0" and os.environ.get(ENV_IN_WORKER) != "1"


def code_fingerprint() -> str:
    """Changes whenever a source file of the project changes (so a stale worker is not used)."""
    digest = hashlib.sha1(sys.executable.encode())
    for package in ("pipelines", "components", "serving", "monitoring"):  # what a node imports
        for path in sorted((REPO / package).rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


def socket_path(home: Path) -> Path:
    """Unix socket paths are limited to ~100 bytes, so sockets live in a short per-user folder."""
    key = hashlib.sha1(f"{Path(home).resolve()}|{code_fingerprint()}".encode()).hexdigest()[:16]
    return Path("/tmp") / f"mlops-worker-{os.getuid()}" / f"{key}.sock"


def recv_exact(sock: socket.socket, size: int) -> Optional[bytes]:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < 16 << 20:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
