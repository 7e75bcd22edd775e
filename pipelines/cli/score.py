"""`mlops score --date D [--version V]`: a day's span scored in batch by the served (or a named pushed)
model, predictions keyed by row under var/scores/<D>/, recorded in ML Metadata (pipelines/scoring.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cli.common import date_arg, project_config, project_paths, project_serving, require_metadata
from pipelines.errors import EXIT_BLOCKED, DataError


def cmd_score(args) -> int:
    from serving.versions import list_versions

    paths = project_paths(args)
    config = require_metadata(project_config(args))
    on_disk = list_versions(Path(config.serving_model_dir))
    serving = project_serving(args, config)
    loaded = serving.loaded(on_disk)
    served = loaded[-1] if loaded else None
    labels = serving.model.label_map if serving.model else {}
    if "canary" in labels and labels.get("stable") in loaded:
        served = labels["stable"]  # a canary window: stable answers most requests, as `mlops models list` says
    emit = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else (lambda line: print(line, flush=True))
    from ml_metadata import metadata_store

    from pipelines import scoring

    store = metadata_store.MetadataStore(config.metadata.to_proto())
    try:
        result = scoring.score(store, pipeline=config.pipeline_name, var=paths.var, data_root=paths.data_root,
                               base=Path(config.serving_model_dir), day=args.date, version=args.version,
                               served=served, on_disk=on_disk, progress=emit,
                               batch_size=args.batch_size)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BLOCKED
    print(result.to_json() if args.json else "\n".join(result.lines()), flush=True)
    return 0


def register(commands) -> None:
    from serving.config import PROJECT_CONFIG_HELP_DEFAULT

    parser = commands.add_parser(
        "score",
        help="score a day's span in batch with the served (or a named pushed) model; predictions per row under "
             "var/scores/<date>/",
        description="Scores every row of span DATE with the version the model server serves to requests that name "
        "no version (or pushed version --version V), in this process, in batches of 8192 rows through the "
        "model's serving_features signature (typed columns; serving_default on tf.Examples for a model without "
        "one), and writes var/scores/<DATE>/v<V>.parquet: the row's key (span_date; "
        "file, the CSV file's name; row, its position among the file's data rows from 0, as pandas.read_csv numbers "
        "them) and the model's outputs (probabilities). Only a span that passed the data gates, with the files "
        "ExampleGen ingested, is scored. ML Metadata records the call: an execution (BatchScorer) with the Model, "
        "the PushedModel and the span's Examples as inputs and the scores (BatchScores) as output; `mlops lineage "
        "--run <run id>` shows it. Scoring the same span with the same model again reuses the file (it says "
        "'reused' and does not write it again). Exit 2: bad arguments, a span never gated or a version never "
        "pushed; 3: the span's data gates blocked it (nothing is written).",
    )
    parser.add_argument("--date", type=date_arg, required=True, metavar="DATE", help="the span to score, YYYY-MM-DD")
    parser.add_argument("--version", type=int, metavar="V",
                        help="a pushed version to score with (default: the version served to requests that name "
                             "none; `mlops models list` shows both)")
    parser.add_argument("--model-config-file", metavar="PATH",
                        help="the models.config that says which version serves (" + PROJECT_CONFIG_HELP_DEFAULT
                        + "; without one the newest version is served)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="rows per call of the model (default: 8192, where rows/s levels off)")
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (progress goes to stderr)")
    parser.set_defaults(handler=cmd_score)
