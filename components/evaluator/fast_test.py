"""components/evaluator/fast.py against TFMA itself: stock TFX's Evaluator executor (TFMA's Beam
pipeline) and the GatedEvaluator's (the fast evaluation) on the same two SavedModels and examples
must write the same metrics on every slice, the same validation result and the same blessing."""

import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as tfx_executor
from tfx.types import standard_artifacts
from tfx.utils import proto_utils
from tfx.types.standard_component_specs import (BASELINE_MODEL_KEY, BLESSING_KEY, EVAL_CONFIG_KEY, EVALUATION_KEY,
                                                EXAMPLE_SPLITS_KEY, EXAMPLES_KEY, MODEL_KEY)

from components.evaluator import executor, fast
from components.evaluator.metrics import SLICE_METRICS

ROWS = 3000
PAYMENTS = ["Cash", "Credit Card", "Mobile é", ""]


def _eval_config(min_gain: float = 0.01):
    gate = tfma.PerSliceMetricThreshold(
        slicing_specs=[tfma.SlicingSpec()],
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.6}),
            change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                         relative={"value": min_gain})))
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key="label_xf",
                                    preprocessing_function_names=["transform_features"], model_type=tfma.TF_GENERIC)],
        options=tfma.Options(include_default_metrics={"value": False}),
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["hour"]),
                       tfma.SlicingSpec(feature_keys=["payment"])],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="AUC", config='{"name": "auc"}', per_slice_thresholds=[gate]),
            tfma.MetricConfig(class_name="BinaryAccuracy"),
            tfma.MetricConfig(class_name="BinaryCrossentropy", config='{"name": "loss"}'),
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="MeanLabel", config='{"name": "mean_label"}'),
        ])])


class _Model(tf.Module):
    """probability = sigmoid(w * x + b), label_xf = label: the two signatures the evaluation calls."""

    def __init__(self, weight: float, bias: float):
        super().__init__()
        self.weight, self.bias = tf.Variable(weight), tf.Variable(bias)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)})["x"]
        return {"probabilities": tf.sigmoid(self.weight * x + self.bias)[:, None]}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform(self, examples):
        label = tf.io.parse_example(examples, {"label": tf.io.FixedLenFeature([], tf.int64, default_value=0)})
        return {"label_xf": label["label"]}


def _model(tmp_path, name: str, weight: float, bias: float, artifact_id: int):
    module = _Model(weight, bias)
    uri = tmp_path / name
    tf.saved_model.save(module, str(uri / "Format-Serving"),
                        signatures={"serving_default": module.serve, "transform_features": module.transform})
    artifact = standard_artifacts.Model()
    artifact.uri, artifact.id = str(uri), artifact_id
    return artifact


def _examples(tmp_path):
    """ROWS examples: x drives the label with noise; an hour (missing on some rows) and a payment
    type (empty, non-ASCII or missing on some) to slice by; a few x so large the probability is
    exactly 0 or 1 in float32 (the loss must clip them as Keras does)."""
    rng = random.Random(7)
    split = tmp_path / "examples" / "Split-eval"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"), options="GZIP") as writer:
        for row in range(ROWS):
            x = rng.gauss(0, 1) if row % 97 else rng.choice([-60.0, 60.0])
            label = int(x + rng.gauss(0, 1.2) > 0.3)
            feature = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
                       "zone": tf.train.Feature(float_list=tf.train.FloatList(value=[float(row % 2)])),
                       "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
            if row % 11:
                feature["hour"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[rng.randrange(24)]))
            if row % 13:
                payment = rng.choice(PAYMENTS).encode()
                feature["payment"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[payment]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    artifact = standard_artifacts.Examples()
    artifact.uri, artifact.split_names = str(tmp_path / "examples"), json.dumps(["eval"])
    return artifact


def _run(executor_class, out, examples, model, baseline, eval_config):
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(out / "evaluation"), str(out / "blessing")
    os.makedirs(evaluation.uri)
    os.makedirs(blessing.uri)
    inputs = {EXAMPLES_KEY: [examples], MODEL_KEY: [model]}
    if baseline is not None:
        inputs[BASELINE_MODEL_KEY] = [baseline]
    properties = {EVAL_CONFIG_KEY: proto_utils.proto_to_json(eval_config),
                  EXAMPLE_SPLITS_KEY: "null"}
    if executor_class is executor.Executor:
        properties.update(slice_margin=1.0, min_slice_examples=1)
    executor_class(executor_class.Context(tmp_dir=str(out / "tmp"), unique_id="1")).Do(
        inputs, {EVALUATION_KEY: [evaluation], BLESSING_KEY: [blessing]}, properties)
    return evaluation, blessing


def _metrics(uri):
    out = {}
    for record in tfma.load_metrics(uri):
        slice_key = tfma.slicer.deserialize_slice_key(record.slice_key)
        for kv in record.metric_keys_and_values:
            out[(slice_key, kv.key.name, kv.key.model_name, kv.key.is_diff)] = kv.value.double_value.value
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast-eval")
    return tmp, _examples(tmp), _model(tmp, "candidate", 2.0, -0.5, 11), _model(tmp, "baseline", 1.5, -0.2, 10)


@pytest.mark.parametrize("with_baseline,min_gain", [(True, 0.01), (True, -0.5), (False, 0.01)],
                         ids=["fails-the-gain", "passes", "first-model"])
def test_the_fast_evaluation_writes_what_tfma_writes(models, with_baseline, min_gain):
    tmp, examples, candidate, baseline = models
    config = _eval_config(min_gain)
    case = tmp / f"{with_baseline}-{min_gain}"
    baseline = baseline if with_baseline else None
    stock_evaluation, stock_blessing = _run(tfx_executor.Executor, case / "tfma", examples, candidate, baseline, config)
    ours_evaluation, ours_blessing = _run(executor.Executor, case / "fast", examples, candidate, baseline, config)

    stock, ours = _metrics(stock_evaluation.uri), _metrics(ours_evaluation.uri)
    assert sorted(ours, key=str) == sorted(stock, key=str)  # same slices, metrics, models, diffs
    slices = {key[0] for key in stock}
    assert (("payment", "Mobile é"),) in slices and (("payment", ""),) in slices and len(slices) == 1 + 24 + 4
    for key, value in stock.items():
        if key[1] == "loss":  # Keras computes it in float32
            assert ours[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        else:  # the same arithmetic as TFMA's (AUC from the same histogram and thresholds)
            assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert ours[((), "example_count", "candidate" if with_baseline else "", False)] == ROWS

    stock_result = tfma.load_validation_result(stock_evaluation.uri)
    assert tfma.load_validation_result(ours_evaluation.uri) == stock_result
    assert stock_result.validation_ok == (min_gain < 0 or not with_baseline)
    blessed = constants.BLESSED_FILE_NAME if stock_result.validation_ok else constants.NOT_BLESSED_FILE_NAME
    assert os.listdir(ours_blessing.uri) == os.listdir(stock_blessing.uri) == [blessed]
    for key, value in stock_blessing.mlmd_artifact.custom_properties.items():
        assert ours_blessing.mlmd_artifact.custom_properties[key] == value, key
    assert SLICE_METRICS in ours_evaluation.mlmd_artifact.custom_properties
    # TFMA's own readers take the directory as they take TFMA's.
    result = tfma.load_eval_result(ours_evaluation.uri)
    assert len(result.slicing_metrics) == len(slices)


def test_configs_it_does_not_cover_are_named_and_left_to_tfma():
    assert fast.unsupported_reason(_eval_config()) is None
    config = _eval_config()
    config.metrics_specs[0].metrics.add(class_name="Precision")
    assert fast.unsupported_reason(config) == "metric Precision"
    config = _eval_config()
    config.metrics_specs[0].metrics[0].config = '{"name": "auc", "num_thresholds": 100}'
    assert "num_thresholds" in fast.unsupported_reason(config)
    config = _eval_config()
    config.options.compute_confidence_intervals.value = True
    assert "confidence intervals" in fast.unsupported_reason(config)
    config = _eval_config()
    config.slicing_specs.add(feature_values={"payment": "Cash"})
    assert fast.unsupported_reason(config) == "slicing by feature values or SQL"
    config = _eval_config()
    config.slicing_specs.add(feature_keys=["hour", "payment"])
    assert fast.unsupported_reason(config) == "slicing by a combination of features"


def test_slicing_by_a_float_feature_is_left_to_tfma(models, caplog):
    """Only the data says a slicing feature is a float: found before anything is written, then TFMA
    runs as in stock TFX."""
    import logging

    tmp, examples, candidate, _ = models
    config = _eval_config()
    config.slicing_specs.add(feature_keys=["zone"])
    caplog.set_level(logging.INFO, logger=executor.__name__)
    evaluation, blessing = _run(executor.Executor, tmp / "float-slices", examples, candidate, None, config)
    assert "the fast evaluation does not cover slicing by zone, a float feature" in caplog.text
    slices = {key[0] for key in _metrics(evaluation.uri)}
    assert (("zone", 0.0),) in slices and (("zone", 1.0),) in slices  # TFMA's run
    assert os.listdir(blessing.uri) == [constants.BLESSED_FILE_NAME]


def test_auc_is_tfmas_on_ties_one_class_and_saturated_predictions():
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=float)
    predictions = np.array([0.0, 1.0, 0.5, 0.5, 0.99995, 0.00001, 0.3, 0.7])
    # Perfect ranking apart from one tie (0.5/0.5): TFMA's trapezoid gives 1 - 0.5 / 16.
    assert fast.auc(labels, predictions) == pytest.approx(1 - 0.5 / 16)
    assert fast.auc(np.ones(4), np.array([0.1, 0.2, 0.3, 0.4])) == 0.0  # one class: TFMA reports 0


def test_without_thresholds_it_evaluates_and_blesses_nothing_as_tfx_does(models):
    tmp, examples, candidate, baseline = models
    config = _eval_config()
    del config.metrics_specs[0].metrics[0].per_slice_thresholds[:]
    evaluation, blessing = _run(executor.Executor, tmp / "no-thresholds", examples, candidate, baseline, config)
    assert _metrics(evaluation.uri)[((), "auc", "candidate", True)] != 0  # evaluated, with the diff
    assert os.listdir(blessing.uri) == []
    assert constants.ARTIFACT_PROPERTY_BLESSED_KEY not in blessing.mlmd_artifact.custom_properties
