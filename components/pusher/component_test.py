"""The AtomicPusher's spec: stock Pusher's channel keys plus ours, types, defaults, executor and
refused arguments.

Key values are ML Metadata keys of existing runs (and cache keys): the literal strings here pin
them, so renaming a constant's value fails a test instead of orphaning old artifacts.
"""

import getpass
import inspect
import re
from pathlib import Path

import pytest
from tfx import types
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.standard_component_specs import INFRA_BLESSING_KEY, MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY

from components.pusher import executor
from components.pusher.component import AtomicPusher, AtomicPusherSpec
from components.pusher.spec import (ALLOW_REPUSH_KEY, DEFAULT_PUSH_KIND, KEEP_VERSIONS_KEY, PROJECT_HOME_KEY,
                                    PUSH_BASE_DIRECTORY_KEY, PUSH_KIND_KEY, REASON_KEY, REQUESTED_BY_KEY,
                                    TRIGGER_KEY)
from serving import versions
from serving.retention import DEFAULT_KEEP

BASE = "/home/serving/models/taxi"


def _pusher(**overrides) -> AtomicPusher:
    args = dict(model=types.Channel(type=standard_artifacts.Model), push_base_directory=BASE,
                model_blessing=types.Channel(type=standard_artifacts.ModelBlessing))
    return AtomicPusher(**{**args, **overrides})


def _documented_args(function) -> list:
    """Argument names of the `Args:` section of a Google-style docstring, in order."""
    return re.findall(r"^  (\w+):", inspect.getdoc(function).split("\nArgs:\n", 1)[1], re.M)


def test_spec_keys_are_the_constants_and_keep_their_ml_metadata_names():
    stock = standard_component_specs.PusherSpec
    # Stock Pusher's channel keys and types.
    assert set(AtomicPusherSpec.INPUTS) == {MODEL_KEY, MODEL_BLESSING_KEY, INFRA_BLESSING_KEY} == set(stock.INPUTS) == {
        "model", "model_blessing", "infra_blessing"}
    assert set(AtomicPusherSpec.OUTPUTS) == {PUSHED_MODEL_KEY} == set(stock.OUTPUTS) == {"pushed_model"}
    assert all(AtomicPusherSpec.INPUTS[key].type is stock.INPUTS[key].type for key in AtomicPusherSpec.INPUTS)
    assert set(AtomicPusherSpec.PARAMETERS) == {
        PUSH_BASE_DIRECTORY_KEY, ALLOW_REPUSH_KEY, PUSH_KIND_KEY, REASON_KEY, REQUESTED_BY_KEY, KEEP_VERSIONS_KEY,
        PROJECT_HOME_KEY, TRIGGER_KEY} == {"push_base_directory", "allow_repush", "push_kind", "reason",
                                           "requested_by", "keep_versions", "project_home", "trigger"}


def test_the_component_has_typed_channels_default_properties_and_its_executor():
    component = _pusher()
    assert {key: channel.type for key, channel in component.inputs.items()} == {
        MODEL_KEY: standard_artifacts.Model, MODEL_BLESSING_KEY: standard_artifacts.ModelBlessing}
    assert component.outputs[PUSHED_MODEL_KEY].type is standard_artifacts.PushedModel
    assert component.exec_properties == {
        PUSH_BASE_DIRECTORY_KEY: BASE, ALLOW_REPUSH_KEY: 0, PUSH_KIND_KEY: "nightly", REASON_KEY: "",
        REQUESTED_BY_KEY: "", KEEP_VERSIONS_KEY: DEFAULT_KEEP, PROJECT_HOME_KEY: "", TRIGGER_KEY: ""}
    assert DEFAULT_PUSH_KIND == "nightly" and DEFAULT_KEEP == executor.DEFAULT_KEEP_VERSIONS
    assert component.executor_spec.executor_class is executor.Executor
    assert component.id == "AtomicPusher"
    # A rollback's settings, as ML Metadata stores them (the flag as an int).
    rollback = _pusher(allow_repush=True, push_kind="rollback", reason="bad model", requested_by="alice")
    assert {key: rollback.exec_properties[key] for key in (ALLOW_REPUSH_KEY, PUSH_KIND_KEY, REASON_KEY,
                                                           REQUESTED_BY_KEY)} == {
        ALLOW_REPUSH_KEY: 1, PUSH_KIND_KEY: "rollback", REASON_KEY: "bad model", REQUESTED_BY_KEY: "alice"}
    assert MODEL_BLESSING_KEY not in _pusher(model_blessing=None).inputs
    assert INFRA_BLESSING_KEY not in component.inputs
    infra = _pusher(infra_blessing=types.Channel(type=standard_artifacts.InfraBlessing))
    assert infra.inputs[INFRA_BLESSING_KEY].type is standard_artifacts.InfraBlessing


@pytest.mark.parametrize("bad", [
    dict(model=None),  # required: nothing to push
    dict(model=types.Channel(type=standard_artifacts.PushedModel)),
    dict(model_blessing=types.Channel(type=standard_artifacts.InfraBlessing)),
    dict(infra_blessing=types.Channel(type=standard_artifacts.ModelBlessing)),
    dict(push_base_directory=Path(BASE)),  # a str, as ML Metadata stores it
    dict(reason=3),
])
def test_the_spec_refuses_wrong_types_when_the_pipeline_is_built(bad):
    with pytest.raises(TypeError, match=next(iter(bad))):
        _pusher(**bad)


def test_every_constructor_argument_is_documented():
    assert _documented_args(AtomicPusher.__init__) == list(inspect.signature(AtomicPusher.__init__).parameters)[1:]


def _artifacts(tmp_path, blessed: int) -> dict:
    model = standard_artifacts.Model()
    model.id, model.uri = 3, str(tmp_path / "model")
    (tmp_path / "model" / "Format-Serving" / "variables").mkdir(parents=True)
    (tmp_path / "model" / "Format-Serving" / "saved_model.pb").write_bytes(b"graph")
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", blessed)
    blessing.set_string_custom_property("reason", "auc on overall: value 0.5100 fails floor 0.6")
    return {MODEL_KEY: [model], MODEL_BLESSING_KEY: [blessing]}


@pytest.mark.parametrize("blessed", [0, 1])
def test_the_executor_reads_what_the_spec_declares(tmp_path, blessed):
    base = tmp_path / "serving" / "models" / "taxi"
    component = _pusher(push_base_directory=str(base))
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    inputs = _artifacts(tmp_path, blessed)
    executor.Executor().Do({key: inputs[key] for key in component.inputs}, {key: [pushed] for key in component.outputs},
                           dict(component.exec_properties))
    assert pushed.get_int_custom_property(executor.PUSHED) == blessed
    assert pushed.get_string_custom_property(executor.KIND) == "nightly"
    assert pushed.get_string_custom_property(executor.REQUESTED_BY) == getpass.getuser()
    assert pushed.get_string_custom_property(executor.PUSHED_DESTINATION) == str(base)
    if blessed:
        assert versions.list_versions(base) == [1]
        assert pushed.get_string_custom_property(executor.REASON) == "blessed by the Evaluator"
    else:
        assert not versions.list_versions(base)
        assert pushed.get_string_custom_property(executor.REASON) == (
            "model 3 is not blessed: auc on overall: value 0.5100 fails floor 0.6")


@pytest.mark.parametrize("infra_blessed", [0, 1])
def test_a_model_the_infra_validator_did_not_bless_is_not_pushed_and_the_reason_is_recorded(tmp_path, infra_blessed):
    base = tmp_path / "serving" / "models" / "taxi"
    component = _pusher(push_base_directory=str(base),
                        infra_blessing=types.Channel(type=standard_artifacts.InfraBlessing))
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / "pushed")
    inputs = _artifacts(tmp_path, blessed=1)
    infra = standard_artifacts.InfraBlessing()
    infra.set_int_custom_property("blessed", infra_blessed)
    infra.set_string_custom_property("reason", "the server did not load the model: no variables")
    inputs[INFRA_BLESSING_KEY] = [infra]
    executor.Executor().Do({key: inputs[key] for key in component.inputs}, {key: [pushed] for key in component.outputs},
                           dict(component.exec_properties))
    assert pushed.get_int_custom_property(executor.PUSHED) == infra_blessed
    assert versions.list_versions(base) == ([1] if infra_blessed else [])
    if not infra_blessed:
        assert pushed.get_string_custom_property(executor.REASON) == (
            "model 3 failed infra validation: the server did not load the model: no variables")
        assert (tmp_path / "pushed" / "NOT_PUSHED").read_text().startswith("model 3 failed infra validation")
