"""The data gate after statistics: schema anomalies + drift against two baselines.

Inputs: the span's statistics, the schema, ExampleValidator's schema anomalies and, when ML
Metadata has them, two baselines:

- `served_statistics`: statistics of the data that trained the model being served now, found
  through lineage from the newest push (pipelines/resolvers.py);
- `previous_statistics`: statistics of the newest earlier span that passed this gate.

Drift uses the comparators the schema declares per feature (Jensen-Shannon divergence for
numeric features, L-infinity distance for categorical ones), computed by TFDV against each
baseline; a feature drifts when either distance passes its threshold. Features named in the
`warn_only_features` setting drift with a warning instead of blocking.

Output (always published, so ML Metadata keeps it): an ExampleAnomalies artifact with the drift
anomalies (`train/SchemaDiff.pb`), `report.txt`, `report.html`, the verdict
(`components.verdict`) and per-feature distances as custom properties (`drift_distances` JSON,
plus `drift:<feature>` floats). The first run has no baseline: it passes and says so.
"""

from __future__ import annotations

import html
import json
import logging
import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import ANOMALIES_KEY, SCHEMA_KEY, STATISTICS_KEY
from tfx.utils import io_utils

from components import verdict
from components.drift_validator.spec import (PREVIOUS_STATISTICS_KEY, SCHEMA_ANOMALIES_KEY, SERVED_STATISTICS_KEY,
                                             SPAN_LABEL_KEY, WARN_ONLY_FEATURES_KEY)
from components.util.schemas import load_schema
from components.util.spans import span_date_of
from components.verdict import fix_or_accept

log = logging.getLogger(__name__)

SPLIT = "train"
GATE = "drift_validator"
# Numeric drift: JS divergence over this many baseline-quantile bins (+1 for missing values);
# StatisticsGen computes QUANTILE_BUCKETS-bucket quantile histograms so ties (fares of exactly
# 3.25, trips of 0.0 miles) become exact point masses instead of interpolation noise.
JS_BINS = 10
QUANTILE_BUCKETS = 100
DRIFT_DISTANCES = "drift_distances"
# (name in the distances, input key, label in findings), in the order reports list them.
BASELINES = (("served_model_training", SERVED_STATISTICS_KEY, "the served model's training data"),
             ("previous_span", PREVIOUS_STATISTICS_KEY, "the previous good span"))
COMPARATORS = {"JENSEN_SHANNON_DIVERGENCE": ("jensen_shannon_divergence", "Jensen-Shannon divergence"),
               "L_INFTY": ("l_infinity", "L-infinity distance")}


def _load_schema_anomalies(anomalies_artifact):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    split_uri = artifact_utils.get_split_uri([anomalies_artifact], SPLIT)
    anomalies = anomalies_pb2.Anomalies()
    anomalies.ParseFromString(io_utils.read_bytes_file(os.path.join(split_uri, "SchemaDiff.pb")))
    return anomalies


def schema_findings(anomalies, span_date: str) -> List[dict]:
    """One blocking finding per feature ExampleValidator flagged: what was seen vs expected."""
    findings = []
    for feature, info in sorted(anomalies.anomaly_info.items()):
        findings.append(dict(feature=feature, kind="schema", blocking=True, fix=fix_or_accept(span_date),
                             message=f"{feature}: {info.short_description} -- {info.description}"))
    if anomalies.HasField("dataset_anomaly_info"):
        findings.append(dict(feature="(dataset)", kind="schema", blocking=True, fix=fix_or_accept(span_date),
                             message=f"(dataset): {anomalies.dataset_anomaly_info.description}"))
    return findings


def _feature_stats(statistics) -> Dict[str, Any]:
    return {".".join(f.path.step) or f.name: f for f in statistics.datasets[0].features} if statistics.datasets else {}


def _quantile_cdf(histogram):
    """P(X <= x) from a QUANTILES histogram; equal-edge buckets are point masses (e.g. many 0.0s)."""
    buckets = [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
    total = sum(count for _, _, count in buckets) or 1.0

    def cdf(x: float) -> float:
        mass = 0.0
        for low, high, count in buckets:
            if x >= high:
                mass += count
            elif low < x < high:
                mass += count * (x - low) / (high - low)
        return mass / total

    return cdf


def _quantiles(feature_stats):
    for histogram in feature_stats.num_stats.histograms:
        if histogram.type == histogram.QUANTILES and histogram.buckets:
            return histogram
    return None


def quantile_js_divergence(current, baseline) -> Optional[float]:
    """Jensen-Shannon divergence (log base 2, 0..1) of a numeric feature, on the baseline's deciles.

    TFDV's own JS re-buckets each side's equal-width histogram, which a single long trip (max
    170 miles: 96% of the rows in the first of 10 buckets) turns into noise: two 1500-row
    samples of the same data measured up to 0.23 and doubling trip_miles only 0.26. Here both
    sides are binned at the baseline's quantile edges (distinct values only, so a point mass
    such as the many 0.0 trip_miles is one bin), read off each side's quantile histogram, plus
    one bin for missing values."""
    import math

    base_q, cur_q = _quantiles(baseline), _quantiles(current)
    if base_q is None or cur_q is None:
        return None
    # Decile edges of the baseline, read off its (finer) quantile histogram.
    step = max(1, len(base_q.buckets) // JS_BINS)
    edges = sorted({b.high_value for b in base_q.buckets[step - 1::step]} | {base_q.buckets[0].low_value})

    def masses(stats, histogram) -> List[float]:
        cdf = _quantile_cdf(histogram)
        present = stats.num_stats.common_stats.num_non_missing
        missing = stats.num_stats.common_stats.num_missing
        share = present / (present + missing) if present + missing else 1.0
        points = [0.0] + [cdf(edge) for edge in edges] + [1.0]
        return [share * max(0.0, b - a) for a, b in zip(points, points[1:])] + [1.0 - share]

    p, q = masses(current, cur_q), masses(baseline, base_q)

    def kl(a, m):
        return sum(x * math.log2(x / y) for x, y in zip(a, m) if x > 0 and y > 0)

    m = [(x + y) / 2 for x, y in zip(p, q)]
    return max(0.0, min(1.0, (kl(p, m) + kl(q, m)) / 2))


def measure_drift(statistics, schema, baseline) -> Dict[str, dict]:
    """{feature: {"distance", "threshold", "comparator"}} for every feature with a comparator.

    Categorical features: TFDV's L-infinity distance. Numeric ones: `quantile_js_divergence`
    (TFDV's value only when a side has no quantile histogram)."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    result = tfdv.validate_statistics(statistics, schema, previous_statistics=baseline)
    current_stats, baseline_stats = _feature_stats(statistics), _feature_stats(baseline)
    distances = {}
    for info in result.drift_skew_info:
        feature = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            kind = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(measurement.type)
            comparator, _ = COMPARATORS.get(kind, (kind.lower(), kind))
            value, resolution = measurement.value, None
            if kind == "JENSEN_SHANNON_DIVERGENCE" and feature in current_stats and feature in baseline_stats:
                ours = quantile_js_divergence(current_stats[feature], baseline_stats[feature])
                value = value if ours is None else ours
                resolution = bucket_mismatch(current_stats[feature], baseline_stats[feature])
            distances[feature] = dict(distance=round(value, 6), threshold=measurement.threshold,
                                      comparator=comparator, bucket_mismatch=resolution)
    return distances


def bucket_mismatch(current, baseline) -> Optional[tuple]:
    """(this span's, the baseline's) quantile bucket counts when they differ, else None.

    Statistics made with other StatsOptions (TFDV's default is 10 buckets, StatisticsGen here
    makes QUANTILE_BUCKETS) cannot be compared exactly: a value tie at a quantile edge is split
    between buckets differently at each resolution. Two samples of the same taxi data measured
    0.028 (trip_start_hour) and 0.047 (trip_start_month) at 100 against 10 buckets, over the 0.02
    threshold, but at most 0.003 at equal resolution. Neither coarsening the finer histogram nor
    TFDV's own measure fixed it (0.013, 0.23), so such a measure warns instead of blocking."""
    cur_q, base_q = _quantiles(current), _quantiles(baseline)
    if cur_q is None or base_q is None or len(cur_q.buckets) == len(base_q.buckets):
        return None
    return len(cur_q.buckets), len(base_q.buckets)


def drift_table(statistics, schema, baselines: Dict[str, Any]) -> Dict[str, dict]:
    """Per feature: the distance to each baseline, the largest one, and whether it passes."""
    table: Dict[str, dict] = {}
    for name, baseline in baselines.items():
        for feature, measured in measure_drift(statistics, schema, baseline).items():
            row = table.setdefault(feature, dict(threshold=measured["threshold"], comparator=measured["comparator"],
                                                 per_baseline={}, distance=-1.0, baseline=name))
            row["per_baseline"][name] = measured["distance"]
            if measured["bucket_mismatch"]:
                row.setdefault("bucket_mismatch", {})[name] = measured["bucket_mismatch"]
            if measured["distance"] > row["distance"]:
                row["distance"], row["baseline"] = measured["distance"], name
    for row in table.values():
        row["over"] = row["distance"] > row["threshold"]
        # Only a measure at equal resolution blocks; one against mismatched statistics warns.
        row["blocks"] = any(distance > row["threshold"] for name, distance in row["per_baseline"].items()
                            if name not in row.get("bucket_mismatch", {}))
    return table


def drift_findings(table: Dict[str, dict], warn_only: set, labels: Dict[str, str], span_date: str) -> List[dict]:
    findings = []
    for feature, row in sorted(table.items()):
        if not row["over"]:
            continue
        name = dict(COMPARATORS.values()).get(row["comparator"], row["comparator"])
        message = (f"{feature}: {name} {row['distance']:.3f} from {labels[row['baseline']]} "
                   f"(expected at most {row['threshold']:.2f})")
        warn = feature in warn_only
        if warn:
            message += " -- allowed by the warn setting"
        elif not row["blocks"]:
            ours, theirs = row["bucket_mismatch"][row["baseline"]]
            message += (f" -- not blocking: that baseline's statistics have {theirs} quantile buckets and this "
                        f"span's {ours}, so the measure is approximate (same data measured up to 0.05); it is "
                        "exact again once the baseline is a span whose statistics this release computed")
        findings.append(dict(feature=feature, kind="drift", blocking=row["blocks"] and not warn,
                             fix=fix_or_accept(span_date), message=message,
                             distance=row["distance"], threshold=row["threshold"], baseline=row["baseline"]))
    return findings


def render_html(span_date: str, notes: List[str], findings: List[dict], table: Dict[str, dict], labels) -> str:
    """A self-contained page: verdict, findings, and every feature's distance to each baseline."""
    blocked = any(f["blocking"] for f in findings)
    esc = html.escape
    rows = "".join(
        f"<tr class='{'bad' if f['blocking'] else 'warn'}'><td>{esc(f['feature'])}</td><td>{esc(f['kind'])}</td>"
        f"<td>{esc(f['message'])}</td><td>{esc(f['fix'])}</td></tr>" for f in findings)
    names = [name for name, _, _ in BASELINES]
    drift_rows = "".join(
        f"<tr class='{'bad' if row['over'] else 'ok'}'><td>{esc(feature)}</td><td>{esc(row['comparator'])}</td>"
        + "".join(f"<td>{row['per_baseline'][n]:.3f}</td>" if n in row["per_baseline"] else "<td>-</td>" for n in names)
        + f"<td>{row['threshold']:.2f}</td><td>{'over' if row['over'] else 'ok'}</td></tr>"
        for feature, row in sorted(table.items()))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data validation: span {esc(span_date)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:left}}tr.bad{{background:#fdd}}tr.warn{{background:#ffd}}tr.ok{{background:#efe}}</style>
</head><body>
<h1>Span {esc(span_date)}: {'BLOCKED' if blocked else 'passed'}</h1>
<ul>{''.join(f'<li>{esc(n)}</li>' for n in notes)}</ul>
<h2>Findings</h2>
{f'<table><tr><th>feature</th><th>kind</th><th>seen vs expected</th><th>fix</th></tr>{rows}</table>' if findings else '<p>none</p>'}
<h2>Drift per feature</h2>
{'<table><tr><th>feature</th><th>comparator</th>' + ''.join(f'<th>vs {esc(labels[n])}</th>' for n in names)
 + '<th>threshold</th><th>status</th></tr>' + drift_rows + '</table>' if table else '<p>no baseline yet</p>'}
</body></html>
"""


def _load_baselines(input_dict: Dict[str, List[types.Artifact]]) -> tuple:
    """({name: statistics}, {name: label}, notes) of the BASELINES that resolved to an artifact."""
    baselines, labels, notes = {}, {}, []
    for name, key, label in BASELINES:
        artifacts = input_dict.get(key) or []
        if artifacts:
            baselines[name] = stats_artifact_utils.load_statistics(artifacts[0], SPLIT).proto()
            labels[name] = f"{label} (span {span_date_of(artifacts[0])})"
            notes.append(f"drift checked against {labels[name]}")
        else:
            labels[name] = label
            notes.append(f"{label}: none in ML Metadata yet, so that drift check is skipped"
                         + (" (first run)" if name == "previous_span" else ""))
    return baselines, labels, notes


def _record_drift(output: types.Artifact, table: Dict[str, dict], findings: List[dict], warn_only: set) -> None:
    """Writes the drift anomalies (`train/SchemaDiff.pb`) and the distances and counts properties."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    output.split_names = artifact_utils.encode_split_names([SPLIT])
    drift = anomalies_pb2.Anomalies()
    for finding in findings:
        if finding["kind"] == "drift":
            info = drift.anomaly_info[finding["feature"]]
            info.short_description = "drift over threshold"
            info.description = finding["message"]
    io_utils.write_bytes_file(os.path.join(artifact_utils.get_split_uri([output], SPLIT), "SchemaDiff.pb"),
                              drift.SerializeToString())
    distances = {feature: dict(distance=row["distance"], threshold=row["threshold"], comparator=row["comparator"],
                               baseline=row["baseline"], per_baseline=row["per_baseline"],
                               blocked=row["blocks"] and feature not in warn_only, warn=feature in warn_only,
                               bucket_mismatch=row.get("bucket_mismatch") or None)
                 for feature, row in table.items()}
    output.set_string_custom_property(DRIFT_DISTANCES, json.dumps(distances, sort_keys=True))
    for feature, row in table.items():
        output.set_float_custom_property(f"drift:{feature}", row["distance"])
    output.set_int_custom_property("schema_anomaly_count", sum(f["kind"] == "schema" for f in findings))
    output.set_int_custom_property("drift_anomaly_count", sum(f["kind"] == "drift" and f["blocking"] for f in findings))
    output.set_int_custom_property("drift_warning_count", sum(f["kind"] == "drift" and not f["blocking"] for f in findings))


class Executor(base_executor.BaseExecutor):
    """Measures schema anomalies and drift and records the verdict (the DriftValidator's executor).

    Do() reads the `statistics`, `schema` and `schema_anomalies` inputs (one artifact each; the
    `train` split of the statistics and anomalies), the optional `served_statistics` and
    `previous_statistics` baselines, and the `span_label` and `warn_only_features` execution
    properties. It writes the `anomalies` output (one ExampleAnomalies artifact): the drift
    anomalies in `train/SchemaDiff.pb`, `report.txt` and `report.html` in its folder, and as
    custom properties the verdict (`components.verdict`), `drift_distances` (JSON),
    `drift:<feature>` and the schema-anomaly, drift-anomaly and drift-warning counts. It never
    raises for bad data: the node runner stops the run on the recorded verdict.
    """

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        statistics_artifact = artifact_utils.get_single_instance(input_dict[STATISTICS_KEY])
        statistics = stats_artifact_utils.load_statistics(statistics_artifact, SPLIT).proto()
        schema = load_schema(artifact_utils.get_single_instance(input_dict[SCHEMA_KEY]))
        schema_anomalies = _load_schema_anomalies(artifact_utils.get_single_instance(input_dict[SCHEMA_ANOMALIES_KEY]))
        span_date = exec_properties.get(SPAN_LABEL_KEY) or span_date_of(statistics_artifact)
        warn_only = set(filter(None, (exec_properties.get(WARN_ONLY_FEATURES_KEY) or "").split(",")))

        baselines, labels, notes = _load_baselines(input_dict)
        table = drift_table(statistics, schema, baselines)
        findings = schema_findings(schema_anomalies, span_date) + drift_findings(table, warn_only, labels, span_date)

        output = artifact_utils.get_single_instance(output_dict[ANOMALIES_KEY])
        _record_drift(output, table, findings, warn_only)
        fixes = sorted({f["fix"] for f in findings if f["blocking"]})
        verdict.record(output, GATE, span_date, findings,
                       problem=verdict.blocking_message(span_date, findings, "before training"), fix="; or ".join(fixes))

        report = [f"span {span_date}: " + "; ".join(notes)]
        report += [("BLOCK " if f["blocking"] else "warn  ") + f["message"] for f in findings]
        report += [f"drift {feature}: {row['comparator']} {row['distance']:.3f} (threshold {row['threshold']:.2f})"
                   for feature, row in sorted(table.items())]
        io_utils.write_string_file(os.path.join(output.uri, "report.txt"), "\n".join(report) + "\n")
        io_utils.write_string_file(os.path.join(output.uri, "report.html"),
                                   render_html(span_date, notes, findings, table, labels))
        for finding in findings:
            (log.info if finding["blocking"] else log.warning)("%s", finding["message"])
        log.info("span %s: %s", span_date, "; ".join(notes))


def findings_of(artifact) -> Optional[List[dict]]:
    value = artifact.get_string_custom_property(verdict.FINDINGS)
    return json.loads(value) if value else None
