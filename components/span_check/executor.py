"""The first data gate: the span's raw CSV files, before ExampleGen parses them.

CsvExampleGen fails on a malformed row or undecodable bytes with a Beam traceback that names
neither the file nor the column, and stock TFX never looks for a flood of duplicate rows. This
gate reads the files with pyarrow (the physical CSV parse rate, see bench/RESULTS.md), a block of
lines at a time so its memory does not grow with the span (16 bytes a row for the duplicate count),
and checks, naming file, line and column in each finding:

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
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

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


def duplicate_limit(exec_properties: Dict[str, Any]) -> float:
    """The configured duplicate-row limit; 0.0 means no duplicates at all, not "the default"."""
    value = exec_properties.get(MAX_DUPLICATE_FRACTION_KEY)
    return DEFAULT_MAX_DUPLICATE_FRACTION if value is None else float(value)


# Bytes of CSV per pyarrow read and per raw read: memory holds a block or two plus 16 bytes a row (the row
# hashes that count duplicates), whatever the span's size.
BLOCK_BYTES = 32 << 20


def _raw_pass(path: Path) -> tuple:
    """(size, sha256 hex, True if every byte decodes as UTF-8) of a file, read a block at a time."""
    import codecs

    digest, size, decoder, utf8 = hashlib.sha256(), 0, codecs.getincrementaldecoder("utf-8")(), True
    with open(path, "rb") as handle:
        while True:
            block = handle.read(BLOCK_BYTES)
            if utf8:
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError:
                    utf8 = False
            if not block:
                return size, digest.hexdigest(), utf8
            digest.update(block)
            size += len(block)


def _non_utf8_lines(path: Path, header: List[str]) -> dict:
    """Where a file is not UTF-8: the first such line, how many lines, and the columns whose fields
    there are not ASCII (a field decoded as Latin-1). Read a line at a time."""
    first_line, bad_lines, columns = 0, 0, set()
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                first_line = first_line or number
                bad_lines += 1
                fields = next(csv.reader([line.rstrip(b"\n").decode("latin-1")]), [])
                columns.update(header[i] for i, field in enumerate(fields)
                               if i < len(header) and not field.isascii())
    return dict(first_line=first_line, lines=bad_lines, columns=sorted(columns))


def _first_bad_line_in(path: Path, fields: int) -> int:
    """Line number of the first row whose field count differs from the header's (pyarrow 10's
    invalid-row handler does not report it). Only called when such a row exists; read a line at a time."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            if len(row) != fields and row:
                return reader.line_num
    return -1


def _blocks_read(path: Path, read_options, parse_options, convert_options):
    """The file's rows after the header, as tables of about BLOCK_BYTES of CSV each: blocks of whole
    lines, each parsed by pyarrow.csv.read_csv (a newline always ends a row: newlines_in_values is
    off, so a block boundary after a newline parses as the whole file would). Not open_csv: its
    streaming reader reads ahead of a slower consumer without bound (pyarrow 10), up to the file."""
    import gc

    import pyarrow as pa
    import pyarrow.csv as pacsv

    # Each read_csv call of pyarrow 10 on Python 3.10 runs gc.get_referrers, which scans every object
    # the collector tracks (0.1 s with TensorFlow loaded); frozen objects are not scanned. Only when
    # nothing else froze objects, so unfreezing cannot thaw another's.
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        yield from _blocks(path, lambda block: pacsv.read_csv(pa.BufferReader(block), read_options, parse_options,
                                                                convert_options))
    finally:
        if freeze:
            gc.unfreeze()


def _blocks(path: Path, parse):
    """parse(block) of each block of whole lines after the header."""
    with open(path, "rb") as handle:
        handle.readline()  # the header
        rest = b""
        while True:
            data = handle.read(BLOCK_BYTES)
            if not data:
                if rest:
                    yield parse(rest)
                return
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                yield parse(data[:cut])


def _row_hashes(table, columns: List[str]):
    """One 128-bit hash per row of a table of string columns, as an (n, 2) uint64 array: equal rows,
    equal hashes (the distinct count is exact unless two of the span's rows collide in 128 bits).
    Cells are joined with a separator no cell of the table holds, so a joined row is one row only."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = [table.column(c) for c in columns]
    separator = "\x1f"
    while any(pc.any(pc.match_substring(cell, separator)).as_py() for cell in cells):
        separator += "\x1f"
    if len(cells) == 1:
        joined = cells[0]
    else:
        joined = pc.binary_join_element_wise(*cells, pa.scalar(separator, pa.string()))
    values = joined.cast(pa.binary()).to_numpy()  # bytes objects: a cell need not be UTF-8
    # Two SipHash-2-4 keys: 128 bits. categorize=False: rows are mostly distinct, factorizing first is 4x slower.
    return np.stack([pd.util.hash_array(values, hash_key="span_check_rows1", categorize=False),
                     pd.util.hash_array(values, hash_key="rows_span_check2", categorize=False)], axis=1)


def _distinct_rows(hashes) -> int:
    """How many distinct rows of an (n, 2) array: rows whose first column is unique count once each; the
    rest (few: the duplicates) are compared whole."""
    import numpy as np

    if not len(hashes):
        return 0
    hashes = hashes[np.argsort(hashes[:, 0])]
    tied = hashes[1:, 0] == hashes[:-1, 0]  # runs of equal first halves: duplicates, or (rarely) a collision
    in_run = np.zeros(len(hashes), bool)
    in_run[1:] |= tied
    in_run[:-1] |= tied
    return int(np.count_nonzero(~in_run)) + len(np.unique(hashes[in_run], axis=0))


def check_files(files: Sequence[Path], schema_cols: Dict[str, dict], span_date: str,
                max_duplicate_fraction: float) -> tuple:
    """(findings, SpanFacts) for the span's CSV files. Pure: reads the files, writes nothing.

    Streams: a file is read a block at a time, twice (raw bytes for the sha256 and the UTF-8 check,
    then blocks of whole lines parsed by pyarrow), so memory holds a block or two plus 16 bytes a row
    (the row hashes that count duplicates), not the span."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    per_file: List[List[dict]] = [[] for _ in files]  # each file's findings, listed in file order
    facts = SpanFacts(files=len(files))
    if not files:
        return [_finding("(span)", "no_files", "no CSV file in the span folder",
                         "deliver the day's *.csv files to the span folder and rerun the span")], facts
    header: List[str] = []
    readable: List[tuple] = []  # (path, index) of the files whose rows are read (their header is the span's)
    for index, path in enumerate(files):
        size, sha256, utf8 = _raw_pass(path)
        facts.inputs.append({"name": path.name, "bytes": size, "sha256": sha256, "rows": 0})
        with open(path, "rb") as handle:
            first_line = handle.readline().split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
        file_header = next(csv.reader([first_line]), []) if first_line.strip() else []
        name = path.name
        if not file_header:
            per_file[index].append(_finding("(span)", "empty_file", f"{name} is empty (not even a header line)",
                                            FIX_PRODUCER))
            continue
        if header and file_header != header:
            per_file[index].append(_finding("(span)", "header_mismatch",
                                            f"{name} has header {file_header}, the span's first file {header}",
                                            FIX_PRODUCER))
            continue
        header = header or file_header
        if not utf8:
            bad_bytes = _non_utf8_lines(path, file_header)
            where = ", ".join(bad_bytes["columns"]) or "(unknown column)"
            per_file[index].append(_finding(
                where, "non_utf8",
                f"{where}: {bad_bytes['lines']} line(s) of {name} are not UTF-8 (first on line {bad_bytes['first_line']}; "
                "expected UTF-8 text)", "re-export the file as UTF-8 and rerun the span", lines=bad_bytes["lines"]))
        readable.append((path, index))
    facts.columns = header
    if not header:
        return [f for found in per_file for f in found], facts

    header_findings: List[dict] = []
    missing = [c for c, spec in schema_cols.items() if spec["required"] and c not in header]
    for column in missing:
        header_findings.append(_finding(column, "missing_column",
                                        f"{column}: required column missing (the schema requires it in every row; "
                                        f"the header has {len(header)} columns: {', '.join(header)})",
                                        fix_or_accept(span_date)))
    for column in (c for c in header if c not in schema_cols):
        header_findings.append(_finding(column, "unknown_column",
                                        f"{column}: column not in the schema (expected only the schema's "
                                        f"{len(schema_cols)} features)", fix_or_accept(span_date)))
    duplicate_columns = len(set(header)) != len(header)
    numeric_columns = [c for c in header
                       if not duplicate_columns and schema_cols.get(c, {}).get("type") in ("INT", "FLOAT")]
    not_numeric = {c: [0, None] for c in numeric_columns}  # column -> [count, first bad value]
    hashes = []
    for path, index in readable:
        malformed: List[int] = []

        def on_invalid(row, malformed=malformed):
            malformed.append(row.number if row.number is not None else -1)
            return "skip"

        rows = 0
        reader = _blocks_read(path, pacsv.ReadOptions(column_names=header),
                              pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
                              pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                   check_utf8=False, strings_can_be_null=False))
        for table in reader:  # one block of the file
            if not table.num_rows:
                continue
            rows += table.num_rows
            for column in numeric_columns:
                values = table.column(column)
                bad = pc.and_(pc.not_equal(values, ""), pc.invert(pc.match_substring_regex(values, NUMBER)))
                count = pc.sum(bad).as_py() or 0
                if count:
                    seen = not_numeric[column]
                    seen[0] += count
                    if seen[1] is None:
                        seen[1] = pc.filter(values, bad)[0].as_py()
            if not duplicate_columns:
                hashes.append(_row_hashes(table, header))
        name = path.name
        if malformed:
            first = _first_bad_line_in(path, len(header))
            per_file[index].append(_finding(
                "(span)", "malformed_row",
                f"{len(malformed)} row(s) of {name} do not have the header's {len(header)} fields "
                f"(first on line {first})", FIX_PRODUCER, rows=len(malformed)))
        if rows == 0 and not malformed:
            per_file[index].append(_finding("(span)", "empty_file", f"{name} has a header but no rows", FIX_PRODUCER))
        facts.inputs[index]["rows"] = rows
        facts.rows += rows
    findings = [f for found in per_file for f in found] + header_findings  # as when each file was read whole
    if duplicate_columns:
        twice = sorted({c for c in header if header.count(c) > 1})
        findings.append(_finding(", ".join(twice), "duplicate_column",
                                 f"column(s) {', '.join(twice)} appear twice in the header", FIX_PRODUCER))
        facts.rows = 0
        return findings, facts
    if facts.rows == 0:
        return findings, facts
    for column in numeric_columns:
        count, sample = not_numeric[column]
        if count:
            spec = schema_cols[column]
            findings.append(_finding(column, "not_numeric",
                                     f"{column}: {count} of {facts.rows} values are not numbers "
                                     f"(expected {spec['type']}, saw e.g. {sample!r})", fix_or_accept(span_date),
                                     values=count))
    distinct = _distinct_rows(np.concatenate(hashes)) if hashes else 0
    facts.duplicate_rows = facts.rows - distinct
    fraction = facts.duplicate_rows / facts.rows
    if fraction > max_duplicate_fraction:
        findings.append(_finding("(span)", "duplicate_rows",
                                 f"{facts.duplicate_rows} of {facts.rows} rows ({fraction:.0%}) are duplicates "
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
