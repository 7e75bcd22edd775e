"""pipelines/openlineage.py: the OpenLineage run events of the node runner, on a small real ML
Metadata store shaped like a nightly run's (no TFX run), validated against the OpenLineage JSON
schema (tests/data/openlineage/: the spec and the facet schemas the events use; no network)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import jsonschema
import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb
from referencing import Registry, Resource

from pipelines import openlineage
from tests.conftest import REPO

SPEC = Path(__file__).resolve().parents[1] / "data" / "openlineage"
RUN_ID = "nightly_retrain__manual__2026-11-20T02:00:00+00:00"
SPAN = "2026-11-20"
AIRFLOW = {"AIRFLOW_CTX_DAG_ID": "nightly_retrain", "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-11-20T02:00:00+00:00",
           "AIRFLOW_CTX_TASK_ID": "SpanCheck", "AIRFLOW_CTX_TRY_NUMBER": "1",
           "AIRFLOW_CTX_LOGICAL_DATE": "2026-11-20T02:00:00+00:00"}
CSV = "trip_start_hour,fare\n1,2.5\n2,3.5\n"


# ------------------------------------------------------------------------ the schema


def _registry() -> Registry:
    resources = []
    for path in [SPEC / "OpenLineage.json", *sorted((SPEC / "facets").glob("*.json"))]:
        contents = json.loads(path.read_text())
        resources.append((contents["$id"], Resource.from_contents(contents)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def _validator(ref: str):
    return jsonschema.Draft202012Validator({"$ref": ref}, registry=REGISTRY,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _facets(event: dict):
    """(where, key, facet) of every facet in the event."""
    yield from (("run", k, f) for k, f in event["run"].get("facets", {}).items())
    yield from (("job", k, f) for k, f in event["job"].get("facets", {}).items())
    for side in ("inputs", "outputs"):
        for dataset in event.get(side, []):
            yield from ((side, k, f) for k, f in dataset.get("facets", {}).items())
            yield from ((side, k, f) for k, f in dataset.get("inputFacets", {}).items())
            yield from ((side, k, f) for k, f in dataset.get("outputFacets", {}).items())


def validate(event: dict) -> None:
    """The event against OpenLineage.json's RunEvent, and every facet against its own schema (each
    facet names it in _schemaURL; all must be vendored, so none goes unchecked)."""
    _validator("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent").validate(event)
    assert event["schemaURL"].startswith("https://openlineage.io/spec/2-0-2/OpenLineage.json")
    for where, key, facet in _facets(event):
        document, _, pointer = facet["_schemaURL"].partition("#")
        schema = REGISTRY.contents(document)  # KeyError: a facet schema that is not vendored
        assert key in schema["properties"], (where, key, document)  # the facet's name in the event
        _validator(facet["_schemaURL"]).validate(facet)
        jsonschema.Draft202012Validator(schema, registry=REGISTRY,
                                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                                        ).validate({key: facet})


def test_the_validator_rejects_what_the_spec_rejects():
    good = {"eventTime": "2026-11-20T02:00:00+00:00", "producer": "https://example.com/p", "eventType": "COMPLETE",
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": str(uuid.uuid4())}, "job": {"namespace": "n", "name": "j"}}
    validate(good)
    for broken in ({**good, "eventType": "DONE"}, {**good, "run": {"runId": "not-a-uuid"}},
                   {**good, "eventTime": "yesterday"},
                   {**good, "run": {"runId": str(uuid.uuid4()), "facets": {"parent": {
                       "_producer": "https://example.com/p",
                       "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ParentRunFacet.json#/$defs/ParentRunFacet",
                       "run": {"runId": str(uuid.uuid4())}}}}}):  # parent without its job
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


# ------------------------------------------------------------------------ a store like a run's


class Run:
    """A pipeline run in a real ML Metadata SQLite store: SpanCheck, CsvExampleGen, AtomicPusher."""

    def __init__(self, home: Path):
        self.home = home
        self.data_root = home / "data" / "incoming"
        (self.data_root / SPAN).mkdir(parents=True)
        (self.data_root / SPAN / "data.csv").write_text(CSV)
        self.root = home / "var" / "pipeline_root"
        self.serving = home / "serving" / "models" / "taxi"
        (home / "var").mkdir(parents=True)
        self.config = pb.ConnectionConfig()
        self.config.sqlite.filename_uri = str(home / "var" / "metadata.sqlite")
        self.config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(self.config)
        self.run_context = self._context("pipeline_run", RUN_ID)
        self.ids = {}

    def _context(self, type_name: str, name: str) -> pb.Context:
        type_id = self.store.put_context_type(pb.ContextType(name=type_name))
        [context_id] = self.store.put_contexts([pb.Context(type_id=type_id, name=name)])
        return self.store.get_contexts_by_id([context_id])[0]

    def _artifact(self, type_name: str, uri: str, **custom) -> pb.Artifact:
        type_id = self.store.put_artifact_type(pb.ArtifactType(name=type_name))
        artifact = pb.Artifact(type_id=type_id, uri=uri, state=pb.Artifact.LIVE)
        for key, value in custom.items():
            if isinstance(value, int):
                artifact.custom_properties[key].int_value = value
            else:
                artifact.custom_properties[key].string_value = value
        return artifact

    def execution(self, component: str, node: str, inputs=(), outputs=(), state=pb.Execution.COMPLETE, **custom):
        type_id = self.store.put_execution_type(pb.ExecutionType(name=component))
        execution = pb.Execution(type_id=type_id, last_known_state=state)
        for key, value in {"code_version": "git:abc123", **custom}.items():
            if isinstance(value, int):
                execution.custom_properties[key].int_value = value
            else:
                execution.custom_properties[key].string_value = value
        artifacts_and_events = []
        for kind, items in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for key, artifact in items:
                event = pb.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                artifacts_and_events.append((artifact, event))
        node_context = self._context("node", f"taxi.{node}")
        execution_id, artifact_ids, _ = self.store.put_execution(execution, artifacts_and_events,
                                                                 [self.run_context, node_context])
        self.ids[node] = execution_id
        return execution_id, artifact_ids

    def nightly(self):
        """The three nodes whose events carry more than their artifacts, shaped like the real ones."""
        schema = self._artifact("Schema", str(self.root / "ImportSchemaGen" / "schema" / "3"))
        files = json.dumps([{"name": "data.csv", "bytes": len(CSV), "sha256": "4ccba772" * 8, "rows": 2}])
        report = self._artifact("ExampleAnomalies", str(self.root / "SpanCheck" / "report" / "5"), gate="span_check",
                                span_date=SPAN, blocked=0, rows=2, files=1, input_files=files)
        _, [schema_id, _] = self.execution(
            "components.span_check.component.SpanCheck", "SpanCheck", inputs=[("schema", schema)],
            outputs=[("report", report)], input_base=str(self.data_root), span_date=SPAN)
        examples = self._artifact("Examples", str(self.root / "CsvExampleGen" / "examples" / "6"))
        examples.properties["span"].int_value = 20777
        self.store.put_artifact_type(pb.ArtifactType(name="Examples", properties={"span": pb.INT}),
                                     can_add_fields=True)
        examples.type_id = self.store.get_artifact_type("Examples").id
        input_config = json.dumps({"splits": [{"name": "single_split", "pattern": f"{SPAN}/*.csv"}]})
        self.execution("tfx.components.example_gen.csv_example_gen.component.CsvExampleGen", "CsvExampleGen",
                       outputs=[("examples", examples)], input_base=str(self.data_root), span=20777,
                       input_config=input_config)
        model = self._artifact("Model", str(self.root / "Trainer" / "model" / "11"))
        blessing = self._artifact("ModelBlessing", str(self.root / "GatedEvaluator" / "blessing" / "12"), blessed=1)
        pushed = self._artifact("PushedModel", str(self.root / "AtomicPusher" / "pushed_model" / "13"), pushed=1,
                                pushed_version=1, pushed_destination=str(self.serving), push_kind="nightly",
                                model_fingerprint="6c54" * 16, pushed_at="2026-11-20T02:10:00+00:00",
                                replaced_version=0)
        self.execution("components.pusher.component.AtomicPusher", "AtomicPusher",
                       inputs=[("model", model), ("model_blessing", blessing)], outputs=[("pushed_model", pushed)],
                       push_base_directory=str(self.serving))
        return schema_id


@pytest.fixture
def run(tmp_path):
    openlineage._state.update(warned=False, http_down=False)
    made = Run(tmp_path / "home")
    made.nightly()
    yield made
    openlineage._state.update(warned=False, http_down=False)


def _emit(run: Run, node: str, environ: dict, outcome: str = "complete", warnings=None, **kwargs) -> int:
    return openlineage.emit(run.config, pipeline="taxi", pipeline_run_id=RUN_ID, node_id=node, outcome=outcome,
                            started=time.time() - 2, home=run.home, execution_id=run.ids.get(node),
                            environ=environ, warn=(warnings.append if warnings is not None else _no_warning),
                            **kwargs)


def _no_warning(line):
    raise AssertionError(f"unexpected warning: {line}")


def _events(run: Run) -> list:
    return [json.loads(line) for line in openlineage.events_file(run.home).read_text().splitlines()]


def _tags(facet: dict) -> dict:
    return {t["key"]: t["value"] for t in facet["tags"]}


# ------------------------------------------------------------------------ the events


def test_file_events_are_valid_openlineage_and_carry_the_run(run):
    env = {"MLOPS_OPENLINEAGE": "file"}
    for node in ("SpanCheck", "CsvExampleGen", "AtomicPusher"):
        assert _emit(run, node, {**env, **AIRFLOW, "AIRFLOW_CTX_TASK_ID": node}) == 2
    events = _events(run)
    assert [(e["eventType"], e["job"]["name"]) for e in events] == [
        ("START", "taxi.SpanCheck"), ("COMPLETE", "taxi.SpanCheck"), ("START", "taxi.CsvExampleGen"),
        ("COMPLETE", "taxi.CsvExampleGen"), ("START", "taxi.AtomicPusher"), ("COMPLETE", "taxi.AtomicPusher")]
    for event in events:
        validate(event)
        assert event["job"]["namespace"] == "nightly-tfx" and event["producer"] == openlineage.PRODUCER
    by_job = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}

    # SpanCheck: the schema in, the report out, and the span's CSV file as SpanCheck read it.
    span_check = by_job["taxi.SpanCheck"]
    assert span_check["run"]["runId"] == str(uuid.uuid5(openlineage.RUN_ID_NAMESPACE, f"{RUN_ID}/execution/{run.ids['SpanCheck']}"))
    assert {e["run"]["runId"] for e in events if e["job"]["name"] == "taxi.SpanCheck"} == {span_check["run"]["runId"]}
    csv = str(run.data_root / SPAN / "data.csv")
    inputs = {d["name"]: d for d in span_check["inputs"]}
    assert set(inputs) == {str(run.root / "ImportSchemaGen" / "schema" / "3"), csv}
    assert all(d["namespace"] == "file" for d in span_check["inputs"] + span_check["outputs"])
    assert inputs[csv]["inputFacets"]["inputStatistics"]["rowCount"] == 2
    assert inputs[csv]["inputFacets"]["inputStatistics"]["size"] == len(CSV)
    assert inputs[csv]["facets"]["version"]["datasetVersion"] == "4ccba772" * 8
    assert [d["name"] for d in span_check["outputs"]] == [str(run.root / "SpanCheck" / "report" / "5")]
    assert _tags(span_check["outputs"][0]["facets"]["tags"])["mlmd_artifact_type"] == "ExampleAnomalies"
    tags = _tags(span_check["run"]["facets"]["tags"])
    assert tags["mlmd_execution_id"] == str(run.ids["SpanCheck"]) and tags["span_date"] == SPAN
    assert tags["code_version"] == "git:abc123" and tags["mlmd_execution_state"] == "complete"
    assert tags["pipeline_run_id"] == RUN_ID and tags["mlmd_store"].endswith("metadata.sqlite")
    parent = span_check["run"]["facets"]["parent"]
    assert (parent["job"]["namespace"], parent["job"]["name"]) == ("nightly-tfx", "nightly_retrain.SpanCheck")
    assert (parent["root"]["job"]["namespace"], parent["root"]["job"]["name"]) == ("nightly-tfx", "nightly_retrain")
    assert span_check["run"]["facets"]["processing_engine"]["name"] == "TFX"

    # CsvExampleGen: the same file (rows and digest from this run's SpanCheck report), the examples out.
    example_gen = by_job["taxi.CsvExampleGen"]
    [file_input] = example_gen["inputs"]
    assert file_input["name"] == csv and file_input["inputFacets"]["inputStatistics"]["rowCount"] == 2
    assert _tags(example_gen["outputs"][0]["facets"]["tags"])["span"] == "20777"
    assert _tags(example_gen["run"]["facets"]["tags"])["span_date"] == SPAN  # from the span number

    # The Pusher: model and blessing in; the PushedModel and the version directory out.
    pusher = by_job["taxi.AtomicPusher"]
    assert {d["name"] for d in pusher["inputs"]} == {str(run.root / "Trainer" / "model" / "11"),
                                                     str(run.root / "GatedEvaluator" / "blessing" / "12")}
    outputs = {d["name"]: d for d in pusher["outputs"]}
    assert set(outputs) == {str(run.root / "AtomicPusher" / "pushed_model" / "13"), f"{run.serving}/1"}
    version = outputs[f"{run.serving}/1"]["facets"]
    assert version["version"]["datasetVersion"] == "1" and _tags(version["tags"])["push_kind"] == "nightly"


def test_the_airflow_task_is_the_parent_with_the_providers_ids():
    """With the logical date and try number, the ids are the ones Airflow's OpenLineage provider
    derives for the task instance and its DAG run (same namespace); without, uuid5 of the ids."""
    from openlineage.client.uuid import generate_static_uuid

    instant = dt.datetime(2026, 11, 20, 2, tzinfo=dt.timezone.utc)
    task_name, task_run, dag_name, dag_run = openlineage.airflow_task(AIRFLOW, "nightly-tfx")
    assert (task_name, dag_name) == ("nightly_retrain.SpanCheck", "nightly_retrain")
    assert task_run == str(generate_static_uuid(instant=instant, data=b"nightly-tfx.nightly_retrain.SpanCheck.1.-1"))
    assert dag_run == str(generate_static_uuid(instant=instant, data=b"nightly-tfx.nightly_retrain.0"))
    retry = openlineage.airflow_task({**AIRFLOW, "AIRFLOW_CTX_TRY_NUMBER": "2"}, "nightly-tfx")
    assert retry[1] != task_run and retry[3] == dag_run  # a retry is another task run of the same DAG run

    no_date = {k: v for k, v in AIRFLOW.items() if k != "AIRFLOW_CTX_LOGICAL_DATE"}
    fallback = openlineage.airflow_task(no_date, "nightly-tfx")
    assert fallback[1] == str(uuid.uuid5(openlineage.RUN_ID_NAMESPACE,
                                         f"airflow/nightly_retrain/{AIRFLOW['AIRFLOW_CTX_DAG_RUN_ID']}/SpanCheck"))
    assert openlineage.airflow_task(no_date, "nightly-tfx") == fallback
    assert openlineage.airflow_task({"AIRFLOW_CTX_DAG_ID": "x"}, "nightly-tfx") is None


def test_outside_airflow_the_parent_is_the_pipeline_run_and_the_namespace_is_configurable(run):
    assert _emit(run, "AtomicPusher", {"MLOPS_OPENLINEAGE": "file", "MLOPS_OPENLINEAGE_NAMESPACE": "team-a"}) == 2
    for event in _events(run):
        validate(event)
        assert event["job"]["namespace"] == "team-a"
        parent = event["run"]["facets"]["parent"]["job"]
        assert (parent["namespace"], parent["name"]) == ("team-a", "taxi")
        assert "root" not in event["run"]["facets"]["parent"]


def test_a_failed_node_and_a_blocked_span_give_fail_events_with_the_error(run):
    env = {"MLOPS_OPENLINEAGE": "file"}
    # A launch that raised: TFX marked its execution FAILED; the runner does not know its id.
    failed_id, _ = run.execution("tfx.components.trainer.component.Trainer", "Trainer", state=pb.Execution.FAILED)
    try:
        raise RuntimeError("Trainer ran out of memory")
    except RuntimeError as err:
        assert openlineage.emit(run.config, pipeline="taxi", pipeline_run_id=RUN_ID, node_id="Trainer",
                                outcome="failed", started=time.time() - 5, home=run.home, error=err,
                                environ=env, warn=_no_warning) == 2
    # A gate that blocked: its execution completed, the task fails with the gate's problem.
    assert _emit(run, "SpanCheck", env, outcome="blocked", error="span 2026-11-20: 3 rows have 7 fields") == 2
    # A node that failed before ML Metadata had an execution for it.
    assert openlineage.emit(run.config, pipeline="taxi", pipeline_run_id=RUN_ID, node_id="Transform",
                            outcome="failed", started=time.time(), home=run.home, error=ValueError("bad config"),
                            environ=env, warn=_no_warning) == 2
    events = _events(run)
    for event in events:
        validate(event)
    ends = [e for e in events if e["eventType"] != "START"]
    assert [e["eventType"] for e in ends] == ["FAIL"] * 3
    trainer, gate, transform = ends
    assert _tags(trainer["run"]["facets"]["tags"])["mlmd_execution_id"] == str(failed_id)
    assert _tags(trainer["run"]["facets"]["tags"])["mlmd_execution_state"] == "failed"
    error = trainer["run"]["facets"]["errorMessage"]
    assert error["message"] == "Trainer ran out of memory" and "RuntimeError" in error["stackTrace"]
    assert error["programmingLanguage"] == "python"
    assert gate["run"]["facets"]["errorMessage"]["message"].startswith("blocked by a data gate: span 2026-11-20")
    assert gate["outputs"], "a blocked gate still wrote its report"
    assert "mlmd_execution_id" not in _tags(transform["run"]["facets"]["tags"])
    assert transform["run"]["runId"] == openlineage.run_id(RUN_ID, None, "Transform")


def test_emit_node_reads_the_pipeline_run_and_home_from_the_ir(run):
    from tfx.proto.orchestration import pipeline_pb2

    ir = pipeline_pb2.Pipeline()
    ir.pipeline_info.id = "taxi"
    ir.runtime_spec.pipeline_root.field_value.string_value = str(run.root)
    ir.runtime_spec.pipeline_run_id.field_value.string_value = RUN_ID
    node = ir.nodes.add().pipeline_node
    node.node_info.id = "SpanCheck"
    node.parameters.parameters["span_date"].field_value.string_value = SPAN
    warnings = []
    openlineage.emit_node(ir, "AtomicPusher", "complete", time.time() - 1, run.config, run.ids["AtomicPusher"],
                          environ={"MLOPS_OPENLINEAGE": "file"}, warn=warnings.append)
    assert warnings == []
    events = _events(run)  # <home>/var/openlineage/events.jsonl, home from the pipeline root
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        validate(event)
    assert _tags(events[1]["run"]["facets"]["tags"])["span_date"] == SPAN  # from SpanCheck's parameter


# ------------------------------------------------------------------------ off, and failing quietly


def test_off_by_default_nothing_is_written_and_openlineage_is_not_imported(tmp_path):
    """In a fresh process (this one may have imported openlineage already)."""
    code = """
import sys, time
from types import SimpleNamespace
from pipelines.openlineage import emit_node
ir = SimpleNamespace(pipeline_info=SimpleNamespace(id="taxi"))  # off: never even read
for value in (None, "", "off", "OFF"):
    env = {} if value is None else {"MLOPS_OPENLINEAGE": value}
    emit_node(ir, "Trainer", "complete", time.time(), None, 7, environ=env, warn=lambda line: print("WARN", line))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("openlineage", "ml_metadata", "tfx")))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_OPENLINEAGE")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert not list(tmp_path.rglob("*.jsonl"))


def test_a_refused_http_endpoint_is_one_warning_line_not_an_exception(run):
    from serving.net import free_port

    env = {"MLOPS_OPENLINEAGE": f"http://127.0.0.1:{free_port()}", **AIRFLOW}
    warnings = []
    began = time.monotonic()
    for node in ("SpanCheck", "CsvExampleGen", "AtomicPusher"):
        assert _emit(run, node, env, warnings=warnings) == 0
    assert len(warnings) == 1 and warnings[0].startswith("warning: OpenLineage event of node SpanCheck not sent")
    assert "\n" not in warnings[0] and "the run goes on" in warnings[0]
    assert time.monotonic() - began < 10  # one short attempt, then this process stops trying
    assert not openlineage.events_file(run.home).exists()


def test_a_value_that_is_neither_off_file_nor_a_url_is_one_warning(run):
    warnings = []
    for node in ("SpanCheck", "AtomicPusher"):
        assert _emit(run, node, {"MLOPS_OPENLINEAGE": "yes"}, warnings=warnings) == 0
    assert len(warnings) == 1 and "MLOPS_OPENLINEAGE='yes' is neither off, file nor an http(s):// URL" in warnings[0]
    assert not openlineage.events_file(run.home).exists()


def test_the_http_transport_posts_to_the_lineage_api(run):
    """A tiny OpenLineage endpoint: the events arrive as JSON at /api/v1/lineage (or the URL's path)."""
    import http.server
    import threading

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert _emit(run, "AtomicPusher", {"MLOPS_OPENLINEAGE": url}) == 2
        assert _emit(run, "SpanCheck", {"MLOPS_OPENLINEAGE": url + "/custom/lineage"}) == 2
    finally:
        server.shutdown()
        server.server_close()
    assert [path for path, _ in received] == ["/api/v1/lineage"] * 2 + ["/custom/lineage"] * 2
    for _, event in received:
        validate(event)
