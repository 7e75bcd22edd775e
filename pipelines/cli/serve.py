"""`mlops serve`: the model server (TF Serving's REST and gRPC API) over the home's model directory."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipelines.cli.common import project_paths
from pipelines.errors import ConfigError


def options_from_args(args):
    """The server's options from `mlops serve`'s arguments (paths resolved against the home)."""
    from serving.config import default_config_path, resolve_config_path
    from serving.server import ServerOptions

    home = project_paths(args).home
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
        single_threaded_executor=args.single_threaded_executor, workers=args.workers,
    )


def _add_arguments(parser) -> None:
    """Options of `mlops serve` (TF Serving's flags, spelled with dashes)."""
    from serving import server as server_defaults  # standard library only until the server runs

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
    parser.add_argument("--max-body-bytes", type=int, default=server_defaults.DEFAULT_MAX_BODY_BYTES,
                        help="largest request body; larger ones get 413 (default: 8 MiB)")
    parser.add_argument("--request-timeout", type=float, default=server_defaults.DEFAULT_REQUEST_TIMEOUT,
                        help="seconds to receive a request (and idle keep-alive limit) (default: 30)")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing the REST and gRPC ports (SO_REUSEPORT), each with its own "
                             "copy of the models, under one supervising parent that restarts a worker that dies "
                             "(default: 1, a single process; more than the CPU cores only adds memory)")
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


def cmd_serve(args) -> int:
    from serving import server, supervisor
    from serving.config import ConfigFileError

    if not args.rest_port and not args.grpc_port:
        raise ConfigError("both --rest-port and --grpc-port are 0", "enable at least one of them")
    for flag, value, least in (("--workers", args.workers, 1),
                               ("--max-batch-size", args.max_batch_size, 1),
                               ("--num-batch-threads", args.num_batch_threads, 1),
                               ("--tensorflow-inter-op-parallelism", args.tensorflow_inter_op_parallelism, 0),
                               ("--tensorflow-intra-op-parallelism", args.tensorflow_intra_op_parallelism, 0)):
        if value < least:
            raise ConfigError(f"{flag} {value} is below {least}",
                              f"pass {flag} {least} or more" + (" (0: TensorFlow's choice)" if least == 0 else ""))
    try:
        options = options_from_args(args)
        code = (supervisor.run if options.workers > 1 else server.run)(options)
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


def register(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="model server: TF Serving's REST and gRPC API over serving/models/<name>/ with hot reload",
        description="Serves the newest loadable version of serving/models/<name>/ (or what a models.config "
        "says) with TF Serving's REST API (/v1/models/...) and gRPC API, reloading within about a second "
        "when a version appears; broken versions are skipped. Prometheus metrics at "
        "/monitoring/prometheus/metrics. SIGTERM: finish in-flight requests, exit 0. A server of this "
        "home's model directory with a REST port is the home's model server while no other one runs "
        "(`make status` shows it; `mlops rollback` waits for it to serve the restored version; retention "
        "keeps what it loads); `make up` starts one.",
    )
    _add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)
