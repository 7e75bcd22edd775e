"""Nights over a rolling window of spans, with real TFX, real ML Metadata and tf.Transform's cache.

One shared sequence (`windowed`) in one home with seven seeded days D1..D7 (D6 breaks the fare range):
  1. `mlops validate` D1..D4          -> four spans pass the data gates
  2. night D5 (window 7)              -> trains on D1..D4, evaluates on D5 (held out), analyzes all five
  3. `mlops validate` D6              -> blocked by the gates
  4. night D7                         -> trains on D1..D5 (D6 left out, and said), reads D1..D5's
                                         analysis from night D5's cache, analyzes only D7
  5. night D7 again, `--no-cache`     -> the cold run: analyzes all six again; same transform output
Every test reads; none writes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from tests import prepared
from tests.conftest import FAST_RUN_ARGS, make_home, mlops, readonly_store

END = dt.date(2026, 11, 27)
DAYS = [END - dt.timedelta(days=n) for n in range(6, -1, -1)]  # D1..D7
D = {f"D{i + 1}": day.isoformat() for i, day in enumerate(DAYS)}


def _night(home: Path, day: str, *extra: str) -> dict:
    # Gates open: every night pushes, so its lineage has the whole chain.
    result = mlops(home, "run", "--date", day, *FAST_RUN_ARGS, "--auc-floor", "0.0", "--min-improvement", "-1.0",
                   "--slice-margin", "1.0", "--json", *extra, timeout=1200)
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    summary["text"] = mlops(home, "summary", "--run-id", summary["run_id"]).stdout
    return summary


@prepared.setup("windowed", lane="window")
def _windowed(tmp_path_factory) -> dict:
    home = make_home(tmp_path_factory.mktemp("window"), days=7, end=END)
    mlops(home, "data", "make-span", "--date", D["D6"], "--fault", "out_of_range", "--severity", "0.3",
          "--rows", "1500", "--overwrite")
    for name in ("D1", "D2", "D3", "D4"):
        mlops(home, "validate", "--date", D[name], timeout=600)
    first = _night(home, D["D5"])
    blocked = mlops(home, "validate", "--date", D["D6"], check=False, timeout=600)
    second = _night(home, D["D7"])
    lineage = json.loads(mlops(home, "lineage", "--run", second["run_id"], "--json").stdout)
    cold = _night(home, D["D7"], "--no-cache")
    mlops(home, "worker", "stop", check=False)
    return dict(home=home, first=first, blocked=blocked, second=second, cold=cold, lineage=lineage)


@pytest.fixture(scope="session")
def windowed(request) -> dict:
    """The sequence above (tests/prepared.py runs it beside the other shared setups)."""
    return prepared.result(request, "windowed")


def _model_and_graph(home: Path, run_id: str):
    """(Model, TransformGraph, Transform execution's input Examples) that one run produced, from ML Metadata."""
    from ml_metadata.proto import metadata_store_pb2

    store = readonly_store(home)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    executions = store.get_executions_by_context(context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    out_ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    types = {t.id: t.name for t in store.get_artifact_types()}
    produced = {types[a.type_id]: a for a in store.get_artifacts_by_id(out_ids)}
    transform = next(e for e in executions if e.type_id == store.get_execution_type(
        "tfx.components.transform.component.Transform").id)
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([transform.id])
              if e.type == metadata_store_pb2.Event.INPUT]
    examples = [a for a in store.get_artifacts_by_id(inputs) if types[a.type_id] == "Examples"]
    return produced["Model"], produced["TransformGraph"], examples


def _strings(artifact, key: str):
    return json.loads(artifact.custom_properties[key].string_value)


def test_the_window_trains_on_the_older_passed_spans_and_evaluates_on_the_newest(windowed):
    first = windowed["first"]
    assert first["span"] == D["D5"]
    assert first["window"]["train_spans"] == [D["D1"], D["D2"], D["D3"], D["D4"]]
    assert first["window"]["eval_span"] == D["D5"]
    assert "trained on 4 span(s)" in first["text"] and f"evaluated on {D['D5']} (held out)" in first["text"]
    # The two days before D1 are in the window but have no data: skipped, and said.
    assert [s["span"] for s in first["window"]["skipped"]] == [
        (DAYS[0] - dt.timedelta(days=2)).isoformat(), (DAYS[0] - dt.timedelta(days=1)).isoformat()]
    assert all("no span recorded" in s["reason"] for s in first["window"]["skipped"])
    model, graph, examples = _model_and_graph(windowed["home"], first["run_id"])
    assert _strings(model, "train_spans") == first["window"]["train_spans"]
    assert model.custom_properties["eval_span"].string_value == D["D5"]
    assert sorted(a.custom_properties["span"].int_value for a in examples) == sorted(
        (day - dt.date(1970, 1, 1)).days for day in DAYS[:5])
    assert _strings(graph, "cached_spans") == []  # the first night with a window: nothing cached yet
    assert _strings(graph, "analyzed_spans") == [D[f"D{i}"] for i in range(1, 6)]
    # The candidate was evaluated on D5's eval split only (the Evaluator reads the ingested span).
    assert first["metrics"]["overall"]["example_count"] == first["rows"]["eval"]


def test_a_blocked_day_is_left_out_of_the_window_and_the_summary_says_why(windowed):
    assert windowed["blocked"].returncode == 3, windowed["blocked"].stdout[-2000:]
    second = windowed["second"]
    assert second["window"]["train_spans"] == [D[f"D{i}"] for i in range(1, 6)]
    assert second["window"]["eval_span"] == D["D7"]
    skipped = {s["span"]: s["reason"] for s in second["window"]["skipped"]}
    assert skipped[D["D6"]].startswith("blocked by drift_validator") and "fare" in skipped[D["D6"]]
    assert f"skipped:   {D['D6']}: blocked by drift_validator" in second["text"]
    # The lineage of the run, and of the version it pushed, say the same.
    run = windowed["lineage"]["run"]
    assert run["window"] == second["window"]
    assert run["chain"]["window"] == second["window"]
    assert run["chain"]["examples"]["span"] == D["D7"]


def test_the_next_night_reads_the_old_spans_from_the_analyzer_cache(windowed):
    second = windowed["second"]
    model, graph, _ = _model_and_graph(windowed["home"], second["run_id"])
    assert _strings(graph, "cached_spans") == [D[f"D{i}"] for i in range(1, 6)]
    assert _strings(graph, "analyzed_spans") == [D["D7"]]
    transform = windowed["lineage"]["run"]["chain"]["transform"]
    assert transform["cached_spans"] == _strings(graph, "cached_spans")
    # ML Metadata links the Transform run to the cache night D5 wrote.
    from ml_metadata.proto import metadata_store_pb2

    store = readonly_store(windowed["home"])
    execution = transform["execution"]["execution_id"]
    inputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution])
              if e.type == metadata_store_pb2.Event.INPUT]
    caches = [a for a in store.get_artifacts_by_id(inputs)
              if a.type_id == store.get_artifact_type("TransformCache").id]
    assert len(caches) == 1 and _strings(caches[0], "window_spans") == [D[f"D{i}"] for i in range(1, 6)]


def test_the_cached_transform_equals_a_cold_one(windowed):
    cold = windowed["cold"]
    assert cold["node_states"]["Transform"] == "complete"
    _, warm_graph, _ = _model_and_graph(windowed["home"], windowed["second"]["run_id"])
    _, cold_graph, examples = _model_and_graph(windowed["home"], cold["run_id"])
    assert _strings(cold_graph, "cached_spans") == []
    assert _strings(cold_graph, "analyzed_spans") == [D[f"D{i}"] for i in range(1, 6)] + [D["D7"]]
    assert cold["window"]["train_spans"] == windowed["second"]["window"]["train_spans"]
    warm_dir, cold_dir = Path(warm_graph.uri), Path(cold_graph.uri)
    # Vocabularies byte for byte, and every transformed feature of D7's examples.
    vocabularies = sorted(p.name for p in (warm_dir / "transform_fn" / "assets").iterdir())
    assert vocabularies
    for name in vocabularies:
        assert (warm_dir / "transform_fn" / "assets" / name).read_bytes() == \
            (cold_dir / "transform_fn" / "assets" / name).read_bytes(), name
    newest = max(examples, key=lambda a: a.custom_properties["span"].int_value)
    warm, cold_out = (_transformed(directory, Path(newest.uri)) for directory in (warm_dir, cold_dir))
    assert warm.keys() == cold_out.keys()
    import numpy as np

    for key in warm:
        np.testing.assert_allclose(warm[key], cold_out[key], rtol=1e-6, atol=1e-6, err_msg=key)


def _transformed(transform_dir: Path, examples_dir: Path) -> dict:
    import tensorflow as tf
    import tensorflow_transform as tft

    output = tft.TFTransformOutput(str(transform_dir))
    files = sorted(str(p) for p in (examples_dir / "Split-eval").glob("*.gz"))
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").take(200).as_numpy_iterator())
    parsed = tf.io.parse_example(records, output.raw_feature_spec())
    return {k: v.numpy() for k, v in output.transform_raw_features(parsed).items()}
