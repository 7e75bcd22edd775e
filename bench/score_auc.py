"""Bench child (imports TensorFlow): AUC of several SavedModels on the same rows of one CSV span.

    .venv/bin/python bench/score_auc.py --csv SPAN.csv --model NAME MODEL_DIR TRANSFORM_GRAPH_DIR ...
        [--held-out NAME SPLIT_DIR ...]

Every model is scored through its `serving_default` signature (serialized raw tf.Examples in, one
score per example out). Each row becomes one tf.Example per model, typed by that model's raw
feature spec (its transform graph's), so a model that reads a column as INT and one that reads it
as FLOAT both get what they parse. The label is the taxi's big tipper, as pipelines/taxi/
preprocessing.py defines it: tips > 0.2 * fare and fare > 0 (the stock module file's label agrees
except when the fare is 0, counted in the report).

`--held-out NAME SPLIT_DIR`: model NAME trained on part of this span; SPLIT_DIR (an ExampleGen split
folder, gzipped TFRecords) holds the examples it did not train on. The report then also gives the
AUC of every model on the rows every such model held out (matched by feature values).

Prints one line `RESULT {json}` last.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

BATCH = 4096


def read_csv(path: Path):
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def number(text: str) -> float:
    return float(text) if text.strip() else 0.0  # a missing fare or tip counts as 0, as the preprocessing fills it


def labels(header, rows):
    """(big tipper per row, rows where the stock label differs: fare 0 and a tip)."""
    import numpy as np

    fare = np.array([number(r[header.index("fare")]) for r in rows])
    tips = np.array([number(r[header.index("tips")]) for r in rows])
    return ((fare > 0) & (tips > 0.2 * fare)).astype(int), int(((fare <= 0) & (tips > 0.2 * fare)).sum())


def typed_examples(header, rows, spec):
    """One tf.Example per row with the columns `spec` knows, typed as it says; empty cells are left
    out. Also the rows the spec cannot parse (an empty cell where it wants a fixed value)."""
    import tensorflow as tf

    columns = [(i, name, spec[name]) for i, name in enumerate(header) if name in spec]
    required = {name for _, name, s in columns if isinstance(s, tf.io.FixedLenFeature) and s.default_value is None}
    examples, unparsable = [], set()
    for n, row in enumerate(rows):
        example = tf.train.Example()
        for i, name, s in columns:
            text = row[i]
            if text == "":
                if name in required:
                    unparsable.add(n)
                continue
            feature = example.features.feature[name]
            if s.dtype == tf.string:
                feature.bytes_list.value.append(text.encode())
            elif s.dtype == tf.int64:
                feature.int64_list.value.append(int(float(text)))
            else:
                feature.float_list.value.append(float(text))
        examples.append(example)
    return examples, unparsable


def example_key(example) -> tuple:
    """What identifies a row: its non-empty feature values (as stored, e.g. float32)."""
    items = []
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = tuple(getattr(feature, kind).value) if kind else ()
        if values:
            items.append((name, values))
    return tuple(sorted(items))


def split_keys(split_dir: Path) -> set:
    import tensorflow as tf

    files = sorted(str(p) for p in split_dir.iterdir() if p.is_file())
    if not files:
        raise SystemExit(f"no example files in {split_dir}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    return {example_key(tf.train.Example.FromString(record.numpy())) for record in dataset}


def predict(model_dir: str, serialized):
    import numpy as np
    import tensorflow as tf

    signature = tf.saved_model.load(model_dir).signatures["serving_default"]
    scores = []
    for start in range(0, len(serialized), BATCH):
        outputs = signature(examples=tf.constant(serialized[start:start + BATCH]))
        scores.append(np.reshape(next(iter(outputs.values())).numpy(), [-1]))
    return np.concatenate(scores)


def auc(y, scores):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else None  # undefined on one class


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, required=True, help="the span's CSV")
    parser.add_argument("--model", nargs=3, action="append", required=True, metavar=("NAME", "MODEL_DIR", "GRAPH_DIR"),
                        help="a model to score: name, SavedModel dir, its transform graph dir (repeatable)")
    parser.add_argument("--held-out", nargs=2, action="append", default=[], metavar=("NAME", "SPLIT_DIR"),
                        help="model NAME trained on part of the span; SPLIT_DIR holds the examples it did not")
    args = parser.parse_args()
    started = time.monotonic()
    import numpy as np
    import tensorflow_transform as tft

    header, rows = read_csv(args.csv)
    y, fare_zero_tipped = labels(header, rows)
    examples, unparsable, report = {}, set(), {"rows": len(rows), "positives": int(y.sum()),
                                               "fare_zero_tipped": fare_zero_tipped, "models": {}}
    for name, model_dir, graph_dir in args.model:
        examples[name], bad = typed_examples(header, rows, tft.TFTransformOutput(graph_dir).raw_feature_spec())
        unparsable |= bad
    scored = np.array([n not in unparsable for n in range(len(rows))])
    held = np.ones(len(rows), dtype=bool)
    for name, split_dir in args.held_out:
        keys = split_keys(Path(split_dir))
        held &= np.array([example_key(e) in keys for e in examples[name]])
    for name, model_dir, _ in args.model:
        serialized = [e.SerializeToString() for e, ok in zip(examples[name], scored) if ok]
        scores = predict(model_dir, serialized)
        both = held[scored]
        report["models"][name] = {"auc": auc(y[scored], scores), "auc_held_out": auc(y[scored][both], scores[both]),
                                  "mean_score": float(scores.mean())}
    report.update(scored=int(scored.sum()), held_out=int((held & scored).sum()) if args.held_out else int(scored.sum()),
                  held_out_by=[name for name, _ in args.held_out], seconds=time.monotonic() - started)
    print("RESULT " + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
