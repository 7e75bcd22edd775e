"""CsvSplit's rows against CsvExampleGen's own record reader, on generated files, and the line
numbers its errors give. Tiny blocks make records (and quoted fields) straddle block ends."""

from __future__ import annotations

import csv
import gzip
import io
import random
from pathlib import Path
from typing import List

import pytest
from apache_beam.io.filesystems import FileSystems
from tfx.components.example_gen.csv_example_gen import executor as tfx_executor
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder

from components.example_gen import csv_source
from components.example_gen.arrays import byte_values
from components.example_gen.csv_source import CsvSplit

CELLS = ["", "1", "-2.5", "x", " spaced ", "caf\u00e9", "\u4e2d\u6587", "nan", "a b", "\t"]
# The last: a quoted field longer than a tiny block, so a whole block can lie inside it.
QUOTED_CELLS = CELLS + ["a,b", 'say "hi"', "two\nlines", "\n", '"', "cr\r\nlf", ",", "\n".join("l" * 30)]


def tfx_rows(path: Path) -> List[List[bytes]]:
    """The rows CsvExampleGen's Beam steps produce: _ReadCsvRecordsFromTextFile, then ParseCSVLine."""
    reader, buffer, rows = csv_decoder._CSVRecordReader(","), tfx_executor._CsvLineBuffer(), []
    with FileSystems.open(str(path)) as handle:
        handle.readline()
        for line in handle:
            buffer.write(line.decode("utf-8"))
            if buffer.is_complete_line():
                cells = reader.ReadLine(buffer.read())
                if cells:  # a blank line: skipped
                    rows.append(cells)
    return rows


def our_rows(root: Path, pattern: str = "*.csv") -> List[List[bytes]]:
    split = CsvSplit(str(root), pattern)
    return [list(row) for columns in split.chunks() for row in zip(*map(byte_values, columns))]


def random_csv(rng: random.Random, cells: List[str], rows: int, columns: int, newline: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow([f"c{index}" for index in range(columns)])
    for _ in range(rows):
        if rng.random() < 0.05:
            out.write(newline)  # a blank line
        writer.writerow([rng.choice(cells) for _ in range(columns)])
    return out.getvalue()


@pytest.mark.parametrize("block_bytes", [37, 4096, 1 << 20])
@pytest.mark.parametrize("cells", [CELLS, QUOTED_CELLS], ids=["plain", "quoted"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_rows_match_csv_example_gen(tmp_path, monkeypatch, block_bytes, cells, newline):
    monkeypatch.setattr(csv_source, "BLOCK_BYTES", block_bytes)
    rng = random.Random(block_bytes)
    for index in range(3):
        (tmp_path / f"part-{index}.csv").write_text(random_csv(rng, cells, 300, 4, newline), encoding="utf-8",
                                                    newline="")
    files = CsvSplit(str(tmp_path), "*.csv").files  # the glob's order
    assert our_rows(tmp_path) == [row for path in files for row in tfx_rows(Path(path))]
    assert len(our_rows(tmp_path)) == 900


def test_a_gzipped_file_fails_at_its_header_as_in_csv_example_gen(tmp_path):
    with gzip.open(tmp_path / "data.csv.gz", "wt", encoding="utf-8") as handle:
        handle.write("a,b\n1,2\n")
    with pytest.raises(UnicodeDecodeError):
        io_utils.load_csv_column_names(str(tmp_path / "data.csv.gz"))  # what CsvExampleGen does first
    with pytest.raises(ValueError, match="data.csv.gz, line 1: the header is not UTF-8 text"):
        CsvSplit(str(tmp_path), "*.gz")


@pytest.mark.parametrize("block_bytes", [16, 1 << 20])
@pytest.mark.parametrize("text, line, message", [
    ("a,b\n1,2\n\n3,4,5\n", 4, "the row has 3 fields but the header has 2"),
    ('a,b\n1,2\n"x\ny",2\n3,"4,5",6\n', 5, "the row has 3 fields"),
    ("a,b\n1,2\n3,4\n5\n", 4, "the row has 1 fields"),
    ('a,b\n1,2\n3,"open\n5,6\n', 3, "unbalanced quotes"),
    ('a,b\n1,2\nx"y,"z\n3,4\n', 3, "inside an unquoted field"),
    ('a,b\n"1",2\n3,4\rx\n', 3, "new-line character seen in unquoted field"),
    ("a,b\n1,2\n3,\0\n", 3, "line contains NUL"),
])
def test_errors_name_the_file_and_the_line(tmp_path, monkeypatch, block_bytes, text, line, message):
    monkeypatch.setattr(csv_source, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8", newline="")
    with pytest.raises(ValueError) as raised:
        our_rows(tmp_path)
    assert f"{path}, line {line}" in str(raised.value) and message in str(raised.value)


def test_a_field_over_csv_field_size_limit_fails_as_in_csv_example_gen(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1," + "x" * (csv.field_size_limit() + 1) + "\n", encoding="utf-8")
    with pytest.raises(csv.Error):
        tfx_rows(path)
    with pytest.raises(ValueError, match=f"{path}, line 2: .*field larger than field limit"):
        our_rows(tmp_path)
