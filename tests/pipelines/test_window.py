"""The rolling window's choices (pipelines/resolvers.py) and how they are explained (pipelines/window.py),
on artifacts as the pipeline records them, in a real ML Metadata store."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from components.util.spans import span_number
from pipelines import window
from pipelines.resolvers import AnalyzerCacheStrategy, passed_examples, window_examples

D = [dt.date(2026, 11, 20) + dt.timedelta(days=n) for n in range(7)]


def _examples(day: dt.date, artifact_id: int, fingerprint: str = "split:single_split,num_files:1"):
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property("span", span_number(day))
    if fingerprint:
        artifact.set_string_custom_property("input_fingerprint", fingerprint)
    return artifact


def _report(day: dt.date, artifact_id: int, gate: str, blocked: bool, problem: str = ""):
    artifact = standard_artifacts.ExampleAnomalies()
    artifact.id = artifact_id
    artifact.set_string_custom_property("gate", gate)
    artifact.set_string_custom_property("span_date", day.isoformat())
    artifact.set_int_custom_property("blocked", int(blocked))
    artifact.set_string_custom_property("problem", problem)
    return artifact


def _passed(day, first_id):
    return [_report(day, first_id, "span_check", False), _report(day, first_id + 1, "drift_validator", False)]


def test_the_window_keeps_the_newest_passed_examples_of_each_day_oldest_first():
    examples = [_examples(D[0], 1), _examples(D[1], 5), _examples(D[1], 9), _examples(D[3], 13), _examples(D[4], 17),
                _examples(D[4], 30, fingerprint="")]  # Transform's output: Examples without an input fingerprint
    reports = (_passed(D[0], 2) + _passed(D[1], 6) + _passed(D[1], 10) + _passed(D[3], 14) + _passed(D[4], 18))
    chosen = window_examples(examples, reports, span_number(D[4]), window_days=7)
    assert [a.id for a in chosen] == [1, 9, 13, 17]
    # Three days back: D2 (id 9), D4, D5; D1 is older than the window.
    assert [a.id for a in window_examples(examples, reports, span_number(D[4]), window_days=4)] == [9, 13, 17]
    # Never a span newer than the one being run (a backfill of an older night).
    assert [a.id for a in window_examples(examples, reports, span_number(D[3]), window_days=7)] == [1, 9, 13]
    # Every good day, however old or new (what weekly tuning searches on): the newest Examples of each.
    blocked = [_examples(D[6], 40), _report(D[6], 41, "drift_validator", True)]
    assert [a.id for a in passed_examples(examples + blocked[:1], reports + blocked[1:])] == [1, 9, 13, 17]


@pytest.mark.parametrize("standing, kept", [
    ([("drift_validator", True)], False),  # the drift gate blocked it
    ([("drift_validator", False), ("span_check", True)], False),  # passed once, then its file changed and was blocked
    ([("span_check", False)], False),  # the gates did not finish
    ([("span_check", True), ("span_check", False), ("drift_validator", False)], True),  # fixed and passed
    ([], False),  # never gated
])
def test_a_day_is_in_the_window_only_when_its_newest_gate_verdict_is_a_drift_pass(standing, kept):
    reports = _passed(D[2], 2) + [_report(D[1], 10 + n, gate, blocked) for n, (gate, blocked) in enumerate(standing)]
    chosen = window_examples([_examples(D[1], 1), _examples(D[2], 3)], reports, span_number(D[2]), window_days=7)
    assert ([a.id for a in chosen] == [1, 3]) is kept
    assert chosen[-1].id == 3


def _cache(artifact_id: int, window_end: dt.date, fingerprint: str):
    artifact = standard_artifacts.TransformCache()
    artifact.id = artifact_id
    artifact.set_int_custom_property("window_end_span", span_number(window_end))
    artifact.set_string_custom_property("cache_fingerprint", fingerprint)
    return artifact


def test_the_analyzer_cache_comes_from_an_earlier_night_with_the_same_fingerprint():
    caches = [_cache(1, D[2], "a"), _cache(2, D[3], "a"), _cache(3, D[3], "b"), _cache(4, D[4], "a")]
    resolve = lambda span, fp: [c.id for c in AnalyzerCacheStrategy(span_number(span), fp).resolve_artifacts(  # noqa: E731
        None, {"cache": caches})["cache"]]
    assert resolve(D[4], "a") == [2]  # not night D5's own cache (id 4): a rerun resolves what the first try did
    assert resolve(D[5], "a") == [4]
    assert resolve(D[5], "b") == [3]
    assert resolve(D[5], "changed preprocessing") == []
    assert resolve(D[2], "a") == []


@pytest.fixture
def store(tmp_path):
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(tmp_path / "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return metadata_store.MetadataStore(config)


def _put(store, type_name: str, **props) -> int:
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name=type_name))
    artifact = metadata_store_pb2.Artifact(type_id=type_id)
    for key, value in props.items():
        if isinstance(value, int):
            artifact.custom_properties[key].int_value = value
        else:
            artifact.custom_properties[key].string_value = value
    return store.put_artifacts([artifact])[0]


def test_the_summary_explains_every_day_of_the_window_it_left_out(store):
    _put(store, "ExampleAnomalies", gate="drift_validator", span_date=D[2].isoformat(), blocked=1,
         problem="span blocked before training: fare: out of range")
    _put(store, "ExampleAnomalies", gate="span_check", span_date=D[3].isoformat(), blocked=0)
    model_id = _put(store, "Model", train_spans=json.dumps([D[1].isoformat(), D[4].isoformat()]),
                    eval_span=D[5].isoformat(), window_days=6)
    # Written after the model was trained: does not change why D1 was left out.
    _put(store, "ExampleAnomalies", gate="drift_validator", span_date=D[0].isoformat(), blocked=0)
    described = window.describe(store, store.get_artifacts_by_id([model_id])[0])
    assert described["train_spans"] == [D[1].isoformat(), D[4].isoformat()]
    assert described["eval_span"] == D[5].isoformat()
    reasons = {s["span"]: s["reason"] for s in described["skipped"]}
    assert list(reasons) == [D[0].isoformat(), D[2].isoformat(), D[3].isoformat()]
    assert reasons[D[0].isoformat()] == window.NOT_GATED
    assert reasons[D[2].isoformat()] == "blocked by drift_validator: span blocked before training: fare: out of range"
    assert reasons[D[3].isoformat()] == window.NOT_FINISHED
    text = "\n".join(window.lines(described))
    assert f"trained on 2 span(s) {D[1].isoformat()}, {D[4].isoformat()}; evaluated on {D[5].isoformat()} (held out)" in text
    assert f"skipped:   {D[2].isoformat()}: blocked by drift_validator" in text


def test_consecutive_days_skipped_for_the_same_reason_share_a_line():
    described = {"days": 7, "train_spans": [D[6].isoformat()], "eval_span": D[6].isoformat(),
                 "skipped": [{"span": d.isoformat(), "reason": window.NOT_GATED} for d in D[:6]]}
    lines = window.lines(described)
    assert "alone" in lines[0]
    assert lines[1:] == [f"  skipped:   {D[0].isoformat()}..{D[5].isoformat()}: {window.NOT_GATED}"]


def test_a_model_trained_before_windows_has_no_window(store):
    model_id = _put(store, "Model")
    assert window.describe(store, store.get_artifacts_by_id([model_id])[0]) is None
    assert window.lines(None) == []
