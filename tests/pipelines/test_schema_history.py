"""Schema history: snapshots on every run, `mlops schema accept|diff|history|prune` (real TFDV, real files)."""

import datetime as dt
import hashlib
import json
import logging
import re
import multiprocessing
import subprocess
import sys

import pytest

from pipelines import schema_diff, schema_history
from pipelines.config import ProjectPaths
from pipelines.errors import ConfigError
from tests.conftest import REPO, make_home, mlops

T0 = dt.datetime(2026, 1, 5, 2, 0, tzinfo=dt.timezone.utc)
SPAN = "2026-11-25"


def project(tmp_path):
    """A home with the curated schema and no seeded spans (the tests make the spans they need)."""
    return ProjectPaths.from_env(str(make_home(tmp_path, days=0)))


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_schema(paths, old: str, new: str) -> None:
    text = paths.schema_path.read_text()
    assert old in text
    paths.schema_path.write_text(text.replace(old, new, 1))


def entries(paths):
    return schema_history.read_history(paths)


def run_cli(capsys, paths, *argv):
    """The real argument parser and handler in this process (TFDV is imported once, not per command)."""
    from pipelines.cli import build_parser

    args = build_parser().parse_args(["--home", str(paths.home), *argv])
    code = args.handler(args)
    return code, capsys.readouterr().out


# --- snapshots (no TFX) ---


def test_importing_and_snapshotting_load_neither_tensorflow_nor_tfdv_nor_ml_metadata(tmp_path):
    paths = project(tmp_path)
    code = ("import sys; from pipelines.config import ProjectPaths; from pipelines import schema_history as s; "
            f"s.snapshot_for_run(ProjectPaths.from_env({str(paths.home)!r})); "
            "print(sorted(m for m in ('tensorflow', 'tfx', 'tensorflow_data_validation', 'ml_metadata') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_snapshot_is_content_addressed_and_idempotent(tmp_path):
    paths = project(tmp_path)
    first = schema_history.snapshot_for_run(paths, now=T0)
    assert first == paths.var / "schemas" / "taxi" / f"{sha(paths.schema_path)[:12]}.pbtxt"
    assert first.read_bytes() == paths.schema_path.read_bytes()
    again = schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=1))
    assert again == first
    (entry,) = entries(paths)
    assert entry == {"event": "snapshot", "time": "2026-01-05T02:00:00+00:00", "sha": sha(paths.schema_path),
                     "file": first.name}


def test_a_changed_schema_gets_a_new_snapshot_and_entry(tmp_path):
    paths = project(tmp_path)
    original = schema_history.snapshot_for_run(paths, now=T0)
    edit_schema(paths, "max: 23", "max: 24")
    changed = schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(hours=1))
    assert changed != original and original.is_file()
    assert changed.read_bytes() == paths.schema_path.read_bytes()
    edit_schema(paths, "max: 24", "max: 23")  # reverted: the first snapshot is in force again
    assert schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(hours=2)) == original
    assert [e["sha"][:12] for e in entries(paths)] == [original.stem, changed.stem, original.stem]


def test_snapshots_out_of_force_for_30_days_are_pruned_never_the_current_one(tmp_path):
    paths = project(tmp_path)
    first = schema_history.snapshot_for_run(paths, now=T0)
    edit_schema(paths, "max: 23", "max: 24")
    second = schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=1))
    schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=30))  # first out of force for 29 days
    assert first.is_file()
    schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=32))
    assert not first.exists()
    schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=400))
    assert second.is_file()  # in force since day 1: current, however old
    assert len(entries(paths)) == 2  # pruning removes files, never history


def test_prune_keeps_the_schema_file_in_use_even_if_history_says_it_went_out_of_force(tmp_path):
    paths = project(tmp_path)
    original_text = paths.schema_path.read_text()
    first = schema_history.snapshot_for_run(paths, now=T0)
    edit_schema(paths, "max: 23", "max: 24")
    second = schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=1))
    paths.schema_path.write_text(original_text)  # restored by hand; no run has snapshotted it yet
    removed = schema_history.prune_snapshots(paths, keep_days=30, now=T0 + dt.timedelta(days=90))
    assert removed == [] and first.is_file() and second.is_file()


def _snapshot_many(home: str) -> None:
    for _ in range(20):
        schema_history.snapshot_for_run(ProjectPaths.from_env(home))


def test_concurrent_runs_record_the_schema_once(tmp_path):
    paths = project(tmp_path)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_snapshot_many, args=(str(paths.home),)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(entries(paths)) == 1
    directory = paths.var / "schemas" / "taxi"
    assert sorted(p.name for p in directory.iterdir()) == [".lock", f"{sha(paths.schema_path)[:12]}.pbtxt",
                                                          "history.jsonl"]  # no temporary files left


def test_missing_schema_is_a_config_error_with_a_fix(tmp_path):
    paths = project(tmp_path)
    paths.schema_path.unlink()
    with pytest.raises(ConfigError, match=r"schema\.pbtxt does not exist \(restore .* from git\)"):
        schema_history.snapshot_for_run(paths)


def test_prune_command_removes_old_snapshots_once(tmp_path):
    paths = project(tmp_path)
    now = dt.datetime.now(dt.timezone.utc)
    first = schema_history.snapshot_for_run(paths, now=now - dt.timedelta(days=100))
    edit_schema(paths, "max: 23", "max: 24")
    schema_history.snapshot_for_run(paths, now=now - dt.timedelta(days=50))
    assert "nothing to prune" in mlops(paths.home, "schema", "prune", "--keep-days", "60").stdout
    assert first.is_file()
    assert f"removed {first}" in mlops(paths.home, "schema", "prune").stdout
    assert not first.exists()
    assert "nothing to prune" in mlops(paths.home, "schema", "prune").stdout


# --- comparing schemas ---


def test_describe_changes_names_each_kind_of_change(tmp_path):
    paths = project(tmp_path)
    old_text = paths.schema_path.read_text()
    new_text = old_text
    for before, after in [
        ('value: "Top Cab Affiliation"\n', 'value: "Top Cab Affiliation" value: "A Cab" value: "B Cab" value: "C Cab"\n'),
        ('value: "Prcard"\n', ""),
        ("max: 23", "max: 30"),
        ('name: "trip_start_timestamp"\n  type: INT', 'name: "trip_start_timestamp"\n  type: FLOAT'),
        ('name: "dropoff_community_area"\n', 'name: "dropoff_community_area"\nlifecycle_stage: DEPRECATED\n'),
        ('feature {\n  name: "pickup_latitude"\n  type: FLOAT\n  float_domain {\n    min: 41.6\n    max: 42.1\n  }\n'
         '  presence {\n    min_count: 0\n  }\n}\n', ""),
    ]:
        assert before in new_text
        new_text = new_text.replace(before, after, 1)
    tips = re.search(r'name: "tips".*?threshold: ([0-9.]+)', new_text, flags=re.S)
    tips_threshold = float(tips[1])
    new_text = new_text[:tips.start(1)] + "0.47" + new_text[tips.end(1):]
    old, new = schema_diff.parse_schema(old_text), schema_diff.parse_schema(new_text)
    assert sorted(schema_diff.describe_changes(old, new)) == sorted([
        "trip_start_hour: int range [0, 23] -> int range [0, 30]",
        "trip_start_timestamp: type INT -> FLOAT",
        "payment_type: 1 domain value removed ('Prcard')",
        "company: 3 new domain values added ('A Cab', 'B Cab', 'C Cab')",
        f"tips: drift threshold {tips_threshold:.2f} -> 0.47",
        "pickup_latitude: feature removed (was FLOAT)",
        "dropoff_community_area: deprecated (no longer validated: the span lacks it or its values do not fit)",
    ])
    assert schema_diff.describe_changes(old, old) == []


def test_diff_between_dates_uses_the_schema_in_force_then(tmp_path):
    paths = project(tmp_path)
    schema_history.snapshot_for_run(paths, now=T0)
    edit_schema(paths, "max: 23", "max: 24")
    schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=10))
    edit_schema(paths, "max: 12", "max: 13")
    schema_history.snapshot_for_run(paths, now=T0 + dt.timedelta(days=20))
    window = mlops(paths.home, "schema", "diff", "--from", "2026-01-06", "--to", "2026-01-16", "--unified").stdout
    assert "trip_start_hour: int range [0, 23] -> int range [0, 24]" in window
    assert "trip_start_month" not in window  # changed after --to
    assert "-    max: 23\n+    max: 24" in window
    since = json.loads(mlops(paths.home, "schema", "diff", "--since", "3650d", "--json").stdout)
    assert len(since["changes"]) == 2
    assert since["notes"] and "comparing with the oldest snapshot" in since["notes"][0]


# --- accepting a span (real TFDV) ---


def test_accept_adds_a_new_column_records_why_and_is_idempotent(tmp_path, capsys, caplog):
    paths = project(tmp_path)
    mlops(paths.home, "data", "make-span", "--date", SPAN, "--fault", "extra_column")
    before = paths.schema_path.read_text()
    accepted = mlops(paths.home, "schema", "accept", "--date", SPAN, "--reason", "surge pricing launched",
                     "--by", "alice").stdout
    assert "  surge_multiplier: new feature (FLOAT)" in accepted
    after = paths.schema_path.read_text()
    assert 'name: "surge_multiplier"' in after
    header = before[:before.index("feature {")]
    assert header.startswith("# Curated schema") and after.startswith(header)  # comments kept

    history = json.loads(mlops(paths.home, "schema", "history", "--json").stdout)
    accept = history[-1]
    assert accept["event"] == "accept" and accept["span"] == SPAN
    assert (accept["by"], accept["reason"]) == ("alice", "surge pricing launched")
    # the new column is guarded from the start: a range from the span (no passed span in ML Metadata)
    assert accept["changes"][0] == "surge_multiplier: new feature (FLOAT)"
    assert re.fullmatch(rf"surge_multiplier: range added \[[0-9.]+, [0-9.]+\] \(from span {SPAN} alone\)",
                        accept["changes"][1]) and len(accept["changes"]) == 2
    assert accept["ranges_from"] == {"spans": [SPAN], "history_days": 30, "blocked": [], "missing": []}
    assert accept["from_sha"] == hashlib.sha256(before.encode()).hexdigest() == history[0]["sha"]
    assert accept["to_sha"] == sha(paths.schema_path)
    assert (paths.var / "schemas" / "taxi" / f"{accept['to_sha'][:12]}.pbtxt").read_text() == after

    caplog.set_level(logging.INFO, logger="apache_beam.runners.direct.direct_runner")
    code, again = run_cli(capsys, paths, "schema", "accept", "--date", SPAN)  # in process: saves a TF import
    assert (code, again.strip()) == (0, f"nothing to change: span {SPAN} already passes the schema")
    # TFDV ran with the pipeline's Beam options (without them Beam logs "... PrismRunner ..." here)
    assert not any("Prism" in r.getMessage() for r in caplog.records)
    assert paths.schema_path.read_text() == after
    assert len(json.loads(mlops(paths.home, "schema", "history", "--json").stdout)) == len(history)

    diff = mlops(paths.home, "schema", "diff", "--since", "30d").stdout
    assert "surge_multiplier: new feature (FLOAT)" in diff
    listed = mlops(paths.home, "schema", "history").stdout
    assert "by alice" in listed and "reason: surge pricing launched" in listed


def test_accept_dry_run_writes_nothing(tmp_path, capsys):
    paths = project(tmp_path)
    mlops(paths.home, "data", "make-span", "--date", SPAN, "--fault", "extra_column")
    before = paths.schema_path.read_bytes()
    code, out = run_cli(capsys, paths, "schema", "accept", "--date", SPAN, "--dry-run")
    assert code == 0
    assert "would change" in out and "surge_multiplier: new feature (FLOAT)" in out
    assert paths.schema_path.read_bytes() == before
    assert not (paths.var / "schemas").exists()


def test_accept_without_csv_names_the_folder_and_the_fix(tmp_path):
    paths = project(tmp_path)
    mlops(paths.home, "data", "make-span", "--date", SPAN, "--fault", "no_files")
    result = mlops(paths.home, "schema", "accept", "--date", SPAN, check=False)
    assert result.returncode == 2
    assert str(paths.data_root / SPAN) in result.stderr and "put the day's *.csv files there" in result.stderr


def _write_drift_findings(paths, span: str, findings: dict) -> None:
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(paths.metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="ExampleAnomalies"))
    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri=str(paths.var / "anomalies"))
    artifact.custom_properties["span_date"].string_value = span
    artifact.custom_properties["drift_distances"].string_value = json.dumps(findings)
    store.put_artifacts([artifact])


def finding(distance, threshold, blocked, comparator="jensen_shannon_divergence"):
    return {"distance": distance, "threshold": threshold, "comparator": comparator,
            "baseline": "previous_span", "blocked": blocked}


def thresholds(paths) -> dict:
    schema = schema_diff.parse_schema(paths.schema_path.read_text())
    return {f.name: schema_diff.drift_threshold(f) for f in schema.feature}


def test_accept_raises_blocked_drift_thresholds_from_ml_metadata(tmp_path, capsys):
    paths = project(tmp_path)
    mlops(paths.home, "data", "make-span", "--date", SPAN, "--fault", "none")
    paths.var.mkdir(parents=True)
    _write_drift_findings(paths, SPAN, {"tips": finding(0.9, 0.3, True)})  # older run: superseded
    _write_drift_findings(paths, "2026-11-24", {"trip_seconds": finding(0.8, 0.3, True)})  # another span
    _write_drift_findings(paths, SPAN, {
        "tips": finding(0.4272, 0.3, True),
        "payment_type": finding(0.2, 0.1, True, comparator="l_infinity"),
        "fare": finding(0.5, 0.3, False),  # warn-only: not blocked, not accepted
    })
    before = thresholds(paths)
    code, out = run_cli(capsys, paths, "schema", "accept", "--date", SPAN, "--reason", "new tipping UI", "--json")
    assert code == 0
    result = json.loads(out)
    assert sorted(result["changes"]) == [f"payment_type: drift threshold {before['payment_type']:.2f} -> 0.22",
                                         f"tips: drift threshold {before['tips']:.2f} -> 0.47"]
    assert result["written"] is True
    now = thresholds(paths)
    assert (now["tips"], now["payment_type"]) == (0.47, 0.22)
    assert (now["fare"], now["trip_seconds"]) == (before["fare"], before["trip_seconds"])  # not blocked: untouched
    code, out = run_cli(capsys, paths, "schema", "accept", "--date", SPAN)
    assert out.strip() == f"nothing to change: span {SPAN} already passes the schema"


def test_raised_threshold_leaves_ten_percent_room_without_float_noise():
    assert schema_history.raised_threshold(0.4272) == 0.47
    assert schema_history.raised_threshold(0.2) == 0.22  # 0.2 * 110 is 22.000000000000004
    assert schema_history.raised_threshold(0.3001) == 0.34


def test_every_schema_command_explains_itself(tmp_path):
    for command in ("history", "accept", "diff", "prune"):
        text = mlops(tmp_path, "schema", command, "--help").stdout
        assert f"usage: mlops schema {command}" in text
        assert len(text.split("\n\n")[1]) > 80  # a description paragraph, not only the usage line
