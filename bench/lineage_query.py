"""Benchmark (issue 22): `mlops lineage --served` and `--diff` on an ML Metadata store of 1,000 runs.

    .venv/bin/python bench/lineage_query.py [--runs 1000] [--repeats 20] [--cli-repeats 5] [--rebuild] [--keep]

The store is synthetic but written only through ML Metadata's own API (MetadataStore.put_*_type,
put_execution), in the shape TFX 1.16 and this project's components give it (copied from a store
that real `mlops run`s and `mlops rollback` wrote):

- contexts: the pipeline `taxi`, one `pipeline_run` per run (custom properties code_version and
  run_config), one `node` context per node (`taxi.<NodeId>`), one `execution_cache` context per
  cacheable execution; every execution associated with, and every artifact it reads or writes
  attributed to, its contexts, the way TFX registers an execution (inputs, state RUNNING) and then
  publishes it (outputs, state COMPLETE, plus the cache context): two put_execution calls;
- a nightly run (an Airflow DAG run: executions carry airflow_* properties): ImportSchemaGen
  (CACHED, an OUTPUT event to the same Schema every run; a fresh snapshot every SCHEMA_EVERY runs),
  three resolvers (previous_span_statistics, served_model, served_training_statistics: Resolver
  executions with INTERNAL_OUTPUT events and no inputs), SpanCheck (report: gate, span_date,
  blocked, findings, rows, files, input_files), CsvExampleGen (Examples: span, input_fingerprint,
  split_names), StatisticsGen, ExampleValidator, DriftValidator (inputs statistics, schema,
  schema_anomalies, served_statistics, previous_statistics; verdict with drift_distances),
  Transform, Trainer, GatedEvaluator (inputs examples, model, baseline_model = the served model;
  outputs evaluation with slice_metrics for 27 slices, and blessing) and AtomicPusher
  (PushedModel: pushed, pushed_version, push_kind, reason, ...);
- most runs push; about 10% are not blessed (the PushedModel records pushed=0), about 2.5% are
  blocked by SpanCheck (the run ends there) and 2.5% by the DriftValidator (ends before
  Transform); every ROLLBACK_EVERY runs a rollback run of two executions (a Resolver and an
  AtomicPusher whose inputs are the previous version's model and blessing). Statistics artifacts
  get real-sized FeatureStats.pb files and gate reports a report.txt (what a lineage query reads
  from disk besides ML Metadata).

Building it takes minutes (about 26 put_execution calls a run, each an SQLite transaction); it is
cached under CACHE_ROOT keyed by STORE_VERSION, the number of runs and the seed, and reused by
later runs (--rebuild forces a new one). A project home is made in a temp dir: var/metadata.sqlite
= a copy of the store, serving/models/taxi/<v>/ for the newest KEEP_VERSIONS pushed versions (as
retention leaves them; the newest is the served one, as `mlops lineage` reads it from the
directory when there is no models.config).

Measured, side by side in this one run, on the same versions:

- ours in-process: `lineage.served_lineage` (the newest push), `lineage.diff_lineage` (the newest
  version against the one pushed about DIFF_BACK runs earlier) and `lineage.version_lineage` of the
  newest rollback, on one open store: one untimed warm-up, then --repeats calls alternating with the
  naive walk's; median and max;
- ours cold: `mlops --home H lineage --served --json` and `--diff V1 V2 --json`, a fresh process
  each (--cli-repeats times): wall time, CPU time and peak RSS (getrusage of the child); and two
  floors without a query: `mlops --help` (the CLI's start-up) and a Python importing ML Metadata;
- naive: the same facts (push, model, blessing, evaluation, trainer, transform graph, schema,
  examples and span, statistics, drift verdict, span check and its input files) gathered by walking
  events one step at a time with the plain API (get_events_by_artifact_ids,
  get_events_by_execution_ids, get_artifacts_by_id, get_executions_by_id, get_contexts_by_execution,
  get_executions_by_context), as one writes it by hand; timed the same way.

Each in-process query also runs 5 more times through a wrapper around the store that counts and
times every ML Metadata call by method (where the time goes; the run with the median total).

Ours, naive, the cold CLI's JSON and what the builder recorded must agree on the key facts of each
chain (push, model, blessing, evaluation, trainer, transform graph, schema, examples, span,
statistics, each gate's report and verdict, input files, code version, train steps): the benchmark
fails (exit 1, nothing written) when they do not.
Target: each of ours under 0.5 s (the median; the max is shown). Writes the "Lineage queries
(issue 22)" section of bench/RESULTS.md. A missed target does not fail the benchmark (exit 0);
exit 1 only when a step itself failed (then the temp dir is kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import psutil
from common import CHILD_ENV, MLOPS, REPO, log, publish

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from components.util.spans import span_date, span_number
from components.util.statistics import statistics_rows
from pipelines import lineage
from pipelines.config import MetadataConfig
from serving.versions import list_versions

SECTION = "## Lineage queries (issue 22)"
STORE_VERSION = "2"  # change whenever the synthetic store's shape changes: older caches are then rebuilt
CACHE_ROOT = Path(tempfile.gettempdir()) / "bench-lineage-query-cache"
TARGET_S = 0.5
PIPELINE = "taxi"
FIRST_SPAN = dt.date(2024, 3, 1)
ROLLBACK_EVERY = 50  # a rollback run at run 25, 75, 125, ...
SCHEMA_EVERY = 350  # `mlops schema accept`: a new schema snapshot every this many runs
CODE_EVERY = 120  # a new code version (git sha) every this many runs
DIFF_BACK = 500  # --diff: the newest version against the one pushed about this many runs earlier
KEEP_VERSIONS = 5  # version directories left on disk (retention's default)
P_SPAN_CHECK, P_DRIFT, P_NOT_BLESSED = 0.025, 0.025, 0.10
HOME_IN_STORE = "/srv/mlops"  # the project home the synthetic executions name (input_base, push_base_directory)

# Type names as TFX registers them (the component class's full path), with the properties TFX gives them.
ARTIFACT_TYPES = {
    "Schema": ({}, None),
    "ExampleAnomalies": ({"span": pb.INT, "split_names": pb.STRING}, None),
    "Examples": ({"span": pb.INT, "version": pb.INT, "split_names": pb.STRING}, pb.ArtifactType.DATASET),
    "ExampleStatistics": ({"span": pb.INT, "split_names": pb.STRING}, pb.ArtifactType.STATISTICS),
    "TransformGraph": ({}, None),
    "Model": ({}, pb.ArtifactType.MODEL),
    "ModelRun": ({}, None),
    "ModelBlessing": ({}, None),
    "ModelEvaluation": ({}, None),
    "PushedModel": ({}, pb.ArtifactType.MODEL),
}
EXECUTION_TYPES = {
    "ImportSchemaGen": lineage.SCHEMA_GEN,
    "Resolver": "tfx.dsl.components.common.resolver.Resolver",
    "SpanCheck": "components.span_check.component.SpanCheck",
    "CsvExampleGen": lineage.EXAMPLE_GEN,
    "StatisticsGen": lineage.STATISTICS_GEN,
    "ExampleValidator": "tfx.components.example_validator.component.ExampleValidator",
    "DriftValidator": lineage.DRIFT_VALIDATOR,
    "Transform": lineage.TRANSFORM,
    "Trainer": lineage.TRAINER,
    "GatedEvaluator": lineage.EVALUATOR,
    "AtomicPusher": lineage.PUSHER,
}
CONTEXT_TYPES = ("pipeline", "pipeline_run", "node", "execution_cache")

NUMERIC_FEATURES = ("dropoff_census_tract", "dropoff_community_area", "dropoff_latitude", "dropoff_longitude", "fare",
                    "pickup_community_area", "pickup_latitude", "pickup_longitude", "tips", "trip_miles",
                    "trip_seconds", "trip_start_day", "trip_start_hour", "trip_start_month", "trip_start_timestamp")
STRING_FEATURES = {"company": 14, "payment_type": 4, "pickup_census_tract": 0}  # feature: top values
DRIFT_FEATURES = {"company": ("l_infinity", 0.1), "fare": ("jensen_shannon_divergence", 0.02),
                  "payment_type": ("l_infinity", 0.1), "tips": ("jensen_shannon_divergence", 0.02),
                  "trip_miles": ("jensen_shannon_divergence", 0.02), "trip_seconds": ("jensen_shannon_divergence", 0.02),
                  "trip_start_hour": ("jensen_shannon_divergence", 0.02)}
SLICES = ["overall"] + [f"trip_start_hour={h}" for h in range(24)] + ["payment_type=Cash", "payment_type=Credit Card"]
EVAL_CONFIG = json.dumps({
    "metrics_specs": [{"metrics": [
        {"class_name": "AUC", "config": "{\"name\": \"auc\"}", "per_slice_thresholds": [{
            "slicing_specs": [{}], "threshold": {"change_threshold": {"direction": "HIGHER_IS_BETTER", "relative": 0.01},
                                                 "value_threshold": {"lower_bound": 0.6}}}]},
        {"class_name": "BinaryAccuracy"}, {"class_name": "BinaryCrossentropy", "config": "{\"name\": \"loss\"}"},
        {"class_name": "ExampleCount"}, {"class_name": "MeanLabel", "config": "{\"name\": \"mean_label\"}"}]}],
    "model_specs": [{"label_key": "big_tipper_xf", "model_type": "tf_generic",
                     "preprocessing_function_names": ["transform_features"], "signature_name": "serving_default"}],
    "options": {"include_default_metrics": False},
    "slicing_specs": [{}, {"feature_keys": ["trip_start_hour"]}, {"feature_keys": ["payment_type"]}]}, indent=2)


class StepFailed(Exception):
    """A step of the benchmark did not do what it must (exit 1)."""


# ------------------------------------------------------------------------------ the synthetic store


def _set(message, key: str, value) -> None:
    """One custom property, typed as TFX types it."""
    target = message.custom_properties[key]
    if isinstance(value, bool) or isinstance(value, int):
        target.int_value = int(value)
    elif isinstance(value, float):
        target.double_value = value
    else:
        target.string_value = str(value)


def _event(kind, keys: Sequence[str]) -> pb.Event:
    """An event whose path is TFX's [key, index] steps (one pair per key when one artifact fills several)."""
    event = pb.Event(type=kind)
    for key in keys:
        event.path.steps.add().key = key
        event.path.steps.add().index = 0
    return event


def _sha(*parts) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def feature_stats_file(rows: int, seed: int) -> bytes:
    """A FeatureStats.pb the size of a real taxi span's (18 features; 10 standard and 100 quantile
    buckets per numeric feature): lineage reads num_examples from it."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    rng = random.Random(seed)
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    data = stats.datasets.add(num_examples=rows)
    for name in NUMERIC_FEATURES:
        feature = data.features.add(type=statistics_pb2.FeatureNameStatistics.FLOAT)
        feature.path.step.append(name)
        num = feature.num_stats
        num.mean, num.std_dev, num.min, num.max = rng.random(), rng.random(), 0.0, rng.random() * 100
        num.common_stats.num_non_missing, num.common_stats.min_num_values, num.common_stats.max_num_values = rows, 1, 1
        for kind, buckets in ((statistics_pb2.Histogram.STANDARD, 10), (statistics_pb2.Histogram.QUANTILES, 100)):
            histogram = num.histograms.add(type=kind)
            for i in range(buckets):
                histogram.buckets.add(low_value=i + rng.random(), high_value=i + 1 + rng.random(),
                                      sample_count=rows / buckets)
    for name, top in STRING_FEATURES.items():
        feature = data.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
        feature.path.step.append(name)
        feature.string_stats.common_stats.num_non_missing = rows
        feature.string_stats.unique = top
        for i in range(top):
            feature.string_stats.top_values.add(value=f"{name} value {i}", frequency=rows / (i + 2))
            feature.string_stats.rank_histogram.buckets.add(low_rank=i, high_rank=i, label=f"{name} value {i}",
                                                            sample_count=rows / (i + 2))
    return stats.SerializeToString()


class Builder:
    """Writes executions, artifacts, events and contexts the way TFX 1.16's launcher does, through
    MetadataStore only."""

    def __init__(self, path: Path, files: Path):
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = str(path)
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.root = files / "var" / "pipeline_root"
        self.templates = files / "templates"
        self.templates.mkdir(parents=True, exist_ok=True)
        for split, rows in (("train", 1213), ("eval", 287)):
            (self.templates / f"{split}.pb").write_bytes(feature_stats_file(rows, seed=rows))
        (self.templates / "report.txt").write_text("synthetic gate report\n")
        self.artifact_types: Dict[str, int] = {}
        self.execution_types: Dict[str, int] = {}
        self.context_types: Dict[str, int] = {}
        for name, (properties, base) in ARTIFACT_TYPES.items():
            kind = pb.ArtifactType(name=name, properties=properties)
            if base is not None:
                kind.base_type = base
            self.artifact_types[name] = self.store.put_artifact_type(kind)
        for node, name in EXECUTION_TYPES.items():
            self.execution_types[node] = self.store.put_execution_type(pb.ExecutionType(name=name))
        for name in CONTEXT_TYPES:
            self.context_types[name] = self.store.put_context_type(pb.ContextType(name=name))
        self.pipeline = pb.Context(type_id=self.context_types["pipeline"], name=PIPELINE)
        self.nodes: Dict[str, pb.Context] = {}
        self.counts = dict(executions=0, artifacts=0, events=0, calls=0)
        self.last_cache: Optional[pb.Context] = None  # the execution_cache context of the last run_node

    # -- nodes, artifacts and contexts

    def context(self, kind: str, name: str, **custom) -> pb.Context:
        context = pb.Context(type_id=self.context_types[kind], name=name)
        for key, value in custom.items():
            _set(context, key, value)
        return context

    def node(self, node_id: str) -> pb.Context:
        if node_id not in self.nodes:
            self.nodes[node_id] = self.context("node", f"{PIPELINE}.{node_id}")
        return self.nodes[node_id]

    def artifact(self, type_name: str, properties: Optional[dict] = None, **custom) -> pb.Artifact:
        artifact = pb.Artifact(type_id=self.artifact_types[type_name], state=pb.Artifact.LIVE)
        for key, value in (properties or {}).items():
            target = artifact.properties[key]
            if isinstance(value, int):
                target.int_value = value
            else:
                target.string_value = value
        for key, value in {"tfx_version": "1.16.0", "is_external": 0, **custom}.items():
            _set(artifact, key, value)
        return artifact

    def _put(self, execution: pb.Execution, pairs: List[Tuple[pb.Artifact, pb.Event]], contexts: List[pb.Context]):
        execution_id, artifact_ids, context_ids = self.store.put_execution(execution, pairs, contexts)
        execution.id = execution_id
        for (artifact, _), artifact_id in zip(pairs, artifact_ids):
            if not artifact.HasField("id"):
                artifact.id = artifact_id
                self.counts["artifacts"] += 1
        for context, context_id in zip(contexts, context_ids):
            context.id = context_id
        self.counts["events"] += sum(1 for _, event in pairs if event is not None)
        self.counts["calls"] += 1
        return execution

    def _execution(self, node: str, state, props: dict) -> pb.Execution:
        execution = pb.Execution(type_id=self.execution_types[node], name=str(uuid.uuid4()), last_known_state=state)
        for key, value in props.items():
            _set(execution, key, value)
        self.counts["executions"] += 1
        return execution

    def _files(self, node: str, key: str, artifact: pb.Artifact, execution_id: int) -> None:
        """The artifact's folder (TFX's <pipeline_root>/<node>/<key>/<execution id>) with the files
        lineage reads: FeatureStats.pb per split, a gate's report.txt."""
        folder = self.root / node / key / str(execution_id)
        artifact.uri = str(folder)
        type_name = next(n for n, i in self.artifact_types.items() if i == artifact.type_id)
        if type_name == "ExampleStatistics":
            for split in ("train", "eval"):
                (folder / f"Split-{split}").mkdir(parents=True, exist_ok=True)
                os.link(self.templates / f"{split}.pb", folder / f"Split-{split}" / "FeatureStats.pb")
        elif "gate" in artifact.custom_properties:
            folder.mkdir(parents=True, exist_ok=True)
            os.link(self.templates / "report.txt", folder / "report.txt")

    def run_node(self, run: pb.Context, node: str, inputs: List[Tuple[Sequence[str], pb.Artifact]],
                 outputs: List[Tuple[str, pb.Artifact]], props: dict, node_id: str = "") -> pb.Execution:
        """A node that runs: registered with its inputs (RUNNING), then published with its outputs
        (COMPLETE) and its execution_cache context."""
        contexts = [self.pipeline, run, self.node(node_id or node)]
        execution = self._execution(node, pb.Execution.RUNNING, props)
        self._put(execution, [(artifact, _event(pb.Event.INPUT, keys)) for keys, artifact in inputs], contexts)
        for key, artifact in outputs:
            self._files(node_id or node, key, artifact, execution.id)
        execution.last_known_state = pb.Execution.COMPLETE
        cache = self.context("execution_cache", _sha("cache", execution.id, execution.name))
        self._put(execution, [(artifact, _event(pb.Event.OUTPUT, [key])) for key, artifact in outputs],
                  contexts + [cache])
        self.last_cache = cache
        return execution

    def cached(self, run: pb.Context, node: str, outputs: List[Tuple[str, pb.Artifact]], cache: pb.Context,
               props: dict) -> pb.Execution:
        """A node served from cache: one CACHED execution whose OUTPUT events name the existing artifacts."""
        execution = self._execution(node, pb.Execution.CACHED, props)
        return self._put(execution, [(artifact, _event(pb.Event.OUTPUT, [key])) for key, artifact in outputs],
                         [self.pipeline, self.node(node), cache, run])

    def resolve(self, run: pb.Context, node_id: str, resolved: List[Tuple[str, pb.Artifact]], props: dict) -> pb.Execution:
        """A resolver node: INTERNAL_OUTPUT events to what it resolved, no inputs, no cache context."""
        execution = self._execution("Resolver", pb.Execution.COMPLETE, props)
        return self._put(execution, [(artifact, _event(pb.Event.INTERNAL_OUTPUT, [key])) for key, artifact in resolved],
                         [self.pipeline, run, self.node(node_id)])


def _metrics(rng: random.Random, base_auc: float) -> Dict[str, Dict[str, Optional[float]]]:
    out = {}
    for name in SLICES:
        count = 287.0 if name == "overall" else float(rng.randint(3, 120))
        mean_label = rng.uniform(0.0, 0.6)
        out[name] = {"auc": min(1.0, max(0.3, base_auc + rng.uniform(-0.08, 0.05))) if mean_label > 0 else None,
                     "binary_accuracy": rng.uniform(0.6, 0.95), "example_count": count,
                     "loss": rng.uniform(0.2, 0.7), "mean_label": mean_label}
    return out


def build_store(path: Path, files: Path, runs: int, seed: int) -> dict:
    """Writes `runs` runs into a new store at `path`; returns the manifest (counts, pushes, truth)."""
    started = time.monotonic()
    rng = random.Random(seed)
    b = Builder(path, files)
    home = HOME_IN_STORE
    truth: Dict[int, dict] = {}  # pushed version -> the facts its chain must show
    pushes: List[dict] = []  # every push (version, run index, kind, model id), oldest first
    counts = dict(nightly=0, rollback=0, pushed=0, not_blessed=0, span_check_blocked=0, drift_blocked=0)
    schema = schema_cache = None
    schema_sha = ""
    served = None  # the served push: {"version", "push", "model", "blessing", "statistics", "facts"}
    previous_statistics = None
    model_facts: Dict[int, dict] = {}  # model id -> its chain's facts (for rollbacks)
    model_parts: Dict[int, dict] = {}  # model id -> its artifacts (for rollbacks)
    code = _sha("code", 0)[:40]
    config = {"batch_size": 64, "beam_mode": "multi_processing", "eval_steps": 50,
              "gates": {"auc_floor": 0.6, "min_relative_improvement": 0.01, "min_slice_examples": 50,
                        "slice_margin": 0.05}, "keep_versions": KEEP_VERSIONS, "strategy": "auto", "train_steps": 300}
    day = FIRST_SPAN - dt.timedelta(days=1)
    last_progress = time.monotonic()
    for index in range(runs):
        if index % CODE_EVERY == 0:
            code = _sha("code", index)[:40]
        if index and index % 400 == 0:
            config["train_steps"] += 100
        code_version = f"git:{code}"
        rollback = index % ROLLBACK_EVERY == ROLLBACK_EVERY // 2 and served is not None and len(pushes) >= 2
        if rollback:
            counts["rollback"] += 1
            stamp = (dt.datetime.combine(day, dt.time(11, 30)) + dt.timedelta(seconds=index)).strftime("%Y%m%dT%H%M%S%f")
            run = b.context("pipeline_run", f"rollback__{stamp}")
            airflow = {"airflow_dag_id": "model_rollback", "airflow_run_id": f"manual__{stamp}",
                       "airflow_try_number": "1"}
            # `mlops rollback --previous`: the newest pushed model older than the served one.
            target = next(p for p in reversed(pushes) if p["model_id"] != served["model"].id)
            parts = model_parts[target["model_id"]]
            b.resolve(run, "rollback_target", [("blessing", parts["blessing"]), ("model", parts["model"])],
                      {"code_version": code_version, **airflow, "airflow_task_id": "rollback"})
            version = pushes[-1]["version"] + 1
            push = b.artifact("PushedModel", push_kind="rollback", rollback_trigger="alert",
                              requested_by="alertmanager", replaced_version=served["version"],
                              source_model_id=parts["model"].id, model_fingerprint=_sha("model", parts["model"].id),
                              pushed=1, pushed_version=version, reason=f"ServingErrorRateHigh firing on version "
                              f"{served['version']}", pushed_at=f"{day.isoformat()}T11:30:00+00:00",
                              pushed_destination=f"{home}/serving/models/taxi",
                              pruned_versions=str(version - KEEP_VERSIONS) if version > KEEP_VERSIONS else "")
            pusher = b.run_node(run, "AtomicPusher", [(("model",), parts["model"]), (("model_blessing",), parts["blessing"])],
                                [("pushed_model", push)],
                                {"code_version": code_version, **airflow, "airflow_task_id": "rollback",
                                 "push_kind": "rollback", "trigger": "alert", "requested_by": "alertmanager",
                                 "reason": push.custom_properties["reason"].string_value, "allow_repush": 1,
                                 "keep_versions": KEEP_VERSIONS, "project_home": home,
                                 "push_base_directory": f"{home}/serving/models/taxi"})
            facts = dict(model_facts[parts["model"].id], push=push.id, kind="rollback", version=version,
                         pusher=pusher.id)
            truth[version] = facts
            pushes.append({"version": version, "run": index, "kind": "rollback", "model_id": parts["model"].id})
            served = {"version": version, "push": push, "model": parts["model"], "blessing": parts["blessing"],
                      "statistics": parts["statistics"]}
        else:
            counts["nightly"] += 1
            day += dt.timedelta(days=1)
            span = day.isoformat()
            airflow_run = f"scheduled__{span}T02:00:00+00:00"
            run = b.context("pipeline_run", f"nightly_retrain__{airflow_run}", code_version=code_version,
                            run_config=json.dumps(dict(config, span=span, schema_sha256=schema_sha), sort_keys=True))

            def props(task: str, **more) -> dict:
                return {"code_version": code_version, "airflow_dag_id": "nightly_retrain", "airflow_run_id": airflow_run,
                        "airflow_task_id": task, "airflow_try_number": "1", **more}

            # ImportSchemaGen: a new snapshot now and then (`mlops schema accept`), else cached.
            if index % SCHEMA_EVERY == 0:
                schema_sha = _sha("schema", index)[:16]
                run.custom_properties["run_config"].string_value = json.dumps(
                    dict(config, span=span, schema_sha256=schema_sha), sort_keys=True)
                schema = b.artifact("Schema")
                b.run_node(run, "ImportSchemaGen", [], [("schema", schema)],
                           props("ImportSchemaGen", schema_file=f"{home}/var/schemas/taxi/{schema_sha[:12]}.pbtxt"))
                schema_cache = b.last_cache  # later runs are served from this cache entry
            else:
                b.cached(run, "ImportSchemaGen", [("schema", schema)], schema_cache,
                         props("ImportSchemaGen", schema_file=f"{home}/var/schemas/taxi/{schema_sha[:12]}.pbtxt"))
            b.resolve(run, "previous_span_statistics", [("statistics", previous_statistics)] if previous_statistics else [],
                      props("previous_span_statistics"))
            b.resolve(run, "served_model", [("model", served["model"]), ("pushed_model", served["push"])] if served else [],
                      props("served_model"))
            b.resolve(run, "served_training_statistics", [("statistics", served["statistics"])] if served else [],
                      props("served_training_statistics"))

            u = rng.random()
            warmed = index >= 3  # the first runs always push: a history starts with a served model
            span_blocked = warmed and u < P_SPAN_CHECK
            drift_blocked = warmed and not span_blocked and u < P_SPAN_CHECK + P_DRIFT
            not_blessed = warmed and not span_blocked and not drift_blocked and u < P_SPAN_CHECK + P_DRIFT + P_NOT_BLESSED
            if index == runs - 1:
                span_blocked = drift_blocked = not_blessed = False  # the newest run pushes: it is served

            parts = rng.choice((1, 1, 1, 2, 3))
            files = [{"name": f"part-{i}.csv", "bytes": 190000 // parts + rng.randint(0, 5000), "rows": 1500 // parts,
                      "sha256": _sha("file", span, i)} for i in range(parts)]
            rows = sum(f["rows"] for f in files)
            findings = ([{"blocking": True, "feature": "tips", "fix": "fix the data producer and rerun the span",
                          "kind": "missing_column", "message": "tips: required column missing"}] if span_blocked else [])
            report = b.artifact("ExampleAnomalies", gate=lineage.SPAN_CHECK_GATE, span_date=span, blocked=int(span_blocked),
                                findings=json.dumps(findings), rows=rows, files=len(files), duplicate_rows=0,
                                input_files=json.dumps(files, sort_keys=True),
                                problem=f"span {span} blocked before ExampleGen: tips: required column missing"
                                if span_blocked else "", fix="fix the data producer" if span_blocked else "")
            span_check = b.run_node(run, "SpanCheck", [(("schema",), schema)], [("report", report)],
                                    props("SpanCheck", span_date=span, input_base=f"{home}/data/incoming",
                                          fingerprint=_sha("fp", span)[:16], max_duplicate_fraction=0.05))
            if span_blocked:
                counts["span_check_blocked"] += 1
                continue
            fingerprint = f"split:single_split,num_files:{len(files)},total_bytes:{sum(f['bytes'] for f in files)}"
            examples = b.artifact("Examples", {"split_names": '["train", "eval"]'}, span=span_number(day),
                                  input_fingerprint=fingerprint, file_format="tfrecords_gzip",
                                  payload_format="FORMAT_TF_EXAMPLE")
            example_gen = b.run_node(run, "CsvExampleGen", [], [("examples", examples)],
                                     props("CsvExampleGen", span=span_number(day), input_fingerprint=fingerprint,
                                           input_base=f"{home}/data/incoming", output_file_format=5, output_data_format=6,
                                           input_config=json.dumps({"splits": [{"name": "single_split",
                                                                                "pattern": f"{span}/*.csv"}]})))
            stats = b.artifact("ExampleStatistics", {"span": span_number(day), "split_names": '["train", "eval"]'},
                               stats_dashboard_link="", sample_rate_by_split='{"eval": 1.0, "train": 1.0}')
            statistics_gen = b.run_node(run, "StatisticsGen", [(("examples",), examples)], [("statistics", stats)],
                                        props("StatisticsGen", exclude_splits="[]"))
            schema_anomalies = b.artifact("ExampleAnomalies", {"split_names": '["train", "eval"]', "span": 0},
                                          blessed='{"eval": 1.0, "train": 1.0}')
            b.run_node(run, "ExampleValidator", [(("statistics",), stats), (("schema",), schema)],
                       [("anomalies", schema_anomalies)], props("ExampleValidator", exclude_splits="[]"))
            distances = {}
            for feature, (comparator, threshold) in DRIFT_FEATURES.items():
                distance = round(rng.uniform(0.0, threshold * 0.8), 6)
                if drift_blocked and feature == "trip_miles":
                    distance = round(threshold * 5.5, 6)
                distances[feature] = {"baseline": "served_model_training", "blocked": distance > threshold,
                                      "bucket_mismatch": None, "comparator": comparator, "distance": distance,
                                      "per_baseline": {"previous_span": distance, "served_model_training": distance},
                                      "threshold": threshold, "warn": False}
            drift_findings = ([{"blocking": True, "feature": "trip_miles", "kind": "drift", "threshold": 0.02,
                                "distance": distances["trip_miles"]["distance"],
                                "message": "trip_miles: Jensen-Shannon divergence over 0.02"}] if drift_blocked else [])
            verdict = b.artifact("ExampleAnomalies", {"split_names": '["train"]'}, gate=lineage.DRIFT_GATE, span_date=span,
                                 blocked=int(drift_blocked), findings=json.dumps(drift_findings),
                                 drift_distances=json.dumps(distances, sort_keys=True),
                                 schema_anomaly_count=0, drift_anomaly_count=int(drift_blocked), drift_warning_count=0,
                                 problem=f"span {span} blocked before training: trip_miles" if drift_blocked else "",
                                 fix="fix the data producer" if drift_blocked else "",
                                 **{f"drift:{k}": v["distance"] for k, v in distances.items()})
            drift_inputs: List[Tuple[Sequence[str], pb.Artifact]] = [(("schema",), schema),
                                                                     (("schema_anomalies",), schema_anomalies),
                                                                     (("statistics",), stats)]
            baselines = [(key, a) for key, a in (("served_statistics", served and served["statistics"]),
                                                 ("previous_statistics", previous_statistics)) if a is not None]
            if len(baselines) == 2 and baselines[0][1].id == baselines[1][1].id:
                drift_inputs.append((("served_statistics", "previous_statistics"), baselines[0][1]))  # one event, two keys
            else:
                drift_inputs += [((key,), a) for key, a in baselines]
            drift = b.run_node(run, "DriftValidator", drift_inputs, [("anomalies", verdict)],
                               props("DriftValidator", span_label=span, warn_only_features=""))
            previous_statistics = stats
            if drift_blocked:
                counts["drift_blocked"] += 1
                continue
            graph = b.artifact("TransformGraph")
            transformed = b.artifact("Examples", {"split_names": '["eval", "train"]'})
            transform = b.run_node(run, "Transform", [(("schema",), schema), (("examples",), examples)],
                                   [("transform_graph", graph), ("transformed_examples", transformed)],
                                   props("Transform", preprocessing_fn="pipelines.taxi.preprocessing.preprocessing_fn",
                                         force_tf_compat_v1=0, custom_config="null", disable_statistics=1))
            model = b.artifact("Model")
            model_run = b.artifact("ModelRun")
            trainer = b.run_node(run, "Trainer", [(("transform_graph",), graph), (("schema",), schema),
                                                  (("examples",), transformed)],
                                 [("model", model), ("model_run", model_run)],
                                 props("Trainer", run_fn="pipelines.taxi.model.run_fn",
                                       custom_config=json.dumps({"batch_size": 64, "strategy": "auto"}),
                                       train_args=json.dumps({"num_steps": config["train_steps"]}, indent=2),
                                       eval_args=json.dumps({"num_steps": config["eval_steps"]}, indent=2)))
            baseline = served["model"] if served else None
            candidate = _metrics(rng, 0.62 if not_blessed else 0.78)
            evaluation = b.artifact("ModelEvaluation", slice_metrics=json.dumps(
                {"candidate": candidate, "baseline": _metrics(rng, 0.76) if baseline else {}}, sort_keys=True))
            reason = ("slice guard: trip_start_hour=3: auc 0.61 below the served model's 0.70 by more than 0.05"
                      if not_blessed else f"passed every threshold against model {baseline.id}" if baseline
                      else "passed every threshold against the absolute thresholds (no model served yet)")
            blessing = b.artifact("ModelBlessing", current_model=f"{b.root}/Trainer/model/{trainer.id}",
                                  current_model_id=model.id, blessed=0 if not_blessed else 1, reason=reason,
                                  **({"baseline_model": baseline.uri, "baseline_model_id": baseline.id} if baseline else {}))
            evaluator = b.run_node(run, "GatedEvaluator",
                                   [(("examples",), examples), (("model",), model)]
                                   + ([(("baseline_model",), baseline)] if baseline else []),
                                   [("evaluation", evaluation), ("blessing", blessing)],
                                   props("GatedEvaluator", eval_config=EVAL_CONFIG, example_splits="null",
                                         slice_margin=0.05, min_slice_examples=50))
            facts = {"model": model.id, "blessing": blessing.id, "blessed": not not_blessed, "evaluation": evaluation.id,
                     "trainer": trainer.id, "transform_graph": graph.id, "schema": schema.id, "examples": examples.id,
                     "span": span, "statistics": stats.id, "rows": {"train": 1213, "eval": 287},
                     "gates": [[lineage.SPAN_CHECK_GATE, report.id, False], [lineage.DRIFT_GATE, verdict.id, False]],
                     "input_files": len(files), "code_version": code_version, "train_steps": config["train_steps"],
                     "evaluator": evaluator.id, "transform": transform.id, "example_gen": example_gen.id,
                     "statistics_gen": statistics_gen.id, "drift": drift.id, "span_check": span_check.id}
            model_facts[model.id] = facts
            model_parts[model.id] = {"model": model, "blessing": blessing, "statistics": stats}
            version = (pushes[-1]["version"] + 1) if pushes else 1
            push_props = dict(source_model_id=model.id, push_kind="nightly", requested_by="airflow",
                              replaced_version=served["version"] if served else 0,
                              pushed_destination=f"{home}/serving/models/taxi")
            if not_blessed:
                counts["not_blessed"] += 1
                push = b.artifact("PushedModel", pushed=0, reason=f"model {model.id} is not blessed: {reason}", **push_props)
            else:
                push = b.artifact("PushedModel", pushed=1, pushed_version=version, reason="blessed by the Evaluator",
                                  pushed_at=f"{span}T02:41:00+00:00", model_fingerprint=_sha("model", model.id),
                                  pruned_versions=str(version - KEEP_VERSIONS) if version > KEEP_VERSIONS else "",
                                  **push_props)
            pusher = b.run_node(run, "AtomicPusher", [(("model",), model), (("model_blessing",), blessing)],
                                [("pushed_model", push)],
                                props("AtomicPusher", push_kind="nightly", trigger="", requested_by="", reason="",
                                      allow_repush=0, keep_versions=KEEP_VERSIONS, project_home=home,
                                      push_base_directory=f"{home}/serving/models/taxi"))
            if not not_blessed:
                counts["pushed"] += 1
                truth[version] = dict(facts, push=push.id, kind="nightly", version=version, pusher=pusher.id)
                pushes.append({"version": version, "run": index, "kind": "nightly", "model_id": model.id})
                served = {"version": version, "push": push, "model": model, "blessing": blessing, "statistics": stats}
        if time.monotonic() - last_progress > 10 or index == runs - 1:
            last_progress = time.monotonic()
            elapsed = last_progress - started
            log(f"store: {index + 1}/{runs} runs written ({b.counts['executions']} executions, {b.counts['artifacts']} "
                f"artifacts, {b.counts['events']} events) in {elapsed:.0f} s; about "
                f"{elapsed / (index + 1) * (runs - index - 1):.0f} s to go")
    contexts = len(b.store.get_contexts())
    return dict(store_version=STORE_VERSION, runs=runs, seed=seed, seconds=time.monotonic() - started,
                **counts, **b.counts, contexts=contexts, bytes=path.stat().st_size, pushes=pushes,
                truth={str(k): v for k, v in truth.items()})


def cached_store(cache: Path, runs: int, seed: int, rebuild: bool) -> Tuple[Path, dict]:
    """The store of `runs` runs, built once and kept under `cache` (keyed by STORE_VERSION, runs, seed)."""
    folder = cache / f"v{STORE_VERSION}-{runs}runs-seed{seed}"
    store, manifest_file = folder / "metadata.sqlite", folder / "manifest.json"
    if manifest_file.is_file() and store.is_file() and not rebuild:
        manifest = json.loads(manifest_file.read_text())
        log(f"reusing the cached store {store} ({manifest['runs']} runs, built in {manifest['seconds']:.0f} s; "
            "--rebuild makes a new one)")
        return store, dict(manifest, reused=True)
    shutil.rmtree(folder, ignore_errors=True)
    for stale in cache.glob("v*-*runs-seed*"):  # stores of older STORE_VERSIONs are never read again
        if not stale.name.startswith(f"v{STORE_VERSION}-"):
            log(f"removing {stale} (an older store version)")
            shutil.rmtree(stale, ignore_errors=True)
    folder.mkdir(parents=True)
    building = folder / "building.sqlite"
    log(f"building the store: {runs} runs through ML Metadata's API into {building} (once; cached afterwards)")
    manifest = build_store(building, folder, runs, seed)
    building.rename(store)
    manifest["bytes"] = store.stat().st_size
    manifest_file.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    log(f"store built in {manifest['seconds']:.0f} s: {manifest['executions']} executions, {manifest['artifacts']} "
        f"artifacts, {manifest['events']} events, {manifest['contexts']} contexts, {manifest['bytes'] / 2**20:.0f} MiB")
    return store, dict(manifest, reused=False)


def table_rows(store: Path) -> Dict[str, int]:
    """Row counts of ML Metadata's tables (read with sqlite3, for the report only)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("Execution", "Artifact", "Event", "EventPath", "Context", "Attribution", "Association",
                              "ArtifactProperty", "ExecutionProperty", "ContextProperty")}


# ------------------------------------------------------------------------------- the naive walk


class Naive:
    """A chain gathered the way one writes it by hand: one plain ML Metadata call per step."""

    def __init__(self, store):
        self.store = store

    def _events_of_artifact(self, artifact_id: int):
        return self.store.get_events_by_artifact_ids([artifact_id])

    def _events_of_execution(self, execution_id: int):
        return self.store.get_events_by_execution_ids([execution_id])

    @staticmethod
    def _key(event) -> str:
        return event.path.steps[0].key if event.path.steps else ""

    def producer(self, artifact_id: int) -> Optional[int]:
        ids = [e.execution_id for e in self._events_of_artifact(artifact_id) if e.type == pb.Event.OUTPUT]
        return min(ids) if ids else None

    def input(self, execution_id: int, key: str) -> Optional[int]:
        ids = [e.artifact_id for e in self._events_of_execution(execution_id)
               if e.type == pb.Event.INPUT and self._key(e) == key]
        return min(ids) if ids else None

    def output(self, execution_id: int, key: str) -> Optional[int]:
        ids = [e.artifact_id for e in self._events_of_execution(execution_id)
               if e.type == pb.Event.OUTPUT and self._key(e) == key]
        return min(ids) if ids else None

    def artifact(self, artifact_id: int):
        return self.store.get_artifacts_by_id([artifact_id])[0]

    def execution(self, execution_id: int):
        return self.store.get_executions_by_id([execution_id])[0]

    def run_of(self, execution_id: int):
        run_type = self.store.get_context_type("pipeline_run").id
        return next((c for c in self.store.get_contexts_by_execution(execution_id) if c.type_id == run_type), None)

    def consumers(self, artifact_id: int, key: str, type_name: str) -> List[int]:
        ids = [e.execution_id for e in self._events_of_artifact(artifact_id)
               if e.type == pb.Event.INPUT and self._key(e) == key]
        type_id = self.store.get_execution_type(type_name).id
        return sorted(x.id for x in self.store.get_executions_by_id(ids) if x.type_id == type_id) if ids else []

    def in_run(self, candidates: List[int], run_name: str) -> Optional[int]:
        same = [c for c in candidates if (self.run_of(c) or pb.Context()).name == run_name]
        return same[-1] if same else (candidates[0] if candidates else None)

    def chain(self, version: int) -> dict:
        pushed = [a for a in self.store.get_artifacts_by_type("PushedModel")
                  if a.custom_properties["pushed"].int_value == 1
                  and a.custom_properties["pushed_version"].int_value == version]
        if not pushed:
            raise StepFailed(f"naive: no push of version {version}")
        push = max(pushed, key=lambda a: a.id)
        pusher = self.producer(push.id)
        model_id, blessing_id = self.input(pusher, "model"), self.input(pusher, "model_blessing")
        blessing = self.artifact(blessing_id)
        trainer = self.producer(model_id)
        trainer_execution = self.execution(trainer)
        training_run = self.run_of(trainer)
        evaluator = self.producer(blessing_id)
        evaluation_id = self.output(evaluator, "evaluation")
        evaluation = self.artifact(evaluation_id)
        slices = json.loads(evaluation.custom_properties["slice_metrics"].string_value)["candidate"]
        graph_id = self.input(trainer, "transform_graph")
        schema_id = self.input(trainer, "schema")
        schema_gen = self.producer(schema_id)
        transform = self.producer(graph_id)
        examples_id = self.input(transform, "examples")
        examples = self.artifact(examples_id)
        example_gen = self.producer(examples_id)
        statistics_gen = self.in_run(self.consumers(examples_id, "examples", lineage.STATISTICS_GEN), training_run.name)
        statistics_id = self.output(statistics_gen, "statistics")
        statistics_uri = self.artifact(statistics_id).uri
        drift = self.in_run(self.consumers(statistics_id, "statistics", lineage.DRIFT_VALIDATOR), training_run.name)
        verdict = self.artifact(self.output(drift, "anomalies"))
        # SpanCheck orders ExampleGen without an event: its report is in the same run.
        span_check_type = self.store.get_execution_type("components.span_check.component.SpanCheck").id
        run = self.run_of(example_gen)
        span_check = next(x.id for x in self.store.get_executions_by_context(run.id) if x.type_id == span_check_type)
        report = self.artifact(self.output(span_check, "report"))
        input_files = json.loads(report.custom_properties["input_files"].string_value)
        schema_file = self.execution(schema_gen).custom_properties["schema_file"].string_value
        return {
            "version": version, "push": push.id, "kind": push.custom_properties["push_kind"].string_value,
            "pusher": pusher, "model": model_id, "blessing": blessing_id,
            "blessed": blessing.custom_properties["blessed"].int_value == 1, "evaluation": evaluation_id,
            "slices": len(slices), "trainer": trainer, "transform_graph": graph_id, "schema": schema_id,
            "schema_file": schema_file, "examples": examples_id,
            "span": span_date(examples.custom_properties["span"].int_value), "statistics": statistics_id,
            "rows": statistics_rows(statistics_uri),
            "gates": [[lineage.SPAN_CHECK_GATE, report.id, report.custom_properties["blocked"].int_value == 1],
                      [lineage.DRIFT_GATE, verdict.id, verdict.custom_properties["blocked"].int_value == 1]],
            "input_files": len(input_files),
            "code_version": training_run.custom_properties["code_version"].string_value,
            "train_steps": json.loads(trainer_execution.custom_properties["train_args"].string_value)["num_steps"],
        }

    def diff(self, left: int, right: int) -> dict:
        a, b = self.chain(left), self.chain(right)
        return {"left": a, "right": b, "differing": sorted(k for k in a if a[k] != b[k])}


# ------------------------------------------------------------------------------- agreement


KEY_FACTS = ("push", "kind", "pusher", "model", "blessing", "blessed", "evaluation", "trainer", "transform_graph",
             "schema", "examples", "span", "statistics", "rows", "gates", "input_files", "code_version", "train_steps")


def facts_of_chain(chain: dict) -> dict:
    """The key facts of one of our chains (the JSON document's `chain`), named as the naive walk names them."""
    training = chain.get("training") or {}
    return {
        "push": chain["push"]["artifact_id"], "kind": chain["push"]["kind"],
        "pusher": (chain["push"].get("execution") or {}).get("execution_id"),
        "model": (chain.get("model") or {}).get("artifact_id"),
        "blessing": (chain.get("blessing") or {}).get("artifact_id"),
        "blessed": (chain.get("blessing") or {}).get("blessed"),
        "evaluation": (chain.get("evaluation") or {}).get("artifact_id"),
        "slices": len((chain.get("evaluation") or {}).get("metrics") or {}),
        "trainer": (training.get("execution") or {}).get("execution_id"),
        "transform_graph": (chain.get("transform") or {}).get("artifact_id"),
        "schema": (chain.get("schema") or {}).get("artifact_id"),
        "schema_file": (chain.get("schema") or {}).get("snapshot"),
        "examples": (chain.get("examples") or {}).get("artifact_id"),
        "span": (chain.get("examples") or {}).get("span"),
        "statistics": (chain.get("statistics") or {}).get("artifact_id"),
        "rows": (chain.get("statistics") or {}).get("rows"),
        "gates": [[g["gate"], g["artifact_id"], g["blocked"]] for g in chain.get("gates") or []],
        "input_files": len(chain.get("input_files") or []),
        "code_version": (training.get("run") or {}).get("code_version"),
        "train_steps": training.get("train_steps"),
    }


def check_agree(what: str, ours: dict, naive: dict, truth: dict) -> None:
    """Ours, naive and the builder's record agree on every key fact, or StepFailed names the first that differ."""
    problems = [f"{key}: ours {ours.get(key)!r}, naive {naive.get(key)!r}, recorded {truth.get(key)!r}"
                for key in KEY_FACTS if not (ours.get(key) == naive.get(key) == truth.get(key))]
    problems += [f"{key}: ours {ours.get(key)!r}, naive {naive.get(key)!r}"
                 for key in ("slices", "schema_file") if ours.get(key) != naive.get(key)]
    if problems:
        raise StepFailed(f"{what}: ours and the naive walk disagree:\n  " + "\n  ".join(problems))


# ------------------------------------------------------------------------------- timing


def timed_pair(ours: Callable[[], object], naive: Callable[[], object], repeats: int) -> Tuple[dict, dict]:
    """One untimed warm-up call of each, then `repeats` timed calls of each, alternating (so that a busy
    moment of the shared machine hits both): median, max and min seconds, and the last result."""
    fns, results, seconds = (ours, naive), [ours(), naive()], ([], [])
    for i in range(repeats):
        for way in ((0, 1) if i % 2 == 0 else (1, 0)):
            started = time.perf_counter()
            results[way] = fns[way]()
            seconds[way].append(time.perf_counter() - started)
    return tuple(dict(median=statistics.median(x), max=max(x), min=min(x), result=r, n=repeats)
                 for x, r in zip(seconds, results))


class CountingStore:
    """A MetadataStore that counts and times each call by method (and what the answers held)."""

    def __init__(self, store):
        self._store = store
        self.calls: Counter = Counter()
        self.seconds: Counter = Counter()
        self.returned: Counter = Counter()  # method -> nodes returned (artifacts, executions, events, contexts)
        self.graph: Counter = Counter()  # executions / contexts / schema_gens in get_lineage_subgraph answers

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            started = time.perf_counter()
            result = attr(*args, **kwargs)
            self.seconds[name] += time.perf_counter() - started
            self.calls[name] += 1
            if isinstance(result, pb.LineageGraph):
                types = {t.id: t.name for t in result.execution_types}
                self.graph["executions"] += len(result.executions)
                self.graph["contexts"] += len(result.contexts)
                self.graph["schema_gens"] += sum(types.get(e.type_id) == lineage.SCHEMA_GEN for e in result.executions)
                self.returned[name] += len(result.executions) + len(result.artifacts)
            elif isinstance(result, (list, tuple)):
                self.returned[name] += len(result)
            return result

        return call


def profile(store, fn: Callable[[object], object], passes: int = 5) -> dict:
    """`fn(store)` `passes` times through a CountingStore; the pass with the median total: ML Metadata
    calls and seconds by method, what came back, and the rest (Python, files)."""
    runs = []
    for _ in range(passes):
        counting = CountingStore(store)
        started = time.perf_counter()
        fn(counting)
        runs.append((time.perf_counter() - started, counting))
    total, counting = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
    return dict(total=total, calls=dict(counting.calls), seconds=dict(counting.seconds),
                returned=dict(counting.returned), graph=dict(counting.graph), mlmd=sum(counting.seconds.values()))


def run_child(cmd: List[str], out: Path) -> dict:
    """One fresh process: wall seconds, CPU seconds and peak RSS (getrusage of the child), its stdout."""
    started = time.monotonic()
    with open(out, "w") as stdout, open(out.with_suffix(".err"), "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=CHILD_ENV)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise StepFailed(f"`{' '.join(cmd)}` exited {proc.returncode}: {out.with_suffix('.err').read_text()[-2000:]}")
    return dict(seconds=seconds, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss / 1024)


def run_cold(name: str, cmd: List[str], logs: Path, repeats: int) -> dict:
    """`cmd` in a fresh process `repeats` times: median and max wall seconds, median CPU, peak RSS, last stdout."""
    log(f"cold: {name} x{repeats}")
    runs = [run_child(cmd, logs / f"{name}-{i + 1}.out") for i in range(repeats)]
    seconds = [r["seconds"] for r in runs]
    return dict(median=statistics.median(seconds), max=max(seconds), cpu=statistics.median(r["cpu"] for r in runs),
                rss_mb=max(r["rss_mb"] for r in runs), n=repeats,
                stdout=(logs / f"{name}-{repeats}.out").read_text())


def make_home(tmp: Path, store: Path, manifest: dict) -> Tuple[Path, List[int]]:
    """A project home on the synthetic store: var/metadata.sqlite and the newest pushed version
    directories (retention's KEEP_VERSIONS; the newest is served)."""
    home = tmp / "home"
    (home / "var").mkdir(parents=True)
    shutil.copy(store, home / "var" / "metadata.sqlite")
    base = home / "serving" / "models" / "taxi"
    versions = [p["version"] for p in manifest["pushes"]][-KEEP_VERSIONS:]
    for version in versions:
        (base / str(version) / "variables").mkdir(parents=True)
        (base / str(version) / "saved_model.pb").write_bytes(b"synthetic")
    return home, versions


def pick_versions(manifest: dict) -> dict:
    """The served version (the newest push), a nightly one about DIFF_BACK runs older, the newest rollback."""
    pushes = manifest["pushes"]
    newest = pushes[-1]
    nightly = [p for p in pushes if p["kind"] == "nightly"]
    old = min(nightly, key=lambda p: abs(p["run"] - (newest["run"] - DIFF_BACK)))
    rollback = [p for p in pushes if p["kind"] == "rollback"]
    return {"served": newest, "old": old, "rollback": rollback[-1] if rollback else None}


# ------------------------------------------------------------------------------- the report


def verdict(seconds: float) -> str:
    return "met" if seconds < TARGET_S else "**missed**"


def where(p: dict) -> str:
    """The ML Metadata calls of one query, biggest first: `method` N x, ms (what came back)."""
    parts = []
    for method, seconds in sorted(p["seconds"].items(), key=lambda kv: -kv[1]):
        calls, returned = p["calls"][method], p["returned"].get(method, 0)
        what = ""
        if method == "get_lineage_subgraph":
            what = (f"; {p['graph']['executions']:.0f} executions ({p['graph']['schema_gens']:.0f} ImportSchemaGen), "
                    f"{p['graph']['contexts']:.0f} contexts")
        elif returned:
            what = f"; {returned:.0f} returned"
        parts.append(f"`{method}` {calls:.0f}x {seconds * 1000:.0f} ms{what}")
    return "<br>".join(parts[:4]) + (f"<br>{len(parts) - 4} more methods" if len(parts) > 4 else "")


def render(meta: dict, manifest: dict, tables: Dict[str, int], queries: List[dict], cold: Dict[str, dict],
           commands: List[str]) -> str:
    mem = psutil.virtual_memory().total / 2**30
    picked = meta["versions"]
    served, old = picked["served"], picked["old"]
    lines = [
        SECTION, "",
        f"Date: {meta['date']}. Machine: {os.cpu_count()} CPUs (nproc), {mem:.1f} GiB RAM; load average "
        f"{meta['load0']:.2f} at start, {meta['load1']:.2f} at end. Other work may have run on this machine at the same "
        "time, so treat single timings as +-10-20%.",
        f"Store: {manifest['runs']:,} runs written through ML Metadata's API in the shape TFX 1.16 and our components "
        f"give it ({manifest['nightly']} nightly runs on consecutive spans: {manifest['pushed']} pushed, "
        f"{manifest['not_blessed']} not blessed, {manifest['span_check_blocked']} blocked by SpanCheck, "
        f"{manifest['drift_blocked']} by the DriftValidator; {manifest['rollback']} rollback runs; a new schema snapshot "
        f"every {SCHEMA_EVERY} runs): {tables['Execution']:,} executions, {tables['Artifact']:,} artifacts, "
        f"{tables['Event']:,} events, {tables['Context']:,} contexts, {tables['Attribution']:,} attributions, "
        f"{tables['Association']:,} associations, {tables['ArtifactProperty']:,} artifact properties; "
        f"{manifest['bytes'] / 2**20:.0f} MiB of SQLite. Building it took {manifest['seconds']:.0f} s "
        f"({manifest['calls']:,} put_execution calls; "
        + ("reused from the bench's cache this run" if manifest["reused"] else "built this run, cached for the next")
        + ").",
        f"Versions: served = v{served['version']} (the newest push, run {served['run']}); `--diff` = "
        f"v{old['version']} (run {old['run']}, {served['run'] - old['run']} runs earlier) against v{served['version']}"
        + (f"; rollback = v{picked['rollback']['version']} (run {picked['rollback']['run']}, the newest rollback: "
           "an older model pushed again)" if picked["rollback"] else "") + ".",
        "How measured: in-process = one store opened read-only (`lineage.open_store`), one untimed warm-up call of "
        f"each way, then {meta['repeats']} timed calls of each, ours and naive alternating (median / max). Ours = `pipelines/lineage.py` (two `get_lineage_subgraph` "
        "calls per chain plus filter queries). Naive = the same facts walked one step at a time with the plain API "
        "(`get_events_by_artifact_ids`, `get_events_by_execution_ids`, `get_artifacts_by_id`, `get_executions_by_id`, "
        "`get_contexts_by_execution`, `get_executions_by_context`; the push found by scanning "
        "`get_artifacts_by_type('PushedModel')`). Cold = a fresh process per run "
        f"({meta['cli_repeats']} runs, median / max wall time; CPU = user + system of the child, getrusage). Ours, "
        "naive, the cold CLI's JSON and what the builder recorded agreed on every key fact of every chain (push, "
        "model, blessing, evaluation, trainer, transform graph, schema, examples and span, statistics and their row "
        "counts from FeatureStats.pb, each gate's report and verdict, input files, code version, train steps). "
        "Target: each of ours under 0.5 s (on the median).",
        "",
        "| query | ours: median s | ours: max s | target < 0.5 s | naive: median s | naive: max s | naive / ours |",
        "|---|---|---|---|---|---|---|",
    ]
    for q in queries:
        ours, naive = q["ours"], q["naive"]
        lines.append(f"| {q['label']}, in-process | {ours['median']:.3f} | {ours['max']:.3f} | {verdict(ours['median'])} "
                     f"| {naive['median']:.3f} | {naive['max']:.3f} | {naive['median'] / ours['median']:.2f}x |")
    for key in ("served", "diff"):
        c = cold[key]
        lines.append(f"| {c['label']}, cold process | {c['median']:.3f} | {c['max']:.3f} | {verdict(c['median'])} "
                     "| - | - | - |")
    lines += [
        "",
        "Cold processes (wall = what a user waits for; the floor rows have no query):",
        "",
        "| command | wall median s | wall max s | CPU median s | peak RSS MB |",
        "|---|---|---|---|---|",
        *[f"| {c['label']} | {c['median']:.3f} | {c['max']:.3f} | {c['cpu']:.3f} | {c['rss_mb']:.0f} |"
          for c in cold.values()],
        "",
        "Where the in-process time goes (ML Metadata calls counted and timed through a wrapper around the store; of 5 "
        "more calls, the one with the median total; the rest is Python: building the document, reading "
        "FeatureStats.pb):",
        "",
        "| query | way | total ms | ML Metadata calls | in ML Metadata ms | the largest calls | rest ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for q in queries:
        for way in ("ours", "naive"):
            p = q[f"{way}_profile"]
            lines.append(f"| {q['label']} | {way} | {p['total'] * 1000:.0f} | {sum(p['calls'].values()):.0f} "
                         f"| {p['mlmd'] * 1000:.0f} | {where(p)} | {(p['total'] - p['mlmd']) * 1000:.0f} |")
    lines += ["", *meta["notes"], "", "Commands (H = the bench's temp home on the synthetic store):", "", "```",
              *commands, "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="runs in the synthetic store (default: 1000)")
    parser.add_argument("--seed", type=int, default=22, help="seed of the store's random choices (default: 22)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed in-process calls per query and way, after one untimed warm-up (default: 20)")
    parser.add_argument("--cli-repeats", type=int, default=5,
                        help="fresh processes per cold command (default: 5)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_ROOT,
                        help="where built stores are kept and reused, one folder per store version, runs and seed "
                        "(default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="build the store again even when a cached one exists")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (home, logs)")
    args = parser.parse_args()
    if args.runs < 2 * ROLLBACK_EVERY:
        parser.error(f"--runs must be at least {2 * ROLLBACK_EVERY} (a history with rollbacks)")

    meta = dict(date=time.strftime("%Y-%m-%dT%H:%M"), load0=os.getloadavg()[0], repeats=args.repeats,
                cli_repeats=args.cli_repeats, notes=[])
    tmp = Path(tempfile.mkdtemp(prefix="bench-lineage-query-"))
    logs = tmp / "logs"
    logs.mkdir()
    log(f"work dir {tmp}")
    try:
        store_path, manifest = cached_store(args.cache_dir, args.runs, args.seed, args.rebuild)
        home, on_disk = make_home(tmp, store_path, manifest)
        base = str(home / "serving" / "models" / "taxi")
        if list_versions(Path(base)) != on_disk:
            raise StepFailed(f"version directories under {base}: {list_versions(Path(base))}, expected {on_disk}")
        picked = pick_versions(manifest)
        meta["versions"] = picked
        served, old = picked["served"]["version"], picked["old"]["version"]
        truth = {int(k): v for k, v in manifest["truth"].items()}
        tables = table_rows(home / "var" / "metadata.sqlite")
        store = lineage.open_store(SimpleNamespace(metadata=MetadataConfig(sqlite_path=str(home / "var" / "metadata.sqlite"))))

        def check_chain(what: str, chain: dict, version: int) -> None:
            check_agree(what, facts_of_chain(chain), Naive(store).chain(version), truth[version])

        def check_served(doc: dict) -> None:
            check_chain(f"--served (v{served})", doc["chain"], served)

        def check_diff(doc: dict) -> None:
            for side, version in (("left", old), ("right", served)):
                check_chain(f"--diff {old} {served} ({side}: v{version})", doc[side], version)

        queries = [dict(label=f"`--served` (v{served})", check=check_served,
                        ours_fn=lambda s: lineage.served_lineage(s, served, on_disk, base),
                        naive_fn=lambda s: Naive(s).chain(served)),
                   dict(label=f"`--diff {old} {served}`", check=check_diff,
                        ours_fn=lambda s: lineage.diff_lineage(s, old, served, served, on_disk, base),
                        naive_fn=lambda s: Naive(s).diff(old, served))]
        if picked["rollback"]:
            rollback = picked["rollback"]["version"]
            queries.append(dict(label=f"`--version {rollback}` (a rollback)",
                                check=lambda doc: check_chain(f"--version {rollback}", doc["chain"], rollback),
                                ours_fn=lambda s: lineage.version_lineage(s, rollback, served, on_disk, base),
                                naive_fn=lambda s: Naive(s).chain(rollback)))
        for q in queries:
            log(f"in-process: {q['label']}, ours and naive, {args.repeats} calls each")
            q["ours"], q["naive"] = timed_pair(lambda q=q: q["ours_fn"](store), lambda q=q: q["naive_fn"](store),
                                               args.repeats)
            q["check"](q["ours"]["result"])
            q["ours_profile"] = profile(store, q["ours_fn"])
            q["naive_profile"] = profile(store, q["naive_fn"])
        diff_doc = queries[1]["ours"]["result"]

        mlops = [str(MLOPS), "--home", str(home)]
        cold = {
            "served": dict(label="`mlops --home H lineage --served --json`", cmd=mlops + ["lineage", "--served", "--json"]),
            "diff": dict(label=f"`mlops --home H lineage --diff {old} {served} --json`",
                         cmd=mlops + ["lineage", "--diff", str(old), str(served), "--json"]),
            "help": dict(label="floor: `mlops --help` (Python start-up, the CLI's imports and parser)",
                         cmd=[str(MLOPS), "--help"]),
            "import": dict(label="floor: `python -c 'from ml_metadata.metadata_store import metadata_store'`",
                           cmd=[sys.executable, "-c", "from ml_metadata.metadata_store import metadata_store"]),
            "python": dict(label="floor: `python -c pass` (the venv's interpreter alone)", cmd=[sys.executable, "-c", "pass"]),
        }
        for name, c in cold.items():
            c.update(run_cold(name, c["cmd"], logs, args.cli_repeats))
        check_served(json.loads(cold["served"]["stdout"]))
        check_diff(json.loads(cold["diff"]["stdout"]))
    except StepFailed as err:
        log(f"FAILED: {err} (temp dir kept: {tmp})")
        return 1

    in_process = queries[0]["ours"]["median"]
    start, mlmd = cold["help"]["median"], cold["import"]["median"] - cold["python"]["median"]
    rest = cold["served"]["median"] - start - mlmd - in_process
    meta["notes"] += [
        f"- Where the cold `--served` goes ({cold['served']['median']:.3f} s, medians): the CLI's start-up "
        f"{start:.3f} s (the `mlops --help` floor: Python and the CLI's own imports, which leave ML Metadata out), "
        f"importing ML Metadata {mlmd:.3f} s (its floor less the bare interpreter; grpc and protobuf come with it), "
        f"the query {in_process:.3f} s (in-process median), "
        + (f"and {rest:.3f} s for the rest (opening the store, the lineage and serving modules, printing the JSON)."
           if rest >= 0.02 else "and the rest (opening the store, the lineage and serving modules, printing the JSON) "
           "is within the noise of these medians."),
        f"- `--diff {old} {served}` marks {len(diff_doc['differing'])} of {len(diff_doc['fields'])} fields as "
        "differing, e.g. " + ", ".join(f"`{d}`" for d in diff_doc["differing"][:6]) + ".",
        "- Naive / ours above 1 means ours is faster. Both read the same FeatureStats.pb files; ours also builds what "
        "the naive walk leaves out (every execution's details and its Airflow task, the run's config, metrics per "
        "slice as data, the diff's field table).",
    ]
    meta["load1"] = os.getloadavg()[0]
    commands = [
        f".venv/bin/python bench/lineage_query.py --runs {args.runs} --repeats {args.repeats} "
        f"--cli-repeats {args.cli_repeats}   # builds the store or reuses the cached one, then all of the below",
        "# in-process, one store opened with lineage.open_store (pipelines/lineage.py):",
        f"lineage.served_lineage(store, {served}, on_disk, base)",
        f"lineage.diff_lineage(store, {old}, {served}, {served}, on_disk, base)",
        *([f"lineage.version_lineage(store, {picked['rollback']['version']}, {served}, on_disk, base)"]
          if picked["rollback"] else []),
        "# cold, a fresh process each:",
        "mlops --home H lineage --served --json",
        f"mlops --home H lineage --diff {old} {served} --json",
        "mlops --help",
        "python -c 'from ml_metadata.metadata_store import metadata_store'",
        "python -c pass",
    ]
    publish(args.results, SECTION, render(meta, manifest, tables, queries, cold, commands), tmp, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
