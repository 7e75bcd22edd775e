"""`mlops schema lint`: every feature of the shipped schema is guarded by a range/domain or a drift
comparator (this is how `make test` lints the shipped schema: through the real command)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

from pipelines import schema_lint
from pipelines.data import bundled_csv_path, read_rows
from pipelines.errors import EXIT_CONFIG
from tests.conftest import REPO, make_home, mlops

SHIPPED = REPO / "schemas" / "taxi" / "schema.pbtxt"
LATITUDE_RANGE = '  name: "pickup_latitude"\n  type: FLOAT\n  float_domain {\n    min: 41.6\n    max: 42.1\n  }\n'


def home_with_schema(tmp_path, text=None):
    home = make_home(tmp_path, days=0)
    if text is not None:
        (home / "schemas" / "taxi" / "schema.pbtxt").write_text(text)
    return home


def test_the_shipped_schema_passes_the_lint(tmp_path):
    result = mlops(home_with_schema(tmp_path), "schema", "lint")
    assert result.returncode == 0
    assert "every feature is guarded (18 features)" in result.stdout
    assert " unguarded" not in result.stdout
    assert re.search(r"pickup_latitude\s+FLOAT\s+optional\s+float \[41\.6, 42\.1\]\s+none\s+guarded", result.stdout)
    assert re.search(r"fare\s+FLOAT\s+required\s+float \[0, inf\]\s+jensen_shannon_divergence 0\.02\s+guarded",
                     result.stdout)


def test_removing_a_range_fails_naming_the_feature(tmp_path):
    text = SHIPPED.read_text()
    assert LATITUDE_RANGE in text
    home = home_with_schema(tmp_path, text.replace(LATITUDE_RANGE, '  name: "pickup_latitude"\n  type: FLOAT\n', 1))
    result = mlops(home, "schema", "lint", check=False)
    assert result.returncode == EXIT_CONFIG
    assert re.search(r"pickup_latitude\s+FLOAT\s+optional\s+none\s+none\s+unguarded", result.stdout)
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 1 unguarded feature(s)")
    assert "pickup_latitude" in error and "dropoff_latitude" not in error
    assert "drift_comparator" in error and "schema.pbtxt" in error


def test_a_range_without_bounds_and_a_drift_comparator_alone(tmp_path):
    schema = schema_lint.parse_schema(SHIPPED.read_text())
    rows = {row.name: row for row in schema_lint.lint(schema)}
    assert rows["company"].domain == "string domain company (61 values, min mass 0.98)"
    assert rows["company"].drift == "infinity_norm 0.1"
    assert rows["payment_type"].presence == "required"
    feature = next(f for f in schema.feature if f.name == "trip_start_timestamp")
    feature.int_domain.ClearField("min")  # an int_domain with no bound checks nothing
    feature.drift_comparator.jensen_shannon_divergence.threshold = 0.05
    rows = {row.name: row for row in schema_lint.lint(schema)}
    assert rows["trip_start_timestamp"].domain is None
    assert rows["trip_start_timestamp"].drift == "jensen_shannon_divergence 0.05"
    assert rows["trip_start_timestamp"].verdict == "guarded"
    feature.ClearField("drift_comparator")
    assert {row.name for row in schema_lint.lint(schema) if not row.guarded} == {"trip_start_timestamp"}


def test_json_output(tmp_path):
    result = mlops(home_with_schema(tmp_path), "schema", "lint", "--json")
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["unguarded"] == [] and report["span"] is None
    assert report["schema"].endswith("schema.pbtxt")
    assert len(report["features"]) == 18
    assert report["features"][0] == {"name": "pickup_community_area", "type": "INT", "presence": "optional",
                                     "domain": "int [1, 77]", "drift": None, "verdict": "guarded"}
    assert {f["verdict"] for f in report["features"]} == {"guarded"}


def test_date_lists_span_columns_not_in_the_schema(tmp_path):
    home = home_with_schema(tmp_path)
    folder = home / "data" / "incoming" / "2026-11-21"
    folder.mkdir(parents=True)
    header, rows = read_rows(bundled_csv_path())
    with open(folder / "data.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header + ["driver_rating"])
        writer.writerows(row + ["5"] for row in rows[:3])
    result = mlops(home, "schema", "lint", "--date", "2026-11-21", check=False)
    assert result.returncode == EXIT_CONFIG
    assert re.search(r"driver_rating\s+-\s+not in the schema\s+none\s+none\s+unguarded", result.stdout)
    assert "driver_rating (not in the schema)" in result.stderr
    report = json.loads(mlops(home, "schema", "lint", "--date", "2026-11-21", "--json", check=False).stdout)
    assert report["ok"] is False and report["unguarded"] == ["driver_rating"] and report["span"] == "2026-11-21"
    assert report["features"][-1] == {"name": "driver_rating", "type": "", "presence": "not in the schema",
                                      "domain": None, "drift": None, "verdict": "unguarded"}
    missing = mlops(home, "schema", "lint", "--date", "2026-11-22", check=False)
    assert missing.returncode == EXIT_CONFIG and "no CSV file" in missing.stderr


def test_every_bundled_row_fits_the_shipped_ranges():
    schema = schema_lint.parse_schema(SHIPPED.read_text())
    header, rows = read_rows(bundled_csv_path())
    outside = []
    for feature in schema.feature:
        domain = (feature.int_domain if feature.HasField("int_domain")
                  else feature.float_domain if feature.HasField("float_domain") else None)
        if domain is None:
            continue
        index = header.index(feature.name)
        for row in rows:
            if row[index] == "":
                continue
            value = float(row[index])
            if (domain.HasField("min") and value < domain.min) or (domain.HasField("max") and value > domain.max):
                outside.append((feature.name, row[index]))
    assert outside == []


def test_importing_the_lint_loads_no_tensorflow():
    code = ("import sys; from pipelines import schema_lint as s; s.lint_file(%r); "
            "print(sorted(m for m in ('tensorflow', 'tfx', 'tensorflow_data_validation') if m in sys.modules))"
            % str(SHIPPED))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_lint_explains_itself(tmp_path):
    text = mlops(tmp_path, "schema", "lint", "--help").stdout
    assert "usage: mlops schema lint" in text and "--date" in text and "--json" in text
    assert "unguarded" in text.split("\n\n")[1]
