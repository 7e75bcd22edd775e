"""`mlops lineage`: what made the model answering now, what a span trained, what a run did, and how two
versions differ -- read from ML Metadata's lineage API (pipelines/lineage.py). Imports neither
TensorFlow nor TFX (but for evaluations older than their recorded metrics): it answers in well under
a second, so Airflow's plugin can call it per page."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.cli.common import date_arg, project_config, project_serving


def _served(args, config):
    """(the version answering requests that name none, the versions on disk), as `mlops models list` says."""
    from serving.versions import list_versions

    on_disk = list_versions(Path(config.serving_model_dir))
    loaded = project_serving(args, config).loaded(on_disk)
    return (loaded[-1] if loaded else None), on_disk


def cmd_lineage(args) -> int:
    from pipelines import lineage
    from pipelines.lineage_views import render_mermaid, render_text

    config = project_config(args)
    store = lineage.open_store(config)
    served, on_disk = _served(args, config)
    base = config.serving_model_dir
    if args.diff:
        doc = lineage.diff_lineage(store, args.diff[0], args.diff[1], served, on_disk, base)
    elif args.version is not None:
        doc = lineage.version_lineage(store, args.version, served, on_disk, base)
    elif args.run:
        doc = lineage.run_lineage(store, args.run, served)
    elif args.span:
        doc = lineage.span_lineage(store, args.span, served)
    else:
        doc = lineage.served_lineage(store, served, on_disk, base)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    elif args.mermaid:
        print(render_mermaid(doc))
    else:
        print(render_text(doc))
    return 0


def register(commands) -> None:
    from serving.config import PROJECT_CONFIG_HELP_DEFAULT

    parser = commands.add_parser(
        "lineage",
        help="what made a pushed model (down to the span's files), what a span or run produced, two versions side by side",
        description="Answers from ML Metadata's lineage API: for a pushed version, the push (nightly or rollback, "
        "who, why, what it replaced), the blessing, the evaluation (metrics per slice against the baseline), the "
        "model, the training (steps, strategy, hyperparameters, code version, config), the transform graph, the "
        "schema snapshot, the statistics, the data gates' verdicts (drift per feature) and the span's input files "
        "with checksums and row counts. Without a query: the version serving now. JSON output follows "
        "docs/lineage.schema.json (its `schema_version` changes only when a field changes meaning or goes away). "
        "Exit 2: unknown version, run or span, or no readable ML Metadata store.",
    )
    query = parser.add_mutually_exclusive_group()
    query.add_argument("--served", action="store_true",
                       help="the version answering requests that name no version (the default query)")
    query.add_argument("--version", type=int, metavar="V", help="a pushed version (see `mlops models list`)")
    query.add_argument("--run", metavar="RUN_ID",
                       help="a pipeline run: the TFX run id (`mlops summary`) or the Airflow run id of a nightly "
                       "DAG run; shows its executions with their Airflow tasks, its code and config, and what it "
                       "pushed or which gate blocked it")
    query.add_argument("--span", type=date_arg, metavar="DATE",
                       help="downstream of a span (YYYY-MM-DD): the data gates' verdicts on it, the models trained on it "
                       "and the versions they were pushed as, whether one serves now, and every `mlops score` of it")
    query.add_argument("--diff", type=int, nargs=2, metavar=("V1", "V2"),
                       help="two pushed versions side by side: spans, input files, schema, code version, config and "
                       "metrics per slice; differing fields marked")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the JSON document (docs/lineage.schema.json)")
    output.add_argument("--mermaid", action="store_true",
                        help="print a Mermaid flowchart (paste it into a ```mermaid block: GitHub renders it)")
    parser.add_argument("--model-config-file", metavar="PATH",
                        help="the models.config that says which version serves (" + PROJECT_CONFIG_HELP_DEFAULT
                        + "; without one the newest version is served)")
    parser.set_defaults(handler=cmd_lineage)
