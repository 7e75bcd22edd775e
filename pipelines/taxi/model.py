"""Trainer's `run_fn`: a Wide & Deep Keras model trained inside a `tf.distribute` strategy.

`train_and_export` does the work and is callable outside TFX, which is how the
MultiWorkerMirroredStrategy test runs it in two processes with `TF_CONFIG`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Sequence

import tensorflow as tf
import tensorflow_transform as tft

from components.util.keras import skip_autograph_of_tf_keras
from pipelines.taxi import features as F
from pipelines.taxi.model_options import (FEATURES_SIGNATURE, HIDDEN_UNITS, LEARNING_RATE, STRATEGIES,
                                        tuned_hyperparameters)

log = logging.getLogger(__name__)

EMBEDDING_DIM = 8


class UnknownStrategyError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    train_files: Sequence[str]
    eval_files: Sequence[str]
    transform_output_dir: str
    serving_model_dir: str
    train_steps: int
    eval_steps: int
    batch_size: int = 64
    strategy: str = "auto"
    learning_rate: float = LEARNING_RATE
    hidden_units: Sequence[int] = HIDDEN_UNITS


def tf_config_worker_count(tf_config: str | None = None) -> int:
    raw = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not raw:
        return 0
    cluster = json.loads(raw).get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Builds the strategy named by config; `auto` picks multi-worker when TF_CONFIG has peers."""
    if name not in STRATEGIES:
        raise UnknownStrategyError(
            f"unknown distribution strategy {name!r} (use one of: {', '.join(STRATEGIES)})"
        )
    if name == "auto":
        name = "multi_worker" if tf_config_worker_count() > 1 else "mirrored"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return tf.distribute.MirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def make_dataset(files, tf_transform_output, batch_size: int) -> tf.data.Dataset:
    """Reads raw gzipped tf.Example records (ExampleGen's) and applies the transform graph per
    batch: (transformed features, label) batches, repeating.

    Transform does not write transformed copies of the window's spans (each night's transform
    graph differs, so every span would be rewritten every night); a few hundred training batches
    cost far less to transform here."""
    raw_spec = tf_transform_output.raw_feature_spec()
    dataset = tf.data.experimental.make_batched_features_dataset(
        file_pattern=list(files),
        batch_size=batch_size,
        features=raw_spec,
        reader=lambda filenames: tf.data.TFRecordDataset(filenames, compression_type="GZIP"),
        shuffle=True,
        shuffle_seed=42,
    )
    transform = tf_transform_output.transform_features_layer()

    def transformed(raw):
        features = transform(raw)
        label = features.pop(F.TRANSFORMED_LABEL)
        return features, label

    dataset = dataset.map(transformed, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # ExampleGen writes few shards; shard by record so every worker gets data.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def build_model(tf_transform_output, learning_rate: float,
                hidden_units: Sequence[int] = HIDDEN_UNITS) -> tf.keras.Model:
    """Wide (one-hot categorical) & Deep (dense + embeddings) binary classifier."""
    inputs, wide_parts, deep_parts = {}, [], []
    for key in F.DENSE_FLOAT_FEATURES:
        name = F.transformed_name(key)
        inputs[name] = tf.keras.Input(shape=(1,), name=name, dtype=tf.float32)
        deep_parts.append(inputs[name])
    categorical_sizes = {
        F.transformed_name(key): tf_transform_output.vocabulary_size_by_name(key) + F.OOV_BUCKETS
        for key in F.VOCAB_FEATURES
    }
    categorical_sizes.update({F.transformed_name(key): size for key, size in F.IDENTITY_FEATURES.items()})
    categorical_sizes.update({F.transformed_name(key): F.HASH_BUCKETS for key in F.HASHED_FEATURES})
    categorical_sizes.update({F.transformed_name(key): F.BUCKET_COUNT + 1 for key in F.BUCKET_FEATURES})
    for name, size in categorical_sizes.items():
        inputs[name] = tf.keras.Input(shape=(1,), name=name, dtype=tf.int64)
        wide_parts.append(tf.keras.layers.CategoryEncoding(num_tokens=size, output_mode="one_hot")(inputs[name]))
        embedded = tf.keras.layers.Embedding(size, EMBEDDING_DIM)(inputs[name])
        deep_parts.append(tf.keras.layers.Flatten()(embedded))

    deep = tf.keras.layers.concatenate(deep_parts)
    for units in hidden_units:
        deep = tf.keras.layers.Dense(units, activation="relu")(deep)
    wide = tf.keras.layers.concatenate(wide_parts)
    logit = tf.keras.layers.add([tf.keras.layers.Dense(1)(deep), tf.keras.layers.Dense(1)(wide)])
    output = tf.keras.layers.Activation("sigmoid", name="probability")(logit)
    model = tf.keras.Model(inputs=inputs, outputs=output)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[tf.keras.metrics.BinaryAccuracy(), tf.keras.metrics.AUC(name="auc")],
    )
    return model


def _as_parsed(value, spec):
    """A dense [batch] tensor as `tf.io.parse_example` would give `spec`: every row has its value."""
    if isinstance(spec, tf.io.VarLenFeature):
        rows = tf.shape(value, out_type=tf.int64)[0]
        indices = tf.stack([tf.range(rows), tf.zeros([rows], tf.int64)], axis=1)
        return tf.SparseTensor(indices, value, tf.stack([rows, tf.constant(1, tf.int64)]))
    if isinstance(spec, tf.io.FixedLenFeature) and list(spec.shape) == [1]:
        return tf.expand_dims(value, 1)
    return value


def _serving_signatures(model, tf_transform_output):
    """`serving_default` takes serialized raw tf.Examples (the transform graph is inside);
    `serving_features` takes the same raw features as one named [batch] tensor each.

    `serving_features` is for JSON clients: `{"signature_name": "serving_features", "instances":
    [{"fare": 5.5, "company": "", ...}]}` is TF Serving's own row format, so it works the same on
    real TF Serving, and needs no tf.Example on either side. A missing value is sent as 0 (numbers)
    or "" (text): what the preprocessing fills in for a feature a tf.Example leaves out, so both
    signatures give the same answer for the same trip. Columns that are not model inputs
    (`features.UNUSED_COLUMNS`) are not asked for."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_spec = tf_transform_output.raw_feature_spec()
    serving_spec = {k: v for k, v in raw_spec.items() if k != F.LABEL_KEY}
    feature_inputs = {
        k: tf.TensorSpec(shape=[None], dtype=v.dtype, name=k)
        for k, v in sorted(serving_spec.items()) if k not in F.UNUSED_COLUMNS
    }

    def predict(parsed):
        transformed = model.tft_layer(parsed)
        transformed.pop(F.TRANSFORMED_LABEL, None)
        return {"probabilities": model(transformed)}

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
    def serve_examples(serialized):
        return predict(tf.io.parse_example(serialized, serving_spec))

    @tf.function(input_signature=[feature_inputs])
    def serve_features(features):
        parsed = {k: _as_parsed(v, serving_spec[k]) for k, v in features.items()}
        rows = tf.shape(next(iter(features.values())), out_type=tf.int64)[0]
        for k in serving_spec.keys() - parsed.keys():  # unused columns the transform graph still takes
            parsed[k] = _as_parsed(tf.zeros([rows], serving_spec[k].dtype), serving_spec[k])
        return predict(parsed)

    @tf.function(input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string, name="examples")])
    def transform_features(serialized):
        # Used by the Evaluator to compute the label from raw examples.
        parsed = tf.io.parse_example(serialized, raw_spec)
        return model.tft_layer(parsed)

    return {
        "serving_default": serve_examples,
        FEATURES_SIGNATURE: serve_features.get_concrete_function(),
        "transform_features": transform_features,
    }


def train_and_export(spec: TrainSpec) -> dict:
    """Trains and writes the SavedModel (chief only); returns the final eval metrics."""
    skip_autograph_of_tf_keras()
    tf_transform_output = tft.TFTransformOutput(spec.transform_output_dir)
    strategy = make_strategy(spec.strategy)
    log.info("training with %s, %d replica(s)", type(strategy).__name__, strategy.num_replicas_in_sync)
    global_batch = spec.batch_size * strategy.num_replicas_in_sync
    train_ds = make_dataset(spec.train_files, tf_transform_output, global_batch)
    eval_ds = make_dataset(spec.eval_files, tf_transform_output, global_batch)
    with strategy.scope():
        model = build_model(tf_transform_output, spec.learning_rate, spec.hidden_units)
    model.fit(train_ds, steps_per_epoch=spec.train_steps, verbose=0)
    metrics = model.evaluate(eval_ds, steps=spec.eval_steps, return_dict=True, verbose=0)
    signatures = _serving_signatures(model, tf_transform_output)
    # Every worker must take part in saving; only the chief's copy is kept.
    chief = is_chief(strategy)
    target = spec.serving_model_dir if chief else tempfile.mkdtemp(prefix="worker-model-")
    try:
        # save_traces=False: skip tracing every layer's call for Keras-only revival (~10 s here);
        # the signatures are traced as before, and Keras can still rebuild the model from its config.
        model.save(target, save_format="tf", signatures=signatures, save_traces=False)
    finally:
        if not chief:
            shutil.rmtree(target, ignore_errors=True)
    log.info("model written to %s; eval %s", target if chief else "(discarded: not the chief)", metrics)
    result = {k: float(v) for k, v in metrics.items()}
    result.update(strategy=type(strategy).__name__, replicas=int(strategy.num_replicas_in_sync))
    return result


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (referenced as `pipelines.taxi.model.run_fn`)."""
    custom = fn_args.custom_config or {}
    # The newest weekly tuning result, when the Trainer got one, wins over the defaults in custom_config.
    custom = {**custom, **tuned_hyperparameters(getattr(fn_args, "hyperparameters", None))}
    train_and_export(
        TrainSpec(
            train_files=fn_args.train_files,
            eval_files=fn_args.eval_files,
            transform_output_dir=fn_args.transform_output,
            serving_model_dir=fn_args.serving_model_dir,
            train_steps=fn_args.train_steps,
            eval_steps=fn_args.eval_steps,
            batch_size=int(custom.get("batch_size", 64)),
            strategy=str(custom.get("strategy", "auto")),
            learning_rate=float(custom.get("learning_rate", LEARNING_RATE)),
            hidden_units=tuple(int(u) for u in custom.get("hidden_units", HIDDEN_UNITS)),
        )
    )


def _main(argv=None) -> int:
    """Trains outside TFX (one process per worker under TF_CONFIG); used by the multi-worker test."""
    import argparse

    parser = argparse.ArgumentParser(description="Train the taxi model from raw examples and a transform graph.")
    parser.add_argument("--train-files", nargs="+", required=True)
    parser.add_argument("--eval-files", nargs="+", required=True)
    parser.add_argument("--transform-output", required=True)
    parser.add_argument("--serving-model-dir", required=True)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--eval-steps", type=int, default=5)
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    metrics = train_and_export(
        TrainSpec(
            train_files=args.train_files,
            eval_files=args.eval_files,
            transform_output_dir=args.transform_output,
            serving_model_dir=args.serving_model_dir,
            train_steps=args.train_steps,
            eval_steps=args.eval_steps,
            strategy=args.strategy,
        )
    )
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
