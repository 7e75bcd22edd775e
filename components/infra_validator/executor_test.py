"""The InfraValidator's executor with real SavedModels in a real `mlops serve` process.

Small tf.Modules with the taxi model's two kinds of signature (serialized tf.Examples in, named
tensors in) stand in for a trained model: the server loads them exactly as it loads the Trainer's,
and each test pays one server start (~5 s), no pipeline. The pipeline's own model goes through the
node in tests/e2e/test_infra_validation.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf
from tfx.types import standard_artifacts
from tfx.types.standard_component_specs import BLESSING_KEY, EXAMPLES_KEY, MODEL_KEY

from components.infra_validator import executor
from components.infra_validator import spec as S
from serving.processes import pid_alive

ROWS = 12
FEATURES = {"fare": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            "company": tf.io.FixedLenFeature([1], tf.string, default_value=[""])}


class _Model(tf.Module):
    """probability = sigmoid(w * fare): `serving_default` parses tf.Examples, `serving_features` takes
    the features as tensors. `broken_features`: the second signature fails on any positive fare
    (the server loads it: a non-default signature that fails its warm-up is not a load error)."""

    def __init__(self, broken_features: bool = False):
        super().__init__()
        self.weight = tf.Variable(0.1)
        self.broken_features = broken_features

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, FEATURES)
        return {"probabilities": tf.sigmoid(self.weight * parsed["fare"])}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="fare"),
                                  tf.TensorSpec([None, 1], tf.string, name="company")])
    def features(self, fare, company):
        if self.broken_features:
            tf.debugging.assert_less(fare, -1.0, message="fare must be negative")
        return {"probabilities": tf.sigmoid(self.weight * fare) + 0.0 * tf.cast(tf.strings.length(company), tf.float32)}


def _save(directory: Path, broken_features: bool = False) -> Path:
    module = _Model(broken_features)
    serving = directory / "Format-Serving"
    tf.saved_model.save(module, str(serving), signatures={"serving_default": module.serve.get_concrete_function(),
                                                          "serving_features": module.features.get_concrete_function()})
    return directory


def _tfrecord(path: Path, records) -> None:
    """A gzipped TFRecord file, as ExampleGen writes its splits."""
    from tensorflow.python.lib.io import tf_record

    path.parent.mkdir(parents=True, exist_ok=True)
    with tf_record.TFRecordWriter(str(path), tf_record.TFRecordOptions("GZIP")) as writer:
        for record in records:
            writer.write(record)


def _examples(root: Path):
    rows = []
    for i in range(ROWS):
        example = tf.train.Example()
        example.features.feature["fare"].float_list.value.append(3.5 + i)
        example.features.feature["company"].bytes_list.value.append(f"company {i % 3}".encode())
        example.features.feature["tips"].float_list.value.append(1.0)  # a label: no signature parses it
        rows.append(example.SerializeToString())
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root)
    artifact.split_names = '["train", "eval"]'
    _tfrecord(root / "Split-eval" / "data_tfrecord-00000-of-00001.gz", rows)
    _tfrecord(root / "Split-train" / "data_tfrecord-00000-of-00001.gz", rows[:2])
    return artifact


def _validate(tmp_path: Path, model_root: Path, evaluator_blessed=None, **properties):
    model = standard_artifacts.Model()
    model.id, model.uri = 5, str(model_root)
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "infra_blessing")
    inputs = {MODEL_KEY: [model], EXAMPLES_KEY: [_examples(tmp_path / "examples")]}
    if evaluator_blessed is not None:
        model_blessing = standard_artifacts.ModelBlessing()
        model_blessing.set_int_custom_property("blessed", int(evaluator_blessed))
        inputs[S.MODEL_BLESSING_KEY] = [model_blessing]
    executor.Executor().Do(inputs, {BLESSING_KEY: [blessing]},
                           {S.MODEL_NAME_KEY: "taxi", S.REQUIRED_SIGNATURES_KEY: "serving_default,serving_features",
                            S.NUM_EXAMPLES_KEY: 8, S.TIMEOUT_SECONDS_KEY: 60, **properties})
    return blessing


def _verdict(blessing) -> tuple:
    files = sorted(p.name for p in Path(blessing.uri).iterdir() if p.name.startswith("INFRA_"))
    return blessing.get_int_custom_property(S.BLESSED), files, blessing.get_string_custom_property(S.REASON)


def _server_gone(blessing) -> None:
    pid = blessing.get_int_custom_property(S.SERVER_PID)
    assert pid > 0 and not pid_alive(pid), f"the throwaway server (pid {pid}) outlived the node"


def test_a_good_candidate_is_served_and_answers_on_both_signatures_over_rest_and_grpc(tmp_path):
    blessing = _validate(tmp_path, _save(tmp_path / "model"), evaluator_blessed=True)
    blessed, files, reason = _verdict(blessing)
    log = (Path(blessing.uri) / executor.SERVER_LOG).read_text()
    assert (blessed, files) == (1, [S.BLESSED_FILE]), f"{reason}\n{log}"
    assert reason == ("served by the model server and answered 8 rows of the eval span through serving_default, "
                      "serving_features over REST and gRPC")
    assert blessing.get_string_custom_property(S.SIGNATURES) == "serving_default,serving_features"
    assert blessing.get_int_custom_property(S.REQUESTS_ANSWERED) == 4
    assert blessing.get_int_custom_property(S.MODEL_ID) == 5
    start, requests, total = (blessing.get_float_custom_property(key) for key in
                              (S.SERVER_START_SECONDS, S.REQUESTS_SECONDS, S.VALIDATION_SECONDS))
    assert 0 < start < total and 0 < requests < total, (start, requests, total)
    # The server's own log: it loaded version 1 and served the requests (REST and gRPC).
    assert "version 1: loaded and warmed up" in log and "now serving version 1" in log, log
    _server_gone(blessing)


def test_an_unloadable_candidate_is_not_blessed_with_the_servers_load_error(tmp_path):
    model_root = _save(tmp_path / "model")
    shutil.rmtree(model_root / "Format-Serving" / "variables")
    blessing = _validate(tmp_path, model_root)
    blessed, files, reason = _verdict(blessing)
    assert (blessed, files) == (0, [S.NOT_BLESSED_FILE]), reason
    assert reason.startswith("the server did not load the model: ") and "variables" in reason, reason
    assert not blessing.has_custom_property(S.REQUESTS_SECONDS)  # no request was sent
    _server_gone(blessing)


def test_a_signature_that_answers_errors_is_not_blessed_naming_the_signature_and_the_api(tmp_path):
    blessing = _validate(tmp_path, _save(tmp_path / "model", broken_features=True))
    blessed, files, reason = _verdict(blessing)
    assert (blessed, files) == (0, [S.NOT_BLESSED_FILE]), reason
    assert reason.startswith("signature serving_features answered 400 over REST :predict: "), reason
    assert "fare must be negative" in reason, reason
    _server_gone(blessing)


def test_a_missing_required_signature_is_not_blessed(tmp_path):
    blessing = _validate(tmp_path, _save(tmp_path / "model"),
                         **{S.REQUIRED_SIGNATURES_KEY: "serving_default,serving_features,predict_tips"})
    blessed, _, reason = _verdict(blessing)
    assert blessed == 0 and reason == ("the model has no signature predict_tips (clients call it); it has: "
                                       "serving_default, serving_features"), reason
    _server_gone(blessing)


def test_a_candidate_the_evaluator_did_not_bless_starts_no_server(tmp_path):
    blessing = _validate(tmp_path, tmp_path / "no-model-here", evaluator_blessed=False)
    assert _verdict(blessing) == (0, [S.NOT_BLESSED_FILE], "not blessed by the Evaluator")
    assert not blessing.has_custom_property(S.SERVER_PID)
    assert not (Path(blessing.uri) / executor.SERVER_LOG).exists()


def test_the_verdict_files_and_property_are_tfx_infra_validators():
    from tfx.components.infra_validator import executor as tfx_executor
    from tfx.components.util import model_utils

    assert (S.BLESSED_FILE, S.NOT_BLESSED_FILE, S.BLESSED) == (
        tfx_executor._BLESSED_FILENAME, tfx_executor._NOT_BLESSED_FILENAME, tfx_executor._BLESSED_KEY)
    blessing = standard_artifacts.InfraBlessing()
    blessing.set_int_custom_property(S.BLESSED, 1)
    assert model_utils.is_infra_validated(blessing)
