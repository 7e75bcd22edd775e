"""Helpers for the model server tests: a real `mlops serve` process, HTTP/gRPC clients, model copies."""

from __future__ import annotations

import csv
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tests.conftest import REPO, VENV_PYTHON

MLOPS = str(VENV_PYTHON.parent / "mlops")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def schema_kinds(schema_path: Path = REPO / "schemas" / "taxi" / "schema.pbtxt") -> Dict[str, str]:
    text = schema_path.read_text()
    return {m[0]: m[1] for m in re.findall(r'feature\s*{\s*name:\s*"(\w+)"\s*type:\s*(\w+)', text)}


REQUIRED = ("fare", "payment_type", "trip_miles", "trip_start_day", "trip_start_hour", "trip_start_month",
            "trip_start_timestamp")


def feature_rows(csv_path: Path, limit: int = 50) -> List[dict]:
    """Typed feature dicts (what a client sends to :classify) from a seeded span; label dropped."""
    kinds = schema_kinds()
    rows = []
    with open(csv_path) as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for name, value in raw.items():
                if name == "tips" or value in ("", None):
                    continue
                kind = kinds[name]
                row[name] = int(float(value)) if kind == "INT" else (float(value) if kind == "FLOAT" else value)
            if all(k in row for k in REQUIRED):
                rows.append(row)
            if len(rows) >= limit:
                break
    return rows


def example_bytes(row: dict) -> bytes:
    import tensorflow as tf

    kinds = schema_kinds()
    example = tf.train.Example()
    for name, value in row.items():
        feature = example.features.feature[name]
        if kinds[name] == "INT":
            feature.int64_list.value.append(value)
        elif kinds[name] == "FLOAT":
            feature.float_list.value.append(value)
        else:
            feature.bytes_list.value.append(value.encode())
    return example.SerializeToString()


def publish(source: Path, base: Path, version: int, mutate=None) -> Path:
    """Copies a version the way the Pusher does: into a hidden staging dir, then one rename."""
    staging = base / f".incoming-{uuid.uuid4().hex}"
    shutil.copytree(source, staging)
    if mutate is not None:
        mutate(staging)
    target = base / str(version)
    os.rename(staging, target)
    return target


def shifted_model(source: Path, target: Path, delta: float = 3.0) -> Path:
    """A copy of a SavedModel whose output differs: one output-layer bias moved by `delta`.

    Rewrites the checkpoint with TensorFlow's own SaveV2 (same keys, same object graph), so the copy
    loads exactly like a model the Trainer exported.
    """
    import tensorflow as tf

    shutil.copytree(source, target)
    prefix = str(source / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    names = sorted(shapes)
    biases = [n for n in names if n.endswith("bias/.ATTRIBUTES/VARIABLE_VALUE") and shapes[n] == [1]]
    assert biases, f"no output bias among {names[:20]}..."
    tensors = []
    for name in names:
        value = reader.get_tensor(name)
        if name == biases[-1]:
            value = value + delta
        tensors.append(tf.constant(value, dtype=dtypes[name]))
    out = target / "variables"
    shutil.rmtree(out)
    out.mkdir()
    tf.raw_ops.SaveV2(prefix=str(out / "variables"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
    return target


class Http:
    """A keep-alive HTTP/1.1 client (one connection), reconnecting when the server closes it."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port, self.timeout = port, timeout
        self.conn: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body=None, headers=None) -> Tuple[int, dict, object]:
        reused = self.conn is not None
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            data = response.read()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.close()
            if not reused:
                raise
            # The server closed an idle keep-alive connection (--request-timeout): reconnect once,
            # as HTTP client libraries do.
            return self.request(method, path, body, headers)
        except Exception:
            self.close()
            raise
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return response.status, dict(response.getheaders()), parsed

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body):
        return self.request("POST", path, body, {"Content-Type": "application/json"})

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class Server:
    """`mlops serve` in its own process on free ports, logging to a file."""

    def __init__(self, home: Path, log_path: Path, base: Optional[Path] = None, config: Optional[Path] = None,
                 extra: Tuple[str, ...] = ()):
        self.rest_port, self.grpc_port = free_port(), free_port()
        while self.grpc_port == self.rest_port:
            self.grpc_port = free_port()
        self.log_path = log_path
        cmd = [MLOPS, "--home", str(home), "serve", "--rest-port", str(self.rest_port),
               "--grpc-port", str(self.grpc_port), *extra]
        if base is not None:
            cmd += ["--model-base-path", str(base)]
        if config is not None:
            cmd += ["--model-config-file", str(config)]
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(home))
        self.http = Http(self.rest_port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self, path: str = "/v1/models/taxi") -> Tuple[int, object]:
        code, _, body = Http(self.rest_port, timeout=5).get(path)
        return code, body

    def wait_until(self, predicate, timeout: float = 120.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.alive(), f"server exited ({self.proc.returncode}) waiting for {what}:\n{self.log()[-3000:]}"
            try:
                last = predicate()
            except (OSError, http.client.HTTPException) as err:
                last = err
            else:
                if last:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}):\n{self.log()[-3000:]}")

    def available_versions(self) -> List[int]:
        code, body = self.status()
        if code != 200:
            return []
        return sorted(int(s["version"]) for s in body["model_version_status"] if s["state"] == "AVAILABLE")

    def wait_serving(self, version: int, timeout: float = 120.0) -> None:
        self.wait_until(lambda: version in self.available_versions(), timeout, f"version {version} AVAILABLE")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.http.close()
            self._log.close()

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)
