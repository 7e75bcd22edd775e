"""FastCsvExampleGen's executor against CsvExampleGen's own, on the same files.

Each test runs TFX's CsvExampleGen executor (Beam, in process) and ours on the same input and
asserts that every split holds the same multiset of tf.Examples (compared as deterministic
serializations, so NaN and -0.0 compare by their bits) and that the Examples artifacts carry the
same properties. Where CsvExampleGen fails, ours must fail too, naming the file and line.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as tfx_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs as keys
from tfx.utils import proto_utils

from components.example_gen import executor as fast_executor
from components.example_gen.csv_source import CsvSplit
from pipelines.data import bundled_csv_path

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "data" / "example_gen"
DAY = "2026-11-20"
TRAIN_EVAL = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
    example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
    example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1),
]))


def single_split(pattern: str = f"{DAY}/*.csv") -> example_gen_pb2.Input:
    return example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="single_split", pattern=pattern)])


def run_executor(executor_class, input_base: Path, output: Path, input_config: example_gen_pb2.Input,
                 output_config: example_gen_pb2.Output) -> standard_artifacts.Examples:
    """Runs an ExampleGen executor's Do() with the execution properties the component passes."""
    examples = standard_artifacts.Examples()
    examples.uri = str(output)
    exec_properties = {
        keys.INPUT_BASE_KEY: str(input_base),
        keys.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
        keys.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(output_config),
        keys.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_TF_EXAMPLE,
        keys.OUTPUT_FILE_FORMAT_KEY: example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }
    executor_class().Do({}, {keys.EXAMPLES_KEY: [examples]}, exec_properties)
    return examples


def read_records(examples: standard_artifacts.Examples, split: str) -> List[bytes]:
    files = sorted(glob.glob(os.path.join(examples.uri, f"Split-{split}", "*")))
    assert files and all(Path(f).name.startswith("data_tfrecord-") and f.endswith(".gz") for f in files), files
    return [record for path in files
            for record in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()]


def canonical(records: List[bytes]) -> List[bytes]:
    """The records parsed and re-serialized deterministically, sorted: a multiset of tf.Examples."""
    return sorted(tf.train.Example.FromString(record).SerializeToString(deterministic=True) for record in records)


def split_contents(examples: standard_artifacts.Examples) -> Dict[str, List[bytes]]:
    names = artifact_utils.decode_split_names(examples.split_names)
    return {name: canonical(read_records(examples, name)) for name in names}


def assert_same_output(input_base: Path, tmp_path: Path, input_config: example_gen_pb2.Input,
                       output_config: example_gen_pb2.Output) -> Dict[str, List[bytes]]:
    """Runs both executors; asserts equal splits and properties; returns the splits' examples."""
    expected = run_executor(tfx_executor.Executor, input_base, tmp_path / "tfx", input_config, output_config)
    actual = run_executor(fast_executor.Executor, input_base, tmp_path / "fast", input_config, output_config)
    assert actual.split_names == expected.split_names
    assert dict(actual.mlmd_artifact.properties) == dict(expected.mlmd_artifact.properties)
    assert dict(actual.mlmd_artifact.custom_properties) == dict(expected.mlmd_artifact.custom_properties)
    expected_splits, actual_splits = split_contents(expected), split_contents(actual)
    for name, expected_examples in expected_splits.items():
        assert actual_splits[name] == expected_examples, difference(name, expected_examples, actual_splits[name])
        # Our records are already the deterministic serialization (the bytes CsvExampleGen hashes).
        assert sorted(read_records(actual, name)) == expected_examples
    return expected_splits


def difference(split: str, expected: List[bytes], actual: List[bytes]) -> str:
    """What differs, readably: counts and one example only CsvExampleGen wrote (and one only ours)."""
    missing, extra = Counter(expected) - Counter(actual), Counter(actual) - Counter(expected)
    return (f"split {split}: CsvExampleGen wrote {len(expected)} examples, ours {len(actual)}; "
            f"only CsvExampleGen's, e.g.:\n{first_as_text(missing)}\nonly ours, e.g.:\n{first_as_text(extra)}")


def first_as_text(records: Counter) -> str:
    return str(tf.train.Example.FromString(next(iter(records)))) if records else "-"


def write_span(root: Path, text: str, name: str = "data.csv", day: str = DAY, encoding: Optional[str] = "utf-8",
               data: Optional[bytes] = None) -> Path:
    folder = root / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data if data is not None else text.encode(encoding))
    return path


def parsed(record: bytes) -> Dict[str, tf.train.Feature]:
    return dict(tf.train.Example.FromString(record).features.feature)


# ----------------------------------------------------------------------------------- same output


def test_taxi_rows_land_in_the_same_splits(tmp_path):
    lines = bundled_csv_path().read_text(encoding="utf-8").splitlines(keepends=True)[:2001]
    write_span(tmp_path / "data", "".join(lines))
    splits = assert_same_output(tmp_path / "data", tmp_path, single_split(), TRAIN_EVAL)
    assert len(splits["train"]) + len(splits["eval"]) == 2000
    assert 0.1 < len(splits["eval"]) / 2000 < 0.3  # 1 of 5 hash buckets


def test_every_type_edge_of_the_fixture_matches(tmp_path):
    """Quoted fields (commas, newlines, doubled quotes, text after a closing quote), unicode, empty
    cells, an all-empty column, int64 bounds and beyond, 1e308, nan/-nan/inf, -0, spaces, 1_000,
    and the double halfway between the largest float32 and 2**128."""
    write_span(tmp_path / "data", (FIXTURES / "edge_cases.csv").read_text(encoding="utf-8"))
    splits = assert_same_output(tmp_path / "data", tmp_path, single_split(), TRAIN_EVAL)
    examples = [parsed(record) for records in splits.values() for record in records]
    assert len(examples) == 15  # the blank line is skipped
    first = examples[0]
    assert first["int_col"].HasField("int64_list")
    assert first["big_int"].HasField("bytes_list")  # 9223372036854775808 makes the column STRING
    assert first["float_col"].HasField("float_list") and first["mixed_num"].HasField("float_list")
    assert first["other_digits"].HasField("bytes_list")  # Arabic-Indic digits are not int() of bytes
    assert first["spaced"].HasField("int64_list")
    assert all(example["all_empty"].WhichOneof("kind") is None for example in examples)
    texts = {value for example in examples for value in example["text"].bytes_list.value}
    assert {b"comma, inside", b"line one\nline two", b'he said "hi"', b"quotedtail",
            "Caf\u00e9 \u2615 \u4e2d\u6587".encode()} <= texts


def test_unquoted_crlf_file_with_blank_lines_and_a_repeated_column_matches(tmp_path):
    """The pyarrow path (no quotes): CRLF endings, blank lines, a 5000-digit number (int() refuses
    it, float() makes it inf), unicode digits, and a header naming column `a` twice (last wins)."""
    huge = "1" * 5000
    rows = ["a,b,c,d,e,a", "1,1.5,x,,3,0.5", "", " 2 ,nan,caf\u00e9,,\u0663,1", "+3,-0.0, sp ,,4,2",
            "1_000,1e308,,,5,", f"-4,{huge},y,,6,7", "", "5,-inf,\u4e2d,,7,8"]
    write_span(tmp_path / "data", "\r\n".join(rows) + "\r\n")
    splits = assert_same_output(tmp_path / "data", tmp_path, single_split(), TRAIN_EVAL)
    examples = [parsed(record) for records in splits.values() for record in records]
    assert len(examples) == 6
    assert {tuple(example["a"].float_list.value) for example in examples} == {(0.5,), (1.0,), (2.0,), (),
                                                                              (7.0,), (8.0,)}


def test_input_splits_with_several_files_a_header_only_file_and_an_empty_file(tmp_path):
    root = tmp_path / "data"
    lines = bundled_csv_path().read_text(encoding="utf-8").splitlines(keepends=True)
    write_span(root, "".join(lines[:301]), name="part-1.csv", day="taxi")
    write_span(root, lines[0] + "".join(lines[301:501]), name="part-2.csv", day="taxi")
    write_span(root, lines[0], day="header_only")
    write_span(root, "", day="empty")
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=name, pattern=f"{name}/*.csv") for name in ("taxi", "header_only", "empty")])
    splits = assert_same_output(root, tmp_path, input_config, example_gen_pb2.Output())
    assert [len(splits[name]) for name in ("taxi", "header_only", "empty")] == [500, 0, 0]


def test_partition_by_a_feature_matches(tmp_path):
    lines = bundled_csv_path().read_text(encoding="utf-8").splitlines(keepends=True)[:501]
    write_span(tmp_path / "data", "".join(lines))
    output_config = example_gen_pb2.Output()
    output_config.CopyFrom(TRAIN_EVAL)
    output_config.split_config.partition_feature_name = "payment_type"
    assert_same_output(tmp_path / "data", tmp_path, single_split(), output_config)


# -------------------------------------------------------------------------- the same failures


@pytest.mark.parametrize("feature, message", [
    ("nope", "Feature name `nope` does not exist"),
    ("fare", "Only `bytes_list` and `int64_list` features are supported"),
    ("empty", "Partition feature does not contain any value"),
])
def test_an_unusable_partition_feature_fails(tmp_path, feature, message):
    write_span(tmp_path / "data", "fare,empty,company\n1.5,,A\n2.5,,B\n")
    output_config = example_gen_pb2.Output()
    output_config.CopyFrom(TRAIN_EVAL)
    output_config.split_config.partition_feature_name = feature
    for executor_module in (tfx_executor, fast_executor):
        with pytest.raises(Exception) as raised:
            run_executor(executor_module.Executor, tmp_path / "data", tmp_path / executor_module.__name__,
                         single_split(), output_config)
        assert message in str(raised.value), executor_module.__name__


def assert_both_fail(tmp_path: Path, *messages: str) -> str:
    """Both executors fail on the span in tmp_path/data; ours says all of `messages`."""
    with pytest.raises(Exception):
        run_executor(tfx_executor.Executor, tmp_path / "data", tmp_path / "tfx", single_split(), TRAIN_EVAL)
    with pytest.raises((ValueError, RuntimeError)) as raised:
        run_executor(fast_executor.Executor, tmp_path / "data", tmp_path / "fast", single_split(), TRAIN_EVAL)
    for message in messages:
        assert message in str(raised.value)
    return str(raised.value)


@pytest.mark.parametrize("bad_row", ["3,4,5,6", '3,"4,5",6,7'])
def test_a_row_with_the_wrong_number_of_fields_names_the_file_and_line(tmp_path, bad_row):
    path = write_span(tmp_path / "data", f"a,b,c\n1,2,3\n\n{bad_row}\n7,8,9\n")
    message = assert_both_fail(tmp_path, f"{path}, line 4", "4 fields but the header has 3")
    assert "fix the file" in message


def test_unbalanced_quotes_name_the_line_where_the_field_opens(tmp_path):
    path = write_span(tmp_path / "data", 'a,b\n1,2\n3,"open\n5,6\n')
    assert_both_fail(tmp_path, "unbalanced quotes", f"{path}, line 3")


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = write_span(tmp_path / "data", "", data=b"a,b\n1,2\n3,Caf\xe9\n")
    assert_both_fail(tmp_path, f"{path}, line 3", "not UTF-8")


def test_files_of_a_split_with_different_headers_fail(tmp_path):
    write_span(tmp_path / "data", "a,b\n1,2\n", name="one.csv")
    write_span(tmp_path / "data", "a,c\n1,2\n", name="two.csv")
    assert_both_fail(tmp_path, "have different header", "two.csv")


def test_a_pattern_without_files_fails(tmp_path):
    (tmp_path / "data" / DAY).mkdir(parents=True)
    assert_both_fail(tmp_path, "does not match any files")


def test_a_quote_inside_an_unquoted_field_is_refused_not_misread(tmp_path):
    """CsvExampleGen's reader loops on such a record (it feeds the same line again), so only ours runs."""
    path = write_span(tmp_path / "data", 'a,b\n1,2\nx"y,"z\n3,4\n')
    with pytest.raises(ValueError, match=f"{path}, line 3: a '\"' inside an unquoted field"):
        run_executor(fast_executor.Executor, tmp_path / "data", tmp_path / "fast", single_split(), TRAIN_EVAL)


def test_a_file_that_grows_between_the_two_passes_fails(tmp_path, monkeypatch):
    path = write_span(tmp_path / "data", "a\n1\n2\n")
    read_all = CsvSplit.chunks

    def chunks_then_a_producer_appends(self):
        yield from read_all(self)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("3\n")

    monkeypatch.setattr(CsvSplit, "chunks", chunks_then_a_producer_appends)
    with pytest.raises(RuntimeError, match="2 rows when inferring types but 3 examples written; a file changed"):
        run_executor(fast_executor.Executor, tmp_path / "data", tmp_path / "fast", single_split(), TRAIN_EVAL)


def test_an_output_format_csv_example_gen_cannot_write_is_refused(tmp_path):
    write_span(tmp_path / "data", "a\n1\n")
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / "fast")
    with pytest.raises(ValueError, match="FORMAT_PARQUET is not supported"):
        fast_executor.Executor().Do({}, {keys.EXAMPLES_KEY: [examples]}, {
            keys.INPUT_BASE_KEY: str(tmp_path / "data"),
            keys.INPUT_CONFIG_KEY: proto_utils.proto_to_json(single_split()),
            keys.OUTPUT_CONFIG_KEY: proto_utils.proto_to_json(TRAIN_EVAL),
            keys.OUTPUT_DATA_FORMAT_KEY: example_gen_pb2.FORMAT_PARQUET,
        })
