"""Spec of the raw-file gate: the span folder + the schema in, a report (ExampleAnomalies) out."""

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.standard_component_specs import INPUT_BASE_KEY, SCHEMA_KEY

from components.span_check import executor
from components.span_check.spec import (DEFAULT_MAX_DUPLICATE_FRACTION, FINGERPRINT_KEY, MAX_DUPLICATE_FRACTION_KEY,
                                        REPORT_KEY, SPAN_DATE_KEY)


class SpanCheckSpec(types.ComponentSpec):
    """SpanCheck component spec (keys: components/span_check/spec.py)."""

    PARAMETERS = {
        INPUT_BASE_KEY: component_spec.ExecutionParameter(type=str),
        SPAN_DATE_KEY: component_spec.ExecutionParameter(type=str),
        MAX_DUPLICATE_FRACTION_KEY: component_spec.ExecutionParameter(type=float, optional=True),
        # Changes whenever a file of the span changes, so a cached verdict never outlives its data.
        FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema),
    }
    OUTPUTS = {
        REPORT_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class SpanCheck(base_component.BaseComponent):
    """Checks a span's raw CSV files against the schema before ExampleGen parses them.

    Reads every `*.csv` file of `<input_base>/<span_date>/` once and records one finding per
    problem, naming the file, line and column: no files or an empty file, bytes that are not
    UTF-8, header columns the schema requires or does not know, rows with the wrong number of
    fields, text in numeric columns, and more duplicate rows than `max_duplicate_fraction`.

    Why it exists: stock TFX has no gate before ExampleGen. CsvExampleGen fails on a malformed
    row or undecodable bytes with a Beam traceback that names neither the file nor the column,
    and nothing in TFX looks for a flood of duplicate rows.

    The node always completes and publishes its report, so the verdict is in ML Metadata
    (`components.verdict`); the node runner then stops the run when a finding blocks, before
    ExampleGen (which the pipeline makes depend on this node) runs.

    ## Example
    ```
    span_check = SpanCheck(
        schema=schema_gen.outputs["schema"],
        input_base=config.data_root,
        span_date=config.span_date.isoformat(),
        max_duplicate_fraction=config.data_gates.max_duplicate_fraction,
        fingerprint=config.span_fingerprint,
    )
    example_gen.add_upstream_node(span_check)
    ```

    Component `outputs` contains:
     - `report`: Channel of type `standard_artifacts.ExampleAnomalies` with the verdict and the
       row, file and duplicate counts as custom properties, plus `report.txt` and
       `findings.json` in its folder.
    """

    SPEC_CLASS = SpanCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, schema: types.BaseChannel, input_base: str, span_date: str,
                 max_duplicate_fraction: float = DEFAULT_MAX_DUPLICATE_FRACTION, fingerprint: str = ""):
        """Construct a SpanCheck component.

        Args:
          schema: A BaseChannel of type `standard_artifacts.Schema` (ImportSchemaGen's
            `schema`): the columns, their types and which ones every row must have.
          input_base: The data root: one folder per day (`YYYY-MM-DD/`) of CSV files, as
            CsvExampleGen's `input_base`.
          span_date: The span to check, as an ISO date (`2026-11-23`): the folder under
            `input_base`.
          max_duplicate_fraction: The largest fraction of the span's rows that may be exact
            duplicates of another row before the span blocks (0.05 = 5%).
          fingerprint: Anything that changes when a file of the span changes (the pipeline
            passes the files' names, sizes and mtimes): part of the cache key, so a cached
            verdict never outlives its data. Not read by the executor.
        """
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
