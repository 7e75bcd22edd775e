"""Spec of the drift gate: statistics + schema + schema anomalies (+ two baseline statistics) in."""

from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.drift_validator import executor


class DriftValidatorSpec(types.ComponentSpec):
    PARAMETERS = {
        "span_label": component_spec.ExecutionParameter(type=str, optional=True),
        # Comma-separated features whose drift only warns.
        "warn_only_features": component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "statistics": component_spec.ChannelParameter(type=standard_artifacts.ExampleStatistics),
        "schema": component_spec.ChannelParameter(type=standard_artifacts.Schema),
        "schema_anomalies": component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        "previous_statistics": component_spec.ChannelParameter(
            type=standard_artifacts.ExampleStatistics, optional=True
        ),
        # Statistics of the data that trained the model being served (lineage from the newest push).
        "served_statistics": component_spec.ChannelParameter(
            type=standard_artifacts.ExampleStatistics, optional=True
        ),
    }
    OUTPUTS = {
        "anomalies": component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class DriftValidator(base_component.BaseComponent):
    """Records schema anomalies and per-feature drift; the node runner blocks the run on them."""

    SPEC_CLASS = DriftValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        statistics: types.BaseChannel,
        schema: types.BaseChannel,
        schema_anomalies: types.BaseChannel,
        previous_statistics: Optional[types.BaseChannel] = None,
        served_statistics: Optional[types.BaseChannel] = None,
        span_label: str = "",
        warn_only_features: Sequence[str] = (),
    ):
        super().__init__(
            spec=DriftValidatorSpec(
                statistics=statistics,
                schema=schema,
                schema_anomalies=schema_anomalies,
                previous_statistics=previous_statistics,
                served_statistics=served_statistics,
                span_label=span_label,
                warn_only_features=",".join(warn_only_features),
                anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies),
            )
        )
