"""Audited rollback: an earlier blessed model pushed again, by the Pusher, recorded in ML Metadata.

A rollback is a two-node TFX run in the `taxi` pipeline: a resolver that picks the chosen model
(and its blessing) from ML Metadata, then our AtomicPusher with `allow_repush`, `push_kind=rollback`,
the reason and who asked. The old bytes become the newest version directory, so a server that
serves the latest version switches to them; the nightly `served_model` resolver follows too,
because it reads the newest push. Rolling forward again is another push. The Pusher's retention
(newest 5 versions, plus labelled, pinned and served ones) applies as after any push.

Every rollback records its trigger (`rollback_trigger` on the PushedModel): `manual` (a person, the
default) or `alert` (the alert webhook, monitoring/webhook.py, through the `model_rollback` DAG).
`only_if_serving` makes a rollback conditional: it rolls back only while that version is still the
one served, so a late or repeated alert for a version already replaced never rolls back further.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from pipelines.errors import ConfigError

ROLLBACK_RESOLVER = "rollback_target"
TRIGGERS = ("manual", "alert", "canary")  # what started a rollback (components/pusher/spec.py ROLLBACK_TRIGGERS)


@dataclasses.dataclass(frozen=True)
class PushRecord:
    """One successful push, read from a PushedModel artifact."""

    artifact_id: int
    version: int
    model_id: int
    kind: str
    reason: str
    requested_by: str
    pushed_at: str
    replaced_version: int
    fingerprint: str
    pruned_versions: Tuple[int, ...] = ()  # deleted by the Pusher's retention right after this push
    trigger: str = ""  # rollbacks: "manual" or "alert"; "" for nightly pushes

    @property
    def kind_label(self) -> str:
        """The kind as `mlops models list` shows it: an alert-triggered rollback is "rollback (alert)", a
        failing canary's "rollback (canary)"."""
        return f"{self.kind} ({self.trigger})" if self.kind == "rollback" and self.trigger in ("alert", "canary") \
            else self.kind

    @classmethod
    def from_artifact(cls, artifact) -> "PushRecord":
        """The push a PushedModel artifact records (components/pusher's custom properties)."""
        props = artifact.custom_properties

        def text(key: str) -> str:
            return props[key].string_value if key in props else ""

        def number(key: str) -> int:
            return props[key].int_value if key in props else 0

        return cls(
            artifact_id=artifact.id,
            version=number("pushed_version"),
            model_id=number("source_model_id"),
            kind=text("push_kind") or "nightly",
            reason=text("reason"),
            requested_by=text("requested_by"),
            pushed_at=text("pushed_at"),
            replaced_version=number("replaced_version"),
            fingerprint=text("model_fingerprint"),
            pruned_versions=tuple(int(v) for v in text("pruned_versions").split(",") if v),
            # A rollback recorded before triggers existed was started by hand.
            trigger=(text("rollback_trigger") or "manual") if text("push_kind") == "rollback" else "",
        )

    @classmethod
    def unrecorded(cls, version: int, fingerprint: str = "") -> "PushRecord":
        """A version directory no push in ML Metadata records (copied in by hand)."""
        return cls(artifact_id=0, version=version, model_id=0, kind="unrecorded",
                   reason="on disk, but no push in ML Metadata (not written by the Pusher?)", requested_by="",
                   pushed_at="", replaced_version=0, fingerprint=fingerprint)


def list_pushes(connection_config) -> List[PushRecord]:
    """Every push that wrote a version, oldest first."""
    from ml_metadata import metadata_store

    store = metadata_store.MetadataStore(connection_config)
    out = [PushRecord.from_artifact(artifact) for artifact in store.get_artifacts_by_type("PushedModel")
           if "pushed" in artifact.custom_properties and artifact.custom_properties["pushed"].int_value == 1]
    return sorted(out, key=lambda p: p.artifact_id)


def choose_target(pushes: List[PushRecord], to_version: Optional[int],
                  unrecorded: Optional[PushRecord] = None) -> PushRecord:
    """The push to roll back to: version `to_version`, or (None) the model served before this one.

    `unrecorded` stands for a served version newer than the last recorded push (a directory
    copied in by hand): ML Metadata cannot say what it replaced, so only an explicit `to_version`
    is taken, and "already serving" compares against its bytes."""
    if not pushes:
        raise ConfigError("nothing has been pushed yet, so there is nothing to roll back to",
                          "run the pipeline until a model is pushed")
    served = unrecorded or pushes[-1]
    known = ", ".join(str(p.version) for p in pushes)
    if unrecorded is not None and to_version is None:
        raise ConfigError(
            f"version {unrecorded.version} is served but no push in ML Metadata records it (copied in by hand?), "
            "so there is no 'previous' model to go back to",
            f"name the version to serve again: --to VERSION, one of the pushed versions {known} (`mlops models list`)",
        )
    if to_version is not None:
        match = [p for p in pushes if p.version == to_version]
        if not match:
            raise ConfigError(f"no pushed version {to_version}", f"pick one of the pushed versions: {known}")
        target = match[0]
    else:
        earlier = [p for p in pushes[:-1] if p.fingerprint != served.fingerprint]
        if not earlier:
            raise ConfigError(
                f"version {served.version} is the only model ever pushed",
                "there is no earlier model; push a new one instead",
            )
        target = earlier[-1]
    if target.fingerprint == served.fingerprint:
        raise AlreadyServing(target, served)
    return target


class NoLongerServed(Exception):
    """`only_if_serving` names a version that is not the one served any more: nothing to roll back."""

    def __init__(self, version: int, served: Optional[int]):
        now = f"now {served}" if served is not None else "nothing is pushed"
        super().__init__(f"version {version} is no longer served ({now}): nothing to roll back")
        self.version = version
        self.served = served


def check_still_served(pushes: List[PushRecord], only_if_serving: Optional[int],
                       unrecorded: Optional[PushRecord] = None) -> None:
    """Raises NoLongerServed unless version `only_if_serving` is the one served (None: no condition).

    What is served is what a rollback replaces: the newest version directory no push records (copied
    in by hand), else the newest push (a rollback refuses a models.config that would serve anything else)."""
    if only_if_serving is None:
        return
    served = unrecorded or (pushes[-1] if pushes else None)
    if served is None or served.version != only_if_serving:
        raise NoLongerServed(only_if_serving, served.version if served else None)


def unrecorded_served_version(base, pushes: List[PushRecord]) -> Optional[PushRecord]:
    """The newest version directory under `base` when no push records it (newer than the last push)."""
    from serving.versions import latest_version, model_fingerprint

    newest = latest_version(Path(base))
    if newest is None or not pushes or newest <= pushes[-1].version:
        return None
    return PushRecord.unrecorded(newest, model_fingerprint(Path(base) / str(newest)))


class AlreadyServing(Exception):
    """The chosen model is the one being served: a rollback to it has nothing to do (idempotent)."""

    def __init__(self, target: PushRecord, served: PushRecord):
        super().__init__(
            f"version {served.version} already serves model {target.model_id} "
            f"(the model of version {target.version}); nothing to do"
        )
        self.target = target
        self.served = served


def was_blessed(connection_config, model_id: int) -> bool:
    """True when the Evaluator blessed model `model_id` at least once."""
    from ml_metadata import metadata_store

    store = metadata_store.MetadataStore(connection_config)
    for blessing in store.get_artifacts_by_type("ModelBlessing"):
        props = blessing.custom_properties
        if (props["current_model_id"].int_value if "current_model_id" in props else -1) == model_id and (
            props["blessed"].int_value if "blessed" in props else 0
        ) == 1:
            return True
    return False


def create_rollback_pipeline(config, model_id: int, reason: str, requested_by: str, trigger: str = "manual"):
    """`rollback_target` (resolves model `model_id` + its blessing) -> AtomicPusher (allow_repush)."""
    from tfx.dsl.components.common.resolver import Resolver
    from tfx.orchestration.pipeline import Pipeline
    from tfx.types import standard_artifacts
    from tfx.types.channel import Channel

    from components.pusher.component import AtomicPusher
    from pipelines.resolvers import ModelByIdStrategy

    target = Resolver(
        strategy_class=ModelByIdStrategy,
        config={"model_id": model_id},
        model=Channel(type=standard_artifacts.Model),
        blessing=Channel(type=standard_artifacts.ModelBlessing),
    ).with_id(ROLLBACK_RESOLVER)
    pusher = AtomicPusher(
        model=target.outputs["model"],
        model_blessing=target.outputs["blessing"],
        push_base_directory=config.serving_model_dir,
        allow_repush=True,
        push_kind="rollback",
        reason=reason,
        requested_by=requested_by,
        keep_versions=config.keep_versions,
        project_home=config.project_home,
        trigger=trigger,  # recorded by the executor as `rollback_trigger`
    )
    return Pipeline(
        pipeline_name=config.pipeline_name,  # same pipeline: the nightly resolvers see this push
        pipeline_root=config.pipeline_root,
        components=[target, pusher],
        enable_cache=False,
        metadata_connection_config=config.metadata.to_proto(),
    )


@dataclasses.dataclass
class RollbackResult:
    run_id: str
    target: PushRecord
    replaced: PushRecord  # the last recorded push before this one
    new_version: Optional[int]
    replaced_version: int  # the version served before (as the Pusher recorded it; may be unrecorded)
    reason: str
    requested_by: str
    notes: List[str] = dataclasses.field(default_factory=list)  # what the rollback did not change
    trigger: str = "manual"  # what started it: "manual" or "alert"

    def as_dict(self) -> Dict:
        return dataclasses.asdict(self)


def rollback(
    config,
    to_version: Optional[int],
    reason: str,
    requested_by: Optional[str] = None,
    progress: Callable[[str], None] = print,
    force: bool = False,
    serving=None,
    trigger: str = "manual",
    only_if_serving: Optional[int] = None,
) -> RollbackResult:
    """Pushes an earlier model again through the Pusher; returns what happened.

    Raises AlreadyServing (nothing done) when the chosen model is the one being served,
    NoLongerServed (nothing done) when `only_if_serving` is set and that version is not the one
    served any more, and ConfigError for an unknown version, a never-blessed model (unless
    `force`), or when the model server's models.config (`serving`: a serving.config.ProjectServing)
    would not serve the push. `trigger` ("manual" or "alert") is recorded with the push."""
    from pipelines.node_runner import compile_pipeline, ensure_state_dirs, node_ids, prepare_process_env, run_node

    if not reason or not reason.strip():
        raise ConfigError("a rollback needs a reason", 'pass --reason "why the served model is bad"')
    if trigger not in TRIGGERS:
        raise ConfigError(f"unknown rollback trigger {trigger!r}", f"pass one of {', '.join(TRIGGERS)}")
    requested_by = requested_by or getpass.getuser()
    prepare_process_env()
    ensure_state_dirs(config)
    if serving is not None:
        refuse_unserved_push(serving, to_version)
    connection = config.metadata.to_proto()
    pushes = list_pushes(connection)
    unrecorded = unrecorded_served_version(config.serving_model_dir, pushes)
    check_still_served(pushes, only_if_serving, unrecorded)  # raises NoLongerServed: nothing to do
    target = choose_target(pushes, to_version, unrecorded)  # raises AlreadyServing when there is nothing to do
    served = pushes[-1]
    if not force and not was_blessed(connection, target.model_id):
        raise ConfigError(
            f"model {target.model_id} (version {target.version}) was never blessed by the Evaluator",
            "pick a blessed version (`mlops models list`) or pass --force to push it anyway",
        )
    if trigger == "alert":
        progress(f"rollback triggered by an alert, requested by {requested_by}: {reason.strip()}")
    if unrecorded is not None:
        progress(f"rolling back: serving version {unrecorded.version} (not recorded in ML Metadata); "
                 f"pushing version {target.version}'s model {target.model_id} again")
    else:
        progress(f"rolling back: serving version {served.version} (model {served.model_id}); "
                 f"pushing version {target.version}'s model {target.model_id} again")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    run_id = f"rollback__{stamp}"
    ir = compile_pipeline(create_rollback_pipeline(config, target.model_id, reason.strip(), requested_by, trigger),
                          run_id)
    for node_id in node_ids(ir):
        result = run_node(ir, node_id)
        progress(f"  {node_id}: {result.status} in {result.seconds:.1f}s")
    after = list_pushes(connection)
    new = after[-1] if after and after[-1].artifact_id != served.artifact_id else None
    if new is None:
        raise ConfigError(
            f"the Pusher did not push model {target.model_id} (see `mlops summary --run-id {run_id}`)",
            "check that the model directory still exists under var/pipeline_root",
        )
    replaced_version = new.replaced_version or served.version
    notes = []
    if new.pruned_versions:
        notes.append(f"retention deleted version(s) {', '.join(map(str, new.pruned_versions))} after this push "
                     f"(keeping the newest {config.keep_versions} and every labelled, pinned or served one)")
    stale = serving.labels_of(replaced_version) if serving is not None else []
    if stale:
        notes.append(f"label(s) {', '.join(stale)} in {serving.config_path} still point at version {replaced_version}: "
                     f"requests by label keep getting that model; move them to version {new.version} to roll them back too")
    return RollbackResult(run_id, target, served, new.version, replaced_version, reason.strip(), requested_by, notes,
                          trigger)


def refuse_unserved_push(serving, to_version: Optional[int]) -> None:
    """A rollback is a push of a new newest version: refuses when the model server would not serve it."""
    wanted = f"version {to_version}'s" if to_version else "the earlier"
    if serving.model is None:
        raise ConfigError(
            f"{serving.config_path} has no model with base_path {serving.base_path}, so a model server started "
            "from it does not serve what the Pusher writes there (a rollback would change nothing it serves)",
            f"add a model with that base_path to {serving.config_path}, or pass the config the server runs with: "
            "--model-config-file FILE",
        )
    if not serving.serves_new_pushes():
        pins = ", ".join(str(v) for v in sorted(serving.model.policy.versions))
        raise ConfigError(
            f"{serving.config_path} pins model {serving.model.name!r} to version(s) {pins} (a `specific` version "
            "policy), so the rollback's push, a new version, would not be served",
            f"to serve {wanted} model again, pin or label that version in {serving.config_path} (the server reloads "
            "it within a second); or change the policy to `latest` and roll back again",
        )
