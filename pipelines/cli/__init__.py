"""`mlops`: the command line of the nightly TFX pipeline.

One module per command group, each with `register(commands)` (its parsers) and thin handlers over
the library: `data`, `run` (run, validate, summary), `node` (node, worker, dags), `airflow`,
`compile`, `rollback`, `models`, `score`, `tune`, `lineage`, `metadata`, `serve`, `schema`; `common` holds what they share. Importing the package
imports neither TensorFlow nor TFX: each command imports what it needs when it runs, so
`mlops --help` answers at once. `docs/cli.md` is generated from these parsers (`mlops docs`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import List, Optional

from pipelines.cli import airflow, compile, data, docs, lineage, metadata, models, monitoring, node, rollback, run, schema, score, serve, tune
from pipelines.errors import EXIT_CONFIG, MlopsError

# In the order `mlops --help` lists them.
GROUPS = (data, run, node, airflow, compile, monitoring, rollback, models, score, tune, lineage, metadata, serve, schema, docs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops",
        description="Nightly TFX retraining: seed data, run a span (in-process or through Airflow), serve the "
        "pushed models and roll them back.",
    )
    parser.add_argument("--home", help="project directory holding data/, var/, schemas/ (default: $MLOPS_HOME or .)")
    parser.add_argument("--metadata", metavar="URL",
                        help="ML Metadata store for this command and what it starts: sqlite:PATH or "
                             "mysql://USER@HOST:PORT/DATABASE, the password in $MLOPS_MLMD_PASSWORD (default: "
                             "$MLOPS_MLMD, else the home's var/metadata.sqlite)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show TFX and Beam logs")
    # `mlops docs` renders the whole tree from the parser it was called through.
    parser.set_defaults(root_parser=parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(commands)
    return parser


def _quiet_library_warnings(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR or record.name not in ("absl", "tensorflow")


def _use_metadata(url: Optional[str]) -> None:
    """`--metadata URL` is $MLOPS_MLMD for this process and what it starts (the warm worker's fork,
    Airflow's services), read wherever a config is built (MetadataConfig.for_home)."""
    if url:
        import os

        from pipelines.config import MLMD_ENV, MetadataConfig

        MetadataConfig.parse(url)  # a bad URL fails here, named, before any work
        os.environ[MLMD_ENV] = url


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
        _use_metadata(args.metadata)
        return args.handler(args)
    except MlopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG



if __name__ == "__main__":
    sys.exit(main())
