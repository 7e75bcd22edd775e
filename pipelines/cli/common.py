"""What the command groups share: argument types, the run options, project paths and configs,
the warm worker hand-off, exit codes. Imports neither TensorFlow nor TFX."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Optional

from pipelines.errors import ConfigError, MlopsError

COLD_HELP = ("run in this process instead of a fork of the home's warm worker (which has TFX imported; "
             "same as MLOPS_WARM_WORKER=0)")


def date_arg(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-22") from err


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from err
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: use 0 to keep every version")
    return value


def yesterday() -> dt.date:
    return dt.date.today() - dt.timedelta(days=1)


def project_paths(args):
    from pipelines.config import ProjectPaths

    return ProjectPaths.from_env(args.home)


def project_config(args):
    """Config for commands that work on the project's state (or its shape), not on one span."""
    from pipelines.config import PipelineConfig

    return PipelineConfig.for_project(project_paths(args), dt.date(1970, 1, 1))


def require_metadata(config):
    """The config, once its ML Metadata store exists (a SQLite file; a server is asked when used)."""
    if config.metadata.is_sqlite and not Path(config.metadata.sqlite_path).exists():
        raise ConfigError(f"no ML Metadata store at {config.metadata.sqlite_path}", "run the pipeline first: `make run`")
    return config


def has_metadata(config) -> bool:
    """Whether the home's ML Metadata store holds a schema yet (False: nothing was ever recorded)."""
    if config.metadata.is_sqlite:
        return Path(config.metadata.sqlite_path).exists()
    from pipelines.mlmd_store import info

    return info(config.metadata).schema_version is not None


def _beam(args, data_root, span_date) -> dict:
    """The Beam DirectRunner mode and workers, `auto` resolved from the span's size."""
    import os

    from pipelines.config import AUTO, beam_mode_for

    import shlex

    from pipelines.config import BEAM_ARGS_ENV

    mode = getattr(args, "beam_mode", AUTO)
    workers = getattr(args, "beam_workers", 0) or 0
    if mode == AUTO:
        mode, auto_workers = beam_mode_for(data_root, span_date)
        workers = workers or auto_workers
    extra = (*shlex.split(os.environ.get(BEAM_ARGS_ENV, "")), *(getattr(args, "beam_arg", None) or ()))
    malformed = [arg for arg in extra if not arg.startswith("--")]
    if malformed:
        raise ConfigError(f"Beam pipeline arguments must look like --name=value, not {malformed[0]!r}",
                          f"fix ${BEAM_ARGS_ENV} or --beam-arg (e.g. --beam-arg=--runner=FlinkRunner)")
    return {"beam_mode": mode, "beam_workers": workers or os.cpu_count() or 1, "extra_beam_args": tuple(extra)}


def pipeline_config(args):
    import dataclasses

    from pipelines.config import (DEFAULT_KEEP_VERSIONS, DEFAULT_WINDOW_DAYS, DataGateConfig, GateConfig,
                                  PipelineConfig, span_fingerprint, transform_fingerprint)
    from pipelines.data import latest_span

    paths = project_paths(args)
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
        **_beam(args, paths.data_root, span_date),
        enable_cache=not args.no_cache,
        keep_versions=getattr(args, "keep_versions", DEFAULT_KEEP_VERSIONS),
        data_gates=data_gates,
        span_fingerprint=span_fingerprint(paths.data_root, span_date),
        window_days=getattr(args, "window_days", DEFAULT_WINDOW_DAYS),
        trainer_run_fn=getattr(args, "run_fn", None) or "",
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
    return dataclasses.replace(config, transform_fingerprint=transform_fingerprint(config.schema_path))


def in_warm_worker(args, what: str) -> Optional[int]:
    """Runs this very command in the home's warm worker (TFX already imported there, ~0.3 s
    instead of ~10 s of start-up); its exit code, or None to run it here, cold."""
    from pipelines.worker import client as worker

    if not worker.enabled() or getattr(args, "cold", False):
        return None
    paths = project_paths(args)
    socket = worker.ensure_worker(paths.home, paths.var / "log")
    if socket is not None:
        code = worker.run_remote(socket, args.argv)
        if code is not None:
            return code
    print(f"running this {what} in a cold process instead", file=sys.stderr, flush=True)
    return None


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if not isinstance(err, MlopsError) else text


def print_summary(config, run_id: str, as_json: bool) -> None:
    from pipelines.summary import read_run_summary

    summary = read_run_summary(config.metadata.to_proto(), run_id)
    print(summary.to_json() if as_json else "\n".join(summary.lines()))


def project_serving(args, config):
    """How the project's model server serves the Pusher's directory (models.config, if any)."""
    from serving.config import ConfigFileError, ProjectServing

    try:
        return ProjectServing.read(project_paths(args).home, Path(config.serving_model_dir),
                                   getattr(args, "model_config_file", None))
    except ConfigFileError as err:
        raise ConfigError(str(err), "fix the models.config file or pass another --model-config-file") from err


def add_beam_options(parser: argparse.ArgumentParser) -> None:
    from pipelines.config import AUTO, BEAM_MODES, MULTI_PROCESSING_BYTES

    parser.add_argument(
        "--beam-mode", default=AUTO, choices=(AUTO, *BEAM_MODES),
        help=f"Beam DirectRunner mode; auto: in_memory for a span under {MULTI_PROCESSING_BYTES >> 20} MB of CSV, "
             "multi_processing (a worker per core, memory that does not grow with the span) from there "
             "(default: auto)",
    )
    parser.add_argument("--beam-workers", type=non_negative, default=0, metavar="N",
                        help="workers of the multi_processing/multi_threading modes (default: 0 = one per core)")
    parser.add_argument("--beam-arg", action="append", metavar="--NAME=VALUE",
                        help="one more Beam pipeline argument for every Beam node, e.g. --beam-arg=--runner=FlinkRunner "
                             "(repeatable; added after $MLOPS_BEAM_ARGS; docs/scale-out.md shows cluster runners)")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    from pipelines.config import DEFAULT_WINDOW_DAYS  # standard library only at import
    from serving.retention import DEFAULT_KEEP  # standard library only

    parser.add_argument("--date", type=date_arg, help="span to run, YYYY-MM-DD (default: the latest seeded span)")
    parser.add_argument(
        "--window-days", type=int, default=DEFAULT_WINDOW_DAYS, metavar="N",
        help=f"train on the newest N days that passed the data gates, evaluate on this span, held out "
             f"(a blocked or missing day is skipped and said; 1: this span alone; default: {DEFAULT_WINDOW_DAYS})",
    )
    parser.add_argument("--train-steps", type=int, default=300, help="training steps (default: 300)")
    parser.add_argument("--eval-steps", type=int, default=50, help="Trainer evaluation steps (default: 50)")
    parser.add_argument(
        "--strategy", default="auto",
        help="tf.distribute strategy: auto (MultiWorkerMirrored when TF_CONFIG names several workers, "
             "else Mirrored), mirrored, multi_worker, one_device (default: auto)",
    )
    parser.add_argument(
        "--run-fn", metavar="MODULE.FUNCTION",
        help="the Trainer's run_fn, your own model code (importable in .venv, e.g. through PYTHONPATH); the "
             "InfraValidator checks that what it exports serves both signatures before anything is pushed "
             "(default: pipelines.taxi.model.run_fn)",
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
    add_beam_options(parser)
    parser.add_argument("--schema", help="schema.pbtxt to import (default: schemas/taxi/schema.pbtxt)")
    parser.add_argument("--warn-drift", action="append", metavar="FEATURE",
                        help="let this feature's drift through with a warning (repeatable; adds to "
                        "[drift] warn in schemas/taxi/gates.toml)")
    parser.add_argument("--no-cache", action="store_true",
                        help="rerun every node even if cached; Transform analyzes every span of the window again "
                             "instead of reading its analyzer cache")
    parser.add_argument(
        "--keep-versions", type=non_negative, default=DEFAULT_KEEP, metavar="N",
        help="after a push, delete pushed versions older than the newest N, except those the models.config "
             "labels, pins or keeps loaded (default: 5; 0 keeps every version; `mlops models prune` by hand)")
