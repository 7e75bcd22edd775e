"""A warm worker: pays TFX's import cost once and runs each node in a fresh fork.

Every Airflow task runs one TFX node in its own process. A cold process spends 7-14 s importing
TensorFlow, Beam and TFX before the node does any work (design.md, section 4), which on a
cached rerun is nearly all of the run. The worker imports them once and, for each request,
forks a child that runs `mlops node run ...` exactly as a cold process would: own process,
own exit code, own pid file, output streamed back to the task's log. Airflow still sees one
task per node, retries it, times it out and kills it like any other process.

Protocol (Unix socket, one request per connection): the client sends one JSON line
`{"argv": [...], "env": {...}, "cwd": "..."}`; the worker answers with frames
`b"o"` (stdout) or `b"e"` (stderr) + 4-byte length + output bytes, and a final `b"x"` + 4-byte length + exit code.
If the client goes away (task killed or timed out), the node's process group is killed.

The main loop is single-threaded, so forking is safe; the worker exits after `--idle-timeout`
seconds without requests. A change to the project's code changes the socket name, so a stale
worker is never used (it idles out).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
ENV_SWITCH = "MLOPS_WARM_WORKER"  # "0" runs every node in a cold process
ENV_IN_WORKER = "MLOPS_IN_WORKER"
DEFAULT_IDLE_TIMEOUT = float(os.environ.get("MLOPS_WORKER_IDLE_SECONDS", "900"))
START_TIMEOUT = 180.0
KILL_GRACE = 10.0
_HEADER = struct.Struct("!cI")

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
    for package in ("pipelines", "components"):
        for path in sorted((REPO / package).rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


def socket_path(home: Path) -> Path:
    """Unix socket paths are limited to ~100 bytes, so sockets live in a short per-user folder."""
    key = hashlib.sha1(f"{Path(home).resolve()}|{code_fingerprint()}".encode()).hexdigest()[:16]
    return Path("/tmp") / f"mlops-worker-{os.getuid()}" / f"{key}.sock"


# ----------------------------------------------------------------------------------- client


def _connect(path: Path) -> Optional[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        return sock
    except OSError:
        sock.close()
        return None


def ensure_worker(home: Path, log_dir: Path, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> Optional[Path]:
    """The socket of a running worker for `home`, starting one if needed; None if it cannot start."""
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
                [sys.executable, "-m", "pipelines.worker", "serve", "--socket", str(path),
                 "--idle-timeout", str(idle_timeout)],
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
            header = _recv_exact(sock, _HEADER.size)
            if header is None:
                print("warm worker closed the connection without an exit code", file=sys.stderr, flush=True)
                return 1
            kind, size = _HEADER.unpack(header)
            payload = _recv_exact(sock, size) or b""
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


def _recv_exact(sock: socket.socket, size: int) -> Optional[bytes]:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def request(path: Path, op: str) -> Optional[dict]:
    """A control request (`ping`, `stop`); None when no worker listens on `path`."""
    sock = _connect(path)
    if sock is None:
        return None
    try:
        with sock:
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = _read_line(sock)
        return json.loads(data) if data else None
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- server


def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} worker[{os.getpid()}] {message}", flush=True)


def _preload() -> float:
    started = time.monotonic()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import importlib
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    for module in PRELOAD:
        importlib.import_module(module)
    return time.monotonic() - started


def serve(path: Path, idle_timeout: float) -> int:
    seconds = _preload()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    _log(f"ready on {path} after {seconds:.1f}s of imports; idle timeout {idle_timeout:.0f}s")
    children: Dict[int, float] = {}
    last_activity = time.monotonic()
    stopping = False
    signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            for pid in list(children):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.pop(pid)
                    last_activity = time.monotonic()
            if children:
                last_activity = time.monotonic()
            if stopping and not children:
                _log("stopped on request")
                return 0
            if not children and time.monotonic() - last_activity > idle_timeout:
                _log(f"idle for {idle_timeout:.0f}s, exiting")
                return 0
            ready, _, _ = select.select([listener], [], [], 1.0)
            if not ready:
                continue
            conn, _ = listener.accept()
            last_activity = time.monotonic()
            conn.settimeout(10.0)  # a client that connects and says nothing must not stall the loop
            try:
                line = _read_line(conn)
            except OSError:
                line = b""
            conn.settimeout(None)
            try:
                message = json.loads(line) if line else {}
            except json.JSONDecodeError:
                message = {}
            op = message.get("op", "run" if "argv" in message else "invalid")
            if op == "ping":
                _answer(conn, {"pid": os.getpid(), "running": len(children), "socket": str(path)})
            elif op == "stop":
                stopping = True
                _answer(conn, {"pid": os.getpid(), "stopping": True, "running": len(children)})
            elif op == "run" and not stopping:
                pid = os.fork()
                if pid == 0:  # pragma: no cover -- runs in the supervising child
                    code = 1
                    try:  # never fall back into the server loop (its finally removes the socket)
                        listener.close()
                        code = _supervise(conn, message)
                    except BaseException:  # noqa: BLE001
                        import traceback

                        traceback.print_exc()
                    finally:
                        os._exit(code)
                children[pid] = time.monotonic()
                _log(f"started {' '.join(message['argv'][:6])} ... as supervisor {pid}")
                conn.close()
            elif not message:
                conn.close()  # a probe, or a client that left
            else:
                _answer(conn, {"error": f"cannot handle {op!r}" + (" while stopping" if stopping else "")})
    except KeyboardInterrupt:
        _log("terminated")
        return 0
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < 16 << 20:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _answer(conn: socket.socket, payload: dict) -> None:
    with conn, contextlib.suppress(OSError):  # a client that left needs no answer
        conn.sendall(json.dumps(payload).encode() + b"\n")


def _send(conn: socket.socket, kind: bytes, payload: bytes) -> bool:
    try:
        conn.sendall(_HEADER.pack(kind, len(payload)) + payload)
        return True
    except OSError:
        return False


def _supervise(conn: socket.socket, message: dict) -> int:  # pragma: no cover -- forked child
    """Forks the node process, relays its output, kills it if the client goes away.

    The node gets its own temp directory (TMPDIR), removed when it ends: it leaves by `os._exit`
    (never back into the worker's code), so the atexit clean-ups of what it imported do not run,
    and TensorFlow's autograph alone left ~20 `__autograph_generated_file*.py` in /tmp per run."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    scratch = tempfile.mkdtemp(prefix="mlops-node-")
    try:
        return _relay(conn, message, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _relay(conn: socket.socket, message: dict, scratch: str) -> int:  # pragma: no cover -- forked child
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(out_read)
        os.close(err_read)
        os.setpgid(0, 0)  # the node and anything it spawns form one group, killed together
        conn.close()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_write, 1)
        os.dup2(err_write, 2)
        os._exit(_run_cli(message, scratch))
    os.close(out_write)
    os.close(err_write)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also here, so a kill right after the fork reaches the group
    streams = {out_read: b"o", err_read: b"e"}  # stdout and stderr stay apart (`--json` output)
    client_gone = False
    status = None
    while status is None:
        ready, _, _ = select.select([*streams, conn], [], [], 0.5)
        for fd in (fd for fd in streams if fd in ready):
            data = os.read(fd, 65536)
            if data and not client_gone:
                client_gone = not _send(conn, streams[fd], data)
        if conn in ready and not client_gone:
            try:
                client_gone = conn.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                client_gone = True
        if client_gone:
            status = _kill_group(pid)  # reaps it
            break
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
    for fd, kind in streams.items():  # drain what the node wrote last
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            _send(conn, kind, data)
        os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, like a shell
    _send(conn, b"x", str(code).encode())
    conn.close()
    return 0


def _kill_group(pid: int) -> int:
    """SIGTERM the node's process group, SIGKILL it after KILL_GRACE; returns the wait status."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # whatever the node left running in its group
            return status
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _run_cli(message: dict, scratch: str) -> int:  # pragma: no cover -- forked child
    """What a cold `mlops <argv>` process would do, in this already-warm process."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(message.get("env", {}))
    os.environ[ENV_IN_WORKER] = "1"
    os.environ["TMPDIR"] = tempfile.tempdir = scratch  # for this process and what it starts
    with contextlib.suppress(OSError):
        os.chdir(message.get("cwd") or "/")
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    from pipelines import cli

    try:
        code = cli.main(list(message["argv"]))
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:  # noqa: BLE001 -- report, never return into the worker's loop
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(code or 0)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.worker", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the worker in the foreground")
    serve_parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    serve_parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    args = parser.parse_args(argv)
    return serve(Path(args.socket), args.idle_timeout)


if __name__ == "__main__":
    sys.exit(main())
