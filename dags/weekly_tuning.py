"""Airflow 3 DAG `weekly_tuning`: search the taxi model's hyperparameters once a week (optional).

It runs `mlops tune` in the TFX environment: TFX's Tuner (KerasTuner random search) on the window of
spans that passed every data gate, ending with the newest good span, through the newest night's
transform graph. The best values are recorded in ML Metadata (a HyperParameters artifact); every
later nightly Trainer takes the newest one instead of the defaults (`mlops lineage` shows which).
Paused at creation like every project DAG: unpause it to turn weekly tuning on. A failed or
interrupted search changes nothing: the nightly run keeps the previous result (or the defaults).
Imports only Airflow and the standard library. Settings: mlops_common.py.
"""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import zoneinfo
from pathlib import Path

from airflow.sdk import DAG, Param
from airflow.timetables.interval import CronDataIntervalTimetable

# The shared module beside this file: Airflow's DAG bundles put this folder on sys.path, a plain
# DagBag (tests, `airflow dags test` in some versions) does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parent))

from mlops_common import HOME, MLOPS, POOL, TIMEZONE, MlopsBashOperator  # noqa: E402


def tune_args(params: dict) -> str:
    """`--trials N --train-steps S` and `--date D` when given, shell-quoted."""
    args = ["--trials", str(int(params["trials"])), "--train-steps", str(int(params["train_steps"]))]
    if params.get("date"):
        args += ["--date", str(params["date"])]
    return " ".join(shlex.quote(a) for a in args)


with DAG(
    dag_id="weekly_tuning",
    description="Search the taxi model's hyperparameters on the last window of good spans (TFX Tuner)",
    # Sundays at 04:00, after that night's nightly run (02:00), in MLOPS_DAG_TIMEZONE.
    schedule=CronDataIntervalTimetable("0 4 * * 0", timezone=TIMEZONE),
    start_date=dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo(TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "tuning", "taxi"],
    default_args={"owner": "mlops", "retries": 0, "pool": POOL},
    params={
        "trials": Param(6, type="integer", minimum=1, description="models to train and compare"),
        "train_steps": Param(300, type="integer", minimum=1, description="training steps per trial"),
        "date": Param(None, type=["null", "string"], format="date",
                      description="the window's newest span, YYYY-MM-DD (empty: the newest span that passed the "
                                  "data gates)"),
    },
    user_defined_macros={"tune_args": tune_args},
    doc_md="""
### Weekly tuning

Runs `mlops tune`: TFX's Tuner trains up to `trials` models (KerasTuner random search over the
learning rate and the deep tower's widths) on the window of good spans and records the best values
in ML Metadata. The next nightly Trainer trains with them; `mlops lineage --version V` shows the
tuning execution a model was trained with. Tuning the same window with the same settings again
reuses the earlier result (TFX's cache).
""",
) as dag:
    MlopsBashOperator(
        task_id="tune",
        bash_command=f"{shlex.quote(MLOPS)} --home {shlex.quote(HOME)} tune {{{{ tune_args(params) }}}}",
    )
