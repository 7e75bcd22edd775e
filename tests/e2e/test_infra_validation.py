"""Servable before pushed, end to end, on the shared sequence of runs (tests/e2e/conftest.py `runs`).

Every run that pushed had its candidate served by a throwaway `mlops serve` first; the 6th run's
candidate, trained by a user's run_fn that exports no `serving_features`, is blessed by the Evaluator
but refused by the InfraValidator: nothing is pushed, version 3 stays served, and the reason is in
ML Metadata (InfraBlessing and PushedModel) and in the run's summary.
"""

from __future__ import annotations

from serving import versions
from tests.conftest import mlops, readonly_store

MISSING = "the model has no signature serving_features (clients call it); it has: serving_default, transform_features"


def test_every_push_was_served_and_answered_first(runs):
    for name in ("first", "lenient", "retained"):
        summary = runs[name]
        assert summary["pushed_version"] and summary["servable"] is True, (name, summary["servable_reason"])
        assert summary["node_states"]["InfraValidator"] == "complete"
        assert summary["servable_reason"].startswith("served by the model server and answered 8 rows"), summary
        assert "serving_default, serving_features" in summary["servable_reason"]
        assert "] InfraValidator complete in" in summary["progress"]
    # An unblessed candidate never starts a server; a cached rerun is cached here too.
    assert runs["strict"]["servable"] is False
    assert runs["strict"]["servable_reason"] == "not blessed by the Evaluator"
    assert runs["rerun"]["node_states"]["InfraValidator"] in ("cached", "complete")


def test_a_candidate_without_a_signature_clients_call_is_not_pushed_and_the_served_version_stays(runs):
    unservable = runs["unservable"]
    assert unservable["blessed"] is True, unservable["blessing_reason"]  # the Evaluator saw nothing wrong
    assert unservable["servable"] is False
    assert unservable["servable_reason"] == MISSING
    assert unservable["pushed_version"] is None
    assert unservable["push_reason"].endswith(f"failed infra validation: {MISSING}"), unservable["push_reason"]
    assert runs["after_unservable"] == runs["after_retained"] == [2, 3]
    assert versions.latest_version(runs["models"]) == 3

    summary = mlops(runs["home"], "summary", "--run-id", unservable["run_id"]).stdout
    assert f"  servable:  no ({MISSING}" in summary, summary
    assert f"failed infra validation: {MISSING}" in summary, summary


def test_the_verdict_and_the_refusal_are_in_ml_metadata(runs):
    from ml_metadata.proto import metadata_store_pb2

    store = readonly_store(runs["home"])
    [context] = [c for c in store.get_contexts_by_type("pipeline_run") if c.name == runs["unservable"]["run_id"]]
    [pusher] = [e for e in store.get_executions_by_context(context.id)
                if store.get_execution_types_by_id([e.type_id])[0].name.endswith(".AtomicPusher")]
    events = store.get_events_by_execution_ids([pusher.id])
    by_type = {}
    for event in events:
        [artifact] = store.get_artifacts_by_id([event.artifact_id])
        by_type[(store.get_artifact_types_by_id([artifact.type_id])[0].name, event.type)] = artifact
    # The Pusher read the InfraValidator's verdict and wrote why it pushed nothing.
    infra = by_type[("InfraBlessing", metadata_store_pb2.Event.INPUT)]
    pushed = by_type[("PushedModel", metadata_store_pb2.Event.OUTPUT)]
    assert infra.custom_properties["blessed"].int_value == 0
    assert infra.custom_properties["reason"].string_value == MISSING
    assert infra.custom_properties["validation_seconds"].double_value > 0
    assert (infra.custom_properties["current_model_id"].int_value
            == by_type[("Model", metadata_store_pb2.Event.INPUT)].id)
    assert pushed.custom_properties["pushed"].int_value == 0
    assert pushed.custom_properties["reason"].string_value.endswith(MISSING)
