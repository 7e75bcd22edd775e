"""Spec of the raw-file gate: the span folder + the schema in, a report (ExampleAnomalies) out."""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.span_check import executor


class SpanCheckSpec(types.ComponentSpec):
    PARAMETERS = {
        "input_base": component_spec.ExecutionParameter(type=str),
        "span_date": component_spec.ExecutionParameter(type=str),
        "max_duplicate_fraction": component_spec.ExecutionParameter(type=float, optional=True),
        # Changes whenever a file of the span changes, so a cached verdict never outlives its data.
        "fingerprint": component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "schema": component_spec.ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {
        "report": component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class SpanCheck(base_component.BaseComponent):
    """Checks the span's raw CSV files (see executor.py); blocks the run through the node runner."""

    SPEC_CLASS = SpanCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, schema: types.BaseChannel, input_base: str, span_date: str,
                 max_duplicate_fraction: float = 0.05, fingerprint: str = ""):
        super().__init__(
            spec=SpanCheckSpec(
                schema=schema,
                input_base=input_base,
                span_date=span_date,
                max_duplicate_fraction=max_duplicate_fraction,
                fingerprint=fingerprint,
                report=types.Channel(type=standard_artifacts.ExampleAnomalies),
            )
        )
