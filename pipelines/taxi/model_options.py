"""Options of the taxi model that config validation and the pipeline need without importing TensorFlow."""

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")

# The model's hyperparameters. The pipeline passes them to the Trainer in its custom_config, so ML
# Metadata records them with every training and `mlops lineage` shows them; run_fn reads them back.
LEARNING_RATE = 0.005
HIDDEN_UNITS = (64, 32)  # the deep tower's layer widths


def hyperparameters() -> dict:
    return {"learning_rate": LEARNING_RATE, "hidden_units": list(HIDDEN_UNITS)}
