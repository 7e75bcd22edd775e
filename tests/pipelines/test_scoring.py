"""Batch scoring's readers, without a pipeline: a span's CSV rows as typed columns (pyarrow's streaming
reader, and ExampleGen's reader where pyarrow cannot stream), as tf.Examples, and the input
fingerprint ExampleGen records. The scoring itself, end to end: tests/e2e/test_scoring.py."""

from __future__ import annotations

import os
import time

import numpy as np

from components.util.batch_predict import Coded, CsvColumns, CsvExamples, called, prefetched, tensors
from pipelines.scoring import input_fingerprint

HEADER = "fare,company,trip_start_hour,tips\n"
DTYPES = {"fare": "float32", "company": "string", "trip_start_hour": "int64"}


def _span(tmp_path, files: dict):
    folder = tmp_path / "2026-11-20"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _all(reader, batch_size=8192):
    spans, batches = zip(*reader.batches(batch_size))
    merged = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    return [s for group in spans for s in group], merged


def test_columns_are_typed_as_the_signature_takes_them_and_rows_keyed_per_file(tmp_path):
    folder = _span(tmp_path, {"a.csv": HEADER + "5.25,Taxi Co,7,1.0\n,,,\n\n1e3,Other,23,0\n",
                              "b.csv": HEADER + "0.1,x,1,0\n"})
    spans, arrays = _all(CsvColumns(str(folder), DTYPES))
    assert spans == [("a.csv", 0, 3), ("b.csv", 0, 1)]  # the blank line is no row
    assert arrays["fare"].dtype == np.float32 and arrays["trip_start_hour"].dtype == np.int64
    np.testing.assert_array_equal(arrays["fare"], np.array([5.25, 0.0, 1000.0, 0.1], dtype=np.float32))
    assert arrays["trip_start_hour"].tolist() == [7, 0, 23, 1]  # an empty cell is 0, as JSON clients send it
    assert arrays["company"].tolist() == ["Taxi Co", "", "Other", "x"]
    assert "tips" not in arrays  # not a model input


def test_text_is_read_as_codes_and_becomes_the_same_string_tensor_as_its_cells(tmp_path):
    folder = _span(tmp_path, {"data.csv": HEADER + "".join(f"1,{['Taxi Co', '', 'Other'][i % 3]},{i % 24},0\n"
                                                            for i in range(100))})
    [(_, batch)] = list(CsvColumns(str(folder), DTYPES).batches())
    company = batch["company"]
    assert isinstance(company, Coded) and len(company) == 100 and len(company.values) == 3
    cells = [["Taxi Co", "", "Other"][i % 3] for i in range(100)]
    assert np.asarray(company).tolist() == cells and np.asarray(company[5:7]).tolist() == cells[5:7]
    made = tensors(batch)
    assert made["company"].dtype.name == "string" and made["company"].numpy().tolist() == [c.encode() for c in cells]
    assert made["trip_start_hour"].numpy().tolist() == [i % 24 for i in range(100)]


def test_a_quoted_newline_is_read_as_examplegen_reads_it_with_the_same_keys(tmp_path):
    text = HEADER + "1.5,plain,1,0\n" + "2.5,\"two\nlines\",2,0\n" + "3.5,after,3,0\n"
    folder = _span(tmp_path, {"data.csv": text})
    spans, arrays = _all(CsvColumns(str(folder), DTYPES))
    assert sum(count for _, _, count in spans) == 3 and spans[0][:2] == ("data.csv", 0)
    assert arrays["company"].tolist() == ["plain", "two\nlines", "after"]
    assert arrays["trip_start_hour"].tolist() == [1, 2, 3]


def test_a_cell_that_does_not_parse_names_the_file_rows_and_column(tmp_path):
    folder = _span(tmp_path, {"data.csv": HEADER + "1.5,a,1,0\n2.5,b,noon,0\n"})
    try:
        _all(CsvColumns(str(folder), DTYPES))
    except ValueError as err:
        assert "data.csv" in str(err) and "trip_start_hour" in str(err) and "int64" in str(err), err
    else:
        raise AssertionError("a non-integer hour was read")


def test_examples_are_the_tf_examples_the_model_parses(tmp_path):
    import tensorflow as tf

    folder = _span(tmp_path, {"data.csv": HEADER + "5.25,Taxi Co,7,1.0\n,,,\n"})
    reader = CsvExamples(str(folder), {"fare": "float", "company": "bytes", "trip_start_hour": "int64"})
    [(spans, serialized)] = list(reader.batches())
    assert spans == [("data.csv", 0, 2)]
    first, second = (tf.train.Example.FromString(s).features.feature for s in serialized)
    assert first["fare"].float_list.value == [5.25] and first["company"].bytes_list.value == [b"Taxi Co"]
    assert first["trip_start_hour"].int64_list.value == [7] and "tips" not in first
    assert list(second["fare"].float_list.value) == []  # an empty cell: the feature with no value, as ExampleGen


def test_batches_split_large_files_and_prefetching_keeps_their_order(tmp_path):
    rows = "".join(f"{i}.5,c{i % 3},{i % 24},0\n" for i in range(5000))
    folder = _span(tmp_path, {"data.csv": HEADER + rows})
    batches = list(prefetched(CsvColumns(str(folder), DTYPES).batches(batch_size=1000)))
    assert len(batches) > 1
    firsts = [spans[0][1] for spans, _ in batches]
    assert firsts == sorted(firsts) and firsts[0] == 0
    fares = np.concatenate([b["fare"] for _, b in batches])
    np.testing.assert_array_equal(fares, np.array([i + 0.5 for i in range(5000)], dtype=np.float32))


def test_an_error_while_prefetching_is_raised_to_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad row")

    seen = []
    try:
        for item in prefetched(failing()):
            seen.append(item)
    except ValueError as err:
        assert str(err) == "bad row" and seen == [1]
    else:
        raise AssertionError("the error was lost")


def test_the_input_fingerprint_is_tfx_s(tmp_path):
    from tfx.utils import io_utils

    folder = _span(tmp_path, {"a.csv": HEADER + "1,a,1,0\n", "b.csv": HEADER})
    os.utime(folder / "b.csv", (time.time(), time.time() - 3600))
    assert input_fingerprint(folder) == io_utils.generate_fingerprint("single_split", str(folder / "*.csv"))


def test_calls_on_several_threads_come_back_in_the_batches_order_and_an_error_is_raised():
    import random

    import tensorflow as tf

    def call(batch):
        time.sleep(random.random() / 50)  # calls finish out of order
        if batch == 13:
            raise ValueError("model failed on batch 13")
        return {"out": tf.constant([batch, batch])}

    batches = [([("data.csv", 2 * i, 2)], i) for i in range(12)]
    for callers in (1, 2, 3):
        got = list(called(call, iter(batches), callers))
        assert [spans for spans, _ in got] == [spans for spans, _ in batches]
        assert [outputs["out"].tolist() for _, outputs in got] == [[i, i] for i in range(12)]
    try:
        list(called(call, iter(batches + [([("data.csv", 24, 2)], 13)]), 2))
    except ValueError as err:
        assert "batch 13" in str(err)
    else:
        raise AssertionError("the failed call was lost")
