"""The SpanCheck's spec: keys named once, artifact types, defaults, executor, refused arguments.

Key values are ML Metadata keys of existing runs (and cache keys): the literal strings here pin
them, so renaming a constant's value fails a test instead of orphaning old artifacts.
"""

import hashlib
import inspect
import json
import re

import pytest
from tfx import types
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import INPUT_BASE_KEY, SCHEMA_KEY

from components import verdict
from components.span_check import executor
from components.span_check.component import SpanCheck, SpanCheckSpec
from components.span_check.spec import (DEFAULT_MAX_DUPLICATE_FRACTION, FINGERPRINT_KEY, INPUT_FILES,
                                        MAX_DUPLICATE_FRACTION_KEY, REPORT_KEY, SPAN_DATE_KEY)

SCHEMA = """
feature { name: "fare" type: FLOAT presence { min_fraction: 1.0 } }
feature { name: "company" type: BYTES presence { min_fraction: 0.0 } }
"""


def _span_check(**overrides) -> SpanCheck:
    args = dict(schema=types.Channel(type=standard_artifacts.Schema), input_base="/data/incoming",
                span_date="2026-11-23")
    return SpanCheck(**{**args, **overrides})


def _documented_args(function) -> list:
    """Argument names of the `Args:` section of a Google-style docstring, in order."""
    return re.findall(r"^  (\w+):", inspect.getdoc(function).split("\nArgs:\n", 1)[1], re.M)


def test_spec_keys_are_the_constants_and_keep_their_ml_metadata_names():
    assert set(SpanCheckSpec.INPUTS) == {SCHEMA_KEY} == {"schema"}
    assert set(SpanCheckSpec.OUTPUTS) == {REPORT_KEY} == {"report"}
    assert (set(SpanCheckSpec.PARAMETERS)
            == {INPUT_BASE_KEY, SPAN_DATE_KEY, MAX_DUPLICATE_FRACTION_KEY, FINGERPRINT_KEY}
            == {"input_base", "span_date", "max_duplicate_fraction", "fingerprint"})


def test_the_component_has_typed_channels_default_properties_and_its_executor():
    component = _span_check()
    assert component.inputs[SCHEMA_KEY].type is standard_artifacts.Schema
    assert component.outputs[REPORT_KEY].type is standard_artifacts.ExampleAnomalies
    assert component.exec_properties == {INPUT_BASE_KEY: "/data/incoming", SPAN_DATE_KEY: "2026-11-23",
                                         MAX_DUPLICATE_FRACTION_KEY: 0.05, FINGERPRINT_KEY: ""}
    assert DEFAULT_MAX_DUPLICATE_FRACTION == 0.05
    assert component.executor_spec.executor_class is executor.Executor
    assert component.id == "SpanCheck"  # the node id in the DAG and the Airflow task


@pytest.mark.parametrize("bad", [
    dict(schema=types.Channel(type=standard_artifacts.Examples)),  # a channel of another type
    dict(schema=None),  # the schema is required
    dict(max_duplicate_fraction="5%"),
    dict(span_date=20261123),
])
def test_the_spec_refuses_wrong_types_when_the_pipeline_is_built(bad):
    with pytest.raises(TypeError, match=next(iter(bad))):
        _span_check(**bad)


def test_every_constructor_argument_is_documented():
    assert _documented_args(SpanCheck.__init__) == list(inspect.signature(SpanCheck.__init__).parameters)[1:]


def _schema_artifact(tmp_path):
    schema = standard_artifacts.Schema()
    schema.uri = str(tmp_path / "schema")
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "schema.pbtxt").write_text(SCHEMA)
    return schema


@pytest.mark.parametrize("max_duplicate_fraction, blocked", [(None, 1), (0.5, 0)])
def test_the_executor_reads_what_the_spec_declares(tmp_path, max_duplicate_fraction, blocked):
    """The built component's own exec properties and keys drive the executor (1 duplicate of 3 rows)."""
    (tmp_path / "incoming" / "2026-11-23").mkdir(parents=True)
    (tmp_path / "incoming" / "2026-11-23" / "data.csv").write_text("fare,company\n1.5,A\n1.5,A\n2,B\n")
    limit = {} if max_duplicate_fraction is None else dict(max_duplicate_fraction=max_duplicate_fraction)
    component = _span_check(input_base=str(tmp_path / "incoming"), **limit)
    report = standard_artifacts.ExampleAnomalies()
    report.uri = str(tmp_path / "report")
    executor.Executor().Do({key: [_schema_artifact(tmp_path)] for key in component.inputs},
                           {key: [report] for key in component.outputs}, dict(component.exec_properties))
    assert (report.get_int_custom_property("rows"), report.get_int_custom_property("duplicate_rows")) == (3, 1)
    data = (tmp_path / "incoming" / "2026-11-23" / "data.csv").read_bytes()
    assert json.loads(report.get_string_custom_property(INPUT_FILES)) == [
        {"name": "data.csv", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "rows": 3}]
    assert report.get_int_custom_property(verdict.BLOCKED) == blocked
    assert report.get_string_custom_property(verdict.SPAN_DATE) == "2026-11-23"
    assert (tmp_path / "report" / "report.txt").read_text().startswith("span 2026-11-23: 1 file(s), 3 rows")
