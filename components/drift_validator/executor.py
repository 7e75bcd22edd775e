"""The data gate: blocks the run before Transform/Trainer on schema anomalies or drift.

Inputs are the span's statistics, the schema, ExampleValidator's schema anomalies and, when
ML Metadata has them, the previous span's statistics. Drift uses the comparators declared in the
schema (Jensen-Shannon divergence for numeric features, L-infinity distance for categorical
ones), computed by TFDV. Output: an anomalies artifact holding the drift findings and
`report.txt`; each blocking finding is listed in the error that fails the node.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from pipelines.errors import DataError

log = logging.getLogger(__name__)

SPLIT = "train"
DRIFT_TYPES = ("COMPARATOR_L_INFTY_HIGH", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH")


class DataValidationError(DataError):
    """Raised to fail the node; the message names the span, features and the fix."""


def _load_schema(schema_artifact):
    from tfx.utils import io_utils as tfx_io
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema_file = io_utils.get_only_uri_in_dir(schema_artifact.uri)
    return tfx_io.parse_pbtxt_file(schema_file, schema_pb2.Schema())


def _load_schema_anomalies(anomalies_artifact):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    split_uri = artifact_utils.get_split_uri([anomalies_artifact], SPLIT)
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(io_utils.read_bytes_file(os.path.join(split_uri, "SchemaDiff.pb")))
    return anomalies


def describe(anomalies) -> List[str]:
    """One line per anomalous feature: `feature: what was seen (what was expected)`."""
    lines = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        lines.append(f"{feature}: {info.short_description} -- {info.description}")
    if anomalies.HasField("dataset_anomaly_info"):
        lines.append(f"(dataset): {anomalies.dataset_anomaly_info.description}")
    return lines


def drift_findings(statistics, schema, baseline_statistics):
    """Anomalies from the schema's drift comparators only, plus the measured distances."""
    import tensorflow_data_validation as tfdv

    if baseline_statistics is None:
        return None
    result = tfdv.validate_statistics(statistics, schema, previous_statistics=baseline_statistics)
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    drift_only = anomalies_pb2.Anomalies()
    drift_only.drift_skew_info.extend(result.drift_skew_info)
    drift_type_values = {anomalies_pb2.AnomalyInfo.Type.Value(t) for t in DRIFT_TYPES}
    for feature, info in result.anomaly_info.items():
        if any(reason.type in drift_type_values for reason in info.reason):
            drift_only.anomaly_info[feature].CopyFrom(info)
    return drift_only


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        from tensorflow_metadata.proto.v0 import anomalies_pb2

        statistics_artifact = artifact_utils.get_single_instance(input_dict["statistics"])
        statistics = stats_artifact_utils.load_statistics(statistics_artifact, SPLIT).proto()
        schema = _load_schema(artifact_utils.get_single_instance(input_dict["schema"]))
        schema_anomalies = _load_schema_anomalies(artifact_utils.get_single_instance(input_dict["schema_anomalies"]))
        span = exec_properties.get("span_label") or str(statistics_artifact.get_int_custom_property("span"))

        previous = input_dict.get("previous_statistics") or []
        baseline = stats_artifact_utils.load_statistics(previous[0], SPLIT).proto() if previous else None
        drift = drift_findings(statistics, schema, baseline) or anomalies_pb2.Anomalies()
        warn_only = set(filter(None, (exec_properties.get("warn_only_features") or "").split(",")))

        output = artifact_utils.get_single_instance(output_dict["anomalies"])
        output.split_names = artifact_utils.encode_split_names([SPLIT])
        split_uri = artifact_utils.get_split_uri([output], SPLIT)
        io_utils.write_bytes_file(os.path.join(split_uri, "SchemaDiff.pb"), drift.SerializeToString())

        schema_lines = describe(schema_anomalies)
        drift_lines = [line for line in describe(drift) if line.split(":", 1)[0] not in warn_only]
        warned = [line for line in describe(drift) if line.split(":", 1)[0] in warn_only]
        baseline_note = (
            f"drift checked against span {previous[0].get_int_custom_property('span') or previous[0].span}"
            if previous else "no earlier span in ML Metadata: drift check skipped (first run)"
        )
        report = [f"span {span}: {baseline_note}"]
        report += [f"schema anomaly  {line}" for line in schema_lines]
        report += [f"drift           {line}" for line in drift_lines]
        report += [f"drift (warn)    {line}" for line in warned]
        io_utils.write_string_file(os.path.join(output.uri, "report.txt"), "\n".join(report) + "\n")
        output.set_int_custom_property("schema_anomaly_count", len(schema_lines))
        output.set_int_custom_property("drift_anomaly_count", len(drift_lines))
        output.set_int_custom_property("blocked", int(bool(schema_lines or drift_lines)))
        for line in warned:
            log.warning("drift allowed by warn setting: %s", line)
        if schema_lines or drift_lines:
            problems = "; ".join(schema_lines + drift_lines)
            raise DataValidationError(
                f"span {span} blocked before training: {problems}",
                "fix the data producer and rerun, or accept the change by updating schemas/taxi/schema.pbtxt",
            )
        log.info("span %s passed validation (%s)", span, baseline_note)
