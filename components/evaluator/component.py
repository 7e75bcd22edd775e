"""Stock Evaluator inputs and outputs, plus the slice guard's parameters."""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import component_spec, standard_artifacts, standard_component_specs

from components.evaluator import executor
from components.evaluator.spec import MIN_SLICE_EXAMPLES_KEY, SLICE_MARGIN_KEY


class GatedEvaluatorSpec(standard_component_specs.EvaluatorSpec):
    """Stock EvaluatorSpec plus the slice guard's keys (components/evaluator/spec.py)."""

    PARAMETERS = {
        **standard_component_specs.EvaluatorSpec.PARAMETERS,
        # Largest loss of the headline metric allowed on any monitored slice vs the served model.
        SLICE_MARGIN_KEY: component_spec.ExecutionParameter(type=float),
        # Slices with fewer evaluation examples are too noisy to gate on.
        MIN_SLICE_EXAMPLES_KEY: component_spec.ExecutionParameter(type=int),
    }


class GatedEvaluator(base_beam_component.BaseBeamComponent):
    """TFX's Evaluator, plus a slice guard, no self-comparison and a readable reason.

    Evaluates the candidate model with TFMA against the model being served (`baseline_model`),
    exactly as stock TFX's Evaluator does with `eval_config`'s thresholds, then adds what stock
    TFX lacks:

    - a slice guard: no monitored slice with at least `min_slice_examples` evaluation examples
      may lose more than `slice_margin` of the headline metric (AUC) against the served model.
      TFMA's per-slice thresholds cannot say "only slices with at least N examples";
    - no self-comparison: when the baseline *is* the candidate (a rerun whose Trainer came from
      the cache), it records "not blessed" with that reason and skips TFMA, the bulk of a
      no-change rerun's cost;
    - a `reason` custom property on the blessing: which thresholds failed on which slices, or
      what the candidate passed against.

    ## Example
    ```
    evaluator = GatedEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=served_model.outputs["model"],
        eval_config=_eval_config(config),
        slice_margin=config.gates.slice_margin,
        min_slice_examples=config.gates.min_slice_examples,
    )
    ```

    Component `outputs` contains (as stock TFX's Evaluator):
     - `evaluation`: Channel of type `standard_artifacts.ModelEvaluation`: TFMA's results (empty
       when the evaluation was skipped).
     - `blessing`: Channel of type `standard_artifacts.ModelBlessing`: blessed or not, with
       `reason` (and `evaluation_skipped` when the candidate was the served model).
    """

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
        """Construct a GatedEvaluator component.

        Args:
          examples: A BaseChannel of type `standard_artifacts.Examples` (ExampleGen's
            `examples`); its `eval` split is evaluated (`example_splits` stays TFX's default).
          model: A BaseChannel of type `standard_artifacts.Model`: the candidate (Trainer's
            `model`).
          eval_config: A `tfma.EvalConfig`: model specs, slicing specs, metrics and the
            thresholds that decide the blessing, as for stock TFX's Evaluator.
          slice_margin: The largest loss of the headline metric (AUC) a monitored slice may
            show against the served model, in absolute metric units (0.05 = 5 AUC points).
          min_slice_examples: Slices with fewer evaluation examples than this are not gated
            (too noisy).
          baseline_model: An optional BaseChannel of type `standard_artifacts.Model`: the model
            being served. When it resolves to nothing (no push yet), only the absolute
            thresholds of `eval_config` decide and the slice guard is off.
        """
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
