"""Spec of our Pusher: a Model (+ its blessing) in, a PushedModel describing what happened out."""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts
from tfx.types.standard_component_specs import INFRA_BLESSING_KEY, MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY

from components.pusher import executor
from components.pusher.spec import (ALLOW_REPUSH_KEY, DEFAULT_PUSH_KIND, KEEP_VERSIONS_KEY, PROJECT_HOME_KEY,
                                    PUSH_BASE_DIRECTORY_KEY, PUSH_KIND_KEY, REASON_KEY, REQUESTED_BY_KEY,
                                    TRIGGER_KEY)


class AtomicPusherSpec(types.ComponentSpec):
    """AtomicPusher component spec: stock PusherSpec's channels (keys: components/pusher/spec.py)."""

    PARAMETERS = {
        PUSH_BASE_DIRECTORY_KEY: component_spec.ExecutionParameter(type=str),
        # Set by rollback: push a model even though its bytes were pushed before.
        ALLOW_REPUSH_KEY: component_spec.ExecutionParameter(type=int, optional=True),
        PUSH_KIND_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        REASON_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        REQUESTED_BY_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        # Rollbacks: what started it, "manual" or "alert" ("" on nightly pushes).
        TRIGGER_KEY: component_spec.ExecutionParameter(type=str, optional=True),
        # Retention after a push: keep the newest N versions (0: keep all) and whatever the
        # models.config of this project home labels, pins or keeps loaded.
        KEEP_VERSIONS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
        PROJECT_HOME_KEY: component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        MODEL_BLESSING_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ModelBlessing, optional=True
        ),
        INFRA_BLESSING_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.InfraBlessing, optional=True
        ),
    }
    OUTPUTS = {
        PUSHED_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }


class AtomicPusher(base_component.BaseComponent):
    """Pushes a blessed model to `<push_base_directory>/<next version>/`, never the same one twice.

    Copies the model's SavedModel into a temporary directory next to the versions and renames it
    to the next integer version, so a model server never loads a half-written version (TF
    Serving layout). A model whose bytes are already pushed is not pushed again; a model the
    Evaluator did not bless is not pushed, nor one the InfraValidator could not serve. After a
    push it deletes the older versions beyond the newest `keep_versions`, except those the
    project's models.config labels, pins or keeps loaded and the version served until the new one
    loads.

    Why it exists: stock TFX's Pusher writes a new timestamped version on every cached rerun
    (the same model again), copies in place, has no rollback and never cleans up. Here a
    rollback is a push of an earlier model with `allow_repush`, so the older bytes become the
    newest version; every push records who asked, why and what it replaced.

    ## Example
    ```
    # Nightly: push what the GatedEvaluator blessed.
    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=infra_validator.outputs["blessing"],
        push_base_directory=config.serving_model_dir,
        keep_versions=config.keep_versions,
        project_home=config.project_home,
    )
    # Rollback: push model `model_id` (resolved with its blessing) again.
    pusher = AtomicPusher(
        model=target.outputs["model"],
        model_blessing=target.outputs["blessing"],
        push_base_directory=config.serving_model_dir,
        allow_repush=True,
        push_kind="rollback",
        reason=reason,
        requested_by=requested_by,
    )
    ```

    Component `outputs` contains:
     - `pushed_model`: Channel of type `standard_artifacts.PushedModel`: whether it pushed
       (`pushed`, and `pushed_version`, `pushed_destination` as stock TFX's Pusher names them),
       why (`reason`), the model's fingerprint, who asked, the replaced version and the versions
       retention deleted; a PUSHED or NOT_PUSHED file in its folder.
    """

    SPEC_CLASS = AtomicPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        push_base_directory: str,
        model_blessing: Optional[types.BaseChannel] = None,
        allow_repush: bool = False,
        push_kind: str = DEFAULT_PUSH_KIND,
        reason: str = "",
        requested_by: str = "",
        keep_versions: int = executor.DEFAULT_KEEP_VERSIONS,
        project_home: str = "",
        trigger: str = "",
        infra_blessing: Optional[types.BaseChannel] = None,
    ):
        """Construct an AtomicPusher component.

        Args:
          model: A BaseChannel of type `standard_artifacts.Model`: the model to push (Trainer's
            `model`, or a resolved earlier model for a rollback).
          push_base_directory: The model's base directory in TF Serving layout; versions are
            its integer-named subdirectories.
          model_blessing: An optional BaseChannel of type `standard_artifacts.ModelBlessing`
            (the GatedEvaluator's `blessing`). When given and not blessed, nothing is pushed and
            the blessing's `reason` is recorded.
          allow_repush: Push even when these bytes were pushed before, unless they are already
            the newest version (a rollback).
          push_kind: Recorded on the PushedModel: "nightly" or "rollback".
          reason: Recorded on the PushedModel; "" records "blessed by the Evaluator".
          requested_by: Recorded on the PushedModel; "" records the user the executor runs as.
          keep_versions: After a push, keep the newest N versions (0 keeps all); retention never
            fails a push.
          project_home: The project home whose serving/models.config says which versions to
            keep as well (labelled, pinned or loaded); "" reads no models.config.
          trigger: Rollbacks only, recorded as `rollback_trigger`: "manual" (a person; also what ""
            records) or "alert" (the alert webhook through the model_rollback DAG).
          infra_blessing: An optional BaseChannel of type `standard_artifacts.InfraBlessing` (the
            InfraValidator's `blessing`). When given and not blessed (the model server did not
            load the model or a signature did not answer), nothing is pushed and its `reason` is
            recorded.
        """
        super().__init__(
            spec=AtomicPusherSpec(
                model=model,
                model_blessing=model_blessing,
                push_base_directory=push_base_directory,
                allow_repush=int(allow_repush),
                push_kind=push_kind,
                reason=reason,
                requested_by=requested_by,
                keep_versions=int(keep_versions),
                project_home=project_home,
                trigger=trigger,
                infra_blessing=infra_blessing,
                pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            )
        )
