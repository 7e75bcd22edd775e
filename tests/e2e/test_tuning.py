"""Weekly tuning end to end: a night, `mlops tune` (TFX's Tuner, a 2-trial KerasTuner search), the next
night trains with the result, and lineage shows the tuning execution it came from."""

from __future__ import annotations

import json

import pytest

from tests import prepared
from tests.conftest import DAY1, DAY2, KEEP_WORKER, make_home, mlops, readonly_store

STEPS = ("--train-steps", "20", "--eval-steps", "5")


@prepared.setup("tuned", lane="tuning")  # beside the other shared setups (tests/prepared.py)
def _tuned(tmp_path_factory) -> dict:
    home = make_home(tmp_path_factory.mktemp("tuning"), days=2, rows=1500)
    before = {"untrained": mlops(home, "tune", "--trials", "2", *STEPS, check=False)}
    # Its warm worker stays through the tuning (longer than the 2-minute idle timeout) for the next night.
    mlops(home, "run", "--date", DAY1.isoformat(), *STEPS, env=KEEP_WORKER)
    before["unvalidated_day"] = mlops(home, "tune", "--date", DAY2.isoformat(), "--trials", "2", *STEPS, check=False)
    first = json.loads(mlops(home, "tune", "--trials", "2", *STEPS, "--json").stdout)
    again = mlops(home, "tune", "--trials", "2", *STEPS)
    # Lenient gates: whether 20 steps of either model beat the other on 1.5k rows is not the question here.
    night = mlops(home, "run", "--date", DAY2.isoformat(), *STEPS, "--auc-floor", "0.0", "--min-improvement", "-1.0",
                  "--slice-margin", "1.0")
    lineage = json.loads(mlops(home, "lineage", "--version", "2", "--json").stdout)["chain"]
    mlops(home, "worker", "stop", check=False)
    return dict(home=home, before=before, first=first, again=again, night=night, lineage=lineage)


@pytest.fixture(scope="module")
def tuned(request):
    return prepared.result(request, "tuned")


def test_tuning_refuses_with_the_fix_when_there_is_nothing_to_tune_on(tuned):
    untrained, unvalidated = tuned["before"]["untrained"], tuned["before"]["unvalidated_day"]
    assert untrained.returncode == 2 and "run the pipeline first" in untrained.stderr + untrained.stdout
    assert unvalidated.returncode == 2, unvalidated.stdout + unvalidated.stderr
    assert f"span {DAY2} has not passed the data gates" in unvalidated.stderr


def test_a_two_trial_search_records_the_best_values_and_a_rerun_reuses_them(tuned):
    first = tuned["first"]
    assert first["status"] == "complete" and first["spans"] == [DAY1.isoformat()]
    assert set(first["values"]) == {"learning_rate", "hidden_units"}
    store = readonly_store(tuned["home"])
    [artifact] = store.get_artifacts_by_id([first["artifact_id"]])
    assert store.get_artifact_types_by_id([artifact.type_id])[0].name == "HyperParameters"
    tuners = [e for e in store.get_executions() if store.get_execution_types_by_id([e.type_id])[0].name.endswith("Tuner")]
    # One search; the rerun is recorded as a cached execution of it.
    assert sorted(e.State.Name(e.last_known_state) for e in tuners) == ["CACHED", "COMPLETE"]
    [tuner] = [e for e in tuners if e.last_known_state == e.COMPLETE]
    trials = json.loads(tuner.custom_properties["custom_config"].string_value)
    assert trials["max_trials"] == 2
    assert "reused" in tuned["again"].stdout and f"artifact {first['artifact_id']}" in tuned["again"].stdout


def test_the_next_night_trains_with_the_tuned_values_and_lineage_names_the_tuning(tuned):
    import tensorflow as tf

    first, training = tuned["first"], tuned["lineage"]["training"]
    assert "pushed:    version 2" in tuned["night"].stdout
    assert training["tuning"]["artifact_id"] == first["artifact_id"]
    assert training["tuning"]["execution"]["node"] == "Tuner"
    assert training["tuning"]["execution"]["run_id"].startswith("tuning__")
    assert training["hyperparameters"]["learning_rate"] == first["values"]["learning_rate"]
    assert training["hyperparameters"]["hidden_units"] == first["values"]["hidden_units"]
    # The model itself has the tuned deep tower: its dense kernels' widths, in order.
    variables = tf.train.list_variables(tuned["lineage"]["model"]["uri"] + "/Format-Serving/variables/variables")
    kernels = sorted((int(name.split("/")[0].rsplit("-", 1)[1]), shape) for name, shape in variables
                     if name.startswith("layer_with_weights-") and name.endswith("/kernel/.ATTRIBUTES/VARIABLE_VALUE"))
    widths = [shape[1] for _, shape in kernels if shape[1] > 1]  # the two output units are 1 wide
    assert widths == first["values"]["hidden_units"], variables
