"""`mlops monitoring up|down|status`: the home's monitoring stack (monitoring/stack.py) on its own.

`make up` starts the same stack beside Airflow; these commands run it without Airflow, for `mlops
run` users and tests: pipeline metrics reach its Pushgateway whenever it runs (stack.json)."""

from __future__ import annotations

import argparse

from pipelines.cli.common import project_paths
from pipelines.errors import ConfigError


def cmd_monitoring(args) -> int:
    from monitoring import stack

    home = project_paths(args).home
    misplaced = [flag for flag, given in (("--[no-]auto-rollback", args.auto_rollback is not None),
                                          ("--interval-seconds", args.interval_seconds is not None)) if given]
    if args.monitoring_command != "up" and misplaced:
        raise ConfigError(f"`mlops monitoring {args.monitoring_command}` does not use {', '.join(misplaced)}",
                          "drop it: only `mlops monitoring up` takes it")
    say = lambda line: print(line, flush=True)  # noqa: E731
    if args.monitoring_command == "up":
        settings = stack.StackSettings.from_env(home, auto_rollback=args.auto_rollback,
                                                interval_seconds=args.interval_seconds)
        for line in stack.describe(stack.start(settings, say)):
            say(line)
        return 0
    if args.monitoring_command == "down":
        stack.stop(home, say)
        return 0
    parts = stack.status(home)
    for line in stack.status_lines(parts):
        say(line)
    return 0 if all(part.pid and part.ready for part in parts) else 3


def register(commands) -> None:
    monitoring = commands.add_parser(
        "monitoring",
        help="Prometheus, Alertmanager, Pushgateway and the alert webhook for this home, without Airflow",
        description="`up` starts the home's monitoring stack in the background, each part on 127.0.0.1 "
        "(Prometheus 9090, Alertmanager 9093, Pushgateway 9091, alert webhook 9095, or free ports when those "
        "are taken); parts already running are kept. Prometheus scrapes itself, Alertmanager, the "
        "Pushgateway (where pipeline runs push their metrics) and the home's model server, and evaluates "
        "monitoring/rules/*.yml; Alertmanager sends to the webhook (monitoring/alertmanager.yml). State "
        "under var/monitoring/ (stack.json, generated configs, TSDB, webhook secret), logs in "
        "var/log/<part>.log. `down` stops them, `status` shows each with pid, URL and readiness (exit 0 "
        "when all run, 3 otherwise). `make up` starts the same stack beside Airflow; `make monitoring` "
        "installs the binaries.",
    )
    monitoring.add_argument("monitoring_command", choices=("up", "down", "status"), help="what to do")
    monitoring.add_argument("--auto-rollback", action=argparse.BooleanOptionalAction,
                            help="`up`: let a firing rollback alert trigger the model_rollback DAG through the "
                                 "webhook (needs Airflow: `make up`), or not (default: as the running webhook "
                                 "does; off when it starts now)")
    monitoring.add_argument("--interval-seconds", type=int, metavar="SECONDS",
                            help="`up`: scrape and rule evaluation interval (default: "
                                 "$MLOPS_MONITORING_INTERVAL_SECONDS or 15)")
    monitoring.set_defaults(handler=cmd_monitoring)
