"""Choosing what a rollback pushes: the pure part of `mlops rollback` (the e2e tests run it for real)."""

import pytest

from pipelines.errors import ConfigError
from pipelines.rollback import (AlreadyServing, NoLongerServed, PushRecord, check_still_served, choose_target,
                                refuse_unserved_push)
from serving.config import ProjectServing


def push(artifact_id, version, model_id, fingerprint, kind="nightly"):
    return PushRecord(artifact_id, version, model_id, kind, "why", "who", "2026-11-23T00:00:00", 0, fingerprint)


HISTORY = [push(10, 1, 101, "a"), push(20, 2, 102, "b"), push(30, 3, 103, "c")]


def test_previous_is_the_model_served_before_the_current_one():
    assert choose_target(HISTORY, None).version == 2


def test_previous_skips_pushes_of_the_bytes_being_served():
    # v4 rolled back to v1's bytes; "previous" from there is v3, not v1 again.
    history = HISTORY + [push(40, 4, 101, "a", kind="rollback")]
    assert choose_target(history, None).version == 3


def test_to_version_picks_that_push():
    assert choose_target(HISTORY, 1).model_id == 101


def test_rolling_back_to_the_served_model_is_a_no_op():
    with pytest.raises(AlreadyServing, match="version 3 already serves model 103"):
        choose_target(HISTORY, 3)
    history = HISTORY + [push(40, 4, 101, "a", kind="rollback")]
    with pytest.raises(AlreadyServing, match="nothing to do"):
        choose_target(history, 1)  # the same rollback again


def test_unknown_version_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"no pushed version 9 \(pick one of the pushed versions: 1, 2, 3\)"):
        choose_target(HISTORY, 9)


def test_nothing_to_roll_back_to():
    with pytest.raises(ConfigError, match="nothing has been pushed yet"):
        choose_target([], None)
    with pytest.raises(ConfigError, match="the only model ever pushed"):
        choose_target(HISTORY[:1], None)


def test_a_served_version_no_push_records_needs_an_explicit_target():
    # Version 5 was copied into the base path by hand: ML Metadata cannot say what it replaced.
    copied = push(0, 5, 0, "x", kind="unrecorded")
    with pytest.raises(ConfigError, match=r"version 5 is served but no push in ML Metadata records it.*--to VERSION, "
                                          r"one of the pushed versions 1, 2, 3"):
        choose_target(HISTORY, None, copied)
    # Naming a version works, the last push included: it is not what is served any more.
    assert choose_target(HISTORY, 3, copied).version == 3
    # A hand copy of model 101's bytes does serve model 101: nothing to do.
    with pytest.raises(AlreadyServing, match="version 5 already serves model 101"):
        choose_target(HISTORY, 1, push(0, 5, 0, "a", kind="unrecorded"))


def test_only_if_serving_rolls_back_only_while_that_version_is_served():
    check_still_served(HISTORY, None)  # no condition
    check_still_served(HISTORY, 3)  # version 3 is the newest push: roll back
    # A late alert for version 2 (replaced by 3 since): nothing to do, and the message says what serves.
    with pytest.raises(NoLongerServed, match=r"^version 2 is no longer served \(now 3\): nothing to roll back$") as gone:
        check_still_served(HISTORY, 2)
    assert (gone.value.version, gone.value.served) == (2, 3)
    # The same alert again after its rollback pushed version 4: no second rollback.
    after = HISTORY + [push(40, 4, 102, "b", kind="rollback")]
    with pytest.raises(NoLongerServed, match=r"version 3 is no longer served \(now 4\)"):
        check_still_served(after, 3)
    # A newer directory copied in by hand is what is served.
    with pytest.raises(NoLongerServed, match=r"\(now 5\)"):
        check_still_served(HISTORY, 3, push(0, 5, 0, "x", kind="unrecorded"))
    check_still_served(HISTORY, 5, push(0, 5, 0, "x", kind="unrecorded"))
    with pytest.raises(NoLongerServed, match=r"version 1 is no longer served \(nothing is pushed\)"):
        check_still_served([], 1)


def test_an_alert_triggered_rollback_is_shown_as_such():
    manual = PushRecord(40, 4, 102, "rollback", "why", "who", "", 3, "b", trigger="manual")
    alerted = PushRecord(41, 5, 103, "rollback", "why", "alertmanager", "", 4, "c", trigger="alert")
    assert [p.kind_label for p in (HISTORY[0], manual, alerted)] == ["nightly", "rollback", "rollback (alert)"]
    assert HISTORY[0].trigger == "" and PushRecord.unrecorded(7).trigger == ""


def serving_config(home, policy: str, base: str = "serving/models/taxi"):
    (home / "serving").mkdir(parents=True, exist_ok=True)
    (home / "serving" / "models.config").write_text(
        f'model_config_list {{ config {{ name: "taxi" base_path: "{base}" {policy} '
        'version_labels { key: "stable" value: 2 } } }')
    return ProjectServing.read(home, home / "serving" / "models" / "taxi")


@pytest.mark.parametrize("policy, loaded", [
    ("", [3]),  # no policy: latest 1
    ("model_version_policy { latest { num_versions: 2 } }", [2, 3]),
    ("model_version_policy { all {} }", [1, 2, 3]),
    ("model_version_policy { specific { versions: 2 versions: 7 } }", [2]),
])
def test_what_the_servers_models_config_serves_decides_models_list_and_rollback(tmp_path, policy, loaded):
    serving = serving_config(tmp_path, policy)
    assert serving.loaded([1, 2, 3]) == loaded
    assert serving.loaded([3, 2, 1, 3]) == loaded  # any order, repeats: ascending, once each
    assert serving.model.labels_of(2) == ["stable"] and serving.model.labels_of(3) == []
    if "specific" in policy:
        with pytest.raises(ConfigError, match=r"pins model 'taxi' to version\(s\) 2, 7 .*would not be served") as err:
            refuse_unserved_push(serving, 1)
        assert "version 1's model" in err.value.fix and "models.config" in err.value.fix
    else:
        refuse_unserved_push(serving, 1)  # a push becomes the newest, served version


def test_without_a_models_config_the_newest_version_is_served(tmp_path):
    serving = ProjectServing.read(tmp_path, tmp_path / "serving" / "models" / "taxi")
    assert serving.config_path is None and serving.loaded([2, 1, 5]) == [5]
    refuse_unserved_push(serving, None)
    assert "newest version is served" in serving.describe()


def test_a_models_config_that_does_not_serve_the_pushers_directory_refuses_the_rollback(tmp_path):
    serving = serving_config(tmp_path, "", base="/somewhere/else")
    assert serving.model is None and serving.loaded([1, 2]) == []
    with pytest.raises(ConfigError, match="has no model with base_path .*serving/models/taxi") as err:
        refuse_unserved_push(serving, None)
    assert "--model-config-file" in err.value.fix
