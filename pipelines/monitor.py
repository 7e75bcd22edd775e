"""What a node, a run and a push did, read from ML Metadata and pushed to the Pushgateway.

monitoring/metrics.py defines the metrics and pushes them; this module gathers the values:

- `report_node`: after every node the node runner launches (nightly tasks, `mlops run`, `mlops
  validate`, rollbacks): its duration and outcome; after a Pusher that pushed, the push group too
  (pushed version, push time, rollbacks by trigger counted over ML Metadata).
- `report_run`: at the end of a run, whatever its end: `mlops run` in-process, the nightly DAG's
  teardown task (`mlops summary --push-metrics`) when Airflow runs it. The outcome is read from
  ML Metadata, so a run that failed in any task, was blocked by a data gate or was not blessed is
  told apart without Airflow saying so.

Nothing here ever fails a run: with no Pushgateway configured it does nothing, with one that does
not answer it prints one warning line (stderr) and goes on.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

from monitoring import metrics

ROLLBACK_KIND = "rollback"
TRIGGER_PROPERTY = "rollback_trigger"
# The nodes whose verdict the data group reports: one of them ran, so the span was judged.
GATE_NODES = ("SpanCheck", "DriftValidator")  # set by the Pusher on rollbacks (manual unless an alert asked)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def home_of_pipeline_root(pipeline_root: str) -> Path:
    """The project home of `<home>/var/pipeline_root` (pipelines/config.py's layout)."""
    return Path(pipeline_root).resolve().parent.parent


def _pipeline_root_of(ir) -> str:
    return ir.runtime_spec.pipeline_root.field_value.string_value


def report_node(ir, node_id: str, outcome: str, seconds: float, connection_config=None,
                execution_id: Optional[int] = None, warn: Callable[[str], None] = _warn) -> None:
    """Pushes the node's duration and outcome; after a push, the push group. Never raises."""
    try:
        url = metrics.pushgateway_url(home_of_pipeline_root(_pipeline_root_of(ir)))
        if not url:
            return
        pipeline = ir.pipeline_info.id
        problem = metrics.push(url, metrics.JOB_NODE, {"pipeline": pipeline, "node": node_id},
                               metrics.node_registry(pipeline, node_id, outcome, seconds))
        if problem:
            warn(problem)
            return
        if connection_config is not None and execution_id is not None and outcome == "complete":
            problem = report_push_if_any(url, pipeline, connection_config, execution_id)
            if problem:
                warn(problem)
    except Exception as err:  # noqa: BLE001 -- metrics never fail a node
        warn(f"warning: metrics of node {node_id} not pushed ({metrics.one_line(err)}); the run goes on")


def _text(props, key: str) -> str:
    return props[key].string_value if key in props else ""


def _number(props, key: str) -> int:
    return props[key].int_value if key in props else 0


def report_push_if_any(url: str, pipeline: str, connection_config, execution_id: int) -> Optional[str]:
    """When the execution wrote a PushedModel that pushed, replaces the push group: the newest
    version, when it was pushed, and every rollback ML Metadata records, by trigger."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.MetadataStore(connection_config)
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution_id])
               if e.type == metadata_store_pb2.Event.OUTPUT]
    pushed = [a for a in store.get_artifacts_by_id(outputs) if _number(a.custom_properties, "pushed") == 1
              and "pushed_version" in a.custom_properties] if outputs else []
    if not pushed:
        return None
    return metrics.push(url, metrics.JOB_PUSH, {"pipeline": pipeline}, push_registry(store, pipeline))


def push_registry(store, pipeline: str):
    """The push group's registry from every PushedModel in the store."""
    rollbacks: Dict[str, int] = {trigger: 0 for trigger in metrics.ROLLBACK_TRIGGERS}
    newest = None
    for artifact in store.get_artifacts_by_type("PushedModel"):
        props = artifact.custom_properties
        if _number(props, "pushed") != 1:
            continue
        if _text(props, "push_kind") == ROLLBACK_KIND:
            trigger = _text(props, TRIGGER_PROPERTY) or "manual"
            rollbacks[trigger] = rollbacks.get(trigger, 0) + 1
        if newest is None or artifact.id > newest.id:
            newest = artifact
    props = newest.custom_properties
    model = Path(_text(props, "pushed_destination")).name or pipeline
    pushed_at = _text(props, "pushed_at")
    stamp = dt.datetime.fromisoformat(pushed_at).timestamp() if pushed_at else time.time()
    return metrics.push_registry(pipeline, model, _number(props, "pushed_version"), stamp, rollbacks)


# ----------------------------------------------------------------------------------- runs


def run_outcome(summary) -> str:
    """success / failed / blocked / not_blessed, from what ML Metadata says of the run."""
    if summary.blocked:
        return "blocked"
    if any(state in ("failed", "running", "new", "unknown") for state in summary.node_states.values()):
        return "failed"  # running/new at the end: the task was killed (timeout) mid-node
    if summary.blessed is False or summary.servable is False:
        return "not_blessed"  # by the Evaluator, or the model server could not serve it (InfraValidator)
    pushers = [state for node, state in summary.node_states.items() if "Pusher" in node]
    if pushers and all(state in ("complete", "cached") for state in pushers):
        return "success"
    return "failed"  # it never reached the Pusher


def not_blessed_streak(store) -> int:
    """How many evaluated candidates in a row, newest first, were not blessed."""
    streak = 0
    for artifact in sorted(store.get_artifacts_by_type("ModelBlessing"), key=lambda a: a.id, reverse=True):
        if _number(artifact.custom_properties, "blessed") == 1:
            break
        streak += 1
    return streak


def _run_seconds(store, run_id: str, now: float) -> float:
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    executions = store.get_executions_by_context(context.id) if context else []
    if not executions:
        return 0.0
    return max(0.0, now - min(e.create_time_since_epoch for e in executions) / 1000.0)


def run_facts(summary, store, now: Optional[float] = None) -> metrics.RunFacts:
    now = now or time.time()
    outcome = run_outcome(summary)

    def headline(per_slice):
        return {name: {"auc": values.get("auc"), "example_count": values.get("example_count")}
                for name, values in per_slice.items()}

    return metrics.RunFacts(
        outcome=outcome,
        seconds=_run_seconds(store, summary.run_id, now),
        span=summary.span,
        rows=dict(summary.rows),
        anomalies=[(f.get("kind", "?"), f.get("feature", "?"), bool(f.get("blocking"))) for f in summary.findings],
        drift={feature: dict(per_baseline=row.get("per_baseline") or {}, threshold=row["threshold"],
                             blocked=bool(row.get("blocked")))
               for feature, row in summary.drift.items()},
        candidate=headline(summary.metrics),
        baseline=headline(summary.baseline_metrics),
        blessed=summary.blessed,
        not_blessed_streak=not_blessed_streak(store),
        finished_at=now,
        gates_ran=any(node in GATE_NODES for node in summary.node_states),
        evaluated=bool(summary.metrics) or summary.blessed is not None,
    )


def report_run(connection_config, pipeline_root: str, run_id: str, pipeline: str = "taxi",
               warn: Callable[[str], None] = _warn, summary=None) -> Optional[str]:
    """Pushes the run's outcome, data and model metrics (and, on success, the last-success time).
    `summary`: the run's RunSummary with its metrics when the caller has read it already (else read
    here). Returns the outcome, or None when no Pushgateway is configured or the push failed. Never raises."""
    try:
        url = metrics.pushgateway_url(home_of_pipeline_root(pipeline_root))
        if not url:
            return None
        from ml_metadata import metadata_store

        from pipelines.summary import read_run_summary

        store = metadata_store.MetadataStore(connection_config)
        if summary is None:
            summary = read_run_summary(connection_config, run_id, pipeline)
        facts = run_facts(summary, store)
        for job, registry in metrics.run_groups(pipeline, facts):
            problem = metrics.push(url, job, {"pipeline": pipeline}, registry)
            if problem:
                warn(problem)
                return None
        return facts.outcome
    except Exception as err:  # noqa: BLE001 -- metrics never fail a run
        warn(f"warning: metrics of run {run_id} not pushed ({metrics.one_line(err)}); the run goes on")
        return None
