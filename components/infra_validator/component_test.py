"""The InfraValidator's spec: stock InfraValidator's channel keys plus ours, types, defaults, executor and
refused arguments.

Key values are ML Metadata keys of existing runs (and cache keys): the literal strings here pin
them, so renaming a constant's value fails a test instead of orphaning old artifacts.
"""

import inspect
import re

import pytest
from tfx import types
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.standard_component_specs import BLESSING_KEY, EXAMPLES_KEY, MODEL_KEY

from components.infra_validator import executor
from components.infra_validator.component import InfraValidator, InfraValidatorSpec
from components.infra_validator.spec import (MODEL_BLESSING_KEY, MODEL_NAME_KEY, NUM_EXAMPLES_KEY,
                                             REQUIRED_SIGNATURES_KEY, TIMEOUT_SECONDS_KEY)


def _validator(**overrides) -> InfraValidator:
    args = dict(model=types.Channel(type=standard_artifacts.Model),
                examples=types.Channel(type=standard_artifacts.Examples),
                model_blessing=types.Channel(type=standard_artifacts.ModelBlessing), model_name="taxi")
    return InfraValidator(**{**args, **overrides})


def test_spec_keys_are_stock_infra_validators_plus_ours_and_keep_their_names():
    stock = standard_component_specs.InfraValidatorSpec
    assert set(InfraValidatorSpec.INPUTS) == {MODEL_KEY, EXAMPLES_KEY, MODEL_BLESSING_KEY} == {
        "model", "examples", "model_blessing"}
    assert all(InfraValidatorSpec.INPUTS[key].type is stock.INPUTS[key].type for key in (MODEL_KEY, EXAMPLES_KEY))
    assert set(InfraValidatorSpec.OUTPUTS) == set(stock.OUTPUTS) == {BLESSING_KEY} == {"blessing"}
    assert InfraValidatorSpec.OUTPUTS[BLESSING_KEY].type is standard_artifacts.InfraBlessing
    assert set(InfraValidatorSpec.PARAMETERS) == {MODEL_NAME_KEY, REQUIRED_SIGNATURES_KEY, NUM_EXAMPLES_KEY,
                                                  TIMEOUT_SECONDS_KEY} == {
        "model_name", "required_signatures", "num_examples", "timeout_seconds"}


def test_the_component_has_typed_channels_default_properties_and_its_executor():
    component = _validator(required_signatures=["serving_default", "serving_features"])
    assert {key: channel.type for key, channel in component.inputs.items()} == {
        MODEL_KEY: standard_artifacts.Model, EXAMPLES_KEY: standard_artifacts.Examples,
        MODEL_BLESSING_KEY: standard_artifacts.ModelBlessing}
    assert component.outputs[BLESSING_KEY].type is standard_artifacts.InfraBlessing
    assert component.exec_properties == {MODEL_NAME_KEY: "taxi",
                                         REQUIRED_SIGNATURES_KEY: "serving_default,serving_features",
                                         NUM_EXAMPLES_KEY: 8, TIMEOUT_SECONDS_KEY: 120}
    assert component.executor_spec.executor_class is executor.Executor
    assert component.id == "InfraValidator"
    assert MODEL_BLESSING_KEY not in _validator(model_blessing=None).inputs


@pytest.mark.parametrize("bad", [
    dict(model=types.Channel(type=standard_artifacts.PushedModel)),
    dict(examples=types.Channel(type=standard_artifacts.Model)),
    dict(model_blessing=types.Channel(type=standard_artifacts.InfraBlessing)),
    dict(model_name=None),
    dict(required_signatures="serving_default"),  # a list of names: a string would be split per letter
])
def test_the_spec_refuses_wrong_types_when_the_pipeline_is_built(bad):
    with pytest.raises(TypeError, match=next(iter(bad))):
        _validator(**bad)


def test_every_constructor_argument_is_documented():
    documented = re.findall(r"^  (\w+):", inspect.getdoc(InfraValidator.__init__).split("\nArgs:\n", 1)[1], re.M)
    assert documented == list(inspect.signature(InfraValidator.__init__).parameters)[1:]
