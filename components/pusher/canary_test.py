"""The AtomicPusher with the home's canary on (serving/canary.py): a nightly push opens a canary window."""

from pathlib import Path

from components.pusher import executor
from components.pusher.executor_test import _push
from serving import canary, versions
from serving.config import default_config_path, load_model_config


def _entry(home: Path):
    (model,) = load_model_config(default_config_path(home), home)
    return model.policy.kind, sorted(model.policy.versions), model.label_map


def test_with_canary_on_a_nightly_push_is_labelled_canary_beside_the_stable_version(tmp_path):
    home = tmp_path / "home"
    base = home / "serving" / "models" / "taxi"
    state = canary.state_path(default_config_path(home))
    first = _push(tmp_path, base, 1, project_home=str(home))
    assert first.get_int_custom_property(executor.PUSHED_VERSION) == 1
    assert not default_config_path(home).exists()  # canary off (the default): nothing else written

    canary.save_settings(state, canary.Settings(enabled=True, share=0.2, soak_seconds=60))
    second = _push(tmp_path, base, 2, project_home=str(home))
    assert second.get_int_custom_property(executor.PUSHED_VERSION) == 2
    assert second.get_string_custom_property(executor.CANARY_SHARE) == "0.2"
    assert _entry(home) == ("specific", [1, 2], {"canary": 2, "stable": 1})
    window = canary.windows(state)["taxi"]
    assert (window.stable, window.canary, window.share, window.soak_seconds) == (1, 2, 0.2, 60)

    # A newer push while the window is open replaces the canary; stable stays.
    _push(tmp_path, base, 3, project_home=str(home))
    assert _entry(home) == ("specific", [1, 3], {"canary": 3, "stable": 1})
    assert canary.windows(state)["taxi"].canary == 3

    # A rollback's push never opens a canary: it is published as it always is.
    rollback = _push(tmp_path, base, 4, project_home=str(home), push_kind="rollback")
    assert rollback.get_int_custom_property(executor.PUSHED_VERSION) == 4
    assert not rollback.get_string_custom_property(executor.CANARY_SHARE)
    assert _entry(home) == ("specific", [1, 3], {"canary": 3, "stable": 1})
    assert versions.list_versions(base) == [1, 2, 3, 4]  # retention keeps the pinned and labelled ones

    # Promotion: stable -> the canary, its label gone, the policy before the canary back.
    canary.promote(home, base, canary.windows(state)["taxi"])
    assert _entry(home) == ("latest", [], {"stable": 3})
    assert canary.windows(state) == {}


def test_with_canary_on_but_a_config_that_pins_versions_the_push_is_published_as_usual(tmp_path):
    home = tmp_path / "home"
    base = home / "serving" / "models" / "taxi"
    _push(tmp_path, base, 1, project_home=str(home))
    config = default_config_path(home)
    config.write_text('model_config_list { config { name: "taxi" base_path: "serving/models/taxi" '
                      'model_version_policy { specific { versions: 1 } } } }')
    canary.save_settings(canary.state_path(config), canary.Settings(enabled=True))
    pushed = _push(tmp_path, base, 2, project_home=str(home))
    assert pushed.get_int_custom_property(executor.PUSHED_VERSION) == 2
    assert not pushed.get_string_custom_property(executor.CANARY_SHARE)
    assert _entry(home) == ("specific", [1], {})
    assert canary.windows(canary.state_path(config)) == {}
