"""`mlops airflow init|run|backfill|up|down|status|pause|unpause`: the nightly DAG through Airflow 3
(in .venv-airflow) and Airflow's long-running services for this home."""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from typing import List

from pipelines.cli.common import add_run_options, date_arg, pipeline_config, print_summary, project_paths
from pipelines.errors import ConfigError

def cmd_airflow(args) -> int:
    from pipelines import airflow_env

    paths = project_paths(args)
    given = _given_options(args)
    _refuse_options_the_dag_ignores(given)
    _refuse_options_of_other_subcommands(args.airflow_command, given)
    if args.airflow_command in ("up", "down", "status", "pause", "unpause"):
        return _services(paths.home, args)
    if args.airflow_command == "backfill":
        return _airflow_backfill(args, paths)
    airflow_env.init(paths.home, force=args.airflow_command == "init")
    if args.airflow_command == "init":
        slots = airflow_env.POOL_SLOTS[airflow_env.backend(paths.home)]
        print(f"Airflow home {airflow_env.airflow_home(paths.home)} ready (pool {airflow_env.POOL}: "
              f"{slots} slot{'s' if slots > 1 else ''})")
        return 0
    config = pipeline_config(args).check()  # fail here, not in the first Airflow task
    span = config.span_date.isoformat()
    conf = {
        "date": span, "train_steps": config.train_steps, "eval_steps": config.eval_steps,
        "auc_floor": config.gates.auc_floor, "min_improvement": config.gates.min_relative_improvement,
        "slice_margin": config.gates.slice_margin, "keep_versions": config.keep_versions,
        "window_days": config.window_days,
        **({"run_fn": args.run_fn} if args.run_fn else {}),  # the DAG's default: the taxi model's code
    }
    log_path = paths.var / "log" / f"airflow-dags-test-{span}.log"
    print(f"airflow dags test {airflow_env.NIGHTLY_DAG} {span} (full Airflow log: {log_path})", flush=True)
    code, run_id = airflow_env.dags_test(paths.home, span, conf, log_path, emit=lambda l: print(l, flush=True))
    if run_id:
        print()
        print_summary(config, f"{airflow_env.NIGHTLY_DAG}__{run_id}", as_json=False)
        home = shlex.quote(str(paths.home))
        print(f"  lineage:   mlops --home {home} lineage --run {shlex.quote(run_id)}  "
              f"(what made the model serving now: mlops --home {home} lineage)")
    if code:
        print(f"the DAG run failed (exit {code}); see the failed task above and {log_path}", file=sys.stderr)
    return 1 if code else 0


# Run options nightly_retrain has no param for: its tasks use the defaults and read schemas/taxi/.
_NOT_DAG_PARAMS = ("strategy", "beam_mode", "beam_workers", "beam_arg", "schema", "warn_drift", "no_cache")


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _refuse_options_the_dag_ignores(given: List[str]) -> None:
    ignored = [_flag(name) for name in _NOT_DAG_PARAMS if name in given]
    if ignored:
        raise ConfigError(
            f"{', '.join(ignored)} would be ignored: the nightly_retrain DAG has no such param (it takes --date, "
            "--window-days, --train-steps, --eval-steps, --auc-floor, --min-improvement, --slice-margin, --keep-versions, "
            "--run-fn)",
            "drift warnings go in schemas/taxi/gates.toml ([drift] warn) and the schema in "
            "schemas/taxi/schema.pbtxt, which every DAG run reads; Beam arguments in $MLOPS_BEAM_ARGS of Airflow's "
            "services; or run outside Airflow with `mlops run`",
        )


# Which `mlops airflow` subcommands read each option; given to any other, it would be ignored.
_DAG_PARAMS = ("window_days", "train_steps", "eval_steps", "auc_floor", "min_improvement", "slice_margin",
               "keep_versions", "run_fn")


_AIRFLOW_OPTION_USERS = {
    "from_date": ("backfill",), "to_date": ("backfill",), "dry_run": ("backfill",), "keep_paused": ("backfill",),
    "port": ("up",), "unpause": ("up",), "backend": ("up",), "auto_rollback": ("up",), "dag": ("pause", "unpause"), "date": ("run",),
    **{name: ("run", "backfill") for name in _DAG_PARAMS},
}


def _given_options(args) -> List[str]:
    """The options of `_NOT_DAG_PARAMS` and `_AIRFLOW_OPTION_USERS` given on the command line: those
    whose value is not what the parser gives the same subcommand without them."""
    parser = argparse.ArgumentParser(prog="mlops")
    register(parser.add_subparsers(dest="command"))
    defaults = parser.parse_args(["airflow", args.airflow_command])
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
            "keep_versions": args.keep_versions, "window_days": args.window_days,
            **({"run_fn": args.run_fn} if args.run_fn else {})}
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


def _services(home, args) -> int:
    """`mlops airflow up|down|status|pause|unpause`."""
    from pipelines import airflow_env
    from pipelines.services import Services

    services = Services(home, emit=lambda line: print(line, flush=True))
    command = args.airflow_command
    if command == "up":
        return services.up(port=args.port, unpause=args.unpause, auto_rollback=args.auto_rollback, backend=args.backend)
    if command == "down":
        return services.down()
    if command == "status":
        return services.status()
    if command in ("pause", "unpause"):
        airflow_env.init(services.home, progress=services.emit)
        for dag_id in args.dag or [airflow_env.NIGHTLY_DAG]:
            services.set_paused(dag_id, command == "pause")
        return 0
    raise ValueError(command)


def register(commands) -> None:
    airflow = commands.add_parser(
        "airflow",
        help="run the nightly DAG through Airflow 3 (in .venv-airflow) with this project's settings",
        description="`init` prepares AIRFLOW_HOME=var/airflow (database, ML Metadata pool), idempotently. "
        "`run` is one nightly cycle through Airflow: `airflow dags test nightly_retrain <span>`, one task "
        "per TFX node, then the same summary as `mlops run`. `up` starts the api-server (UI), scheduler, "
        "dag-processor and triggerer in the background (`make up`; pid files and logs under var/), then the "
        "model server and the monitoring stack (Prometheus, Alertmanager, Pushgateway, the alert webhook; "
        "`mlops monitoring --help`); `up --backend postgres` first starts the home's PostgreSQL, MariaDB and Redis "
        "(state in var/db/) and runs Airflow on PostgreSQL with the CeleryExecutor and one Celery worker, ML "
        "Metadata on MariaDB. `down` stops them all and the warm worker, `status` shows each with its "
        "pid, URL and log, and the backend; `pause`/`unpause` a DAG. "
        "`backfill --from-date D --to-date D` creates one nightly_retrain run per day (each ingests its "
        "own day's span), oldest first, one at a time, then unpauses the DAG so the scheduler runs them; "
        "days that already have a run are skipped.",
    )
    airflow.add_argument(
        "airflow_command", choices=("init", "run", "up", "down", "status", "pause", "unpause", "backfill"),
        help="what to do",
    )
    airflow.add_argument("--from-date", type=date_arg, help="`backfill`: first day, YYYY-MM-DD")
    airflow.add_argument("--to-date", type=date_arg, help="`backfill`: last day, YYYY-MM-DD (inclusive)")
    airflow.add_argument("--dry-run", action="store_true", help="`backfill`: show the runs it would create")
    airflow.add_argument("--keep-paused", action="store_true",
                         help="`backfill`: do not unpause nightly_retrain (the runs wait until it is unpaused)")
    airflow.add_argument("--port", type=int, help="api-server port on 127.0.0.1 for `up` (default: $AIRFLOW_PORT or 8080)")
    airflow.add_argument("--backend", choices=("sqlite", "postgres"),
                         help="`up`: sqlite (default: Airflow's database in SQLite, LocalExecutor, ML Metadata in "
                              "var/metadata.sqlite) or postgres (PostgreSQL, CeleryExecutor with Redis, ML Metadata "
                              "on MariaDB, nodes in parallel; `make up BACKEND=postgres`); default: what runs")
    airflow.add_argument("--unpause", action="store_true", help="`up`: also unpause nightly_retrain (runs at 02:00)")
    airflow.add_argument("--auto-rollback", action=argparse.BooleanOptionalAction,
                         help="`up`: let a firing rollback alert trigger the model_rollback DAG through the alert "
                              "webhook, or not (default: as the running webhook does; off when it starts now; "
                              "`make up AUTO_ROLLBACK=1` / `AUTO_ROLLBACK=0`)")
    airflow.add_argument("--dag", action="append", help="`pause`/`unpause`: DAG id, repeatable (default: nightly_retrain)")
    add_run_options(airflow)
    airflow.set_defaults(handler=cmd_airflow)
