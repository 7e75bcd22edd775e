"""Options of the taxi model that config validation needs without importing TensorFlow."""

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")
