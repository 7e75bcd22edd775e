"""Serialized tf.Examples straight from JSON feature dicts, without building protobuf objects.

`codec.serialize_examples` builds an `example_pb2.Example` per instance: about 10x slower than
writing the wire format directly, and at 100 instances per request it was most of the REST
overhead (bench/RESULTS.md, "Model serving latency"). This encoder handles the common case --
one scalar per feature (float/int for numeric features, str for bytes features), every feature
one the model parses -- and returns None for anything else, so the caller falls back to the
protobuf path, which then accepts the input or answers with the exact error. The fast path
therefore never accepts what the slow path would reject, and produces the same Example
(checked in tests/serving/test_example_encoder.py by parsing both).

Wire format written (tensorflow/core/example/{example,feature}.proto):
  Example  { Features features = 1; }
  Features { map<string, Feature> feature = 1; }   -- entries: key = 1, value = 2
  Feature  { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; }
  *List    { repeated value = 1; }                  -- float/int64 packed
"""

from __future__ import annotations

import struct
from typing import Any, Dict, Iterable, List, Mapping, Optional

# Kinds of tf.train.Feature lists (the servable reads them off a model's parsing spec).
INT, FLOAT, BYTES = "int64", "float", "bytes"

_pack_float = struct.Struct("<f").pack
_ONE_BYTE = [bytes([i]) for i in range(128)]
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# Repeated values of a feature (categories, hours, ids) reuse their encoded entry. Bounded so
# that a feature with unique values (timestamps) cannot grow the server's memory.
CACHE_ENTRIES_PER_FEATURE = 4096


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer below 2**64 (components/example_gen shares it)."""
    if n < 128:
        return _ONE_BYTE[n]
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(field_tag: bytes, payload: bytes) -> bytes:
    return field_tag + varint(len(payload)) + payload


class ExampleEncoder:
    """Encodes feature dicts for one model's features ({name: INT | FLOAT | BYTES})."""

    def __init__(self, kinds: Mapping[str, str]):
        self._float_head: Dict[str, bytes] = {}
        self._int_heads: Dict[str, List[bytes]] = {}  # indexed by the length of the value's varint
        self._bytes_key: Dict[str, bytes] = {}  # the map entry's key field
        self._cache: Dict[str, Dict[Any, bytes]] = {}  # int64 and bytes features: value -> entry
        for name, kind in kinds.items():
            key = _length_delimited(b"\x0a", name.encode("utf-8", "surrogatepass"))
            if kind == FLOAT:
                # entry = key + value(Feature{float_list{value: [4 bytes]}}): a fixed length.
                self._float_head[name] = b"\x0a" + varint(len(key) + 10) + key + b"\x12\x08\x12\x06\x0a\x04"
            elif kind == INT:
                # entry = key + value(Feature{int64_list{value: [varint]}}): everything before the
                # varint depends only on its length (1 to 10 bytes), so it is built once here.
                heads = [b""]
                for size in range(1, 11):
                    feature_head = b"\x1a" + varint(size + 2) + b"\x0a" + varint(size)
                    value = len(feature_head) + size
                    heads.append(b"\x0a" + varint(len(key) + 1 + len(varint(value)) + value) + key + b"\x12"
                                 + varint(value) + feature_head)
                self._int_heads[name] = heads
                self._cache[name] = {}
            else:
                self._bytes_key[name] = key
                self._cache[name] = {}
        # int64 and bytes features: (the Python type a value must have, its cache, its encoder)
        self._slots = {name: (int, cache, self._int_entry) if name in self._int_heads else (str, cache, self._bytes_entry)
                       for name, cache in self._cache.items()}

    def _int_entry(self, name: str, value: int) -> Optional[bytes]:
        if not _INT64_MIN <= value <= _INT64_MAX:
            return None
        packed = varint(value + (1 << 64) if value < 0 else value)
        return self._int_heads[name][len(packed)] + packed

    def _bytes_entry(self, name: str, value: str) -> bytes:
        feature = _length_delimited(b"\x0a", _length_delimited(b"\x0a", value.encode("utf-8", "surrogatepass")))
        return _length_delimited(b"\x0a", self._bytes_key[name] + _length_delimited(b"\x12", feature))

    def encode(self, instance: Any) -> Optional[bytes]:
        """One serialized tf.Example, or None when the instance needs the protobuf path."""
        if type(instance) is not dict:
            return None
        parts: List[bytes] = []
        float_head, slots = self._float_head, self._slots
        for name, value in instance.items():
            head = float_head.get(name)
            if head is not None:
                kind = type(value)
                if kind is not float and kind is not int:  # bool, str, list, None, dict: slow path
                    return None
                try:
                    parts.append(head + _pack_float(value))
                except (OverflowError, struct.error):  # beyond float32: the slow path names the value
                    return None
                continue
            slot = slots.get(name)
            if slot is None:
                return None  # not a feature of the model: the slow path says which
            wanted, cache, make = slot
            if type(value) is not wanted:  # before the cache: 1.0 and True would find 1's entry
                return None  # bool, float, list, b64 dict, None: the slow path judges
            entry = cache.get(value)
            if entry is None:
                entry = make(name, value)
                if entry is None:
                    return None
                if len(cache) < CACHE_ENTRIES_PER_FEATURE:
                    cache[value] = entry
            parts.append(entry)
        body = b"".join(parts)
        return b"\x0a" + varint(len(body)) + body

    def encode_all(self, instances: Iterable[Any]) -> Optional[List[bytes]]:
        """Every instance encoded, or None as soon as one needs the protobuf path."""
        out = []
        encode = self.encode
        for instance in instances:
            serialized = encode(instance)
            if serialized is None:
                return None
            out.append(serialized)
        return out
