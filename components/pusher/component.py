"""Spec of our Pusher: a Model (+ its blessing) in, a PushedModel describing what happened out."""

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import component_spec, standard_artifacts

from components.pusher import executor


class AtomicPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        "push_base_directory": component_spec.ExecutionParameter(type=str),
        # Set by rollback: push a model even though its bytes were pushed before.
        "allow_repush": component_spec.ExecutionParameter(type=int, optional=True),
        "push_kind": component_spec.ExecutionParameter(type=str, optional=True),
        "reason": component_spec.ExecutionParameter(type=str, optional=True),
        "requested_by": component_spec.ExecutionParameter(type=str, optional=True),
        # Retention after a push: keep the newest N versions (0: keep all) and whatever the
        # models.config of this project home labels, pins or keeps loaded.
        "keep_versions": component_spec.ExecutionParameter(type=int, optional=True),
        "project_home": component_spec.ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        executor.MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model),
        executor.BLESSING_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.ModelBlessing, optional=True
        ),
    }
    OUTPUTS = {
        executor.PUSHED_MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.PushedModel),
    }


class AtomicPusher(base_component.BaseComponent):
    """Pushes to `<push_base_directory>/<next integer version>/` unless already pushed."""

    SPEC_CLASS = AtomicPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        push_base_directory: str,
        model_blessing: Optional[types.BaseChannel] = None,
        allow_repush: bool = False,
        push_kind: str = "nightly",
        reason: str = "",
        requested_by: str = "",
        keep_versions: int = executor.DEFAULT_KEEP_VERSIONS,
        project_home: str = "",
    ):
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
                pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            )
        )
