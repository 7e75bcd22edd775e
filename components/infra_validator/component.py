"""Spec of our InfraValidator: stock InfraValidator's channels, the project's model server as the
serving binary, and the Evaluator's blessing as an optional input."""

from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.standard_component_specs import BLESSING_KEY, EXAMPLES_KEY, MODEL_KEY

from components.infra_validator import executor
from components.infra_validator.spec import (DEFAULT_NUM_EXAMPLES, DEFAULT_TIMEOUT_SECONDS, MODEL_BLESSING_KEY,
                                             MODEL_NAME_KEY, NUM_EXAMPLES_KEY, REQUIRED_SIGNATURES_KEY,
                                             TIMEOUT_SECONDS_KEY)


class InfraValidatorSpec(types.ComponentSpec):
    """InfraValidator component spec (keys: components/infra_validator/spec.py)."""

    PARAMETERS = {
        MODEL_NAME_KEY: component_spec.ExecutionParameter(type=str),
        REQUIRED_SIGNATURES_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        NUM_EXAMPLES_KEY: component_spec.ExecutionParameter(type=int, optional=True),
        TIMEOUT_SECONDS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
        MODEL_BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
    }
    OUTPUTS = {
        BLESSING_KEY: component_spec.ChannelParameter(type=standard_artifacts.InfraBlessing),
    }


class InfraValidator(base_component.BaseComponent):
    """Serves the candidate in the project's own model server and calls every signature before a push.

    Starts a throwaway `mlops serve` (the server `make up` runs, in a process of its own, on free
    ports on 127.0.0.1) over a model directory holding only the candidate as version 1, waits for
    it to be AVAILABLE, sends `num_examples` rows of the eval split through every signature the
    server exposes over REST `:predict` and gRPC `Predict`, checks each answer (OK, one output row
    per row sent), then stops the server. Writes TFX's `InfraBlessing`; the AtomicPusher pushes
    nothing without it.

    Why not stock TFX's InfraValidator: it starts TensorFlow Serving in Docker or Kubernetes, and
    neither runs here; the project serves with its own TF-Serving-compatible server, and that is
    the code a candidate must load in. A candidate the Evaluator did not bless is not served at
    all (recorded as "not blessed by the Evaluator"): an unblessed night costs nothing more.

    ## Example
    ```
    infra_validator = InfraValidator(
        model=trainer.outputs["model"],
        examples=example_gen.outputs["examples"],
        model_blessing=evaluator.outputs["blessing"],
        model_name="taxi",
        required_signatures=["serving_default", "serving_features"],
    )
    ```

    Component `outputs` contains:
     - `blessing`: Channel of type `standard_artifacts.InfraBlessing`: an INFRA_BLESSED or
       INFRA_NOT_BLESSED file and `blessed` 1/0 (as TFX's InfraValidator writes them), `reason`
       (what failed: the server's load error, the signature and API that answered wrongly), the
       timings (`server_start_seconds`, `requests_seconds`, `validation_seconds`) and the
       signatures served; the server's log as `server.log` in its folder.
    """

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel,
        model_name: str,
        model_blessing: Optional[types.BaseChannel] = None,
        required_signatures: Sequence[str] = (),
        num_examples: int = DEFAULT_NUM_EXAMPLES,
        timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
    ):
        """Construct an InfraValidator component.

        Args:
          model: A BaseChannel of type `standard_artifacts.Model`: the candidate (Trainer's `model`).
          examples: A BaseChannel of type `standard_artifacts.Examples` (ExampleGen's `examples`,
            as the Evaluator gets them); the first rows of its `eval` split become the requests.
          model_name: The name the throwaway server serves the candidate under (in URLs and gRPC
            model specs), as production names it.
          model_blessing: An optional BaseChannel of type `standard_artifacts.ModelBlessing` (the
            GatedEvaluator's `blessing`). When it says not blessed, no server starts and the
            verdict is "not blessed by the Evaluator".
          required_signatures: Signatures clients call: the candidate is not blessed when the
            server does not expose one of them. Every signature it exposes is called either way.
          num_examples: Rows of the eval split sent in each request.
          timeout_seconds: Longest wait for the server to make the candidate AVAILABLE.
        """
        if isinstance(required_signatures, str):
            raise TypeError(f"required_signatures must be a list of names, not the string {required_signatures!r}")
        super().__init__(
            spec=InfraValidatorSpec(
                model=model,
                examples=examples,
                model_blessing=model_blessing,
                model_name=model_name,
                required_signatures=",".join(required_signatures),
                num_examples=int(num_examples),
                timeout_seconds=int(timeout_seconds),
                blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            )
        )
