"""`mlops`: the command line of the nightly TFX pipeline.

Importing this module imports neither TensorFlow nor TFX: each command imports what it needs
when it runs, so `mlops --help` answers at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import List, Optional

from pipelines.errors import MlopsError


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-22") from err


def _yesterday() -> dt.date:
    return dt.date.today() - dt.timedelta(days=1)


def cmd_data_seed(args) -> int:
    from pipelines.config import ProjectPaths
    from pipelines.data import SeedPlan, seed

    paths = ProjectPaths.from_env(args.home)
    plan = SeedPlan(end=args.end or _yesterday(), days=args.days, rows_per_day=args.rows_per_day, seed=args.seed)
    seed(paths.data_root, plan, overwrite=args.overwrite)
    return 0


def _pipeline_config(args):
    from pipelines.config import GateConfig, PipelineConfig, ProjectPaths
    from pipelines.data import latest_span

    paths = ProjectPaths.from_env(args.home)
    span_date = args.date or latest_span(paths.data_root)
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
    )
    config = PipelineConfig.for_project(paths, span_date, **overrides)
    if args.schema:
        import dataclasses

        config = dataclasses.replace(config, schema_path=args.schema)
    return config


def cmd_run(args) -> int:
    from pipelines.runner import RunFailed, run_span

    config = _pipeline_config(args).check()
    try:
        summary = run_span(config)
    except RunFailed as failed:
        print("\n".join(failed.summary.lines()))
        print(f"run stopped at {failed.node_id}: {failed.cause}", file=sys.stderr)
        return 1
    print(summary.to_json() if args.json else "\n".join(summary.lines()))
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--no-cache", action="store_true", help="rerun every node even if cached")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops",
        description="Nightly TFX retraining: seed data, run a span, (later) serve and roll back models.",
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

    run = commands.add_parser(
        "run",
        help="run one span through the whole pipeline in-process",
        description="Run ExampleGen ... Pusher for one span in this process, printing a line per node "
        "and a summary: span, rows, anomalies, metrics per slice, blessing and push decision.",
    )
    _add_run_options(run)
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.set_defaults(handler=cmd_run)
    return parser


def _quiet_library_warnings(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.name not in ("absl", "tensorflow")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # TFX logs routine notices (ephemeral artifact classes, unsupported predicates) as
        # warnings, and absl resets its logger's level on import: filter at the handler.
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_library_warnings)
    try:
        return args.handler(args)
    except MlopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
