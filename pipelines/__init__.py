"""Nightly TFX retraining pipeline: config, factory, module files, runners and the `mlops` CLI.

Nothing here imports TensorFlow or TFX at package import time: the CLI and the Airflow DAG
files must start fast. Heavy imports live inside the functions that need them.
"""
