"""What StatisticsGen's output says about a span, read without TensorFlow (the proto only)."""

from __future__ import annotations

import os
from typing import Dict

SPLITS = ("train", "eval")


def statistics_rows(uri: str) -> Dict[str, int]:
    """{split: examples} from the FeatureStats.pb files of an ExampleStatistics artifact at `uri`
    (a split whose file is gone is left out)."""
    from tensorflow_metadata.proto.v0 import statistics_pb2

    rows = {}
    for split in SPLITS:
        path = os.path.join(uri, f"Split-{split}", "FeatureStats.pb")
        if os.path.isfile(path):
            stats = statistics_pb2.DatasetFeatureStatisticsList()
            with open(path, "rb") as handle:
                stats.ParseFromString(handle.read())
            rows[split] = int(sum(d.num_examples for d in stats.datasets))
    return rows
