"""monitoring/metrics.py and pipelines/monitor.py: the metrics' shapes, the run outcome, and that a
Pushgateway that is down never fails anything (real Pushgateway pushes: tests/monitoring/test_stack.py)."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import time

import pytest
from prometheus_client.exposition import generate_latest

from components.evaluator.metrics import with_undefined
from monitoring import metrics
from pipelines import monitor
from pipelines.summary import RunSummary


def _facts(**overrides) -> metrics.RunFacts:
    values = dict(
        outcome="blocked", seconds=42.0, span="2026-11-21", rows={"train": 900, "eval": 100},
        anomalies=[("drift", "trip_miles", True), ("schema", "tips", True), ("drift", "fare", False)],
        drift={"trip_miles": {"per_baseline": {"previous_span": 0.4, "served_model_training": 0.05},
                              "threshold": 0.1, "blocked": True}},
        candidate={"overall": {"auc": 0.8, "example_count": 100}, "payment_type=Cash": {"auc": None, "example_count": 7}},
        baseline={"overall": {"auc": 0.75, "example_count": 100}},
        blessed=False, not_blessed_streak=2,
    )
    values.update(overrides)
    return metrics.RunFacts(**values)


def _samples(*registries) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for registry in registries for f in registry.collect() for s in f.samples}


def _all(facts) -> list:
    return [registry for _, registry in metrics.run_groups("taxi", facts)]


def test_run_metrics_carry_outcome_drift_per_baseline_and_the_blocking_feature():
    samples = _samples(*_all(_facts()))
    outcome = {dict(k[1])["outcome"]: v for k, v in samples.items() if k[0] == "mlops_run_outcome"}
    assert outcome == {"success": 0, "failed": 0, "blocked": 1, "not_blessed": 0}
    key = ("mlops_data_drift_distance", (("baseline", "previous_span"), ("feature", "trip_miles"), ("pipeline", "taxi")))
    assert samples[key] == pytest.approx(0.4)
    blocked = {tuple(sorted(dict(k[1]).items())) for k, v in samples.items() if k[0] == "mlops_data_gate_blocked" and v == 1}
    # Only the baseline that is over the threshold blocks; a schema finding blocks with baseline "schema".
    assert blocked == {(("baseline", "previous_span"), ("feature", "trip_miles"), ("kind", "drift"), ("pipeline", "taxi")),
                       (("baseline", "schema"), ("feature", "tips"), ("kind", "schema"), ("pipeline", "taxi"))}
    warn = ("mlops_data_anomalies", (("feature", "fare"), ("kind", "drift"), ("pipeline", "taxi"), ("severity", "warn")))
    assert samples[warn] == 1
    assert samples[("mlops_run_span_timestamp_seconds", (("pipeline", "taxi"),))] == 1795219200.0  # 2026-11-21 UTC
    assert samples[("mlops_run_not_blessed_streak", (("pipeline", "taxi"),))] == 2


def test_an_undefined_slice_metric_is_nan_never_zero():
    samples = _samples(*_all(_facts()))
    cash = samples[("mlops_model_eval_auc", (("model", "candidate"), ("pipeline", "taxi"), ("slice", "payment_type=Cash")))]
    assert math.isnan(cash)
    assert samples[("mlops_model_eval_auc", (("model", "baseline"), ("pipeline", "taxi"), ("slice", "overall")))] == 0.75
    # In the summary: AUC of a one-class slice (mean label 0 or 1) is undefined, other metrics stay.
    assert with_undefined({"auc": 0.0, "mean_label": 0.0, "loss": 0.3}) == {"auc": None, "mean_label": 0.0, "loss": 0.3}
    assert with_undefined({"auc": 0.7, "mean_label": 0.4}) == {"auc": 0.7, "mean_label": 0.4}
    summary = RunSummary(run_id="r", metrics={"overall": {"auc": 0.8, "example_count": 500.0, "mean_label": 0.4},
                                              "company=X": {"auc": None, "example_count": 300.0, "mean_label": 1.0}})
    text = "\n".join(summary.lines())
    assert "metrics[company=X] (300 examples): auc=undefined" in text and "mean_label" not in text


def test_labels_never_take_a_run_id_or_a_date():
    registries = [metrics.node_registry("taxi", "Trainer", "complete", 3.0), *_all(_facts(outcome="success")), metrics.push_registry("taxi", "taxi", 3, 1.7e9, {"alert": 1})]
    allowed = {"pipeline", "node", "outcome", "split", "kind", "feature", "severity", "baseline", "model", "slice", "trigger"}
    for registry in registries:
        for family in registry.collect():
            assert family.name.startswith("mlops_")
            for sample in family.samples:
                assert set(sample.labels) <= allowed, (sample.name, sample.labels)
                assert not any(c.isdigit() for c in sample.labels.get("node", "")), sample.labels


def test_every_rollback_trigger_is_written_so_the_counter_exists_before_it_moves():
    samples = _samples(metrics.push_registry("taxi", "taxi", 4, 1.7e9, {"manual": 2}))
    rollbacks = {dict(k[1])["trigger"]: v for k, v in samples.items() if k[0] == "mlops_model_rollbacks_total"}
    assert rollbacks == {"manual": 2, "alert": 0, "canary": 0}
    assert not [k for k in samples if k[0].endswith("_created")]


def test_the_exposition_passes_promtool_check_metrics():
    text = b"".join(generate_latest(r) for r in (
        metrics.node_registry("taxi", "Trainer", "failed", 3.0), *_all(_facts(outcome="success")), metrics.push_registry("taxi", "taxi", 3, 1.7e9, {})))
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_a_run_stopped_early_leaves_the_last_gate_and_evaluation_results_in_place():
    jobs = [job for job, _ in metrics.run_groups("taxi", _facts(outcome="failed", gates_ran=False, evaluated=False))]
    assert jobs == [metrics.JOB_RUN]
    jobs = [job for job, _ in metrics.run_groups("taxi", _facts(outcome="blocked", evaluated=False))]
    assert jobs == [metrics.JOB_RUN, metrics.JOB_DATA]
    jobs = [job for job, _ in metrics.run_groups("taxi", _facts(outcome="success"))]
    assert jobs == [metrics.JOB_RUN, metrics.JOB_DATA, metrics.JOB_EVAL, metrics.JOB_RUN_SUCCESS]


def test_bad_outcomes_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        metrics.node_registry("taxi", "Trainer", "exploded", 1.0)
    with pytest.raises(ValueError, match="not one of"):
        metrics.run_registry("taxi", _facts(outcome="meh"))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_pushgateway_that_is_down_gives_one_warning_and_never_raises():
    url = f"http://127.0.0.1:{_closed_port()}"
    warning = metrics.push(url, metrics.JOB_NODE, {"pipeline": "taxi", "node": "Trainer"},
                           metrics.node_registry("taxi", "Trainer", "complete", 1.0), timeout=1.0)
    assert warning.startswith("warning: metrics not pushed") and url in warning and "the run goes on" in warning
    assert "\n" not in warning
    # One warning per process: the next pushes to that URL are skipped without another timeout.
    started = time.monotonic()
    assert metrics.push(url, metrics.JOB_RUN, {"pipeline": "taxi"}, metrics.success_registry("taxi")) is None
    assert time.monotonic() - started < 0.5
    assert metrics.push(None, metrics.JOB_NODE, {}, metrics.success_registry("taxi")) is None


def test_where_metrics_go(tmp_path, monkeypatch):
    monkeypatch.delenv(metrics.PUSHGATEWAY_ENV, raising=False)
    assert metrics.pushgateway_url(tmp_path) is None  # no stack runs for this home
    metrics.stack_file(tmp_path).parent.mkdir(parents=True)
    metrics.stack_file(tmp_path).write_text(json.dumps({"pushgateway": {"url": "http://127.0.0.1:9/"}}))
    assert metrics.pushgateway_url(tmp_path) == "http://127.0.0.1:9"
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, "off")
    assert metrics.pushgateway_url(tmp_path) is None
    monkeypatch.setenv(metrics.PUSHGATEWAY_ENV, "http://127.0.0.1:7/")
    assert metrics.pushgateway_url(tmp_path) == "http://127.0.0.1:7"
    assert monitor.home_of_pipeline_root(str(tmp_path / "var" / "pipeline_root")) == tmp_path.resolve()


@pytest.mark.parametrize("states, blocked, blessed, expected", [
    ({"SpanCheck": "complete", "DriftValidator": "failed"}, True, None, "blocked"),
    ({"SpanCheck": "complete", "Trainer": "failed"}, False, None, "failed"),
    ({"SpanCheck": "complete", "Trainer": "running"}, False, None, "failed"),  # killed mid-node
    ({"SpanCheck": "complete", "Trainer": "complete"}, False, None, "failed"),  # never reached the Pusher
    ({"GatedEvaluator": "complete", "AtomicPusher": "complete"}, False, False, "not_blessed"),
    ({"GatedEvaluator": "complete", "AtomicPusher": "complete"}, False, True, "success"),
    ({"GatedEvaluator": "cached", "AtomicPusher": "cached"}, False, True, "success"),
    ({}, False, None, "failed"),  # no task reached ML Metadata
])
def test_run_outcome_from_what_ml_metadata_says(states, blocked, blessed, expected):
    summary = RunSummary(run_id="r", node_states=states, blocked=blocked, blessed=blessed)
    assert monitor.run_outcome(summary) == expected


def test_a_blessed_candidate_the_model_server_could_not_serve_is_not_blessed():
    states = {"GatedEvaluator": "complete", "InfraValidator": "complete", "AtomicPusher": "complete"}
    assert monitor.run_outcome(RunSummary(run_id="r", node_states=states, blessed=True, servable=False)) == "not_blessed"
    assert monitor.run_outcome(RunSummary(run_id="r", node_states=states, blessed=True, servable=True)) == "success"
