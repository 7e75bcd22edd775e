"""Options of the taxi model that config validation and the pipeline need without importing TensorFlow."""

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")

# The signatures the exported model serves (run_fn's `_serving_signatures`): `serving_default` takes
# serialized tf.Examples, `serving_features` one named tensor per raw feature (docs/serving.md).
# Clients call both, so the InfraValidator refuses a candidate that lacks one.
FEATURES_SIGNATURE = "serving_features"
SERVING_SIGNATURES = ("serving_default", FEATURES_SIGNATURE)

# The model's hyperparameters. The pipeline passes them to the Trainer in its custom_config, so ML
# Metadata records them with every training and `mlops lineage` shows them; run_fn reads them back.
LEARNING_RATE = 0.005
HIDDEN_UNITS = (64, 32)  # the deep tower's layer widths


def hyperparameters() -> dict:
    return {"learning_rate": LEARNING_RATE, "hidden_units": list(HIDDEN_UNITS)}


# Weekly tuning (pipelines/tuning.py, TFX's Tuner with KerasTuner): the search space around the defaults
# above. `hidden_units` choices are strings ("64,32"): KerasTuner's Choice takes scalars only.
SEARCH_SPACE = {
    "learning_rate": (0.001, 0.005, 0.02),
    "hidden_units": ("64,32", "32,16", "128,64"),
}
TUNING_OBJECTIVE = "val_auc"  # Keras's AUC on the eval split, higher is better


def tuned_hyperparameters(config) -> dict:
    """The values a TFX HyperParameters artifact holds (KerasTuner's `HyperParameters.get_config()`,
    which the Trainer hands to run_fn as `fn_args.hyperparameters`), as run_fn's keyword values:
    {"learning_rate": float, "hidden_units": [int, ...]}; {} for None or a config without them."""
    values = (config or {}).get("values") or {}
    tuned = {}
    if "learning_rate" in values:
        tuned["learning_rate"] = float(values["learning_rate"])
    if "hidden_units" in values:
        units = values["hidden_units"]
        units = units.split(",") if isinstance(units, str) else units
        tuned["hidden_units"] = [int(u) for u in units]
    return tuned
