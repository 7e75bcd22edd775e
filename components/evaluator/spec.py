"""The GatedEvaluator's own execution-property keys, each named once.

Every input, output and the other execution properties are stock TFX's Evaluator's: use TFX's
constants for them (`tfx.types.standard_component_specs`: EXAMPLES_KEY, MODEL_KEY,
BASELINE_MODEL_KEY, EVAL_CONFIG_KEY, EXAMPLE_SPLITS_KEY, EVALUATION_KEY, BLESSING_KEY, ...).
The values are ML Metadata keys of existing runs and caches: never change one.
"""

# Largest loss of the headline metric allowed on a monitored slice against the served model.
SLICE_MARGIN_KEY = "slice_margin"
# Slices with fewer evaluation examples than this are too noisy to gate on.
MIN_SLICE_EXAMPLES_KEY = "min_slice_examples"

# The slice guard's own keys: the executor hands TFX's Evaluator everything else.
SLICE_GUARD_KEYS = (SLICE_MARGIN_KEY, MIN_SLICE_EXAMPLES_KEY)
