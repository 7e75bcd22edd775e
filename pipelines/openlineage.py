"""OpenLineage run events for the nodes the node runner launches: optional, off by default.

ML Metadata stays the system of record. When `MLOPS_OPENLINEAGE` asks for it, the node runner
also tells an OpenLineage backend (Marquez or any other) what each node did, so that backend can
draw the same graph:

- one run per ML Metadata execution: job `<pipeline>.<node id>` in the namespace
  `MLOPS_OPENLINEAGE_NAMESPACE` ("nightly-tfx"), run id a UUID derived from the pipeline run id and
  the execution id (uuid5: the same execution always gets the same run id);
- a START event (the node's start time) and a COMPLETE event, or FAIL (with the error) when the
  node failed or a data gate blocked the span; both are sent after the node, since the run id
  needs the execution id;
- inputs and outputs: the execution's ML Metadata artifacts (dataset namespace "file", name = the
  artifact URI); for SpanCheck and CsvExampleGen also the span's CSV files (rows, bytes, sha256);
  for the Pusher the version directory it pushed (`<serving model dir>/<version>`);
- facets: the parent run (the Airflow task when AIRFLOW_CTX_* say one runs this; else the pipeline
  run), tags with the execution id, state, span date and code version, TFX as processing engine.

Where events go (read from the environment on every call, so a warm worker's fork sees the task's):

    MLOPS_OPENLINEAGE unset, "" or "off"   nothing: no event, openlineage is not even imported
    MLOPS_OPENLINEAGE=file                 one JSON line per event, `<home>/var/openlineage/events.jsonl`
    MLOPS_OPENLINEAGE=http(s)://host:port  the OpenLineage HTTP API there (`/api/v1/lineage` unless
                                           the URL has a path), e.g. Marquez's http://host:5000

Emitting never fails or stalls a node: any problem is one warning line on stderr (once per
process) and, for an HTTP endpoint, no further attempt from this process.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit

ENV_MODE = "MLOPS_OPENLINEAGE"
ENV_NAMESPACE = "MLOPS_OPENLINEAGE_NAMESPACE"
DEFAULT_NAMESPACE = "nightly-tfx"
OFF = ("", "off", "0", "false", "no", "none")
FILE = "file"
EVENTS_FILE = Path("var") / "openlineage" / "events.jsonl"  # under the project home
DATASET_NAMESPACE = "file"  # OpenLineage naming for local files: namespace "file", name = the path
PRODUCER = "https://github.com/nightly-tfx/nightly-tfx"
TAG_SOURCE = "nightly-tfx"
# The run ids are uuid5 in this namespace (uuid5 of the URL namespace and PRODUCER + "/openlineage/run").
# Never change it: the same execution must keep its run id in the backend.
RUN_ID_NAMESPACE = uuid.UUID("59688561-e749-555c-b04e-ecea84ef5831")
# An HTTP endpoint gets short attempts: lineage must not hold up a node.
HTTP_TIMEOUT_SECONDS = 2.0
HTTP_RETRY = {"total": 1, "connect": 1, "read": 1, "backoff_factor": 0.1,
              "status_forcelist": [502, 503, 504], "allowed_methods": ["POST"]}
# Airflow's OpenLineage provider numbers an unmapped task instance -1 (build_task_instance_run_id).
UNMAPPED = -1

# What this process already said or gave up on (a warm worker's forks start with a clean copy).
_state = {"warned": False, "http_down": False}


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)


def target(environ: Mapping[str, str]) -> Optional[str]:
    """"file", an http(s) URL, or None (off). Raises ValueError for anything else."""
    value = (environ.get(ENV_MODE) or "").strip()
    if value.lower() in OFF:
        return None
    if value.lower() == FILE:
        return FILE
    if urlsplit(value).scheme in ("http", "https") and urlsplit(value).netloc:
        return value
    raise ValueError(f"{ENV_MODE}={value!r} is neither off, file nor an http(s):// URL")


def namespace(environ: Mapping[str, str]) -> str:
    return (environ.get(ENV_NAMESPACE) or "").strip() or DEFAULT_NAMESPACE


def run_id(pipeline_run_id: str, execution_id: Optional[int], node_id: str = "") -> str:
    """The OpenLineage run id of an ML Metadata execution (or of a node that failed before it had one)."""
    key = f"{pipeline_run_id}/execution/{execution_id}" if execution_id is not None else \
        f"{pipeline_run_id}/node/{node_id}/no-execution"
    return str(uuid.uuid5(RUN_ID_NAMESPACE, key))


def events_file(home: Path) -> Path:
    return Path(home) / EVENTS_FILE


# ------------------------------------------------------------------------------ the hook


def emit_node(ir, node_id: str, outcome: str, started: float, connection_config=None,
              execution_id: Optional[int] = None, error: Union[BaseException, str, None] = None,
              environ: Optional[Mapping[str, str]] = None, warn: Callable[[str], None] = _warn) -> None:
    """The node runner's hook, after a node ended (`outcome`: complete, cached, blocked or failed;
    `started`: time.time() at launch). Does nothing unless MLOPS_OPENLINEAGE is on. Never raises."""
    environ = os.environ if environ is None else environ
    try:
        where = target(environ)
        if where is None:
            return
        from pipelines.monitor import home_of_pipeline_root

        emit(connection_config, pipeline=ir.pipeline_info.id,
             pipeline_run_id=ir.runtime_spec.pipeline_run_id.field_value.string_value, node_id=node_id,
             outcome=outcome, started=started, execution_id=execution_id, error=error,
             home=home_of_pipeline_root(ir.runtime_spec.pipeline_root.field_value.string_value),
             span_date=_span_date_of(ir), environ=environ, warn=warn)
    except Exception as err:  # noqa: BLE001 -- lineage is extra: never fail the node for it
        _warn_once(warn, f"warning: OpenLineage event of node {node_id} not sent ({_one_line(err)}); "
                         "ML Metadata has the record, the run goes on")


def emit(connection_config, *, pipeline: str, pipeline_run_id: str, node_id: str, outcome: str,
         started: float, home: Path, execution_id: Optional[int] = None,
         error: Union[BaseException, str, None] = None, ended: Optional[float] = None,
         span_date: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
         warn: Callable[[str], None] = _warn) -> int:
    """Builds the node's events from ML Metadata and sends them where MLOPS_OPENLINEAGE says.
    Returns how many were sent (0 when off or on failure). Never raises."""
    environ = os.environ if environ is None else environ
    try:
        where = target(environ)
        if where is None or (where != FILE and _state["http_down"]):
            return 0
        events = build_events(connection_config, pipeline=pipeline, pipeline_run_id=pipeline_run_id,
                              node_id=node_id, outcome=outcome, started=started,
                              ended=time.time() if ended is None else ended, execution_id=execution_id,
                              error=error, span_date=span_date, environ=environ)
        transport = _transport(where, home)
        sent = 0
        try:
            for event in events:
                transport.emit(event)
                sent += 1
        except Exception:
            if where != FILE:
                _state["http_down"] = True  # one timeout per process at most, not one per event
            raise
        finally:
            transport.close()
        return sent
    except Exception as err:  # noqa: BLE001 -- lineage is extra: never fail the node for it
        _warn_once(warn, f"warning: OpenLineage event of node {node_id} not sent ({_one_line(err)}); "
                         "ML Metadata has the record, the run goes on")
        return 0


def _warn_once(warn: Callable[[str], None], line: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warn(line)


def _transport(where: str, home: Path):
    if where == FILE:
        from openlineage.client.transport.file import FileConfig, FileTransport

        path = events_file(home)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileTransport(FileConfig(log_file_path=str(path), append=True))
    from openlineage.client.transport.http import HttpConfig, HttpTransport

    parts = urlsplit(where)
    base = f"{parts.scheme}://{parts.netloc}/"
    path = parts.path.strip("/")
    config = HttpConfig(url=base, timeout=HTTP_TIMEOUT_SECONDS, retry=dict(HTTP_RETRY),
                        **({"endpoint": path} if path else {}))
    return HttpTransport(config)


def _span_date_of(ir) -> Optional[str]:
    """The span this pipeline run ingests: the `span_date` parameter of a node that has one (SpanCheck)."""
    for node in ir.nodes:
        params = node.pipeline_node.parameters.parameters
        if "span_date" in params and params["span_date"].field_value.string_value:
            return params["span_date"].field_value.string_value
    return None


# ------------------------------------------------------------------------------ the events


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).isoformat()


def _text(props, key: str) -> str:
    if key not in props:
        return ""
    value = props[key]
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


def build_events(connection_config, *, pipeline: str, pipeline_run_id: str, node_id: str, outcome: str,
                 started: float, ended: float, execution_id: Optional[int] = None,
                 error: Union[BaseException, str, None] = None, span_date: Optional[str] = None,
                 environ: Optional[Mapping[str, str]] = None) -> list:
    """[START, COMPLETE|FAIL] RunEvents (openlineage.client.event_v2) of one node's execution."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import documentation_job, error_message_run, job_type_job, tags_run

    environ = os.environ if environ is None else environ
    ns = namespace(environ)
    facts = _read_execution(connection_config, pipeline, pipeline_run_id, node_id, execution_id, started) \
        if connection_config is not None else _Facts()
    span_date = span_date or facts.span_date
    the_run_id = run_id(pipeline_run_id, facts.execution_id, node_id)

    tags = {
        "pipeline_run_id": pipeline_run_id,
        "outcome": outcome,
        "mlmd_execution_id": "" if facts.execution_id is None else str(facts.execution_id),
        "mlmd_execution_state": facts.state,
        "mlmd_store": facts.store,
        "span_date": span_date or "",
        "code_version": facts.code_version or _code_version(),
        "airflow_try_number": environ.get("AIRFLOW_CTX_TRY_NUMBER", ""),
    }
    run_facets = {
        "parent": _parent_facet(environ, ns, pipeline, pipeline_run_id),
        "processing_engine": _engine_facet(),
        "tags": tags_run.TagsRunFacet(tags=[tags_run.TagsRunFacetFields(key=k, value=v, source=TAG_SOURCE)
                                            for k, v in tags.items() if v], producer=PRODUCER),
    }
    job_facets = {
        "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="TFX", jobType="NODE",
                                                producer=PRODUCER),
        "documentation": documentation_job.DocumentationJobFacet(
            description=(f"TFX node {node_id}{_component_note(node_id, facts.component)} of pipeline {pipeline}. "
                         "ML Metadata is the system of record: `mlops lineage --run <pipeline run id>` "
                         "explains a run (tag pipeline_run_id)."), producer=PRODUCER),
    }
    job = Job(namespace=ns, name=f"{pipeline}.{node_id}", facets=job_facets)
    failed = outcome in ("failed", "blocked")
    end_facets = dict(run_facets)
    if failed:
        end_facets["errorMessage"] = _error_facet(error, outcome, error_message_run)
    start = RunEvent(eventType=RunState.START, eventTime=_iso(started), run=Run(runId=the_run_id, facets=run_facets),
                     job=job, inputs=facts.inputs(), outputs=[], producer=PRODUCER)
    end = RunEvent(eventType=RunState.FAIL if failed else RunState.COMPLETE, eventTime=_iso(max(ended, started)),
                   run=Run(runId=the_run_id, facets=end_facets), job=job, inputs=facts.inputs(),
                   outputs=facts.outputs(), producer=PRODUCER)
    return [start, end]


def _component_note(node_id: str, component: str) -> str:
    return f" ({component})" if component and component != node_id else ""


def _error_facet(error, outcome: str, module):
    if isinstance(error, BaseException):
        message = str(error).strip() or type(error).__name__
        stack = "".join(traceback.format_exception(type(error), error, error.__traceback__)) \
            if error.__traceback__ else None
    else:
        message, stack = (str(error) if error else f"node {outcome}"), None
    if outcome == "blocked":
        message = f"blocked by a data gate: {message}"
    return module.ErrorMessageRunFacet(message=message, programmingLanguage="python", stackTrace=stack,
                                       producer=PRODUCER)


def _code_version() -> str:
    from pipelines.run_context import code_version

    return code_version()


@functools.lru_cache(maxsize=None)
def _installed(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _engine_facet():
    from openlineage.client.facet_v2 import processing_engine_run

    installed = _installed
    return processing_engine_run.ProcessingEngineRunFacet(
        name="TFX", version=installed("tfx"), openlineageAdapterVersion=installed("nightly-tfx"), producer=PRODUCER)


def airflow_task(environ: Mapping[str, str], ns: str) -> Optional[Tuple[str, str, str, str]]:
    """(task job name, task run id, DAG job name, DAG run id) of the Airflow task running this
    process, or None outside Airflow.

    With the logical date and try number in the environment, the ids are those Airflow's OpenLineage
    provider gives the same task instance and DAG run (plugins/adapter.py: build_task_instance_run_id
    with map index -1, build_dag_run_id with clear number 0), provided its namespace is this one:
    the backend then joins our node runs to the provider's task runs. Without them (a DAG run with
    no logical date), uuid5 of the DAG id, DAG run id and task id.
    """
    dag_id, dag_run_id, task_id = (environ.get(f"AIRFLOW_CTX_{k}", "") for k in ("DAG_ID", "DAG_RUN_ID", "TASK_ID"))
    if not (dag_id and dag_run_id and task_id):
        return None
    logical, try_number = environ.get("AIRFLOW_CTX_LOGICAL_DATE", ""), environ.get("AIRFLOW_CTX_TRY_NUMBER", "")
    try:
        instant = dt.datetime.fromisoformat(logical) if logical and try_number else None
    except ValueError:
        instant = None
    if instant is not None:
        from openlineage.client.uuid import generate_static_uuid

        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=dt.timezone.utc)
        task_run = generate_static_uuid(instant=instant,
                                        data=f"{ns}.{dag_id}.{task_id}.{try_number}.{UNMAPPED}".encode())
        dag_run = generate_static_uuid(instant=instant, data=f"{ns}.{dag_id}.0".encode())
    else:
        task_run = uuid.uuid5(RUN_ID_NAMESPACE, f"airflow/{dag_id}/{dag_run_id}/{task_id}")
        dag_run = uuid.uuid5(RUN_ID_NAMESPACE, f"airflow/{dag_id}/{dag_run_id}")
    return f"{dag_id}.{task_id}", str(task_run), dag_id, str(dag_run)


def _parent_facet(environ: Mapping[str, str], ns: str, pipeline: str, pipeline_run_id: str):
    """The Airflow task (root: its DAG run); outside Airflow, the pipeline run (job `<pipeline>`)."""
    from openlineage.client.facet_v2 import parent_run

    task = airflow_task(environ, ns)
    if task is None:
        return parent_run.ParentRunFacet(
            run=parent_run.Run(runId=str(uuid.uuid5(RUN_ID_NAMESPACE, f"{pipeline_run_id}/pipeline-run"))),
            job=parent_run.Job(namespace=ns, name=pipeline), producer=PRODUCER)
    task_name, task_run, dag_name, dag_run = task
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=task_run), job=parent_run.Job(namespace=ns, name=task_name),
        root=parent_run.Root(run=parent_run.RootRun(runId=dag_run), job=parent_run.RootJob(namespace=ns, name=dag_name)),
        producer=PRODUCER)


# ------------------------------------------------------------------------ ML Metadata reads


class _Facts:
    """What ML Metadata says of one execution, as OpenLineage datasets."""

    def __init__(self):
        self.execution_id: Optional[int] = None
        self.state = ""
        self.store = ""
        self.component = ""
        self.code_version = ""
        self.span_date: Optional[str] = None
        self._inputs: List[tuple] = []  # (name, facets, input facets)
        self._outputs: List[tuple] = []  # (name, facets, output facets)

    def inputs(self) -> list:
        from openlineage.client.event_v2 import InputDataset

        return [InputDataset(namespace=DATASET_NAMESPACE, name=name, facets=facets, inputFacets=extra)
                for name, facets, extra in self._inputs]

    def outputs(self) -> list:
        from openlineage.client.event_v2 import OutputDataset

        return [OutputDataset(namespace=DATASET_NAMESPACE, name=name, facets=facets, outputFacets=extra)
                for name, facets, extra in self._outputs]


def _tags(pairs: Dict[str, object]):
    from openlineage.client.facet_v2 import tags_dataset

    return tags_dataset.TagsDatasetFacet(
        tags=[tags_dataset.TagsDatasetFacetFields(key=k, value=str(v), source=TAG_SOURCE)
              for k, v in pairs.items() if v not in (None, "")], producer=PRODUCER)


def _version(value: str):
    from openlineage.client.facet_v2 import dataset_version_dataset

    return dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(value), producer=PRODUCER)


def _read_execution(connection_config, pipeline: str, pipeline_run_id: str, node_id: str,
                    execution_id: Optional[int], started: float) -> _Facts:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as pb

    facts = _Facts()
    if connection_config.WhichOneof("config") == "sqlite":
        facts.store = connection_config.sqlite.filename_uri
    elif connection_config.WhichOneof("config") == "mysql":  # where, never the password
        mysql = connection_config.mysql
        facts.store = f"mysql://{mysql.user}@{mysql.host}:{mysql.port}/{mysql.database}"
    store = metadata_store.MetadataStore(connection_config)
    if execution_id is None:  # a failed launch: the execution TFX marked FAILED, if this launch made one
        from pipelines.run_context import latest_execution_id

        found = latest_execution_id(connection_config, pipeline, pipeline_run_id, node_id)
        if found is not None:
            [candidate] = store.get_executions_by_id([found])
            if candidate.create_time_since_epoch / 1000.0 >= started - 1.0:
                execution_id = found
    if execution_id is None:
        return facts
    [execution] = store.get_executions_by_id([execution_id])
    facts.execution_id = execution_id
    facts.state = pb.Execution.State.Name(execution.last_known_state).lower()
    [execution_type] = store.get_execution_types_by_id([execution.type_id])
    facts.component = execution_type.name.rsplit(".", 1)[-1]
    props = execution.custom_properties
    facts.code_version = _text(props, "code_version")
    facts.span_date = _text(props, "span_date") or _span_from_number(_text(props, "span")) or None

    events = store.get_events_by_execution_ids([execution_id])
    artifacts = {a.id: a for a in store.get_artifacts_by_id(sorted({e.artifact_id for e in events}))} if events else {}
    type_names = {t.id: t.name for t in store.get_artifact_types_by_id(sorted({a.type_id for a in artifacts.values()}))} \
        if artifacts else {}
    inputs = (pb.Event.INPUT, pb.Event.DECLARED_INPUT, pb.Event.INTERNAL_INPUT,
              pb.Event.INTERNAL_OUTPUT)  # a resolver's "outputs" are what it read, not something it made
    seen = set()
    for event in events:
        artifact = artifacts.get(event.artifact_id)
        if artifact is None or not artifact.uri:
            continue
        direction = "in" if event.type in inputs else "out"
        if (direction, artifact.id) in seen:
            continue
        seen.add((direction, artifact.id))
        key = next((step.key for step in event.path.steps if step.HasField("key")), "")
        type_name = type_names.get(artifact.type_id, "")
        tags = {"mlmd_artifact_id": artifact.id, "mlmd_artifact_type": type_name, "tfx_key": key,
                "span": _text(artifact.properties, "span") or _text(artifact.custom_properties, "span")}
        entry = (artifact.uri, {"tags": _tags(tags)}, {})
        (facts._inputs if direction == "in" else facts._outputs).append(entry)
        if direction == "out" and type_name == "PushedModel":
            facts._outputs.extend(_pushed_version(artifact))
        if direction == "out" and _text(artifact.custom_properties, "input_files"):
            facts._inputs.extend(_span_files(_text(props, "input_base"), facts.span_date,
                                             _text(artifact.custom_properties, "input_files")))
    if facts.component in ("CsvExampleGen", "FastCsvExampleGen"):
        facts._inputs.extend(_example_gen_files(store, pipeline_run_id, props, facts.span_date))
    return facts


def _span_from_number(span: str) -> Optional[str]:
    """ExampleGen's span number (days since 1970-01-01, components/util) as a date."""
    if not span.lstrip("-").isdigit():
        return None
    return (dt.date(1970, 1, 1) + dt.timedelta(days=int(span))).isoformat()


def _pushed_version(artifact) -> list:
    """The version directory a PushedModel that pushed put in the serving model directory."""
    props = artifact.custom_properties
    version, destination = _text(props, "pushed_version"), _text(props, "pushed_destination")
    if _text(props, "pushed") != "1" or not version or not destination:
        return []
    tags = {"mlmd_pushed_model_id": artifact.id, "push_kind": _text(props, "push_kind"),
            "rollback_trigger": _text(props, "rollback_trigger"), "model_fingerprint": _text(props, "model_fingerprint"),
            "replaced_version": _text(props, "replaced_version") if _text(props, "replaced_version") != "0" else "",
            "pushed_at": _text(props, "pushed_at")}
    return [(f"{destination.rstrip('/')}/{version}", {"version": _version(version), "tags": _tags(tags)}, {})]


def _file_entry(path: str, size: Optional[int], rows: Optional[int], sha256: str) -> tuple:
    from openlineage.client.facet_v2 import input_statistics_input_dataset

    facets = {"tags": _tags({"kind": "span_csv", "sha256": sha256})}
    if sha256:
        facets["version"] = _version(sha256)
    stats = {k: v for k, v in (("rowCount", rows), ("size", size)) if isinstance(v, int)}
    extra = {"inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
        fileCount=1, **stats, producer=PRODUCER)}
    return path, facets, extra


def _span_files(input_base: str, span_date: Optional[str], input_files_json: str) -> list:
    """SpanCheck's report: the span's CSV files, `<input_base>/<span date>/<name>`, as it read them."""
    if not input_base or not span_date:
        return []
    files = json.loads(input_files_json)
    return [_file_entry(str(Path(input_base, span_date, f["name"])), f.get("bytes"), f.get("rows"),
                        f.get("sha256", "")) for f in files if isinstance(f, dict) and f.get("name")]


def _example_gen_files(store, pipeline_run_id: str, props, span_date: Optional[str]) -> list:
    """The CSV files CsvExampleGen's input patterns match, with rows and digests from this run's
    SpanCheck report when it has one (sizes from the files otherwise)."""
    input_base = _text(props, "input_base")
    if not input_base:
        return []
    try:
        patterns = [split["pattern"] for split in json.loads(_text(props, "input_config") or "{}").get("splits", [])]
    except (ValueError, KeyError, TypeError):
        patterns = []
    patterns = patterns or ([f"{span_date}/*.csv"] if span_date else [])
    known: Dict[str, dict] = {}
    context = store.get_context_by_type_and_name("pipeline_run", pipeline_run_id)
    for artifact in store.get_artifacts_by_context(context.id) if context else []:
        report = artifact.custom_properties
        if _text(report, "gate") == "span_check" and _text(report, "span_date") == (span_date or "") \
                and _text(report, "input_files"):
            for f in json.loads(_text(report, "input_files")):
                known[str(Path(input_base, span_date, f["name"]))] = f
    entries = []
    for pattern in patterns:
        for path in sorted(Path(input_base).glob(pattern)):
            f = known.get(str(path), {})
            size = f.get("bytes") if "bytes" in f else (path.stat().st_size if path.is_file() else None)
            entries.append(_file_entry(str(path), size, f.get("rows"), f.get("sha256", "")))
    return entries
