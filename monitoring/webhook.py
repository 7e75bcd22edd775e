"""The alert webhook: Alertmanager's notifications in, an audited `model_rollback` DAG run out.

    python -m monitoring.webhook --host 127.0.0.1 --port P --secret-file F --home HOME [--auto-rollback]

A ThreadingHTTPServer (standard library only; it imports no `pipelines` or `components`, the layer
rule) with two endpoints:

    GET  /-/ready   200 {"status": "ready"} (no authentication)
    POST /alerts    Alertmanager's webhook payload (version 4); needs `Authorization: Bearer <secret>`,
                    the secret file's content (stripped). 401 {"error": ...} without it or with a
                    wrong one, 400 {"error": ...} for a body that is not a JSON payload with an
                    `alerts` list, else {"decisions": [...]}, one per alert (status: below).

What it does with each alert, in order; the first rule that applies is the alert's decision:

| decision            | when |
|---------------------|------|
| ignored-alertname   | not ServingErrorRateHigh or ServingLatencyP99High |
| ignored-resolved    | its status is not `firing` (a resolved alert rolls nothing back) |
| ignored-no-version  | no integer `version` label (the rollback needs the version it replaces) |
| ignored-model       | its `model` label names another model than --model (taxi) |
| already-triggered   | this alert (fingerprint + startsAt) was handled before: no Airflow call |
| error               | `mlops models list --json` failed, or does not know the version |
| skipped-not-nightly | the version is a rollback's (or copied in by hand): "--previous" from there would |
|                     | push again the model a rollback removed; a person decides |
| skipped-old-version | pushed more than --max-age-hours (24) ago: a model that served well that long is |
|                     | not what broke |
| skipped-off         | automatic rollback is off (no --auto-rollback): logs "would roll back ..." |
| triggered           | a `model_rollback` DAG run was created |
| already-triggered   | Airflow answered 409: the same DAG run id exists (the alert was resent) |
| error               | Airflow is not running, refused the login, or refused the run |

The version's pushes come from the project's own CLI, run in a subprocess (`<mlops> --home HOME
models list --json`; `<mlops>` is $MLOPS_BIN, else HOME/.venv/bin/mlops, else the `mlops` beside
this Python), never from importing the pipeline code.

The trigger: Airflow's URL is the `url` of HOME/var/airflow/run/services.json (what `make up`
writes); a token comes from `POST {url}/auth/token` as `admin` with the password in
HOME/var/airflow/simple_auth_manager_passwords.json.generated; then `POST
{url}/api/v2/dags/model_rollback/dagRuns` with `logical_date: null`, the DAG run id
`alert__<alertname>__<fingerprint>__<startsAt, compact UTC>` and the conf
`{"reason": ..., "requested_by": "alertmanager", "trigger": "alert", "only_if_serving": V}`.
The rollback it runs (`mlops rollback --previous --trigger alert --only-if-serving V`) rolls back
only while V is still the served version, so a late alert, or a second alert for the same
version, does nothing. A paused `model_rollback` DAG (DAGs start paused) is unpaused first: it has
no schedule, so unpausing only lets triggered runs run.

Idempotence, twice over: a resent alert has the same fingerprint and startsAt, hence the same DAG
run id, which Airflow refuses with 409 (counted as already triggered); and the webhook keeps the
ids it triggered in HOME/var/monitoring/webhook/handled.json, so a resend does not even reach
Airflow. Every decision is one line on stdout and one JSON line in
HOME/var/monitoring/webhook/decisions.jsonl (time, alert, decision, reason, dag_run_id).

Status code of the answer, and why: 200, except 503 when an alert could not be handled because
Airflow is not reachable (not running, connection refused, a 5xx). Alertmanager retries a
notification that got a 5xx (with backoff, within its notify timeout) and does not retry a 2xx or
4xx. A rollback that waits for the next repeat_interval (4 h by default) would come far too late,
and retrying is safe: alerts already handled in the batch answer "already-triggered" without
calling Airflow, Airflow's 409 guards the DAG run id, and `only_if_serving` guards the rollback
itself. Problems a retry cannot fix (an unknown version, an alert with no version, Airflow
refusing the run) answer 200 with decision "error", so Alertmanager does not hammer.

Requests are handled one at a time (a lock): two copies of the same alert arriving together still
trigger one DAG run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from serving.files import write_atomic
from serving.net import http

ALERTNAMES = ("ServingErrorRateHigh", "ServingLatencyP99High")
ROLLBACK_DAG = "model_rollback"
REQUESTED_BY = "alertmanager"
ADMIN = "admin"
DEFAULT_MODEL = "taxi"
DEFAULT_MAX_AGE_HOURS = 24.0
MAX_BODY = 4 * 1024 * 1024
MLOPS_TIMEOUT = 120.0
AIRFLOW_TIMEOUT = 15.0
ENABLE_HINT = "automatic rollback is off: make up AUTO_ROLLBACK=1"
KEEP_HANDLED = dt.timedelta(days=30)  # how long handled.json remembers a triggered alert

TRIGGERED = "triggered"
ALREADY_TRIGGERED = "already-triggered"
SKIPPED_OLD_VERSION = "skipped-old-version"
SKIPPED_NOT_NIGHTLY = "skipped-not-nightly"
SKIPPED_OFF = "skipped-off"
IGNORED_ALERTNAME = "ignored-alertname"
IGNORED_RESOLVED = "ignored-resolved"
IGNORED_NO_VERSION = "ignored-no-version"
IGNORED_MODEL = "ignored-model"
ERROR = "error"
DECISIONS = (TRIGGERED, ALREADY_TRIGGERED, SKIPPED_OLD_VERSION, SKIPPED_NOT_NIGHTLY, SKIPPED_OFF, IGNORED_ALERTNAME,
             IGNORED_RESOLVED, IGNORED_NO_VERSION, IGNORED_MODEL, ERROR)

RUN_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.~:+-]")  # Airflow's allowed_run_id_pattern


# ----------------------------------------------------------------------------------- the home's files


def state_dir(home: Path) -> Path:
    return Path(home) / "var" / "monitoring" / "webhook"


def decisions_file(home: Path) -> Path:
    return state_dir(home) / "decisions.jsonl"


def handled_file(home: Path) -> Path:
    return state_dir(home) / "handled.json"


def airflow_state_file(home: Path) -> Path:
    """What `make up` writes (pipelines/services.py): the running Airflow's port and URL."""
    return Path(home) / "var" / "airflow" / "run" / "services.json"


def airflow_password_file(home: Path) -> Path:
    """The SimpleAuthManager's generated admin password (pipelines/services.py password_file)."""
    return Path(home) / "var" / "airflow" / "simple_auth_manager_passwords.json.generated"


def mlops_command(home: Path) -> str:
    """$MLOPS_BIN, else the home's .venv/bin/mlops, else the `mlops` beside this Python."""
    if os.environ.get("MLOPS_BIN"):
        return os.environ["MLOPS_BIN"]
    own = Path(home) / ".venv" / "bin" / "mlops"
    return str(own if own.exists() else Path(sys.executable).parent / "mlops")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text() or "null")
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- helpers for callers


def alert(alertname: str = "ServingErrorRateHigh", version: Optional[int] = 1, status: str = "firing",
          model: str = DEFAULT_MODEL, fingerprint: Optional[str] = None, starts_at: Optional[str] = None,
          summary: str = "", value: Optional[str] = None, **labels: str) -> Dict[str, Any]:
    """One alert as Alertmanager sends it (webhook payload version 4). `fingerprint` defaults to a hash
    of the labels, `starts_at` to now (UTC); `value` becomes the `value` annotation."""
    all_labels = {"alertname": alertname, "model": model, **labels}
    if version is not None:
        all_labels["version"] = str(version)
    annotations = {"summary": summary or f"{alertname} on model {model} version {version}"}
    if value is not None:
        annotations["value"] = str(value)
    now = dt.datetime.now(dt.timezone.utc)
    return {
        "status": status,
        "labels": all_labels,
        "annotations": annotations,
        "startsAt": starts_at or now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "endsAt": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "",
        "fingerprint": fingerprint or label_fingerprint(all_labels),
    }


def payload(alerts: List[Dict[str, Any]], receiver: str = "mlops-webhook") -> Dict[str, Any]:
    """Alertmanager's webhook body (version 4) around `alerts`."""
    firing = any(a.get("status") == "firing" for a in alerts)
    common = dict(alerts[0]["labels"]) if len(alerts) == 1 else {}
    return {
        "version": "4",
        "groupKey": "{}:{alertname=~\"Serving.*\"}",
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": {k: v for k, v in common.items() if k == "alertname"},
        "commonLabels": common,
        "commonAnnotations": dict(alerts[0]["annotations"]) if len(alerts) == 1 else {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": alerts,
    }


def send(url: str, secret: Optional[str], alerts: List[Dict[str, Any]], timeout: float = 60.0) -> Tuple[int, Any]:
    """POSTs `alerts` (see `alert()`) as Alertmanager would to the webhook at `url` (e.g.
    http://127.0.0.1:9095, or the full .../alerts URL): (HTTP status, parsed JSON answer).
    `secret` None sends no Authorization header."""
    target = url if url.rstrip("/").endswith("/alerts") else url.rstrip("/") + "/alerts"
    return _http(target, "POST", payload(alerts), bearer=secret, timeout=timeout)


def label_fingerprint(labels: Dict[str, str]) -> str:
    """A stand-in for Alertmanager's fingerprint (16 hex digits of a hash of the sorted labels)."""
    text = "\0".join(f"{k}\0{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _http(url: str, method: str = "GET", body: Any = None, bearer: Optional[str] = None,
          timeout: float = AIRFLOW_TIMEOUT) -> Tuple[int, Any]:
    """(status, parsed JSON or text); status 0 when nothing answers (serving/net.py's client)."""
    return http(url, method, body, token=bearer, timeout=timeout)


# ----------------------------------------------------------------------------------- times and ids


def parse_time(text: str) -> Optional[dt.datetime]:
    """An RFC 3339 time as Alertmanager and the Pusher write it ("...Z", nanoseconds, offsets), in UTC."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", str(text).strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else (zone if ":" in zone else f"{zone[:3]}:{zone[3:]}")
    try:
        parsed = dt.datetime.fromisoformat(f"{base}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None
    return parsed.astimezone(dt.timezone.utc)


def dag_run_id(alertname: str, fingerprint: str, starts_at: str) -> str:
    """`alert__<alertname>__<fingerprint>__<startsAt as 20261206T010203Z>`: the same alert resent
    gives the same id (Airflow refuses a second run with it: 409)."""
    when = parse_time(starts_at)
    compact = when.strftime("%Y%m%dT%H%M%SZ") if when else (re.sub(r"[^0-9A-Za-z]", "", starts_at) or "unknown")
    return RUN_ID_CHARACTERS.sub("_", f"alert__{alertname}__{fingerprint}__{compact}")[:250]


def rollback_conf(reason: str, version: int) -> Dict[str, Any]:
    """The `model_rollback` DAG run's conf for an alert on `version` (the DAG's params)."""
    return {"reason": reason, "requested_by": REQUESTED_BY, "trigger": "alert", "only_if_serving": version}


# ----------------------------------------------------------------------------------- the webhook


class AirflowDown(Exception):
    """Airflow cannot be reached: worth a retry (the webhook answers 503)."""


class Refused(Exception):
    """A problem a retry does not fix (the answer stays 200)."""


class Webhook:
    """The decisions, without the HTTP server: `handle(payload)` -> one decision dict per alert."""

    def __init__(self, home: Path, auto_rollback: bool = False, model: str = DEFAULT_MODEL,
                 max_age_hours: float = DEFAULT_MAX_AGE_HOURS, emit=None):
        self.home = Path(home).resolve()
        self.auto_rollback = auto_rollback
        self.model = model
        self.max_age = dt.timedelta(hours=max_age_hours)
        self.emit = emit or (lambda line: print(line, flush=True))
        self.lock = threading.Lock()

    # -- records

    def handled(self) -> Dict[str, Any]:
        found = _read_json(handled_file(self.home))
        return found if isinstance(found, dict) else {}

    def _remember(self, run_id: str, record: Dict[str, Any]) -> None:
        """Adds a triggered alert to handled.json; forgets those handled more than KEEP_HANDLED ago
        (Alertmanager stops resending a resolved alert long before)."""
        cutoff = dt.datetime.now(dt.timezone.utc) - KEEP_HANDLED
        handled = {key: value for key, value in self.handled().items()
                   if isinstance(value, dict) and (parse_time(str(value.get("time"))) or cutoff) >= cutoff}
        handled[run_id] = record
        state_dir(self.home).mkdir(parents=True, exist_ok=True)
        write_atomic(handled_file(self.home), (json.dumps(handled, indent=2, sort_keys=True) + "\n").encode())

    def _record(self, decision: Dict[str, Any]) -> None:
        alert_info = decision["alert"]
        what = f"{alert_info.get('alertname') or '?'} ({alert_info.get('status') or '?'})"
        if alert_info.get("version"):
            what += f" model {alert_info.get('model') or '?'} version {alert_info['version']}"
        line = f"{decision['time']} {decision['decision']}: {what}: {decision['reason']}"
        if decision.get("dag_run_id"):
            line += f" [dag run {decision['dag_run_id']}]"
        self.emit(line)
        try:
            state_dir(self.home).mkdir(parents=True, exist_ok=True)
            with decisions_file(self.home).open("a") as out:
                out.write(json.dumps(decision, sort_keys=True) + "\n")
        except OSError as err:
            self.emit(f"warning: cannot append to {decisions_file(self.home)}: {err}")

    # -- one payload

    def handle(self, body: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], bool]:
        """(decisions, retry): retry is True when some alert failed because Airflow is unreachable."""
        with self.lock:
            pushes: Dict[str, Any] = {}  # `mlops models list` once per payload, when needed
            decisions = []
            for item in body["alerts"]:
                try:
                    decision = self._decide(item, pushes)
                except Exception as err:  # never let one odd alert take the others (or the server) down
                    decision = self._decision(item if isinstance(item, dict) else {}, ERROR,
                                              f"unexpected {type(err).__name__}: {' '.join(str(err).split())[:300]}")
                self._record(decision)
                decisions.append(decision)
            return decisions, any(d.get("retry") for d in decisions)

    def _decision(self, item: Dict[str, Any], decision: str, reason: str, run_id: str = "",
                  retry: bool = False) -> Dict[str, Any]:
        labels = item.get("labels") if isinstance(item.get("labels"), dict) else {}
        out = {
            "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "alert": {
                "alertname": str(labels.get("alertname") or ""),
                "status": str(item.get("status") or ""),
                "model": str(labels.get("model") or ""),
                "version": str(labels.get("version") or ""),
                "fingerprint": str(item.get("fingerprint") or ""),
                "startsAt": str(item.get("startsAt") or ""),
                "labels": {str(k): str(v) for k, v in labels.items()},
            },
            "decision": decision,
            "reason": reason,
            "dag_run_id": run_id,
        }
        if retry:
            out["retry"] = True
        return out

    def _decide(self, item: Any, pushes: Dict[str, Any]) -> Dict[str, Any]:
        if not isinstance(item, dict):
            return self._decision({}, ERROR, f"not an alert object: {json.dumps(item)[:200]}")
        labels = item.get("labels") if isinstance(item.get("labels"), dict) else {}
        name = str(labels.get("alertname") or "")
        if name not in ALERTNAMES:
            return self._decision(item, IGNORED_ALERTNAME, f"alert {name or '(no alertname)'} does not roll back "
                                                           f"(only {', '.join(ALERTNAMES)} do)")
        if item.get("status") != "firing":
            return self._decision(item, IGNORED_RESOLVED, f"status {item.get('status')!r}, not 'firing': "
                                                          "nothing to roll back")
        try:
            version = int(str(labels.get("version", "")).strip())
            if version < 1:
                raise ValueError
        except ValueError:
            return self._decision(item, IGNORED_NO_VERSION, f"no version label (got {labels.get('version')!r}): "
                                                            "cannot tell which version to roll back")
        model = str(labels.get("model") or self.model)
        if model != self.model:
            return self._decision(item, IGNORED_MODEL, f"model {model!r}: this webhook rolls back {self.model!r} only")
        fingerprint = str(item.get("fingerprint") or label_fingerprint({str(k): str(v) for k, v in labels.items()}))
        starts_at = str(item.get("startsAt") or "")
        run_id = dag_run_id(name, fingerprint, starts_at)
        earlier = self.handled().get(run_id)
        if earlier:
            return self._decision(item, ALREADY_TRIGGERED, f"this alert was handled at {earlier.get('time')} "
                                                           f"({earlier.get('outcome')}); Airflow not called again",
                                  run_id)

        try:
            push = self._push_of(version, pushes)
        except Refused as err:
            return self._decision(item, ERROR, str(err), run_id)
        kind = push.get("kind")
        if kind != "nightly":
            what = "an alert-triggered rollback" if push.get("trigger") == "alert" else f"a {kind}"
            return self._decision(item, SKIPPED_NOT_NIGHTLY, f"version {version} is {what} (by "
                                  f"{push.get('requested_by') or '?'}), not a new nightly model: rolling back from it "
                                  "would push the model that was rolled away from; decide by hand (`mlops rollback`)",
                                  run_id)
        pushed_at = parse_time(str(push.get("pushed_at") or ""))
        if pushed_at is None:
            return self._decision(item, ERROR, f"version {version} has no readable push time "
                                               f"({push.get('pushed_at')!r})", run_id)
        age = dt.datetime.now(dt.timezone.utc) - pushed_at
        hours = age.total_seconds() / 3600
        if age > self.max_age:
            return self._decision(item, SKIPPED_OLD_VERSION, f"version {version} was pushed {hours:.1f} h ago "
                                  f"({pushed_at:%Y-%m-%d %H:%M} UTC), more than {self.max_age.total_seconds() / 3600:g} "
                                  "h: only fresh pushes are rolled back automatically; roll back by hand if the model "
                                  "is to blame (`mlops rollback --previous --reason ...`)", run_id)

        reason = self._reason(item, name, model, version, fingerprint, starts_at)
        if not self.auto_rollback:
            return self._decision(item, SKIPPED_OFF, f"would roll back model {model} version {version} (pushed "
                                  f"{hours:.1f} h ago) to the previous model ({ENABLE_HINT}); reason would be: "
                                  f"{reason}", run_id)
        try:
            outcome, note = self._trigger(run_id, reason, version)
        except AirflowDown as err:
            return self._decision(item, ERROR, f"{err}; answering 503 so that Alertmanager retries", run_id, retry=True)
        except Refused as err:
            return self._decision(item, ERROR, str(err), run_id)
        self._remember(run_id, {"time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                "outcome": outcome, "alertname": name, "version": version,
                                "fingerprint": fingerprint, "startsAt": starts_at})
        if outcome == ALREADY_TRIGGERED:
            return self._decision(item, ALREADY_TRIGGERED, f"Airflow already has DAG run {run_id} (409): the alert "
                                                           "was resent; nothing more", run_id)
        return self._decision(item, TRIGGERED, f"triggered {ROLLBACK_DAG} to roll back model {model} version "
                              f"{version} (only if it is still served){note}: {reason}", run_id)

    @staticmethod
    def _reason(item: Dict[str, Any], name: str, model: str, version: int, fingerprint: str, starts_at: str) -> str:
        annotations = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
        summary = " ".join(str(annotations.get("summary") or annotations.get("description") or "no summary").split())
        value = annotations.get("value")
        detail = f"value {value}, fingerprint {fingerprint}" if value not in (None, "") else f"fingerprint {fingerprint}"
        return f"{name} fired for model {model} version {version} since {starts_at or '?'}: {summary} ({detail})"

    # -- ML Metadata, through the project's CLI

    def _push_of(self, version: int, cache: Dict[str, Any]) -> Dict[str, Any]:
        if "rows" not in cache:
            cache["rows"] = self._models_list()
        rows = cache["rows"]
        match = [row for row in rows if isinstance(row, dict) and row.get("version") == version]
        if not match or match[0].get("kind") == "unrecorded":
            pushed = ", ".join(str(r.get("version")) for r in rows
                               if isinstance(r, dict) and r.get("kind") != "unrecorded") or "none"
            where = "is on disk but" if match else "is"
            raise Refused(f"version {version} {where} not a push ML Metadata records for {self.home} "
                          f"(`mlops models list`; recorded pushes: {pushed}): cannot tell when it was pushed, "
                          "and a rollback needs its history")
        return match[0]

    def _models_list(self) -> List[Dict[str, Any]]:
        command = [mlops_command(self.home), "--home", str(self.home), "models", "list", "--json"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=MLOPS_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise Refused(f"cannot run `{' '.join(command)}`: {err} (set MLOPS_BIN to the project's mlops command)")
        if done.returncode != 0:
            said = " ".join((done.stderr or done.stdout).split())[-300:]
            raise Refused(f"`{' '.join(command)}` exited {done.returncode}: {said}")
        try:
            rows = json.loads(done.stdout)
        except ValueError:
            raise Refused(f"`{' '.join(command)}` printed no JSON: {done.stdout[:200]!r}")
        if not isinstance(rows, list):
            raise Refused(f"`{' '.join(command)}` printed {type(rows).__name__}, not a list of pushes")
        return rows

    # -- Airflow

    def _trigger(self, run_id: str, reason: str, version: int) -> Tuple[str, str]:
        """(TRIGGERED or ALREADY_TRIGGERED, a note); raises AirflowDown or Refused."""
        state = _read_json(airflow_state_file(self.home))
        url = str(state.get("url") or "").rstrip("/") if isinstance(state, dict) else ""
        if not url:
            raise AirflowDown(f"Airflow is not running for {self.home} (make up): no URL in "
                              f"{airflow_state_file(self.home)}")
        passwords = _read_json(airflow_password_file(self.home))
        password = passwords.get(ADMIN) if isinstance(passwords, dict) else None
        if not password:
            raise AirflowDown(f"Airflow is not running for {self.home} (make up): no admin password in "
                              f"{airflow_password_file(self.home)}")
        status, answer = _http(f"{url}/auth/token", "POST", {"username": ADMIN, "password": password})
        if status == 0:
            raise AirflowDown(f"Airflow is not running for {self.home} (make up): nothing answers at {url}")
        if status >= 500:
            raise AirflowDown(f"Airflow at {url} failed the login (HTTP {status})")
        if status not in (200, 201) or not isinstance(answer, dict) or "access_token" not in answer:
            raise Refused(f"Airflow at {url} refused the admin login (HTTP {status}); check "
                          f"{airflow_password_file(self.home)}, or `make down && make up`")
        token = answer["access_token"]

        note = ""
        dag_url = f"{url}/api/v2/dags/{ROLLBACK_DAG}"
        status, dag = _http(dag_url, bearer=token)
        self._check(status, dag, url, f"GET /api/v2/dags/{ROLLBACK_DAG}")
        if isinstance(dag, dict) and dag.get("is_paused"):
            status, answer = _http(f"{dag_url}?update_mask=is_paused", "PATCH", {"is_paused": False}, bearer=token)
            self._check(status, answer, url, f"unpausing {ROLLBACK_DAG}")
            note = f" (unpaused {ROLLBACK_DAG} first: it has no schedule, only triggered runs run)"

        conf = rollback_conf(reason, version)
        status, answer = _http(f"{dag_url}/dagRuns", "POST",
                               {"dag_run_id": run_id, "logical_date": None, "conf": conf}, bearer=token)
        if status == 409:
            return ALREADY_TRIGGERED, note
        self._check(status, answer, url, f"triggering {ROLLBACK_DAG}")
        return TRIGGERED, note

    def _check(self, status: int, answer: Any, url: str, what: str) -> None:
        if status in (200, 201):
            return
        said = answer.get("detail") if isinstance(answer, dict) else answer
        said = " ".join(str(said or "").split())[:300]
        if status == 0:
            raise AirflowDown(f"Airflow is not running for {self.home} (make up): nothing answers at {url} ({what})")
        if status >= 500:
            raise AirflowDown(f"Airflow at {url} failed {what} (HTTP {status}): {said}")
        raise Refused(f"Airflow at {url} refused {what} (HTTP {status}): {said}")


# ----------------------------------------------------------------------------------- HTTP


def make_handler(webhook: Webhook, secret: str):
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlops-alert-webhook"
        protocol_version = "HTTP/1.1"

        def _answer(self, status: int, body: Dict[str, Any]) -> None:
            data = (json.dumps(body, sort_keys=True) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's naming)
            path = self.path.split("?", 1)[0]
            if path in ("/-/ready", "/-/healthy"):
                self._answer(200, {"status": "ready", "auto_rollback": webhook.auto_rollback})
            elif path == "/alerts":
                self._answer(405, {"error": "POST Alertmanager's webhook payload to /alerts"})
            else:
                self._answer(404, {"error": f"no such endpoint {path}: POST /alerts, GET /-/ready"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                self._post()
            except Exception as err:  # the server keeps running whatever a request brings
                webhook.emit(f"error: {type(err).__name__} while handling {self.path}: {err}")
                self._answer(500, {"error": f"{type(err).__name__}: {err}"})

        def _post(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self._answer(413 if length > MAX_BODY else 400,
                             {"error": f"Content-Length must be 0..{MAX_BODY} bytes"})
                return
            raw = self.rfile.read(length) if length else b""
            if path != "/alerts":
                self._answer(404, {"error": f"no such endpoint {path}: POST /alerts, GET /-/ready"})
                return
            given = self.headers.get("Authorization") or ""
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), secret.encode()):
                self._answer(401, {"error": "missing or wrong bearer token: send `Authorization: Bearer <the "
                                            "content of the webhook's --secret-file>`"})
                return
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as err:
                self._answer(400, {"error": f"the body is not JSON: {err}"})
                return
            if not isinstance(body, dict) or not isinstance(body.get("alerts"), list):
                self._answer(400, {"error": "expected Alertmanager's webhook payload: a JSON object with an "
                                            "`alerts` list"})
                return
            decisions, retry = webhook.handle(body)
            self._answer(503 if retry else 200, {"decisions": decisions})

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
            pass  # every decision is logged; request lines would only repeat them

        def log_request(self, code="-", size="-") -> None:
            if str(code) not in ("200",) and not self.path.startswith("/-/"):
                webhook.emit(f"{self.address_string()} {self.command} {self.path} -> {code}")

    return Handler


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    first_paragraph = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.webhook",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"""{first_paragraph}

Receives Alertmanager's webhook notifications (payload version 4) and, for a firing
ServingErrorRateHigh or ServingLatencyP99High alert with a `version` label, rolls that version
back through the `model_rollback` DAG (Airflow 3's REST API) when --auto-rollback is on.

Endpoints:
  GET  /-/ready  200 {{"status": "ready", ...}}; no authentication
  POST /alerts   the payload; needs `Authorization: Bearer <content of --secret-file>`.
                 401 {{"error"}} without it or with a wrong one, 400 {{"error"}} for a body that is not
                 a JSON object with an `alerts` list; else {{"decisions": [...]}} (one per alert) with
                 200, or 503 when Airflow could not be reached (Alertmanager retries a 5xx; resends are
                 idempotent, see below)

Decisions, per alert (first match):
  ignored-alertname   another alert name
  ignored-resolved    status is not firing
  ignored-no-version  no integer `version` label
  ignored-model       a `model` label other than --model
  already-triggered   handled before (HOME/var/monitoring/webhook/handled.json; Airflow not called)
  error               `mlops models list --json` failed or does not know the version
  skipped-not-nightly the version is a rollback's (or copied in by hand): a person decides
  skipped-old-version pushed more than --max-age-hours ago
  skipped-off         no --auto-rollback: logs "would roll back ..." ({ENABLE_HINT})
  triggered           a model_rollback DAG run was created: `mlops rollback --previous --trigger alert
                      --only-if-serving V` (rolls back only while V is still served)
  already-triggered   Airflow answered 409: that DAG run id exists (the alert was resent)
  error               Airflow not running (make up), unreachable (503), or refusing (200)

The push history comes from `<mlops> --home HOME models list --json` in a subprocess (<mlops>:
$MLOPS_BIN, else HOME/.venv/bin/mlops, else the mlops beside this Python). Airflow's URL is the
"url" of HOME/var/airflow/run/services.json (written by `make up`); the token comes from POST
{{url}}/auth/token as admin with the password in
HOME/var/airflow/simple_auth_manager_passwords.json.generated. The DAG run id is
alert__<alertname>__<fingerprint>__<startsAt as YYYYMMDDTHHMMSSZ>, logical_date null, conf
{{"reason", "requested_by": "{REQUESTED_BY}", "trigger": "alert", "only_if_serving": V}}; a paused
model_rollback DAG is unpaused first (it has no schedule).

Every decision is one line on stdout and one JSON line in
HOME/var/monitoring/webhook/decisions.jsonl. SIGTERM or Ctrl-C stops the server.
Exit status: 0 after a stop, 2 when it cannot start (secret file, port).""",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on (0: any free one, printed)")
    parser.add_argument("--secret-file", required=True,
                        help="file whose content (whitespace stripped) is the bearer token Alertmanager sends "
                             "(its webhook_config http_config.authorization.credentials_file)")
    parser.add_argument("--home", default=os.environ.get("MLOPS_HOME") or ".",
                        help="the project home: its ML Metadata (through `mlops models list`), Airflow "
                             "(var/airflow/) and the webhook's records (var/monitoring/webhook/) "
                             "(default: $MLOPS_HOME, else the current directory)")
    parser.add_argument("--auto-rollback", action="store_true",
                        help="trigger model_rollback for a qualifying alert (default: off, only log what it would "
                             "do; `make up AUTO_ROLLBACK=1` turns it on)")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"the model the Pusher pushes and model_rollback rolls back (default: {DEFAULT_MODEL}); "
                             "alerts whose `model` label names another are ignored")
    parser.add_argument("--max-age-hours", type=float, default=DEFAULT_MAX_AGE_HOURS,
                        help="roll back only versions pushed at most this long ago (default: 24)")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        secret = Path(args.secret_file).read_text().strip()
    except OSError as err:
        print(f"error: cannot read the secret file {args.secret_file}: {err.strerror or err} "
              "(fix: write the shared bearer token into it)", file=sys.stderr)
        return 2
    if not secret:
        print(f"error: the secret file {args.secret_file} is empty (fix: write the shared bearer token into it)",
              file=sys.stderr)
        return 2
    webhook = Webhook(Path(args.home), args.auto_rollback, args.model, args.max_age_hours)
    try:
        server = ThreadingHTTPServer((args.host, args.port), make_handler(webhook, secret))
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err} "
              "(fix: pick a free port)", file=sys.stderr)
        return 2
    server.daemon_threads = True

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    webhook.emit(f"alert webhook listening on http://{host}:{port}/alerts for {webhook.home}; automatic rollback "
                 f"{'ON: firing alerts trigger model_rollback' if args.auto_rollback else 'off (' + ENABLE_HINT + ')'}; "
                 f"decisions in {decisions_file(webhook.home)}")
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    webhook.emit("alert webhook stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
