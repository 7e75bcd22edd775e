"""The peer model servers of bench/serving_latency.py (issue 25): started, checked, stopped, judged.

Each peer serves the same SavedModel on TF Serving's REST `:predict` (bench/peers/): "fastapi" is
FastAPI + uvicorn in the TFX environment, the way teams write it by hand; "kserve" is KServe's
Python model server (V1 protocol) in its own environment, .venv-kserve (no kserve release resolves
inside the TFX constraints). Both run one worker process per core, on free loopback ports, and
count as up only when every worker has loaded the model and a warm-up request answers what our
server answers. A peer that cannot start is left out of the run with the reason it failed, which
the benchmark prints and writes to bench/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from common import CHILD_ENV, REPO, log, terminate

PEERS_DIR = REPO / "bench" / "peers"
KSERVE_VENV = REPO / ".venv-kserve"
KSERVE_PYTHON = KSERVE_VENV / "bin" / "python"
WORKERS = os.cpu_count() or 1  # uvicorn's advice: one worker process per core
START_TIMEOUT_S = 240.0


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str  # as given to --peers
    variant: str  # its rows in the benchmark's table
    label: str  # how the opening table names it
    settings: str  # what it runs with, and why


FASTAPI = Peer("fastapi", "REST, FastAPI peer", "FastAPI + uvicorn",
               f"`uvicorn --workers {WORKERS}` (one process per core: the GIL keeps a process's Python on one "
               "core), uvloop + httptools (uvicorn's `--loop auto --http auto` pick them when installed), no "
               "access log; a pydantic request model and a plain `def` endpoint (run in FastAPI's thread pool, "
               "so a model call does not block the event loop); the model loaded once per worker")
KSERVE = Peer("kserve", "REST, KServe peer", "KServe",
              f"`kserve.ModelServer --workers {WORKERS}` (one process per core, KServe's multi-process mode), "
              "gRPC off (KServe's is the V2 protocol, not TF Serving's), no per-request log lines, the listening "
              "socket declared TCP (kserve/kserve#6050: otherwise TCP_NODELAY stays off in the workers and every "
              "keep-alive answer waits ~40 ms for a delayed ACK; measured here, 52 ms p50 for one row); otherwise "
              "KServe's defaults (a synchronous `predict` called on the event loop, asyncio's loop as KServe "
              "hard-codes)")
PEERS = {peer.name: peer for peer in (FASTAPI, KSERVE)}


class PeerUnavailable(RuntimeError):
    """The peer could not be started here; the message says why (measured, with its log's tail)."""


def _kserve_failure() -> str:
    """Why .venv-kserve is not there, from the log its Makefile rule leaves (empty: never tried)."""
    build_log = KSERVE_VENV / "build.log"
    if not build_log.exists():
        return ""
    return f"; building it failed ({build_log.relative_to(REPO)}): {first_error(build_log.read_text(errors='replace'))}"


def first_error(output: str) -> str:
    """The line of a log that says what failed: the last exception raised, else pip's (or uvicorn's)
    first ERROR line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b:?", line)]
    if raised:
        return raised[-1]
    errors = [line for line in lines if line.startswith("ERROR")]
    return errors[0] if errors else (lines[-1] if lines else "(no output)")


def check_available(peer: Peer) -> None:
    """Raises PeerUnavailable when the peer's environment is missing (what to run is in the message)."""
    if peer is FASTAPI and not (importlib.util.find_spec("fastapi") and importlib.util.find_spec("uvicorn")):
        raise PeerUnavailable("fastapi/uvicorn are not installed in this environment (fix: `make bench` installs "
                              "bench/requirements-peers.txt; by hand: .venv/bin/pip install -c "
                              "constraints/tfx-py310.txt -r bench/requirements-peers.txt)")
    if peer is KSERVE and not (KSERVE_VENV / ".built").exists():
        raise PeerUnavailable(f"{KSERVE_VENV.name} is not built (fix: `make {KSERVE_VENV.name}/.built`, which "
                              f"`make bench` runs){_kserve_failure()}")


def versions(peer: Peer) -> str:
    """The versions a peer runs with, for the results."""
    names = ("fastapi", "uvicorn", "uvloop", "httptools") if peer is FASTAPI else (
        "kserve", "fastapi", "uvicorn", "uvloop", "httptools", "tensorflow-cpu")
    script = ("import importlib.metadata as m, sys\n"
              "for n in sys.argv[1:]:\n"
              "    try: print(n, m.version(n))\n"
              "    except m.PackageNotFoundError: pass\n")
    python = sys.executable if peer is FASTAPI else str(KSERVE_PYTHON)
    out = subprocess.run([python, "-c", script, *names], capture_output=True, text=True, check=False).stdout
    return ", ".join(out.split("\n")[:-1]) + (f", Python {_python_version(python)}" if peer is KSERVE else "")


def _python_version(python: str) -> str:
    return subprocess.run([python, "-c", "import platform; print(platform.python_version())"], capture_output=True,
                          text=True, check=False).stdout.strip()


class PeerServer:
    """One peer on a free loopback port, serving `model_dir` as model `taxi`."""

    def __init__(self, peer: Peer, model_dir: Path, log_path: Path, rest_port: int):
        check_available(peer)
        self.peer = peer
        self.rest_port = rest_port
        self.log_path = log_path
        self._ready_dir = Path(tempfile.mkdtemp(prefix=f"peer-{peer.name}-ready-"))
        env = dict(CHILD_ENV, PEER_MODEL_DIR=str(model_dir), PEER_MODEL_NAME="taxi",
                   PEER_READY_DIR=str(self._ready_dir), TF_CPP_MIN_LOG_LEVEL="3")
        if peer is FASTAPI:
            cmd = [sys.executable, "-m", "uvicorn", "fastapi_server:app", "--app-dir", str(PEERS_DIR),
                   "--host", "127.0.0.1", "--port", str(self.rest_port), "--workers", str(WORKERS), "--no-access-log"]
            # uvicorn's parent only supervises; each worker loads the model
            self._loaders = WORKERS
        else:
            env.pop("TF_USE_LEGACY_KERAS", None)  # .venv-kserve has Keras 3 only; tf.saved_model.load needs neither
            cmd = [str(KSERVE_PYTHON), str(PEERS_DIR / "kserve_server.py"), "--http_port", str(self.rest_port),
                   "--workers", str(WORKERS), "--enable_grpc", "false", "--enable_latency_logging", "false"]
            # KServe's parent loads the model too (it registers only a ready model), then each worker
            self._loaders = 1 + (WORKERS if WORKERS > 1 else 0)
        self._log = open(log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        self._tree = []
        self._stopped = False
        self.ready_seconds = float("nan")

    def _fail(self, why: str) -> PeerUnavailable:
        log(f"{self.peer.name} peer's log ({self.log_path}), last lines:\n    "
            + "\n    ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-15:]))
        return PeerUnavailable(f"{why}: {first_error(self.log_path.read_text(errors='replace'))}")

    def wait_ready(self, body: str, expected: list, timeout: float = START_TIMEOUT_S) -> float:
        """Waits until every worker has loaded the model and `body` is answered with `expected`'s
        predictions (within float32 rounding); returns the seconds since the start."""
        deadline = self.started + timeout
        while len(list(self._ready_dir.iterdir())) < self._loaders:
            if self.proc.poll() is not None:
                raise self._fail(f"{self.peer.label} exited with code {self.proc.returncode} before serving")
            if time.monotonic() > deadline:
                raise self._fail(f"{self.peer.label}: {len(list(self._ready_dir.iterdir()))} of {self._loaders} "
                                 f"processes had loaded the model after {timeout:.0f} s")
            time.sleep(0.2)
        while True:
            try:
                got = self.predict(body)
                break
            except (OSError, http.client.HTTPException, RuntimeError) as err:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise self._fail(f"{self.peer.label} did not answer :predict ({err})") from err
                time.sleep(0.2)
        if not _same_predictions(got, expected):
            raise self._fail(f"{self.peer.label} answered {str(got)[:200]}, our server {str(expected)[:200]}")
        self._tree = [self.proc.pid] + [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        self.ready_seconds = time.monotonic() - self.started
        return self.ready_seconds

    def predict(self, body: str) -> list:
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=30)
        try:
            conn.request("POST", "/v1/models/taxi:predict", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)["predictions"]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s; then any of its processes still there, by pid. Once."""
        if self._stopped:
            return
        self._stopped = True
        try:
            tree = set(self._tree) | {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.Error:
            tree = set(self._tree)
        terminate(self.proc)
        for pid in tree - {self.proc.pid}:
            try:
                child = psutil.Process(pid)
                child.kill()
                child.wait(10)
            except psutil.Error:
                pass
        self._log.close()
        shutil.rmtree(self._ready_dir, ignore_errors=True)


def _same_predictions(got, expected, tolerance: float = 1e-5) -> bool:
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(
            _same_predictions(g, e, tolerance) for g, e in zip(got, expected))
    return isinstance(got, (int, float)) and abs(got - expected) <= tolerance * max(1.0, abs(expected))


def start_peers(names: list, model_dir: Path, logs: Path, body: str, expected: list, free_port) -> tuple:
    """Starts the named peers one after another, each on `free_port()`; returns ({name: PeerServer},
    {name: why it is absent})."""
    running, absent = {}, {}
    for name in names:
        try:
            server = PeerServer(PEERS[name], model_dir, logs / f"peer-{name}.log", free_port())
        except PeerUnavailable as err:
            absent[name] = str(err)
            log(f"peer {name}: not run: {err}")
            continue
        try:
            seconds = server.wait_ready(body, expected)
        except PeerUnavailable as err:
            server.stop()
            absent[name] = str(err)
            log(f"peer {name}: not run: {err}")
            continue
        except BaseException:
            for started in [server, *running.values()]:
                started.stop()
            raise
        running[name] = server
        log(f"peer {name} up in {seconds:.1f} s: REST {server.rest_port}, pid {server.proc.pid}")
    return running, absent


def parse_peers(value: str) -> list:
    names = [n.strip() for n in value.split(",") if n.strip()] if value not in ("", "none") else []
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise SystemExit(f"error: unknown peer(s) {unknown} (known: {', '.join(PEERS)}; `--peers none` runs none)")
    return names


def example_building_ms(row: dict, rows: int = 100, repeat: int = 20) -> float:
    """Milliseconds the peers' shared code (bench/peers/tf_serving_json.py) takes to make `rows`
    feature dicts into serialized tf.Examples with protobuf's Python API, timed in this process."""
    sys.path.insert(0, str(PEERS_DIR))
    try:
        import tf_serving_json
    finally:
        sys.path.remove(str(PEERS_DIR))
    started = time.perf_counter()
    for _ in range(repeat):
        for _ in range(rows):
            tf_serving_json._to_example(row)
    return (time.perf_counter() - started) / repeat * 1e3


THROUGHPUT_TARGET = 1.5  # ours >= 1.5x the best peer's req/s at 8 clients
OURS = "REST"  # our server's row in the benchmark's table (batching on, as shipped)


def _round_ratios(ours: list, peer: list, divide: bool) -> list:
    return sorted((o / p) if divide else (o - p) for o, p in zip(ours, peer))


def render_opening(by: dict, running: dict, absent: dict, peer_notes: dict, example_ms: float) -> list:
    """The lines that open the serving section: ours vs each peer, then one verdict per cell."""
    lines = ["Ours vs peers (issue 25), one run: `mlops serve` over REST (as shipped: batching on, defaults) against "
             "the peers below, each serving the same SavedModel to the same Python client threads (one keep-alive "
             "connection each) with the same `instances` request bodies (feature dicts for `serving_default`), in "
             "the same alternating rounds as every other variant. REST only: FastAPI has no gRPC, and KServe's gRPC "
             "port speaks its V2 protocol, not TF Serving's PredictionService. \"ours vs this\" = our p50 / its p50 "
             "and our req/s / its req/s. The date, the load average and the host's speed: Details, below.", "",
             "| instances | clients | server | p50 ms | p99 ms | req/s | ours vs this: p50, req/s |",
             "|---|---|---|---|---|---|---|"]
    verdicts = []
    for batch in (1, 100):
        for clients in (1, 8):
            ours = by[(OURS, batch, clients)]
            lines.append(f"| {batch} | {clients} | ours (`mlops serve`) | {ours['p50']:.2f} | {ours['p99']:.2f} | "
                         f"{ours['rps']:.0f} | - |")
            peers = [(PEERS[name], by[(PEERS[name].variant, batch, clients)]) for name in running]
            for peer, row in peers:
                lines.append(f"| {batch} | {clients} | {peer.label} | {row['p50']:.2f} | {row['p99']:.2f} | "
                             f"{row['rps']:.0f} | {ours['p50'] / row['p50']:.2f}x, {ours['rps'] / row['rps']:.2f}x |")
            if not peers:
                continue
            cell = f"{batch} instance{'s' if batch > 1 else ''}, {clients} client{'s' if clients > 1 else ''}"
            if clients == 1:
                peer, best = min(peers, key=lambda item: item[1]["p50"])
                per_round = _round_ratios(ours["round_p50"], best["round_p50"], divide=False)
                ok = ours["p50"] <= best["p50"]
                verdicts.append(f"- {cell}: our p50 **{ours['p50']:.2f} ms** vs the best peer's ({peer.label}) "
                                f"{best['p50']:.2f} ms (target: ours <= the peer's): **{'MET' if ok else 'MISSED'}** "
                                f"(per round ours {per_round[0]:+.2f} to {per_round[-1]:+.2f} ms, met in "
                                f"{sum(d <= 0 for d in per_round)} of {len(per_round)})")
            else:
                peer, best = max(peers, key=lambda item: item[1]["rps"])
                per_round = _round_ratios(ours["round_rps"], best["round_rps"], divide=True)
                ratio = ours["rps"] / best["rps"]
                ok = ratio >= THROUGHPUT_TARGET
                verdicts.append(f"- {cell}: our throughput **{ratio:.2f}x** the best peer's ({peer.label}: "
                                f"{ours['rps']:.0f} vs {best['rps']:.0f} req/s; target >= {THROUGHPUT_TARGET}x): "
                                f"**{'MET' if ok else 'MISSED'}** (per round {per_round[0]:.2f}x to "
                                f"{per_round[-1]:.2f}x, met in {sum(x >= THROUGHPUT_TARGET for x in per_round)} of "
                                f"{len(per_round)})")
    if verdicts:
        lines += ["", f"Targets (issue 25; ratios within this run): ours >= {THROUGHPUT_TARGET}x the best peer's "
                  "throughput at 8 clients, and our p50 <= the best peer's at 1 client, for 1 and 100 instances:",
                  "", *verdicts, ""]
    else:
        lines += ["", "Targets (issue 25): not judged, no peer ran.", ""]
    for name, note in peer_notes.items():
        lines.append(f"- {PEERS[name].label} (\"{PEERS[name].variant}\" in the table below): {note}")
    for name, why in absent.items():
        lines.append(f"- {PEERS[name].label}: **not run**: {why}")
    if running:
        lines.append("- Both peers' worker processes share one listening socket: each new connection goes to whichever "
                     "worker accepts it first, so the 8 connections of a round may load one worker more than the other "
                     "(a check with 3 x 8 connections to the FastAPI peer saw 8 on one worker once). Each round opens "
                     "new connections, and the per-round ranges above show the spread.")
        lines.append(f"- Both peers make the feature dicts into tf.Examples with protobuf's Python API (as hand-written "
                     f"servers do; bench/peers/tf_serving_json.py): {example_ms:.1f} ms for 100 rows, timed in the "
                     "benchmark's process, a large part of their server CPU per request at 100 instances. Our server "
                     "writes the tf.Example wire format directly (docs/serving.md, latency notes).")
    lines.append("- The in-process direct call, the do-nothing floors and the native-client (h2load) rows below are "
                 "context for reading these numbers, not targets of issue 25.")
    return lines + [""]
