"""`preprocessing_fn` on a small in-memory batch through real tf.Transform (Beam in-memory)."""

import datetime as dt
import glob
import json
import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tensorflow_transform.beam as tft_beam  # noqa: E402
from tensorflow_transform.tf_metadata import schema_utils  # noqa: E402

from pipelines.config import PipelineConfig, ProjectPaths  # noqa: E402
from pipelines.taxi import features as F  # noqa: E402
from pipelines.taxi.preprocessing import preprocessing_fn  # noqa: E402

ROWS = [
    # fare, tips, payment, company, hour, census tract (optional: None = missing)
    (10.0, 3.0, "Credit Card", "Flash Cab", 19, 17031081500),
    (20.0, 0.0, "Cash", "Flash Cab", 3, None),
    (0.0, 0.0, "Cash", None, 23, 17031839100),
    (8.0, 1.0, "Credit Card", "Taxi Affiliation Services", 30, None),
]


def _serialized_examples():
    out = []
    for fare, tips, payment, company, hour, tract in ROWS:
        floats = {"fare": fare, "tips": tips, "trip_miles": 1.5, "pickup_latitude": 41.9,
                  "pickup_longitude": -87.6, "dropoff_latitude": 41.8, "dropoff_longitude": -87.7}
        ints = {"trip_seconds": 300, "trip_start_hour": hour, "trip_start_day": 3, "trip_start_month": 5,
                "pickup_community_area": 8, "pickup_census_tract": tract}
        strings = {"payment_type": payment, "company": company}
        feature = {k: tf.train.Feature(float_list=tf.train.FloatList(value=[v])) for k, v in floats.items()}
        feature.update({k: tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) for k, v in ints.items() if v})
        feature.update({k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
                        for k, v in strings.items() if v})
        out.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return out


def _feature_spec():
    spec = {}
    for key in ("fare", "tips", "trip_miles") + F.BUCKET_FEATURES:
        spec[key] = tf.io.VarLenFeature(tf.float32)
    for key in ("trip_seconds",) + F.CATEGORICAL_INT_FEATURES:
        spec[key] = tf.io.VarLenFeature(tf.int64)
    for key in F.VOCAB_FEATURES:
        spec[key] = tf.io.VarLenFeature(tf.string)
    return spec


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx_bsl.public import tfxio

    schema = schema_utils.schema_from_feature_spec(_feature_spec())
    source = tfxio.TFExampleBeamRecord(physical_format="inmem", telemetry_descriptors=["test"], schema=schema)
    root = tmp_path_factory.mktemp("transform")
    out_dir = str(root / "out")
    # The Beam arguments the pipeline's nodes get (a bare beam.Pipeline() tries Prism first).
    options = PipelineOptions(PipelineConfig.for_project(ProjectPaths(root), dt.date(2026, 11, 20)).beam_pipeline_args)
    with beam.Pipeline(options=options) as pipeline, tft_beam.Context(temp_dir=str(root / "tft-temp")):
        raw = pipeline | beam.Create(_serialized_examples()) | source.BeamSource()
        (batches, _), _ = (raw, source.TensorAdapterConfig()) | tft_beam.AnalyzeAndTransformDataset(
            preprocessing_fn, output_record_batches=True
        )
        # Beam pickles the steps, so results leave the pipeline through files.
        _ = (
            batches
            | beam.FlatMap(lambda batch_and_extra: batch_and_extra[0].to_pylist())
            | beam.Map(lambda row: json.dumps(row, default=str))
            | beam.io.WriteToText(os.path.join(out_dir, "rows"))
        )
    rows = [json.loads(line) for path in glob.glob(os.path.join(out_dir, "rows*")) for line in open(path)]
    # Values arrive as one-element lists; flatten for readability.
    return [{k: (v[0] if isinstance(v, list) else v) for k, v in row.items()} for row in rows]


def test_label_is_big_tipper_and_zero_fares_never_are(transformed):
    by_fare = sorted(transformed, key=lambda r: r["fare_xf"])
    # fares 0, 8, 10, 20 with tips 0, 1, 3, 0: only the 10-fare trip tipped more than 20%.
    assert [r[F.TRANSFORMED_LABEL] for r in by_fare] == [0, 0, 1, 0]


def test_every_model_input_is_present_and_dense(transformed):
    expected = {F.transformed_name(k) for k in F.RAW_FEATURES} | {F.TRANSFORMED_LABEL}
    for row in transformed:
        assert set(row) == expected
        assert all(isinstance(v, (int, float)) for v in row.values()), row


def test_scaling_bucketizing_and_ids(transformed):
    rows = sorted(transformed, key=lambda r: r["fare_xf"])  # fares 0, 8, 10, 20
    assert abs(sum(r["fare_xf"] for r in rows)) < 1e-4  # z-scores of the batch have mean 0
    assert all(0 <= r["pickup_latitude_xf"] <= F.BUCKET_COUNT for r in rows)
    # hours 23, 30 (out of range -> last id), 19, 3
    assert [r["trip_start_hour_xf"] for r in rows] == [23, F.IDENTITY_FEATURES["trip_start_hour"] - 1, 19, 3]
    payments = [r["payment_type_xf"] for r in rows]  # Cash, Credit Card, Credit Card, Cash
    assert payments[0] == payments[3] != payments[1] == payments[2]
    assert all(0 <= r["pickup_census_tract_xf"] < F.HASH_BUCKETS for r in transformed)
