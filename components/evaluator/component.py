"""Stock Evaluator inputs and outputs, plus the slice guard's parameters."""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import component_spec, standard_artifacts, standard_component_specs

from components.evaluator import executor


class GatedEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    PARAMETERS = {
        **standard_component_specs.EvaluatorSpec.PARAMETERS,
        # Largest loss of the headline metric allowed on any monitored slice vs the served model.
        "slice_margin": component_spec.ExecutionParameter(type=float),
        # Slices with fewer evaluation examples are too noisy to gate on.
        "min_slice_examples": component_spec.ExecutionParameter(type=int),
    }


class GatedEvaluator(base_beam_component.BaseBeamComponent):
    """Evaluator that guards monitored slices, skips self-comparison and explains its decision."""

    SPEC_CLASS = GatedEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        eval_config,
        slice_margin: float,
        min_slice_examples: int,
        baseline_model: Optional[types.BaseChannel] = None,
    ):
        super().__init__(
            spec=GatedEvaluatorSpec(
                examples=examples,
                model=model,
                baseline_model=baseline_model,
                eval_config=eval_config,
                example_splits="null",
                slice_margin=slice_margin,
                min_slice_examples=min_slice_examples,
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
