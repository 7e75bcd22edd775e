"""Column type inference, the same as CsvExampleGen's (tfx_bsl `csv_decoder.ColumnTypeInferrer`).

A column's type is the highest type of any of its cells over every file of the input split, on
the ladder UNKNOWN < INT < FLOAT < STRING, where a cell is:

- UNKNOWN if empty (so a column with no value anywhere stays UNKNOWN: features with no kind);
- INT if Python's `int()` parses it and it fits in int64 (an integer beyond int64 makes the whole
  column STRING, not FLOAT);
- FLOAT if `float()` parses it ("nan", "inf", "1e308", " 1.5 ", "1_000.5" all do);
- STRING otherwise.

tfx_bsl calls `int()`/`float()` on the cell's UTF-8 *bytes*, which accept only ASCII digits and
whitespace (on `str` they would also take other scripts' digits), and so does this module. Each
distinct cell value of a chunk is looked at once.
"""

from __future__ import annotations

import collections
from typing import Dict, List, Sequence, Set

import pyarrow as pa
import pyarrow.compute as pc
from tfx_bsl.coders import csv_decoder

from components.example_gen.arrays import byte_values

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


# tfx_bsl's enum (IGNORE is for schema-driven decoding, not used here); inference only climbs.
ColumnType = csv_decoder.ColumnType
assert ColumnType.UNKNOWN < ColumnType.INT < ColumnType.FLOAT < ColumnType.STRING


def cell_type(cell: bytes) -> ColumnType:
    """tfx_bsl's `_InferValueType` for one cell's UTF-8 bytes."""
    if not cell:
        return ColumnType.UNKNOWN
    try:
        number = int(cell)
    except ValueError:
        try:
            float(cell)
        except ValueError:
            return ColumnType.STRING
        return ColumnType.FLOAT
    return ColumnType.INT if INT64_MIN <= number <= INT64_MAX else ColumnType.STRING


class TypeInference:
    """Accumulates column types over row chunks (the first of the executor's two passes)."""

    def __init__(self, column_count: int):
        self._types: List[ColumnType] = [ColumnType.UNKNOWN] * column_count
        self.rows = 0

    def add(self, columns: Sequence[pa.Array]) -> None:
        """Takes one chunk of rows: a string array per column."""
        self.rows += len(columns[0])
        for index, cells in enumerate(columns):
            current = self._types[index]
            if current != ColumnType.STRING:
                values = set(byte_values(pc.unique(cells)))
                values.discard(b"")
                self._types[index] = max(current, values_type(values, current))

    def types_by_name(self, column_names: Sequence[str]) -> Dict[str, ColumnType]:
        """The type of each column name; columns sharing a name share the highest type, as the
        tfx_bsl accumulator is keyed by name."""
        by_name: Dict[str, ColumnType] = {}
        for name, column_type in zip(column_names, self._types):
            by_name[name] = max(by_name.get(name, ColumnType.UNKNOWN), column_type)
        return by_name


def values_type(values: Set[bytes], known: ColumnType) -> ColumnType:
    """The highest `cell_type` of non-empty values, given the column is at least `known`.

    Fast path, parsed in C: every value is ASCII and at most 18 characters long, too short for an
    integer beyond int64 (9223372036854775807 has 19 digits), so the values are INT if `int()`
    takes all of them, else FLOAT if `float()` does."""
    if not values:
        return ColumnType.UNKNOWN
    if all(map(bytes.isascii, values)) and max(map(len, values)) <= 18:
        parsers = [(int, ColumnType.INT)] if known <= ColumnType.INT else []
        for parse, column_type in parsers + [(float, ColumnType.FLOAT)]:
            try:
                collections.deque(map(parse, values), maxlen=0)
                return column_type
            except ValueError:
                continue
    return max(map(cell_type, values))
