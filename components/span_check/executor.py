"""The first data gate: the span's raw CSV files, before ExampleGen parses them.

CsvExampleGen fails on a malformed row or undecodable bytes with a Beam traceback that names
neither the file nor the column, and stock TFX never looks for a flood of duplicate rows. This
gate reads the files once with pyarrow (the physical CSV parse rate, see bench/RESULTS.md) and
checks, naming file, line and column in each finding:

- the span folder holds at least one `*.csv` file, and each has at least one row;
- every byte decodes as UTF-8;
- the header has every column the schema requires and no column the schema does not know;
- every row has as many fields as the header;
- numeric columns (INT/FLOAT in the schema) hold numbers or nothing;
- duplicate rows are at most `max_duplicate_fraction` of the span.

Findings and facts (rows, files, duplicates) are recorded on the output artifact
(`components.verdict`); the node runner stops the run when one of them blocks.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import INPUT_BASE_KEY, SCHEMA_KEY
from tfx.utils import io_utils

from components import verdict
from components.span_check.spec import (DEFAULT_MAX_DUPLICATE_FRACTION, INPUT_FILES, MAX_DUPLICATE_FRACTION_KEY,
                                        REPORT_KEY, SPAN_DATE_KEY)
from components.util.schemas import load_schema
from components.verdict import fix_or_accept

log = logging.getLogger(__name__)

GATE = "span_check"
NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"
FIX_PRODUCER = "fix the data producer (or the file) and rerun the span"


@dataclasses.dataclass
class SpanFacts:
    files: int = 0
    rows: int = 0
    duplicate_rows: int = 0
    columns: Sequence[str] = ()
    # One {"name", "bytes", "sha256", "rows"} per file, as read: what `mlops lineage` shows as the inputs.
    inputs: List[dict] = dataclasses.field(default_factory=list)


def _finding(feature: str, kind: str, message: str, fix: str, blocking: bool = True, **facts) -> dict:
    return dict(feature=feature, kind=kind, message=message, fix=fix, blocking=blocking, **facts)


def schema_columns(schema) -> Dict[str, dict]:
    """{column: {"type": INT|FLOAT|BYTES, "required": bool}} from a tensorflow_metadata Schema."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    columns = {}
    for feature in schema.feature:
        required = feature.presence.min_fraction >= 1.0
        columns[feature.name] = dict(type=schema_pb2.FeatureType.Name(feature.type), required=required)
    return columns


def _non_utf8(data: bytes, header: List[str]) -> Optional[dict]:
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError as err:
        first_line = data.count(b"\n", 0, err.start) + 1
    bad_lines, columns = 0, set()
    for line in data.split(b"\n"):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines += 1
            fields = next(csv.reader([line.decode("latin-1")]), [])
            columns.update(header[i] for i, field in enumerate(fields)
                           if i < len(header) and not field.isascii())
    return dict(first_line=first_line, lines=bad_lines, columns=sorted(columns))


def _first_bad_line(data: bytes, fields: int) -> int:
    """Line number of the first row whose field count differs from the header's (pyarrow 10's
    invalid-row handler does not report it). Only called when such a row exists."""
    text = data.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    for row in reader:
        if len(row) != fields and row:
            return reader.line_num
    return -1


def duplicate_limit(exec_properties: Dict[str, Any]) -> float:
    """The configured duplicate-row limit; 0.0 means no duplicates at all, not "the default"."""
    value = exec_properties.get(MAX_DUPLICATE_FRACTION_KEY)
    return DEFAULT_MAX_DUPLICATE_FRACTION if value is None else float(value)


def check_files(files: Sequence[Path], schema_cols: Dict[str, dict], span_date: str,
                max_duplicate_fraction: float) -> tuple:
    """(findings, SpanFacts) for the span's CSV files. Pure: reads the files, writes nothing."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    findings: List[dict] = []
    facts = SpanFacts(files=len(files))
    if not files:
        return [_finding("(span)", "no_files", "no CSV file in the span folder",
                         "deliver the day's *.csv files to the span folder and rerun the span")], facts
    tables = []
    header: List[str] = []
    for path in files:
        data = path.read_bytes()
        facts.inputs.append({"name": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                             "rows": 0})
        first_line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
        file_header = next(csv.reader([first_line]), []) if first_line.strip() else []
        name = path.name
        if not file_header:
            findings.append(_finding("(span)", "empty_file", f"{name} is empty (not even a header line)", FIX_PRODUCER))
            continue
        if header and file_header != header:
            findings.append(_finding("(span)", "header_mismatch",
                                     f"{name} has header {file_header}, the span's first file {header}", FIX_PRODUCER))
            continue
        header = header or file_header
        bad_bytes = _non_utf8(data, file_header)
        if bad_bytes:
            where = ", ".join(bad_bytes["columns"]) or "(unknown column)"
            findings.append(_finding(
                where, "non_utf8",
                f"{where}: {bad_bytes['lines']} line(s) of {name} are not UTF-8 (first on line {bad_bytes['first_line']}; "
                "expected UTF-8 text)", "re-export the file as UTF-8 and rerun the span", lines=bad_bytes["lines"]))
        malformed: List[int] = []

        def on_invalid(row, malformed=malformed):
            malformed.append(row.number if row.number is not None else -1)
            return "skip"

        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in file_header},
                                                 check_utf8=False, strings_can_be_null=False),
        )
        if malformed:
            first = _first_bad_line(data, len(file_header))
            findings.append(_finding(
                "(span)", "malformed_row",
                f"{len(malformed)} row(s) of {name} do not have the header's {len(file_header)} fields "
                f"(first on line {first})", FIX_PRODUCER, rows=len(malformed)))
        if table.num_rows == 0 and not malformed:
            findings.append(_finding("(span)", "empty_file", f"{name} has a header but no rows", FIX_PRODUCER))
        facts.inputs[-1]["rows"] = table.num_rows
        tables.append(table)
    facts.columns = header
    if not header:
        return findings, facts

    missing = [c for c, spec in schema_cols.items() if spec["required"] and c not in header]
    for column in missing:
        findings.append(_finding(column, "missing_column",
                                 f"{column}: required column missing (the schema requires it in every row; "
                                 f"the header has {len(header)} columns: {', '.join(header)})",
                                 fix_or_accept(span_date)))
    for column in (c for c in header if c not in schema_cols):
        findings.append(_finding(column, "unknown_column",
                                 f"{column}: column not in the schema (expected only the schema's "
                                 f"{len(schema_cols)} features)", fix_or_accept(span_date)))
    if len(set(header)) != len(header):
        twice = sorted({c for c in header if header.count(c) > 1})
        findings.append(_finding(", ".join(twice), "duplicate_column", f"column(s) {', '.join(twice)} appear twice in the header",
                                 FIX_PRODUCER))
        return findings, facts

    table = pa.concat_tables(tables) if tables else None
    facts.rows = table.num_rows if table is not None else 0
    if table is None or table.num_rows == 0:
        return findings, facts
    for column in header:
        spec = schema_cols.get(column)
        if not spec or spec["type"] not in ("INT", "FLOAT"):
            continue
        values = table.column(column)
        filled = pc.not_equal(values, "")
        numeric = pc.match_substring_regex(values, NUMBER)
        bad = pc.and_(filled, pc.invert(numeric))
        count = pc.sum(bad).as_py() or 0
        if count:
            sample = pc.filter(values, bad)[0].as_py()
            findings.append(_finding(column, "not_numeric",
                                     f"{column}: {count} of {table.num_rows} values are not numbers "
                                     f"(expected {spec['type']}, saw e.g. {sample!r})", fix_or_accept(span_date),
                                     values=count))
    distinct = table.group_by(list(header)).aggregate([]).num_rows
    facts.duplicate_rows = table.num_rows - distinct
    fraction = facts.duplicate_rows / table.num_rows
    if fraction > max_duplicate_fraction:
        findings.append(_finding("(span)", "duplicate_rows",
                                 f"{facts.duplicate_rows} of {table.num_rows} rows ({fraction:.0%}) are duplicates "
                                 f"(expected at most {max_duplicate_fraction:.0%})", FIX_PRODUCER,
                                 duplicate_rows=facts.duplicate_rows))
    return findings, facts


def span_files(input_base: str, span_date: str) -> List[Path]:
    return sorted(Path(input_base, span_date).glob("*.csv"))


class Executor(base_executor.BaseExecutor):
    """Checks the span's CSV files and records the verdict (the SpanCheck component's executor).

    Do() reads the `schema` input (one Schema artifact), the `input_base`, `span_date` and
    `max_duplicate_fraction` execution properties, and the files of `<input_base>/<span_date>/`.
    It writes the `report` output (one ExampleAnomalies artifact): the verdict custom properties
    (`components.verdict`), `rows`, `files`, `duplicate_rows` and `input_files` (name, bytes, sha256 and
    rows of each file), and `report.txt` plus
    `findings.json` in the artifact's folder. It never raises for bad data: the node runner
    stops the run on the recorded verdict.
    """

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        span_date = exec_properties[SPAN_DATE_KEY]
        schema = load_schema(artifact_utils.get_single_instance(input_dict[SCHEMA_KEY]))
        folder = Path(exec_properties[INPUT_BASE_KEY], span_date)
        files = span_files(exec_properties[INPUT_BASE_KEY], span_date)
        if not folder.is_dir() or not files:
            what = f"no span folder {folder}" if not folder.is_dir() else f"no CSV file in the span folder {folder}"
            findings = [_finding("(span)", "no_files", what,
                                 "deliver the day's *.csv files there and rerun the span, or run another --date")]
            facts = SpanFacts()
        else:
            findings, facts = check_files(files, schema_columns(schema), span_date, duplicate_limit(exec_properties))
        report = artifact_utils.get_single_instance(output_dict[REPORT_KEY])
        report.set_int_custom_property("rows", facts.rows)
        report.set_int_custom_property("files", facts.files)
        report.set_int_custom_property("duplicate_rows", facts.duplicate_rows)
        report.set_string_custom_property(INPUT_FILES, json.dumps(facts.inputs, sort_keys=True))
        fixes = sorted({f["fix"] for f in findings if f["blocking"]})
        verdict.record(report, GATE, span_date, findings,
                       problem=verdict.blocking_message(span_date, findings, "before ExampleGen"),
                       fix="; or ".join(fixes))
        lines = [f"span {span_date}: {facts.files} file(s), {facts.rows} rows, {facts.duplicate_rows} duplicate rows"]
        lines += [("BLOCK " if f["blocking"] else "warn  ") + f["message"] for f in findings]
        os.makedirs(report.uri, exist_ok=True)
        io_utils.write_string_file(os.path.join(report.uri, "report.txt"), "\n".join(lines) + "\n")
        io_utils.write_string_file(os.path.join(report.uri, "findings.json"), json.dumps(findings, indent=1))
        for line in lines:
            log.info(line)
