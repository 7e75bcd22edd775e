"""What the project's DAG files share: settings, the node operators, the exit codes not to retry,
the Airflow assets.

Not a DAG file (dags/.airflowignore keeps Airflow's parser away from it); the DAG files import it
as `mlops_common` (Airflow puts the DAGs folder on sys.path). Like them it imports only Airflow
and the standard library: TFX lives in another Python environment (docs/architecture.md).

Settings are read from the environment when a DAG file is parsed (all optional):

- MLOPS_HOME                 project home holding data/, var/, schemas/ (default: the repository)
- MLOPS_BIN                  the `mlops` command of the TFX environment (default: <repo>/.venv/bin/mlops)
- MLOPS_DAG_TIMEZONE         time zone of the 02:00 schedule (default: UTC)
- MLOPS_MLMD_POOL            Airflow pool around ML Metadata writers (default: mlmd_writers, 1 slot)
- MLOPS_TASK_RETRIES         retries per node (default: 2)
- MLOPS_RETRY_DELAY_SECONDS  first retry delay; doubles each retry (default: 60)
- MLOPS_MLMD                 ML Metadata store of every task: sqlite:PATH or mysql://USER@HOST:PORT/DATABASE
                             with the password in MLOPS_MLMD_PASSWORD (default: the home's var/metadata.sqlite);
                             tasks inherit both from the Airflow process
- MLOPS_MLMD_CONN_ID         or: an Airflow connection (type mysql: host, port, login, password, schema = the
                             database) that every task turns into MLOPS_MLMD + MLOPS_MLMD_PASSWORD when it runs,
                             so the password lives in Airflow's connection store, not in files or logs

Airflow assets (docs/orchestration.md#airflow-assets), their URIs under the project home:

- SPAN_ASSET  `taxi_span`, file://<home>/data/incoming: read by SpanCheck and CsvExampleGen (inlets);
  an event when a span passes the data gates (the DriftValidator task succeeds), extra
  {"span": "YYYY-MM-DD", "run_id": <TFX run id>}. A blocked span has none.
- MODEL_ASSET `taxi_model`, file://<home>/serving/models/taxi: an event only when a version was
  actually pushed (a nightly push or a rollback), added at run time through the alias
  MODEL_PUSHES; extra: see model_event_extra(). A DAG with `schedule=[MODEL_ASSET]` runs after each.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Asset, AssetAlias
from airflow.sdk.exceptions import AirflowException, AirflowFailException

DAGS_DIR = Path(__file__).resolve().parent
REPO = DAGS_DIR.parent
# The pipeline's shape and the CLI's exit codes, written by `mlops dags manifest` (a test keeps it current).
MANIFEST = json.loads((DAGS_DIR / "taxi_manifest.json").read_text())

HOME = os.environ.get("MLOPS_HOME") or str(REPO)
MLOPS = os.environ.get("MLOPS_BIN") or str(REPO / ".venv" / "bin" / "mlops")
TIMEZONE = os.environ.get("MLOPS_DAG_TIMEZONE") or "UTC"
POOL = os.environ.get("MLOPS_MLMD_POOL") or "mlmd_writers"
RETRIES = int(os.environ.get("MLOPS_TASK_RETRIES") or 2)
RETRY_DELAY = dt.timedelta(seconds=float(os.environ.get("MLOPS_RETRY_DELAY_SECONDS") or 60))
MLMD_CONN_ID = os.environ.get("MLOPS_MLMD_CONN_ID") or ""

# `mlops node run` exit codes that retrying cannot fix (source: pipelines/errors.py, via the manifest).
NO_RETRY_EXIT_CODES = {int(code): why for code, why in MANIFEST["no_retry_exit_codes"].items()}

# ---- Airflow assets: what the nightly DAG reads and what the pushes write. The URIs carry the
# project home, so two homes' spans and models are different assets.
PIPELINE = MANIFEST["pipeline"]  # "taxi": also the served model's name (serving/models/taxi)
HOME_URI = Path(HOME).resolve().as_uri()
SPAN_ASSET = Asset(name=f"{PIPELINE}_span", uri=f"{HOME_URI}/data/incoming")
MODEL_ASSET = Asset(name=f"{PIPELINE}_model", uri=f"{HOME_URI}/serving/models/{PIPELINE}")
# The pushing tasks' outlet: an event on MODEL_ASSET is added at run time only when a version was
# pushed (a not-blessed night, a duplicate model or a rollback that had nothing to do adds none).
MODEL_PUSHES = AssetAlias(name=f"{PIPELINE}_model_pushes")


def model_event_extra(*, kind: str, pushed_version: int, span: Optional[str], blessed: bool,
                      blessing_reason: str, run_id: str, push_reason: str, **more) -> dict:
    """The extra of an event on MODEL_ASSET, the same keys for both kinds of push:

    kind             "nightly" (the nightly DAG's AtomicPusher) or "rollback" (the model_rollback DAG)
    pushed_version   the version directory the push wrote: <MODEL_ASSET uri>/<pushed_version>
    span             YYYY-MM-DD of the span the nightly run trained on; null for a rollback
    blessed          true: only a model the Evaluator blessed is pushed (the DAGs never force a rollback)
    blessing_reason  the GatedEvaluator's reason (nightly); "" for a rollback
    run_id           the TFX run id (ML Metadata's pipeline_run) that pushed
    push_reason      why the Pusher pushed (nightly), or the rollback's reason
    and for rollbacks: model_of_version, replaced_version, requested_by, trigger.
    """
    return {"kind": kind, "pushed_version": int(pushed_version), "span": span or None, "blessed": bool(blessed),
            "blessing_reason": blessing_reason or "", "run_id": run_id, "push_reason": push_reason or "", **more}


def last_json_object(text: str) -> dict:
    """The last JSON object printed in `text` (one line, or indented over several): what an `mlops
    ... --json` command printed, even if something else was printed before it."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if lines[start].startswith("{"):
            try:
                found = json.loads("\n".join(lines[start:]))
            except ValueError:
                continue
            if isinstance(found, dict):
                return found
    raise ValueError(f"no JSON object in the output: {text[-500:]!r}")


def mlmd_environ(conn_id: str = MLMD_CONN_ID) -> dict:
    """MLOPS_MLMD and MLOPS_MLMD_PASSWORD from the Airflow connection `conn_id` ({} without one).
    Read when a task runs, never when a DAG file is parsed."""
    if not conn_id:
        return {}
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as err:  # noqa: BLE001 -- Airflow raises its own not-found type per version
        raise AirflowFailException(
            f"Airflow connection {conn_id!r} (MLOPS_MLMD_CONN_ID, the ML Metadata store) cannot be read: {err}; "
            f"add it: airflow connections add {conn_id} --conn-type mysql --conn-host HOST --conn-port 3306 "
            "--conn-login USER --conn-password ... --conn-schema DATABASE") from err
    if (conn.conn_type or "mysql") != "mysql" or not (conn.host and conn.login and conn.schema):
        raise AirflowFailException(f"Airflow connection {conn_id!r} must be of type mysql with host, login and schema "
                                   f"(the database); it has type {conn.conn_type!r}, host {conn.host!r}, "
                                   f"login {conn.login!r}, schema {conn.schema!r}")
    return {"MLOPS_MLMD": f"mysql://{conn.login}@{conn.host}:{conn.port or 3306}/{conn.schema}",
            "MLOPS_MLMD_PASSWORD": conn.password or ""}


class MlopsBashOperator(BashOperator):
    """A BashOperator running `mlops` commands: with MLOPS_MLMD_CONN_ID set, its command's environment
    names the ML Metadata store of that Airflow connection (password in the environment only)."""

    def get_env(self, context) -> dict:
        env = super().get_env(context)
        env.update(mlmd_environ())
        return env


class TfxNodeOperator(MlopsBashOperator):
    """Runs one `mlops` command (one TFX node); fails without retries when retrying cannot help
    (bad data, bad configuration).

    `tfx_run_id` and `span` (templated, rendered like the command) name the TFX run and the span.
    With SPAN_ASSET among its outlets the task marks the span accepted: Airflow records the event
    when the task succeeds (so a span a data gate blocked gets none), with extra {span, run_id}."""

    template_fields = (*BashOperator.template_fields, "tfx_run_id", "span")
    ui_color = "#e8f0fe"

    def __init__(self, *, tfx_run_id: str = "", span: str = "", **kwargs):
        super().__init__(**kwargs)
        self.tfx_run_id = tfx_run_id
        self.span = span

    def execute(self, context):
        result = self.run_node(context)
        if SPAN_ASSET in self.outlets:
            context["outlet_events"][SPAN_ASSET].extra = {"span": self.span, "run_id": self.tfx_run_id}
            self.log.info("asset %s: span %s accepted by run %s", SPAN_ASSET.name, self.span, self.tfx_run_id)
        return result

    def run_node(self, context):
        try:
            return super().execute(context)
        except AirflowException as err:
            for code, why in NO_RETRY_EXIT_CODES.items():
                if str(err).rstrip(".").endswith(f"exit code {code}"):
                    raise AirflowFailException(
                        f"{self.task_id}: {why}; not retried (the reason is the last line of the log above)"
                    ) from err
            raise


class TfxPusherOperator(TfxNodeOperator):
    """The nightly Pusher node. After it ran, reads the run's summary (`mlops summary --json`, in the
    TFX environment) and, only if this run pushed a version, adds an event on MODEL_ASSET through the
    MODEL_PUSHES outlet (kind "nightly"; extra: model_event_extra).

    "This run pushed" means the summary has a pushed_version and the Pusher's execution in this run
    is `complete`, or `cached` on a retry: a Pusher served from the cache of another run pushed
    nothing now (its PushedModel is an earlier run's), while on a retry of this task the cache hit
    is this run's own earlier try, whose push Airflow did not record because the try failed."""

    SUMMARY_TRIES = 3
    SUMMARY_TIMEOUT = 300

    def __init__(self, **kwargs):
        kwargs.setdefault("outlets", [MODEL_PUSHES])
        super().__init__(**kwargs)

    def execute(self, context):
        result = super().execute(context)
        summary = self.read_summary()
        version, state = summary.get("pushed_version"), summary.get("node_states", {}).get(self.task_id)
        retry = int(getattr(context["ti"], "try_number", 1) or 1) > 1
        if not version or not (state == "complete" or (state == "cached" and retry)):
            why = summary.get("push_reason") or "the Pusher did not push"
            self.log.info("asset %s: no event, nothing pushed by this run (Pusher %s: %s)", MODEL_ASSET.name,
                          state, why if not version else f"version {version} is an earlier run's push")
            return result
        extra = model_event_extra(
            kind="nightly", pushed_version=version, span=summary.get("span") or self.span,
            blessed=bool(summary.get("blessed")), blessing_reason=summary.get("blessing_reason", ""),
            run_id=self.tfx_run_id, push_reason=summary.get("push_reason", ""))
        context["outlet_events"][MODEL_PUSHES].add(MODEL_ASSET, extra=extra)
        self.log.info("asset %s: event for version %s pushed by run %s (span %s)", MODEL_ASSET.name, version,
                      self.tfx_run_id, extra["span"])
        return result

    def read_summary(self) -> dict:
        command = [MLOPS, "--home", HOME, "summary", "--run-id", self.tfx_run_id, "--json"]
        for attempt in range(1, self.SUMMARY_TRIES + 1):
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=self.SUMMARY_TIMEOUT,
                                      env={**os.environ, **mlmd_environ()})
                if done.returncode == 0:
                    return last_json_object(done.stdout)
                problem = f"exit code {done.returncode}: {done.stderr.strip()[-1000:]}"
            except (OSError, subprocess.TimeoutExpired, ValueError) as err:
                problem = f"{type(err).__name__}: {err}"
            self.log.warning("reading the run summary (try %d of %d) failed: %s", attempt, self.SUMMARY_TRIES, problem)
            if attempt < self.SUMMARY_TRIES:
                time.sleep(5 * attempt)
        # The task's retry runs the node again (served from this run's cache) and reads the summary again.
        raise AirflowException(f"{self.task_id}: the node ran, but its run summary could not be read "
                               f"(`{' '.join(command)}`): {problem}")


class RollbackOperator(MlopsBashOperator):
    """Runs `mlops rollback ... --json` (the command in `bash_command` must print its JSON result to
    stdout and `tee` it into "$MLOPS_RESULT_FILE"). When the rollback pushed a version, adds an event
    on MODEL_ASSET through the MODEL_PUSHES outlet (kind "rollback"); a rollback that had nothing to
    do (the model is served already, or the alerting version is no longer served) adds none."""

    RESULT_ENV = "MLOPS_RESULT_FILE"

    def __init__(self, **kwargs):
        kwargs.setdefault("outlets", [MODEL_PUSHES])
        super().__init__(**kwargs)
        self._result_file = ""

    def get_env(self, context) -> dict:
        env = super().get_env(context)
        env[self.RESULT_ENV] = self._result_file
        return env

    def execute(self, context):
        with tempfile.TemporaryDirectory(prefix="mlops-rollback-") as tmp:
            self._result_file = str(Path(tmp) / "result.json")
            result = super().execute(context)
            text = Path(self._result_file).read_text() if Path(self._result_file).exists() else ""
        try:
            done = last_json_object(text)
        except ValueError as err:
            # Retrying would roll back once more: fail at once and say that the rollback itself is done.
            raise AirflowFailException(f"the rollback command succeeded, but its JSON result could not be read, "
                                       f"so no {MODEL_ASSET.name} asset event was added: {err}") from err
        if not done.get("new_version"):
            self.log.info("asset %s: no event, nothing pushed (%s)", MODEL_ASSET.name,
                          ", ".join(f"{k}={v}" for k, v in sorted(done.items())))
            return result
        target, replaced = done.get("target") or {}, done.get("replaced_version")
        extra = model_event_extra(
            kind="rollback", pushed_version=done["new_version"], span=None, blessed=True, blessing_reason="",
            run_id=done.get("run_id", ""), push_reason=done.get("reason", ""),
            model_of_version=target.get("version"), replaced_version=replaced,
            requested_by=done.get("requested_by", ""), trigger=done.get("trigger", ""))
        context["outlet_events"][MODEL_PUSHES].add(MODEL_ASSET, extra=extra)
        self.log.info("rolled back: version %s serves the model of version %s, replacing version %s; asset %s: "
                      "event added", done["new_version"], target.get("version"), replaced, MODEL_ASSET.name)
        return result
