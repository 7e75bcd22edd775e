"""Bundled data as daily spans: `data/incoming/YYYY-MM-DD/data.csv`.

The Chicago taxi sample shipped inside the tfx wheel (about 15k rows) is shuffled with a fixed
seed and split into consecutive days, so every day has the same distribution (no drift between
seeded days). Asking for more rows than the sample has resamples rows and jitters the numeric
columns slightly, so benchmark spans of 150k or 1.5M rows are not exact copies.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
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
    "extra_column": "adds a column the schema does not know (default: surge_multiplier)",
    "strings_in_numeric": "writes text into a numeric column (default: fare) in --severity of the rows",
    "empty_file": "header only, no rows",
    "no_files": "the span folder exists but holds no CSV file",
    "malformed_row": "--severity of the rows (at least one) get an extra field, breaking the CSV",
    "all_null": "a required column (default: trip_miles) is empty in every row",
    "unknown_category": "--severity of a categorical column's values (default: payment_type) are outside its domain",
    "out_of_range": "--severity of a numeric column's values (default: fare) outside the schema range "
    "(negative for fare/tips/trip_miles/trip_seconds, above the maximum otherwise)",
    "drift": "numeric distribution shift: scales a column (default: trip_miles) by 1 + --severity",
    "categorical_shift": "--severity of the rows get the column's (default: payment_type) rarest common value",
    "label_shift": "--severity of the big tippers get tips 0, shifting the label (big_tipper) distribution",
    "non_utf8": "--severity of a text column's values (default: company) hold Latin-1 bytes that are not UTF-8",
    "duplicates": "a flood of duplicate rows: --severity of the span's rows are copies of other rows",
}
DEFAULT_FAULT_COLUMN = {
    "missing_column": "tips",
    "strings_in_numeric": "fare",
    "all_null": "trip_miles",
    "unknown_category": "payment_type",
    "drift": "trip_miles",
    "categorical_shift": "payment_type",
    "out_of_range": "fare",
    "extra_column": "surge_multiplier",
    "non_utf8": "company",
    "label_shift": "tips",
}
# --severity when none is given: the size of fault a nightly run must catch.
DEFAULT_SEVERITY = {
    "strings_in_numeric": 1.0,
    "malformed_row": 0.01,
    "unknown_category": 0.2,
    "out_of_range": 0.2,
    "drift": 1.0,
    "categorical_shift": 0.5,
    "label_shift": 0.9,
    "non_utf8": 0.05,
    "duplicates": 0.5,
}
NEVER_NEGATIVE = ("fare", "tips", "trip_miles", "trip_seconds")
_COLUMN_FAULTS = ("missing_column", "strings_in_numeric", "all_null", "unknown_category", "out_of_range", "drift",
                  "categorical_shift", "non_utf8", "label_shift")


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    kind: str
    column: Optional[str] = None
    severity: Optional[float] = None

    @property
    def target(self) -> str:
        return self.column or DEFAULT_FAULT_COLUMN.get(self.kind, "")

    @property
    def amount(self) -> float:
        return DEFAULT_SEVERITY.get(self.kind, 1.0) if self.severity is None else self.severity


def _label_shift(header, rows, severity: float, rng: random.Random) -> None:
    """Zeroes the tips of --severity of the big tippers (tips > 20% of fare): fewer positive labels."""
    tips, fare = header.index("tips"), header.index("fare")
    for row in rows:
        try:
            big_tipper = float(row[tips]) > 0.2 * float(row[fare])
        except ValueError:
            continue
        if big_tipper and rng.random() < severity:
            row[tips] = "0.0"


def make_span(
    data_root: Path,
    day: dt.date,
    fault: FaultSpec,
    rows: int = 1500,
    seed_value: int = 7,
    overwrite: bool = False,
) -> Path:
    """Writes the span folder for `day` with one fault injected (for tests, demos and drills).

    Rows are drawn without replacement from the bundled sample (with replacement only when more
    rows than the sample are asked for), so a clean span has no duplicate rows."""
    if fault.kind not in FAULTS:
        raise ConfigError(f"unknown fault {fault.kind!r}", f"use one of: {', '.join(FAULTS)}")
    severity = fault.amount
    if not 0.0 <= severity <= 100.0:
        raise ConfigError(f"--severity {severity} is out of range", "pass a fraction such as 0.5")
    if rows < 1 and fault.kind not in ("empty_file", "no_files"):
        raise ConfigError(f"--rows {rows} must be at least 1", "pass --rows 1 or more")
    folder = data_root / day.isoformat()
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise ConfigError(f"span {day} already exists at {folder}", "pass --overwrite or pick another --date")
    header, all_rows = read_rows(bundled_csv_path())
    rng = random.Random(seed_value)
    if rows <= len(all_rows):
        picked = [list(row) for row in rng.sample(all_rows, rows)]
    else:
        picked = [list(all_rows[rng.randrange(len(all_rows))]) for _ in range(rows)]
    column = fault.target
    if fault.kind in _COLUMN_FAULTS and column not in header:
        raise ConfigError(f"no column {column!r} in the taxi data", f"pick one of: {', '.join(header)}")
    if fault.kind == "no_files":
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.csv"):
            stale.unlink()
        (folder / "README.txt").write_text("fault no_files: this span has no CSV file\n")
        return folder
    index = header.index(column) if column in header else -1
    if fault.kind == "empty_file":
        picked = []
    elif fault.kind == "missing_column":
        header = header[:index] + header[index + 1:]
        picked = [row[:index] + row[index + 1:] for row in picked]
    elif fault.kind == "extra_column":
        header = header + [column]
        picked = [row + [f"{rng.uniform(1, 3):.2f}"] for row in picked]
    elif fault.kind == "malformed_row":
        broken = max(1, int(round(severity * len(picked))))
        for row in rng.sample(picked, broken):
            row.append("stray field")
    elif fault.kind == "duplicates":
        copies = int(round(severity * len(picked)))
        originals = picked[: len(picked) - copies]
        picked = originals + [list(rng.choice(originals)) for _ in range(copies)]
        rng.shuffle(picked)
    elif fault.kind == "label_shift":
        _label_shift(header, picked, severity, rng)
    elif fault.kind == "categorical_shift":
        counts = collections.Counter(row[index] for row in picked if row[index])
        common = [value for value, n in counts.most_common() if n >= 0.01 * len(picked)]
        rare = common[-1] if common else "Cash"
        for row in picked:
            if rng.random() < severity:
                row[index] = rare
    elif fault.kind == "non_utf8":
        return _write_non_utf8(folder, header, picked, index, severity, rng)
    else:
        for row in picked:
            if fault.kind == "drift" and row[index] != "":
                row[index] = f"{float(row[index]) * (1.0 + severity):.2f}"
            elif fault.kind == "all_null":
                row[index] = ""
            elif fault.kind == "strings_in_numeric" and rng.random() < severity:
                row[index] = rng.choice(["n/a", "unknown", "twelve"])
            elif fault.kind == "unknown_category" and rng.random() < severity:
                row[index] = rng.choice(["Bitcoin", "Barter", "IOU"])
            elif fault.kind == "out_of_range" and rng.random() < severity:
                if column in NEVER_NEGATIVE:
                    row[index] = f"{-1.0 - abs(float(row[index] or 0)):.2f}"
                else:
                    row[index] = str(100 + rng.randrange(100))
    return write_span(folder, header, picked)


def _write_non_utf8(folder: Path, header, rows, index: int, severity: float, rng: random.Random) -> Path:
    """Writes the span as bytes, with --severity of one column's values encoded as Latin-1."""
    folder.mkdir(parents=True, exist_ok=True)
    target, tmp = folder / SPAN_FILE, folder / f".{SPAN_FILE}.tmp"
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(header)
    lines = [buffer.getvalue().encode("utf-8")]
    touched = 0
    for row in rows:
        latin1 = rng.random() < severity or (touched == 0 and row is rows[-1])
        if latin1:
            row[index] = "Caf\u00e9 Taxi Soci\u00e9t\u00e9"
            touched += 1
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        lines.append(buffer.getvalue().encode("latin-1" if latin1 else "utf-8"))
    tmp.write_bytes(b"".join(lines))
    os.replace(tmp, target)
    return target
