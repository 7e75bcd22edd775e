"""`mlops`: the command line of the nightly TFX pipeline.

Importing this module imports neither TensorFlow nor TFX: each command imports what it needs
when it runs, so `mlops --help` answers at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import traceback
import warnings
from pathlib import Path
from typing import List, Optional

from pipelines.errors import ConfigError, DataError, MlopsError

# Exit codes of `mlops node run` (the nightly DAG retries only 1 and signals).
EXIT_FAILED = 1  # the node failed; a retry may succeed
EXIT_CONFIG = 2  # bad configuration or arguments: fix them first
EXIT_BLOCKED = 3  # the data failed validation: the run stops, retrying would block again
COLD_HELP = ("run in this process instead of a fork of the home's warm worker (which has TFX imported; "
             "same as MLOPS_WARM_WORKER=0)")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-22") from err


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: use 0 to keep every version")
    return value


def _yesterday() -> dt.date:
    return dt.date.today() - dt.timedelta(days=1)


def cmd_data_seed(args) -> int:
    from pipelines.config import ProjectPaths
    from pipelines.data import SeedPlan, seed

    paths = ProjectPaths.from_env(args.home)
    plan = SeedPlan(end=args.end or _yesterday(), days=args.days, rows_per_day=args.rows_per_day, seed=args.seed)
    seed(paths.data_root, plan, overwrite=args.overwrite)
    return 0


def cmd_data_make_span(args) -> int:
    from pipelines.config import ProjectPaths
    from pipelines.data import DEFAULT_SEVERITY, FaultSpec, make_span

    paths = ProjectPaths.from_env(args.home)
    fault = FaultSpec(args.fault, args.column, args.severity)
    path = make_span(paths.data_root, args.date, fault, rows=args.rows, seed_value=args.seed, overwrite=args.overwrite)
    target = f" on {fault.target}" if fault.target and fault.kind != "none" else ""
    severity = f" (severity {fault.amount:g})" if fault.kind in DEFAULT_SEVERITY or args.severity is not None else ""
    print(f"span {args.date}: wrote {path} with fault {fault.kind}{target}{severity}")
    return 0


def _pipeline_config(args):
    import dataclasses

    from pipelines.config import (DEFAULT_KEEP_VERSIONS, DataGateConfig, GateConfig, PipelineConfig, ProjectPaths,
                                  span_fingerprint)
    from pipelines.data import latest_span

    paths = ProjectPaths.from_env(args.home)
    span_date = args.date or latest_span(paths.data_root)
    data_gates = DataGateConfig.load(paths.gates_path)
    if getattr(args, "warn_drift", None):
        warn = tuple(dict.fromkeys(data_gates.warn_features + tuple(args.warn_drift)))
        data_gates = dataclasses.replace(data_gates, warn_features=warn)
    overrides = dict(
        train_steps=args.train_steps,
        eval_steps=args.eval_steps,
        strategy=args.strategy,
        gates=GateConfig(
            auc_floor=args.auc_floor,
            min_relative_improvement=args.min_improvement,
            slice_margin=args.slice_margin,
        ),
        beam_mode=args.beam_mode,
        enable_cache=not args.no_cache,
        keep_versions=getattr(args, "keep_versions", DEFAULT_KEEP_VERSIONS),
        data_gates=data_gates,
        span_fingerprint=span_fingerprint(paths.data_root, span_date),
    )
    config = PipelineConfig.for_project(paths, span_date, **overrides)
    if args.schema:
        config = dataclasses.replace(config, schema_path=args.schema)
    elif paths.schema_path.is_file():
        from pipelines.schema_history import snapshot_for_run

        # The run imports a content-addressed copy: the schema it used stays on disk (30 days of
        # history), and a changed schema is a new path, so ImportSchemaGen's cache cannot serve
        # yesterday's schema.
        config = dataclasses.replace(config, schema_path=str(snapshot_for_run(paths)))
    return config


def cmd_run(args) -> int:
    config = _pipeline_config(args).check()  # configuration errors answer at once, cold
    code = _in_warm_worker(args, "run")
    if code is not None:
        return code
    from pipelines.runner import RunFailed, run_span

    try:
        summary = run_span(config)
    except RunFailed as failed:
        print("\n".join(failed.summary.lines()))
        print(f"run stopped at {failed.node_id}: {failed.cause}", file=sys.stderr)
        return EXIT_BLOCKED if isinstance(failed.cause, DataError) else 1
    print(summary.to_json() if args.json else "\n".join(summary.lines()))
    return 0


def _in_warm_worker(args, what: str) -> Optional[int]:
    """Runs this very command in the home's warm worker (TFX already imported there, ~0.3 s
    instead of ~10 s of start-up); its exit code, or None to run it here, cold."""
    from pipelines import worker

    if not worker.enabled() or getattr(args, "cold", False):
        return None
    paths = _paths(args)
    socket = worker.ensure_worker(paths.home, paths.var / "log")
    if socket is not None:
        code = worker.run_remote(socket, args.argv)
        if code is not None:
            return code
    print(f"running this {what} in a cold process instead", file=sys.stderr, flush=True)
    return None


def cmd_node_run(args) -> int:
    code = _in_warm_worker(args, "node")
    if code is not None:
        return code
    from pipelines.node_runner import run_one_node

    config = _pipeline_config(args).check()
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
        print(f"node {args.node} {verb} for span {config.span_date} (run {args.run_id}): {_one_line(err)}", file=sys.stderr)
        return EXIT_BLOCKED if blocked else 1
    print(f"node {args.node}: {result.status} in {result.seconds:.1f}s"
          + (f" (execution {result.execution_id})" if result.execution_id else ""))
    if args.summary:
        _print_summary(config, args.run_id, as_json=False)
    return 0


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if not isinstance(err, MlopsError) else text


def _print_summary(config, run_id: str, as_json: bool) -> None:
    from pipelines.summary import read_run_summary

    summary = read_run_summary(config.metadata.to_proto(), run_id)
    print(summary.to_json() if as_json else "\n".join(summary.lines()))


def _paths(args):
    from pipelines.config import ProjectPaths

    return ProjectPaths.from_env(args.home)


def cmd_worker(args) -> int:
    from pipelines import worker

    paths = _paths(args)
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


def cmd_node_list(args) -> int:
    from pipelines.node_runner import compile_for, upstream_ids

    for node_id, upstream in upstream_ids(compile_for(_project_config(args), "list")).items():
        print(f"{node_id}\t<- {', '.join(upstream) or '(start)'}")
    return 0


def cmd_dags_manifest(args) -> int:
    from pipelines import manifest

    built = manifest.build(_project_config(args))
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


def cmd_validate(args) -> int:
    config = _pipeline_config(args).check()
    code = _in_warm_worker(args, "validation")
    if code is not None:
        return code
    from pipelines.validate import validate_span

    emit = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    report = validate_span(config, progress=emit if not args.quiet else (lambda _: None))
    print(report.to_json() if args.json else "\n".join(report.lines()), flush=True)
    return EXIT_BLOCKED if report.blocked else 0


def cmd_summary(args) -> int:
    from pipelines.summary import latest_run_id, read_run_summary

    config = _require_metadata(_project_config(args))
    connection = config.metadata.to_proto()
    run_id = args.run_id or latest_run_id(connection)
    if not run_id:
        raise ConfigError("ML Metadata holds no pipeline run yet", "run the pipeline first: `make run`")
    summary = read_run_summary(connection, run_id)
    if not summary.node_states:
        raise ConfigError(f"no pipeline run {run_id!r} in ML Metadata", "omit --run-id for the latest run")
    print(summary.to_json() if args.json else "\n".join(summary.lines()))
    return 0


def cmd_airflow(args) -> int:
    from pipelines import airflow_env

    paths = _paths(args)
    given = _given_options(args)
    _refuse_options_the_dag_ignores(given)
    _refuse_options_of_other_subcommands(args.airflow_command, given)
    if args.airflow_command in ("up", "down", "status", "pause", "unpause"):
        from pipelines import services  # `make up` / `make down`: the long-running services

        return services.main(paths.home, args)
    if args.airflow_command == "backfill":
        return _airflow_backfill(args, paths)
    airflow_env.init(paths.home, force=args.airflow_command == "init")
    if args.airflow_command == "init":
        print(f"Airflow home {airflow_env.airflow_home(paths.home)} ready (pool {airflow_env.POOL}: 1 slot)")
        return 0
    config = _pipeline_config(args).check()  # fail here, not in the first Airflow task
    span = config.span_date.isoformat()
    conf = {
        "date": span, "train_steps": config.train_steps, "eval_steps": config.eval_steps,
        "auc_floor": config.gates.auc_floor, "min_improvement": config.gates.min_relative_improvement,
        "slice_margin": config.gates.slice_margin, "keep_versions": config.keep_versions,
    }
    log_path = paths.var / "log" / f"airflow-dags-test-{span}.log"
    print(f"airflow dags test {airflow_env.NIGHTLY_DAG} {span} (full Airflow log: {log_path})", flush=True)
    code, run_id = airflow_env.dags_test(paths.home, span, conf, log_path, emit=lambda l: print(l, flush=True))
    if run_id:
        print()
        _print_summary(config, f"{airflow_env.NIGHTLY_DAG}__{run_id}", as_json=False)
    if code:
        print(f"the DAG run failed (exit {code}); see the failed task above and {log_path}", file=sys.stderr)
    return 1 if code else 0


# Run options nightly_retrain has no param for: its tasks use the defaults and read schemas/taxi/.
_NOT_DAG_PARAMS = ("strategy", "beam_mode", "schema", "warn_drift", "no_cache")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _refuse_options_the_dag_ignores(given: List[str]) -> None:
    ignored = [_flag(name) for name in _NOT_DAG_PARAMS if name in given]
    if ignored:
        raise ConfigError(
            f"{', '.join(ignored)} would be ignored: the nightly_retrain DAG has no such param (it takes --date, "
            "--train-steps, --eval-steps, --auc-floor, --min-improvement, --slice-margin, --keep-versions)",
            "drift warnings go in schemas/taxi/gates.toml ([drift] warn) and the schema in "
            "schemas/taxi/schema.pbtxt, which every DAG run reads; or run outside Airflow with `mlops run`",
        )


# Which `mlops airflow` subcommands read each option; given to any other, it would be ignored.
_DAG_PARAMS = ("train_steps", "eval_steps", "auc_floor", "min_improvement", "slice_margin", "keep_versions")
_AIRFLOW_OPTION_USERS = {
    "from_date": ("backfill",), "to_date": ("backfill",), "dry_run": ("backfill",), "keep_paused": ("backfill",),
    "port": ("up",), "unpause": ("up",), "dag": ("pause", "unpause"), "date": ("run",),
    **{name: ("run", "backfill") for name in _DAG_PARAMS},
}


def _given_options(args) -> List[str]:
    """The options of `_NOT_DAG_PARAMS` and `_AIRFLOW_OPTION_USERS` given on the command line: those
    whose value is not what the parser gives the same subcommand without them."""
    defaults = build_parser().parse_args(["airflow", args.airflow_command])
    return [name for name in (*_NOT_DAG_PARAMS, *_AIRFLOW_OPTION_USERS) if getattr(args, name) != getattr(defaults, name)]


def _refuse_options_of_other_subcommands(command: str, given: List[str]) -> None:
    misplaced = [name for name in given if name in _AIRFLOW_OPTION_USERS and command not in _AIRFLOW_OPTION_USERS[name]]
    if misplaced:
        flags = [_flag(name) for name in misplaced]
        uses = "; ".join(f"{_flag(name)} is for {' / '.join(_AIRFLOW_OPTION_USERS[name])}" for name in misplaced)
        hint = ("a backfill takes its days from --from-date/--to-date" if command == "backfill" and "date" in misplaced
                else f"drop {' '.join(flags)}, or use the subcommand it belongs to")
        raise ConfigError(f"`mlops airflow {command}` does not use {', '.join(flags)} ({uses})", hint)


def _airflow_backfill(args, paths) -> int:
    from pipelines import airflow_env, services
    from pipelines.data import list_spans

    if not (args.from_date and args.to_date):
        raise ConfigError("`mlops airflow backfill` needs --from-date and --to-date", "e.g. --from-date 2026-11-19 --to-date 2026-11-21")
    if args.to_date < args.from_date:
        raise ConfigError(f"--to-date {args.to_date} is before --from-date {args.from_date}", "give the oldest day first")
    days = [args.from_date + dt.timedelta(days=n) for n in range((args.to_date - args.from_date).days + 1)]
    missing = sorted(set(days) - set(list_spans(paths.data_root)))
    if missing:  # a run whose span is missing would fail in its first task, hours later in a real backfill
        raise ConfigError(f"no span under {paths.data_root} for {', '.join(d.isoformat() for d in missing)}",
                          f"seed those days first: `mlops data seed --end {args.to_date} --days {len(days)}` (keeps the spans already there)")
    conf = {"train_steps": args.train_steps, "eval_steps": args.eval_steps, "auc_floor": args.auc_floor,
            "min_improvement": args.min_improvement, "slice_margin": args.slice_margin,
            "keep_versions": args.keep_versions}
    say = lambda line: print(line, flush=True)  # noqa: E731
    airflow_env.init(paths.home, progress=say)
    todo = airflow_env.backfill(paths.home, args.from_date, args.to_date, conf, progress=say, dry_run=args.dry_run)
    if args.dry_run:
        print(f"would create {len(todo)} {airflow_env.NIGHTLY_DAG} run(s): {', '.join(todo) or 'none'} (conf {conf})")
        return 0
    if not todo:
        print(f"nothing to backfill: every day from {args.from_date} to {args.to_date} already has a "
              f"{airflow_env.NIGHTLY_DAG} run (see them in the UI)")
        return 0
    print(f"backfill of {airflow_env.NIGHTLY_DAG} created: {len(todo)} run(s), {todo[0]} to {todo[-1]}, oldest "
          f"first, one at a time; conf {conf}")
    if args.keep_paused:
        print(f"{airflow_env.NIGHTLY_DAG} stays paused (--keep-paused): the runs wait until you unpause it")
    else:
        services.Services(paths.home, emit=say).set_paused(airflow_env.NIGHTLY_DAG, False)
        print("the scheduler runs them now if it is up (`make up`); follow them in the UI")
    return 0


def _require_metadata(config):
    if config.metadata.is_sqlite and not Path(config.metadata.sqlite_path).exists():
        raise ConfigError(f"no ML Metadata store at {config.metadata.sqlite_path}", "run the pipeline first: `make run`")
    return config


def _project_config(args):
    """Config for commands that work on the project's state (or its shape), not on one span."""
    from pipelines.config import PipelineConfig, ProjectPaths

    return PipelineConfig.for_project(ProjectPaths.from_env(args.home), dt.date(1970, 1, 1))


def cmd_rollback(args) -> int:
    import json

    from pipelines.rollback import AlreadyServing, rollback

    if args.no_server and (args.server or args.wait is not None):
        raise ConfigError("--no-server does not go with --server or --wait", "pick one")
    args.wait = 30.0 if args.wait is None else args.wait
    config = _require_metadata(_project_config(args))
    serving = _project_serving(args, config)  # a broken models.config fails here, before the worker starts
    code = _in_warm_worker(args, "rollback")
    if code is not None:
        return code
    # By default, the model server `make up` started for this home, when it runs and serves this directory.
    server, found, unchecked = args.server, None, ""
    if not server and not args.no_server:
        from pipelines.services import model_server_for

        found, unchecked = model_server_for(_paths(args).home, serving.base_path)
        server = found.rest_url if found else None
    try:
        result = rollback(config, None if args.previous else args.to, args.reason, args.by,
                          progress=(lambda _: None) if args.json else print, force=args.force, serving=serving)
    except AlreadyServing as done:
        print(json.dumps({"already_serving": done.served.version}) if args.json else str(done))
        return 0
    waited = None
    if server:
        from serving.retention import wait_until_served

        if not args.json:
            whose = f" of this home (pid {found.pid}, started by `{found.started_by}`)" if found else ""
            print(f"waiting up to {args.wait:g}s for the model server{whose} at {server} to serve version "
                  f"{result.new_version}", flush=True)
        waited = wait_until_served(server, serving.model_name, result.new_version, args.wait)
    if args.json:
        print(json.dumps({**result.as_dict(), "server": server, "served_after_seconds": waited},
                         indent=2, sort_keys=True))
    else:
        print(f"rolled back: version {result.new_version} now serves model {result.target.model_id} "
              f"(the model of version {result.target.version}), replacing version {result.replaced_version}; "
              f"by {result.requested_by}: {result.reason} [run {result.run_id}]")
        for note in result.notes:
            print(f"note: {note}")
        if waited is not None:
            print(f"the model server at {server} serves version {result.new_version} "
                  f"({waited:.1f}s after the push)")
        elif unchecked:
            print(f"{unchecked}, so no server was checked; a server elsewhere: --server URL")
    if server and waited is None:
        print(f"error: the model server at {server} did not serve version {result.new_version} within "
              f"{args.wait:g}s (the push is done and recorded; fix: read the server's log -- a version that fails "
              f"to load is skipped -- and `mlops models list --server {server}`)", file=sys.stderr)
        return 1
    return 0


def _project_serving(args, config):
    """How the project's model server serves the Pusher's directory (models.config, if any)."""
    from serving.config import ConfigFileError, ProjectServing

    try:
        return ProjectServing.read(_paths(args).home, Path(config.serving_model_dir),
                                   getattr(args, "model_config_file", None))
    except ConfigFileError as err:
        raise ConfigError(str(err), "fix the models.config file or pass another --model-config-file") from err


def cmd_models_list(args) -> int:
    import json

    from serving.versions import list_versions
    from pipelines.rollback import PushRecord, list_pushes

    config = _project_config(args)
    serving = _project_serving(args, config)
    on_disk = set(list_versions(Path(config.serving_model_dir)))
    if args.server:
        from serving.retention import served_versions

        try:
            loaded = sorted(served_versions(args.server, serving.model_name))
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot ask the model server at {args.server}: {err}",
                              "start it (`make up`), or leave out --server") from err
        how = f"as the server at {args.server} reports"
    else:
        loaded = serving.loaded(on_disk)
        how = serving.describe()
    served = loaded[-1] if loaded else None
    pushes = list_pushes(config.metadata.to_proto()) if Path(config.metadata.sqlite_path).exists() else []
    # A version directory no push explains (copied in by hand, or its ML Metadata store replaced):
    # the server serves it all the same, so it is listed rather than silently left out.
    recorded = {push.version for push in pushes}
    records = pushes + [PushRecord.unrecorded(version) for version in sorted(on_disk - recorded)]
    # version -> the push after which the Pusher's retention deleted it
    pruned_by = {version: push.version for push in pushes for version in push.pruned_versions}
    rows = [{**push.__dict__, "on_disk": push.version in on_disk, "serving": push.version == served,
             "loaded": push.version in loaded,
             "labels": serving.labels_of(push.version),
             "deleted_by_retention_after": pruned_by.get(push.version) if push.version not in on_disk else None}
            for push in records]
    rows.sort(key=lambda row: row["version"])
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print(f"no model pushed yet to {config.serving_model_dir}")
        return 0
    by_width = max([2] + [len(row["requested_by"]) for row in rows])
    label_width = max(len(",".join(row["labels"])) for row in rows)
    labels_head = f"{'labels':{max(6, label_width)}}  " if label_width else ""
    print(f"{'version':>7}  {'model':>5}  {'kind':10}  {'pushed at (UTC)':19}  {'by':{by_width}}  {labels_head}"
          f"{'replaced':>8}  reason")
    for row in rows:
        mark = " *" if row["serving"] else " +" if row["loaded"] else "  " if row["on_disk"] else " -"
        replaced = str(row["replaced_version"]) if row["replaced_version"] else ""
        labels = f"{','.join(row['labels']):{max(6, label_width)}}  " if label_width else ""
        print(f"{row['version']:>7}{mark}{row['model_id'] or '':>5}  {row['kind']:10}  {row['pushed_at'][:19]:19}  "
              f"{row['requested_by']:{by_width}}  {labels}{replaced:>8}  {row['reason']}"
              + (f" (deleted by retention after version {row['deleted_by_retention_after']})"
                 if row["deleted_by_retention_after"] else ""))
    print(f"* = served to requests that name no version; + = loaded too; - = no longer on disk; "
          f"replaced = the version served before this push")
    print(f"served versions under {config.serving_model_dir}: {how}")
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    from serving.retention import DEFAULT_KEEP  # standard library only

    parser.add_argument("--date", type=_date, help="span to run, YYYY-MM-DD (default: the latest seeded span)")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps (default: 300)")
    parser.add_argument("--eval-steps", type=int, default=50, help="Trainer evaluation steps (default: 50)")
    parser.add_argument(
        "--strategy", default="auto",
        help="tf.distribute strategy: auto (MultiWorkerMirrored when TF_CONFIG names several workers, "
             "else Mirrored), mirrored, multi_worker, one_device (default: auto)",
    )
    parser.add_argument("--auc-floor", type=float, default=0.6, help="bless only if AUC >= this (default: 0.6)")
    parser.add_argument(
        "--min-improvement", type=float, default=0.01,
        help="relative AUC gain needed over the served model (default: 0.01 = 1%%)",
    )
    parser.add_argument(
        "--slice-margin", type=float, default=0.05,
        help="largest AUC loss allowed on any trip_start_hour/payment_type slice (default: 0.05)",
    )
    parser.add_argument(
        "--beam-mode", default="in_memory",
        help="Beam DirectRunner mode: in_memory, multi_processing, multi_threading (default: in_memory)",
    )
    parser.add_argument("--schema", help="schema.pbtxt to import (default: schemas/taxi/schema.pbtxt)")
    parser.add_argument("--warn-drift", action="append", metavar="FEATURE",
                        help="let this feature's drift through with a warning (repeatable; adds to "
                        "[drift] warn in schemas/taxi/gates.toml)")
    parser.add_argument("--no-cache", action="store_true", help="rerun every node even if cached")
    parser.add_argument(
        "--keep-versions", type=_non_negative, default=DEFAULT_KEEP, metavar="N",
        help="after a push, delete pushed versions older than the newest N, except those the models.config "
             "labels, pins or keeps loaded (default: 5; 0 keeps every version; `mlops models prune` by hand)")


def build_parser() -> argparse.ArgumentParser:
    from serving.config import PROJECT_CONFIG_HELP_DEFAULT  # no TensorFlow import

    parser = argparse.ArgumentParser(
        prog="mlops",
        description="Nightly TFX retraining: seed data, run a span (in-process or through Airflow), serve the "
        "pushed models and roll them back.",
    )
    parser.add_argument("--home", help="project directory holding data/, var/, schemas/ (default: $MLOPS_HOME or .)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX and Beam logs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    data = commands.add_parser("data", help="bundled data and generated spans")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    seed = data_commands.add_parser(
        "seed",
        help="split the bundled Chicago taxi data into daily spans under data/incoming/",
        description="Write data/incoming/YYYY-MM-DD/data.csv for N days ending at --end. Deterministic for a "
        "given --seed; existing spans are kept unless --overwrite. More rows than the bundled sample "
        "(about 15k) are resampled with small noise.",
    )
    seed.add_argument("--days", type=int, default=5, help="number of daily spans (default: 5)")
    seed.add_argument("--rows-per-day", type=int, help="rows per span (default: bundled rows / days)")
    seed.add_argument("--end", type=_date, help="last span date (default: yesterday)")
    seed.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    seed.add_argument("--overwrite", action="store_true", help="rewrite spans that already exist")
    seed.set_defaults(handler=cmd_data_seed)
    from pipelines.data import FAULTS

    make_span = data_commands.add_parser(
        "make-span",
        help="write a span with one fault injected (tests, demos, drills)",
        description="Write data/incoming/DATE/ from the bundled taxi data with one fault: "
        + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()) + ".",
    )
    make_span.add_argument("--date", type=_date, required=True, help="span date, YYYY-MM-DD")
    make_span.add_argument("--fault", required=True, choices=sorted(FAULTS), help="what to break")
    make_span.add_argument("--column", help="column to break (default depends on the fault)")
    make_span.add_argument("--severity", type=float,
                           help="fraction of rows / size of the shift (default: depends on the fault)")
    make_span.add_argument("--rows", type=int, default=1500, help="rows in the span (default: 1500)")
    make_span.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    make_span.add_argument("--overwrite", action="store_true", help="replace an existing span")
    make_span.set_defaults(handler=cmd_data_make_span)

    validate = commands.add_parser(
        "validate",
        help="run one span's data gates (no training) and print the anomalies table",
        description="Runs the nightly pipeline's data gates for one span -- raw file checks, statistics, "
        "schema validation, drift against the served model's training data and the previous good span -- "
        "and prints every finding (feature, what was seen vs expected, the fix) and each feature's drift "
        "distance. Results are recorded in ML Metadata like a nightly run's. Exit 0: the span passes; "
        "3: it would be blocked; 2: configuration error.",
    )
    validate.add_argument("--date", type=_date, help="span to validate, YYYY-MM-DD (default: the latest span)")
    validate.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    validate.add_argument("--quiet", action="store_true", help="no per-node progress lines")
    validate.add_argument("--schema", help="schema.pbtxt to validate against (default: schemas/taxi/schema.pbtxt)")
    validate.add_argument("--warn-drift", action="append", metavar="FEATURE",
                          help="let this feature's drift through with a warning (repeatable)")
    validate.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    validate.add_argument("--cold", action="store_true", help=COLD_HELP)
    validate.set_defaults(handler=cmd_validate, train_steps=300, eval_steps=50, strategy="auto", auc_floor=0.6,
                          min_improvement=0.01, slice_margin=0.05, beam_mode="in_memory")

    run = commands.add_parser(
        "run",
        help="run one span through the whole pipeline in-process",
        description="Run ExampleGen ... Pusher for one span in this process, printing a line per node "
        "and a summary: span, rows, anomalies, metrics per slice, blessing and push decision.",
    )
    _add_run_options(run)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--cold", action="store_true", help=COLD_HELP)
    run.set_defaults(handler=cmd_run)

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
    _add_run_options(node_run)
    node_run.add_argument("--summary", action="store_true", help="print the run summary after the node")
    node_run.add_argument(
        "--cold", action="store_true", help=COLD_HELP,
    )
    node_run.set_defaults(handler=cmd_node_run)
    node_list = node_commands.add_parser("list", help="node ids in run order, with their upstream nodes")
    node_list.set_defaults(handler=cmd_node_list)

    airflow = commands.add_parser(
        "airflow",
        help="run the nightly DAG through Airflow 3 (in .venv-airflow) with this project's settings",
        description="`init` prepares AIRFLOW_HOME=var/airflow (database, ML Metadata pool), idempotently. "
        "`run` is one nightly cycle through Airflow: `airflow dags test nightly_retrain <span>`, one task "
        "per TFX node, then the same summary as `mlops run`. `up` starts the api-server (UI), scheduler, "
        "dag-processor and triggerer in the background (`make up`; pid files and logs under var/), "
        "`down` stops them and the warm worker, `status` shows them; `pause`/`unpause` a DAG. "
        "`backfill --from-date D --to-date D` creates one nightly_retrain run per day (each ingests its "
        "own day's span), oldest first, one at a time, then unpauses the DAG so the scheduler runs them; "
        "days that already have a run are skipped.",
    )
    airflow.add_argument(
        "airflow_command", choices=("init", "run", "up", "down", "status", "pause", "unpause", "backfill"),
        help="what to do",
    )
    airflow.add_argument("--from-date", type=_date, help="`backfill`: first day, YYYY-MM-DD")
    airflow.add_argument("--to-date", type=_date, help="`backfill`: last day, YYYY-MM-DD (inclusive)")
    airflow.add_argument("--dry-run", action="store_true", help="`backfill`: show the runs it would create")
    airflow.add_argument("--keep-paused", action="store_true",
                         help="`backfill`: do not unpause nightly_retrain (the runs wait until it is unpaused)")
    airflow.add_argument("--port", type=int, help="api-server port on 127.0.0.1 for `up` (default: $AIRFLOW_PORT or 8080)")
    airflow.add_argument("--unpause", action="store_true", help="`up`: also unpause nightly_retrain (runs at 02:00)")
    airflow.add_argument("--dag", action="append", help="`pause`/`unpause`: DAG id, repeatable (default: nightly_retrain)")
    _add_run_options(airflow)
    airflow.set_defaults(handler=cmd_airflow)

    rollback_parser = commands.add_parser(
        "rollback",
        help="push an earlier blessed model again (audited: an execution in ML Metadata)",
        description="Pick an earlier pushed model and push it again through the Pusher as the newest "
        "version, recording who, when, why and which version it replaced. Refuses unknown versions and "
        "models the Evaluator never blessed (unless --force); rolling back to the model already served "
        "does nothing and exits 0. Refuses, before pushing, when the server's models.config would not serve a "
        "new version (a `specific` policy pins versions: change the pins there instead). `mlops models list` "
        "shows the versions.",
    )
    target = rollback_parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--previous", action="store_true", help="the model served before the current one")
    target.add_argument("--to", type=int, metavar="VERSION", help="the model of this pushed version")
    rollback_parser.add_argument("--reason", required=True, help="why (recorded in ML Metadata)")
    rollback_parser.add_argument("--by", help="who asked (default: the current user)")
    rollback_parser.add_argument("--json", action="store_true", help="print the result as JSON")
    rollback_parser.add_argument(
        "--force", action="store_true", help="push the model even if the Evaluator never blessed it"
    )
    rollback_parser.add_argument(
        "--model-config-file",
        help="the models.config the model server runs with: a rollback is refused when its version policy "
             "would not serve the push (" + PROJECT_CONFIG_HELP_DEFAULT + ")")
    rollback_parser.add_argument(
        "--server", help="after the push, wait until the model server at this URL serves the new version "
                         "(e.g. http://127.0.0.1:8501); exit 1 if it does not within --wait seconds. Default: this "
                         "home's model server, when it runs (`make up` starts it; a `mlops serve` of the home's "
                         "model directory registers itself)")
    rollback_parser.add_argument("--wait", type=float, metavar="SECONDS",
                                 help="how long to wait for the model server (default: 30)")
    rollback_parser.add_argument("--no-server", action="store_true",
                                 help="do not wait for this home's model server "
                                      "(by default, when it runs, the rollback waits until it serves the new version)")
    rollback_parser.add_argument("--cold", action="store_true", help=COLD_HELP)
    rollback_parser.set_defaults(handler=cmd_rollback)

    models = commands.add_parser("models", help="pushed model versions")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_list = models_commands.add_parser(
        "list", help="every push (nightly or rollback) with version, model, who, when, why"
    )
    models_list.add_argument("--json", action="store_true", help="print JSON")
    models_list.add_argument(
        "--model-config-file",
        help="the models.config the model server runs with, whose version policy and labels say what is served "
             "(" + PROJECT_CONFIG_HELP_DEFAULT + "; without one the newest version is served)")
    models_list.add_argument("--server", help="ask the running model server which versions it has loaded instead, "
                                              "e.g. http://127.0.0.1:8501")
    models_list.set_defaults(handler=cmd_models_list)
    models_prune = models_commands.add_parser(
        "prune",
        help="delete old pushed versions: keep the newest N plus labelled, pinned and served ones",
        description="Keeps the newest --keep versions, every version the models.config labels or pins, the "
        "served (newest) version and the newest complete one; deletes the rest atomically (rename to a hidden "
        "directory, then remove). --dry-run only prints the plan.",
    )
    from serving import retention as _retention  # no TensorFlow: argument definitions only

    _retention.add_arguments(models_prune)
    models_prune.set_defaults(handler=_retention.cmd_prune)

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
    from serving import server as _server  # imports TensorFlow only when the command runs

    _server.add_arguments(serve)
    serve.set_defaults(handler=_server.main)

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

    summary = commands.add_parser(
        "summary",
        help="print what a pipeline run did (read from ML Metadata)",
        description="Span, rows, node states, anomalies, metrics per slice, blessing and push decision "
        "of one pipeline run, read back from ML Metadata.",
    )
    summary.add_argument("--run-id", help="pipeline run id (default: the newest run)")
    summary.add_argument("--json", action="store_true", help="print JSON")
    summary.set_defaults(handler=cmd_summary)

    from pipelines import schema_history as _schema_history  # no TFX: argument definitions only

    _schema_history.add_commands(commands)
    return parser


def _quiet_library_warnings(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.name not in ("absl", "tensorflow")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    # google-cloud packages pulled in by TFX warn about Python 3.10 on every import.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # TFX logs routine notices (ephemeral artifact classes, unsupported predicates) as
        # warnings, and absl resets its logger's level on import: filter at the handler.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_library_warnings)
        # TensorFlow's logger has its own handler (deprecation notices); keep its errors only.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        return args.handler(args)
    except MlopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
