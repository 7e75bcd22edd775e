"""A user's model module whose export lost a signature: `mlops run --run-fn unservable_model.run_fn`
(with this folder on PYTHONPATH) trains the taxi model but saves it without `serving_features`.

The Evaluator only calls `serving_default`, so it blesses the candidate; clients that call
`serving_features` would get 400s from the pushed version. The InfraValidator must stop it.
"""

from pipelines.taxi import model as taxi_model
from pipelines.taxi.model_options import FEATURES_SIGNATURE

_signatures = taxi_model._serving_signatures


def _without_features_signature(model, tf_transform_output):
    signatures = dict(_signatures(model, tf_transform_output))
    signatures.pop(FEATURES_SIGNATURE)
    return signatures


def run_fn(fn_args) -> None:
    # The Trainer runs in a process of its own (a fork of the warm worker): the patch ends with it.
    taxi_model._serving_signatures = _without_features_signature
    taxi_model.run_fn(fn_args)
