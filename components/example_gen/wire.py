"""tf.train.Example bytes written by hand, equal to `SerializeToString(deterministic=True)`.

Why by hand: building one tf.train.Example proto per CSV row through the Python API and
serializing it is most of CsvExampleGen's per-row cost. A CSV row has a fixed shape (one feature
per column, at most one value each), so its wire format is a concatenation of a few byte strings,
and a column's encoded feature entry depends only on the cell's text: it is computed once per
distinct cell value of a chunk (pyarrow's dictionary encoding finds them) or taken from a cache
(the taxi data repeats most of its values), and pyarrow joins a row's entries.

What is encoded, exactly as CsvExampleGen's `_ParsedCsvToTfExample` builds it from a cell's
UTF-8 bytes (`int()` and `float()` of bytes accept only ASCII digits and whitespace):

- INT column: `int64_list` with `int(cell)` (packed varint, two's complement for negatives);
- FLOAT column: `float_list` with `float(cell)` made float32 as protobuf does (out of range
  becomes +-inf, NaN keeps its sign; see `float32_bytes`);
- STRING column: `bytes_list` with the cell's bytes;
- an empty cell: the column's list with no value; a column with no value in any row (UNKNOWN):
  `tf.train.Feature()` with no kind at all.

Map entries are in key order, as deterministic serialization writes them, so the bytes are also
the key CsvExampleGen hashes to pick the split (base_example_gen_executor._GeneratePartitionKey).
`wire_test.py` checks the bytes against the protobuf library for every edge case.
"""

from __future__ import annotations

import math
import struct
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.compute as pc

from components.example_gen.arrays import byte_values
from components.example_gen.column_types import ColumnType
from serving.example_encoder import varint  # the model server's request encoder writes the same wire format

_PACK_FLOAT32 = struct.Struct("<f").pack
_UINT64 = 1 << 64
# A column's cache of encoded cells is dropped when it grows past this, so memory stays bounded
# for columns whose every value is distinct (timestamps, coordinates).
MAX_CACHED_CELLS = 50_000

_SHORT_VARINTS = [varint(size) for size in range(1 << 14)]  # every length up to 16 KiB: one lookup


def length_delimited(field_tag: bytes, payload: bytes) -> bytes:
    size = len(payload)
    return field_tag + (_SHORT_VARINTS[size] if size < 16384 else varint(size)) + payload


# Field tags (field number << 3 | wire type 2, length-delimited), one byte each.
_TAG_1 = b"\x0a"  # Example.features, Features.feature (map entry), entry key, Feature.bytes_list, *List.value
_TAG_2 = b"\x12"  # map entry value, Feature.float_list
_TAG_3 = b"\x1a"  # Feature.int64_list
_ONE_FLOAT = _TAG_2 + b"\x06" + _TAG_1 + b"\x04"  # float_list {value: <4 bytes follow>}


_FLOAT32_MAX = 3.4028234663852886e38
_FLOAT32_MAX_ROUNDED = 3.4028235677973366e38  # protobuf's MAX_FLOAT_AS_DOUBLE_ROUNDED


def float32_bytes(value: float) -> bytes:
    """Little-endian float32 of a double as protobuf stores it (google/protobuf/io/strtod.cc,
    SafeDoubleToFloat): beyond the largest float32, up to 3.4028235677973366e38 it is still the
    largest float32 (where a plain cast would round the exact halfway value up to infinity), and
    +-inf beyond that; otherwise the C cast (round to nearest even; NaN keeps its sign)."""
    if abs(value) > _FLOAT32_MAX:  # False for NaN
        value = math.copysign(_FLOAT32_MAX if abs(value) <= _FLOAT32_MAX_ROUNDED else math.inf, value)
    return _PACK_FLOAT32(value)


def int_feature(cell: bytes) -> bytes:
    if not cell:
        return _TAG_3 + b"\x00"
    packed = varint(int(cell) % _UINT64)
    return length_delimited(_TAG_3, length_delimited(_TAG_1, packed))


def float_feature(cell: bytes) -> bytes:
    if not cell:
        return _TAG_2 + b"\x00"
    return _ONE_FLOAT + float32_bytes(float(cell))


def bytes_feature(cell: bytes) -> bytes:
    if not cell:
        return _TAG_1 + b"\x00"
    return length_delimited(_TAG_1, length_delimited(_TAG_1, cell))


def no_kind_feature(cell: bytes) -> bytes:
    del cell  # a column without any value in the split: tf.train.Feature(), whatever the cell
    return b""


FEATURE_ENCODERS: Dict[ColumnType, Callable[[bytes], bytes]] = {
    ColumnType.INT: int_feature,
    ColumnType.FLOAT: float_feature,
    ColumnType.STRING: bytes_feature,
    ColumnType.UNKNOWN: no_kind_feature,
}


class ColumnEncoder:
    """Encodes one column's cells to map entries or features, once per distinct cell text."""

    def __init__(self, name: str, column_type: ColumnType):
        self.name = name
        self.column_type = column_type
        self._feature = FEATURE_ENCODERS[column_type]
        self._key_field = length_delimited(_TAG_1, name.encode("utf-8"))
        self._entries: Dict[bytes, bytes] = {}
        self._features: Dict[bytes, bytes] = {}

    def entry(self, cell: bytes) -> bytes:
        """The Features.feature map entry {key: name, value: Feature(cell)}."""
        body = self._key_field + length_delimited(_TAG_2, self._feature(cell))
        return length_delimited(_TAG_1, body)

    def entries(self, cells: pa.Array) -> pa.Array:
        return _encoded(self._entries, self.entry, cells)

    def features(self, cells: pa.Array) -> List[bytes]:
        """The serialized tf.train.Feature of each cell (what a partition_feature_name hashes)."""
        return byte_values(_encoded(self._features, self._feature, cells))


def _encoded(cache: Dict[bytes, bytes], encode: Callable[[bytes], bytes], cells: pa.Array) -> pa.Array:
    """A binary array of each cell's encoding; `encode` runs once per distinct text (cached)."""
    dictionary_encoded = cells.dictionary_encode()
    values = byte_values(dictionary_encoded.dictionary)
    missing = set(values).difference(cache)
    if len(cache) + len(missing) > MAX_CACHED_CELLS:
        cache.clear()
        missing = values
    for cell in missing:
        cache[cell] = encode(cell)
    return pa.array(list(map(cache.__getitem__, values)), pa.binary()).take(dictionary_encoded.indices)


def examples(entry_columns: Sequence[pa.Array]) -> List[bytes]:
    """Serialized tf.Examples from per-column entry arrays (already in key order), one per row."""
    features = pc.binary_join_element_wise(*entry_columns, b"")
    return [length_delimited(_TAG_1, row) for row in byte_values(features)]


class ExampleEncoder:
    """Chunks of CSV rows (as columns) to serialized tf.Examples, for one input split's columns."""

    def __init__(self, column_names: Sequence[str], types_by_name: Dict[str, ColumnType]):
        # A name the header repeats: the last such column's cell wins, as in the dict
        # CsvExampleGen builds each tf.Example from.
        last_position = {name: position for position, name in enumerate(column_names)}
        self._columns = [(last_position[name], ColumnEncoder(name, types_by_name[name]))
                         for name in sorted(last_position)]  # str order = UTF-8 byte order = proto key order

    def encode(self, columns: Sequence[pa.Array]) -> List[bytes]:
        return examples([encoder.entries(columns[position]) for position, encoder in self._columns])

    def column(self, name: str) -> Optional[Tuple[int, ColumnEncoder]]:
        """(position in the row, ColumnEncoder) of the feature called `name`, or None."""
        for position, encoder in self._columns:
            if encoder.name == name:
                return position, encoder
        return None
