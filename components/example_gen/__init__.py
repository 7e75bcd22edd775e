"""FastCsvExampleGen: CsvExampleGen's component and artifact contract with a faster executor.

- component.py: the component (CsvExampleGen's spec, parameters and driver; this executor);
- executor.py: `Do()`: two chunked passes per input split, no Beam;
- csv_source.py: the files and records, read as CsvExampleGen reads them;
- column_types.py: the type of each column, inferred as CsvExampleGen infers it;
- wire.py: the tf.Example bytes, encoded by hand;
- partition.py: the hash that picks each example's split;
- arrays.py: pyarrow arrays' values as Python bytes.
"""
