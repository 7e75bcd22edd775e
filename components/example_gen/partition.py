"""Which output split each example goes to: CsvExampleGen's hash partition, reproduced.

base_example_gen_executor._PartitionFn: the key is the example serialized deterministically (or,
with `partition_feature_name`, that feature serialized deterministically); its SHA-256, read as
a big-endian integer, modulo the total number of hash buckets, picks a bucket; buckets are given
to splits in the order of `split_config.splits` (train 4, eval 1: buckets 0-3 train, 4 eval).
So the same example lands in the same split as with CsvExampleGen, run after run.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from typing import List, Optional, Sequence

import pyarrow as pa
from tfx.proto import example_gen_pb2

from components.example_gen.column_types import ColumnType
from components.example_gen.wire import ExampleEncoder


class HashPartitioner:
    """Assigns serialized examples to split indexes (positions in split_config.splits)."""

    def __init__(self, split_config: example_gen_pb2.SplitConfig, encoder: ExampleEncoder):
        self._boundaries = list(itertools.accumulate(split.hash_buckets for split in split_config.splits))
        self._total = self._boundaries[-1]  # > 0: utils.generate_output_split_names checked the config
        self._key_column = None
        self._key_error: Optional[str] = None
        if split_config.HasField("partition_feature_name"):
            self._key_column, self._key_error = _key_column(split_config.partition_feature_name, encoder)

    def assign(self, serialized: Sequence[bytes], columns: Sequence[pa.Array]) -> List[int]:
        """The split index of each example (`columns`: the same rows, a string array per CSV column)."""
        if not serialized:
            return []
        if self._key_error:  # raised at the first example, as CsvExampleGen does
            raise RuntimeError(self._key_error)
        keys = serialized
        if self._key_column is not None:
            position, column_encoder = self._key_column
            keys = column_encoder.features(columns[position])
        boundaries, total, sha256 = self._boundaries, self._total, hashlib.sha256
        return [bisect.bisect(boundaries, int.from_bytes(sha256(key).digest(), "big") % total) for key in keys]


def _key_column(name: str, encoder: ExampleEncoder):
    """(column, None) for a usable partition feature, else (None, CsvExampleGen's error + the fix)."""
    found = encoder.column(name)
    if found is None:
        return None, f"Feature name `{name}` does not exist. Set partition_feature_name to a CSV column."
    column_type = found[1].column_type
    if column_type == ColumnType.UNKNOWN:
        return None, (f"Partition feature does not contain any value: column `{name}` is empty in every row. "
                      "Partition by a column that has values.")
    if column_type == ColumnType.FLOAT:
        return None, (f"Only `bytes_list` and `int64_list` features are supported for partition: column `{name}` "
                      "is FLOAT. Partition by an integer or text column.")
    return found, None
