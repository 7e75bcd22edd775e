"""An input split's CSV files read exactly as CsvExampleGen reads them, in chunks, and errors
that name the file and line.

CsvExampleGen (tfx/components/example_gen/csv_example_gen/executor.py) reads a split so:

- files: `fileio.glob(<input_base>/<split pattern>)`; the column names are each file's first
  line, stripped and split on "," with no quoting (`io_utils.load_csv_column_names`), and must
  be the same in every file;
- a file is opened with Beam's FileSystems, its first line skipped, the rest split after each
  newline byte and decoded as UTF-8; lines are joined while the number of '"' seen is odd (a
  quoted field holding a newline), and each joined record is parsed by `csv.reader` with the
  default dialect (FileSystems would decompress a `.gz` file, but the header is read without
  decompressing, so compressed CSV fails there first);
- a record that parses to no cells (a blank line) is skipped.

Rows come in chunks of columns (pyarrow string arrays), one chunk per MiB of text, so memory does
not grow with the file; the executor reads every split twice (types first, then examples). A
block of lines that csv.reader would simply split at every comma (no '"' in it: most data) is
split by pyarrow's string kernels, many times faster; the rest as CsvExampleGen does. (Not
pyarrow.csv: on Python 3.10 each of its reads scans every object the garbage collector tracks,
about 0.1 s in a process that has TensorFlow loaded.)

Where CsvExampleGen fails with a Beam traceback, or worse (a quote in the middle of an unquoted
field makes its reader parse the same line again and again), these raise a ValueError naming the
file, the line and the fix.
"""

from __future__ import annotations

import csv
import itertools
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from tfx.dsl.io import fileio
from tfx.utils import io_utils

BLOCK_BYTES = 1 << 20
Row = List[str]
Columns = List[pa.Array]  # a chunk of rows: one string array per CSV column
FIX_FILE = "fix the file (or its producer) and rerun; SpanCheck reports every such row of a span"


class CsvSplit:
    """The CSV files one input split pattern matches, and their shared column names."""

    def __init__(self, input_base: str, split_pattern: str):
        self.pattern = os.path.join(input_base, split_pattern)
        self.files = fileio.glob(self.pattern)
        if not self.files:
            raise RuntimeError(
                f"Split pattern {self.pattern} does not match any files: put the span's CSV files there "
                "or fix input_base / input_config")
        self.column_names = _header(self.files[0])
        for path in self.files[1:]:
            names = _header(path)
            if names != self.column_names:
                raise RuntimeError(
                    f"Files in same split {self.pattern} have different header: {path} has {names}, "
                    f"{self.files[0]} has {self.column_names}; give every file of the split the same header")

    def chunks(self) -> Iterator[Columns]:
        """Every data row of every file, blank lines left out, in non-empty chunks of about a MiB of
        text: one pyarrow string array per column."""
        for path in self.files:
            yield from self.file_chunks(path)

    def file_chunks(self, path: str) -> Iterator[Columns]:
        """The rows of one of the split's files, as `chunks` reads them (batch scoring numbers rows per file)."""
        return _CsvFile(path, len(self.column_names)).chunks()


def _header(path: str) -> List[str]:
    """The column names, read as CsvExampleGen reads them (no quoting, no decompression)."""
    try:
        return io_utils.load_csv_column_names(path)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}, line 1: the header is not UTF-8 text (CsvExampleGen reads uncompressed UTF-8 CSV only, "
            "and reads the header without decompressing even a .gz file); write the file as UTF-8 CSV") from err


class _CsvFile:
    """One file's rows, a block of lines at a time, checked against the header's column count."""

    def __init__(self, path: str, column_count: int):
        self.path = path
        self.column_count = column_count
        self._pending: List[str] = []  # lines of a record whose quotes are not balanced yet
        self._pending_quotes = 0
        self._pending_line = 0

    def chunks(self) -> Iterator[Columns]:
        with FileSystems.open(self.path) as handle:
            handle.readline()  # the header
            for first_line, block in _blocks(handle):
                text = _decoded(self.path, first_line, block)
                plain = None if self._pending else _plain(text)
                columns = None if plain is None else self._plain_columns(first_line, plain)
                if columns is None:
                    rows, lines = self._quoted_rows(first_line, text)
                    cells = pa.array(list(itertools.chain.from_iterable(self._checked(rows, lines))), pa.string())
                    columns = _split_columns(cells, self.column_count)
                if len(columns[0]):
                    yield columns
        if self._pending:
            raise ValueError(
                f"Csv record had unbalanced quotes. File: {self.path}, line {self._pending_line}: a quoted field "
                f"opened there is never closed; {FIX_FILE}")

    def _plain_columns(self, first_line: int, text: str) -> Optional[Columns]:
        """A block without quotes split at newlines and commas by pyarrow, as csv.reader would split
        it; None if a line is longer than csv's field size limit (csv.reader refuses it, so must we)."""
        lines = pc.split_pattern(pa.array([text], pa.string()), "\n").flatten()
        lines = lines.filter(pc.not_equal(pc.binary_length(lines), 0))  # blank: csv.reader's [], skipped
        if len(lines) and pc.max(pc.utf8_length(lines)).as_py() > csv.field_size_limit():
            return None
        cells = pc.split_pattern(lines, ",")
        if len(lines) and not pc.all(pc.equal(pc.list_value_length(cells), self.column_count)).as_py():
            rows = [line.split(",") if line else [] for line in text.split("\n")]
            self._checked(rows, range(first_line, first_line + len(rows)))  # raises, naming the line
        return _split_columns(cells.flatten(), self.column_count)

    def _quoted_rows(self, first_line: int, text: str) -> Tuple[List[Row], List[int]]:
        """CsvExampleGen's way: lines joined while their quotes are unbalanced, each record parsed by
        csv.reader; (rows, the line each row starts on)."""
        records, starts = [], []
        for line_number, line in enumerate(_lines(text), first_line):
            count = line.count('"')
            if not self._pending and not count & 1:
                records.append(line)
                starts.append(line_number)
                continue
            if not self._pending:
                self._pending_line = line_number
            self._pending.append(line)
            self._pending_quotes += count
            if not self._pending_quotes & 1:
                records.append("".join(self._pending))
                starts.append(self._pending_line)
                self._pending, self._pending_quotes = [], 0
        return self._parsed(records, starts), starts

    def _parsed(self, records: List[str], starts: List[int]) -> List[Row]:
        """csv.reader's rows, one per record."""
        reader = csv.reader(records)
        try:
            rows = list(reader)
        except csv.Error as err:
            raise ValueError(f"{self.path}, line {starts[reader.line_num - 1]}: cannot parse the CSV record ({err}); "
                             f"{FIX_FILE}") from err
        if len(rows) != len(records):  # a row went on into the next record
            self._raise_open_quote(records, starts)
        return rows

    def _raise_open_quote(self, records: List[str], starts: List[int]) -> None:
        """Names the record csv.reader could not end (CsvExampleGen would feed it to the reader again
        and again: it joins lines by counting quotes, and this record's count is even)."""
        reader = csv.reader(records)
        for index, _ in enumerate(reader):
            if reader.line_num != index + 1:
                raise ValueError(
                    f"{self.path}, line {starts[index]}: a '\"' inside an unquoted field leaves a quoted field "
                    "open at the end of the record (CsvExampleGen would misread it); quote the whole field and "
                    f"double the quotes inside it (\"a \"\"b\"\"\"), or {FIX_FILE}")
        raise AssertionError(f"{self.path}: csv.reader found fewer rows than records, but no row spans two")

    def _checked(self, rows: List[Row], lines: Sequence[int]) -> List[Row]:
        """The rows without blank ones; a ValueError at the first row with the wrong number of fields."""
        if set(map(len, rows)) == {self.column_count}:
            return rows
        for index, row in enumerate(rows):
            if row and len(row) != self.column_count:
                raise ValueError(
                    f"{self.path}, line {lines[index]}: the row has {len(row)} fields but the header has "
                    f"{self.column_count} (row starts {','.join(row)[:80]!r}); quote fields that hold a comma, "
                    f"or {FIX_FILE}")
        return [row for row in rows if row]


def _plain(text: str) -> Optional[str]:
    """The block (CRLF made LF) if splitting its lines at every comma gives csv.reader's cells, else
    None: not so with a '"', a NUL (csv.reader refuses it) or a carriage return not before a newline."""
    if '"' in text or "\0" in text:
        return None
    if "\r" in text:
        if text.count("\r") != text.count("\r\n"):
            return None
        text = text.replace("\r\n", "\n")
    return text


def _split_columns(cells: pa.Array, column_count: int) -> Columns:
    """Row-major cells (row 0's cells, then row 1's, ...) as one array per column."""
    return [cells.take(np.arange(index, len(cells), column_count)) for index in range(column_count)]


def _lines(text: str) -> List[str]:
    """The text's lines, each with its newline (str.splitlines would also split at \\r and others)."""
    lines = text.split("\n")
    last = lines.pop()
    lines = [line + "\n" for line in lines]
    if last:
        lines.append(last)
    return lines


def _blocks(handle) -> Iterator[Tuple[int, bytes]]:
    """(number of the first line, bytes) of blocks of whole lines, from line 2 on."""
    first_line, rest = 2, b""
    while True:
        data = handle.read(BLOCK_BYTES)
        if not data:
            if rest:
                yield first_line, rest
            return
        data = rest + data
        cut = data.rfind(b"\n") + 1
        block, rest = data[:cut], data[cut:]
        if block:
            yield first_line, block
            first_line += block.count(b"\n")


def _decoded(path: str, first_line: int, block: bytes) -> str:
    try:
        return block.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + block.count(b"\n", 0, err.start)
        bad = block[max(err.start - 10, 0):err.end + 10]
        raise ValueError(
            f"{path}, line {line}: bytes {bad!r} are not UTF-8 (CsvExampleGen reads UTF-8 only); "
            "re-encode the file as UTF-8") from err
