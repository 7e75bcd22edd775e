"""Every pipeline metric, defined in one place, and how they reach the Pushgateway.

Pipeline tasks live for seconds to minutes, so Prometheus cannot scrape them: each pushes its
metrics to the Pushgateway (when one is configured, `pushgateway_url`), and Prometheus scrapes the
Pushgateway with `honor_labels: true`. A push replaces its group (job + grouping key), so each
group holds the latest value of everything in it. The data gates' and the evaluation's results
have groups of their own, so a night that never got that far leaves the last ones in place (and a
DataGateBlocked alert resolves only when a later span passes the gates):

| job (group)        | grouping key    | pushed by                                  | metrics |
|--------------------|-----------------|--------------------------------------------|---------|
| mlops_node         | pipeline, node  | the node runner, after every node          | mlops_node_* |
| mlops_run          | pipeline        | the end of every run (the DAG's teardown)  | mlops_run_* |
| mlops_data         | pipeline        | the end of a run whose data gates ran      | mlops_data_* |
| mlops_eval         | pipeline        | the end of a run that evaluated a model    | mlops_model_eval_*, mlops_model_blessed |
| mlops_run_success  | pipeline        | the end of a successful run only           | mlops_run_last_success_timestamp_seconds |
| mlops_push         | pipeline        | every push and rollback                    | mlops_model_pushed_version, mlops_model_push_timestamp_seconds, mlops_model_rollbacks_total |

| metric | type | labels | meaning |
|---|---|---|---|
| mlops_node_duration_seconds | gauge | pipeline, node | wall time of the node's last execution |
| mlops_node_outcome | gauge | pipeline, node, outcome | 1 for the last outcome (complete, cached, skipped, failed, blocked), 0 for the others |
| mlops_node_finished_timestamp_seconds | gauge | pipeline, node | when the node last finished |
| mlops_run_outcome | gauge | pipeline, outcome | 1 for the last run's outcome (success, failed, blocked, not_blessed), 0 for the others |
| mlops_run_duration_seconds | gauge | pipeline | first node start to the end of the run |
| mlops_run_finished_timestamp_seconds | gauge | pipeline | when the last run ended |
| mlops_run_span_timestamp_seconds | gauge | pipeline | the last run's span (its day, 00:00 UTC) |
| mlops_run_rows | gauge | pipeline, split | rows of the last run's span per split |
| mlops_run_not_blessed_streak | gauge | pipeline | consecutive evaluated runs, newest first, whose model was not blessed |
| mlops_run_last_success_timestamp_seconds | gauge | pipeline | when a run last ended in success |
| mlops_data_span_timestamp_seconds | gauge | pipeline | the span the data gates last judged |
| mlops_data_anomalies | gauge | pipeline, kind, feature, severity | findings of the data gates (kind schema/drift; severity block/warn) |
| mlops_data_gate_blocked | gauge | pipeline, kind, feature, baseline | 1 per finding that blocked the span |
| mlops_data_drift_distance | gauge | pipeline, feature, baseline | drift distance against a baseline (previous_span, served_model_training) |
| mlops_data_drift_threshold | gauge | pipeline, feature, baseline | the schema's threshold for that distance |
| mlops_model_eval_auc | gauge | pipeline, model, slice | headline metric of the candidate and the baseline; NaN when undefined (one class) |
| mlops_model_eval_examples | gauge | pipeline, slice | evaluation examples per slice |
| mlops_model_blessed | gauge | pipeline | 1 when the last evaluated candidate was blessed |
| mlops_model_pushed_version | gauge | pipeline, model | the newest pushed version |
| mlops_model_push_timestamp_seconds | gauge | pipeline, model | when it was pushed |
| mlops_model_rollbacks_total | counter | pipeline, model, trigger | rollbacks recorded in ML Metadata, by trigger (manual, alert, canary) |

No label takes a run id, a span date or a version except `mlops_model_*` gauges' values: every
label's values are bounded by the pipeline's nodes, the schema's features and the eval slices.
The model server's own metrics (`mlops_serving_*`) live in serving/metrics.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

disable_created_metrics()  # no `*_created` series: Prometheus does not need them, and pushed they go stale

PUSHGATEWAY_ENV = "MLOPS_PUSHGATEWAY_URL"  # a URL, or "off"; unset: the home's monitoring stack, if it runs
PUSH_TIMEOUT = 2.0

JOB_NODE = "mlops_node"
JOB_RUN = "mlops_run"
JOB_DATA = "mlops_data"
JOB_EVAL = "mlops_eval"
JOB_RUN_SUCCESS = "mlops_run_success"
JOB_PUSH = "mlops_push"

NODE_OUTCOMES = ("complete", "cached", "skipped", "failed", "blocked")
RUN_OUTCOMES = ("success", "failed", "blocked", "not_blessed")
ROLLBACK_TRIGGERS = ("manual", "alert", "canary")  # = pipelines.rollback.TRIGGERS
MODELS = ("candidate", "baseline")


def _gauge(registry, name: str, doc: str, labels: Sequence[str]) -> Gauge:
    return Gauge(name, doc, tuple(labels), registry=registry)


# --------------------------------------------------------------------------------- per node


def node_registry(pipeline: str, node: str, outcome: str, seconds: float,
                  finished_at: Optional[float] = None) -> CollectorRegistry:
    if outcome not in NODE_OUTCOMES:
        raise ValueError(f"node outcome {outcome!r} is not one of {', '.join(NODE_OUTCOMES)}")
    registry = CollectorRegistry()
    _gauge(registry, "mlops_node_duration_seconds", "Wall time of the node's last execution",
           ("pipeline", "node")).labels(pipeline, node).set(seconds)
    outcomes = _gauge(registry, "mlops_node_outcome", "1 for the node's last outcome, 0 for the others",
                      ("pipeline", "node", "outcome"))
    for name in NODE_OUTCOMES:
        outcomes.labels(pipeline, node, name).set(1 if name == outcome else 0)
    _gauge(registry, "mlops_node_finished_timestamp_seconds", "When the node last finished",
           ("pipeline", "node")).labels(pipeline, node).set(finished_at or time.time())
    return registry


# --------------------------------------------------------------------------------- per run


@dataclasses.dataclass
class RunFacts:
    """What one run did, as plain values (pipelines/monitor.py reads them from ML Metadata)."""

    outcome: str
    seconds: float
    span: str = ""  # YYYY-MM-DD
    rows: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # (kind, feature, blocking)
    anomalies: Sequence[Tuple[str, str, bool]] = ()
    # {feature: {"per_baseline": {baseline: distance}, "threshold": t, "blocked": bool}}
    drift: Mapping[str, dict] = dataclasses.field(default_factory=dict)
    # {slice: {"auc": value or None, "example_count": n}} for the candidate and the baseline
    candidate: Mapping[str, Mapping[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    baseline: Mapping[str, Mapping[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    blessed: Optional[bool] = None
    not_blessed_streak: int = 0
    finished_at: Optional[float] = None
    gates_ran: bool = True  # the data gates measured the span (else the data group is left as it is)
    evaluated: bool = True  # the Evaluator ran (else the eval group is left as it is)


def span_timestamp(span: str) -> float:
    day = dt.date.fromisoformat(span)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def run_registry(pipeline: str, facts: RunFacts) -> CollectorRegistry:
    if facts.outcome not in RUN_OUTCOMES:
        raise ValueError(f"run outcome {facts.outcome!r} is not one of {', '.join(RUN_OUTCOMES)}")
    registry = CollectorRegistry()
    outcomes = _gauge(registry, "mlops_run_outcome", "1 for the last run's outcome, 0 for the others",
                      ("pipeline", "outcome"))
    for name in RUN_OUTCOMES:
        outcomes.labels(pipeline, name).set(1 if name == facts.outcome else 0)
    _gauge(registry, "mlops_run_duration_seconds", "Duration of the last run",
           ("pipeline",)).labels(pipeline).set(facts.seconds)
    _gauge(registry, "mlops_run_finished_timestamp_seconds", "When the last run ended",
           ("pipeline",)).labels(pipeline).set(facts.finished_at or time.time())
    if facts.span:
        _gauge(registry, "mlops_run_span_timestamp_seconds", "The last run's span (its day at 00:00 UTC)",
               ("pipeline",)).labels(pipeline).set(span_timestamp(facts.span))
    rows = _gauge(registry, "mlops_run_rows", "Rows of the last run's span per split", ("pipeline", "split"))
    for split, count in sorted(facts.rows.items()):
        rows.labels(pipeline, split).set(count)
    _gauge(registry, "mlops_run_not_blessed_streak", "Consecutive evaluated runs whose model was not blessed",
           ("pipeline",)).labels(pipeline).set(facts.not_blessed_streak)

    return registry


def data_registry(pipeline: str, facts: RunFacts) -> CollectorRegistry:
    """The data gates' findings and drift distances of the run (push it only when the gates ran)."""
    registry = CollectorRegistry()
    if facts.span:
        _gauge(registry, "mlops_data_span_timestamp_seconds", "The span the data gates last judged (its day at "
               "00:00 UTC)", ("pipeline",)).labels(pipeline).set(span_timestamp(facts.span))
    anomalies = _gauge(registry, "mlops_data_anomalies", "Data-gate findings of the last run",
                       ("pipeline", "kind", "feature", "severity"))
    counts: Dict[Tuple[str, str, str], int] = {}
    for kind, feature, blocking in facts.anomalies:
        key = (kind, feature, "block" if blocking else "warn")
        counts[key] = counts.get(key, 0) + 1
    for (kind, feature, severity), count in sorted(counts.items()):
        anomalies.labels(pipeline, kind, feature, severity).set(count)
    blocked = _gauge(registry, "mlops_data_gate_blocked", "1 per data-gate finding that blocked the span",
                     ("pipeline", "kind", "feature", "baseline"))
    distance = _gauge(registry, "mlops_data_drift_distance", "Drift distance of a feature against a baseline",
                      ("pipeline", "feature", "baseline"))
    threshold = _gauge(registry, "mlops_data_drift_threshold", "The schema's drift threshold of a feature",
                       ("pipeline", "feature", "baseline"))
    for feature, row in sorted(facts.drift.items()):
        for base, value in sorted((row.get("per_baseline") or {}).items()):
            distance.labels(pipeline, feature, base).set(value)
            threshold.labels(pipeline, feature, base).set(row["threshold"])
            if row.get("blocked") and value > row["threshold"]:
                blocked.labels(pipeline, "drift", feature, base).set(1)
    for kind, feature, blocking in facts.anomalies:
        if blocking and kind != "drift":
            blocked.labels(pipeline, kind, feature, "schema").set(1)

    return registry


def eval_registry(pipeline: str, facts: RunFacts) -> CollectorRegistry:
    """The evaluation of the run's candidate against the baseline (push it only when one ran)."""
    registry = CollectorRegistry()
    auc = _gauge(registry, "mlops_model_eval_auc", "AUC of the candidate and the baseline per slice "
                 "(NaN: undefined, e.g. one class)", ("pipeline", "model", "slice"))
    examples = _gauge(registry, "mlops_model_eval_examples", "Evaluation examples per slice", ("pipeline", "slice"))
    for model, per_slice in (("candidate", facts.candidate), ("baseline", facts.baseline)):
        for slice_name, values in sorted(per_slice.items()):
            value = values.get("auc")
            auc.labels(pipeline, model, slice_name).set(math.nan if value is None else value)
            if model == "candidate" and values.get("example_count") is not None:
                examples.labels(pipeline, slice_name).set(values["example_count"])
    if facts.blessed is not None:
        _gauge(registry, "mlops_model_blessed", "1 when the last evaluated candidate was blessed",
               ("pipeline",)).labels(pipeline).set(1 if facts.blessed else 0)
    return registry


def run_groups(pipeline: str, facts: RunFacts) -> List[Tuple[str, CollectorRegistry]]:
    """(job, registry) of every group the end of this run replaces, in push order."""
    groups = [(JOB_RUN, run_registry(pipeline, facts))]
    if facts.gates_ran:
        groups.append((JOB_DATA, data_registry(pipeline, facts)))
    if facts.evaluated:
        groups.append((JOB_EVAL, eval_registry(pipeline, facts)))
    if facts.outcome == "success":
        groups.append((JOB_RUN_SUCCESS, success_registry(pipeline, facts.finished_at)))
    return groups


def success_registry(pipeline: str, finished_at: Optional[float] = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    _gauge(registry, "mlops_run_last_success_timestamp_seconds", "When a run last ended in success",
           ("pipeline",)).labels(pipeline).set(finished_at or time.time())
    return registry


# --------------------------------------------------------------------------------- pushes


def push_registry(pipeline: str, model: str, version: int, pushed_at: float,
                  rollbacks: Mapping[str, int]) -> CollectorRegistry:
    """`rollbacks`: {trigger: how many rollbacks ML Metadata records}; every trigger is written (0 too), so
    the counter exists before its first increase."""
    registry = CollectorRegistry()
    _gauge(registry, "mlops_model_pushed_version", "The newest pushed version",
           ("pipeline", "model")).labels(pipeline, model).set(version)
    _gauge(registry, "mlops_model_push_timestamp_seconds", "When the newest version was pushed",
           ("pipeline", "model")).labels(pipeline, model).set(pushed_at)
    counter = Counter("mlops_model_rollbacks", "Rollbacks recorded in ML Metadata, by trigger",
                      ("pipeline", "model", "trigger"), registry=registry)
    for trigger in ROLLBACK_TRIGGERS:
        counter.labels(pipeline, model, trigger).inc(int(rollbacks.get(trigger, 0)))
    return registry


def metric_names(registries: Iterable[CollectorRegistry] = ()) -> List[str]:
    """Every sample name the registries expose (tests compare the rules and the dashboard with it)."""
    names = set()
    for registry in registries:
        for family in registry.collect():
            names.update(sample.name for sample in family.samples)
    return sorted(names)


# --------------------------------------------------------------------------------- getting them out


def stack_file(home: Path) -> Path:
    """The home's monitoring stack record (monitoring/stack.py writes it while the stack runs)."""
    return Path(home) / "var" / "monitoring" / "stack.json"


def pushgateway_url(home: Optional[Path]) -> Optional[str]:
    """$MLOPS_PUSHGATEWAY_URL ("off": none), else the Pushgateway of the home's running stack, else None."""
    given = os.environ.get(PUSHGATEWAY_ENV)
    if given is not None:
        return None if given.strip().lower() in ("", "off", "none") else given.rstrip("/")
    if home is None:
        return None
    try:
        record = json.loads(stack_file(home).read_text())
    except (OSError, ValueError):
        return None
    return ((record.get("pushgateway") or {}).get("url") or "").rstrip("/") or None


# url -> when a push to it last failed: this process skips it for a while, so a Pushgateway that is
# down costs one timeout and one warning line, not one per node of an in-process run.
_FAILED_AT: Dict[str, float] = {}
SKIP_AFTER_FAILURE_SECONDS = 300.0


def push(url: Optional[str], job: str, grouping_key: Mapping[str, str], registry: CollectorRegistry,
         timeout: float = PUSH_TIMEOUT) -> Optional[str]:
    """Replaces the group's metrics on the Pushgateway at `url`. Never raises: returns the warning to
    print when the Pushgateway did not take them (monitoring down never fails a run), else None.
    After a failure, pushes to the same URL from this process are skipped silently for
    SKIP_AFTER_FAILURE_SECONDS (the first warning said it)."""
    if not url:
        return None
    failed_at = _FAILED_AT.get(url)
    if failed_at is not None and time.monotonic() - failed_at < SKIP_AFTER_FAILURE_SECONDS:
        return None
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(url, job=job, grouping_key=dict(grouping_key), registry=registry, timeout=timeout)
    except Exception as err:  # noqa: BLE001 -- any failure of the push is a warning, never the run's failure
        _FAILED_AT[url] = time.monotonic()
        return (f"warning: metrics not pushed to the Pushgateway at {url} ({one_line(err)}); the run goes on "
                f"without them (later pushes from this process are skipped for {SKIP_AFTER_FAILURE_SECONDS:.0f}s)")
    _FAILED_AT.pop(url, None)
    return None


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(err).__name__)
