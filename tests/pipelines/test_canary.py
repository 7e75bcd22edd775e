"""Judging a canary from the model server's own metrics (pipelines/canary.py) and the split's hash
(serving/canary.py); the end-to-end tests with real servers are tests/serving/test_canary.py."""

from __future__ import annotations

import json

import pytest

from pipelines.canary import VersionStats, compare, histogram_quantile, parse_stats
from serving import canary
from serving.metrics import ServingMetrics
from tests.conftest import mlops


def test_stats_by_version_come_from_the_servers_exposition():
    metrics = ServingMetrics(["taxi"])
    for i in range(100):
        metrics.observe("taxi", 3, "predict", 200, 0.004, "rest")
        metrics.observe("taxi", 4, "predict", 400 if i % 10 == 0 else 200, 0.004 if i < 95 else 0.2, "grpc")
    metrics.observe("taxi", 4, "status", 500, 0.001, "rest")  # not an inference answer: not counted
    metrics.observe("other", 4, "predict", 500, 0.001, "rest")  # another model
    stats = parse_stats(metrics.exposition().decode(), "taxi")
    assert (stats[3].requests, stats[3].errors, stats[4].requests, stats[4].errors) == (100, 0, 100, 10)
    assert 0.0025 < stats[3].p99_seconds <= 0.005  # inside the bucket holding 4 ms
    assert 0.1 < stats[4].p99_seconds <= 0.25  # 5 of 100 took 200 ms


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.005, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.002)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.002 + 0.003 * 49 / 50)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 10.0)]) == 0.1  # beyond the last bucket


@pytest.mark.parametrize("canary_stats, verdict, why", [
    (VersionStats(4, 10, 0, 0.003), "wait", "fewer than the 50 needed"),
    (VersionStats(4, 100, 12, 0.003), "rollback", "canary error rate 12.0% vs stable 0.0%"),
    (VersionStats(4, 100, 0, 0.010), "rollback", "canary p99 latency 10.0 ms vs stable 3.0 ms"),
    (VersionStats(4, 100, 1, 0.004), "promote", "no worse than stable"),
])
def test_the_verdict_follows_the_margins(canary_stats, verdict, why):
    settings = canary.Settings(enabled=True, error_margin=0.01, latency_margin=0.5, min_requests=50)
    got, text = compare(VersionStats(3, 1000, 0, 0.003), canary_stats, settings)
    assert got == verdict and why in text, text


def test_a_request_id_always_lands_on_the_same_side_and_ids_spread_evenly():
    assert canary.request_fraction("order-17") == canary.request_fraction("order-17")
    fractions = [canary.request_fraction(f"id-{i}") for i in range(4000)]
    share = sum(f < 0.1 for f in fractions) / len(fractions)
    assert 0.085 < share < 0.115  # 4 standard deviations of a binomial(4000, 0.1)
    assert not canary.goes_to_canary(0.0, "x") and canary.goes_to_canary(1.0, None)


def test_enable_refuses_a_share_outside_0_1_and_an_unreadable_duration(tmp_path):
    bad = mlops(tmp_path, "models", "canary", "enable", "--share", "1.5", check=False)
    assert bad.returncode == 2 and "is not a share" in bad.stderr
    bad = mlops(tmp_path, "models", "canary", "enable", "--soak", "soon", check=False)
    assert bad.returncode == 2 and "is not a duration: write e.g. 90s, 30m or 2h" in bad.stderr
    assert mlops(tmp_path, "models", "canary", "enable", "--soak", "90s").returncode == 0
    assert "no canary window open" in mlops(tmp_path, "models", "canary", "status").stdout
    assert canary.load_settings(canary.state_path(tmp_path / "serving" / "models.config")).soak_seconds == 90


# -- `mlops rollback` during a canary window ------------------------------------------------------


def _store(home):
    from ml_metadata import metadata_store

    from pipelines.config import MetadataConfig, ProjectPaths

    paths = ProjectPaths(home)
    paths.metadata_path.parent.mkdir(parents=True, exist_ok=True)
    return metadata_store.MetadataStore(MetadataConfig.for_home(paths).to_proto())


def _nightly_push(store, home, tmp, n: int):
    """What a nightly run leaves: the Trainer's model, the Evaluator's blessing of it and the real
    AtomicPusher executor's push (opening a window when canary is on), recorded in the `taxi`
    pipeline's context of the home's ML Metadata, where the rollback's resolver finds them."""
    from ml_metadata.proto import metadata_store_pb2 as pb
    from tfx.types import standard_artifacts
    from tfx.types.standard_component_specs import MODEL_KEY, PUSHED_MODEL_KEY

    from components.pusher import executor
    from components.pusher.executor_test import _model
    from components.pusher.spec import PUSH_BASE_DIRECTORY_KEY
    from pipelines.config import PIPELINE_NAME
    from tfx.version import __version__ as tfx_version

    def put_type(name):
        return store.put_artifact_type(pb.ArtifactType(name=name))

    context_type = store.put_context_type(pb.ContextType(name="pipeline"))
    context = store.get_context_by_type_and_name("pipeline", PIPELINE_NAME)
    if context is None:
        context = pb.Context(type_id=context_type, name=PIPELINE_NAME)
        context.id = store.put_contexts([context])[0]
    execution = pb.Execution(type_id=store.put_execution_type(pb.ExecutionType(name="nightly")),
                             last_known_state=pb.Execution.COMPLETE)

    def put(artifact, type_name):
        out = pb.Event(type=pb.Event.OUTPUT)
        out.path.steps.add().key = type_name
        out.path.steps.add().index = 0
        artifact.set_string_custom_property("tfx_version", tfx_version)  # as TFX's publisher records it
        mlmd = artifact.mlmd_artifact
        mlmd.type_id, mlmd.state = put_type(type_name), pb.Artifact.LIVE
        _, (artifact_id,), _ = store.put_execution(execution, [(mlmd, out)], [context])
        artifact.id = artifact_id
        return artifact_id

    model = _model(tmp / f"model-{n}", f"graph {n}".encode())
    model_id = put(model, "Model")
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp / f"blessing-{n}")
    blessing.set_int_custom_property("blessed", 1)
    blessing.set_int_custom_property("current_model_id", model_id)
    put(blessing, "ModelBlessing")
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp / f"pushed-{n}")
    executor.Executor().Do({MODEL_KEY: [model]}, {PUSHED_MODEL_KEY: [pushed]},
                           {PUSH_BASE_DIRECTORY_KEY: str(home / "serving" / "models" / "taxi"),
                            "project_home": str(home)})
    put(pushed, "PushedModel")
    return pushed.get_int_custom_property(executor.PUSHED_VERSION)


def _home_with_window(pipeline_home, tmp_path):
    """Versions 1 and 2 pushed and served one after the other, then canary on and version 3 pushed:
    a window with stable 2 and canary 3."""
    home = pipeline_home(days=0)
    store = _store(home)
    assert [_nightly_push(store, home, tmp_path, n) for n in (1, 2)] == [1, 2]
    mlops(home, "models", "canary", "enable", "--share", "0.5", "--soak", "30m")
    assert _nightly_push(store, home, tmp_path, 3) == 3
    state = canary.state_path(canary.home_config_path(home))
    window = canary.windows(state)["taxi"]
    assert (window.stable, window.canary) == (2, 3)
    return home, state


def _served(home):
    from serving.config import default_config_path, load_model_config

    (model,) = load_model_config(default_config_path(home), home)
    return model.policy.kind, model.label_map


def test_an_alerts_rollback_during_a_canary_window_rolls_the_canary_back_audited_and_only_once(pipeline_home, tmp_path):
    home, state = _home_with_window(pipeline_home, tmp_path)
    assert _served(home) == ("specific", {"canary": 3, "stable": 2})
    # What the model_rollback DAG runs for the webhook: an alert on stable's version is refused (rolling
    # the canary back would leave that version serving everything), with the fix named; nothing changes.
    refused = mlops(home, "rollback", "--previous", "--reason", "errors on 2", "--by", "alertmanager", "--trigger",
                    "alert", "--only-if-serving", "2", "--no-server", "--json", check=False)
    assert refused.returncode == 2 and "version 2 is the stable version of an open canary window" in refused.stderr
    assert "mlops models canary check --now" in refused.stderr, refused.stderr
    assert canary.windows(state)["taxi"].canary == 3 and _served(home)[1] == {"canary": 3, "stable": 2}

    done = mlops(home, "rollback", "--previous", "--reason", "ServingErrorRateHigh on version 3", "--by",
                 "alertmanager", "--trigger", "alert", "--only-if-serving", "3", "--no-server", "--json")
    result = json.loads(done.stdout)
    assert (result["new_version"], result["target"]["version"], result["replaced_version"]) == (4, 2, 3), result
    assert result["trigger"] == "alert" and result["canary_window_ended"] is True
    # The window is over: stable (now version 4, version 2's bytes) serves everything, the canary is not served.
    assert canary.windows(state) == {}
    assert _served(home) == ("latest", {"stable": 4})
    rows = {row["version"]: row for row in json.loads(mlops(home, "models", "list", "--json").stdout)}
    assert rows[4]["kind_label"] == "rollback (alert)" and rows[4]["reason"] == "ServingErrorRateHigh on version 3"
    assert rows[4]["requested_by"] == "alertmanager" and rows[4]["replaced_version"] == 3
    assert rows[4]["serving"] and not rows[3]["serving"] and rows[4]["model_id"] == rows[2]["model_id"]

    # The same alert again (Alertmanager repeats it): the canary is no longer served, nothing is pushed.
    again = mlops(home, "rollback", "--previous", "--reason", "ServingErrorRateHigh on version 3", "--by",
                  "alertmanager", "--trigger", "alert", "--only-if-serving", "3", "--no-server", "--json")
    assert json.loads(again.stdout) == {"no_longer_served": 3, "served": 4}
    assert max(json.loads(mlops(home, "models", "list", "--json").stdout), key=lambda r: r["version"])["version"] == 4


def test_rollback_to_during_a_canary_window_names_what_it_does(pipeline_home, tmp_path):
    home, state = _home_with_window(pipeline_home, tmp_path)
    # The canary's own version: a rollback does not promote; the fix names both ways out.
    refused = mlops(home, "rollback", "--to", "3", "--reason", "keep the new one", "--no-server", check=False)
    assert refused.returncode == 2 and "version 3 is the canary of the open window" in refused.stderr
    assert "mlops models canary check --now" in refused.stderr and "--to 2" in refused.stderr, refused.stderr
    assert canary.windows(state)["taxi"].canary == 3

    # Another version: the window ends with that version's model serving everything (one audited push).
    done = mlops(home, "rollback", "--to", "1", "--reason", "both newer models are bad", "--by", "oncall",
                 "--no-server")
    assert done.stdout.count("the canary window ended: rolled back: version 4 now serves model") == 1, done.stdout
    assert canary.windows(state) == {} and _served(home) == ("latest", {"stable": 4})
    rows = {row["version"]: row for row in json.loads(mlops(home, "models", "list", "--json").stdout)}
    assert rows[4]["kind_label"] == "rollback" and rows[4]["trigger"] == "manual" and rows[4]["model_id"] == rows[1]["model_id"]
    # Idempotent: the same command again has nothing to do.
    again = mlops(home, "rollback", "--to", "1", "--reason", "both newer models are bad", "--no-server")
    assert "already serves model" in again.stdout and "nothing to do" in again.stdout
