"""Benchmark (issue 6): the model server's :predict latency and throughput vs the SavedModel called in-process.

    TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/serving_latency.py [--model-dir DIR | --home HOME]
        [--requests 1000] [--rounds 5] [--peers fastapi,kserve | none] [--keep]

One run measures every cell of {direct in-process call, REST :predict, gRPC Predict} x {1, 100
instances per request} x {concurrency 1, 8}: p50/p99 latency per request and throughput. Direct
calls are the same SavedModel's `serving_default` signature (serialized tf.Examples in, as the
gRPC client sends them), with the same batch and the same number of threads. REST clients send
feature dicts (`instances`), each thread on its own keep-alive connection; gRPC clients send the
serialized tf.Examples, each thread on its own channel. A second pair measures the model's
`serving_features` signature (one tensor per raw feature): called directly, and over REST in TF
Serving's row format. One more in-process variant calls `serving_default` the way the server does
(its model cost, for reading the overheads). The REST and gRPC requests are also sent by h2load
(nghttp2's C++ load generator, `apt-get install nghttp2-client`; `make bench` installs it), whose
client CPU per request is a fifth to a tenth of the Python threads', so that the concurrency-8 cells measure
the server rather than its client on the same two cores. Rounds alternate the variants (each round
starting one variant later) so that load from other work on the machine hits them alike; latency
is the median of the per-round percentiles, throughput is all requests over all time per variant.
Each cell also records the CPU time the server process and the client (this process) spent per
request: with everything on one machine, cores / (server + client CPU) bounds the throughput any
variant can reach here, which says whether a missed throughput target is reachable on this host.

The model: by default a temp home is seeded and the pipeline runs twice with few training steps
and relaxed gates (two pushes in ML Metadata), so that the time from `mlops rollback --previous`
to the first answer from the restored version can be measured too. `--home` reuses a home with
at least two pushes; `--model-dir` takes a SavedModel directory (no rollback timing then).
Also timed: a new version directory appearing (staged and renamed as the Pusher does) to the
first answer from it. The client, the server and the direct calls share this machine's cores.

Peers (issue 25; bench/serving_peers.py, bench/peers/): the same SavedModel served by a FastAPI +
uvicorn app written the usual way and by KServe's Python model server (V1 protocol, in its own
environment .venv-kserve), each one worker process per core, measured with the same client, the
same REST bodies and in the same rounds as the "REST" variant. `--peers` picks them (default all);
one that cannot start is left out, and the output and RESULTS.md say why. The section opens with
ours vs each peer; targets: our REST throughput >= 1.5x the best peer's at 8 clients, and our p50
<= the best peer's at 1 client, for 1 and 100 instances.

Workers (issue 25): `mlops serve --workers 2` (a parent forking two servers that share the ports
with SO_REUSEPORT) beside the single process, in the same rounds, with the same Python client and
requests, over REST and gRPC: throughput and p50/p99 per cell, the ratio 2 workers / 1 (no target:
on a 2-core host the same cores carry the client), which worker answered (REST's `X-Mlops-Worker`
header; for gRPC each worker's share of the server CPU), and the memory of the parent and of each
worker (RSS, PSS and USS from /proc/<pid>/smaps_rollup) with what one more worker adds.
`--no-workers-compare` leaves it out.

Targets (issue 6): p50 overhead <= 1 ms over the direct call; throughput >= 0.8x direct at concurrency 8;
rollback to first answer <= 5 s. A missed target does not fail the benchmark (exit 0); exit 1
only when a run itself failed. Writes the "Model serving latency (issue 6)" section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import functools
import http.client
import json
import os
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from common import CHILD_ENV, MLOPS, REPO, log, measure, publish, seed_home, terminate  # noqa: E402
import serving_peers  # noqa: E402

SECTION = "## Model serving latency (issue 6)"
D1, D2 = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
ROWS = 1500
FAST = ["--train-steps", "60", "--eval-steps", "10"]
OVERHEAD_TARGET_MS = 1.0
THROUGHPUT_TARGET = 0.8
SWITCH_TARGET_S = 5.0
UNBATCHED_REST, UNBATCHED_GRPC = "REST, no batching", "gRPC, no batching"
FLOOR_REST, FLOOR_GRPC = "REST floor", "gRPC floor"
# The Trainer's second signature: raw features as named tensors, no tf.Example on either side.
FEATURES_SIGNATURE = "serving_features"
DIRECT_FEATURES, REST_FEATURES = "direct, serving_features", "REST, serving_features"
# The server's own way into the model (serving/servable.py: below ConcreteFunction.__call__, on the
# single-threaded executor where warm-up allows), called in-process: what the model costs the server.
DIRECT_SERVER_PATH = "direct, the server's call path"
IN_PROCESS = ("direct", DIRECT_FEATURES, DIRECT_SERVER_PATH)
# The same REST and gRPC requests to the same server from h2load (nghttp2's C++ load generator)
# instead of this process's Python client threads: 0.03-0.11 ms of client CPU per request
# against Python's 0.2-0.5 ms (bench/RESULTS.md), on the two cores the server needs too.
NATIVE_REST, NATIVE_GRPC = "REST, native client", "gRPC, native client"
H2LOAD = shutil.which("h2load")
# what each variant's overhead and throughput are measured against
BASELINE = {REST_FEATURES: DIRECT_FEATURES}
ROW = dict(pickup_community_area=28, fare=15.25, trip_start_month=9, trip_start_hour=10, trip_start_day=3,
           trip_start_timestamp=1379414700, pickup_latitude=41.87, pickup_longitude=-87.66, dropoff_latitude=41.92,
           dropoff_longitude=-87.69, trip_miles=1.2, payment_type="Cash", company="Blue Ribbon Taxi",
           trip_seconds=840, dropoff_community_area=22)
# `mlops serve --workers N` beside the single process (issue 25): its REST and gRPC rows, and the
# REST response header naming the worker process that answered.
WORKERS = 2
REST_WORKERS, GRPC_WORKERS = f"REST, {WORKERS} workers", f"gRPC, {WORKERS} workers"
# gRPC Python's channels to one address share one TCP connection (its global subchannel pool), so
# the "gRPC" variant's 8 channels are one connection, which the kernel gives to one worker: the
# workers' gRPC clients, and the one process's they are compared with, each open their own.
GRPC_OWN = "gRPC, a connection per client"
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
WORKERS_OF = {REST_WORKERS: "REST", GRPC_WORKERS: GRPC_OWN}  # its single-process counterpart
WORKER_HEADER = "X-Mlops-Worker"
INT_FEATURES = {"pickup_community_area", "trip_start_month", "trip_start_hour", "trip_start_day",
                "trip_start_timestamp", "trip_seconds", "dropoff_community_area"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_pair() -> tuple:
    """Two different free ports (REST, gRPC)."""
    rest, grpc_port = free_port(), free_port()
    while grpc_port == rest:
        grpc_port = free_port()
    return rest, grpc_port


def example_bytes(row: dict) -> bytes:
    import tensorflow as tf

    example = tf.train.Example()
    for name, value in row.items():
        feature = example.features.feature[name]
        if isinstance(value, str):
            feature.bytes_list.value.append(value.encode())
        elif name in INT_FEATURES:
            feature.int64_list.value.append(int(value))
        else:
            feature.float_list.value.append(float(value))
    return example.SerializeToString()


def run_checked(name: str, cmd: list, logs: Path) -> dict:
    result = measure(name, cmd, logs / f"{name}.log", echo=lambda line: "error" in line.lower())
    if result["code"] != 0:
        raise SystemExit(f"{name} failed (exit {result['code']}); log in {logs}")
    return result


def prepare_home(tmp: Path) -> tuple:
    """A temp home with two pushes (D1, then D2 with relaxed gates); returns (home, pipeline seconds)."""
    home = tmp / "home"
    seed_home(home, ROWS, D1.isoformat())
    subprocess.run([str(MLOPS), "--home", str(home), "data", "seed", "--days", "1", "--rows-per-day", str(ROWS),
                    "--end", D2.isoformat()], check=True, env=CHILD_ENV, stdout=subprocess.DEVNULL)
    at = [str(MLOPS), "--home", str(home), "run"]
    first = run_checked("run-d1", at + ["--date", D1.isoformat(), *FAST, "--auc-floor", "0.0"], tmp)
    second = run_checked("run-d2", at + ["--date", D2.isoformat(), *FAST, "--auc-floor", "0.0",
                                         "--min-improvement", "-1.0", "--slice-margin", "1.0"], tmp)
    return home, first["seconds"] + second["seconds"]


def versions(base: Path) -> list:
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []


class EchoServer:
    """bench/echo_server.py: the same HTTP and gRPC stacks answering without a model."""

    def __init__(self, log_path: Path):
        self.rest_port, self.grpc_port = free_port_pair()
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "echo_server.py"), str(self.rest_port),
                                      str(self.grpc_port)], stdout=subprocess.PIPE, stderr=self._log, env=CHILD_ENV)
        if self.proc.stdout.readline().strip() != b"ready":
            raise SystemExit(f"bench/echo_server.py did not start; log {log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self._log.close()


class Server:
    """`mlops serve` on free ports over `base`."""

    def __init__(self, home: Path, base: Path, log_path: Path, extra: tuple = ()):
        self.rest_port, self.grpc_port = free_port_pair()
        self._log = open(log_path, "ab")
        self.log_path = log_path
        cmd = [str(MLOPS), "--home", str(home), "serve", "--model-name", "taxi", "--model-base-path", str(base),
               "--rest-port", str(self.rest_port), "--grpc-port", str(self.grpc_port), *extra]
        env = dict(CHILD_ENV, TF_CPP_MIN_LOG_LEVEL="3")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=str(home))

    def served(self) -> list:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=5)
            conn.request("GET", "/v1/models/taxi")
            response = conn.getresponse()
            body = json.loads(response.read() or b"null")
            conn.close()
        except (OSError, http.client.HTTPException, ValueError):
            return []
        if response.status != 200:
            return []
        return sorted(int(s["version"]) for s in body["model_version_status"] if s["state"] == "AVAILABLE")

    def wait_serving(self, version: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while version not in self.served():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not serve version {version}; log {self.log_path}:\n"
                                 + self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        terminate(self.proc)
        self._log.close()


def percentile(ordered: list, q: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and its live descendants (a peer's worker processes do its work)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root] + root.children(recursive=True):
        try:
            times = process.cpu_times()
        except psutil.Error:  # ended between listing and reading
            continue
        total += times.user + times.system
    return total


def children_cpu(pid: int) -> dict:
    """CPU seconds of each child process of `pid` (a `--workers` server's workers), by pid."""
    out = {}
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return out
    for child in children:
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        out[child.pid] = times.user + times.system
    return out


def memory(pid: int) -> dict:
    """RSS, PSS and USS (private pages: what no other process maps) of a process, in MiB, from
    /proc/<pid>/smaps_rollup (None where the kernel does not give it)."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                    fields[parts[0][:-1]] = int(parts[1]) / 1024
    except OSError:
        return dict(rss=psutil.Process(pid).memory_info().rss / 2**20, pss=None, uss=None)
    return dict(rss=fields.get("Rss"), pss=fields.get("Pss"),
                uss=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0))


def server_memory(single: Server, workers: Server) -> dict:
    """The memory of the single-process server, of the `--workers` parent and of each of its workers,
    and the workers' own start-up log line with its figures."""
    out = dict(single=memory(single.proc.pid), parent=memory(workers.proc.pid),
               workers={child.pid: memory(child.pid) for child in psutil.Process(workers.proc.pid).children()})
    said = re.findall(r"all \d+ workers listen: .*", workers.log_path.read_text(errors="replace"))
    out["log_line"] = said[-1].strip() if said else None
    return out


def run_cell(make_call, concurrency: int, requests: int, server_pid: int = None) -> dict:
    """`requests` calls split over `concurrency` threads, each with its own client from `make_call()`.
    Also the CPU seconds the server process (`server_pid`) and this process (the clients; for the
    direct variant the model calls too) spent meanwhile."""
    per_thread = max(1, requests // concurrency)
    calls = [make_call() for _ in range(concurrency)]
    for call in calls:  # connect and warm each client
        call()
    samples, errors = [[] for _ in range(concurrency)], [0]
    barrier = threading.Barrier(concurrency + 1)

    def worker(index: int) -> None:
        call, out = calls[index], samples[index]
        barrier.wait()
        for _ in range(per_thread):
            started = time.perf_counter()
            try:
                call()
            except Exception:  # noqa: BLE001 -- counted, reported
                errors[0] += 1
                continue
            out.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    server0 = cpu_seconds(server_pid) if server_pid else 0.0
    client0 = time.process_time()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    client_cpu = time.process_time() - client0
    server_cpu = cpu_seconds(server_pid) - server0 if server_pid else 0.0
    flat = sorted(s for chunk in samples for s in chunk)
    return dict(p50=percentile(flat, 0.5) * 1e3, p99=percentile(flat, 0.99) * 1e3, n=len(flat), wall=wall,
                errors=errors[0], server_cpu=server_cpu, client_cpu=client_cpu)


@dataclasses.dataclass(frozen=True)
class NativeLoad:
    """Requests sent by h2load rather than Python threads: one h2load thread, one connection per client."""

    url: str
    body: bytes
    headers: tuple
    http1: bool  # REST: HTTP/1.1 keep-alive; gRPC: HTTP/2 (h2c)
    metrics_port: int  # the server's REST port, whose metrics count failed requests (gRPC errors are HTTP 200)


def failed_requests(rest_port: int) -> float:
    """The server's requests that did not answer OK, from its Prometheus metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10)
    conn.request("GET", "/monitoring/prometheus/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlops_serving_requests_total{") and 'code="200"' not in line)


_H2LOAD_START_CPU: dict = {}


def run_native(load: NativeLoad, concurrency: int, requests: int, server_pid: int) -> dict:
    """run_cell's measurements, from `h2load -n requests -c concurrency` and its per-request log.

    Client CPU is h2load's, less what a run of one request per connection costs it (process
    start, connecting), measured once per variant: the cells' rounds are short (50-200 requests),
    and the Python client's start-up is not counted either."""
    key = (load.url, load.body, concurrency)
    if key not in _H2LOAD_START_CPU and requests > concurrency:
        _H2LOAD_START_CPU[key] = 0.0
        _H2LOAD_START_CPU[key] = run_native(load, concurrency, concurrency, server_pid)["client_cpu"]
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        body, requests_log = Path(tmp) / "body", Path(tmp) / "requests.tsv"
        body.write_bytes(load.body)
        cmd = [H2LOAD, "-n", str(requests), "-c", str(concurrency), "-m", "1", "-t", "1", "-d", str(body),
               f"--log-file={requests_log}", *(["--h1"] if load.http1 else []),
               *(f"--header={h}" for h in load.headers), load.url]
        failed0 = failed_requests(load.metrics_port)
        server0, child0 = cpu_seconds(server_pid), resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = cpu_seconds(server_pid) - server0
        entries = [line.split("\t") for line in requests_log.read_text().splitlines() if line.strip()]
    finished = re.search(r"finished in ([0-9.]+)(ms|s)", out)
    if finished is None:
        raise RuntimeError(f"h2load printed no result: {out[-500:]}")
    wall = float(finished.group(1)) / (1e3 if finished.group(2) == "ms" else 1.0)
    ok = sorted(int(us) / 1e6 for _, status, us in entries if status.startswith("2"))
    if not ok:
        raise RuntimeError(f"h2load got no 2xx answer from {load.url}: {out[-500:]}")
    # not answered 2xx (or not at all), or counted as failed by the server: a gRPC error is HTTP 200
    errors = max(requests - len(ok), int(failed_requests(load.metrics_port) - failed0))
    return dict(p50=percentile(ok, 0.5) * 1e3, p99=percentile(ok, 0.99) * 1e3, n=requests - errors, wall=wall, errors=errors, server_cpu=server_cpu,
                client_cpu=max(0.0, (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
                               - _H2LOAD_START_CPU.get(key, 0.0)))


@functools.lru_cache(maxsize=None)
def in_process(model_dir: Path) -> tuple:
    """The model for the in-process variants, loaded once for every batch size: (the SavedModel as
    tf.saved_model.load gives it, its `serving_default` as the server calls it)."""
    import tensorflow as tf

    from serving.servable import load_servable

    return tf.saved_model.load(str(model_dir)), load_servable("taxi", 0, model_dir).signature("serving_default")


def variants(model_dir: Path, server: Server, batch: int, unbatched: Server, echo: EchoServer,
             peers: dict, workers: Server = None, tally: list = None) -> dict:
    """Every variant's client maker and the pid of the server it talks to. `workers`: the `--workers`
    server, whose REST clients each append to `tally` a Counter of the workers that answered them."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    serialized = example_bytes(ROW)
    loaded, fast = in_process(model_dir)
    signature = loaded.signatures["serving_default"]
    key = next(iter(signature.structured_input_signature[1]))
    body = json.dumps({"instances": [ROW] * batch})
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "taxi"
    request.inputs["examples"].CopyFrom(tf.make_tensor_proto([serialized] * batch))

    def direct():
        def call():
            outputs = signature(**{key: tf.constant([serialized] * batch)})
            for value in outputs.values():
                value.numpy()
        return call

    def direct_server_path():
        def call():
            fast.run({fast.example_input: tf.constant([serialized] * batch)})  # outputs as numpy, like direct
        return call

    # serving_features: the same trip as one value per input (0 / "" where ROW has none)
    by_features = loaded.signatures[FEATURES_SIGNATURE]
    feature_specs = by_features.structured_input_signature[1]
    feature_row = {name: ROW.get(name, "" if spec.dtype == tf.string else 0) for name, spec in feature_specs.items()}
    features_body = json.dumps({"signature_name": FEATURES_SIGNATURE, "instances": [feature_row] * batch})

    def direct_features():
        def call():
            feeds = {name: tf.constant([feature_row[name]] * batch, dtype=spec.dtype)
                     for name, spec in feature_specs.items()}
            for value in by_features(**feeds).values():
                value.numpy()
        return call

    def rest(target=server, body=body, answered_by=None):
        conn = http.client.HTTPConnection("127.0.0.1", target.rest_port, timeout=30)
        seen = collections.Counter()  # this connection's own: no lock between the client threads
        if answered_by is not None:
            answered_by.append(seen)

        def call():
            conn.request("POST", "/v1/models/taxi:predict", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            if answered_by is not None:
                seen[response.getheader(WORKER_HEADER, "none")] += 1
        return call

    def grpc_call(target=server, options=()):
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}", options=list(options)))
        return lambda: stub.Predict(request, timeout=30)

    grpc_body = request.SerializeToString()
    native = {
        NATIVE_REST: (NativeLoad(f"http://127.0.0.1:{server.rest_port}/v1/models/taxi:predict", body.encode(),
                                 ("content-type: application/json",), True, server.rest_port), server.proc.pid),
        NATIVE_GRPC: (NativeLoad(f"http://127.0.0.1:{server.grpc_port}/tensorflow.serving.PredictionService/Predict",
                                 b"\0" + struct.pack(">I", len(grpc_body)) + grpc_body,  # gRPC's length-prefixed message
                                 ("content-type: application/grpc", "te: trailers"), False, server.rest_port),
                      server.proc.pid),
    }
    # name -> (client maker or NativeLoad, pid of the server process it talks to; None: in-process)
    return {**native, "direct": (direct, None), "REST": (rest, server.proc.pid), "gRPC": (grpc_call, server.proc.pid),
            UNBATCHED_REST: (lambda: rest(unbatched), unbatched.proc.pid),
            UNBATCHED_GRPC: (lambda: grpc_call(unbatched), unbatched.proc.pid),
            FLOOR_REST: (lambda: rest(echo), echo.proc.pid), FLOOR_GRPC: (lambda: grpc_call(echo), echo.proc.pid),
            DIRECT_FEATURES: (direct_features, None), DIRECT_SERVER_PATH: (direct_server_path, None),
            REST_FEATURES: (lambda: rest(body=features_body), server.proc.pid),
            # the peers (issue 25): the same client and body as "REST"
            **{peer.peer.variant: (functools.partial(rest, peer), peer.proc.pid) for peer in peers.values()},
            # `mlops serve --workers 2` (issue 25): the same clients and requests as "REST" and "gRPC"
            **({REST_WORKERS: (lambda: rest(workers, answered_by=tally), workers.proc.pid),
                GRPC_WORKERS: (lambda: grpc_call(workers, OWN_CONNECTION), workers.proc.pid),
                GRPC_OWN: (lambda: grpc_call(server, OWN_CONNECTION), server.proc.pid)} if workers is not None else {})}


def answered_by_worker(tally: list) -> tuple:
    """From the Counters of one cell's REST connections to the `--workers` server, emptied after:
    (requests per worker, connections per worker), each connection's warm-up request left out."""
    requests, connections = collections.Counter(), collections.Counter()
    for seen in tally:
        if not seen:
            continue
        first = seen.most_common(1)[0][0]  # a keep-alive connection stays with one worker
        seen[first] -= 1  # run_cell's warm-up call
        requests.update(seen)
        connections[first] += 1
    tally.clear()
    return requests, connections


def latency_table(model_dir: Path, server: Server, unbatched: Server, echo: EchoServer, requests: int,
                  rounds: int, peers: dict, workers: Server = None) -> list:
    rows = []
    tally = []  # the `--workers` server's REST connections: which worker answered
    for batch in (1, 100):
        makers = variants(model_dir, server, batch, unbatched, echo, peers, workers, tally)
        n = requests if batch == 1 else max(16, requests // 2)
        for concurrency in (1, 8):
            per_round = {name: [] for name in makers}
            names = list(makers)
            for round_no in range(rounds):
                # each round starts one variant later, so that no variant always runs right after
                # another (the direct calls' TensorFlow threads, say) and position effects average out
                shift = round_no % len(names)
                for name in names[shift:] + names[:shift]:
                    make, pid = makers[name]
                    run = run_native if isinstance(make, NativeLoad) else run_cell
                    cpu0 = children_cpu(pid) if name in WORKERS_OF else {}
                    result = run(make, concurrency, max(concurrency, n // rounds), pid)
                    if name in WORKERS_OF:
                        cpu1 = children_cpu(pid)
                        result["worker_cpu"] = {child: cpu1[child] - cpu0.get(child, 0.0) for child in cpu1}
                        if name == REST_WORKERS:
                            result["worker_requests"], result["worker_connections"] = answered_by_worker(tally)
                    per_round[name].append(result)
            for name, results in per_round.items():
                done = sum(r["n"] for r in results)
                sent = done + sum(r["errors"] for r in results)
                row = dict(variant=name, batch=batch, concurrency=concurrency,
                           p50=statistics.median(r["p50"] for r in results),
                           p99=statistics.median(r["p99"] for r in results),
                           rps=done / sum(r["wall"] for r in results),
                           server_cpu_ms=sum(r["server_cpu"] for r in results) / sent * 1e3,
                           client_cpu_ms=sum(r["client_cpu"] for r in results) / sent * 1e3,
                           errors=sum(r["errors"] for r in results), n=done,
                           # per round, in round order: each round's variants ran seconds apart, so a
                           # variant's round against the direct call's same round cancels slow drifts of the host
                           round_rps=[r["n"] / r["wall"] for r in results], round_p50=[r["p50"] for r in results])
                if name in WORKERS_OF:  # per worker pid: its CPU seconds, and for REST the requests it answered
                    row["worker_cpu"] = sum((collections.Counter(r["worker_cpu"]) for r in results),
                                            collections.Counter())
                    if name == REST_WORKERS:
                        row["worker_requests"] = sum((r["worker_requests"] for r in results), collections.Counter())
                        row["worker_connections"] = [dict(r["worker_connections"]) for r in results]
                    log(f"batch {batch:3d} x{concurrency} {name:20s} split over the workers: "
                        + worker_split_text(row))
                rows.append(row)
                log(f"batch {batch:3d} x{concurrency} {name:20s} p50 {row['p50']:7.2f} ms  p99 {row['p99']:7.2f} ms  "
                    f"{row['rps']:7.1f} req/s  ({done} requests, {row['errors']} errors)")
    return rows


class Poller:
    """A gRPC client predicting in a loop; notes when the answering version first becomes `want`."""

    def __init__(self, server: Server):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = "taxi"
        self.request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example_bytes(ROW)]))
        self.failed = self.answered = 0
        self.appeared = None  # when the version directory was first seen, if `watch` was given

    def until_version(self, want: int, started: float, timeout: float = 120.0, watch: Path = None) -> float:
        self.appeared = None
        while time.monotonic() - started < timeout:
            if watch is not None and self.appeared is None and watch.is_dir():
                self.appeared = time.monotonic()
            try:
                reply = self.stub.Predict(self.request, timeout=10)
            except Exception:  # noqa: BLE001 -- a failed request during the switch is what we count
                self.failed += 1
                time.sleep(0.01)
                continue
            self.answered += 1
            if reply.model_spec.version.value == want:
                return time.monotonic() - started
            time.sleep(0.01)
        return float("nan")


def switch_times(home: Path, base: Path, model_dir: Path, server: Server, can_rollback: bool, logs: Path) -> dict:
    out = {}
    poller = Poller(server)
    if can_rollback:
        want = max(versions(base)) + 1
        # --server: the command returns once the measured server serves the new version (the home has
        # two servers; either may be the one registered as the home's).
        cmd = [str(MLOPS), "--home", str(home), "rollback", "--previous", "--reason", "bench: rollback timing",
               "--by", "bench/serving_latency.py", "--server", f"http://127.0.0.1:{server.rest_port}"]
        started = time.monotonic()
        proc = subprocess.Popen(cmd, env=CHILD_ENV, stdout=open(logs / "rollback.log", "w"), stderr=subprocess.STDOUT)
        out["rollback"] = poller.until_version(want, started, watch=base / str(want))
        out["rollback_dir"] = (started + out["rollback"] - poller.appeared) if poller.appeared else float("nan")
        code = proc.wait()
        out["rollback_cmd"] = time.monotonic() - started
        if code != 0:
            raise SystemExit(f"mlops rollback failed (exit {code}); log {logs / 'rollback.log'}")
        log(f"rollback: first answer from version {want} after {out['rollback']:.2f}s, "
            f"{out['rollback_dir']:.2f}s after its directory appeared (the command took {out['rollback_cmd']:.2f}s)")
    want = max(versions(base)) + 1
    staging = base / f".incoming-{uuid.uuid4().hex}"
    shutil.copytree(model_dir, staging)
    started = time.monotonic()
    os.rename(staging, base / str(want))
    out["new_version"] = poller.until_version(want, started)
    out["hand_copied"] = base / str(want)  # no push records it: removed once the server is down
    log(f"new version {want}: first answer {out['new_version']:.2f}s after the rename")
    out["failed"], out["answered"] = poller.failed, poller.answered
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# ../shared/design.md's reference for these machines: the stock taxi SavedModel's serving_default
# called in-process, p50 for 1 and for 100 serialized examples.
REFERENCE_DIRECT_MS = {1: 0.5, 100: 0.96}


def host_speed(by: dict) -> str:
    """How fast this run's host was, from the direct call against design.md's reference figure:
    a run on a slow (busy) host reads worse in every cell, whatever the server does."""
    got = [by[("direct", batch, 1)]["p50"] for batch in REFERENCE_DIRECT_MS]
    ref = list(REFERENCE_DIRECT_MS.values())
    return (f"Host speed: the direct call's p50 at concurrency 1 was {got[0]:.2f} ms (1 row) and {got[1]:.2f} ms "
            f"(100 rows), {got[0] / ref[0]:.1f}x and {got[1] / ref[1]:.1f}x the reference that ../shared/design.md "
            f"measured on these machines ({ref[0]} / {ref[1]} ms): compare runs only at a similar host speed.")


def worker_pids(row: dict) -> list:
    """The `--workers` server's worker pids seen in a row, as strings (the header gives them so)."""
    return sorted({str(pid) for pid in row["worker_cpu"]} | set(row.get("worker_requests", {})))


def worker_split_text(row: dict) -> str:
    """Which worker answered a `--workers` row's requests: REST by the header, gRPC (whose answers do
    not name their worker) by each worker's share of the server CPU."""
    pids = worker_pids(row)
    cpu = {str(pid): seconds for pid, seconds in row["worker_cpu"].items()}
    cpu_total = sum(cpu.values()) or 1.0
    cpu_text = "server CPU " + " / ".join(f"{cpu.get(pid, 0.0) / cpu_total:.0%}" for pid in pids)
    if "worker_requests" not in row:
        return f"{cpu_text} (workers {', '.join(pids)})"
    requests = row["worker_requests"]
    total = sum(requests.values()) or 1
    per_round = ", ".join("/".join(str(conns.get(pid, 0)) for pid in pids) for conns in row["worker_connections"])
    return (f"requests {' / '.join(f'{requests.get(pid, 0)} ({requests.get(pid, 0) / total:.0%})' for pid in pids)}"
            f"; connections per round {per_round}; {cpu_text} (workers {', '.join(pids)})")


def both_answered(row: dict) -> bool:
    """Every worker answered some of a `--workers` row's requests (gRPC: took >= 10% of its server CPU)."""
    if "worker_requests" in row:
        return len(worker_pids(row)) == WORKERS and all(row["worker_requests"].get(pid, 0) > 0
                                                        for pid in worker_pids(row))
    total = sum(row["worker_cpu"].values()) or 1.0
    return len(row["worker_cpu"]) == WORKERS and all(v / total >= 0.10 for v in row["worker_cpu"].values())


def _mib(value) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def render_workers(by: dict, info: dict) -> list:
    """The lines after the opening table: `mlops serve --workers 2` against the single process."""
    if info is None:
        return [f"`mlops serve --workers {WORKERS}`: not measured in this run (`--no-workers-compare`).", ""]
    cores = os.cpu_count()
    lines = [f"`mlops serve --workers {WORKERS}` vs one process (issue 25), same run: a second server started with "
             f"`--workers {WORKERS}` (a parent forking {WORKERS} servers that share the REST and gRPC ports with "
             "SO_REUSEPORT), sent the same requests by the same Python client threads (one keep-alive connection or "
             "gRPC channel each) in the same alternating rounds as \"REST\" and \"gRPC\" of the one-process server "
             "(batching on in both). gRPC: the benchmark's gRPC channels to one address share one TCP connection "
             "(gRPC Python's global subchannel pool; so do \"gRPC\"'s 8 clients in Details), which the kernel gives to "
             f"one worker; here each client opens its own (`grpc.use_local_subchannel_pool`), on both sides, and "
             f"the 1-process gRPC row is \"{GRPC_OWN}\", not \"gRPC\". **No target**: this host has "
             f"{cores} cores, and the same cores also run the client threads and the other servers' idle threads, so "
             "a second worker has no core of its own here; the ratio says what it does on such a host, not what it "
             "does with cores to spare. Which worker answered: REST answers name it (`X-Mlops-Worker`, each "
             "connection's warm-up request left out); gRPC answers do not, so for gRPC each worker's share of the "
             "server's CPU time during the cell shows it.", "",
             "| instances | clients | protocol | 1 process: p50 / p99 ms, req/s | "
             f"{WORKERS} workers: p50 / p99 ms, req/s | {WORKERS} workers / 1: req/s, p50 | "
             "server + client CPU ms/req: 1, 2 | split over the workers |",
             "|---|---|---|---|---|---|---|---|"]
    checks = []
    for batch in (1, 100):
        for clients in (1, 8):
            for variant, single_name in WORKERS_OF.items():
                one, two = by[(single_name, batch, clients)], by[(variant, batch, clients)]
                split = worker_split_text(two)
                protocol = "gRPC, a connection per client" if single_name == GRPC_OWN else single_name
                lines.append(f"| {batch} | {clients} | {protocol} | {one['p50']:.2f} / {one['p99']:.2f}, "
                             f"{one['rps']:.0f} | {two['p50']:.2f} / {two['p99']:.2f}, {two['rps']:.0f} | "
                             f"**{two['rps'] / one['rps']:.2f}x**, {two['p50'] / one['p50']:.2f}x | "
                             f"{one['server_cpu_ms'] + one['client_cpu_ms']:.2f}, "
                             f"{two['server_cpu_ms'] + two['client_cpu_ms']:.2f} | {split} |")
                if clients == 8:
                    rounds_alone = sum(len(conns) < WORKERS for conns in two.get("worker_connections", []))
                    checks.append(f"{protocol} {batch} instance{'s' if batch > 1 else ''}: "
                                  f"{'yes' if both_answered(two) else '**NO**'}"
                                  + (f" ({rounds_alone} of {len(two['worker_connections'])} rounds had every "
                                     "connection on one worker)" if "worker_connections" in two else
                                     " (each worker took >= 10% of the server CPU)"))
    lines += ["", f"Both workers answered requests in the 8-client cells: {'; '.join(checks)}.", ""]
    rest8 = by[("REST", 1, 8)]
    client_cores = rest8["client_cpu_ms"] * rest8["rps"] / 1e3
    server_cores = rest8["server_cpu_ms"] * rest8["rps"] / 1e3
    mem = info["memory"]
    workers = list(mem["workers"].items())
    uss = [m["uss"] for _, m in workers if m["uss"] is not None]
    lines.append("Memory (after the measured rounds, the model loaded and warm; /proc/<pid>/smaps_rollup: RSS counts "
                 "every page mapped, PSS divides each shared page among the processes mapping it (here also the "
                 "other servers and the benchmark, which map the same TensorFlow libraries, so it reads low), USS = "
                 "the private pages, what no other process maps):")
    lines.append("")
    for pid, m in workers:
        lines.append(f"- worker (pid {pid}): RSS {_mib(m['rss'])}, PSS {_mib(m['pss'])}, USS {_mib(m['uss'])}")
    lines.append(f"- the parent (pid {info['parent_pid']}; no TensorFlow): RSS {_mib(mem['parent']['rss'])}, "
                 f"PSS {_mib(mem['parent']['pss'])}, USS {_mib(mem['parent']['uss'])}")
    lines.append(f"- the one-process server, for comparison: RSS {_mib(mem['single']['rss'])}, "
                 f"PSS {_mib(mem['single']['pss'])}, USS {_mib(mem['single']['uss'])}")
    if uss:
        total_rss = sum(m["rss"] for _, m in workers) + mem["parent"]["rss"]
        lines.append(f"- **one more worker adds about {statistics.mean(uss):.0f} MiB** (its USS, the mean over the "
                     f"{len(uss)} workers); the {WORKERS}-worker server's RSS summed over its processes is "
                     f"{total_rss:.0f} MiB, counting the shared libraries once per process")
    if mem.get("log_line"):
        lines.append(f"- the server's own start-up log line (docs/serving.md, Workers): `{mem['log_line']}`")
    lines += ["", "Expected scaling with cores, on paper: one process keeps about one core busy (the GIL serializes "
              "its JSON, tf.Example and gRPC work around the model calls), so N workers serve up to about N times "
              "one process's requests while each has a core that neither the clients nor the other workers need; "
              "past that they queue for the same cores and add only memory (the USS above, per worker). A keep-alive "
              "connection stays with the worker the kernel gave it, so one client uses one worker (the 1-client rows "
              "should read about 1.0x), and each worker batches only the requests of its own connections: with 8 "
              "clients over 2 workers a model call gets up to about 4 concurrent requests instead of up to 8, so "
              "more model calls and more CPU per request, which pays only where there are cores to run them. On "
              f"this {cores}-core host the Python client threads alone kept {client_cores:.2f} of a core busy in the "
              "1-instance 8-client REST cell (client CPU per request x requests/s, one process), and the one process "
              f"{server_cores:.2f}: so expect about 1.0x or less here, and up to about {WORKERS}x for {WORKERS} "
              "workers on a server whose cores the clients do not share.", ""]
    return lines


def render(rows: list, switch: dict, meta: dict) -> str:
    by = {(r["variant"], r["batch"], r["concurrency"]): r for r in rows}
    running, absent, peer_notes = meta["peers"]
    peer_variants = tuple(serving_peers.PEERS[name].variant for name in running)
    quoted = " and ".join(f'"{variant}"' for variant in peer_variants)
    peers_sentence = f' {quoted}: the same requests as "REST" to the peers of the opening table.' if quoted else ""
    lines = [SECTION, "", *serving_peers.render_opening(by, running, absent, peer_notes, meta["example_ms"]),
             *render_workers(by, meta.get("workers")),
             "### Details", "",
             f"Date: {meta['date']}. Machine: {os.cpu_count()} CPUs (nproc); load average {meta['load0']:.2f} at start, "
             f"{meta['load1']:.2f} at end. Other work may have run on this machine at the same time. "
             f"Model: {meta['model']}. Client threads, the server and the direct calls share the machine's cores, so at "
             "concurrency 8 the client's own Python (GIL) work competes with the server.",
             f"Per cell: {meta['requests']} requests with 1 instance, {max(16, meta['requests'] // 2)} with 100, over "
             f"{meta['rounds']} alternating rounds (each starting one variant later than the last); p50/p99 = median "
             "of the per-round percentiles; throughput = "
             "requests / wall time (x instances for instances/s); the targets also give the range over the rounds "
             "of each round's overhead and throughput ratio against the direct call's same round (how much of a "
             "verdict is this host's noise). Direct = `serving_default` called in-process with the "
             "same serialized tf.Examples; REST = JSON feature dicts (`instances`), one keep-alive connection per thread; "
             "gRPC = serialized tf.Examples, one channel per thread. "
             f"\"{NATIVE_REST}\" and \"{NATIVE_GRPC}\" send the very same requests to the same server from h2load "
             "(nghttp2's C++ load generator; one thread, one keep-alive HTTP/1.1 connection or one HTTP/2 connection per "
             "client, per-request times from its log, failed gRPC calls from the server's metrics): a client that costs "
             "the shared cores a fifth to a tenth of the Python client's CPU (see the client CPU column), as a client on its own machine would cost none. "
             "REST and gRPC are the server as shipped "
             f"(batching on: concurrent requests share model calls); \"{UNBATCHED_REST}\" and "
             f"\"{UNBATCHED_GRPC}\" are a second server in the same run with `--no-enable-batching`, the "
             "baseline the batching is measured against. \"REST floor\" and \"gRPC floor\" send the same requests "
             "to bench/echo_server.py, the same Python HTTP and gRPC stacks answering without a model: their latency "
             "(client included) is transport and framework cost that no change to the server's own code removes. "
             f"\"{DIRECT_FEATURES}\" calls the Trainer's `{FEATURES_SIGNATURE}` signature in-process (one tensor per raw "
             f"feature, made from Python lists as any caller would), and \"{REST_FEATURES}\" sends the same trip as "
             "TF Serving's row format to that signature (no tf.Example on either side); its overhead and throughput are "
             f"against \"{DIRECT_FEATURES}\". \"{DIRECT_SERVER_PATH}\" calls `serving_default` in-process the way the "
             "server does (below `ConcreteFunction.__call__`, on TensorFlow's single-threaded executor where warm-up "
             "allows): the model's own cost inside the server, for reading the overheads; the targets stay against "
             "the plain direct call."
             + peers_sentence, "",
             "CPU columns: CPU time per request of the server process with its child processes (the peers' worker "
             "processes) and of the client process (the bench "
             "itself: its client threads, or for direct the model calls), from psutil and time.process_time around each cell; "
             f"ceiling = {os.cpu_count()} cores / (server + client CPU per request), the most requests per second this "
             "host could give that variant if nothing else ran and the cores were always busy. CPU time is counted in "
             "10 ms ticks, so the floors' small cells (a few tens of ms) are rough.", "",
             host_speed(by), "",
             "| instances | concurrency | variant | p50 ms | p99 ms | req/s | instances/s | p50 overhead ms | "
             "throughput vs direct | server CPU ms/req | client CPU ms/req | CPU ceiling req/s | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    targets = []
    met = {False: [], True: []}  # native client? -> per cell: both of its targets met
    for batch in (1, 100):
        for concurrency in (1, 8):
            for variant in ("direct", "REST", "gRPC", NATIVE_REST, NATIVE_GRPC, UNBATCHED_REST, UNBATCHED_GRPC,
                            FLOOR_REST, FLOOR_GRPC, DIRECT_FEATURES, REST_FEATURES, DIRECT_SERVER_PATH,
                            *peer_variants):
                direct = by[(BASELINE.get(variant, "direct"), batch, concurrency)]
                r = by[(variant, batch, concurrency)]
                over = r["p50"] - direct["p50"]
                ratio = r["rps"] / direct["rps"]
                no_model = variant in IN_PROCESS + (FLOOR_REST, FLOOR_GRPC)
                server_cpu = "-" if variant in IN_PROCESS else f"{r['server_cpu_ms']:.2f}"
                cpu_ms = r["server_cpu_ms"] + r["client_cpu_ms"]
                ceiling = os.cpu_count() * 1e3 / cpu_ms if cpu_ms > 0 else float("inf")
                lines.append(f"| {batch} | {concurrency} | {variant} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} | "
                             f"{r['rps'] * batch:.0f} | {'-' if no_model else f'{over:+.2f}'} | "
                             f"{'-' if no_model else f'{ratio:.2f}x'} | "
                             f"{server_cpu} | {r['client_cpu_ms']:.2f} | "
                             f"{ceiling:.0f} | {r['errors']} |")
                if variant in ("REST", "gRPC", NATIVE_REST, NATIVE_GRPC, REST_FEATURES):
                    floor = by[(FLOOR_GRPC if "gRPC" in variant else FLOOR_REST, batch, concurrency)]
                    round_over = sorted(v - d for v, d in zip(r["round_p50"], direct["round_p50"]))
                    round_ratio = sorted(v / d for v, d in zip(r["round_rps"], direct["round_rps"]))
                    spread_over = f" (per round {round_over[0]:+.2f} to {round_over[-1]:+.2f}, met in " \
                                  f"{sum(o <= OVERHEAD_TARGET_MS for o in round_over)} of {len(round_over)})"
                    spread_ratio = f" (per round {round_ratio[0]:.2f}x to {round_ratio[-1]:.2f}x, met in " \
                                   f"{sum(x >= THROUGHPUT_TARGET for x in round_ratio)} of {len(round_ratio)})"
                    extra = "(beside the issue's cells) " if variant == REST_FEATURES else ""
                    targets.append(f"- {extra}{variant}, {batch} instance(s), concurrency {concurrency}: p50 overhead "
                                   f"**{over:+.2f} ms** (target <= {OVERHEAD_TARGET_MS:.0f} ms): "
                                   f"**{verdict(over <= OVERHEAD_TARGET_MS)}**{spread_over}"
                                   + (f"; throughput **{ratio:.2f}x** direct (target >= {THROUGHPUT_TARGET}x): "
                                      f"**{verdict(ratio >= THROUGHPUT_TARGET)}**{spread_ratio}; the target needs "
                                      f"{THROUGHPUT_TARGET * direct['rps']:.0f} req/s, and at this run's CPU per "
                                      f"request (server {r['server_cpu_ms']:.2f} + client {r['client_cpu_ms']:.2f} ms) "
                                      f"{os.cpu_count()} busy cores give at most {ceiling:.0f}"
                                      if concurrency == 8 else "")
                                   + (f" (against `{FEATURES_SIGNATURE}` called directly, and "
                                      f"{r['p50'] - by[('direct', batch, concurrency)]['p50']:+.2f} ms against `serving_default`)"
                                      if variant == REST_FEATURES else "")
                                   + (f" -- the client took {r['client_cpu_ms']:.2f} ms CPU per request (the Python "
                                      f"client {by[(variant.split(',')[0], batch, concurrency)]['client_cpu_ms']:.2f})"
                                      if variant in (NATIVE_REST, NATIVE_GRPC) else
                                      f" -- the {'REST' if variant == REST_FEATURES else variant} stack alone (no model, "
                                      f"Python client) takes {floor['p50']:.2f} ms p50, {floor['rps']:.0f} req/s"))
                    met[variant in (NATIVE_REST, NATIVE_GRPC)].append(
                        over <= OVERHEAD_TARGET_MS and (concurrency == 1 or ratio >= THROUGHPUT_TARGET))
    lines += ["", "Targets (a cell counts as met when its overhead and, at concurrency 8, its throughput are): "
              f"with the Python client threads **{sum(met[False])} of {len(met[False])}** cells met (REST, gRPC and "
              f"REST to serving_features), with the native client (h2load) **{sum(met[True])} of {len(met[True])}**.",
              "", *targets, ""]
    lines.append("Hot reload (a gRPC client predicting every ~10 ms, timing until the first answer whose "
                 "`model_spec.version` is the new one):")
    lines.append("")
    if "rollback" in switch:
        ok = switch["rollback"] <= SWITCH_TARGET_S
        lines.append(f"- `mlops rollback --previous` started -> first answer from the restored version: "
                     f"**{switch['rollback']:.2f} s** (target <= {SWITCH_TARGET_S:.0f} s): **{verdict(ok)}**; the "
                     f"command itself took {switch['rollback_cmd']:.2f} s (a two-node run, resolver + AtomicPusher, in the "
                     f"home's warm worker that the pipeline runs started, then its wait until the server serves the "
                     f"version); from the pushed version directory appearing (polled every ~10 ms) "
                     f"to the first answer from it: **{switch['rollback_dir']:.2f} s**")
    else:
        lines.append("- rollback: not measured (`--model-dir` has no ML Metadata with two pushes)")
    lines.append(f"- a new version directory renamed into the base path -> first answer from it: "
                 f"**{switch['new_version']:.2f} s** (the server polls the base path about every second, then loads)")
    lines.append(f"- requests by the polling client during both switches: {switch['answered']} answered, "
                 f"{switch['failed']} failed")
    if meta.get("pipeline_s"):
        lines.append(f"- setup: two pipeline runs for the model took {meta['pipeline_s']:.0f} s (not part of the numbers)")
    lines.append("")
    lines.append("Run: `TF_USE_LEGACY_KERAS=1 .venv/bin/python bench/serving_latency.py` (or `make bench "
                 "BENCHES=serving_latency`); total wall time this run: " f"{meta['total_s']:.0f} s.")
    return "\n".join(lines) + "\n"


def start_peer_servers(names: list, model_dir: Path, server: Server, tmp: Path) -> tuple:
    """The peers serving `model_dir`, each checked against our server's answer to the 1-row body."""
    body = json.dumps({"instances": [ROW]})
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    conn.request("POST", "/v1/models/taxi:predict", body, {"Content-Type": "application/json"})
    expected = json.loads(conn.getresponse().read())["predictions"]
    conn.close()
    return serving_peers.start_peers(names, model_dir, tmp, body, expected, free_port)


def peer_note(peer: serving_peers.PeerServer) -> str:
    return (f"{peer.peer.settings}; {serving_peers.versions(peer.peer)}; up (every worker loaded, first answer "
            f"equal to ours) {peer.ready_seconds:.1f} s after its start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model-dir", type=Path, help="a SavedModel directory (skips the pipeline and the rollback)")
    source.add_argument("--home", type=Path, help="a project home with at least two pushes (used in place)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per cell with 1 instance (half with 100)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (home, logs)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--peers", default=",".join(serving_peers.PEERS),
                        help="peer servers to measure beside ours, comma-separated (default: all, "
                             f"{','.join(serving_peers.PEERS)}; `none` for none); one that cannot start is "
                             "left out and the results say why")
    parser.add_argument("--workers-compare", action=argparse.BooleanOptionalAction, default=True,
                        help=f"measure `mlops serve --workers {WORKERS}` beside the single process, REST and gRPC, "
                             "with its memory (default: on; --no-workers-compare skips it)")
    args = parser.parse_args()
    peer_names = serving_peers.parse_peers(args.peers)
    if H2LOAD is None:
        raise SystemExit("error: h2load not found, the native load generator of the REST/gRPC native-client rows "
                         "(fix: `make bench` installs it; by hand: apt-get install nghttp2-client)")

    began = time.monotonic()
    meta = dict(date=time.strftime("%Y-%m-%dT%H:%M"), load0=os.getloadavg()[0], requests=args.requests,
                rounds=args.rounds)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    log(f"work dir {tmp}")
    if args.model_dir:
        home = tmp / "home"
        base = home / "serving" / "models" / "taxi"
        base.mkdir(parents=True)
        shutil.copytree(args.model_dir, base / "1")
        can_rollback = False
        meta["model"] = f"{args.model_dir} (copied as version 1)"
    else:
        if args.home:
            home = args.home.resolve()
        else:
            home, meta["pipeline_s"] = prepare_home(tmp)
        base = home / "serving" / "models" / "taxi"
        can_rollback = len(versions(base)) >= 2
        meta["model"] = ("pushed by `mlops run` (1500 rows, 60 train steps), newest of "
                         f"{len(versions(base))} versions")
    newest = max(versions(base))
    model_dir = base / str(newest)
    server = Server(home, base, tmp / "server.log")
    unbatched = Server(home, base, tmp / "server-unbatched.log", ("--no-enable-batching",))
    workers = (Server(home, base, tmp / "server-workers.log", ("--workers", str(WORKERS)))
               if args.workers_compare else None)
    echo = EchoServer(tmp / "echo-server.log")
    peers = {}
    try:
        server.wait_serving(newest)
        unbatched.wait_serving(newest)
        log(f"server up: REST {server.rest_port}, gRPC {server.grpc_port}, version {newest}")
        if workers is not None:
            workers.wait_serving(newest)  # AVAILABLE: every worker serves it
            log(f"server with --workers {WORKERS} up: REST {workers.rest_port}, gRPC {workers.grpc_port}, parent pid "
                f"{workers.proc.pid}, workers {[c.pid for c in psutil.Process(workers.proc.pid).children()]}")
        peers, absent = start_peer_servers(peer_names, model_dir, server, tmp)
        meta["peers"] = (list(peers), absent, {name: peer_note(peer) for name, peer in peers.items()})
        meta["example_ms"] = serving_peers.example_building_ms(ROW)
        rows = latency_table(model_dir, server, unbatched, echo, args.requests, args.rounds, peers, workers)
        if workers is not None:
            meta["workers"] = dict(memory=server_memory(server, workers), parent_pid=workers.proc.pid)
            log(f"memory: {meta['workers']['memory']}")
            workers.stop()
        for peer in peers.values():
            peer.stop()
        unbatched.stop()
        echo.stop()
        switch = switch_times(home, base, model_dir, server, can_rollback, tmp)
    finally:
        server.stop()
        unbatched.stop()
        if workers is not None:
            workers.stop()
        echo.stop()
        for peer in peers.values():
            peer.stop()
    # The version renamed in by hand is not a push: left behind, the next run on this `--home`
    # would serve it and `mlops rollback --previous` would rightly refuse to guess what it replaced.
    shutil.rmtree(switch["hand_copied"], ignore_errors=True)
    meta["load1"] = os.getloadavg()[0]
    meta["total_s"] = time.monotonic() - began
    publish(args.results, SECTION, render(rows, switch, meta), tmp, args.keep)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
