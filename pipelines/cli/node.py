"""`mlops node run|list`, `mlops worker`, `mlops dags manifest`: what each Airflow task runs, the warm
worker it forks from, and the manifest the DAG files are built from."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from pipelines.cli.common import (COLD_HELP, add_run_options, in_warm_worker, one_line, pipeline_config,
                                  print_summary, project_config, project_paths)
from pipelines.errors import EXIT_BLOCKED, EXIT_FAILED, ConfigError, DataError

def cmd_node_run(args) -> int:
    code = in_warm_worker(args, "node")
    if code is not None:
        return code
    from pipelines.node_runner import run_one_node

    config = pipeline_config(args).check()
    try:
        result = run_one_node(config, args.run_id, args.node)
    except KeyError as err:
        raise ConfigError(str(err.args[0]), "run `mlops node list` for the node ids of this pipeline") from err
    except Exception as err:  # noqa: BLE001 -- the reason goes on the last line, for Airflow's log
        if args.verbose:
            traceback.print_exc()
        sys.stdout.flush()
        blocked = isinstance(err, DataError)
        verb = "blocked the run" if blocked else "failed"
        print(_lineage_hint(args, config, None), flush=True)
        print(f"node {args.node} {verb} for span {config.span_date} (run {args.run_id}): {one_line(err)}", file=sys.stderr)
        return EXIT_BLOCKED if blocked else EXIT_FAILED
    print(f"node {args.node}: {result.status} in {result.seconds:.1f}s"
          + (f" (execution {result.execution_id})" if result.execution_id else ""))
    if args.summary:
        print_summary(config, args.run_id, as_json=False)
    print(_lineage_hint(args, config, result.execution_id))
    return 0


def _lineage_hint(args, config, execution_id) -> str:
    """The execution this task recorded (or its failed one) and the `mlops lineage` command that explains it."""
    from pipelines.run_context import latest_execution_id, lineage_hint

    if execution_id is None:
        execution_id = latest_execution_id(config.metadata.to_proto(), config.pipeline_name, args.run_id, args.node)
    return lineage_hint(project_paths(args).home, args.run_id, execution_id)


def cmd_node_list(args) -> int:
    from pipelines.node_runner import compile_for, upstream_ids

    for node_id, upstream in upstream_ids(compile_for(project_config(args), "list")).items():
        print(f"{node_id}\t<- {', '.join(upstream) or '(start)'}")
    return 0


def cmd_worker(args) -> int:
    from pipelines.worker import client as worker

    paths = project_paths(args)
    socket = worker.socket_path(paths.home)
    if args.worker_command == "start":
        started = worker.ensure_worker(paths.home, paths.var / "log", idle_timeout=args.idle_timeout)
        if started is None:
            raise ConfigError("the warm worker did not start", f"read {paths.var / 'log' / 'worker.log'}")
    answer = worker.request(socket, "stop" if args.worker_command == "stop" else "ping")
    if answer is None:
        print(f"no warm worker for {paths.home} (nodes start one when they need it)")
    elif args.worker_command == "stop":
        print(f"warm worker {answer['pid']} stops after its {answer['running']} running node(s)")
    else:
        print(f"warm worker {answer['pid']} on {answer['socket']}: {answer['running']} node(s) running")
    return 0


def cmd_dags_manifest(args) -> int:
    from pipelines import manifest

    built = manifest.build(project_config(args))
    path = Path(args.output) if args.output else manifest.DEFAULT_PATH
    if args.check:
        problem = manifest.compare(built, path)
        if problem:
            raise ConfigError(problem, "regenerate it with `mlops dags manifest` and commit the result")
        print(f"{path} matches the pipeline ({len(built['nodes'])} nodes)")
        return 0
    changed = manifest.write(built, path)
    print(f"{'wrote' if changed else 'unchanged:'} {path} ({len(built['nodes'])} nodes)")
    return 0


def register(commands) -> None:
    node = commands.add_parser("node", help="run or list single pipeline nodes (what each Airflow task does)")
    node_commands = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    node_run = node_commands.add_parser(
        "run",
        help="run one node of a pipeline run with TFX's Launcher (caching, resolvers, ML Metadata as in TFX)",
        description="Run one node of the compiled pipeline for one span. All nodes of one pipeline run "
        "must get the same --run-id and options (the nightly DAG passes the Airflow run id). Exit code 0 "
        "only when the node succeeded (ran or was served from cache); otherwise the reason on the last "
        "line and exit 1 (node failed), 2 (configuration error) or 3 (data failed validation: the run "
        "is blocked and must not be retried).",
    )
    node_run.add_argument("--node", required=True, help="node id, e.g. Trainer (see `mlops node list`)")
    node_run.add_argument("--run-id", required=True, help="pipeline run id shared by all nodes of the run")
    add_run_options(node_run)
    node_run.add_argument("--summary", action="store_true", help="print the run summary after the node")
    node_run.add_argument(
        "--cold", action="store_true", help=COLD_HELP,
    )
    node_run.set_defaults(handler=cmd_node_run)
    node_list = node_commands.add_parser("list", help="node ids in run order, with their upstream nodes")
    node_list.set_defaults(handler=cmd_node_list)

    worker_parser = commands.add_parser(
        "worker",
        help="the warm worker that runs nodes without paying TFX's import cost per task",
        description="`mlops node run` forks each node from a warm worker that imported TensorFlow and "
        "TFX once (started on first use, exits after --idle-timeout seconds idle; MLOPS_WARM_WORKER=0 "
        "disables it). These commands show, start or stop the worker of a project home.",
    )
    worker_parser.add_argument("worker_command", choices=("status", "start", "stop"), help="what to do")
    worker_parser.add_argument("--idle-timeout", type=float, default=900.0, help="seconds idle before it exits (start)")
    worker_parser.set_defaults(handler=cmd_worker)

    dags = commands.add_parser("dags", help="files the Airflow DAGs are built from")
    dags_commands = dags.add_subparsers(dest="dags_command", metavar="ACTION", required=True)
    manifest = dags_commands.add_parser(
        "manifest",
        help="write dags/taxi_manifest.json (node ids + upstream ids) from the compiled pipeline",
        description="The DAG files import only Airflow, so they read the pipeline's shape from this "
        "manifest. Regenerate it whenever the pipeline's nodes or wiring change; --check fails when "
        "the committed manifest disagrees with the pipeline.",
    )
    manifest.add_argument("--check", action="store_true", help="compare instead of writing; exit 2 on a difference")
    manifest.add_argument("--output", help="manifest path (default: dags/taxi_manifest.json in the repository)")
    manifest.set_defaults(handler=cmd_dags_manifest)
