"""The AtomicPusher's executor on real TFX artifacts: a push, then retention of older versions."""

import subprocess
from pathlib import Path

from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import MODEL_KEY, PUSHED_MODEL_KEY

from components.pusher import executor
from components.pusher.spec import PUSH_BASE_DIRECTORY_KEY
from serving import versions


def _model(root: Path, payload: bytes):
    """A Model artifact whose Format-Serving directory looks like a complete SavedModel."""
    model = standard_artifacts.Model()
    model.uri = str(root)
    serving = root / "Format-Serving"
    (serving / "variables").mkdir(parents=True)
    (serving / "saved_model.pb").write_bytes(payload)
    (serving / "variables" / "variables.index").write_bytes(b"index-" + payload)
    (serving / "variables" / "variables.data-00000-of-00001").write_bytes(b"data-" + payload)
    return model


def _push(tmp: Path, base: Path, n: int, **properties):
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp / f"pushed-{n}")
    executor.Executor().Do({MODEL_KEY: [_model(tmp / f"model-{n}", f"graph {n}".encode())]},
                           {PUSHED_MODEL_KEY: [pushed]},
                           {PUSH_BASE_DIRECTORY_KEY: str(base), **properties})
    return pushed


def test_each_push_keeps_the_newest_n_versions_and_records_what_it_deleted(tmp_path):
    base = tmp_path / "home" / "serving" / "models" / "taxi"
    for n in range(1, 4):
        assert not _push(tmp_path, base, n, keep_versions=3).get_string_custom_property(executor.PRUNED_VERSIONS)
    assert versions.list_versions(base) == [1, 2, 3]
    fourth = _push(tmp_path, base, 4, keep_versions=3)
    assert fourth.get_int_custom_property(executor.PUSHED_VERSION) == 4
    assert fourth.get_string_custom_property(executor.PRUNED_VERSIONS) == "1"
    assert versions.list_versions(base) == [2, 3, 4]
    # keep 1: the version served until this push loads stays too
    assert _push(tmp_path, base, 5, keep_versions=1).get_string_custom_property(executor.PRUNED_VERSIONS) == "2,3"
    assert versions.list_versions(base) == [4, 5]
    # 0 keeps every version
    _push(tmp_path, base, 6, keep_versions=0)
    assert versions.list_versions(base) == [4, 5, 6]


def test_retention_keeps_what_the_projects_models_config_labels_pins_or_loads(tmp_path):
    home = tmp_path / "home"
    base = home / "serving" / "models" / "taxi"
    config = home / "serving" / "models.config"
    for n in range(1, 5):
        _push(tmp_path, base, n, keep_versions=0)
    config.write_text('model_config_list { config { name: "taxi" base_path: "serving/models/taxi" '
                      'model_version_policy { latest { num_versions: 2 } } version_labels { key: "stable" value: 1 } } }')
    pushed = _push(tmp_path, base, 5, keep_versions=1, project_home=str(home))
    # 1: labelled; 4: loaded under `latest 2` and served until 5 loads; 5: the push
    assert pushed.get_string_custom_property(executor.PRUNED_VERSIONS) == "2,3"
    assert versions.list_versions(base) == [1, 4, 5]

    # A models.config that does not parse: the push stands, nothing is deleted, and it says why.
    config.write_text("model_config_list { config { name: ")
    broken = _push(tmp_path, base, 6, keep_versions=1, project_home=str(home))
    assert broken.get_int_custom_property(executor.PUSHED) == 1
    assert versions.list_versions(base) == [1, 4, 5, 6]
    error = broken.get_string_custom_property(executor.PRUNE_ERROR)
    assert error.startswith("skipped, nothing deleted: ") and "models.config" in error, error


def test_a_version_that_cannot_be_deleted_is_recorded_and_the_others_still_go(tmp_path):
    base = tmp_path / "home" / "serving" / "models" / "taxi"
    for n in range(1, 4):
        _push(tmp_path, base, n, keep_versions=0)
    stuck = base / "1"
    subprocess.run(["chattr", "+i", str(stuck)], check=True)  # immutable: even root cannot rename it
    try:
        pushed = _push(tmp_path, base, 4, keep_versions=1)
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert pushed.get_int_custom_property(executor.PUSHED) == 1
    assert pushed.get_string_custom_property(executor.PRUNED_VERSIONS) == "2"
    assert pushed.get_string_custom_property(executor.PRUNE_ERROR).startswith("could not delete version 1: ")
    assert versions.list_versions(base) == [1, 3, 4]
