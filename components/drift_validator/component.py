"""Spec of the drift gate: statistics + schema + schema anomalies (+ two baseline statistics) in."""

from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.standard_component_specs import ANOMALIES_KEY, SCHEMA_KEY, STATISTICS_KEY

from components.drift_validator import executor
from components.drift_validator.spec import (PREVIOUS_STATISTICS_KEY, SCHEMA_ANOMALIES_KEY, SERVED_STATISTICS_KEY,
                                             SPAN_LABEL_KEY, WARN_ONLY_FEATURES_KEY)


class DriftValidatorSpec(types.ComponentSpec):
    """DriftValidator component spec (keys: components/drift_validator/spec.py)."""

    PARAMETERS = {
        SPAN_LABEL_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        # Comma-separated features whose drift only warns.
        WARN_ONLY_FEATURES_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        STATISTICS_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleStatistics),
        SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema),
        SCHEMA_ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        PREVIOUS_STATISTICS_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ExampleStatistics, optional=True
        ),
        # Statistics of the data that trained the model being served (lineage from the newest push).
        SERVED_STATISTICS_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ExampleStatistics, optional=True
        ),
    }
    OUTPUTS = {
        ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class DriftValidator(base_component.BaseComponent):
    """Blocks a span whose data breaks the schema or drifted from the served model's data.

    Turns ExampleValidator's schema anomalies into blocking findings and measures, per feature,
    the drift of the span's statistics from two baselines: the statistics of the data that
    trained the model being served, and those of the newest earlier span that passed this gate.
    A feature drifts when its distance to either baseline passes the threshold the schema
    declares for it (`drift_comparator`); drift of a feature in `warn_only_features` only warns.

    Why it exists: stock TFX's ExampleValidator checks a span against the schema only, not for
    drift, and its DistributionValidator needs exactly one baseline, which the pipeline has to
    find and which the first run does not have. TFDV's Jensen-Shannon divergence of equal-width
    histograms also turns a heavy-tailed numeric feature into noise (`quantile_js_divergence`
    in executor.py). This gate takes both baselines as found in ML Metadata (the pipeline's
    resolvers), passes the first run and says so, measures numeric drift on the baseline's
    quantiles, and records a verdict that the node runner stops the run on, before Transform.

    ## Example
    ```
    drift_validator = DriftValidator(
        statistics=statistics_gen.outputs["statistics"],
        schema=schema_gen.outputs["schema"],
        schema_anomalies=example_validator.outputs["anomalies"],
        previous_statistics=previous_statistics.outputs["statistics"],
        served_statistics=served_statistics.outputs["statistics"],
        span_label=config.span_date.isoformat(),
        warn_only_features=config.data_gates.warn_features,
    )
    transform.add_upstream_node(drift_validator)
    ```

    Component `outputs` contains:
     - `anomalies`: Channel of type `standard_artifacts.ExampleAnomalies`: the drift anomalies
       (`train/SchemaDiff.pb`), the verdict and per-feature distances as custom properties,
       and `report.txt` and `report.html` in its folder.
    """

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
        """Construct a DriftValidator component.

        Args:
          statistics: A BaseChannel of type `standard_artifacts.ExampleStatistics`: the span's
            statistics (StatisticsGen's, with fine quantile histograms: see QUANTILE_BUCKETS in
            executor.py). Its `train` split is read.
          schema: A BaseChannel of type `standard_artifacts.Schema`: the drift comparators and
            thresholds per feature.
          schema_anomalies: A BaseChannel of type `standard_artifacts.ExampleAnomalies`:
            ExampleValidator's anomalies of the same statistics against the same schema.
          previous_statistics: An optional BaseChannel of type
            `standard_artifacts.ExampleStatistics`: the newest earlier span that passed this
            gate. When it resolves to nothing (the first run), that check is skipped.
          served_statistics: An optional BaseChannel of type
            `standard_artifacts.ExampleStatistics`: the data that trained the model being served
            (lineage from the newest push). When it resolves to nothing, that check is skipped.
          span_label: The span's ISO date, used in findings and fixes; "" takes it from the
            statistics artifact's `span` property.
          warn_only_features: Names of features whose drift warns instead of blocking (passed
            to the executor comma-separated).
        """
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
