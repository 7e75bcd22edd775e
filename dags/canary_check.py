"""Airflow 3 DAG `canary_check`: every 5 minutes, decide an open canary (promote or roll back).

With canary rollout on (`mlops models canary enable`), a nightly push first answers a share of the
requests; this DAG runs `mlops models canary check`, which does nothing while no window is open,
while the soak period runs or while the canary has answered too few requests, and otherwise
promotes it or rolls it back through the audited rollback (both recorded in ML Metadata). A small
DAG of its own rather than a task of `nightly_retrain`: the soak period outlasts the nightly run,
and a check that does nothing costs one short process. Paused at creation, as every DAG here;
unpause it when you turn canaries on.
Imports only Airflow and the standard library. Settings: mlops_common.py.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
from pathlib import Path

from airflow.sdk import DAG

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from mlops_common import HOME, MLOPS, POOL, MlopsBashOperator  # noqa: E402

with DAG(
    dag_id="canary_check",
    description="Promote or roll back the taxi model's canary once its soak period is over",
    schedule="*/5 * * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "canary", "taxi"],
    default_args={"owner": "mlops", "retries": 0, "pool": POOL},
    doc_md="""
### Decide the taxi model's canary

Runs `mlops models canary check` in the TFX environment every 5 minutes. While a canary window is
open and its soak period is over, it compares the canary's error rate and p99 latency with the
stable version's on the model server's own metrics: no worse by the configured margins, the
canary is promoted (`stable` moves to it; a `promotion` in ML Metadata); worse, it is rolled back
through the audited rollback (`rollback (canary)` in `mlops models list`, with the reason). With
no window open, while soaking, or with too few canary requests, the run succeeds doing nothing.
`mlops models canary status` shows the split, the soak time left and the live comparison.
""",
) as dag:
    MlopsBashOperator(
        task_id="check",
        bash_command=" ".join(shlex.quote(p) for p in [MLOPS, "--home", HOME, "models", "canary", "check"]),
        execution_timeout=dt.timedelta(minutes=10),
        doc_md="`mlops models canary check`: promote, roll back, or nothing to do yet.",
    )
