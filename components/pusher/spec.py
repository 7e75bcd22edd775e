"""The AtomicPusher's input, output and execution-property keys, each named once.

Both the ComponentSpec (component.py) and the executor (executor.py) use these names, as TFX's
components share `tfx.types.standard_component_specs`. Its channels are stock TFX Pusher's, so
their keys are TFX's own constants: `model` (MODEL_KEY), `model_blessing` (MODEL_BLESSING_KEY)
and `pushed_model` (PUSHED_MODEL_KEY). The values are ML Metadata keys of existing runs and
caches: never change one.
"""

# Execution properties. Stock TFX's `push_destination` proto is replaced by a plain directory.
PUSH_BASE_DIRECTORY_KEY = "push_base_directory"
ALLOW_REPUSH_KEY = "allow_repush"  # 1 (set by rollback): push bytes that were pushed before
PUSH_KIND_KEY = "push_kind"  # "nightly" or "rollback"
REASON_KEY = "reason"  # why this push was asked for ("" = the Evaluator's blessing)
REQUESTED_BY_KEY = "requested_by"  # who asked ("" = the user running the executor)
KEEP_VERSIONS_KEY = "keep_versions"  # retention: keep the newest N versions (0: all)
PROJECT_HOME_KEY = "project_home"  # whose models.config labels, pins or loads versions to keep
TRIGGER_KEY = "trigger"  # rollbacks: what started it, "manual" or "alert" (recorded as `rollback_trigger`)

DEFAULT_PUSH_KIND = "nightly"
ROLLBACK_TRIGGERS = ("manual", "alert", "canary")  # the values of TRIGGER_KEY; the first is the default
# ("canary": `mlops models canary check` rolled a failing canary back, pipelines/canary.py)
