"""Keras helpers for the Trainer's module file and the Evaluator (both load tf_keras models)."""

from __future__ import annotations


def skip_autograph_of_tf_keras() -> None:
    """Keeps AutoGraph out of Keras' own code, as TensorFlow always meant to (idempotent).

    TF 2.16's AutoGraph exempts the `keras` package but not `tf_keras`, where legacy Keras now
    lives (newer TensorFlow releases add the same `DoNotConvert("tf_keras")` rule). Without it,
    the first `fit` step re-transpiles hundreds of Keras functions: ~35 s of a 300-step Trainer.
    Our own functions (the serving signatures) are still converted.
    """
    from tensorflow.python.autograph.core import config as autograph_config

    if not any(rule.matches("tf_keras") for rule in autograph_config.CONVERSION_RULES
               if isinstance(rule, autograph_config.DoNotConvert)):
        autograph_config.CONVERSION_RULES += (autograph_config.DoNotConvert("tf_keras"),)
