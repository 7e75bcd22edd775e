"""Two spans end to end with real TFX, real ML Metadata (SQLite) and real pushes.

One module-scoped sequence of runs (each run is minutes, so they are shared by the
assertions below; every test reads, none writes):
  1. span 1            -> first model, only the absolute AUC floor applies -> version 1
  2. span 1 again      -> served from cache, nothing pushed, says so
  3. span 2, floor .999 -> candidate not blessed -> nothing pushed
  4. span 2, gates off  -> candidate blessed against the served model -> version 2
  5. span 2, gates off, more steps, --keep-versions 1 -> version 3; retention deletes version 1
  6. span 2, gates off, a user's run_fn whose model lacks a signature -> not servable, not pushed
     (tests/e2e/test_infra_validation.py)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from serving import versions
from tests.conftest import DAY1, DAY2, mlops


def test_first_run_pushes_version_1_and_reports_the_run(runs):
    first = runs["first"]
    assert runs["after_first"] == [1]
    assert first["pushed_version"] == 1
    assert first["blessed"] is True
    assert first["span"] == DAY1.isoformat()
    assert first["rows"]["train"] + first["rows"]["eval"] == 1500
    assert "overall" in first["metrics"] and 0.0 <= first["metrics"]["overall"]["auc"] <= 1.0
    assert first["anomalies"] == []
    for node in ("CsvExampleGen", "Transform", "Trainer", "GatedEvaluator", "AtomicPusher"):
        assert first["node_states"][node] == "complete"
        assert f"] {node} complete in" in first["progress"]
    assert runs["first_saved_model"]
    # Its Pushgateway was down: one warning line, and the run went on (pushed, exit 0).
    assert first["stderr"].count("warning: metrics not pushed to the Pushgateway") == 1, first["stderr"][-3000:]


def test_rerun_of_the_same_span_is_cached_and_pushes_nothing(runs):
    rerun = runs["rerun"]
    assert runs["after_rerun"] == [1]
    for node in ("CsvExampleGen", "StatisticsGen", "Transform", "Trainer"):
        assert rerun["node_states"][node] == "cached", rerun["node_states"]
    assert rerun["pushed_version"] is None
    assert "is the model being served" in rerun["blessing_reason"]
    assert "not blessed" in rerun["push_reason"] or "already pushed" in rerun["push_reason"]


def test_second_span_below_the_floor_is_not_pushed_and_says_why(runs):
    strict = runs["strict"]
    assert runs["after_strict"] == [1]
    assert strict["node_states"]["Trainer"] == "complete"
    assert strict["blessed"] is False
    assert "auc on overall" in strict["blessing_reason"] and "floor 0.999" in strict["blessing_reason"]
    assert strict["pushed_version"] is None


def test_second_span_passing_the_gates_is_pushed_as_version_2(runs):
    lenient = runs["lenient"]
    assert runs["after_lenient"] == [1, 2]
    assert lenient["blessed"] is True
    assert "against model" in lenient["blessing_reason"]
    assert lenient["pushed_version"] == 2
    assert runs["lenient_fingerprints"][2] != runs["lenient_fingerprints"][1]
    assert not [p for p in runs["models"].iterdir() if p.name.startswith(versions.TMP_PREFIX)]


def test_a_push_deletes_versions_beyond_the_newest_n_but_not_the_one_it_replaces(runs):
    retained = runs["retained"]
    assert retained["pushed_version"] == 3, retained["push_reason"]
    assert retained["pruned_versions"] == [1]
    assert runs["after_retained"] == [2, 3]  # 2: served until 3 loads
    assert "retention: deleted version(s) 1" in mlops(runs["home"], "summary", "--run-id", retained["run_id"]).stdout
    by_version = {row["version"]: row for row in runs["listed"]}
    assert by_version[1]["on_disk"] is False and by_version[1]["deleted_by_retention_after"] == 3
    assert by_version[3]["pruned_versions"] == [1] and by_version[2]["deleted_by_retention_after"] is None


def test_runs_leave_nothing_in_the_temp_directory(runs):
    # Nodes run in forks of the warm worker and leave by os._exit, so what they imported never
    # cleans up at exit (TensorFlow's autograph alone wrote ~20 files per run): each node gets
    # its own TMPDIR, removed when it ends.
    assert runs["first"]["node_states"]["Transform"] == "complete"  # the runs did convert functions
    left = sorted(p.name for p in runs["tmp"].iterdir())
    assert left == [], left


def test_pushed_saved_model_predicts_on_raw_tf_examples(runs):
    code = r'''
import json, sys
import tensorflow as tf
from pipelines.data import read_rows
header, rows = read_rows(sys.argv[2])
examples = []
for row in rows[:5]:
    feats = {}
    for name, value in zip(header, row):
        if name == "tips" or value == "":
            continue
        try:
            number = float(value)
        except ValueError:
            feats[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
            continue
        if "." in value or name in ("fare", "trip_miles") or "latitude" in name or "longitude" in name:
            feats[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[number]))
        else:
            feats[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(number)]))
    examples.append(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
model = tf.saved_model.load(sys.argv[1])
out = model.signatures["serving_default"](examples=tf.constant(examples))
print(json.dumps(out["probabilities"].numpy().tolist()))
'''
    span_csv = runs["home"] / "data" / "incoming" / DAY2.isoformat() / "data.csv"
    result = subprocess.run(
        [sys.executable, "-c", code, str(runs["models"] / "2"), str(span_csv)],
        capture_output=True, text=True, env={**os.environ, "TF_USE_LEGACY_KERAS": "1"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probabilities = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(probabilities) == 5
    assert all(len(p) == 1 and 0.0 <= p[0] <= 1.0 for p in probabilities)
