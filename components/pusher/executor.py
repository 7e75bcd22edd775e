"""Pushes a blessed model to `<base>/<version>/`, atomically, and never the same model twice.

Stock TFX's Pusher writes a new timestamped version on every cached rerun; this one compares
the candidate's fingerprint with what is already pushed and, when it is there, pushes nothing
and records why. A rollback is a push of an earlier model with `allow_repush` set, so that the
older bytes become the newest version and the server switches to them.

After a push it applies retention (`keep_versions`, default 5; 0 keeps everything): older version
directories beyond the newest N go, except any version the project's models.config labels, pins
or keeps loaded, the newest complete one and the version served until this push loads
(serving/retention.py decides, as for `mlops models prune`). What went is recorded on the
PushedModel (`pruned_versions`); the Trainer's model stays in the pipeline root, so a rollback
to a pruned version still works. Retention never fails a push: a problem is logged and recorded.
"""

from __future__ import annotations

import datetime as dt
import getpass
import logging
from pathlib import Path
from typing import Any, Dict, List

from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types.standard_component_specs import INFRA_BLESSING_KEY, MODEL_BLESSING_KEY, MODEL_KEY, PUSHED_MODEL_KEY
from tfx.utils import path_utils

from components.pusher.spec import (ALLOW_REPUSH_KEY, DEFAULT_PUSH_KIND, KEEP_VERSIONS_KEY, PROJECT_HOME_KEY,
                                    PUSH_BASE_DIRECTORY_KEY, PUSH_KIND_KEY, REASON_KEY, REQUESTED_BY_KEY,
                                    ROLLBACK_TRIGGERS, TRIGGER_KEY)
from serving import versions
from serving.retention import DEFAULT_KEEP as DEFAULT_KEEP_VERSIONS

log = logging.getLogger(__name__)

# Custom properties on the PushedModel artifact. `pushed`, `pushed_destination` and
# `pushed_version` match stock TFX's names so that existing tooling reads them.
PUSHED = "pushed"
PUSHED_VERSION = "pushed_version"
PUSHED_DESTINATION = "pushed_destination"
SOURCE_MODEL_ID = "source_model_id"
FINGERPRINT = "model_fingerprint"
REASON = "reason"
REQUESTED_BY = "requested_by"
KIND = "push_kind"  # "nightly" or "rollback" ("promotion": a canary promoted, pipelines/canary.py)
ROLLBACK_TRIGGER = "rollback_trigger"  # rollbacks only: "manual" (a person) or "alert" (the alert webhook)
REPLACED_VERSION = "replaced_version"
PRUNED_VERSIONS = "pruned_versions"  # "3,4": deleted by retention right after this push
PRUNE_ERROR = "prune_error"
CANARY_SHARE = "canary_share"  # "0.1": this push started as a canary for that share (serving/canary.py)


class Executor(base_executor.BaseExecutor):
    """Pushes the model atomically, once, then applies retention (the AtomicPusher's executor).

    Do() reads the `model` input, the optional `model_blessing` and `infra_blessing`, the
    `push_base_directory`, `allow_repush`, `push_kind`, `reason`, `requested_by`, `trigger`
    (rollbacks), `keep_versions` and `project_home` execution properties, and the versions already
    under `push_base_directory`. It writes a new version directory there (unless not blessed or already
    pushed), deletes the versions retention lets go, and writes the `pushed_model` output (one
    PushedModel artifact): the custom properties named below and a PUSHED or NOT_PUSHED file in
    its folder.
    """

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        pushed_model = artifact_utils.get_single_instance(output_dict[PUSHED_MODEL_KEY])
        base = Path(exec_properties[PUSH_BASE_DIRECTORY_KEY])
        allow_repush = bool(exec_properties.get(ALLOW_REPUSH_KEY, 0))
        served_before = versions.latest_version(base)

        pushed_model.set_int_custom_property(SOURCE_MODEL_ID, model.id)
        kind = exec_properties.get(PUSH_KIND_KEY) or DEFAULT_PUSH_KIND
        pushed_model.set_string_custom_property(KIND, kind)
        if kind == "rollback":
            pushed_model.set_string_custom_property(ROLLBACK_TRIGGER,
                                                    exec_properties.get(TRIGGER_KEY) or ROLLBACK_TRIGGERS[0])
        pushed_model.set_string_custom_property(REQUESTED_BY,
                                                exec_properties.get(REQUESTED_BY_KEY) or getpass.getuser())
        pushed_model.set_int_custom_property(REPLACED_VERSION, served_before or 0)
        pushed_model.set_string_custom_property(PUSHED_DESTINATION, str(base))

        blessings = input_dict.get(MODEL_BLESSING_KEY) or []
        if blessings and not model_utils.is_model_blessed(blessings[0]):
            why = blessings[0].get_string_custom_property("reason") or "the Evaluator did not bless it"
            return self._not_pushed(pushed_model, f"model {model.id} is not blessed: {why}")
        infra_blessings = input_dict.get(INFRA_BLESSING_KEY) or []
        if infra_blessings and not model_utils.is_infra_validated(infra_blessings[0]):
            why = infra_blessings[0].get_string_custom_property("reason") or "the InfraValidator did not bless it"
            return self._not_pushed(pushed_model, f"model {model.id} failed infra validation: {why}")

        model_dir = Path(path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)))
        fingerprint = versions.model_fingerprint(model_dir)
        pushed_model.set_string_custom_property(FINGERPRINT, fingerprint)
        existing = versions.fingerprints(base)
        same = sorted(v for v, fp in existing.items() if fp == fingerprint)
        if same and (not allow_repush or same[-1] == served_before):
            return self._not_pushed(
                pushed_model, f"model {model.id} is already pushed as version {same[-1]}; nothing to do"
            )

        version = self._publish(model_dir, base, kind, served_before, exec_properties.get(PROJECT_HOME_KEY) or "",
                                pushed_model)
        reason = exec_properties.get(REASON_KEY) or "blessed by the Evaluator"
        pushed_model.set_int_custom_property(PUSHED, 1)
        pushed_model.set_int_custom_property(PUSHED_VERSION, version)
        pushed_model.set_string_custom_property(REASON, reason)
        pushed_model.set_string_custom_property("pushed_at", dt.datetime.now(dt.timezone.utc).isoformat())
        Path(pushed_model.uri).mkdir(parents=True, exist_ok=True)
        (Path(pushed_model.uri) / "PUSHED").write_text(f"{base / str(version)}\n")
        log.info("pushed model %s as version %d to %s (%s)", model.id, version, base, reason)
        keep = exec_properties.get(KEEP_VERSIONS_KEY)
        keep = DEFAULT_KEEP_VERSIONS if keep is None else int(keep)
        if keep > 0:
            self._retain(pushed_model, base, keep, served_before, exec_properties.get(PROJECT_HOME_KEY) or "")

    @staticmethod
    def _publish(model_dir: Path, base: Path, kind: str, served_before, home: str, pushed_model) -> int:
        """Writes the version directory; a nightly push with the home's canary on (serving/canary.py)
        first answers a share of requests under the `canary` label (recorded as `canary_share`)."""
        if kind != DEFAULT_PUSH_KIND or not home:
            return versions.publish_version(model_dir, base)
        from serving import canary

        version, window = canary.begin(Path(home), base, lambda: versions.publish_version(model_dir, base),
                                       served_before, log=log.info)
        if window is not None:
            pushed_model.set_string_custom_property(CANARY_SHARE, f"{window.share:g}")
        return version

    @staticmethod
    def _retain(pushed_model: types.Artifact, base: Path, keep: int, served_before, home: str) -> None:
        from serving.config import ConfigFileError, ProjectServing, project_config_path
        from serving.retention import apply_prune, plan_for

        try:
            # The models.config of the home's model server (`make up`'s, or a registered `mlops serve`)
            # says what else stays.
            serving = ProjectServing.read(Path(home), base) if home else ProjectServing.from_configs(base, None, [])
            also_keep = {served_before: "served until this push loads"} if served_before else None
            plan = plan_for(serving, keep, also_keep=also_keep)
        except (ConfigFileError, OSError, ValueError) as err:
            where = f"{project_config_path(Path(home), None)}: " if isinstance(err, ConfigFileError) and home else ""
            message = f"skipped, nothing deleted: {where}{' '.join(str(err).split())[:400]}; fix it, then `mlops models prune`"
            pushed_model.set_string_custom_property(PRUNE_ERROR, message)
            log.warning("retention after the push: %s", message)
            return
        deleted = apply_prune(plan, emit=lambda _: None)  # a version it cannot delete is skipped, in plan.failed
        pushed_model.set_string_custom_property(PRUNED_VERSIONS, ",".join(map(str, deleted)))
        if plan.failed:
            message = "could not delete " + "; ".join(f"version {v}: {why}" for v, why in sorted(plan.failed.items()))
            pushed_model.set_string_custom_property(PRUNE_ERROR, message[:500])
            log.warning("retention: %s", message)
        if deleted:
            log.info("retention: deleted version(s) %s of %s (keeping the newest %d, labelled, pinned and "
                     "served ones)", ", ".join(map(str, deleted)), base, keep)

    @staticmethod
    def _not_pushed(pushed_model: types.Artifact, reason: str) -> None:
        pushed_model.set_int_custom_property(PUSHED, 0)
        pushed_model.set_string_custom_property(REASON, reason)
        Path(pushed_model.uri).mkdir(parents=True, exist_ok=True)
        (Path(pushed_model.uri) / "NOT_PUSHED").write_text(reason + "\n")
        log.info("not pushed: %s", reason)
