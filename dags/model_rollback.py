"""Airflow 3 DAG `model_rollback`: push an earlier blessed model again, on demand, audited.

Trigger it from the UI (or `airflow dags trigger model_rollback --conf '{"reason": "..."}'`); the alert
webhook (monitoring/webhook.py) triggers it through the REST API with `trigger: alert` and
`only_if_serving: <the alerting version>`.
It runs `mlops rollback` in the TFX environment: the Pusher pushes the chosen earlier model as
the newest version, and ML Metadata records the execution with who, when, why and what it
replaced. When it pushed a version, the task adds an event on the model asset (`taxi_model`, kind
"rollback"), as the nightly push does, so a DAG scheduled on that asset sees the rollback too.
Imports only Airflow and the standard library. Settings and assets: mlops_common.py.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path

from airflow.sdk import DAG, Param

# The shared module beside this file: Airflow's DAG bundles put this folder on sys.path, a plain
# DagBag (tests, `airflow dags test` in some versions) does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from mlops_common import HOME, MLOPS, MODEL_ASSET, POOL, RollbackOperator  # noqa: E402


def rollback_args(params: dict) -> str:
    """`--to N` or `--previous`, the reason, who asked, the trigger and `--only-if-serving V` when
    given, shell-quoted."""
    target = ["--to", str(int(params["to_version"]))] if params.get("to_version") else ["--previous"]
    args = [*target, "--reason", params["reason"], "--by", params["requested_by"],
            "--trigger", params.get("trigger") or "manual"]
    if params.get("only_if_serving"):
        args += ["--only-if-serving", str(int(params["only_if_serving"]))]
    return " ".join(shlex.quote(a) for a in args)


with DAG(
    dag_id="model_rollback",
    description="Roll the served taxi model back to an earlier blessed version (audited in ML Metadata)",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "rollback", "taxi"],
    default_args={"owner": "mlops", "retries": 0, "pool": POOL},
    params={
        "to_version": Param(None, type=["null", "integer"], minimum=1,
                            description="pushed version to go back to (empty: the model served before the current one)"),
        "reason": Param("", type="string", minLength=3, description="why the served model is being rolled back"),
        "requested_by": Param("airflow", type="string", minLength=1, description="who asked for it"),
        "trigger": Param("manual", type="string", enum=["manual", "alert"],
                         description="what started it, recorded in ML Metadata: manual (a person) or alert "
                                     "(the alert webhook)"),
        "only_if_serving": Param(None, type=["null", "integer"], minimum=1,
                                 description="roll back only if this version is still the one served (empty: "
                                             "always); a late or repeated alert then does nothing"),
    },
    user_defined_macros={"rollback_args": rollback_args},
    doc_md=f"""
### Roll back the served taxi model

Runs `mlops rollback` in the TFX environment. The chosen earlier model (a `to_version`, or by
default the model served before the current one) is pushed **again** by the Pusher as the
newest version, so the model server switches to it within seconds, and ML Metadata records the
push with `push_kind=rollback`, the reason, who asked and the version it replaced. When the
model server that `make up` started runs, the task waits until it serves the new version and
fails if it does not within 30 s (the push stays recorded; the server's log says why). The
Pusher's retention applies as after any push (the newest 5 versions and every labelled, pinned or
served one stay); `mlops models list` shows every push.

`trigger` (manual or alert) is recorded with the push. With `only_if_serving` set, the run rolls
back only while that version is still the one served, and otherwise succeeds doing nothing: the
alert webhook sets it to the alerting version, so a late or repeated alert never rolls back further.

During a canary window (`mlops models canary`) the rollback ends the window: stable's model (or
`to_version`'s) is pushed again and serves every request, the canary version is no longer served.
An alert on the canary's version rolls it back; one on stable's version fails with the fix (decide
the canary first), since rolling the canary back would leave that version serving everything.

A rollback that pushed is an event on the asset `{MODEL_ASSET.name}` ({MODEL_ASSET.uri}) with
`kind: rollback`, the new `pushed_version` and the version whose model it serves again
(`model_of_version`); one that had nothing to do adds no event.
""",
) as dag:
    RollbackOperator(
        task_id="rollback",
        # --json: the result (the version pushed, if any) goes to the log and, through tee, to the
        # file the operator reads; pipefail keeps the rollback's own exit code.
        bash_command="set -o pipefail; "
        + " ".join(shlex.quote(p) for p in [MLOPS, "--home", HOME, "rollback"])
        + ' {{ rollback_args(params) }} --json | tee "$MLOPS_RESULT_FILE"',
        execution_timeout=dt.timedelta(minutes=10),
        doc_md="Pushes the chosen earlier model again through the AtomicPusher (audited); when it pushed, adds "
        f"an event on the asset `{MODEL_ASSET.name}`.",
    )
