"""A SavedModel's signature over many rows in this process, in large batches.

Why in batches and in process: a signature call has a fixed cost of a few hundred microseconds of
Python and TensorFlow dispatch, and the taxi model's arithmetic per row is small, so rows/s grows
with the batch until about 8192 rows (measured on a 2-core machine: 150k rows through
`serving_default` at 152k rows/s in batches of 1024, 231k rows/s in batches of 8192, 226k rows/s
in batches of 32768). The Evaluator's fast path (components/evaluator/fast.py) and batch scoring
(pipelines/scoring.py) both call signatures through here.

`csv_examples` turns a span's CSV files into the tf.Examples the model parses, with the wire
encoder FastCsvExampleGen writes its Examples with (components/example_gen/wire.py) and the types
the model's own ParseExample op asks for (serving/servable.py reads them, as the model server does
for JSON requests): so a row scored here is the same tf.Example the server builds for it.
"""

from __future__ import annotations

import os
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np

BATCH_SIZE = 8192
# Signature calls at once in batch scoring (`called`): 1.5M taxi rows on 2 cores, quiet, three
# alternating rounds: 384-391k rows/s with one, 454-477k with two, 477-494k with three.
CALLERS = 2


def output_of(outputs: Mapping[str, object], prediction_key: str, where: str) -> np.ndarray:
    """The one output of a signature call that holds the predictions, as a float64 vector: the one
    named `prediction_key`, else the only output."""
    if prediction_key:
        output = outputs[prediction_key]
    elif len(outputs) == 1:
        output = next(iter(outputs.values()))
    else:
        raise ValueError(f"{where} has outputs {sorted(outputs)}; set prediction_key in the model spec")
    return np.asarray(output, dtype=np.float64).reshape(-1)


def call_in_batches(fn, serialized: Sequence[bytes], batch_size: int = BATCH_SIZE) -> Iterator[Tuple[object, Dict]]:
    """(the batch as a string tensor, the signature's outputs) for each batch of `serialized`
    (an example-taking signature: its input is called `examples`)."""
    import tensorflow as tf

    for start in range(0, len(serialized), batch_size):
        batch = tf.constant(serialized[start:start + batch_size])
        yield batch, fn(examples=batch)


# --- a span's CSV rows as the model's tf.Examples -----------------------------------------------------


class CsvExamples:
    """The rows of a span's CSV files as serialized tf.Examples typed as `kinds` asks
    ({feature: serving.example_encoder INT | FLOAT | BYTES}, the model's parse spec), in batches.

    Each row is identified by its file (name in the span folder) and its position among the
    file's data rows (0-based; header and blank lines not counted: `pandas.read_csv`'s index)."""

    def __init__(self, folder: str, kinds: Mapping[str, str], pattern: str = "*.csv"):
        from components.example_gen.csv_source import CsvSplit

        self.split = CsvSplit(folder, pattern)
        self.files = sorted(self.split.files)
        header = self.split.column_names
        self.features = sorted(name for name in kinds if name in header)
        self.missing = sorted(name for name in kinds if name not in header)
        self._positions = [header.index(name) for name in self.features]
        self._kinds = {name: kinds[name] for name in self.features}

    def _encoder(self):
        from components.example_gen.column_types import ColumnType
        from components.example_gen.wire import ExampleEncoder
        from serving.example_encoder import BYTES, FLOAT, INT

        types = {INT: ColumnType.INT, FLOAT: ColumnType.FLOAT, BYTES: ColumnType.STRING}
        return ExampleEncoder(self.features, {name: types[kind] for name, kind in self._kinds.items()})

    def batches(self, batch_size: int = BATCH_SIZE) -> Iterator[Tuple[List[Tuple[str, int, int]], List[bytes]]]:
        """([(file name, first row, row count), ...], serialized examples) of about `batch_size` rows
        at a time, in file and row order."""
        encoder = self._encoder()
        pending: List[bytes] = []
        spans: List[Tuple[str, int, int]] = []
        for path in self.files:
            name, row = os.path.basename(path), 0
            for columns in self.split.file_chunks(path):
                try:
                    serialized = encoder.encode([columns[p] for p in self._positions])
                except ValueError as err:
                    raise ValueError(f"{path}, data rows {row}-{row + len(columns[0]) - 1}: a value does not parse "
                                     f"as the type the model reads ({err})") from err
                spans.append((name, row, len(serialized)))
                pending.extend(serialized)
                row += len(serialized)
                if len(pending) >= batch_size:
                    yield spans, pending
                    spans, pending = [], []
        if pending:
            yield spans, pending


# --- a span's CSV rows as the columns of a signature that takes raw features ------------------------

NUMPY_TYPES = {"int64": "int64", "float32": "float32", "string": "object"}


class Coded:
    """A text column as its distinct values and one code per row (pyarrow's dictionary encoding):
    `np.asarray(column)` gives the row values; `tensors()` builds the [batch] string tensor with one
    gather in TensorFlow instead of one Python string per cell (the taxi columns `company` and
    `payment_type` have tens of distinct values in hundreds of thousands of rows)."""

    __slots__ = ("values", "codes")

    def __init__(self, values: np.ndarray, codes: np.ndarray):
        self.values, self.codes = values, codes

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> "Coded":
        return Coded(self.values, self.codes[rows])

    def __array__(self, dtype=None, copy=None):
        decoded = self.values[self.codes] if len(self.values) else np.full(len(self.codes), "", dtype=object)
        return decoded if dtype is None else decoded.astype(dtype)


def tensors(arrays: Mapping[str, object]) -> Dict[str, object]:
    """{input: tensor} for a signature call from CsvColumns' arrays (a Coded column by a gather)."""
    import tensorflow as tf

    out = {}
    for name, array in arrays.items():
        if isinstance(array, Coded):
            out[name] = tf.gather(tf.constant(array.values, dtype=tf.string), tf.constant(array.codes))
        else:
            out[name] = tf.constant(array)
    return out


class CsvColumns:
    """The rows of a span's CSV files as one array per input of a signature that takes raw
    features as [batch] tensors (the taxi model's `serving_features`: {name: dtype name}), in
    batches, rows identified as in CsvExamples. An empty cell is 0 for a number and "" for text,
    as a JSON client sends it to that signature (pipelines/taxi/model.py: the preprocessing fills
    the same values in for a feature a tf.Example leaves out, so the answer is serving_default's).

    Why: parsing the CSV text straight into typed columns is pyarrow's C++ (`pyarrow.csv`'s
    streaming reader, about 1 us a row here), where building and then parsing a tf.Example per row
    costs about 9 us a row, more than the model's own work. A file pyarrow cannot read that way (a
    quoted field holding a newline) is read as ExampleGen reads it (csv_source.py) and typed by
    pyarrow's cast, from the row where pyarrow stopped."""

    def __init__(self, folder: str, dtypes: Mapping[str, str], pattern: str = "*.csv"):
        from components.example_gen.csv_source import CsvSplit

        self.split = CsvSplit(folder, pattern)
        self.files = sorted(self.split.files)
        header = self.split.column_names
        self.missing = sorted(name for name in dtypes if name not in header)
        self._columns = [(name, header.index(name), dtypes[name]) for name in sorted(dtypes) if name in header]

    def batches(self, batch_size: int = BATCH_SIZE) -> Iterator[Tuple[List[Tuple[str, int, int]], Dict[str, np.ndarray]]]:
        """([(file name, first row, row count)], {input: array}) of about `batch_size` rows at a
        time, in file and row order; a text column may be a Coded (`np.asarray` decodes it, and
        `tensors()` makes the call's tensors of any of them)."""
        for path in self.files:
            name, row = os.path.basename(path), 0
            try:
                for arrays in self._fast(path, batch_size):
                    count = len(next(iter(arrays.values()))) if arrays else 0
                    yield [(name, row, count)], arrays
                    row += count
            except ValueError:  # pyarrow.ArrowInvalid is a ValueError
                for first, arrays in self._exact(path, row, batch_size):
                    count = len(next(iter(arrays.values())))
                    yield [(name, first, count)], arrays

    def _fast(self, path: str, batch_size: int) -> Iterator[Dict[str, np.ndarray]]:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv

        # Text as a dictionary column: the cells' distinct values once and an int32 code per row.
        text = pa.dictionary(pa.int32(), pa.string())
        types = {name: {"int64": pa.int64(), "float32": pa.float64(), "string": text}[dtype]
                 for name, _, dtype in self._columns}
        with open(path, "rb") as handle:
            head = handle.read(1 << 16)
        per_row = max(1, len(head) // max(1, head.count(b"\n")))
        # One thread: the model's calls use the cores meanwhile (the reader runs beside them, prefetched).
        options = pcsv.ReadOptions(block_size=max(1 << 16, batch_size * per_row), use_threads=False)
        reader = pcsv.open_csv(path, read_options=options,
                               convert_options=pcsv.ConvertOptions(column_types=types, include_columns=list(types),
                                                                   null_values=[""], strings_can_be_null=False))
        for batch in reader:
            out = {}
            for name, _, dtype in self._columns:
                column = batch.column(batch.schema.get_field_index(name))
                if dtype == "string":
                    if isinstance(column, pa.ChunkedArray):
                        column = column.combine_chunks()
                    out[name] = Coded(column.dictionary.to_numpy(zero_copy_only=False),
                                      column.indices.to_numpy(zero_copy_only=False))
                else:
                    # float64 first, then float32: what float(cell) and then protobuf's float32 give a tf.Example
                    values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
                    out[name] = values.astype(np.float32) if dtype == "float32" else values
            yield out

    def _exact(self, path: str, skip: int, batch_size: int) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
        """(first row, arrays) from row `skip` on, read as ExampleGen reads the file."""
        row, pending, first = 0, [], None
        for columns in self.split.file_chunks(path):
            rows = len(columns[0])
            if row + rows > skip:
                cut = max(0, skip - row)
                columns = [c.slice(cut) for c in columns]
                first = row + cut if first is None else first
                pending.append(self._typed(path, row + cut, columns))
                if sum(len(next(iter(p.values()))) for p in pending) >= batch_size:
                    yield first, _concatenated(pending)
                    pending, first = [], None
            row += rows
        if pending:
            yield first, _concatenated(pending)

    def _typed(self, path: str, first_row: int, columns) -> Dict[str, np.ndarray]:
        import pyarrow as pa
        import pyarrow.compute as pc

        out = {}
        for name, position, dtype in self._columns:
            cells = columns[position]
            if dtype == "string":
                out[name] = cells.to_numpy(zero_copy_only=False)
                continue
            filled = pc.if_else(pc.equal(cells, ""), "0", cells)
            try:
                typed = pc.cast(filled, pa.float64() if dtype == "float32" else pa.int64()).to_numpy()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise ValueError(f"{path}, data rows {first_row}-{first_row + len(cells) - 1}: column {name} does not "
                                 f"parse as the {dtype} the model reads ({err})") from err
            out[name] = typed.astype(np.float32) if dtype == "float32" else typed
        return out


def _concatenated(parts: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def called(call, batches: Iterator, callers: int = CALLERS) -> Iterator:
    """(spans, {output: numpy array}) of `call(batch)` for each (spans, batch) of `batches`, in order,
    with up to `callers` calls running at once on threads: while one call waits on the GIL (building
    its tensors, converting its outputs) the other keeps TensorFlow's cores busy."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    def run(batch):
        return {key: value.numpy() for key, value in call(batch).items()}

    if callers <= 1:
        for spans, batch in batches:
            yield spans, run(batch)
        return
    pending: "collections.deque" = collections.deque()
    with ThreadPoolExecutor(max_workers=callers, thread_name_prefix="score-call") as pool:
        try:
            for spans, batch in batches:
                pending.append((spans, pool.submit(run, batch)))
                if len(pending) >= callers:
                    spans_done, future = pending.popleft()
                    yield spans_done, future.result()
            while pending:
                spans_done, future = pending.popleft()
                yield spans_done, future.result()
        finally:
            for _, future in pending:
                future.cancel()


def prefetched(batches: Iterator, depth: int = 2) -> Iterator:
    """`batches`, produced on a thread `depth` batches ahead: reading and typing the next rows
    (pyarrow, which releases the GIL) overlaps the model's call on these (TensorFlow releases it
    too). An error on the thread is raised here, at the batch it stopped at."""
    import queue
    import threading

    slots: "queue.Queue" = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put((batch, None), timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as err:  # noqa: BLE001 -- handed to the consumer
            slots.put((done, err))

    thread = threading.Thread(target=produce, name="score-reader", daemon=True)
    thread.start()
    try:
        while True:
            batch, err = slots.get()
            if batch is done:
                if err is not None:
                    raise err
                return
            yield batch
    finally:
        stop.set()
