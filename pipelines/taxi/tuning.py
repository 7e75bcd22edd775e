"""TFX Tuner entry point (`pipelines.taxi.tuning.tuner_fn`): a KerasTuner random search over the taxi
model's learning rate and deep-tower widths (model_options.SEARCH_SPACE).

Each trial builds the same model run_fn trains (model.build_model) and reads the same raw Examples
through the same transform graph (model.make_dataset), for `train_steps` steps, and is scored by
AUC on the eval files. TFX's Tuner executor runs the search and writes the best trial's values as
a HyperParameters artifact; the nightly Trainer takes the newest one (pipelines/pipeline.py,
Resolvers.tuned_hyperparameters) and run_fn trains with it.
"""

from __future__ import annotations

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from tfx.components.tuner.component import TunerFnResult

from pipelines.taxi.model import build_model, make_dataset
from pipelines.taxi.model_options import SEARCH_SPACE, TUNING_OBJECTIVE, tuned_hyperparameters

DEFAULT_TRIALS = 6
SEED = 42


def search_space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    for name, choices in SEARCH_SPACE.items():
        hp.Choice(name, list(choices), ordered=False)
    return hp


class TfKerasRandomSearch(keras_tuner.RandomSearch):
    """RandomSearch whose trials build and fit the model themselves. KerasTuner 1.4 checks that a
    built model is a Keras 3 `keras.Model` when Keras 3 is installed (TFX 1.16 installs it), while
    the pipeline trains tf_keras models (TF_USE_LEGACY_KERAS, design.md section 2): a trial returns
    its objective instead of a model for KerasTuner to fit."""

    def run_trial(self, trial, *args, **kwargs):
        model = self.hypermodel.build(trial.hyperparameters)
        history = model.fit(*args, **kwargs)
        return {TUNING_OBJECTIVE: float(max(history.history[TUNING_OBJECTIVE]))}


def tuner_fn(fn_args) -> TunerFnResult:
    """custom_config: `max_trials` (default DEFAULT_TRIALS), `batch_size` (default 64)."""
    custom = fn_args.custom_config or {}
    batch_size = int(custom.get("batch_size", 64))
    transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)

    def build(hp: keras_tuner.HyperParameters) -> tf.keras.Model:
        values = tuned_hyperparameters({"values": hp.values})
        return build_model(transform_output, values["learning_rate"], values["hidden_units"])

    tuner = TfKerasRandomSearch(
        build,
        objective=keras_tuner.Objective(TUNING_OBJECTIVE, direction="max"),
        max_trials=int(custom.get("max_trials", DEFAULT_TRIALS)),
        hyperparameters=search_space(),
        seed=SEED,
        directory=fn_args.working_dir,
        project_name="taxi",
        overwrite=True,
    )
    return TunerFnResult(
        tuner=tuner,
        fit_kwargs={
            "x": make_dataset(fn_args.train_files, transform_output, batch_size),
            "validation_data": make_dataset(fn_args.eval_files, transform_output, batch_size),
            "steps_per_epoch": fn_args.train_steps,
            "validation_steps": fn_args.eval_steps,
            "epochs": 1,
            "verbose": 0,
        },
    )
