"""Lineage you can ask: what made a pushed model, what a span trained, what a run did, and how two
versions differ -- read from ML Metadata with its lineage API, without TensorFlow or TFX (only an
evaluation recorded before the Evaluator stored its metrics per slice in ML Metadata is read from
TFMA's files, which imports TFMA: seconds instead of a fraction of one).

A pushed version's chain comes from two `get_lineage_subgraph` calls:

1. UPSTREAM from its PushedModel, stopping at the Evaluator (whose other input, the baseline, would
   lead into the whole history) and at the Schema (every run's cached ImportSchemaGen writes it
   again): the push, the model, the blessing, the InfraValidator's InfraBlessing, the Trainer, the
   transform graph, the schema and the span's Examples with every execution that made them.
2. DOWNSTREAM from those Examples, stopping at the gates' reports, the evaluation and the first
   training node: the statistics, the data gates' verdicts (drift per feature) and the evaluation
   (metrics per slice against the baseline).

The SpanCheck report (the span's input files with checksums and row counts) is not connected to the
Examples by an event (the gate runs before ExampleGen and only orders it), so it is found by its
recorded gate, span date and run. Everything returned is plain JSON-ready data; the shape is
`docs/lineage.schema.json` (SCHEMA_VERSION), and `render_text`/`render_mermaid` draw it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from components.window.properties import ANALYZED_SPANS, CACHED_SPANS
from pipelines.errors import ConfigError

SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "docs" / "lineage.schema.json"

# Execution type names, as TFX registers them (the component class's full path).
PUSHER = "components.pusher.component.AtomicPusher"
EVALUATOR = "components.evaluator.component.GatedEvaluator"
INFRA_VALIDATOR = "components.infra_validator.component.InfraValidator"
TRAINER = "tfx.components.trainer.component.Trainer"
TRANSFORM = "tfx.components.transform.component.Transform"
EXAMPLE_GEN = "components.example_gen.component.FastCsvExampleGen"
SCHEMA_GEN = "tfx.components.schema_gen.import_schema_gen.component.ImportSchemaGen"
STATISTICS_GEN = "tfx.components.statistics_gen.component.StatisticsGen"
DRIFT_VALIDATOR = "components.drift_validator.component.DriftValidator"
SPAN_CHECK_GATE = "span_check"  # components/span_check/executor.py GATE
DRIFT_GATE = "drift_validator"  # components/drift_validator/executor.py GATE
GATE_ORDER = (SPAN_CHECK_GATE, DRIFT_GATE)

UPSTREAM_HOPS = 10  # PushedModel -> Pusher -> Model -> Trainer -> Examples -> Transform -> Examples -> ExampleGen
DOWNSTREAM_HOPS = 4  # Examples -> StatisticsGen -> ExampleStatistics -> DriftValidator -> ExampleAnomalies

Json = Dict[str, object]


# ------------------------------------------------------------------------------------ the store


def open_store(config):
    """The project's ML Metadata store, opened read-only; a clear ConfigError when it is missing,
    empty or not an ML Metadata store."""
    from ml_metadata import errors as mlmd_errors
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = config.metadata.to_proto()
    where = config.metadata.sqlite_path if config.metadata.is_sqlite else config.metadata.url
    if config.metadata.is_sqlite:
        path = Path(config.metadata.sqlite_path)
        if not path.is_file():
            raise ConfigError(f"no ML Metadata store at {path}",
                              "run the pipeline first (`make run`), or pass the project's --home")
        if path.stat().st_size == 0:
            raise ConfigError(f"the ML Metadata store {path} is empty (0 bytes)",
                              "run the pipeline (`make run`) to create it, or restore the file from a backup")
        connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    try:
        store = metadata_store.MetadataStore(connection)
        store.get_artifact_types()  # a store that opens but holds no ML Metadata schema fails here
    except (mlmd_errors.StatusError, RuntimeError) as err:
        said = re.sub(r"\s+query:\s+(CREATE|SELECT|INSERT|UPDATE|PRAGMA)\b.*$", "",  # drop the SQL statement
                      " ".join(str(err).split()))
        raise ConfigError(f"{where} cannot be read as an ML Metadata store ({said[:200]})",
                          "restore it from a backup, or move it away and run the pipeline to start a new "
                          "history") from err
    return store


def _quoted(text: str) -> str:
    if "'" in text or "\\" in text:
        raise ConfigError(f"{text!r} contains a quote or backslash, which no run id or date here has",
                          "pass the id as `mlops summary` or Airflow shows it")
    return f"'{text}'"


def _props(message) -> Dict[str, object]:
    """{name: value} of an MLMD node's properties and custom properties (custom ones win)."""
    out: Dict[str, object] = {}
    for values in (message.properties, message.custom_properties):
        for key, value in values.items():
            kind = value.WhichOneof("value")
            if kind == "int_value":
                out[key] = value.int_value
            elif kind == "double_value":
                out[key] = value.double_value
            elif kind == "string_value":
                out[key] = value.string_value
            elif kind == "bool_value":
                out[key] = value.bool_value
    return out


def _json_prop(props: Dict[str, object], key: str, default):
    try:
        return json.loads(props[key]) if props.get(key) else default
    except (TypeError, ValueError):
        return default


def _time(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="seconds") if ms else ""


class Graph:
    """One LineageGraph, indexed: nodes by id, their type names, events by artifact and execution.

    Fetched without contexts (a schema or a long-served model is attributed to hundreds of runs):
    `run_of` asks the store for the run of the few executions that matter."""

    def __init__(self, graph, store):
        from ml_metadata.proto import metadata_store_pb2 as pb

        self.pb = pb
        self.store = store
        self.artifact_types = {t.id: t.name for t in graph.artifact_types}
        self.execution_types = {t.id: t.name for t in graph.execution_types}
        self.artifacts = {a.id: a for a in graph.artifacts}
        self.executions = {e.id: e for e in graph.executions}
        self.events = list(graph.events)
        self._runs: Dict[int, str] = {}  # execution id -> pipeline_run context name
        self._run_type: Optional[int] = None

    def run_of(self, execution_id: Optional[int]) -> str:
        if execution_id is None:
            return ""
        if execution_id not in self._runs:
            if self._run_type is None:
                self._run_type = _run_type_id(self.store)
            self._runs[execution_id] = next((c.name for c in self.store.get_contexts_by_execution(execution_id)
                                             if c.type_id == self._run_type), "")
        return self._runs[execution_id]

    def artifact_type(self, artifact_id: int) -> str:
        return self.artifact_types.get(self.artifacts[artifact_id].type_id, "?")

    def execution_type(self, execution_id: int) -> str:
        return self.execution_types.get(self.executions[execution_id].type_id, "?")

    @staticmethod
    def _key(event) -> str:
        return event.path.steps[0].key if event.path.steps else ""

    def producer(self, artifact_id: int) -> Optional[int]:
        """The execution that first wrote the artifact (cached reruns record it as their output too)."""
        ids = [e.execution_id for e in self.events
               if e.artifact_id == artifact_id and e.type == self.pb.Event.OUTPUT and e.execution_id in self.executions]
        return min(ids) if ids else None

    def inputs(self, execution_id: Optional[int], key: str) -> List[int]:
        return sorted(e.artifact_id for e in self.events
                      if e.execution_id == execution_id and e.type == self.pb.Event.INPUT and self._key(e) == key
                      and e.artifact_id in self.artifacts)

    def outputs(self, execution_id: Optional[int], key: str) -> List[int]:
        return sorted(e.artifact_id for e in self.events
                      if e.execution_id == execution_id and e.type == self.pb.Event.OUTPUT and self._key(e) == key
                      and e.artifact_id in self.artifacts)

    def consumers(self, artifact_id: int, key: str, type_name: str) -> List[int]:
        return sorted(e.execution_id for e in self.events
                      if e.artifact_id == artifact_id and e.type == self.pb.Event.INPUT and self._key(e) == key
                      and e.execution_id in self.executions and self.execution_type(e.execution_id) == type_name)


def _run_type_id(store) -> int:
    """The id of the pipeline_run context type; -1 in a store no pipeline ran against yet."""
    from ml_metadata import errors as mlmd_errors

    try:
        return store.get_context_type("pipeline_run").id
    except mlmd_errors.NotFoundError:
        return -1


def _first(ids: List[int]) -> Optional[int]:
    return ids[0] if ids else None


def _closest(candidates: Iterable[int], graph: Graph, run: str, before: int) -> Optional[int]:
    """Of several executions, the one in `run`; else the newest started before id `before`; else the first."""
    candidates = sorted(candidates)
    if len(candidates) == 1:
        return candidates[0]
    same = [c for c in candidates if graph.run_of(c) == run]
    if same:
        return same[-1]
    earlier = [c for c in candidates if c <= before]
    return earlier[-1] if earlier else _first(candidates)


# ---------------------------------------------------------------------------------- pushes


def push_of(artifact) -> Json:
    """The push facts of a PushedModel artifact, read as `mlops models list` and rollbacks read them."""
    from pipelines.rollback import PushRecord

    push = PushRecord.from_artifact(artifact)
    return {
        "artifact_id": push.artifact_id, "version": push.version, "kind": push.kind, "trigger": push.trigger,
        "requested_by": push.requested_by, "reason": push.reason, "pushed_at": push.pushed_at,
        "replaced_version": push.replaced_version or None, "model_id": push.model_id, "fingerprint": push.fingerprint,
    }


PUSHED = "type = 'PushedModel' AND custom_properties.pushed.int_value = 1"


def pushes(store, where: str = "") -> List[Json]:
    """Every push that wrote a version (`where`: a further filter), oldest first."""
    from ml_metadata.metadata_store import metadata_store

    found = store.get_artifacts(list_options=metadata_store.ListOptions(
        filter_query=PUSHED + (f" AND {where}" if where else "")))
    return [push_of(a) for a in sorted(found, key=lambda a: a.id)]


def pushes_of_model(store, model_id: int) -> List[Json]:
    return pushes(store, f"custom_properties.source_model_id.int_value = {int(model_id)}")


def push_for_version(store, version: int, on_disk: Iterable[int], base: str) -> Json:
    """The push that wrote `version`; ConfigError for an unknown version or one no push explains.
    (Looked up by its version: the whole push history is read only to name the known ones.)"""
    match = pushes(store, f"custom_properties.pushed_version.int_value = {int(version)}")
    if match:
        # A canary's promotion (pipelines/canary.py) names the version it made stable, but the Pusher's
        # push wrote it: the chain starts there.
        return ([p for p in match if p["kind"] != "promotion"] or match)[-1]
    known = ", ".join(str(p["version"]) for p in pushes(store)) or "none yet"
    if version in set(on_disk):
        raise ConfigError(
            f"version {version} is in {base} but no push in ML Metadata explains it (copied in by hand, or "
            "written before this ML Metadata store existed), so its lineage is unknown",
            f"ask about a pushed version ({known}), or push models only through the pipeline or `mlops rollback`")
    raise ConfigError(f"no pushed version {version}", f"pick one of the pushed versions: {known} (`mlops models list`)")


# ----------------------------------------------------------------------------------- a chain


GRAPH_FIELDS = ["artifacts", "executions", "events", "artifact_types", "execution_types"]


def _subgraph(store, direction: str, start_filter: str, hops: int, end_executions: str = "",
              end_artifacts: str = "") -> Graph:
    from ml_metadata.proto import metadata_store_pb2 as pb

    options = pb.LineageSubgraphQueryOptions(
        max_num_hops=hops, direction=getattr(pb.LineageSubgraphQueryOptions, direction))
    options.starting_artifacts.filter_query = start_filter
    if end_executions:
        options.ending_executions.filter_query = end_executions
        options.ending_executions.include_ending_nodes = True
    if end_artifacts:
        options.ending_artifacts.filter_query = end_artifacts
        options.ending_artifacts.include_ending_nodes = True
    return Graph(store.get_lineage_subgraph(options, field_mask_paths=GRAPH_FIELDS), store)


def _execution(graph: Graph, execution_id: Optional[int]) -> Optional[Json]:
    if execution_id is None:
        return None
    execution = graph.executions[execution_id]
    props = _props(execution)
    return {
        "execution_id": execution_id,
        "node": graph.execution_type(execution_id).rsplit(".", 1)[-1],
        "run_id": graph.run_of(execution_id),
        "state": graph.pb.Execution.State.Name(execution.last_known_state).lower(),
        "started_at": _time(execution.create_time_since_epoch),
        "code_version": str(props.get("code_version", "")),
        "airflow": _airflow(props),
    }


def _airflow(props: Dict[str, object]) -> Optional[Dict[str, str]]:
    """The Airflow task an execution recorded (pipelines/run_context.py), or None outside Airflow."""
    found = {key[len("airflow_"):]: str(value) for key, value in props.items() if key.startswith("airflow_")}
    return found or None


def _run_context(store, run_id: str) -> Json:
    """The recorded code version and config of a pipeline run (pipelines/run_context.py)."""
    if not run_id:
        return {"run_id": "", "code_version": "", "config": {}}
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    props = _props(context) if context is not None else {}
    return {"run_id": run_id, "code_version": str(props.get("code_version", "")),
            "config": _json_prop(props, "run_config", {})}


def gate_of(artifact, run_id: str = "", execution_id: Optional[int] = None) -> Json:
    """A data gate's recorded verdict (components/verdict.py) and report."""
    props = _props(artifact)
    report = Path(artifact.uri) / "report.html"
    if not report.is_file():
        report = Path(artifact.uri) / "report.txt"
    return {
        "gate": str(props.get("gate", "")),
        "artifact_id": artifact.id,
        "execution_id": execution_id,
        "run_id": run_id,
        "span": str(props.get("span_date", "")),
        "blocked": bool(props.get("blocked", 0)),
        "problem": str(props.get("problem", "")),
        "findings": _json_prop(props, "findings", []),
        "drift": _json_prop(props, "drift_distances", {}),
        "report": str(report) if report.is_file() else "",
        "rows": props.get("rows"),
        "input_files": _json_prop(props, "input_files", None),
    }


def _span_check_report(store, span: str, run_id: str, before_artifact: int) -> Optional[Json]:
    """The SpanCheck report of `span` in `run_id`, else the newest one written before that id."""
    from ml_metadata.metadata_store import metadata_store

    base = (f"type = 'ExampleAnomalies' AND custom_properties.gate.string_value = '{SPAN_CHECK_GATE}' "
            f"AND custom_properties.span_date.string_value = {_quoted(span)}")
    found = []
    if run_id:
        found = store.get_artifacts(list_options=metadata_store.ListOptions(
            filter_query=base + f" AND contexts_a.type = 'pipeline_run' AND contexts_a.name = {_quoted(run_id)}"))
    if not found:
        every = store.get_artifacts(list_options=metadata_store.ListOptions(filter_query=base))
        earlier = [a for a in every if a.id < before_artifact] or every
        found = sorted(earlier, key=lambda a: a.id)[-1:]
    if not found:
        return None
    return gate_of(found[-1], run_id if run_id else "")


def _schema_import(store, schema_id: int):
    """The first ImportSchemaGen execution (or None) that wrote the schema artifact (every later run's cached
    ImportSchemaGen writes it again: the lineage walk stops at the schema instead of visiting them)."""
    from ml_metadata.metadata_store import metadata_store

    found = store.get_executions(list_options=metadata_store.ListOptions(
        limit=1, order_by=metadata_store.OrderByField.ID, is_asc=True,
        filter_query=f"type = '{SCHEMA_GEN}' AND events_0.artifact_id = {int(schema_id)} AND events_0.type = OUTPUT"))
    return found[0] if found else None


def _tuning(up: "Graph", artifact_id: int) -> Json:
    """The HyperParameters artifact a Trainer read (TFX's Tuner wrote its best trial's KerasTuner config
    to best_hyperparameters.txt), its values as run_fn uses them, and the Tuner execution."""
    from pipelines.taxi.model_options import tuned_hyperparameters

    artifact = up.artifacts[artifact_id]
    try:
        config = json.loads((Path(artifact.uri) / "best_hyperparameters.txt").read_text())
    except (OSError, ValueError):
        config = {}  # the file is gone (pipeline root cleaned): the ids still tell where it came from
    return {"artifact_id": artifact_id, "uri": artifact.uri, "values": tuned_hyperparameters(config),
            "execution": _execution(up, up.producer(artifact_id))}


INFRA_TIMINGS = ("server_start_seconds", "requests_seconds", "validation_seconds")  # components/infra_validator/spec.py


def _infra_blessing(store, up: "Graph", pusher: Optional[int], model_id: Optional[int]) -> Optional[Json]:
    """The InfraValidator's InfraBlessing of the model: the one the Pusher read (a nightly push), else
    the newest one the InfraValidator wrote for the same model (a rollback's push reads none); None
    when the model was never infra-validated (pushed before the InfraValidator existed)."""
    from ml_metadata.metadata_store import metadata_store

    artifact_id = _first(up.inputs(pusher, "infra_blessing"))
    read_by_push = artifact_id is not None
    graph = up
    if artifact_id is None and model_id:
        found = store.get_artifacts(list_options=metadata_store.ListOptions(
            filter_query=f"type = 'InfraBlessing' AND custom_properties.current_model_id.int_value = {int(model_id)}"))
        if not found:
            return None
        artifact_id = max(a.id for a in found)
        graph = _subgraph(store, "UPSTREAM", f"id = {artifact_id}", 1)
    if artifact_id is None:
        return None
    artifact = graph.artifacts[artifact_id]
    props = _props(artifact)
    signatures = str(props.get("signatures", ""))
    return {"artifact_id": artifact_id, "uri": artifact.uri, "blessed": props.get("blessed") == 1,
            "reason": str(props.get("reason", "")), "model_id": props.get("current_model_id"),
            "read_by_push": read_by_push, "signatures": [s for s in signatures.split(",") if s],
            "requests_answered": props.get("requests_answered"),
            "timings": {key: props.get(key) for key in INFRA_TIMINGS},
            "execution": _execution(graph, graph.producer(artifact_id))}


def chain(store, push: Json, served_version: Optional[int]) -> Json:
    """Everything that made the model a push wrote, from the push down to the span's input files."""
    from components.util.spans import span_date

    up = _subgraph(store, "UPSTREAM", f"id = {push['artifact_id']}", UPSTREAM_HOPS,
                   end_executions=f"type = '{EVALUATOR}'", end_artifacts="type = 'Schema'")
    pusher = up.producer(push["artifact_id"])
    model_id = _first(up.inputs(pusher, "model"))
    blessing_id = _first(up.inputs(pusher, "model_blessing"))
    trainer = up.producer(model_id) if model_id else None
    evaluator = up.producer(blessing_id) if blessing_id else None
    graph_id = _first(up.inputs(trainer, "transform_graph"))
    schema_id = _first(up.inputs(trainer, "schema"))
    transform = up.producer(graph_id) if graph_id else None
    # A window model read several spans' Examples: the chain follows the newest (the span the run
    # ingested and gated, held out for evaluation); `window` lists the others.
    examples_id = max(up.inputs(transform, "examples"), key=lambda a: (_props(up.artifacts[a]).get("span", 0), a),
                      default=None)
    example_gen = up.producer(examples_id) if examples_id else None
    schema_gen = _schema_import(store, schema_id) if schema_id else None
    training_run = up.run_of(trainer)

    out: Json = {
        "version": push["version"],
        "serving": served_version == push["version"],
        "push": {**push, "execution": _execution(up, pusher),
                 "first_pushed_as": next((p["version"] for p in pushes_of_model(store, push["model_id"])),
                                         push["version"])},
        "model": None, "blessing": None, "evaluation": None, "infra_blessing": None, "training": None,
        "transform": None, "schema": None, "examples": None, "statistics": None, "gates": [], "input_files": [],
        "window": None,
    }
    if model_id:
        from pipelines.window import describe

        model = up.artifacts[model_id]
        out["model"] = {"artifact_id": model_id, "uri": model.uri, "created_at": _time(model.create_time_since_epoch)}
        out["window"] = describe(store, model)
    if blessing_id:
        props = _props(up.artifacts[blessing_id])
        out["blessing"] = {"artifact_id": blessing_id, "blessed": props.get("blessed") == 1,
                           "reason": str(props.get("reason", "")),
                           "baseline_model_id": props.get("baseline_model_id"),
                           "execution": _execution(up, evaluator)}
    out["infra_blessing"] = _infra_blessing(store, up, pusher, model_id)
    if trainer:
        props = _props(up.executions[trainer])
        custom = _json_prop(props, "custom_config", {})
        out["training"] = {
            "execution": _execution(up, trainer),
            "train_steps": _json_prop(props, "train_args", {}).get("num_steps"),
            "eval_steps": _json_prop(props, "eval_args", {}).get("num_steps"),
            "strategy": custom.get("strategy"),
            # The window is its own section (`window`), the strategy its own field.
            "hyperparameters": {k: v for k, v in custom.items() if k not in ("strategy", "window_days")},
            "run_fn": str(props.get("run_fn", "")),
            "run": _run_context(store, training_run),
            "tuning": None,
        }
        tuned_id = _first(up.inputs(trainer, "hyperparameters"))
        if tuned_id:  # trained with a weekly tuning result: its values won over the defaults
            tuning = _tuning(up, tuned_id)
            out["training"]["hyperparameters"].update(tuning["values"])
            out["training"]["tuning"] = tuning
    if graph_id:
        props = _props(up.executions[transform])
        graph = _props(up.artifacts[graph_id])
        out["transform"] = {"artifact_id": graph_id, "uri": up.artifacts[graph_id].uri,
                            "preprocessing_fn": str(props.get("preprocessing_fn", "")),
                            "execution": _execution(up, transform),
                            # Window runs: the spans whose analysis came from the analyzer cache
                            # and those analyzed in this run (None before windows).
                            "cached_spans": _json_prop(graph, CACHED_SPANS, None),
                            "analyzed_spans": _json_prop(graph, ANALYZED_SPANS, None)}
    if schema_id:
        props = _props(schema_gen) if schema_gen else {}
        schema_file = str(props.get("schema_file", ""))
        out["schema"] = {"artifact_id": schema_id, "uri": up.artifacts[schema_id].uri, "snapshot": schema_file,
                         "sha256": (training_run and out["training"]["run"]["config"].get("schema_sha256")) or ""}
    if not examples_id:
        return out
    examples = up.artifacts[examples_id]
    props = _props(examples)
    span = span_date(int(props["span"])) if "span" in props else ""
    out["examples"] = {"artifact_id": examples_id, "uri": examples.uri, "span": span,
                       "version": props.get("version"), "input_fingerprint": str(props.get("input_fingerprint", "")),
                       "splits": _json_prop(props, "split_names", []),
                       "execution": _execution(up, example_gen)}

    down = _subgraph(store, "DOWNSTREAM", f"id = {examples_id}", DOWNSTREAM_HOPS,
                     end_executions=f"type = '{TRANSFORM}' OR type = '{TRAINER}'",
                     end_artifacts="type = 'ExampleAnomalies' OR type = 'ModelEvaluation' OR type = 'ModelBlessing'")
    if evaluator is not None:
        evaluation_id = _first(down.outputs(evaluator, "evaluation"))
        if evaluation_id:
            from components.evaluator.metrics import recorded_slice_metrics

            evaluation = down.artifacts[evaluation_id]
            candidate, baseline = recorded_slice_metrics(evaluation.custom_properties, evaluation.uri)
            out["evaluation"] = {"artifact_id": evaluation_id, "uri": evaluation.uri, "metrics": candidate,
                                 "baseline_metrics": baseline}
    statistics_gen = _closest(down.consumers(examples_id, "examples", STATISTICS_GEN), down, training_run,
                              trainer or 0)
    statistics_id = _first(down.outputs(statistics_gen, "statistics"))
    if statistics_id:
        from components.util.statistics import statistics_rows

        statistics = down.artifacts[statistics_id]
        out["statistics"] = {"artifact_id": statistics_id, "uri": statistics.uri,
                             "rows": statistics_rows(statistics.uri)}
        drift = _closest(down.consumers(statistics_id, "statistics", DRIFT_VALIDATOR), down, training_run,
                         trainer or 0)
        verdict = _first(down.outputs(drift, "anomalies"))
        if verdict:
            out["gates"].append(gate_of(down.artifacts[verdict], down.run_of(drift), drift))
    span_check = _span_check_report(store, span, up.run_of(example_gen), examples_id) if span else None
    if span_check:
        out["gates"].insert(0, span_check)
        out["input_files"] = span_check["input_files"] or []
    return out


# ------------------------------------------------------------------------------ the queries


def _document(kind: str, query: Json, **body) -> Json:
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "query": query, **body}


def version_lineage(store, version: int, served_version: Optional[int], on_disk: Iterable[int], base: str,
                    query: Optional[Json] = None) -> Json:
    """The chain of one pushed version (`served_version`: the one answering requests now)."""
    on_disk = list(on_disk)
    push = push_for_version(store, version, on_disk, base)
    return _document("chain", query or {"version": version}, chain=chain(store, push, served_version))


def served_lineage(store, served_version: Optional[int], on_disk: Iterable[int], base: str) -> Json:
    if served_version is None:
        raise ConfigError(f"no model is served: no version directory under {base}",
                          "run the pipeline until a model is pushed (`make run`)")
    return version_lineage(store, served_version, served_version, on_disk, base, {"served": True})


def span_lineage(store, day: dt.date, served_version: Optional[int]) -> Json:
    """Downstream of one span: the data gates' verdicts on it, every model trained on it, and every
    version those models were pushed as (and whether one of them serves now)."""
    from ml_metadata.metadata_store import metadata_store

    from components.util.spans import span_number

    span = day.isoformat()
    examples = store.get_artifacts(list_options=metadata_store.ListOptions(
        filter_query=f"type = 'Examples' AND custom_properties.span.int_value = {span_number(day)}"))
    reports = store.get_artifacts(list_options=metadata_store.ListOptions(
        filter_query=f"type = 'ExampleAnomalies' AND custom_properties.span_date.string_value = {_quoted(span)}"))
    if not examples and not reports:
        known = sorted({str(_props(a).get("span_date", "")) for a in store.get_artifacts(
            list_options=metadata_store.ListOptions(
                filter_query=f"type = 'ExampleAnomalies' AND custom_properties.gate.string_value = '{SPAN_CHECK_GATE}'"))})
        raise ConfigError(f"ML Metadata records nothing for span {span}",
                          f"run it (`mlops run --date {span}`), or ask about a span it knows: "
                          + (", ".join(k for k in known if k) or "none yet"))
    run_type = _run_type_id(store)
    gates = []
    for report in sorted(reports, key=lambda a: a.id):
        runs = [c.name for c in store.get_contexts_by_artifact(report.id) if c.type_id == run_type]
        gate = gate_of(report, runs[0] if runs else "")
        if gate["gate"]:
            gates.append(gate)
    models: List[Json] = []
    if examples:
        ids = ", ".join(str(a.id) for a in examples)
        down = _subgraph(store, "DOWNSTREAM", f"id IN ({ids})", DOWNSTREAM_HOPS,
                         end_artifacts="type = 'Model' OR type = 'ModelBlessing' OR type = 'ModelEvaluation' "
                                       "OR type = 'ExampleAnomalies'")
        # The Trainer reads the window's raw Examples (models trained before windows read
        # Transform's transformed copy of them).
        trainers = {tr for ex in examples for tr in down.consumers(ex.id, "examples", TRAINER)}
        trainers |= {tr for ex in examples for t in down.consumers(ex.id, "examples", TRANSFORM)
                     for g in down.outputs(t, "transformed_examples") for tr in down.consumers(g, "examples", TRAINER)}
        trained = sorted({m for tr in trainers for m in down.outputs(tr, "model")})
        blessings = [a for a in down.artifacts.values() if down.artifact_type(a.id) == "ModelBlessing"]
        for model_id in trained:
            trainer = down.producer(model_id)
            verdicts = [_props(b) for b in sorted(blessings, key=lambda b: b.id)
                        if _props(b).get("current_model_id") == model_id]
            versions = [{"version": p["version"], "kind": p["kind"], "pushed_at": p["pushed_at"],
                         "serving": p["version"] == served_version}
                        for p in pushes_of_model(store, model_id)]
            models.append({
                "model_id": model_id,
                "uri": down.artifacts[model_id].uri,
                "training": _execution(down, trainer),
                "blessed": any(v.get("blessed") == 1 for v in verdicts) if verdicts else None,
                "blessing_reason": str(verdicts[-1].get("reason", "")) if verdicts else "",
                "pushed_versions": versions,
                "serving": any(v["serving"] for v in versions),
            })
    return _document("span", {"span": span}, span={
        "span": span,
        "examples": [{"artifact_id": a.id, "uri": a.uri, "input_fingerprint": str(_props(a).get("input_fingerprint", ""))}
                     for a in sorted(examples, key=lambda a: a.id)],
        "gates": gates,
        "blocked": bool(gates) and gates[-1]["blocked"],
        "models": models,
        "scorings": span_scorings(store, [a.id for a in examples]),
    })


def span_scorings(store, examples_ids: List[int]) -> List[Json]:
    """Every `mlops score` of these Examples (pipelines/scoring.py's BatchScorer executions), oldest
    first: which pushed version scored them, into which file; a reuse points at the file it reused."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    from pipelines.scoring import SCORER_TYPE

    if not examples_ids:
        return []
    try:
        scorer_type = store.get_execution_type(SCORER_TYPE).id
    except Exception:  # noqa: BLE001 -- ml_metadata's NotFoundError: nothing was ever scored
        return []
    read = {e.execution_id for e in store.get_events_by_artifact_ids(examples_ids)
            if e.type == pb.Event.INPUT and e.path.steps and e.path.steps[0].key == "examples"}
    scorers = [e for e in store.get_executions_by_id(sorted(read)) if e.type_id == scorer_type]
    if not scorers:
        return []
    events = store.get_events_by_execution_ids([e.id for e in scorers])
    written = {e.execution_id: e.artifact_id for e in events if e.type == pb.Event.OUTPUT}
    files = {a.id: a for a in store.get_artifacts_by_id(sorted(set(written.values())))}
    run_type = _run_type_id(store)
    out = []
    for execution in sorted(scorers, key=lambda e: e.id):
        props = _props(execution)
        output = files.get(written.get(execution.id))
        runs = [c.name for c in store.get_contexts_by_execution(execution.id) if c.type_id == run_type]
        out.append({
            "execution_id": execution.id,
            "state": pb.Execution.State.Name(execution.last_known_state).lower(),
            "scored_at": _time(execution.create_time_since_epoch),
            "pushed_version": int(props.get("pushed_version", 0)) or None,
            "model_id": int(props.get("model_id", 0)) or None,
            "rows": int(_props(output).get("rows", 0)) if output is not None else 0,
            "path": output.uri if output is not None else "",
            "scores_artifact_id": output.id if output is not None else None,
            "run_id": runs[0] if runs else "",
        })
    return out


def find_run(store, run_id: str):
    """The pipeline_run context of a TFX run id, or of the run whose executions an Airflow run recorded."""
    from ml_metadata.metadata_store import metadata_store

    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is not None:
        return context, ""
    executions = store.get_executions(list_options=metadata_store.ListOptions(
        filter_query=f"custom_properties.airflow_run_id.string_value = {_quoted(run_id)}"))
    run_type = _run_type_id(store)
    for execution in executions:
        for context in store.get_contexts_by_execution(execution.id):
            if context.type_id == run_type:
                return context, run_id
    recent = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)[-3:]
    raise ConfigError(f"no pipeline run {run_id!r} in ML Metadata (neither a TFX run id nor an Airflow run id "
                      "any task recorded)",
                      "pass a run id as `mlops summary` or the Airflow UI shows it; the newest: "
                      + (", ".join(c.name for c in reversed(recent)) or "none yet"))


def run_lineage(store, run_id: str, served_version: Optional[int]) -> Json:
    """What one run did: its executions (with their Airflow tasks), its code and config, and the chain
    of what it pushed (or of the gate that blocked it)."""
    context, airflow_run = find_run(store, run_id)
    executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
    node_type = store.get_context_type("node").id
    from ml_metadata.proto import metadata_store_pb2 as pb

    rows = []
    pushed = None
    window = None
    gates: List[Json] = []
    for execution in executions:
        node = next((c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id)
                     if c.type_id == node_type), str(execution.id))
        props = _props(execution)
        rows.append({"execution_id": execution.id, "node": node,
                     "state": pb.Execution.State.Name(execution.last_known_state).lower(),
                     "started_at": _time(execution.create_time_since_epoch),
                     "airflow": _airflow(props)})
        outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
                   if e.type == pb.Event.OUTPUT]
        for artifact in store.get_artifacts_by_id(outputs) if outputs else []:
            aprops = _props(artifact)
            if aprops.get("pushed") == 1 and "pushed_version" in aprops:
                pushed = artifact
            if aprops.get("gate") in GATE_ORDER:
                gates.append(gate_of(artifact, context.name, execution.id))
            if "eval_span" in aprops and "train_spans" in aprops:  # the Model the run trained
                from pipelines.window import describe

                window = describe(store, artifact)
    recorded = _run_context(store, context.name)
    # A rollback run records no config; its executions still say which code ran.
    code = recorded["code_version"] or next((str(_props(e).get("code_version")) for e in executions
                                             if _props(e).get("code_version")), "")
    body = {"run_id": context.name, "airflow_run_id": airflow_run or next(
        (r["airflow"]["run_id"] for r in rows if r["airflow"] and "run_id" in r["airflow"]), ""),
        "code_version": code, "config": recorded["config"],
        "executions": rows, "gates": gates, "blocked_by": next((g for g in gates if g["blocked"]), None),
        "pushed_version": None, "chain": None, "window": window}
    if pushed is not None:
        push = push_of(pushed)
        body["pushed_version"] = push["version"]
        body["chain"] = chain(store, push, served_version)
    return _document("run", {"run": run_id}, run=body)


# ------------------------------------------------------------------------------------ diff

METRICS_COMPARED = ("auc", "loss", "binary_accuracy", "example_count")


def _flat(item: Json) -> Dict[str, object]:
    """The facts `--diff` compares, by name, from one chain."""
    training = item.get("training") or {}
    run = training.get("run") or {}
    out: Dict[str, object] = {
        "push.kind": (item["push"]["kind"] + (f" ({item['push']['trigger']})" if item["push"]["trigger"] else "")),
        "push.reason": item["push"]["reason"],
        "model": (item.get("model") or {}).get("artifact_id"),
        "span": (item.get("examples") or {}).get("span"),
        "span.input_fingerprint": (item.get("examples") or {}).get("input_fingerprint"),
        "span.trained_on": (item.get("window") or {}).get("train_spans"),
        "schema": (item.get("schema") or {}).get("snapshot"),
        "schema.sha256": (item.get("schema") or {}).get("sha256"),
        "code_version": run.get("code_version") or ((training.get("execution") or {}).get("code_version")),
        "training.train_steps": training.get("train_steps"),
        "training.eval_steps": training.get("eval_steps"),
        "training.strategy": training.get("strategy"),
        "blessing": (item.get("blessing") or {}).get("reason"),
    }
    for name in item.get("input_files") or []:
        out[f"file.{name['name']}.sha256"] = name["sha256"]
        out[f"file.{name['name']}.rows"] = name["rows"]
    for key, value in sorted((run.get("config") or {}).items()):
        if key in ("span", "train_steps", "eval_steps", "strategy"):
            continue  # compared above, from what the Trainer itself recorded
        if isinstance(value, dict):
            for inner, setting in sorted(value.items()):
                out[f"config.{key}.{inner}"] = setting
        else:
            out[f"config.{key}"] = value
    for key, value in sorted((training.get("hyperparameters") or {}).items()):
        out[f"training.{key}"] = value
    for slice_name, values in sorted(((item.get("evaluation") or {}).get("metrics") or {}).items()):
        for metric in METRICS_COMPARED:
            if metric in values:
                out[f"metrics[{slice_name}].{metric}"] = values[metric]
    return out


def diff_lineage(store, left: int, right: int, served_version: Optional[int], on_disk: Iterable[int],
                 base: str) -> Json:
    """Two versions side by side: spans, input files, schema, code version, config, metrics per slice."""
    on_disk = list(on_disk)
    chains = [chain(store, push_for_version(store, v, on_disk, base), served_version) for v in (left, right)]
    a, b = ({k: _scalar(v) for k, v in _flat(c).items()} for c in chains)
    rows = [{"field": key, "left": a.get(key), "right": b.get(key), "differs": a.get(key) != b.get(key)}
            for key in sorted(set(a) | set(b), key=_field_order)]
    return _document("diff", {"diff": [left, right]}, left=chains[0], right=chains[1], fields=rows,
                     differing=[r["field"] for r in rows if r["differs"]])


def _scalar(value):
    """A diff cell: lists and objects (e.g. hidden_units) as their JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def _field_order(key: str) -> Tuple[int, str]:
    order = ("push", "model", "span", "file", "schema", "code_version", "training", "config", "blessing", "metrics")
    head = key.split(".", 1)[0].split("[", 1)[0]
    return (order.index(head) if head in order else len(order), key)
