"""Bundled data as daily spans: `data/incoming/YYYY-MM-DD/data.csv`.

The Chicago taxi sample shipped inside the tfx wheel (about 15k rows) is shuffled with a fixed
seed and split into consecutive days, so every day has the same distribution (no drift between
seeded days). Asking for more rows than the sample has resamples rows and jitters the numeric
columns slightly, so benchmark spans of 150k or 1.5M rows are not exact copies.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import importlib.util
import os
import random
from pathlib import Path
from typing import Callable, List, Optional

from pipelines.errors import ConfigError

JITTER_COLUMNS = ("fare", "trip_miles", "trip_seconds", "tips")
SPAN_FILE = "data.csv"


def bundled_csv_path() -> Path:
    """The taxi CSV inside the installed tfx wheel (found without importing tfx)."""
    spec = importlib.util.find_spec("tfx")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("tfx is not installed in this environment", "run `make` to build .venv")
    root = Path(list(spec.submodule_search_locations)[0])
    path = root / "examples" / "chicago_taxi_pipeline" / "data" / "simple" / "data.csv"
    if not path.is_file():
        raise ConfigError(f"bundled taxi data not found at {path}", "reinstall tfx==1.16.0 (`make clean && make`)")
    return path


def read_rows(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


@dataclasses.dataclass(frozen=True)
class SeedPlan:
    end: dt.date
    days: int = 5
    rows_per_day: Optional[int] = None  # default: the bundled rows split evenly
    seed: int = 42

    @property
    def dates(self) -> List[dt.date]:
        return [self.end - dt.timedelta(days=offset) for offset in range(self.days - 1, -1, -1)]


def _jitter(header, row, rng: random.Random):
    out = list(row)
    for column in JITTER_COLUMNS:
        index = header.index(column)
        if out[index] == "":
            continue
        value = float(out[index]) * rng.uniform(0.95, 1.05)
        out[index] = str(int(round(value))) if column == "trip_seconds" else f"{value:.2f}"
    return out


def write_span(folder: Path, header, rows) -> Path:
    """Writes one span atomically (temp file + rename), so a reader never sees half a file."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / SPAN_FILE
    tmp = folder / f".{SPAN_FILE}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, target)
    return target


def seed(data_root: Path, plan: SeedPlan, overwrite: bool = False, progress: Callable[[str], None] = print) -> List[Path]:
    """Writes one folder per day. Existing spans are kept unless `overwrite` (idempotent)."""
    if plan.days < 1:
        raise ConfigError(f"--days {plan.days} must be at least 1", "pass --days 1 or more")
    header, rows = read_rows(bundled_csv_path())
    rng = random.Random(plan.seed)
    rng.shuffle(rows)
    per_day = plan.rows_per_day or len(rows) // plan.days
    if per_day < 1:
        raise ConfigError(f"--rows-per-day {per_day} must be at least 1", "pass --rows-per-day 1 or more")
    written = []
    cursor = 0
    for day in plan.dates:
        folder = data_root / day.isoformat()
        if (folder / SPAN_FILE).exists() and not overwrite:
            progress(f"span {day}: kept existing {folder / SPAN_FILE}")
            cursor += per_day
            continue
        if cursor + per_day <= len(rows):
            day_rows = rows[cursor:cursor + per_day]
        else:
            day_rows = [_jitter(header, rows[rng.randrange(len(rows))], rng) for _ in range(per_day)]
        cursor += per_day
        written.append(write_span(folder, header, day_rows))
        progress(f"span {day}: wrote {len(day_rows)} rows to {folder / SPAN_FILE}")
    return written


def list_spans(data_root: Path) -> List[dt.date]:
    spans = []
    if data_root.is_dir():
        for child in data_root.iterdir():
            try:
                spans.append(dt.date.fromisoformat(child.name))
            except ValueError:
                continue
    return sorted(spans)


def latest_span(data_root: Path) -> dt.date:
    spans = list_spans(data_root)
    if not spans:
        raise ConfigError(f"no spans under {data_root}", "seed data with `mlops data seed`")
    return spans[-1]


# ------------------------------------------------------------------------------ fault spans

FAULTS = {
    "none": "a clean span (same distribution as the seeded days)",
    "missing_column": "drops a required column (default: tips)",
    "extra_column": "adds a column the schema does not know",
    "strings_in_numeric": "writes text into a numeric column (default: fare) in --severity of the rows",
    "empty_file": "header only, no rows",
    "no_files": "the span folder exists but holds no CSV file",
    "drift": "scales a numeric column (default: trip_miles) by 1 + --severity",
    "out_of_range": "puts --severity of a column's values (default: trip_start_hour) outside the schema range",
}
DEFAULT_FAULT_COLUMN = {
    "missing_column": "tips",
    "strings_in_numeric": "fare",
    "drift": "trip_miles",
    "out_of_range": "trip_start_hour",
    "extra_column": "surge_multiplier",
}


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    kind: str
    column: Optional[str] = None
    severity: float = 1.0

    @property
    def target(self) -> str:
        return self.column or DEFAULT_FAULT_COLUMN.get(self.kind, "")


def make_span(
    data_root: Path,
    day: dt.date,
    fault: FaultSpec,
    rows: int = 1500,
    seed_value: int = 7,
    overwrite: bool = False,
) -> Path:
    """Writes the span folder for `day` with one fault injected (for tests, demos and drills)."""
    if fault.kind not in FAULTS:
        raise ConfigError(f"unknown fault {fault.kind!r}", f"use one of: {', '.join(FAULTS)}")
    if not 0.0 <= fault.severity <= 100.0:
        raise ConfigError(f"--severity {fault.severity} is out of range", "pass a fraction such as 0.5")
    folder = data_root / day.isoformat()
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ConfigError(f"span {day} already exists at {folder}", "pass --overwrite or pick another --date")
    header, all_rows = read_rows(bundled_csv_path())
    rng = random.Random(seed_value)
    picked = [list(all_rows[rng.randrange(len(all_rows))]) for _ in range(rows)]
    column = fault.target
    if fault.kind in ("missing_column", "strings_in_numeric", "drift", "out_of_range") and column not in header:
        raise ConfigError(f"no column {column!r} in the taxi data", f"pick one of: {', '.join(header)}")
    if fault.kind == "no_files":
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.csv"):
            stale.unlink()
        (folder / "README.txt").write_text("fault no_files: this span has no CSV file\n")
        return folder
    if fault.kind == "empty_file":
        picked = []
    elif fault.kind == "missing_column":
        index = header.index(column)
        header = header[:index] + header[index + 1:]
        picked = [row[:index] + row[index + 1:] for row in picked]
    elif fault.kind == "extra_column":
        header = header + [column]
        picked = [row + [f"{rng.uniform(1, 3):.2f}"] for row in picked]
    else:
        index = header.index(column)
        for row in picked:
            if fault.kind == "drift" and row[index] != "":
                row[index] = f"{float(row[index]) * (1.0 + fault.severity):.2f}"
            elif fault.kind == "strings_in_numeric" and rng.random() < fault.severity:
                row[index] = rng.choice(["n/a", "unknown", "twelve"])
            elif fault.kind == "out_of_range" and rng.random() < fault.severity:
                row[index] = str(100 + rng.randrange(100))
    return write_span(folder, header, picked)
