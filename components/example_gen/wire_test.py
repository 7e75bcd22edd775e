"""The hand-written tf.Example bytes against the protobuf library's deterministic serialization,
built the way CsvExampleGen's `_ParsedCsvToTfExample` builds each example."""

from __future__ import annotations

import random
import struct

import pyarrow as pa
import pytest
import tensorflow as tf

from components.example_gen.column_types import ColumnType
from components.example_gen.wire import ExampleEncoder, float32_bytes, varint

CSV_EXECUTOR_HANDLERS = {  # tfx csv_example_gen/executor.py: _int_handler, _float_handler, _bytes_handler
    ColumnType.INT: lambda cell: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(cell)] if cell else [])),
    ColumnType.FLOAT: lambda cell: tf.train.Feature(float_list=tf.train.FloatList(value=[float(cell)] if cell else [])),
    ColumnType.STRING: lambda cell: tf.train.Feature(bytes_list=tf.train.BytesList(value=[cell] if cell else [])),
    ColumnType.UNKNOWN: lambda cell: tf.train.Feature(),
}


def proto_bytes(names, types, row) -> bytes:
    feature = {name: CSV_EXECUTOR_HANDLERS[types[name]](cell) for name, cell in zip(names, row)}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


def encoded(names, types, rows):
    columns = [pa.array([row[index].decode() for row in rows], pa.string()) for index in range(len(names))]
    return ExampleEncoder(names, types).encode(columns)


def test_every_edge_value_encodes_as_protobuf_does():
    names = ["zeta", "int", "float", "text", "empty", "\u00e9t\u00e9", "a"]
    types = {"zeta": ColumnType.STRING, "int": ColumnType.INT, "float": ColumnType.FLOAT, "text": ColumnType.STRING,
             "empty": ColumnType.UNKNOWN, "\u00e9t\u00e9": ColumnType.INT, "a": ColumnType.FLOAT}
    ints = [b"0", b"-1", b"127", b"128", b"16384", b"-9223372036854775808", b"9223372036854775807", b" 12 ", b"+5",
            b"1_000", b"-0", b""]
    floats = [b"1e308", b"-1e308", b"nan", b"-nan", b"inf", b"-inf", b"-0.0", b"3.4028235e38", b"3.4028236e38",
              b"1e-50", b"-1e-50", b"1e-45", b"0.1", b""]
    texts = [b"", b"x", "caf\u00e9 \u2615".encode(), b"y" * 127, b"y" * 128, b"z" * 20000, b" spaced ", b"a,b\nc"]
    pick = random.Random(7).choice
    rows = [(pick(texts), pick(ints), pick(floats), pick(texts), b"", pick(ints), pick(floats)) for _ in range(400)]
    rows += [(texts[i % len(texts)], ints[i % len(ints)], floats[i % len(floats)], texts[-i % len(texts)], b"",
              ints[-i % len(ints)], floats[-i % len(floats)]) for i in range(40)]
    assert encoded(names, types, rows) == [proto_bytes(names, types, row) for row in rows]


def test_a_repeated_column_name_keeps_the_last_cell():
    names, types = ["a", "b", "a"], {"a": ColumnType.INT, "b": ColumnType.STRING}
    rows = [(b"1", b"x", b"2"), (b"3", b"", b"")]
    assert encoded(names, types, rows) == [proto_bytes(names, types, row) for row in rows]


@pytest.mark.parametrize("value", [
    0.0, -0.0, 1.5, 0.1, 1e39, -1e39, float("inf"), float("nan"), float("-nan"),
    3.4028234663852886e38, 3.4028235677973362e38, 3.4028235677973366e38, 3.402823567797337e38,  # around FLT_MAX
    1.401298464324817e-45, 7.006492321624085e-46, 7.006492321624087e-46, 1e-46,  # around the smallest subnormal
])
def test_float32_bytes_match_protobufs_conversion(value):
    expected = tf.train.FloatList(value=[value]).SerializeToString()[2:]  # after tag and length
    assert float32_bytes(value) == expected
    assert len(expected) == 4 and struct.unpack("<f", expected)  # a float32


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2 ** 63, 2 ** 64 - 1])
def test_varint(value):
    signed = value - 2 ** 64 if value >= 2 ** 63 else value
    assert varint(value) == tf.train.Int64List(value=[signed]).SerializeToString()[2:]  # after tag and length
