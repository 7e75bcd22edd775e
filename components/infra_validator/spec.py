"""The InfraValidator's input, output, execution-property and custom-property keys, each named once.

Both the ComponentSpec (component.py) and the executor (executor.py) use these names. Its `model`,
`examples` and `blessing` channels are stock TFX InfraValidator's (`tfx.types.standard_component_specs`:
MODEL_KEY, EXAMPLES_KEY, BLESSING_KEY), and the verdict is written as TFX's InfraValidator writes it
(an INFRA_BLESSED or INFRA_NOT_BLESSED file, custom property `blessed` 1/0), so the Pusher reads it
with `tfx.components.util.model_utils.is_infra_validated`. The values are ML Metadata keys of
existing runs and caches: never change one.
"""

# Input: the GatedEvaluator's blessing. When it says "not blessed" the server is not started.
# (Not "blessing": that is this component's output, as in stock TFX.)
MODEL_BLESSING_KEY = "model_blessing"

# Execution properties.
MODEL_NAME_KEY = "model_name"  # the name the throwaway server serves the candidate under
REQUIRED_SIGNATURES_KEY = "required_signatures"  # comma-separated: signatures clients call; each must answer
NUM_EXAMPLES_KEY = "num_examples"  # rows of the eval split sent in each request
TIMEOUT_SECONDS_KEY = "timeout_seconds"  # longest wait for the server to load the candidate

DEFAULT_NUM_EXAMPLES = 8
DEFAULT_TIMEOUT_SECONDS = 120

# What TFX's own InfraValidator writes (tfx/components/infra_validator/executor.py).
BLESSED_FILE = "INFRA_BLESSED"
NOT_BLESSED_FILE = "INFRA_NOT_BLESSED"
BLESSED = "blessed"  # custom property, 1 or 0

# Our custom properties on the InfraBlessing.
REASON = "reason"  # what failed, or what answered
MODEL_ID = "current_model_id"  # the candidate (as TFX's Evaluator names it on a ModelBlessing)
SERVER_START_SECONDS = "server_start_seconds"  # process start -> candidate AVAILABLE
REQUESTS_SECONDS = "requests_seconds"  # every request sent and checked
VALIDATION_SECONDS = "validation_seconds"  # the whole check, the server's stop included
REQUESTS_ANSWERED = "requests_answered"  # requests that answered correctly
SERVER_PID = "server_pid"  # the throwaway server's process id (gone when the node ends)
SIGNATURES = "signatures"  # comma-separated: the signatures the server exposed
NOT_EVALUATOR_BLESSED = "not blessed by the Evaluator"
