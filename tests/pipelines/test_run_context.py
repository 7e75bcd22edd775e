"""pipelines/run_context.py: the Airflow task, the code version and the config ML Metadata records
(on real ML Metadata stores; a nightly run through Airflow: tests/e2e/test_airflow_nightly.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from pipelines import run_context
from pipelines.config import PipelineConfig, ProjectPaths
from tests.conftest import REPO


def _store(tmp_path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return config, metadata_store.MetadataStore(config)


def test_only_the_airflow_task_variables_become_properties():
    environ = {"AIRFLOW_CTX_DAG_ID": "nightly_retrain", "AIRFLOW_CTX_TASK_ID": "Trainer", "AIRFLOW_CTX_TRY_NUMBER": "2",
               "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026", "AIRFLOW_CTX_DAG_OWNER": "mlops", "PATH": "/bin"}
    assert run_context.airflow_context(environ) == {"airflow_dag_id": "nightly_retrain", "airflow_task_id": "Trainer",
                                                    "airflow_try_number": "2", "airflow_run_id": "manual__2026"}
    assert run_context.airflow_context({"PATH": "/bin"}) == {}


def test_the_code_version_is_the_checkout_commit():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    version = run_context.code_version()
    assert version.startswith(f"git:{head}"), (version, head)


def test_an_execution_and_a_run_get_their_context_and_a_missing_run_is_left_alone(tmp_path):
    connection, store = _store(tmp_path)
    [type_id] = [store.put_execution_type(metadata_store_pb2.ExecutionType(name="Trainer"))]
    [execution_id] = store.put_executions([metadata_store_pb2.Execution(type_id=type_id)])
    run_context.record_execution(connection, execution_id, {"AIRFLOW_CTX_TASK_ID": "Trainer", "AIRFLOW_CTX_TRY_NUMBER": "3"})
    [execution] = store.get_executions_by_id([execution_id])
    props = {k: v.string_value for k, v in execution.custom_properties.items()}
    assert props == {"airflow_task_id": "Trainer", "airflow_try_number": "3", "code_version": run_context.code_version()}

    paths = ProjectPaths(home=tmp_path)
    config = PipelineConfig.for_project(paths, dt.date(2026, 11, 20), train_steps=60)
    warnings = []
    assert run_context.record_run(connection, "nightly_retrain__x", config, warn=warnings.append) is None  # no context yet
    context_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline_run"))
    store.put_contexts([metadata_store_pb2.Context(type_id=context_type, name="nightly_retrain__x")])
    recorded = run_context.record_run(connection, "nightly_retrain__x", config, warn=warnings.append)
    context = store.get_context_by_type_and_name("pipeline_run", "nightly_retrain__x")
    saved = json.loads(context.custom_properties["run_config"].string_value)
    assert saved == json.loads(recorded["run_config"]) and saved["train_steps"] == 60 and saved["span"] == "2026-11-20"
    assert saved["schema_sha256"] == ""  # no schema file in this home
    assert context.custom_properties["code_version"].string_value == run_context.code_version()
    assert warnings == []


def test_a_store_that_cannot_be_written_is_one_warning_never_an_error(tmp_path):
    connection, _ = _store(tmp_path)
    warnings = []
    run_context.record_execution(connection, 12345, {}, warn=warnings.append)  # no such execution
    assert len(warnings) == 1 and "execution 12345" in warnings[0]
