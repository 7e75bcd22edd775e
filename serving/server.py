"""`mlops serve`: the model server process (TF Serving's REST + gRPC API over serving/models/<name>/).

Start-up order: bind the REST and gRPC ports (answers 503 while nothing is loaded), start the
watcher thread (loads the newest version), then wait for SIGTERM/SIGINT. On a signal: stop
accepting connections, let in-flight requests finish (up to --grace-seconds), exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

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


def setup_logging() -> None:
    if getattr(log, "_mlops_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s serving: %(message)s"))
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
    """REST server + gRPC server + model watcher, started and stopped together."""

    def __init__(self, options: ServerOptions, configs=None):
        from serving.api import Api
        from serving.metrics import ServingMetrics
        from serving.store import Registry, version_stamp

        self.options = options
        configs = model_configs(options) if configs is None else configs
        self.metrics = ServingMetrics(c.name for c in configs)
        self.registry = Registry(
            configs, loader=self._load, stamp=version_stamp, config_path=options.model_config_file,
            home=options.home, poll_seconds=options.poll_seconds, metrics=self.metrics,
            fallback=default_models(options) if options.follow_home_config else None,
        )
        self.api = Api(self.registry, options.max_concurrent_requests)
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

    def start(self) -> None:
        opts = self.options
        if opts.rest_port:
            from serving.rest import RestServer

            self.rest = RestServer((opts.host, opts.rest_port), self.api, self.metrics, opts.max_body_bytes,
                                   opts.request_timeout, opts.max_connections)
            self.rest_port = self.rest.server_address[1]
            self._rest_thread = threading.Thread(
                target=self.rest.serve_forever, kwargs={"poll_interval": 0.2}, name="rest-accept", daemon=True
            )
            self._rest_thread.start()
        if opts.grpc_port:
            from serving.grpc_api import make_grpc_server

            host = f"[{opts.host}]" if ":" in opts.host else opts.host
            self.grpc, self.grpc_port = make_grpc_server(
                self.api, self.metrics, f"{host}:{opts.grpc_port}", opts.max_body_bytes, opts.grpc_workers
            )
            self.grpc.start()
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


def run(options: ServerOptions) -> int:
    setup_logging()
    configs = model_configs(options)  # a broken models.config fails here, before TensorFlow is imported
    log.info("TensorFlow threads: %s", configure_tensorflow_threads(options))
    server = ModelServer(options, configs)
    stop = threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set():
            return
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    registration = HomeRegistration(options, server)
    try:
        registration.update()
        while not stop.wait(1.0):
            registration.update()  # a models.config edit, or the registered server gone
        server.stop()
    finally:
        registration.forget()
    return 0


class HomeRegistration:
    """Keeps this server's record as the home's model server in step with what it serves.

    A server of the home's model directory (the Pusher's) with a REST port is the home's model server
    when no other one runs: `mlops rollback` then waits for it to serve the restored version, and
    retention keeps what it loads and what its models.config labels. `make up` records its server
    before it starts. Checked at start-up and then every second, so that a models.config edit that
    drops (or brings back) the home's directory, or the registered server stopping, takes effect
    while this one runs. Logs only the changes."""

    def __init__(self, options: ServerOptions, server: ModelServer):
        from pipelines.config import ProjectPaths

        self.options, self.server = options, server
        self.pusher_dir = ProjectPaths(options.home).serving_model_dir.resolve()
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
        from pipelines.services import (HOST, MODEL_SERVER, STARTED_BY_HAND, STARTED_BY_UP, record_model_server,
                                        running_model_server, running_pid, unregister_model_server)

        home, pid, server = self.options.home, os.getpid(), self.server
        bases = [store.config.base_path.resolve() for store in list(server.registry.models.values())]
        serves_home = self.pusher_dir in bases
        recorded = running_pid(home, MODEL_SERVER)
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
                                     or current.rest_url != f"http://{HOST}:{server.rest_port}"):
                # `make up` recorded this server for the home's directory, but its models.config serves
                # others: the record says what it serves, so that no rollback waits for it in vain.
                record_model_server(home, pid, server.rest_port, server.grpc_port, base,
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
        if not server.rest_port:
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
        record_model_server(home, pid, server.rest_port, server.grpc_port, self.pusher_dir,
                            self.options.model_config_file, STARTED_BY_HAND)
        self._self_registered = True
        self._say("registered", logging.INFO,
                  "registered as the model server of %s: `mlops rollback` waits for it, retention keeps what it "
                  "loads", home)

    def forget(self) -> None:
        """At shutdown: the home has no model server any more, if this one was it."""
        from pipelines.services import unregister_model_server

        with contextlib.suppress(OSError):
            unregister_model_server(self.options.home, os.getpid())


def options_from_args(args) -> ServerOptions:
    from pipelines.config import ProjectPaths
    from serving.config import default_config_path, resolve_config_path

    home = ProjectPaths.from_env(args.home).home
    base = None
    if args.model_base_path:
        base = Path(args.model_base_path)
        if not base.is_absolute():
            base = (Path.cwd() / base) if (Path.cwd() / base).exists() else home / base
    on_defaults = not args.model_config_file and not args.model_base_path
    config_file = (default_config_path(home) if on_defaults
                   else resolve_config_path(home, args.model_config_file) if args.model_config_file else None)
    return ServerOptions(
        home=home, model_name=args.model_name, model_base_path=base.resolve() if base else None,
        model_config_file=config_file, follow_home_config=on_defaults, host=args.host, rest_port=args.rest_port,
        grpc_port=args.grpc_port,
        poll_seconds=args.poll_seconds, max_body_bytes=args.max_body_bytes, request_timeout=args.request_timeout,
        grace_seconds=args.grace_seconds, max_concurrent_requests=args.max_concurrent_requests,
        enable_batching=args.enable_batching, max_batch_size=args.max_batch_size,
        num_batch_threads=args.num_batch_threads,
        tensorflow_inter_op_parallelism=args.tensorflow_inter_op_parallelism,
        tensorflow_intra_op_parallelism=args.tensorflow_intra_op_parallelism,
        single_threaded_executor=args.single_threaded_executor,
    )


def add_arguments(parser) -> None:
    """Options of `mlops serve` (TF Serving's flags, spelled with dashes)."""
    parser.add_argument("--model-name", default="taxi", help="model name in URLs and gRPC requests (default: taxi)")
    parser.add_argument("--model-base-path",
                        help="directory of integer version subdirectories (default: <home>/serving/models/<name>)")
    parser.add_argument(
        "--model-config-file",
        help="TF Serving models.config (ModelServerConfig text proto): models, version policy, labels; reread "
             "when it changes (default, when no --model-base-path is given: <home>/serving/models.config whenever it "
             "exists, also when it is written, edited or removed while the server runs)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, local only)")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port (default: 8501; 0: no REST)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (default: 8500; 0: no gRPC)")
    parser.add_argument("--poll-seconds", type=float, default=1.0, help="model directory scan interval (default: 1)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body; larger ones get 413 (default: 8 MiB)")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT,
                        help="seconds to receive a request (and idle keep-alive limit) (default: 30)")
    parser.add_argument("--grace-seconds", type=float, default=10.0,
                        help="on SIGTERM, how long in-flight requests may take to finish (default: 10)")
    parser.add_argument("--max-concurrent-requests", type=int, default=0,
                        help="requests decoded and encoded (JSON, tf.Examples) at once; others queue (default: "
                             "half the CPUs, at least 1: more only contend for Python's GIL and slow down loading "
                             "new versions)")
    parser.add_argument("--enable-batching", action=argparse.BooleanOptionalAction, default=True,
                        help="run concurrent requests to a signature as one model call, without waiting for a "
                             "timer (TF Serving's --enable_batching with batch_timeout_micros 0)")
    parser.add_argument("--max-batch-size", type=int, default=256,
                        help="most rows (instances, examples) in one batched model call; a larger request runs "
                             "alone (default: 256)")
    parser.add_argument("--num-batch-threads", type=int, default=1,
                        help="batches of one signature computed at the same time (default: 1)")
    parser.add_argument("--tensorflow-inter-op-parallelism", type=int, default=0,
                        help="threads that run independent ops of a model call in parallel (TF Serving's "
                             "--tensorflow_inter_op_parallelism; default: 0, TensorFlow's choice)")
    parser.add_argument("--tensorflow-intra-op-parallelism", type=int, default=0,
                        help="threads one op (a large matmul) may use (TF Serving's "
                             "--tensorflow_intra_op_parallelism; default: 0, TensorFlow's choice)")
    parser.add_argument("--single-threaded-executor", action=argparse.BooleanOptionalAction, default=True,
                        help="run each model call's ops in the request's own thread (TensorFlow's "
                             "SINGLE_THREADED_EXECUTOR) instead of handing every op to the inter-op pool: less CPU "
                             "per call; used for a signature only when its warm-up answers the same with it")


def main(args) -> int:
    from pipelines.errors import ConfigError
    from serving.config import ConfigFileError

    if not args.rest_port and not args.grpc_port:
        raise ConfigError("both --rest-port and --grpc-port are 0", "enable at least one of them")
    for flag, value, least in (("--max-batch-size", args.max_batch_size, 1),
                               ("--num-batch-threads", args.num_batch_threads, 1),
                               ("--tensorflow-inter-op-parallelism", args.tensorflow_inter_op_parallelism, 0),
                               ("--tensorflow-intra-op-parallelism", args.tensorflow_intra_op_parallelism, 0)):
        if value < least:
            raise ConfigError(f"{flag} {value} is below {least}",
                              f"pass {flag} {least} or more" + (" (0: TensorFlow's choice)" if least == 0 else ""))
    try:
        options = options_from_args(args)
        code = run(options)
    except ConfigFileError as err:
        raise ConfigError(str(err), "fix the models.config file (TF Serving's ModelServerConfig text format)") from err
    except OSError as err:
        if "Address already in use" in str(err) or getattr(err, "errno", None) == 98:
            raise ConfigError(f"cannot listen: {err}", "pick free ports with --rest-port/--grpc-port") from err
        raise
    # Everything is drained and unloaded. Skip the interpreter's teardown of TensorFlow and gRPC,
    # which takes seconds (measured: 3.3 s) and would delay the exit a supervisor waits for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__: List[str] = ["ModelServer", "ServerOptions", "add_arguments", "main", "run"]
