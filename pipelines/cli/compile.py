"""`mlops compile --target kubeflow-v2 --out FILE`: the nightly pipeline as a Kubeflow Pipelines /
Vertex AI PipelineJob (pipelines/kubeflow.py). Needs no network, Kubernetes or ML Metadata."""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cli.common import date_arg, yesterday
from pipelines.errors import ConfigError


def cmd_compile(args) -> int:
    from pipelines import kubeflow  # no TFX until it compiles

    if args.target not in kubeflow.TARGETS:
        raise ConfigError(f"unknown compile target {args.target!r}",
                          f"pass --target {' or '.join(kubeflow.TARGETS)}; the local pipeline is not compiled: "
                          "`mlops run` or the Airflow DAG runs it")
    from pipelines.node_runner import prepare_process_env

    say = lambda line: print(line, flush=True)  # noqa: E731

    options = kubeflow.KubeflowOptions(span_date=args.date or yesterday(), image=args.image,
                                       pipeline_root=args.pipeline_root, data_root=args.data_root,
                                       serving_dir=args.serving_dir, schema_file=args.schema_file).check()
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory", f"pass a file name, e.g. --out {out / 'pipeline.json'}")
    say(f"compiling the taxi pipeline for {args.target}: span {options.span_date}, image {options.image}, "
        f"pipeline root {options.pipeline_root}")
    prepare_process_env()
    job = kubeflow.compile_kubeflow_v2(options)
    kubeflow.write(job, out)
    say(f"wrote {out} ({len(kubeflow.task_names(job))} tasks)")
    for name in options.placeholders():
        flag = "--" + name.replace("_", "-")
        print(f"note: {flag} is the placeholder {getattr(options, name)!r}: pass your own before submitting "
              "(docs/orchestration.md)", file=sys.stderr, flush=True)
    return 0


def register(commands) -> None:
    from pipelines.kubeflow import (DEFAULT_DATA_ROOT, DEFAULT_IMAGE, DEFAULT_PIPELINE_ROOT, DEFAULT_SCHEMA_FILE,
                                    DEFAULT_SERVING_DIR, TARGETS)

    parser = commands.add_parser(
        "compile",
        help="compile the nightly pipeline for another orchestrator (Kubeflow Pipelines / Vertex AI)",
        description="Compile the nightly pipeline for one span with TFX's KubeflowV2DagRunner into a "
        "PipelineJob JSON file that Kubeflow Pipelines (v2) or Vertex AI Pipelines runs. The project's own "
        "resolvers become stock ones there: the drift baseline is the newest statistics (blocked spans "
        "included), there is no drift check against the served model's training data, the model trains on "
        "this span alone (no rolling window, no analyzer cache), and the Evaluator's baseline is the newest "
        "blessed model (not the served one after a rollback). A data gate that blocks still stops training and "
        "pushing: every step after it has a condition on its verdict, and KFP does not start them. Every step "
        "runs in --image, which must hold TFX 1.16 and this project. The defaults of --image, --pipeline-root, "
        "--data-root and --serving-dir are placeholders. Needs no network, Kubernetes or ML Metadata "
        "(docs/orchestration.md).",
    )
    parser.add_argument("--target", required=True, metavar="TARGET",
                        help=f"orchestrator to compile for: {', '.join(TARGETS)}")
    parser.add_argument("--out", required=True, metavar="FILE", help="PipelineJob JSON to write, e.g. pipeline.json")
    parser.add_argument("--date", type=date_arg,
                        help="span the compiled pipeline ingests, YYYY-MM-DD (fixed at compile time; "
                             "default: yesterday)")
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help=f"container image every step runs in: TFX 1.16 and this project installed, the "
                             f"project at /pipeline (default: the placeholder {DEFAULT_IMAGE})")
    parser.add_argument("--pipeline-root", default=DEFAULT_PIPELINE_ROOT, metavar="URI",
                        help=f"where the steps write their artifacts (default: the placeholder {DEFAULT_PIPELINE_ROOT})")
    parser.add_argument("--data-root", default=DEFAULT_DATA_ROOT, metavar="URI",
                        help=f"folder holding YYYY-MM-DD/*.csv spans (default: the placeholder {DEFAULT_DATA_ROOT})")
    parser.add_argument("--serving-dir", default=DEFAULT_SERVING_DIR, metavar="URI",
                        help=f"where AtomicPusher writes model versions (default: the placeholder {DEFAULT_SERVING_DIR})")
    parser.add_argument("--schema-file", default=DEFAULT_SCHEMA_FILE, metavar="PATH",
                        help=f"curated schema as the steps see it (default: the image's copy, {DEFAULT_SCHEMA_FILE})")
    parser.set_defaults(handler=cmd_compile)
