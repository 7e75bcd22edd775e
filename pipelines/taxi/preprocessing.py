"""Transform's `preprocessing_fn` for the taxi model (referenced by import path, not file)."""

import tensorflow as tf
import tensorflow_transform as tft

from pipelines.taxi import features as F


def fill_in_missing(value):
    """Densifies a feature, replacing missing values with '' or 0.

    CSV columns with empty cells arrive as rank-2 SparseTensors; the model wants dense rank-1
    tensors.
    """
    if not isinstance(value, tf.sparse.SparseTensor):
        return tf.squeeze(value, axis=1) if value.shape.rank == 2 else value
    default = "" if value.dtype == tf.string else 0
    dense = tf.sparse.to_dense(
        tf.SparseTensor(value.indices, value.values, [value.dense_shape[0], 1]),
        default_value=tf.cast(default, value.dtype),
    )
    return tf.squeeze(dense, axis=1)


def preprocessing_fn(inputs):
    """Maps raw taxi features to model inputs plus the `big_tipper` label."""
    outputs = {}
    for key in F.DENSE_FLOAT_FEATURES:
        outputs[F.transformed_name(key)] = tft.scale_to_z_score(
            tf.cast(fill_in_missing(inputs[key]), tf.float32)
        )
    for key in F.BUCKET_FEATURES:
        outputs[F.transformed_name(key)] = tft.bucketize(
            tf.cast(fill_in_missing(inputs[key]), tf.float32), F.BUCKET_COUNT
        )
    for key, size in F.IDENTITY_FEATURES.items():
        ids = tf.cast(fill_in_missing(inputs[key]), tf.int64)
        # Out-of-range ids (data errors that got through) share the last id.
        outputs[F.transformed_name(key)] = tf.where((ids < 0) | (ids >= size), tf.cast(size - 1, tf.int64), ids)
    for key in F.HASHED_FEATURES:
        as_text = tf.strings.as_string(fill_in_missing(inputs[key]))
        outputs[F.transformed_name(key)] = tf.strings.to_hash_bucket_fast(as_text, F.HASH_BUCKETS)
    for key in F.VOCAB_FEATURES:
        outputs[F.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            fill_in_missing(inputs[key]),
            top_k=F.VOCAB_SIZE,
            num_oov_buckets=F.OOV_BUCKETS,
            vocab_filename=key,
        )

    fare = tf.cast(fill_in_missing(inputs[F.FARE_KEY]), tf.float32)
    tips = tf.cast(fill_in_missing(inputs[F.LABEL_KEY]), tf.float32)
    # Fares of 0 (cancelled trips) are never big tippers.
    outputs[F.TRANSFORMED_LABEL] = tf.cast(
        tf.logical_and(fare > 0, tips > fare * F.BIG_TIP_FRACTION), tf.int64
    )
    return outputs
