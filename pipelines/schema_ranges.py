"""Value ranges from history: what `mlops schema accept` proposes for every numeric feature.

The rule (docs/data-gates.md, "Ranges from history"):

- Evidence: the min and max of each INT/FLOAT feature over the statistics of the spans that passed
  the data gates in the `history_days` days before the accepted span, plus the accepted span
  itself. A span passed when the newest DriftValidator verdict for it (an ExampleAnomalies artifact
  with gate "drift_validator"; that gate also carries ExampleValidator's schema anomalies) is not
  blocked; its statistics are the ExampleStatistics that verdict judged (the verdict's execution's
  `statistics` input), read from the FeatureStats.pb files: no Beam run for history.
- Margin: 10% of the observed spread on each side (10% of the value, or 1, for a constant), rounded
  outwards to a readable step (a tenth of the margin's order of magnitude; whole numbers for INT).
- Limits: a margin never crosses zero for a feature never seen on the other side of it, and never
  passes the feature's physical limit (PHYSICAL_LIMITS). Observed values are always covered; a span
  whose own values lie past a physical limit makes a risky change (`--force`).
- Applying: a feature with no range gets one; a bound the evidence exceeds is widened; an open
  bound stays open (the curated schema leaves `fare`'s max and `trip_start_timestamp`'s max open on
  purpose). A bound the evidence would narrow is only offered, and applied with `tighten` when at
  least a week of passed spans backs it. Features with a string or bool domain are left alone.

Importing this module imports neither TensorFlow nor ML Metadata.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from components.verdict import BLOCKED, GATE, SPAN_DATE
from pipelines.data import NEVER_NEGATIVE
from pipelines.errors import ConfigError

HISTORY_DAYS = 30
MARGIN = 0.10  # of the observed spread, on each side
# Narrowing takes values away: only on a week of passed spans or more, so every weekday's data is in.
SPANS_TO_NARROW = 7
DRIFT_GATE = "drift_validator"  # = components.drift_validator.executor.GATE (that module imports TFX)
STATISTICS_INPUT = "statistics"  # = tfx.types.standard_component_specs.STATISTICS_KEY, the span's own
PAST_LIMIT = "past the physical limit"  # in a change line: schema_history.is_risky refuses it without --force
INT64 = (-(2 ** 63), 2 ** 63 - 1)

# Values no real trip has: a margin stops here (None: no limit on that side).
PHYSICAL_LIMITS: Dict[str, Tuple[Optional[float], Optional[float]]] = {
    "trip_start_hour": (0, 23),  # the calendar
    "trip_start_day": (1, 7),
    "trip_start_month": (1, 12),
    "pickup_community_area": (1, 77),  # Chicago has 77 community areas
    "dropoff_community_area": (1, 77),
    "pickup_census_tract": (17031000000, 17031999999),  # Cook County's tract ids: 17031 + 6 digits
    "dropoff_census_tract": (17031000000, 17031999999),
    "pickup_latitude": (-90, 90),  # the globe
    "dropoff_latitude": (-90, 90),
    "pickup_longitude": (-180, 180),
    "dropoff_longitude": (-180, 180),
    "trip_start_timestamp": (1356998400, None),  # 2013-01-01T00:00Z: the city's trip records begin
    **{name: (0, None) for name in NEVER_NEGATIVE},  # money, distance, duration
}

Bounds = Tuple[Optional[float], Optional[float]]  # (min, max); None: open


# --- Evidence: min/max per feature from ML Metadata and the accepted span ---


@dataclasses.dataclass(frozen=True)
class Observed:
    low: float
    high: float
    spans: Tuple[str, ...]  # the spans with values for the feature, oldest first


@dataclasses.dataclass
class Evidence:
    """Where proposed ranges come from: passed spans from history, and the accepted span."""

    span: str
    history_days: int
    history: List[str] = dataclasses.field(default_factory=list)  # passed spans read, oldest first
    blocked: List[str] = dataclasses.field(default_factory=list)  # left out: a gate blocked them
    missing: List[str] = dataclasses.field(default_factory=list)  # passed, but statistics files gone
    observed: Dict[str, Observed] = dataclasses.field(default_factory=dict)

    def add(self, span: str, min_max: Dict[str, Tuple[float, float]]) -> None:
        for name, (low, high) in min_max.items():
            seen = self.observed.get(name)
            if seen is None:
                self.observed[name] = Observed(low, high, (span,))
            else:
                self.observed[name] = Observed(min(seen.low, low), max(seen.high, high), seen.spans + (span,))

    def source(self) -> str:
        """One line: which spans the ranges came from, and which were left out."""
        if self.history_days == 0:
            text = f"--history-days 0: ranges from span {self.span} alone"
        elif not self.history:
            text = (f"ML Metadata has no span that passed the data gates in the {self.history_days} days before "
                    f"{self.span}: ranges from span {self.span} alone")
        else:
            dates = self.history[0] if len(self.history) == 1 else f"{self.history[0]}..{self.history[-1]}"
            text = (f"ranges from {len(self.history)} passed span(s) of the {self.history_days} days before "
                    f"{self.span} ({dates}) and span {self.span} itself")
        if self.blocked:
            text += f"; left out, blocked by a data gate: {', '.join(self.blocked)}"
        if self.missing:
            text += f"; left out, statistics files gone (pruned): {', '.join(self.missing)}"
        return text

    def record(self) -> dict:
        """What the history entry keeps: the spans the ranges came from."""
        return {"spans": self.history + [self.span], "history_days": self.history_days, "blocked": self.blocked,
                "missing": self.missing}


def open_metadata(metadata):
    """The project's ML Metadata store (a MetadataConfig), a SQLite file opened read-only, or None
    when there is none yet."""
    if metadata.is_sqlite and not Path(metadata.sqlite_path).is_file():
        return None
    from ml_metadata import errors, metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata.to_proto()
    if metadata.is_sqlite:
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    try:
        return metadata_store.MetadataStore(config)
    except errors.MetadataStoreError as err:
        raise ConfigError(f"cannot read ML Metadata at {metadata.url}: {err}",
                          "check it is the project's metadata store") from err


def _newest_drift_verdicts(store, first: str, before: str) -> Dict[str, object]:
    """{span date: the newest DriftValidator verdict of that span} for first <= span < before."""
    from ml_metadata import errors

    try:
        anomalies = store.get_artifacts_by_type("ExampleAnomalies")
    except errors.NotFoundError:  # no run has validated a span yet
        return {}
    newest: Dict[str, object] = {}
    for artifact in anomalies:
        properties = artifact.custom_properties
        if GATE not in properties or properties[GATE].string_value != DRIFT_GATE or SPAN_DATE not in properties:
            continue
        day = properties[SPAN_DATE].string_value
        if first <= day < before and (day not in newest or (artifact.create_time_since_epoch, artifact.id)
                                      > (newest[day].create_time_since_epoch, newest[day].id)):
            newest[day] = artifact
    return newest


def _judged_statistics(store, verdicts: List) -> Dict[int, str]:
    """{verdict id: uri of the ExampleStatistics its DriftValidator execution judged}."""
    from ml_metadata.proto import metadata_store_pb2

    event = metadata_store_pb2.Event
    if not verdicts:
        return {}
    producer = {e.artifact_id: e.execution_id for e in store.get_events_by_artifact_ids([v.id for v in verdicts])
                if e.type == event.OUTPUT}
    judged = {e.execution_id: e.artifact_id for e in store.get_events_by_execution_ids(sorted(set(producer.values())))
              if e.type == event.INPUT and e.path.steps and e.path.steps[0].key == STATISTICS_INPUT}
    uris = {a.id: a.uri for a in store.get_artifacts_by_id(sorted(set(judged.values())))} if judged else {}
    return {v.id: uris[judged[producer[v.id]]] for v in verdicts
            if v.id in producer and producer[v.id] in judged and judged[producer[v.id]] in uris}


def read_statistics(uri: str) -> List:
    """The DatasetFeatureStatisticsList of every split of an ExampleStatistics artifact at `uri`."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    found = []
    for path in sorted(glob.glob(os.path.join(uri, "Split-*", "FeatureStats.pb"))):
        statistics = statistics_pb2.DatasetFeatureStatisticsList()
        with open(path, "rb") as handle:
            statistics.ParseFromString(handle.read())
        found.append(statistics)
    return found


def numeric_min_max(statistics_lists) -> Dict[str, Tuple[float, float]]:
    """{feature: (min, max)} over the numeric features with values in DatasetFeatureStatisticsLists."""
    found: Dict[str, Tuple[float, float]] = {}
    for statistics in statistics_lists:
        for dataset in statistics.datasets:
            for feature in dataset.features:
                numbers = feature.num_stats
                if not feature.HasField("num_stats") or numbers.common_stats.num_non_missing == 0:
                    continue
                if not (math.isfinite(numbers.min) and math.isfinite(numbers.max)):
                    continue
                name = ".".join(feature.path.step) or feature.name
                low, high = found.get(name, (numbers.min, numbers.max))
                found[name] = (min(low, numbers.min), max(high, numbers.max))
    return found


def gather_evidence(metadata, span_day: dt.date, span_statistics, history_days: int) -> Evidence:
    """The passed spans of the `history_days` days before `span_day`, plus the span's own statistics."""
    evidence = Evidence(span_day.isoformat(), history_days)
    store = open_metadata(metadata)
    if store is not None and history_days > 0:
        first = (span_day - dt.timedelta(days=history_days)).isoformat()
        verdicts = _newest_drift_verdicts(store, first, span_day.isoformat())
        passed = {day: v for day, v in verdicts.items() if v.custom_properties[BLOCKED].int_value != 1}
        evidence.blocked = sorted(set(verdicts) - set(passed))
        uris = _judged_statistics(store, list(passed.values()))
        for day, verdict in sorted(passed.items()):
            statistics = read_statistics(uris[verdict.id]) if verdict.id in uris else []
            if not statistics:
                evidence.missing.append(day)
                continue
            evidence.history.append(day)
            evidence.add(day, numeric_min_max(statistics))
    evidence.add(evidence.span, numeric_min_max([span_statistics]))
    return evidence


# --- The rule: margin, limits, rounding ---


def _float32_covering(value: float, observed: float, downwards: bool) -> float:
    """`value` as the schema stores it (FloatDomain is float32), one float32 step outwards when
    rounding to float32 would leave the observed value outside (-3.3 is stored as -3.2999999)."""
    import numpy as np

    stored = np.float32(value)
    if (stored > observed) if downwards else (stored < observed):
        stored = np.nextafter(stored, np.float32(-np.inf if downwards else np.inf))
    return float(stored)


def _round_out(low: float, high: float, margin: float, is_int: bool) -> Tuple[float, float]:
    """Rounded outwards to a tenth of the margin's order of magnitude (at least whole numbers for INT):
    41.6583 - 0.0357 gives 41.622, not 41.6226."""
    exponent = math.floor(math.log10(margin)) - 1
    if is_int:
        exponent = max(exponent, 0)
    step = 10.0 ** exponent
    digits = max(0, -exponent)
    return round(math.floor(low / step) * step, digits), round(math.ceil(high / step) * step, digits)


def proposed_range(name: str, observed: Observed, is_int: bool) -> Tuple[float, float, bool]:
    """(min, max, past_limit) for a feature: the observed range plus the margin, within the limits."""
    spread = observed.high - observed.low
    margin = MARGIN * spread if spread > 0 else (MARGIN * abs(observed.high) or 1.0)
    low, high = _round_out(observed.low - margin, observed.high + margin, margin, is_int)
    floor, ceiling = PHYSICAL_LIMITS.get(name, (None, None))
    past_limit = (floor is not None and observed.low < floor) or (ceiling is not None and observed.high > ceiling)
    if observed.low >= 0:  # never seen negative: the margin does not invent a sign
        floor = 0 if floor is None else max(floor, 0)
    if observed.high < 0:  # never seen positive (nor zero)
        ceiling = 0 if ceiling is None else min(ceiling, 0)
    if is_int:
        floor = INT64[0] if floor is None else max(floor, INT64[0])
        ceiling = INT64[1] if ceiling is None else min(ceiling, INT64[1])
    if floor is not None:
        low = min(max(low, floor), observed.low)  # the observed values stay covered, limit or not
    if ceiling is not None:
        high = max(min(high, ceiling), observed.high)
    if is_int:
        return math.floor(low), math.ceil(high), past_limit
    return (_float32_covering(low, observed.low, downwards=True),
            _float32_covering(high, observed.high, downwards=False), past_limit)


# --- Applying the proposals to a schema ---


@dataclasses.dataclass
class RangeProposals:
    changes: List[str] = dataclasses.field(default_factory=list)  # applied, one line per feature
    offered: List[str] = dataclasses.field(default_factory=list)  # narrowing, not applied
    notes: List[str] = dataclasses.field(default_factory=list)
    features: List[str] = dataclasses.field(default_factory=list)  # whose range `changes` describes


def _number(value: Optional[float], is_int: bool, open_text: str) -> str:
    if value is None:
        return open_text
    return str(int(value)) if is_int else f"{value:.7g}"


def _shown(bounds: Bounds, is_int: bool) -> str:
    return f"[{_number(bounds[0], is_int, '-inf')}, {_number(bounds[1], is_int, 'inf')}]"


def _domain(feature):
    """The feature's int_domain or float_domain message (by its type when it has neither yet)."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    if feature.HasField("int_domain") or (feature.type == schema_pb2.INT and not feature.HasField("float_domain")):
        return feature.int_domain
    return feature.float_domain


def current_range(feature) -> Optional[Bounds]:
    """The feature's (min, max), None for either open; None when it has no bound at all."""
    if not (feature.HasField("int_domain") or feature.HasField("float_domain")):
        return None
    domain = _domain(feature)
    bounds = (domain.min if domain.HasField("min") else None, domain.max if domain.HasField("max") else None)
    return None if bounds == (None, None) else bounds


def _set_range(feature, bounds: Bounds) -> None:
    domain = _domain(feature)
    for field, value in zip(("min", "max"), bounds):
        if value is None:
            domain.ClearField(field)
        else:
            setattr(domain, field, value)


def _rangeable(feature) -> bool:
    """INT/FLOAT, still validated, and not a categorical feature with a string or bool domain."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    return (feature.type in (schema_pb2.INT, schema_pb2.FLOAT)
            and feature.lifecycle_stage != schema_pb2.DEPRECATED
            and not any(feature.HasField(field) for field in ("domain", "string_domain", "bool_domain")))


def _label(observed: Observed, span: str) -> str:
    if observed.spans == (span,):
        return f"from span {span} alone"
    return f"from {len(observed.spans)} spans {observed.spans[0]}..{observed.spans[-1]}"


def _decide(before: Optional[Bounds], low: float, high: float, observed: Observed) -> Tuple[Bounds, Bounds]:
    """(bounds after widening, bounds after also narrowing) from the bounds before and the proposal."""
    if before is None:
        return (low, high), (low, high)
    widened, narrowed = list(before), list(before)
    for side, proposal, seen, beyond in ((0, low, observed.low, lambda a, b: a < b),
                                         (1, high, observed.high, lambda a, b: a > b)):
        if before[side] is None:
            continue  # an open bound is a choice (no max fare, no max timestamp): kept
        if beyond(seen, before[side]):
            widened[side] = narrowed[side] = proposal
        elif beyond(before[side], proposal):
            narrowed[side] = proposal
    return tuple(widened), tuple(narrowed)


def propose_ranges(schema, original, evidence: Evidence, tighten: bool = False) -> RangeProposals:
    """Sets each numeric feature's range in `schema` from the evidence; compares with `original`
    (the schema before the acceptance) so that TFDV's own relaxing is not counted as the before."""
    before_by_name = {f.name: f for f in original.feature}
    result = RangeProposals()
    if tighten and len(evidence.history) < SPANS_TO_NARROW:
        result.notes.append(f"--tighten: nothing narrowed: that needs {SPANS_TO_NARROW} passed spans of history, "
                            f"found {len(evidence.history)}")
    from tensorflow_metadata.proto.v0 import schema_pb2

    for feature in schema.feature:
        if not _rangeable(feature):
            continue
        is_int = feature.type == schema_pb2.INT
        before = current_range(before_by_name.get(feature.name, feature))
        observed = evidence.observed.get(feature.name)
        if observed is None:
            if before is None:
                result.notes.append(f"{feature.name}: no values in the spans read: no range proposed")
            continue
        low, high, past_limit = proposed_range(feature.name, observed, is_int)
        widened, narrowed = _decide(before, low, high, observed)
        label = _label(observed, evidence.span)
        if past_limit:
            label += f"; {PAST_LIMIT} {_shown(PHYSICAL_LIMITS[feature.name], is_int)}"
        # per feature: a week of history spans with values for it (the accepted span not counted)
        enough_to_narrow = len(set(observed.spans) - {evidence.span}) >= SPANS_TO_NARROW
        after = narrowed if tighten and enough_to_narrow else widened
        if before is None:
            result.changes.append(f"{feature.name}: range added {_shown(after, is_int)} ({label})")
        elif after != before:
            verb = "widened" if after == widened else ("narrowed" if widened == before else "widened and narrowed")
            result.changes.append(f"{feature.name}: range {verb} {_shown(before, is_int)} -> {_shown(after, is_int)} "
                                  f"({label})")
        if narrowed != after and enough_to_narrow:
            result.offered.append(f"{feature.name}: range could narrow {_shown(after, is_int)} -> "
                                  f"{_shown(narrowed, is_int)} ({label})")
        if before is None or after != before or current_range(feature) != before:
            _set_range(feature, after)
            result.features.append(feature.name)
    return result


def merge_changes(described: List[str], proposals: RangeProposals) -> List[str]:
    """describe_changes' lines with its range line of each proposed feature replaced by the proposal's."""
    def own_range_line(line: str) -> bool:
        name, _, rest = line.partition(": ")
        return name in proposals.features and (" range [" in rest or rest.startswith("no range"))

    return [line for line in described if not own_range_line(line)] + proposals.changes
