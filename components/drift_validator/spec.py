"""The DriftValidator's input, output and execution-property keys, each named once.

Both the ComponentSpec (component.py) and the executor (executor.py) use these names, as TFX's
components share `tfx.types.standard_component_specs`. The keys it shares with stock TFX's
ExampleValidator are TFX's own constants: `statistics` (STATISTICS_KEY), `schema` (SCHEMA_KEY)
and the output `anomalies` (ANOMALIES_KEY). The values are ML Metadata keys of existing runs and
caches: never change one.
"""

# Inputs: ExampleValidator's anomalies of this span, and the two optional drift baselines.
SCHEMA_ANOMALIES_KEY = "schema_anomalies"
PREVIOUS_STATISTICS_KEY = "previous_statistics"  # the newest earlier span that passed this gate
SERVED_STATISTICS_KEY = "served_statistics"  # the data that trained the model being served

# Execution properties.
SPAN_LABEL_KEY = "span_label"  # ISO date naming the span in findings ("" = from the statistics)
WARN_ONLY_FEATURES_KEY = "warn_only_features"  # comma-separated: their drift warns, never blocks
