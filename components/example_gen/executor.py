"""FastCsvExampleGen's executor: the tf.Examples CsvExampleGen writes, in the same splits, without Beam.

Why: CsvExampleGen pushes every CSV row through several Beam steps and builds each tf.Example
with the Python proto API; at 150k rows that is about a minute, slower than TFDV reading the
same file. This executor reads each input split twice, a MiB of CSV at a time as one pyarrow
string array per column (`csv_source.py`): first to infer the column types over every file of
the split, then to encode. It writes each example's wire bytes by hand, once per distinct cell
value (`wire.py`), hashes them to pick the split and appends them to the split's gzipped
TFRecord file. Memory stays at a chunk or two, whatever the span's size.

The contract kept (see tests in executor_test.py, which run CsvExampleGen's own executor):

- the same examples, typed the same way (`column_types.py`), in the same splits (`partition.py`:
  the same hash of the same bytes);
- `Split-<name>/data_tfrecord-00000-of-00001.gz`: one gzipped TFRecord file per split (Beam may
  write several shards; readers glob `Split-<name>/*`), the `split_names` property, and the
  `payload_format` / `file_format` custom properties;
- span, version and input_fingerprint come from the same FileBasedDriver as CsvExampleGen's.

Records hold the deterministic serialization (map keys in order); CsvExampleGen writes the
non-deterministic one, so file bytes differ while every parsed tf.Example is the same.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.example_gen import utils, write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.example_gen.column_types import TypeInference
from components.example_gen.csv_source import CsvSplit
from components.example_gen.partition import HashPartitioner
from components.example_gen.wire import ExampleEncoder

# Beam's name for a single shard, so a listing looks like CsvExampleGen's.
OUTPUT_FILE = f"{write_split.DEFAULT_TF_RECORD_FILE_NAME}-00000-of-00001.gz"


@dataclasses.dataclass(frozen=True)
class ExampleGenConfig:
    """The execution properties the executor reads, parsed and checked once."""

    input_base: str
    input_config: example_gen_pb2.Input
    output_config: example_gen_pb2.Output
    split_names: List[str]

    @classmethod
    def from_exec_properties(cls, exec_properties: Dict[str, Any]) -> "ExampleGenConfig":
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        _check_formats(exec_properties)
        return cls(
            input_base=exec_properties[standard_component_specs.INPUT_BASE_KEY],
            input_config=input_config,
            output_config=output_config,
            # Checks the configs as CsvExampleGen does (e.g. output splits need exactly one input split).
            split_names=utils.generate_output_split_names(input_config, output_config),
        )


def _check_formats(exec_properties: Dict[str, Any]) -> None:
    """Only what CsvExampleGen can write: tf.Examples in gzipped TFRecord files."""
    payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    if payload_format and payload_format != example_gen_pb2.FORMAT_TF_EXAMPLE:
        raise ValueError(
            f"output_data_format {example_gen_pb2.PayloadFormat.Name(payload_format)} is not supported: CSV rows "
            "become tf.Examples; leave output_data_format at FORMAT_TF_EXAMPLE")
    file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
                                      example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
    write_split.to_file_format_str(file_format)  # ValueError unless gzipped TFRecords


class SplitWriters:
    """One gzipped TFRecord file per output split; `write` appends examples to their splits."""

    def __init__(self, split_uris: List[str]):
        options = tf.io.TFRecordOptions(compression_type="GZIP")
        self._writers = []
        for uri in split_uris:
            fileio.makedirs(uri)
            self._writers.append(tf.io.TFRecordWriter(os.path.join(uri, OUTPUT_FILE), options))
        self.counts = [0] * len(split_uris)

    def write(self, serialized: List[bytes], split_indexes: Optional[List[int]] = None) -> None:
        """Appends the examples; example i to split split_indexes[i] (all to the first if None)."""
        if split_indexes is None:
            split_indexes = [0] * len(serialized)
        writes = [writer.write for writer in self._writers]
        for record, index in zip(serialized, split_indexes):
            writes[index](record)
            self.counts[index] += 1

    def __enter__(self) -> "SplitWriters":
        return self

    def __exit__(self, *exc_info) -> None:
        for writer in self._writers:
            writer.close()


def write_examples(config: ExampleGenConfig, split_uri: Callable[[str], str]) -> Dict[str, int]:
    """Reads the input splits and writes the output splits; returns the example count per split."""
    input_splits = config.input_config.splits
    if config.output_config.split_config.splits:  # one input split, hashed into the output splits
        jobs = [(input_splits[0].pattern, config.split_names, config.output_config.split_config)]
    else:  # each input split written as it is
        jobs = [(split.pattern, [name], None) for split, name in zip(input_splits, config.split_names)]
    counts: Dict[str, int] = {}
    for pattern, names, split_config in jobs:
        split = CsvSplit(config.input_base, pattern)
        written = write_input_split(split, [split_uri(name) for name in names], split_config)
        counts.update(zip(names, written))
    return counts


def write_input_split(split: CsvSplit, uris: List[str],
                      split_config: Optional[example_gen_pb2.SplitConfig]) -> List[int]:
    """Both passes over one input split; returns the number of examples written to each uri."""
    inference = TypeInference(len(split.column_names))
    for columns in split.chunks():
        inference.add(columns)
    encoder = ExampleEncoder(split.column_names, inference.types_by_name(split.column_names))
    partitioner = HashPartitioner(split_config, encoder) if split_config else None
    with SplitWriters(uris) as writers:
        for columns in split.chunks():
            serialized = encoder.encode(columns)
            writers.write(serialized, partitioner.assign(serialized, columns) if partitioner else None)
    if sum(writers.counts) != inference.rows:  # the design's rule: row counts are asserted, never assumed
        raise RuntimeError(
            f"{split.pattern}: {inference.rows} rows when inferring types but {sum(writers.counts)} examples "
            "written; a file changed while ExampleGen read it: write span files atomically and rerun")
    return writers.counts


class Executor(base_beam_executor.BaseBeamExecutor):
    """Writes CsvExampleGen's Examples artifact from CSV files; see the module docstring.

    A Beam executor by class only: FileBasedExampleGen is a Beam component, whose executor spec
    must be a BeamExecutorSpec; no Beam pipeline runs, so `beam_pipeline_args` change nothing.
    """

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        config = ExampleGenConfig.from_exec_properties(exec_properties)
        artifacts = output_dict[standard_component_specs.EXAMPLES_KEY]
        examples = artifact_utils.get_single_instance(artifacts)
        examples.split_names = artifact_utils.encode_split_names(config.split_names)
        counts = write_examples(config, lambda name: artifact_utils.get_split_uri(artifacts, name))
        _set_format_properties(artifacts, exec_properties)
        logging.info("Examples generated: %s", ", ".join(f"{name} {count}" for name, count in counts.items()))


def _set_format_properties(artifacts: List[types.Artifact], exec_properties: Dict[str, Any]) -> None:
    """The custom properties BaseExampleGenExecutor.Do sets, under the same conditions."""
    payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
                                      example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
    for artifact in artifacts:
        if payload_format:
            examples_utils.set_payload_format(artifact, payload_format)
        if file_format:
            examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))
