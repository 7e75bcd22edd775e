"""`mlops run|validate|summary`: one span through the pipeline (or its data gates) in-process, and
what a run did, read back from ML Metadata."""

from __future__ import annotations

import sys

from pipelines.cli.common import (COLD_HELP, add_beam_options, add_run_options, date_arg, in_warm_worker, pipeline_config,
                                  project_config, require_metadata)
from pipelines.errors import EXIT_BLOCKED, EXIT_FAILED, ConfigError, DataError

def cmd_run(args) -> int:
    config = pipeline_config(args).check()  # configuration errors answer at once, cold
    code = in_warm_worker(args, "run")
    if code is not None:
        return code
    from pipelines.runner import RunFailed, run_span

    try:
        summary = run_span(config)
    except RunFailed as failed:
        print("\n".join(failed.summary.lines()))
        print(f"run stopped at {failed.node_id}: {failed.cause}", file=sys.stderr)
        return EXIT_BLOCKED if isinstance(failed.cause, DataError) else EXIT_FAILED
    if args.json:
        print(summary.to_json())
    else:
        print("\n".join(summary.lines()))
        print(f"  lineage:   mlops lineage --run {summary.run_id}")
    return 0


def cmd_validate(args) -> int:
    config = pipeline_config(args).check()
    code = in_warm_worker(args, "validation")
    if code is not None:
        return code
    from pipelines.validate import validate_span

    emit = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    report = validate_span(config, progress=emit if not args.quiet else (lambda _: None))
    print(report.to_json() if args.json else "\n".join(report.lines()), flush=True)
    return EXIT_BLOCKED if report.blocked else 0


def cmd_summary(args) -> int:
    from pipelines.summary import latest_run_id, read_run_summary

    config = require_metadata(project_config(args))
    connection = config.metadata.to_proto()
    run_id = args.run_id or latest_run_id(connection)
    if not run_id:
        raise ConfigError("ML Metadata holds no pipeline run yet", "run the pipeline first: `make run`")
    summary = read_run_summary(connection, run_id)
    if args.push_metrics:
        from monitoring.metrics import pushgateway_url
        from pipelines.monitor import home_of_pipeline_root, report_run

        url = pushgateway_url(home_of_pipeline_root(config.pipeline_root))
        if not url:
            print("no Pushgateway configured (no monitoring stack runs for this home: `make up`; or set "
                  "MLOPS_PUSHGATEWAY_URL): metrics not pushed", file=sys.stderr)
        else:
            # A run with no task that reached ML Metadata is still a run that failed: push it too.
            outcome = report_run(connection, config.pipeline_root, run_id, config.pipeline_name, summary=summary)
            if outcome:
                print(f"run {run_id}: outcome {outcome}, metrics pushed to {url}", file=sys.stderr)
        if not summary.node_states:
            return 0
    if not summary.node_states:
        raise ConfigError(f"no pipeline run {run_id!r} in ML Metadata", "omit --run-id for the latest run")
    print(summary.to_json() if args.json else "\n".join(summary.lines()))
    return 0


def register(commands) -> None:
    validate = commands.add_parser(
        "validate",
        help="run one span's data gates (no training) and print the anomalies table",
        description="Runs the nightly pipeline's data gates for one span -- raw file checks, statistics, "
        "schema validation, drift against the served model's training data and the previous good span -- "
        "and prints every finding (feature, what was seen vs expected, the fix) and each feature's drift "
        "distance. Results are recorded in ML Metadata like a nightly run's. Exit 0: the span passes; "
        "3: it would be blocked; 2: configuration error.",
    )
    validate.add_argument("--date", type=date_arg, help="span to validate, YYYY-MM-DD (default: the latest span)")
    validate.add_argument("--json", action="store_true", help="print the report as JSON (progress goes to stderr)")
    validate.add_argument("--quiet", action="store_true", help="no per-node progress lines")
    validate.add_argument("--schema", help="schema.pbtxt to validate against (default: schemas/taxi/schema.pbtxt)")
    validate.add_argument("--warn-drift", action="append", metavar="FEATURE",
                          help="let this feature's drift through with a warning (repeatable)")
    validate.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    add_beam_options(validate)
    validate.add_argument("--cold", action="store_true", help=COLD_HELP)
    validate.set_defaults(handler=cmd_validate, train_steps=300, eval_steps=50, strategy="auto", auc_floor=0.6,
                          min_improvement=0.01, slice_margin=0.05)

    run = commands.add_parser(
        "run",
        help="run one span through the whole pipeline in-process",
        description="Run ExampleGen ... Pusher for one span in this process, printing a line per node "
        "and a summary: span, rows, anomalies, metrics per slice, blessing and push decision.",
    )
    add_run_options(run)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument("--cold", action="store_true", help=COLD_HELP)
    run.set_defaults(handler=cmd_run)

    summary = commands.add_parser(
        "summary",
        help="print what a pipeline run did (read from ML Metadata)",
        description="Span, rows, node states, anomalies, metrics per slice, blessing and push decision "
        "of one pipeline run, read back from ML Metadata.",
    )
    summary.add_argument("--run-id", help="pipeline run id (default: the newest run)")
    summary.add_argument("--json", action="store_true", help="print JSON")
    summary.add_argument("--push-metrics", action="store_true",
                         help="also push the run's outcome (success, failed, blocked, not_blessed), data and model "
                         "metrics to the Pushgateway ($MLOPS_PUSHGATEWAY_URL, else the home's monitoring stack); "
                         "what the nightly DAG's last task does, whatever the run's end. Never fails on "
                         "monitoring: one warning line")
    summary.set_defaults(handler=cmd_summary)
