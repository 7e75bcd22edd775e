"""What ML Metadata records beside TFX's own facts: who ran an execution and with what code and config.

- On every execution the node runner launches: the Airflow DAG id, DAG run id, task id and try
  number when an Airflow task runs it (BashOperator exports them as AIRFLOW_CTX_*), and the
  project's code version.
- On every pipeline run (its `pipeline_run` context): the code version and the config it ran with
  (span, train/eval steps, strategy, the push gates, the schema file's digest).

These answer "which Airflow task wrote this?" and "what code and settings made this model?" from
ML Metadata alone (issue "Lineage you can ask"). Pushes and rollbacks already record who and why
on their PushedModel. Recording never fails a node: a problem is one warning line.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "nightly-tfx"

# AIRFLOW_CTX_* variable -> the custom property it becomes.
AIRFLOW_CONTEXT = {
    "AIRFLOW_CTX_DAG_ID": "airflow_dag_id",
    "AIRFLOW_CTX_DAG_RUN_ID": "airflow_run_id",
    "AIRFLOW_CTX_TASK_ID": "airflow_task_id",
    "AIRFLOW_CTX_TRY_NUMBER": "airflow_try_number",
}
CODE_VERSION = "code_version"
RUN_CONFIG = "run_config"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """`git:<commit>` (with `+dirty` when tracked files differ) of the project's checkout, else
    `package:<version>` of the installed package, else "unknown"."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10)
        if commit.returncode == 0 and commit.stdout.strip():
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10)
            return f"git:{commit.stdout.strip()}" + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return f"package:{version(PACKAGE)}"
    except Exception:  # noqa: BLE001 -- not installed as a distribution
        return "unknown"


def airflow_context(environ: Dict[str, str]) -> Dict[str, str]:
    """{property: value} of the Airflow task running this process; {} outside Airflow."""
    return {prop: environ[var] for var, prop in AIRFLOW_CONTEXT.items() if environ.get(var)}


def run_config(config) -> Dict[str, object]:
    """The settings a run's models depend on, as recorded on its pipeline_run context."""
    schema = Path(config.schema_path)
    digest = hashlib.sha256(schema.read_bytes()).hexdigest()[:16] if schema.is_file() else ""
    return {
        "span": config.span_date.isoformat(),
        "train_steps": config.train_steps,
        "eval_steps": config.eval_steps,
        "batch_size": config.batch_size,
        "strategy": config.strategy,
        "gates": dataclasses.asdict(config.gates),
        "keep_versions": config.keep_versions,
        "schema_sha256": digest,
        "beam_mode": config.beam_mode,
        "window_days": config.window_days,
    }


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def record_execution(connection_config, execution_id: int, environ: Dict[str, str], warn=_warn) -> None:
    """Adds the Airflow task (if any) and the code version to an execution's custom properties."""
    try:
        from ml_metadata import metadata_store

        store = metadata_store.MetadataStore(connection_config)
        [execution] = store.get_executions_by_id([execution_id])
        for prop, value in {**airflow_context(environ), CODE_VERSION: code_version()}.items():
            execution.custom_properties[prop].string_value = str(value)
        store.put_executions([execution])
    except Exception as err:  # noqa: BLE001 -- context is extra: never fail the node for it
        warn(f"warning: could not record the run context on execution {execution_id}: {' '.join(str(err).split())[:200]}")


def record_run(connection_config, run_id: str, config, warn=_warn) -> Optional[dict]:
    """Sets the code version and the config on the run's pipeline_run context (the same values from
    every task of a run). Returns what was recorded, or None when the context does not exist yet."""
    try:
        from ml_metadata import metadata_store

        store = metadata_store.MetadataStore(connection_config)
        context = store.get_context_by_type_and_name("pipeline_run", run_id)
        if context is None:
            return None
        recorded = {CODE_VERSION: code_version(), RUN_CONFIG: json.dumps(run_config(config), sort_keys=True)}
        if all(context.custom_properties[k].string_value == v for k, v in recorded.items()
               if k in context.custom_properties) and all(k in context.custom_properties for k in recorded):
            return recorded
        for key, value in recorded.items():
            context.custom_properties[key].string_value = value
        store.put_contexts([context])
        return recorded
    except Exception as err:  # noqa: BLE001
        warn(f"warning: could not record the config of run {run_id}: {' '.join(str(err).split())[:200]}")
        return None


def latest_execution_id(connection_config, pipeline: str, run_id: str, node_id: str) -> Optional[int]:
    """The newest execution of node `node_id` in run `run_id` (also a failed one), or None."""
    try:
        from ml_metadata import metadata_store

        if "'" in run_id + node_id + pipeline:
            return None
        store = metadata_store.MetadataStore(connection_config)
        found = store.get_executions(list_options=metadata_store.ListOptions(filter_query=(
            f"contexts_a.type = 'pipeline_run' AND contexts_a.name = '{run_id}' AND "
            f"contexts_b.type = 'node' AND contexts_b.name = '{pipeline}.{node_id}'")))
        return max(e.id for e in found) if found else None
    except Exception:  # noqa: BLE001 -- only for a log line
        return None


def lineage_hint(home, run_id: str, execution_id: Optional[int]) -> str:
    """The last line of an Airflow task's log: the execution and the command that explains it."""
    import shlex

    where = f"execution {execution_id}" if execution_id else "no execution recorded"
    return (f"ML Metadata: {where} in run {run_id}; explain it: "
            f"mlops --home {shlex.quote(str(home))} lineage --run {shlex.quote(run_id)}")
