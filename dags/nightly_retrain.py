"""Airflow 3 DAG `nightly_retrain`: one TFX run of the taxi pipeline per night, one task per node.

This file imports only Airflow and the standard library (TFX lives in another Python
environment; design.md, section 2). Its shape comes from `taxi_manifest.json`, generated from the
compiled pipeline by `mlops dags manifest`. Every task runs one node with
`.venv/bin/mlops node run`, which forks it from a warm worker that has TFX imported already.
A node that fails is retried with exponential back-off; a span that fails validation is not.

Settings (MLOPS_HOME, MLOPS_BIN, MLOPS_DAG_TIMEZONE, MLOPS_MLMD_POOL, MLOPS_TASK_RETRIES,
MLOPS_RETRY_DELAY_SECONDS, MLOPS_MLMD, MLOPS_MLMD_CONN_ID) are read from the environment at parse
time: see mlops_common.py.
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

from mlops_common import (HOME, MANIFEST, MLOPS, MODEL_ASSET, POOL, RETRIES, RETRY_DELAY, SPAN_ASSET,  # noqa: E402
                          TIMEZONE, MlopsBashOperator, TfxNodeOperator, TfxPusherOperator)

# Wall-clock limit per node; a node that hangs is killed and retried.
TIMEOUTS = {
    "Trainer": dt.timedelta(hours=2),
    "Transform": dt.timedelta(hours=1),
    "GatedEvaluator": dt.timedelta(hours=1),
    "StatisticsGen": dt.timedelta(minutes=45),
    "CsvExampleGen": dt.timedelta(minutes=45),
}
DEFAULT_TIMEOUT = dt.timedelta(minutes=20)
LAST_NODE = MANIFEST["nodes"][-1]["id"]
REPORT_TASK = "report_metrics"
# Airflow assets (mlops_common.py): the nodes that read the day's span declare it as an inlet; the
# DriftValidator's success (the span passed the data gates) is an event on it; the Pusher adds an
# event on the model asset when it pushed a version.
SPAN_READERS = ("SpanCheck", "CsvExampleGen")
SPAN_GATE = "DriftValidator"
PUSHER = "AtomicPusher"
_missing = {*SPAN_READERS, SPAN_GATE, PUSHER} - {node["id"] for node in MANIFEST["nodes"]}
if _missing:  # a renamed node would silently lose its assets
    raise ValueError(f"nodes {sorted(_missing)} are not in taxi_manifest.json: update the asset wiring in {__file__}")


def span_date(params: dict, dag_run, timezone: str) -> str:
    """The span a run ingests: `params.date` if given, else the day of the run's logical date.

    With the data-interval timetable, the 02:00 run of 23 Nov has logical date 22 Nov 02:00,
    so each night ingests the day that has just ended. A manual run without a logical date
    takes the day before it was triggered.
    """
    if params.get("date"):
        return str(params["date"])
    moment = dag_run.logical_date or (dag_run.run_after - dt.timedelta(days=1))
    return moment.astimezone(zoneinfo.ZoneInfo(timezone)).date().isoformat()


def tfx_run_id(dag_id: str, run_id: str) -> str:
    """All tasks of one DAG run share this TFX run id (the pipeline_run context in ML Metadata)."""
    return f"{dag_id}__{run_id}"


def run_args(params: dict) -> str:
    """The `mlops node run` options of the run's params (all but the span), shell-quoted: the numbers,
    and `--run-fn MODULE.FUNCTION` when given (empty: the default model code)."""
    args = ["--train-steps", str(int(params["train_steps"])), "--eval-steps", str(int(params["eval_steps"])),
            "--auc-floor", str(params["auc_floor"]), "--min-improvement", str(params["min_improvement"]),
            "--slice-margin", str(params["slice_margin"]), "--keep-versions", str(int(params["keep_versions"])),
            "--window-days", str(int(params["window_days"]))]
    if params.get("run_fn"):
        args += ["--run-fn", str(params["run_fn"])]
    return " ".join(shlex.quote(a) for a in args)


# Rendered in each task: the TFX run id and the span of this DAG run.
TFX_RUN_ID = "{{ tfx_run_id(dag.dag_id, run_id) }}"
SPAN = "{{ span_date(params, dag_run, dag.timezone.name) }}"
RUN_OPTIONS = f"--date {SPAN} " + "{{ run_args(params) }}"
RUN_FN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"


def node_command(node_id: str) -> str:
    command = [MLOPS, "--home", HOME, "node", "run", "--node", node_id]
    summary = " --summary" if node_id == LAST_NODE else ""
    return (
        " ".join(shlex.quote(part) for part in command)
        + f' --run-id "{TFX_RUN_ID}" '
        + RUN_OPTIONS
        + summary
    )


def node_assets(node_id: str) -> dict:
    """The inlets and outlets of a node's task (Airflow assets)."""
    if node_id in SPAN_READERS:
        return {"inlets": [SPAN_ASSET]}
    if node_id == SPAN_GATE:
        return {"outlets": [SPAN_ASSET]}
    return {}


with DAG(
    dag_id="nightly_retrain",
    description="Ingest, validate (schema + drift), transform, train, evaluate and push the taxi model",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone=TIMEZONE),
    start_date=dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo(TIMEZONE)),
    catchup=False,
    max_active_runs=1,
    tags=["mlops", "tfx", "taxi"],
    default_args={
        "owner": "mlops",
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": dt.timedelta(minutes=30),
        "pool": POOL,
    },
    params={
        "date": Param(None, type=["null", "string"], format="date",
                      description="span to ingest, YYYY-MM-DD (default: the day of the logical date)"),
        "window_days": Param(7, type="integer", minimum=1, maximum=90,
                             description="train on the newest N days that passed the data gates; "
                                         "this span is held out for evaluation (1: this span alone)"),
        "train_steps": Param(300, type="integer", minimum=1, description="training steps"),
        "eval_steps": Param(50, type="integer", minimum=1, description="Trainer evaluation steps"),
        "auc_floor": Param(0.6, type="number", minimum=0, maximum=1, description="bless only if AUC >= this"),
        "min_improvement": Param(0.01, type="number", minimum=-1,
                                 description="relative AUC gain needed over the served model "
                                             "(negative: accept a somewhat worse model)"),
        "slice_margin": Param(0.05, type="number", minimum=0,
                              description="largest AUC loss allowed on a monitored slice"),
        "keep_versions": Param(5, type="integer", minimum=0,
                               description="after a push, keep the newest N pushed versions (plus labelled, "
                                           "pinned and served ones); 0 keeps all"),
        "run_fn": Param(None, type=["null", "string"], pattern=RUN_FN_PATTERN,
                        description="the Trainer's run_fn, MODULE.FUNCTION: your own model code, importable in the "
                                    "TFX environment (`mlops run --run-fn`; empty: pipelines.taxi.model.run_fn)"),
    },
    user_defined_macros={"span_date": span_date, "tfx_run_id": tfx_run_id, "run_args": run_args},
    doc_md=f"""
### Nightly retraining of the taxi model

One DAG run = one TFX pipeline run over one daily span (`data/incoming/YYYY-MM-DD/`), with the
TFX run id `nightly_retrain__<Airflow run id>` recorded in ML Metadata. Each task is one TFX
node (task id = node id) run by `mlops node run` in the TFX environment; caching, resolvers and
ML Metadata behave exactly as in TFX.

* **Validation gate**: `DriftValidator` fails on schema anomalies or drift against the previous
  span; `Transform`, `Trainer` and `AtomicPusher` then never run and the served model stays.
* **Push gate**: `GatedEvaluator` blesses only a model that beats the served one (AUC floor,
  1% relative gain, no monitored slice worse by more than the margin); `AtomicPusher` never
  pushes the same model twice, and after a push keeps the newest `keep_versions` (5) version
  directories plus any the server's models.config labels, pins or keeps loaded.
* **Servable gate**: `InfraValidator` serves a blessed candidate in a throwaway `mlops serve` and
  calls every signature over REST and gRPC with rows of the span; `AtomicPusher` pushes nothing
  it could not serve (the reason is in the summary).
* The last node's log ends with the run summary (span, rows, metrics, blessing, push).
* `report_metrics` (a teardown: it runs whatever the nodes did and never changes the run's state)
  pushes the run's outcome and metrics to the Pushgateway, which the alert rules read
  (monitoring/rules/); without a monitoring stack it says so and does nothing.
* **Assets**: `SpanCheck` and `CsvExampleGen` read `{SPAN_ASSET.name}` ({SPAN_ASSET.uri}); a span that
  passes `DriftValidator` is an event on it (extra: span, run_id). A push by `AtomicPusher` is an event
  on `{MODEL_ASSET.name}` ({MODEL_ASSET.uri}; extra: pushed_version, span, blessed, blessing_reason,
  run_id, kind); a night that pushes nothing adds none. A DAG with `schedule=[Asset("{MODEL_ASSET.name}", ...)]`
  runs after every new model version.

Trigger with a `date` param to run a given span, with `run_fn` (MODULE.FUNCTION) to train your own
model code (the InfraValidator checks what it exports before anything is pushed). Settings: home `{HOME}`, pool `{POOL}`
(1 slot while ML Metadata is SQLite), {RETRIES} retries with exponential back-off.
Roll a bad model back with the `model_rollback` DAG or `mlops rollback`.
""",
) as dag:
    tasks = {}
    for node in MANIFEST["nodes"]:
        operator = TfxPusherOperator if node["id"] == PUSHER else TfxNodeOperator
        tasks[node["id"]] = operator(
            task_id=node["id"],
            bash_command=node_command(node["id"]),
            tfx_run_id=TFX_RUN_ID,
            span=SPAN,
            execution_timeout=TIMEOUTS.get(node["id"], DEFAULT_TIMEOUT),
            doc_md=f"TFX node `{node['id']}` ({node['kind']}); upstream: {', '.join(node['upstream']) or 'none'}",
            **node_assets(node["id"]),
        )
    for node in MANIFEST["nodes"]:
        for upstream in node["upstream"]:
            tasks[upstream] >> tasks[node["id"]]
    # A teardown runs whatever the nodes did and does not decide the DAG run's state (a failed
    # node still fails the run): it pushes the run's outcome to the Pushgateway for the alerts.
    report = MlopsBashOperator(
        task_id=REPORT_TASK,
        bash_command=" ".join(shlex.quote(part) for part in [MLOPS, "--home", HOME, "summary", "--push-metrics"])
        + f' --run-id "{TFX_RUN_ID}"',
        pool="default_pool",  # reads ML Metadata only
        retries=0,
        execution_timeout=dt.timedelta(minutes=10),
        doc_md="Pushes the run's outcome (success, failed, blocked, not blessed), its data-gate and evaluation "
        "metrics to the Pushgateway, read from ML Metadata; prints the run summary.",
    )
    list(tasks.values()) >> report
    report.as_teardown()
