"""The DriftValidator's spec: keys named once, artifact types, defaults, executor, refused arguments.

Key values are ML Metadata keys of existing runs (and cache keys): the literal strings here pin
them, so renaming a constant's value fails a test instead of orphaning old artifacts.
"""

import inspect
import re

import pytest
from tfx import types
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.standard_component_specs import ANOMALIES_KEY, SCHEMA_KEY, STATISTICS_KEY

from components import verdict
from components.drift_validator import executor
from components.drift_validator.component import DriftValidator, DriftValidatorSpec
from components.drift_validator.spec import (PREVIOUS_STATISTICS_KEY, SCHEMA_ANOMALIES_KEY, SERVED_STATISTICS_KEY,
                                             SPAN_LABEL_KEY, WARN_ONLY_FEATURES_KEY)

STATS, SCHEMA = standard_artifacts.ExampleStatistics, standard_artifacts.Schema
ANOMALIES = standard_artifacts.ExampleAnomalies


def _channels(**overrides) -> dict:
    channels = dict(statistics=types.Channel(type=STATS), schema=types.Channel(type=SCHEMA),
                    schema_anomalies=types.Channel(type=ANOMALIES))
    return {**channels, **overrides}


def _documented_args(function) -> list:
    """Argument names of the `Args:` section of a Google-style docstring, in order."""
    return re.findall(r"^  (\w+):", inspect.getdoc(function).split("\nArgs:\n", 1)[1], re.M)


def test_spec_keys_are_the_constants_and_keep_their_ml_metadata_names():
    assert (set(DriftValidatorSpec.INPUTS)
            == {STATISTICS_KEY, SCHEMA_KEY, SCHEMA_ANOMALIES_KEY, PREVIOUS_STATISTICS_KEY, SERVED_STATISTICS_KEY}
            == {"statistics", "schema", "schema_anomalies", "previous_statistics", "served_statistics"})
    assert set(DriftValidatorSpec.OUTPUTS) == {ANOMALIES_KEY} == {"anomalies"}
    assert set(DriftValidatorSpec.PARAMETERS) == {SPAN_LABEL_KEY, WARN_ONLY_FEATURES_KEY} == {"span_label",
                                                                                              "warn_only_features"}
    # The executor's baselines are the spec's optional inputs.
    assert {key for _, key, _ in executor.BASELINES} == {PREVIOUS_STATISTICS_KEY, SERVED_STATISTICS_KEY}
    assert all(DriftValidatorSpec.is_optional_input(key) for _, key, _ in executor.BASELINES)


def test_the_component_has_typed_channels_default_properties_and_its_executor():
    both = _channels(previous_statistics=types.Channel(type=STATS), served_statistics=types.Channel(type=STATS))
    component = DriftValidator(**both)
    assert {key: channel.type for key, channel in component.inputs.items()} == {
        STATISTICS_KEY: STATS, SCHEMA_KEY: SCHEMA, SCHEMA_ANOMALIES_KEY: ANOMALIES,
        PREVIOUS_STATISTICS_KEY: STATS, SERVED_STATISTICS_KEY: STATS}
    assert component.outputs[ANOMALIES_KEY].type is ANOMALIES
    assert component.exec_properties == {SPAN_LABEL_KEY: "", WARN_ONLY_FEATURES_KEY: ""}
    assert component.executor_spec.executor_class is executor.Executor
    assert component.id == "DriftValidator"
    # Without baselines the optional inputs are simply absent (the first run).
    assert set(DriftValidator(**_channels()).inputs) == {STATISTICS_KEY, SCHEMA_KEY, SCHEMA_ANOMALIES_KEY}
    # The feature list reaches the executor as one comma-separated string property.
    warned = DriftValidator(**_channels(), span_label="2026-11-23", warn_only_features=("company", "fare"))
    assert warned.exec_properties == {SPAN_LABEL_KEY: "2026-11-23", WARN_ONLY_FEATURES_KEY: "company,fare"}


@pytest.mark.parametrize("bad", [
    dict(statistics=types.Channel(type=standard_artifacts.Examples)),
    dict(schema_anomalies=types.Channel(type=STATS)),  # ExampleValidator's output, not statistics
    dict(previous_statistics=types.Channel(type=ANOMALIES)),
    dict(schema=None),  # required
    dict(span_label=20261123),
])
def test_the_spec_refuses_wrong_types_when_the_pipeline_is_built(bad):
    with pytest.raises(TypeError, match=next(iter(bad))):
        DriftValidator(**_channels(**bad))


def test_every_constructor_argument_is_documented():
    assert (_documented_args(DriftValidator.__init__)
            == list(inspect.signature(DriftValidator.__init__).parameters)[1:])


# ------------------------------------------------- the executor, driven by the built component

def _artifact(artifact_type, uri, split_file=None, content=b""):
    artifact = artifact_type()
    artifact.uri = str(uri)
    if split_file:
        artifact.split_names = artifact_utils.encode_split_names(["train"])
        (uri / "Split-train").mkdir(parents=True)
        (uri / "Split-train" / split_file).write_bytes(content)
    return artifact


@pytest.fixture(scope="module")
def gate_inputs(tmp_path_factory):
    """Statistics of a span (company 50% A) and of a previous span (90% A), a schema with a 0.1
    L-infinity threshold on company, and ExampleValidator's (empty) anomalies."""
    import pandas as pd
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    tmp = tmp_path_factory.mktemp("drift")
    today = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"company": ["A"] * 50 + ["B"] * 50}))
    before = tfdv.generate_statistics_from_dataframe(pd.DataFrame({"company": ["A"] * 90 + ["B"] * 10}))
    schema = tfdv.infer_schema(before)
    tfdv.get_feature(schema, "company").drift_comparator.infinity_norm.threshold = 0.1
    (tmp / "schema").mkdir()
    tfdv.write_schema_text(schema, str(tmp / "schema" / "schema.pbtxt"))
    return {
        STATISTICS_KEY: [_artifact(STATS, tmp / "today", "FeatureStats.pb", today.SerializeToString())],
        SCHEMA_KEY: [_artifact(SCHEMA, tmp / "schema")],
        SCHEMA_ANOMALIES_KEY: [_artifact(ANOMALIES, tmp / "anomalies", "SchemaDiff.pb",
                                         anomalies_pb2.Anomalies().SerializeToString())],
        PREVIOUS_STATISTICS_KEY: [_artifact(STATS, tmp / "before", "FeatureStats.pb", before.SerializeToString())],
    }


@pytest.mark.parametrize("warn_only_features, blocked", [((), 1), (("company",), 0)])
def test_the_executor_reads_what_the_spec_declares(gate_inputs, tmp_path, warn_only_features, blocked):
    component = DriftValidator(**_channels(previous_statistics=types.Channel(type=STATS)),
                               span_label="2026-11-23", warn_only_features=warn_only_features)
    assert set(gate_inputs) == set(component.inputs)
    output = ANOMALIES()
    output.uri = str(tmp_path / "gate")
    executor.Executor().Do(gate_inputs, {key: [output] for key in component.outputs}, dict(component.exec_properties))
    assert output.get_float_custom_property("drift:company") == pytest.approx(0.4)  # 0.9 - 0.5 of A
    assert output.get_int_custom_property(verdict.BLOCKED) == blocked
    assert output.get_int_custom_property("drift_warning_count") == 1 - blocked
    assert output.get_string_custom_property(verdict.SPAN_DATE) == "2026-11-23"
    report = (tmp_path / "gate" / "report.txt").read_text()
    assert "the served model's training data: none in ML Metadata yet" in report, report
    assert (tmp_path / "gate" / "Split-train" / "SchemaDiff.pb").is_file()
