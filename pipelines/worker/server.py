"""The warm worker process: imports TFX once, then forks a child per request that runs the entry
function it was started with (`--entry module:function`, the CLI's `main`) on the request's argv."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from pipelines.worker.protocol import DEFAULT_IDLE_TIMEOUT, ENV_IN_WORKER, HEADER, KILL_GRACE, PRELOAD, read_line

def _log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} worker[{os.getpid()}] {message}", flush=True)


def _preload() -> float:
    started = time.monotonic()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    for module in PRELOAD:
        importlib.import_module(module)
    return time.monotonic() - started


def serve(path: Path, idle_timeout: float, entry: str) -> int:
    """Listens on `path` until stopped or idle; each request runs `entry` ("module:function", called with
    the request's argv, returning an exit code) in a fresh fork."""
    seconds = _preload()
    run = load_entry(entry)  # imported before any fork: a bad name fails the start, not each node
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
                line = read_line(conn)
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
                        code = _supervise(conn, message, run)
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


def load_entry(entry: str) -> Callable[[List[str]], int]:
    """The function named by "module:function"."""
    module, _, name = entry.partition(":")
    if not module or not name:
        raise ValueError(f"entry {entry!r} is not module:function")
    return getattr(importlib.import_module(module), name)


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _answer(conn: socket.socket, payload: dict) -> None:
    with conn, contextlib.suppress(OSError):  # a client that left needs no answer
        conn.sendall(json.dumps(payload).encode() + b"\n")


def _send(conn: socket.socket, kind: bytes, payload: bytes) -> bool:
    try:
        conn.sendall(HEADER.pack(kind, len(payload)) + payload)
        return True
    except OSError:
        return False


def _supervise(conn: socket.socket, message: dict, run: Callable[[List[str]], int]) -> int:  # pragma: no cover -- forked child
    """Forks the node process, relays its output, kills it if the client goes away.

    The node gets its own temp directory (TMPDIR), removed when it ends: it leaves by `os._exit`
    (never back into the worker's code), so the atexit clean-ups of what it imported do not run,
    and TensorFlow's autograph alone left ~20 `__autograph_generated_file*.py` in /tmp per run."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    scratch = tempfile.mkdtemp(prefix="mlops-node-")
    try:
        return _relay(conn, message, scratch, run)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _relay(conn: socket.socket, message: dict, scratch: str, run: Callable[[List[str]], int]) -> int:  # pragma: no cover -- forked child
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
        os._exit(_run_entry(message, scratch, run))
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


def _run_entry(message: dict, scratch: str, run: Callable[[List[str]], int]) -> int:  # pragma: no cover -- forked child
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
    try:
        code = run(list(message["argv"]))
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
    parser = argparse.ArgumentParser(prog="python -m pipelines.worker.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT)
    parser.add_argument("--entry", required=True, help="module:function each request runs with its argv")
    args = parser.parse_args(argv)
    return serve(Path(args.socket), args.idle_timeout, args.entry)


if __name__ == "__main__":
    sys.exit(main())
