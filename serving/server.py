"""`mlops serve`: the model server process (TF Serving's REST + gRPC API over serving/models/<name>/).

Start-up order: bind the REST and gRPC ports (answers 503 while nothing is loaded), start the
watcher thread (loads the newest version), then wait for SIGTERM/SIGINT. On a signal: stop
accepting connections, let in-flight requests finish (up to --grace-seconds), exit 0.

With `--workers N` (N > 1) `mlops serve` runs serving/supervisor.py instead, the supervising parent;
each of its N forked workers runs `run_worker`: a ModelServer that loads before it binds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

log = logging.getLogger("serving")

DEFAULT_MAX_BODY_BYTES = 8 << 20
DEFAULT_REQUEST_TIMEOUT = 30.0


@dataclasses.dataclass
class ServerOptions:
    home: Path
    model_name: str = "taxi"
    model_base_path: Optional[Path] = None
    model_config_file: Optional[Path] = None
    # On the home's defaults (neither --model-base-path nor --model-config-file): model_config_file
    # is <home>/serving/models.config, followed also while it does not exist (then: the default model).
    follow_home_config: bool = False
    host: str = "127.0.0.1"
    rest_port: int = 8501
    grpc_port: int = 8500
    poll_seconds: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    grace_seconds: float = 10.0
    max_connections: int = 256
    grpc_workers: int = 8
    max_concurrent_requests: int = 0  # 0: half the CPUs, at least 1 (see serving/api.py)
    enable_batching: bool = True  # concurrent requests share model calls (serving/batching.py)
    max_batch_size: int = 256  # rows (instances / examples) per batched call
    num_batch_threads: int = 1  # batches of one signature computed at once
    tensorflow_inter_op_parallelism: int = 0  # 0: TensorFlow's choice (one thread per core)
    tensorflow_intra_op_parallelism: int = 0
    single_threaded_executor: bool = True  # when warm-up shows a signature answers the same with it
    workers: int = 1  # >1: that many server processes share the ports (serving/supervisor.py)


def setup_logging(who: str = "serving") -> None:
    """Log lines on stderr; `who` names the process (the workers of `--workers N` say which one they are)."""
    formatter = logging.Formatter(f"%(asctime)s %(levelname)s {who}: %(message)s")
    if getattr(log, "_mlops_configured", False):
        for handler in log.handlers:
            handler.setFormatter(formatter)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    log._mlops_configured = True  # type: ignore[attr-defined]


def model_configs(options: ServerOptions):
    from serving.config import load_model_config

    path = options.model_config_file
    if path is not None and (path.is_file() or not options.follow_home_config):
        return load_model_config(path, options.home)
    return default_models(options)


def default_models(options: ServerOptions):
    from serving.config import single_model

    base = options.model_base_path or (options.home / "serving" / "models" / options.model_name)
    return single_model(options.model_name, base)


class ModelServer:
    """REST server + gRPC server + model watcher, started and stopped together.

    `worker`: this is one of the processes of `mlops serve --workers N` (serving/supervisor.py): it
    shares the ports (SO_REUSEPORT), counts metrics for the whole server, publishes its versions and
    answers model status for all workers (serving/worker_state.py), and loads before it listens."""

    def __init__(self, options: ServerOptions, configs=None, worker=None):
        from serving.api import Api
        from serving.metrics import ServingMetrics
        from serving.store import Registry, version_stamp

        self.options, self.worker = options, worker
        configs = model_configs(options) if configs is None else configs
        from serving.worker_state import ServerWideStatus, StateWriter, metrics_dir

        self._state = StateWriter(worker.directory, worker.index) if worker is not None else None
        self.metrics = ServingMetrics((c.name for c in configs),
                                      multiprocess_dir=metrics_dir(worker.directory) if worker else None)
        self.registry = Registry(
            configs, loader=self._load, stamp=version_stamp, config_path=options.model_config_file,
            home=options.home, poll_seconds=options.poll_seconds, metrics=self.metrics,
            fallback=default_models(options) if options.follow_home_config else None,
            on_poll=self._publish if worker is not None else None,
        )
        # A worker answers model status for all of them (serving/worker_state.py).
        self.api = Api(self.registry, options.max_concurrent_requests,
                       ServerWideStatus(self.registry, worker.directory) if worker is not None else None)
        self._listening = False
        self.rest = None
        self.grpc = None
        self.rest_port = self.grpc_port = 0
        self._rest_thread: Optional[threading.Thread] = None
        self.stopped = threading.Event()

    def _load(self, model_name: str, version: int, path: Path):
        from serving.batching import attach_batchers
        from serving.servable import load_servable

        servable = load_servable(model_name, version, path, single_threaded=self.options.single_threaded_executor)
        if self.options.enable_batching:
            attach_batchers(servable, self.options.max_batch_size, self.options.num_batch_threads,
                            on_batch=lambda requests: self.metrics.batch_ran(model_name, requests))
        return servable

    def _publish(self) -> None:
        """A worker's versions, for its siblings' status answers and the parent (after every scan)."""
        self._state.write(self.registry, self._listening)

    def start(self) -> None:
        opts, worker = self.options, self.worker
        if worker is not None:
            # Load first: the kernel hands every listening worker its share of new connections, and
            # a worker restarted beside serving siblings would answer its share 503 while it loads.
            self._publish()
            self.registry.poll_once()
            self.registry.poll_once()  # a version pushed during the first load: loaded before listening too
            from serving.worker_state import memory_of, mib

            rss, private = memory_of(os.getpid())
            log.info("worker %d of %d: memory with the model(s) loaded: RSS %s, private %s", worker.index,
                     worker.count, mib(rss), mib(private))
        if opts.rest_port:
            from serving.rest import RestServer

            self.rest = RestServer((opts.host, opts.rest_port), self.api, self.metrics, opts.max_body_bytes,
                                   opts.request_timeout, opts.max_connections, reuse_port=worker is not None,
                                   worker_id=str(os.getpid()) if worker is not None else "")
            self.rest_port = self.rest.server_address[1]
            self._rest_thread = threading.Thread(
                target=self.rest.serve_forever, kwargs={"poll_interval": 0.2}, name="rest-accept", daemon=True
            )
            self._rest_thread.start()
        if opts.grpc_port:
            from serving.grpc_api import make_grpc_server

            host = f"[{opts.host}]" if ":" in opts.host else opts.host
            self.grpc, self.grpc_port = make_grpc_server(
                self.api, self.metrics, f"{host}:{opts.grpc_port}", opts.max_body_bytes, opts.grpc_workers,
                reuse_port=worker is not None,
            )
            self.grpc.start()
        if worker is not None:
            self._listening = True
            self._publish()
        if opts.follow_home_config:
            log.info("following %s (%s; reread when it is written, changed or removed)", opts.model_config_file,
                     "in force" if opts.model_config_file.is_file() else "absent: the defaults serve")
        for store in self.registry.models.values():
            config = store.config
            log.info("model %s: watching %s (policy %s%s)", config.name, config.base_path, config.policy.describe(),
                     f", labels {dict(config.labels)}" if config.labels else "")
        log.info("listening: REST %s, gRPC %s (body limit %d bytes, request timeout %.0fs, batching %s)",
                 f"http://{opts.host}:{self.rest_port}" if self.rest else "off",
                 f"{opts.host}:{self.grpc_port}" if self.grpc else "off",
                 opts.max_body_bytes, opts.request_timeout,
                 f"up to {opts.max_batch_size} rows" if opts.enable_batching else "off")
        self.registry.start()

    def stop(self) -> bool:
        """Graceful: stop accepting, finish in-flight requests, unload. True if all finished in time."""
        grace = self.options.grace_seconds
        started = time.monotonic()
        log.info("shutting down: no new connections; finishing in-flight requests (up to %.0fs)", grace)
        self.registry.stop()
        grpc_done = self.grpc.stop(grace) if self.grpc is not None else None
        clean = True
        if self.rest is not None:
            clean = self.rest.drain(grace)
        if grpc_done is not None:
            clean = grpc_done.wait(max(0.1, grace - (time.monotonic() - started))) and clean
        for store in self.registry.models.values():
            store.unload_all()
        log.info("stopped in %.1fs%s", time.monotonic() - started, "" if clean else " (some requests cut off)")
        self.stopped.set()
        return clean


def configure_tensorflow_threads(options: ServerOptions) -> str:
    """Applies the thread-pool sizes before any model loads (TensorFlow fixes them at its first op)."""
    import tensorflow as tf

    if options.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(options.tensorflow_inter_op_parallelism)
    if options.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(options.tensorflow_intra_op_parallelism)
    inter = tf.config.threading.get_inter_op_parallelism_threads()
    intra = tf.config.threading.get_intra_op_parallelism_threads()
    return f"inter-op {inter or 'auto'}, intra-op {intra or 'auto'}"


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (logged once)."""
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            return
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run(options: ServerOptions) -> int:
    setup_logging()
    configs = model_configs(options)  # a broken models.config fails here, before TensorFlow is imported
    log.info("TensorFlow threads: %s", configure_tensorflow_threads(options))
    server = ModelServer(options, configs)
    stop = stop_on_signals()
    server.start()
    registration = HomeRegistration(options, server.rest_port, server.grpc_port,
                                    lambda: [store.config.base_path for store in list(server.registry.models.values())])
    try:
        registration.update()
        while not stop.wait(1.0):
            registration.update()  # a models.config edit, or the registered server gone
        server.stop()
    finally:
        registration.forget()
    return 0


def run_worker(options: ServerOptions, worker) -> int:
    """One worker process of `mlops serve --workers N`, forked by serving/supervisor.py (`worker`: its
    serving.worker_state.WorkerRole). The parent keeps the home's record; a worker stops with it."""
    setup_logging(f"serving[worker {worker.index} pid {os.getpid()}]")
    log.info("TensorFlow threads: %s", configure_tensorflow_threads(options))
    server = ModelServer(options, worker=worker)
    stop = stop_on_signals()
    server.start()
    while not stop.wait(1.0):
        if os.getppid() != worker.parent_pid:  # the parent was killed (SIGKILL): no orphans
            log.warning("the parent process %d is gone: stopping", worker.parent_pid)
            break
    server.stop()
    return 0


class HomeRegistration:
    """Keeps this server's record as the home's model server in step with what it serves.

    A server of the home's model directory (the Pusher's) with a REST port is the home's model server
    when no other one runs: `mlops rollback` then waits for it to serve the restored version, and
    retention keeps what it loads and what its models.config labels. `make up` records its server
    before it starts. Checked at start-up and then every second, so that a models.config edit that
    drops (or brings back) the home's directory, or the registered server stopping, takes effect
    while this one runs. Logs only the changes."""

    def __init__(self, options: ServerOptions, rest_port: int, grpc_port: int, served_bases: Callable[[], List[Path]]):
        from serving.home import model_dir

        self.options, self.rest_port, self.grpc_port = options, rest_port, grpc_port
        self.served_bases = served_bases  # the base paths of the models the server serves now
        self.pusher_dir = model_dir(options.home).resolve()
        self._said: Optional[str] = None  # the last state logged
        self._self_registered = False  # this process wrote the record as a hand-started server
        self._failed = False

    def update(self) -> None:
        try:
            self._update()
            self._failed = False
        except Exception as err:  # noqa: BLE001 -- a full disk or an odd record must not stop the server
            if not self._failed:
                log.warning("cannot update this home's model server record (will retry every second): %s: %s",
                            type(err).__name__, err)
            self._failed = True

    def _say(self, state: str, level: int, message: str, *args) -> None:
        if state != self._said:
            log.log(level, message, *args)
        self._said = state

    def _update(self) -> None:
        from serving.home import (HOST, STARTED_BY_HAND, STARTED_BY_UP, record_model_server, running_model_server,
                                  running_pid, unregister_model_server)

        home, pid = self.options.home, os.getpid()
        bases = [base.resolve() for base in self.served_bases()]
        serves_home = self.pusher_dir in bases
        recorded = running_pid(home)
        if recorded == pid:
            current = running_model_server(home)
            # `make up` records the pid before its server starts; `make down` stops only such a server.
            by_up = not self._self_registered and (current is None or current.started_by == STARTED_BY_UP)
            if not serves_home and not by_up:
                unregister_model_server(home, pid)
                self._self_registered = False
                self._say("dropped", logging.WARNING,
                          "no longer serves the home's model directory %s (its models.config changed): not the "
                          "home's model server any more; rollbacks and retention no longer count on it",
                          self.pusher_dir)
                return
            base = self.pusher_dir if serves_home else (bases[0] if bases else None)
            config = self.options.model_config_file
            if base is not None and (current is None or current.base_path.resolve() != base
                                     or current.config_file != (Path(config) if config else None)
                                     or current.rest_url != f"http://{HOST}:{self.rest_port}"):
                # `make up` recorded this server for the home's directory, but its models.config serves
                # others: the record says what it serves, so that no rollback waits for it in vain.
                record_model_server(home, pid, self.rest_port, self.grpc_port, base,
                                    self.options.model_config_file, STARTED_BY_UP if by_up else STARTED_BY_HAND)
            if serves_home:
                self._say("registered", logging.INFO,
                          "registered as the model server of %s: `mlops rollback` waits for it, retention keeps "
                          "what it loads", home)
            else:
                self._say("elsewhere", logging.WARNING,
                          "the home's model directory %s is not in %s: rollbacks and retention will not count "
                          "on this server", self.pusher_dir, self.options.model_config_file)
            return
        if not serves_home:
            self._say("other", logging.DEBUG, "does not serve the home's model directory %s", self.pusher_dir)
            return
        if not self.rest_port:
            self._say("no-rest", logging.INFO,
                      "serves the home's model directory but has no REST port, so it is not the home's model "
                      "server: `mlops rollback` and `make status` ask that one over REST (add --rest-port)")
            return
        if recorded:  # another live server is the home's (a stale pid file reads as None)
            self._self_registered = False
            self._say(f"second:{recorded}", logging.INFO,
                      "not this home's registered model server: pid %d is (`make status` shows it); rollbacks "
                      "wait for that one, and this one takes over if it stops", recorded)
            return
        record_model_server(home, pid, self.rest_port, self.grpc_port, self.pusher_dir,
                            self.options.model_config_file, STARTED_BY_HAND)
        self._self_registered = True
        self._say("registered", logging.INFO,
                  "registered as the model server of %s: `mlops rollback` waits for it, retention keeps what it "
                  "loads", home)

    def forget(self) -> None:
        """At shutdown: the home has no model server any more, if this one was it."""
        from serving.home import unregister_model_server

        with contextlib.suppress(OSError):
            unregister_model_server(self.options.home, os.getpid())


__all__: List[str] = ["ModelServer", "ServerOptions", "run", "run_worker"]
