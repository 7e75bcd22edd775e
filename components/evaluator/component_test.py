"""The GatedEvaluator's spec: stock EvaluatorSpec plus the slice guard's keys, types, defaults,
executor and refused arguments.

Key values are ML Metadata keys of existing runs (and cache keys): the literal strings here pin
them, so renaming a constant's value fails a test instead of orphaning old artifacts.
"""

import inspect
import re

import pytest
from tfx import types
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as tfx_evaluator_executor
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.standard_component_specs import (BASELINE_MODEL_KEY, BLESSING_KEY, EVAL_CONFIG_KEY, EVALUATION_KEY,
                                                EXAMPLE_SPLITS_KEY, EXAMPLES_KEY, MODEL_KEY)

from components.evaluator import executor
from components.evaluator.component import GatedEvaluator, GatedEvaluatorSpec
from components.evaluator.spec import MIN_SLICE_EXAMPLES_KEY, SLICE_GUARD_KEYS, SLICE_MARGIN_KEY

MODEL = standard_artifacts.Model


def _eval_config():
    import tensorflow_model_analysis as tfma

    return tfma.EvalConfig(model_specs=[tfma.ModelSpec(label_key="tips")],
                           slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["payment_type"])])


def _evaluator(**overrides) -> GatedEvaluator:
    args = dict(examples=types.Channel(type=standard_artifacts.Examples), model=types.Channel(type=MODEL),
                eval_config=_eval_config(), slice_margin=0.05, min_slice_examples=50,
                baseline_model=types.Channel(type=MODEL))
    return GatedEvaluator(**{**args, **overrides})


def _documented_args(function) -> list:
    """Argument names of the `Args:` section of a Google-style docstring, in order."""
    return re.findall(r"^  (\w+):", inspect.getdoc(function).split("\nArgs:\n", 1)[1], re.M)


def test_spec_is_stock_evaluators_plus_the_slice_guard_keys():
    stock = standard_component_specs.EvaluatorSpec
    assert issubclass(GatedEvaluatorSpec, stock)
    assert GatedEvaluatorSpec.INPUTS == stock.INPUTS and GatedEvaluatorSpec.OUTPUTS == stock.OUTPUTS
    ours = set(GatedEvaluatorSpec.PARAMETERS) - set(stock.PARAMETERS)
    assert ours == set(SLICE_GUARD_KEYS) == {SLICE_MARGIN_KEY, MIN_SLICE_EXAMPLES_KEY} == {"slice_margin",
                                                                                          "min_slice_examples"}
    # The very same parameters (TFX's ExecutionParameter.__eq__ never holds, hence `is`).
    assert all(GatedEvaluatorSpec.PARAMETERS[key] is stock.PARAMETERS[key] for key in stock.PARAMETERS)
    assert GatedEvaluatorSpec.PARAMETERS[SLICE_MARGIN_KEY].type is float
    assert GatedEvaluatorSpec.PARAMETERS[MIN_SLICE_EXAMPLES_KEY].type is int
    assert not any(GatedEvaluatorSpec.PARAMETERS[key].optional for key in SLICE_GUARD_KEYS)


def test_the_component_has_typed_channels_default_properties_and_its_executor():
    from google.protobuf import json_format
    import tensorflow_model_analysis as tfma

    component = _evaluator(slice_margin=0.04, min_slice_examples=40)
    assert {key: channel.type for key, channel in component.inputs.items()} == {
        EXAMPLES_KEY: standard_artifacts.Examples, MODEL_KEY: MODEL, BASELINE_MODEL_KEY: MODEL}
    assert {key: channel.type for key, channel in component.outputs.items()} == {
        EVALUATION_KEY: standard_artifacts.ModelEvaluation, BLESSING_KEY: standard_artifacts.ModelBlessing}
    properties = dict(component.exec_properties)
    # TFX stores a proto parameter as JSON (deterministic, for the cache key).
    assert json_format.Parse(properties.pop(EVAL_CONFIG_KEY), tfma.EvalConfig()) == _eval_config()
    assert properties == {EXAMPLE_SPLITS_KEY: "null", SLICE_MARGIN_KEY: 0.04, MIN_SLICE_EXAMPLES_KEY: 40}
    assert component.executor_spec.executor_class is executor.Executor
    assert issubclass(executor.Executor, tfx_evaluator_executor.Executor)
    assert component.id == "GatedEvaluator"
    # No model served yet: no baseline input, the absolute thresholds alone decide.
    assert BASELINE_MODEL_KEY not in _evaluator(baseline_model=None).inputs


@pytest.mark.parametrize("bad", [
    dict(examples=types.Channel(type=MODEL)),
    dict(baseline_model=types.Channel(type=standard_artifacts.PushedModel)),
    dict(slice_margin="0.05"),
    dict(min_slice_examples=None),  # required: no silent "gate on every slice"
])
def test_the_spec_refuses_wrong_types_when_the_pipeline_is_built(bad):
    with pytest.raises(TypeError, match=next(iter(bad))):
        _evaluator(**bad)


def test_every_constructor_argument_is_documented():
    assert (_documented_args(GatedEvaluator.__init__)
            == list(inspect.signature(GatedEvaluator.__init__).parameters)[1:])


def test_the_executor_reads_what_the_spec_declares_when_the_candidate_is_the_served_model(tmp_path):
    """A cached rerun: the baseline is the candidate, so no TFMA run and a NOT_BLESSED blessing."""
    component = _evaluator()
    model = MODEL()
    model.id, model.uri = 7, str(tmp_path / "model")
    artifacts = {EXAMPLES_KEY: [standard_artifacts.Examples()], MODEL_KEY: [model], BASELINE_MODEL_KEY: [model]}
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
    outputs = {EVALUATION_KEY: [evaluation], BLESSING_KEY: [blessing]}
    executor.Executor().Do({key: artifacts[key] for key in component.inputs},
                           {key: outputs[key] for key in component.outputs}, dict(component.exec_properties))
    assert blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY) == constants.NOT_BLESSED_VALUE
    assert blessing.get_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY) == 7
    assert blessing.get_int_custom_property("evaluation_skipped") == 1
    assert "candidate model 7 is the model being served" in blessing.get_string_custom_property(executor.REASON)
    assert (tmp_path / "blessing" / constants.NOT_BLESSED_FILE_NAME).is_file()
    assert not (tmp_path / "evaluation").exists()  # TFMA never ran
