"""Runs ONE node of the compiled pipeline IR with TFX's portable Launcher.

This is the loop body of TFX's LocalDagRunner.run_with_ir for a single node id, so caching,
drivers, resolvers and ML Metadata publishing behave exactly as in stock TFX. The in-process
runner (`mlops run`) calls it for every node in order; the Airflow tasks call it for one. Each
node's duration and outcome then go to the Pushgateway when one is configured (pipelines/monitor.py),
and its OpenLineage run events to a file or an endpoint when MLOPS_OPENLINEAGE asks (pipelines/openlineage.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class NodeResult:
    node_id: str
    status: str  # "complete", "cached", "skipped" (resolver or skipped node)
    seconds: float
    execution_id: Optional[int] = None


def compile_pipeline(pipeline, run_id: str):
    """Compiles a tfx Pipeline to IR and binds the pipeline-run id."""
    from tfx.dsl.compiler import compiler, constants
    from tfx.orchestration.portable import runtime_parameter_utils

    ir = compiler.Compiler().compile(pipeline)
    runtime_parameter_utils.substitute_runtime_parameter(ir, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id})
    return ir


def node_ids(ir) -> list:
    return [node.pipeline_node.node_info.id for node in ir.nodes]


def upstream_ids(ir) -> dict:
    return {
        node.pipeline_node.node_info.id: list(node.pipeline_node.upstream_nodes) for node in ir.nodes
    }


def run_node(ir, node_id: str) -> NodeResult:
    """Launches one node. Raises whatever the executor raised (after TFX marks it FAILED), or
    DataError when the node is a data gate whose recorded verdict blocks the span."""
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher

    nodes = {n.pipeline_node.node_info.id: n.pipeline_node for n in ir.nodes}
    if node_id not in nodes:
        raise KeyError(f"no node {node_id!r} in pipeline (nodes: {', '.join(nodes)})")
    pipeline_node = nodes[node_id]
    started = time.monotonic()
    if pipeline_node.execution_options.HasField("skip"):
        return NodeResult(node_id, "skipped", 0.0)
    deployment_config = runner_utils.extract_local_deployment_config(ir)
    connection_config = getattr(
        deployment_config.metadata_connection_config,
        deployment_config.metadata_connection_config.WhichOneof("connection_config"),
    )
    node_launcher = launcher.Launcher(
        pipeline_node=pipeline_node,
        mlmd_connection=metadata.Metadata(connection_config),
        pipeline_info=ir.pipeline_info,
        pipeline_runtime_spec=ir.runtime_spec,
        executor_spec=runner_utils.extract_executor_spec(deployment_config, node_id),
        custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment_config, node_id),
    )
    from pipelines.monitor import report_node
    from pipelines.openlineage import emit_node  # OpenLineage events: off unless MLOPS_OPENLINEAGE is set
    from pipelines.run_context import record_execution

    launched = time.time()  # OpenLineage: the run's start time
    try:
        info = node_launcher.launch()
    except Exception as err:
        report_node(ir, node_id, "failed", time.monotonic() - started)
        emit_node(ir, node_id, "failed", launched, connection_config, error=err)  # OpenLineage FAIL
        raise
    seconds = time.monotonic() - started
    if info is None:
        report_node(ir, node_id, "skipped", seconds)
        return NodeResult(node_id, "skipped", seconds)
    execution_id = getattr(info, "execution_id", None)
    if execution_id is None:
        report_node(ir, node_id, "complete", seconds)
        return NodeResult(node_id, "complete", seconds)
    record_execution(connection_config, execution_id, dict(os.environ))
    status, blocked = _outcome(connection_config, execution_id)
    report_node(ir, node_id, "blocked" if blocked else status, seconds, connection_config, execution_id)
    emit_node(ir, node_id, "blocked" if blocked else status, launched, connection_config, execution_id,
              error=blocked[0] if blocked else None)  # OpenLineage COMPLETE, or FAIL when a gate blocked
    if blocked:
        from pipelines.errors import DataError

        raise DataError(*blocked)
    return NodeResult(node_id, status, seconds, execution_id)


def _outcome(connection_config, execution_id: int):
    """("complete" | "cached", (problem, fix) if a data gate's output says blocked, else None)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from components.verdict import verdict_of

    store = metadata_store.MetadataStore(connection_config)
    [execution] = store.get_executions_by_id([execution_id])
    status = "cached" if execution.last_known_state == metadata_store_pb2.Execution.CACHED else "complete"
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id])
               if e.type == metadata_store_pb2.Event.OUTPUT]
    for artifact in store.get_artifacts_by_id(outputs) if outputs else []:
        found = verdict_of(artifact.custom_properties)
        if found:
            return status, found
    return status, None


def running_dir(config) -> Path:
    """`var/running/`: one pid file per node being run, so operators and tests can see (or kill) it."""
    return Path(config.pipeline_root).parent / "running"


@contextlib.contextmanager
def _pid_file(config, run_id: str, node_id: str):
    folder = running_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{node_id}.pid"
    path.write_text(f"{os.getpid()} {run_id}\n")
    try:
        yield path
    finally:
        try:
            if path.read_text().split()[0] == str(os.getpid()):
                path.unlink()
        except (FileNotFoundError, IndexError):
            pass


def prepare_process_env() -> None:
    """Settings every process that trains or loads Keras models needs (design.md, section 2)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # google-cloud packages pulled in by TFX warn about Python 3.10 on every import.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\..*")


def ensure_state_dirs(config) -> None:
    Path(config.pipeline_root).mkdir(parents=True, exist_ok=True)
    if config.metadata.is_sqlite:
        Path(config.metadata.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    else:  # a server-backed store gets its schema from one process, before any node opens it
        from pipelines.mlmd_store import ensure_schema

        ensure_schema(config.metadata)


def compile_for(config, run_id: str):
    """The compiled IR of the project's pipeline for `config`, bound to `run_id`."""
    from pipelines.pipeline import create_pipeline

    return compile_pipeline(create_pipeline(config), run_id)


def run_one_node(config, run_id: str, node_id: str) -> NodeResult:
    """Runs one node of the span's pipeline run `run_id` (what one Airflow task does).

    Every task of a run compiles the same config, so the IR (and so the cache keys) agree.
    """
    prepare_process_env()
    config.check()
    ensure_state_dirs(config)
    ir = compile_for(config, run_id)
    from pipelines.run_context import record_run

    with _pid_file(config, run_id, node_id):
        try:
            return run_node(ir, node_id)
        finally:  # the run's code version and config, also when the node failed or blocked
            record_run(config.metadata.to_proto(), run_id, config)
