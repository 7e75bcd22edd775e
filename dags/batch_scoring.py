"""Airflow 3 DAG `batch_scoring`: score a day's span in batch after each nightly push, or for any date.

Scheduled on the model asset (`taxi_model`): the nightly DAG's Pusher adds an event on it when it
pushed a version (extra: the span it trained on and the pushed version), and this DAG then runs
`mlops score --date <that span> --version <that version>` in the TFX environment. A rollback's event
names no span: that run is skipped (trigger one by hand to score a span with the rolled-back model).
Triggered by hand with conf {"date": "YYYY-MM-DD"} (and optionally "version": N) it scores that span
with the served (or that) version. `mlops score` refuses a span the data gates blocked (exit 3, not
retried) and reuses an earlier result for the same model and span. Imports only Airflow and the
standard library. Settings and assets: mlops_common.py.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Optional, Tuple

from airflow.sdk import DAG, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# The shared module beside this file: Airflow's DAG bundles put this folder on sys.path, a plain
# DagBag (tests, `airflow dags test` in some versions) does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from mlops_common import HOME, MLOPS, MODEL_ASSET, POOL, RETRIES, RETRY_DELAY, TfxNodeOperator  # noqa: E402

DATE_ENV, VERSION_ENV = "MLOPS_SCORE_DATE", "MLOPS_SCORE_VERSION"


def score_target(params: dict, asset_events) -> Optional[Tuple[str, Optional[int]]]:
    """(date, version or None) to score: the params when a date is given, else the span and version of
    the newest push event that triggered the run; None when the run was triggered by events that
    name no span (rollbacks)."""
    if params.get("date"):
        version = params.get("version")
        return str(params["date"]), int(version) if version else None
    events = list(asset_events.get(MODEL_ASSET, ())) if asset_events else []
    pushes = [event for event in events if (event.extra or {}).get("span") and (event.extra or {}).get("pushed_version")]
    if pushes:
        newest = max(pushes, key=lambda event: event.timestamp)
        return str(newest.extra["span"]), int(newest.extra["pushed_version"])
    if events:
        return None
    raise AirflowFailException('no span to score: trigger the DAG with conf {"date": "YYYY-MM-DD"} '
                               '(and optionally "version": N)')


class ScoreOperator(TfxNodeOperator):
    """`mlops score` for the span and version of this run (score_target), passed to the command in
    its environment; exit 2 and 3 (bad arguments, a blocked span) fail without retries."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._target: Tuple[str, Optional[int]] = ("", None)

    def execute(self, context):
        target = score_target(context["params"], context.get("triggering_asset_events"))
        if target is None:
            raise AirflowSkipException("the triggering model event names no span (a rollback): nothing to score; "
                                       'trigger with conf {"date": "YYYY-MM-DD"} to score a span')
        self._target = target
        self.log.info("scoring span %s with %s", target[0],
                      f"version {target[1]}" if target[1] else "the served version")
        return self.run_node(context)

    def get_env(self, context) -> dict:
        env = super().get_env(context)
        env[DATE_ENV] = self._target[0]
        env[VERSION_ENV] = str(self._target[1] or "")
        return env


with DAG(
    dag_id="batch_scoring",
    description="Score a day's taxi span in batch with the pushed model (after each nightly push, or by hand)",
    schedule=[MODEL_ASSET],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "scoring", "taxi"],
    default_args={"owner": "mlops", "retries": RETRIES, "retry_delay": RETRY_DELAY,
                  "retry_exponential_backoff": True, "pool": POOL},
    params={
        "date": Param(None, type=["null", "string"], format="date",
                      description="the span to score, YYYY-MM-DD (empty: the span of the push that triggered the run)"),
        "version": Param(None, type=["null", "integer"], minimum=1,
                         description="pushed version to score with (empty: the pushed one that triggered the run, "
                                     "else the served one)"),
    },
    doc_md=f"""
### Batch scoring of a day's span

Runs `mlops score` in the TFX environment: every row of the span is scored in-process, in batches,
by the model's `serving_default` signature and written to `var/scores/<date>/v<version>.parquet`
under the home `{HOME}`, keyed by `span_date`, `file` and `row`; ML Metadata records the execution
(the Model, the PushedModel and the span's Examples in, the scores out).

* **Schedule**: on the asset `{MODEL_ASSET.name}` ({MODEL_ASSET.uri}): after each nightly push, the span
  that night trained on, scored by the version it pushed. A rollback's event names no span: skipped.
* **By hand**: conf `{{"date": "YYYY-MM-DD"}}` (and `"version": N`) scores any span.
* A span the data gates blocked is refused (exit 3, not retried); a span scored by the same model before
  is reused (the task log says so), not written again.
""",
) as dag:
    ScoreOperator(
        task_id="score",
        bash_command=" ".join(shlex.quote(p) for p in [MLOPS, "--home", HOME, "score"])
        + f' --date "${DATE_ENV}" ${{{VERSION_ENV}:+--version "${VERSION_ENV}"}}',
        execution_timeout=dt.timedelta(hours=1),
        doc_md="Scores the span (`mlops score`); progress and the result file are in the log.",
    )
