"""Schema history: the snapshots and history behind `mlops schema history|accept|diff|prune`
(pipelines/cli/schema.py).

Every pipeline run calls `snapshot_for_run`: the schema in force is copied to a content-addressed
file under var/schemas/taxi/ and `history.jsonl` gets a line whenever the schema changed, so
`mlops schema diff` can say what changed since a date. `mlops schema accept` relaxes the schema
for one span (TFDV's `update_schema` plus drift thresholds from ML Metadata), proposes value
ranges from the spans that passed (pipelines/schema_ranges.py) and records who accepted what, why,
and which spans the ranges came from. Importing this module imports neither TensorFlow, TFX nor TFDV.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

from pipelines.errors import ConfigError
from serving.files import write_atomic
from pipelines.schema_diff import COMPARATOR_FIELDS, describe_changes, parse_schema
from pipelines.schema_ranges import (HISTORY_DAYS, PAST_LIMIT, gather_evidence, merge_changes, open_metadata,
                                     propose_ranges)

KEEP_DAYS = 30
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
DRIFT_HEADROOM = 1.1  # an accepted distance gets 10% room, so the same span passes next time


# --- Snapshots and history: plain file operations, cheap enough for every pipeline run ---


def history_dir(paths) -> Path:
    return paths.var / "schemas" / "taxi"


def utc_now(now: Optional[dt.datetime] = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.replace(tzinfo=dt.timezone.utc) if now.tzinfo is None else now.astimezone(dt.timezone.utc)


def _parse_time(text: str) -> dt.datetime:
    return utc_now(dt.datetime.fromisoformat(text))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot_path(directory: Path, sha: str) -> Path:
    return directory / f"{sha[:12]}.pbtxt"


def read_schema_bytes(paths) -> bytes:
    try:
        return paths.schema_path.read_bytes()
    except FileNotFoundError as err:
        raise ConfigError(f"schema file {paths.schema_path} does not exist",
                          "restore schemas/taxi/schema.pbtxt from git") from err


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serializes history updates of concurrent runs (Airflow tasks, `mlops run`, `schema accept`)."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_history(paths) -> List[dict]:
    """The entries of history.jsonl, oldest first (a torn last line from a crash is skipped)."""
    try:
        lines = (history_dir(paths) / HISTORY_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entries.append(json.loads(line))
    return entries


def _append(directory: Path, entry: dict) -> None:
    with open(directory / HISTORY_FILE, "a") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


def entry_sha(entry: dict) -> Optional[str]:
    """The schema in force after this entry: a snapshot's sha, an acceptance's to_sha."""
    return entry.get("sha") or entry.get("to_sha")


@dataclasses.dataclass(frozen=True)
class Period:
    """A stretch of time during which one schema was in force (end None: still in force)."""

    sha: str
    start: dt.datetime
    end: Optional[dt.datetime]


def periods(entries: List[dict]) -> List[Period]:
    out: List[Period] = []
    for entry in entries:
        sha = entry_sha(entry)
        if not sha or (out and out[-1].sha == sha):
            continue
        start = _parse_time(entry["time"])
        if out:
            out[-1] = dataclasses.replace(out[-1], end=start)
        out.append(Period(sha, start, None))
    return out


def _snapshot_locked(paths, now: dt.datetime) -> Path:
    directory = history_dir(paths)
    data = read_schema_bytes(paths)
    sha = _sha(data)
    entries = read_history(paths)
    target = snapshot_path(directory, sha)
    if not entries or entry_sha(entries[-1]) != sha:
        _append(directory, {"event": "snapshot", "time": now.isoformat(timespec="seconds"), "sha": sha,
                            "file": target.name})
        entries = read_history(paths)
    if not target.exists():
        write_atomic(target, data)
    _prune_locked(paths, entries, now, KEEP_DAYS, keep_shas={sha})
    return target


def snapshot_for_run(paths, now: Optional[dt.datetime] = None) -> Path:
    """Records the schema this run uses; returns its snapshot file. No TFX: runs on every task."""
    with _locked(history_dir(paths)):
        return _snapshot_locked(paths, utc_now(now))


def _prune_locked(paths, entries: List[dict], now: dt.datetime, keep_days: int,
                  keep_shas=frozenset()) -> List[Tuple[Path, dt.datetime]]:
    """Deletes snapshots out of force for more than keep_days; files the history never named stay."""
    directory = history_dir(paths)
    last_in_force: Dict[str, Optional[dt.datetime]] = {}
    for period in periods(entries):  # a schema can come back: its newest period counts
        last_in_force[period.sha] = period.end
    cutoff = now - dt.timedelta(days=keep_days)
    removed = []
    for sha, end in sorted(last_in_force.items()):
        if end is None or end > cutoff or sha in keep_shas:
            continue
        path = snapshot_path(directory, sha)
        if path.exists():
            path.unlink(missing_ok=True)
            removed.append((path, end))
    return removed


def prune_snapshots(paths, keep_days: int = KEEP_DAYS,
                    now: Optional[dt.datetime] = None) -> List[Tuple[Path, dt.datetime]]:
    """Removed snapshot files with the time their schema went out of force. Idempotent."""
    directory = history_dir(paths)
    if not directory.is_dir():
        return []
    with _locked(directory):
        keep = {_sha(paths.schema_path.read_bytes())} if paths.schema_path.is_file() else set()
        return _prune_locked(paths, read_history(paths), utc_now(now), keep_days, keep)


# --- Accepting a span: TFDV statistics, drift distances from ML Metadata ---


def raised_threshold(distance: float) -> float:
    # round() first: 0.2 * 110 is 22.000000000000004 in floating point, which must not become 0.23.
    return math.ceil(round(distance * DRIFT_HEADROOM * 100, 6)) / 100


def read_drift_distances(metadata, span: str) -> Dict[str, dict]:
    """`drift_distances` of the newest ExampleAnomalies artifact of the span ({} without a store)."""
    store = open_metadata(metadata)
    if store is None:
        return {}
    from ml_metadata import errors

    try:
        artifacts = store.get_artifacts_by_type("ExampleAnomalies")
    except errors.NotFoundError:
        return {}
    except errors.MetadataStoreError as err:
        raise ConfigError(f"cannot read ML Metadata at {metadata.url}: {err}",
                          "check the file is the project's metadata store") from err
    matching = [a for a in artifacts if "drift_distances" in a.custom_properties
                and "span_date" in a.custom_properties
                and a.custom_properties["span_date"].string_value == span]
    if not matching:
        return {}
    newest = max(matching, key=lambda a: (a.create_time_since_epoch, a.id))
    try:
        return json.loads(newest.custom_properties["drift_distances"].string_value)
    except ValueError as err:
        raise ConfigError(f"artifact {newest.id} in {metadata.url} has malformed drift_distances: {err}",
                          f"rerun the pipeline for span {span}") from err


def raise_drift_thresholds(schema, distances: Dict[str, dict]) -> None:
    """Raises each blocked feature's threshold to just above its measured distance (never lowers)."""
    features = {f.name: f for f in schema.feature}
    for name, finding in sorted(distances.items()):
        if not finding.get("blocked") or name not in features:
            continue
        field = COMPARATOR_FIELDS.get(finding.get("comparator"))
        if field is None:
            raise ConfigError(f"unknown drift comparator {finding.get('comparator')!r} for {name}",
                              f"use one of: {', '.join(COMPARATOR_FIELDS)}")
        comparator = getattr(features[name].drift_comparator, field)
        wanted = raised_threshold(float(finding["distance"]))
        if wanted > comparator.threshold:
            comparator.threshold = wanted


def render_schema(schema, original_text: str) -> str:
    """Text proto with the original file's leading comment block (TFDV's writer drops comments)."""
    from google.protobuf import text_format

    header = []
    for line in original_text.splitlines(keepends=True):
        if not line.startswith("#"):
            break
        header.append(line)
    return "".join(header) + text_format.MessageToString(schema)


@dataclasses.dataclass
class Acceptance:
    span: str
    from_sha: str
    to_sha: str
    changes: List[str]
    new_text: str
    # Value ranges from history: source (one line), spans (what the history entry records),
    # changes (the range lines among `changes`), offered (narrowing not applied) and notes.
    ranges: dict = dataclasses.field(default_factory=dict)


def plan_accept(paths, span_day: dt.date, history_days: int = HISTORY_DAYS, tighten: bool = False) -> Acceptance:
    """What the schema must become for the span to pass, with value ranges proposed from the spans
    that passed in the `history_days` days before it (narrowing applied only with `tighten`);
    writes nothing."""
    from pipelines.config import PipelineConfig, check_span_dir

    folder = check_span_dir(paths.data_root, span_day)
    original = read_schema_bytes(paths)
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    schema = parse_schema(original.decode())
    # The pipeline's own Beam options: without them Beam tries its Prism runner first (a download
    # from GitHub) and leaves a /tmp/beam-temp* behind (PipelineConfig.beam_pipeline_args).
    config = PipelineConfig.for_project(paths, span_day)
    options = PipelineOptions(config.beam_pipeline_args)
    with tempfile.TemporaryDirectory(prefix="schema-accept-") as scratch:  # TFDV leaves its output otherwise
        statistics = tfdv.generate_statistics_from_csv(str(folder / "*.csv"), pipeline_options=options,
                                                       output_path=os.path.join(scratch, "stats.tfrecord"))
    relaxed = schema
    if tfdv.validate_statistics(statistics, schema).anomaly_info:
        relaxed = tfdv.update_schema(schema, statistics)
    relaxed = type(schema).FromString(relaxed.SerializeToString())
    raise_drift_thresholds(relaxed, read_drift_distances(config.metadata, span_day.isoformat()))
    evidence = gather_evidence(config.metadata, span_day, statistics, history_days)
    proposals = propose_ranges(relaxed, schema, evidence, tighten)
    remaining = tfdv.validate_statistics(statistics, relaxed)
    if remaining.anomaly_info:
        found = "; ".join(f"{k}: {v.short_description}" for k, v in sorted(remaining.anomaly_info.items()))
        raise ConfigError(f"span {span_day} still fails after relaxing the schema: {found}",
                          f"edit {paths.schema_path} by hand")
    new_text = render_schema(relaxed, original.decode())
    ranges = {"source": evidence.source(), **evidence.record(), "changes": proposals.changes,
              "offered": proposals.offered, "notes": proposals.notes}
    return Acceptance(span_day.isoformat(), _sha(original), _sha(new_text.encode()),
                      merge_changes(describe_changes(schema, relaxed), proposals), new_text, ranges)


RANGES_RECORDED = ("spans", "history_days", "blocked", "missing")  # the calibration, in the history entry


def apply_accept(paths, plan: Acceptance, by: str, reason: str, now: Optional[dt.datetime] = None) -> Path:
    """Writes the schema and the history entry; returns the new snapshot."""
    now = utc_now(now)
    with _locked(history_dir(paths)):
        _snapshot_locked(paths, now)  # the schema before, in case no run recorded it yet
        if _sha(read_schema_bytes(paths)) != plan.from_sha:
            raise ConfigError(f"{paths.schema_path} changed while `schema accept` ran", "run it again")
        write_atomic(paths.schema_path, plan.new_text.encode(), paths.schema_path.stat().st_mode & 0o777)
        _append(history_dir(paths), {"event": "accept", "time": now.isoformat(timespec="seconds"),
                                     "span": plan.span, "by": by, "reason": reason, "from_sha": plan.from_sha,
                                     "to_sha": plan.to_sha, "changes": plan.changes,
                                     "ranges_from": {key: plan.ranges[key] for key in RANGES_RECORDED
                                                     if key in plan.ranges}})
        return _snapshot_locked(paths, now)


# --- What the `mlops schema` commands show ---


def entry_summary(entry: dict, previous: Optional[dict], directory: Path) -> str:
    """One line: what this history entry changed against the one before it."""
    if entry.get("event") == "accept":
        changes = entry.get("changes") or []
    elif previous is None:
        return "first snapshot"
    else:
        old, new = (snapshot_path(directory, entry_sha(e)) for e in (previous, entry))
        if not (old.is_file() and new.is_file()):
            return "changed outside `schema accept` (earlier snapshot pruned)"
        changes = describe_changes(parse_schema(old.read_text()), parse_schema(new.read_text()))
        changes = ["changed outside `schema accept`"] + changes
    text = "; ".join(changes) or "no change"
    return text if len(text) <= 100 else text[:97] + "..."


def is_risky(change: str) -> bool:
    """A change after which a feature is no longer checked, or checked as something else, or lets
    through values no real trip has (a range past a physical limit)."""
    return any(word in change for word in (": deprecated", ": feature removed", ": type ", PAST_LIMIT))


def schema_in_force(paths, entries: List[dict], when: dt.datetime) -> Tuple[Period, List[str]]:
    """The period in force at `when`, else the oldest one still on disk, with notes saying so."""
    directory, notes = history_dir(paths), []
    stretches = periods(entries)
    started = [i for i, period in enumerate(stretches) if period.start <= when]
    index = started[-1] if started else 0
    if not started:
        notes.append(f"history starts at {stretches[0].start.isoformat()}, after "
                     f"{when.isoformat(timespec='seconds')}: comparing with the oldest snapshot")
    for later in stretches[index:]:
        if snapshot_path(directory, later.sha).is_file():
            if later is not stretches[index]:
                notes.append(f"the snapshot in force then ({stretches[index].sha[:12]}) was pruned: comparing "
                             f"with the oldest kept one, from {later.start.isoformat()}")
            return later, notes
    raise ConfigError(f"no snapshot file under {directory} for the schemas since {when.isoformat()}",
                      "run the pipeline (or `mlops schema accept`) to take a snapshot")
