"""`mlops schema accept` proposes value ranges from history (pipelines/schema_ranges.py).

History is a real ML Metadata store (sqlite, in the test's home) holding what a nightly run records
for each span: ExampleGen's Examples -> StatisticsGen -> ExampleStatistics (real TFDV statistics
in Split-*/FeatureStats.pb) -> DriftValidator -> ExampleAnomalies with the verdict properties
(components.verdict.record). The accepted span is a real CSV (`mlops data make-span`), run through
TFDV by the command itself.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re

import pytest

from components import verdict
from components.util.spans import span_number
from pipelines import schema_ranges
from pipelines.config import ProjectPaths
from pipelines.errors import EXIT_CONFIG
from pipelines.schema_diff import parse_schema
from pipelines.schema_history import is_risky, read_history
from tests.conftest import REPO, make_home, mlops, mlops_here

SPAN = "2026-11-25"
# In the bundled data (so in every span made from it), pickup_latitude lies within 41.69488..42.00962.
LATITUDE_RANGE = '  name: "pickup_latitude"\n  type: FLOAT\n  float_domain {\n    min: 41.6\n    max: 42.1\n  }\n'


def home_with_span(tmp_path, latitude_range=None) -> ProjectPaths:
    """A home with the curated schema (pickup_latitude's range replaced) and span SPAN from the bundled data."""
    paths = ProjectPaths.from_env(str(make_home(tmp_path, days=0)))
    text = paths.schema_path.read_text()
    assert LATITUDE_RANGE in text
    replacement = '  name: "pickup_latitude"\n  type: FLOAT\n'
    if latitude_range:
        replacement += f"  float_domain {{\n    min: {latitude_range[0]}\n    max: {latitude_range[1]}\n  }}\n"
    paths.schema_path.write_text(text.replace(LATITUDE_RANGE, replacement, 1))
    mlops(paths.home, "data", "make-span", "--date", SPAN, "--fault", "none")
    return paths


def day(days_before: int) -> str:
    return (dt.date.fromisoformat(SPAN) - dt.timedelta(days=days_before)).isoformat()


class _Verdict:
    """What components.verdict.record writes on (a TFX artifact's setters), on an ML Metadata proto."""

    def __init__(self, artifact):
        self._artifact = artifact

    def set_string_custom_property(self, key, value):
        self._artifact.custom_properties[key].string_value = value

    def set_int_custom_property(self, key, value):
        self._artifact.custom_properties[key].int_value = value


class History:
    """Writes spans into the home's ML Metadata the way a nightly run records them."""

    def __init__(self, paths: ProjectPaths):
        from ml_metadata import metadata_store
        from ml_metadata.proto import metadata_store_pb2 as pb

        self.pb, self.paths = pb, paths
        paths.var.mkdir(parents=True, exist_ok=True)
        config = pb.ConnectionConfig()
        config.sqlite.filename_uri = str(paths.metadata_path)
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.types = {name: self.store.put_artifact_type(pb.ArtifactType(name=name, properties=properties))
                      for name, properties in (
                          ("Examples", {"span": pb.INT, "version": pb.INT, "split_names": pb.STRING}),
                          ("ExampleStatistics", {"span": pb.INT, "split_names": pb.STRING}),
                          ("ExampleAnomalies", {"span": pb.INT, "split_names": pb.STRING}))}
        self.executions = {name: self.store.put_execution_type(pb.ExecutionType(name=name)) for name in (
            "tfx.components.statistics_gen.component.StatisticsGen",
            "components.drift_validator.component.DriftValidator")}

    def _artifact(self, type_name: str, node: str, key: str, span: int = 0):
        artifact = self.pb.Artifact(type_id=self.types[type_name], state=self.pb.Artifact.LIVE)
        artifact.properties["span"].int_value = span
        [artifact.id] = self.store.put_artifacts([artifact])
        artifact.uri = str(self.paths.pipeline_root / node / key / str(artifact.id))
        self.store.put_artifacts([artifact])
        return artifact

    def _execution(self, name: str, inputs: dict, outputs: dict) -> None:
        pb = self.pb
        linked = []
        for kind, artifacts in ((pb.Event.INPUT, inputs), (pb.Event.OUTPUT, outputs)):
            for key, artifact in artifacts.items():
                event = pb.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                linked.append((artifact, event))
        execution = pb.Execution(type_id=self.executions[name], last_known_state=pb.Execution.COMPLETE)
        self.store.put_execution(execution, linked, [])

    def span(self, date: str, columns: dict, blocked: bool = False):
        """Records span `date`: statistics of `columns` ({feature: values}; the train split gets the
        even rows, eval the odd ones) judged by DriftValidator, blocked or not. Returns the statistics."""
        import pandas as pd
        import tensorflow_data_validation as tfdv

        examples = self._artifact("Examples", "CsvExampleGen", "examples", span_number(dt.date.fromisoformat(date)))
        statistics = self._artifact("ExampleStatistics", "StatisticsGen", "statistics")  # span 0, as StatisticsGen
        frame = pd.DataFrame(columns)
        for split, rows in (("train", frame.iloc[::2]), ("eval", frame.iloc[1::2])):
            folder = os.path.join(statistics.uri, f"Split-{split}")
            os.makedirs(folder)
            with open(os.path.join(folder, "FeatureStats.pb"), "wb") as out:
                out.write(tfdv.generate_statistics_from_dataframe(rows).SerializeToString())
        self._execution("tfx.components.statistics_gen.component.StatisticsGen", {"examples": examples},
                        {"statistics": statistics})
        anomalies = self._artifact("ExampleAnomalies", "DriftValidator", "anomalies")
        finding = {"feature": "pickup_latitude", "kind": "drift", "message": "pickup_latitude drifted",
                   "blocking": blocked}
        verdict.record(_Verdict(anomalies), "drift_validator", date, [finding], problem="drifted", fix="fix it")
        self.store.put_artifacts([anomalies])
        self._execution("components.drift_validator.component.DriftValidator", {"statistics": statistics},
                        {"anomalies": anomalies})
        return statistics


def latitudes(low: float, high: float, rows: int = 20) -> dict:
    return {"pickup_latitude": [low + (high - low) * i / (rows - 1) for i in range(rows)],
            "trip_start_hour": [i % 24 for i in range(rows)]}


def accept(paths, *args: str):
    return mlops_here(paths.home, "schema", "accept", "--date", SPAN, *args)


def latitude_bounds(paths):
    feature = next(f for f in parse_schema(paths.schema_path.read_text()).feature if f.name == "pickup_latitude")
    return schema_ranges.current_range(feature)


# --- with ML Metadata and real statistics ---


def test_a_range_is_added_from_the_passed_spans_and_the_lint_then_passes(tmp_path):
    paths = home_with_span(tmp_path)
    assert "pickup_latitude" in mlops(paths.home, "schema", "lint", check=False).stderr  # unguarded before
    history = History(paths)
    history.span(day(3), latitudes(41.70, 41.95))
    history.span(day(2), latitudes(41.65, 42.00))
    history.span(day(1), latitudes(41.72, 42.05))
    out = accept(paths, "--reason", "latitude was unguarded").stdout
    # 41.65..42.05 observed: spread 0.4, margin 0.04 each side, in steps of 0.001
    line = f"pickup_latitude: range added [41.61, 42.09] (from 4 spans {day(3)}..{SPAN})"
    assert f"  {line}\n" in out
    assert f"ranges from 3 passed span(s) of the 30 days before {SPAN} ({day(3)}..{day(1)}) and span {SPAN}" in out
    assert latitude_bounds(paths) == pytest.approx((41.61, 42.09))
    lint = mlops(paths.home, "schema", "lint")
    assert re.search(r"pickup_latitude\s+FLOAT\s+optional\s+float \[41\.61, 42\.09\]\s+none\s+guarded", lint.stdout)
    entry = read_history(paths)[-1]
    assert entry["event"] == "accept" and entry["changes"] == [line]
    assert entry["ranges_from"] == {"spans": [day(3), day(2), day(1), SPAN], "history_days": 30, "blocked": [],
                                    "missing": []}
    assert accept(paths).stdout.strip() == f"nothing to change: span {SPAN} already passes the schema"


def test_a_blocked_span_and_spans_before_the_window_are_left_out(tmp_path):
    paths = home_with_span(tmp_path)
    history = History(paths)
    history.span(day(40), latitudes(30.0, 42.0))  # passed, but 40 days before
    history.span(day(3), latitudes(41.65, 42.05))
    history.span(day(2), latitudes(41.70, 48.00), blocked=True)  # blocked: its extremes must not count
    history.span(day(1), latitudes(41.70, 47.00), blocked=True)  # first run blocked, the rerun passed:
    history.span(day(1), latitudes(41.70, 41.90))  # the newest verdict and the statistics it judged count
    result = json.loads(accept(paths, "--dry-run", "--json").stdout)
    assert f"pickup_latitude: range added [41.61, 42.09] (from 3 spans {day(3)}..{SPAN})" in result["changes"]
    ranges = result["ranges"]
    assert ranges["spans"] == [day(3), day(1), SPAN] and ranges["blocked"] == [day(2)]
    assert f"left out, blocked by a data gate: {day(2)}" in ranges["source"]
    wider = json.loads(accept(paths, "--dry-run", "--json", "--history-days", "60").stdout)
    assert wider["ranges"]["spans"] == [day(40), day(3), day(1), SPAN]
    # 30.0..42.05 observed: margin 1.205, in steps of 0.1
    assert f"pickup_latitude: range added [28.7, 43.3] (from 4 spans {day(40)}..{SPAN})" in wider["changes"]


def test_a_range_the_history_exceeds_is_widened_and_narrowing_is_only_offered(tmp_path):
    paths = home_with_span(tmp_path, latitude_range=(41.6, 42.02))  # the span's values fit; history's do not
    history = History(paths)
    for days_before in range(7, 0, -1):  # a week of passed spans: enough to offer narrowing
        history.span(day(days_before), latitudes(41.6912, 42.0713 if days_before == 4 else 41.9))
    # observed 41.6912..42.0713: spread 0.3801, margin 0.03801, steps of 0.001 -> [41.653, 42.11]
    out = accept(paths, "--reason", "history says so").stdout
    label = f"from 8 spans {day(7)}..{SPAN}"
    assert f"  pickup_latitude: range widened [41.6, 42.02] -> [41.6, 42.11] ({label})\n" in out
    assert ("offered, not applied (--tighten applies them):\n"
            f"  pickup_latitude: range could narrow [41.6, 42.11] -> [41.653, 42.11] ({label})\n") in out
    assert latitude_bounds(paths) == pytest.approx((41.6, 42.11))  # never narrowed without asking
    out = accept(paths, "--tighten").stdout
    assert f"  pickup_latitude: range narrowed [41.6, 42.11] -> [41.653, 42.11] ({label})\n" in out
    assert latitude_bounds(paths) == pytest.approx((41.653, 42.11))
    assert "offered" not in accept(paths).stdout  # the proposal is the range now: nothing left to offer


def test_dry_run_shows_the_proposals_and_writes_nothing(tmp_path):
    paths = home_with_span(tmp_path)
    History(paths).span(day(1), latitudes(41.65, 42.05))
    before = paths.schema_path.read_bytes()
    out = accept(paths, "--dry-run").stdout
    assert f"would change {paths.schema_path}" in out
    assert f"  pickup_latitude: range added [41.61, 42.09] (from 2 spans {day(1)}..{SPAN})\n" in out
    assert out.rstrip().endswith("dry run: nothing written")
    result = json.loads(accept(paths, "--dry-run", "--json").stdout)
    assert result["written"] is False and result["ranges"]["changes"] == [
        f"pickup_latitude: range added [41.61, 42.09] (from 2 spans {day(1)}..{SPAN})"]
    assert paths.schema_path.read_bytes() == before
    assert not (paths.var / "schemas").exists()


def test_a_fresh_home_uses_the_span_alone_and_says_so(tmp_path):
    paths = home_with_span(tmp_path)
    assert not paths.metadata_path.exists()
    out = accept(paths).stdout
    assert re.search(rf"  pickup_latitude: range added \[41\.\d+, 42\.\d+\] \(from span {SPAN} alone\)\n", out)
    assert (f"ML Metadata has no span that passed the data gates in the 30 days before {SPAN}: ranges from span "
            f"{SPAN} alone") in out
    low, high = latitude_bounds(paths)
    assert 41.6 < low < 41.69488 and 42.00962 < high < 42.1  # the span's values with a margin
    assert read_history(paths)[-1]["ranges_from"]["spans"] == [SPAN]
    assert mlops(paths.home, "schema", "lint").returncode == 0


def test_a_span_past_a_physical_limit_needs_force(tmp_path):
    paths = ProjectPaths.from_env(str(make_home(tmp_path, days=0)))
    mlops(paths.home, "data", "make-span", "--date", SPAN, "--fault", "out_of_range", "--column", "fare")
    refused = mlops_here(paths.home, "schema", "accept", "--date", SPAN, check=False)
    assert refused.returncode == EXIT_CONFIG
    assert "fare: range widened [0, inf] -> [-" in refused.stderr and "past the physical limit [0, inf]" in refused.stderr
    assert "--force" in refused.stderr
    forced = mlops_here(paths.home, "schema", "accept", "--date", SPAN, "--force").stdout
    assert "fare: range widened" in forced


# --- the rule alone (no ML Metadata, no TFDV) ---


def observed(low, high):
    return schema_ranges.Observed(low, high, (day(1), SPAN))


def test_the_margin_rounding_and_limits():
    def proposed(name, low, high, is_int=False):
        return schema_ranges.proposed_range(name, observed(low, high), is_int)

    # 10% of the spread each side, rounded outwards to a tenth of the margin's order of magnitude
    assert proposed("x", 10.0, 20.0) == (9.0, 21.0, False)
    assert proposed("x", -7.31, -2.0) == pytest.approx((-7.85, -1.46, False))
    # INT: whole numbers outwards; the calendar holds the margin
    assert proposed("trip_start_hour", 5, 15, is_int=True) == (4, 16, False)
    assert proposed("trip_start_hour", 0, 23, is_int=True) == (0, 23, False)
    assert proposed("trip_start_timestamp", 1400000000, 1500000000, is_int=True) == (1390000000, 1510000000, False)
    # never seen negative: the margin stops at zero; a constant gets 10% of its value (or 1)
    assert proposed("surge", 0.1, 3.0) == pytest.approx((0.0, 3.29, False))
    assert proposed("surge", 2.0, 2.0) == pytest.approx((1.8, 2.2, False))
    assert proposed("count", 0, 0, is_int=True) == (0, 1, False)
    # a value past a physical limit stays covered (float32 storage included), and says so
    low, high, past = proposed("fare", -3.3, 50.0)
    assert low <= -3.3 and high >= 50.0 and past


def evidence_of(days: int, **features) -> schema_ranges.Evidence:
    """Evidence of `days` passed spans before SPAN and SPAN itself, each feature seen in all of them."""
    history = [day(d) for d in range(days, 0, -1)]
    return schema_ranges.Evidence(SPAN, 30, history=history, observed={
        name: schema_ranges.Observed(low, high, tuple(history) + (SPAN,)) for name, (low, high) in features.items()})


def test_string_domains_and_open_bounds_are_left_alone_and_narrowing_needs_a_week():
    schema = parse_schema((REPO / "schemas" / "taxi" / "schema.pbtxt").read_text())
    original = type(schema).FromString(schema.SerializeToString())
    seen = {"payment_type": (0, 5), "fare": (1.0, 99999.0), "trip_start_timestamp": (1.4e9, 1.5e9),
            "trip_start_day": (1, 7)}
    proposals = schema_ranges.propose_ranges(schema, original, evidence_of(7, **seen))
    assert proposals.changes == [] and schema == original  # narrowing is only offered
    # fare's and the timestamp's open max stay open; days 1..7 fill their range; payment_type has a string domain
    assert proposals.offered == [f"trip_start_timestamp: range could narrow [1356998400, inf] -> [1390000000, inf] "
                                 f"(from 8 spans {day(7)}..{SPAN})"]
    proposals = schema_ranges.propose_ranges(schema, original, evidence_of(6, **seen), tighten=True)
    assert proposals.changes == proposals.offered == [] and schema == original  # less than a week: not even offered
    assert proposals.notes == ["--tighten: nothing narrowed: that needs 7 passed spans of history, found 6"]
    proposals = schema_ranges.propose_ranges(schema, original, evidence_of(7, **seen), tighten=True)
    assert proposals.changes == [f"trip_start_timestamp: range narrowed [1356998400, inf] -> [1390000000, inf] "
                                 f"(from 8 spans {day(7)}..{SPAN})"]
    assert schema_ranges.current_range(next(f for f in schema.feature if f.name == "trip_start_timestamp")) == (
        1390000000, None)


def test_a_feature_without_a_range_and_without_values_is_noted():
    schema = parse_schema((REPO / "schemas" / "taxi" / "schema.pbtxt").read_text())
    next(f for f in schema.feature if f.name == "dropoff_latitude").ClearField("float_domain")
    original = type(schema).FromString(schema.SerializeToString())
    proposals = schema_ranges.propose_ranges(schema, original, evidence_of(3))
    assert proposals.changes == [] and schema == original
    assert proposals.notes == ["dropoff_latitude: no values in the spans read: no range proposed"]


def test_a_range_past_a_physical_limit_is_a_risky_change():
    assert is_risky(f"fare: range widened [0, inf] -> [-5, inf] (from span {SPAN} alone; "
                    f"{schema_ranges.PAST_LIMIT} [0, inf])")
    assert not is_risky("fare: range widened [0, 100] -> [0, 120] (from span 2026-11-25 alone)")
