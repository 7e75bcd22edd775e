"""Benchmark (issue 21): the alert loop, from a fault to the alert and from the alert to the rollback.

One project home (3 small seeded days), `make up AUTO_ROLLBACK=1` (Airflow, the model server, the
monitoring stack: Prometheus, Alertmanager, Pushgateway and the alert webhook), three nightly runs
(`mlops run`, every model pushed: auc_floor 0, min_improvement -1, slice_margin 1) so that
versions 1-3 exist. Then, once with production-like intervals (scrape and evaluation every 15 s,
what `make up` uses by default) and once with the test intervals (every 1 s), side by side in
this one run, restarting only the monitoring stack between the two (`mlops monitoring down`,
`mlops monitoring up --interval-seconds N --auto-rollback`); the rules' own `for:` both times:

1. data fault -> alert: `mlops data make-span --fault drift` writes a drifted span, `mlops run`
   runs it (the DriftValidator blocks it, exit 3; the end of the run pushes the data group).
   Measured: run start -> DataGateBlocked firing in Prometheus (/api/v1/alerts), and run end ->
   firing.
2. serving fault -> restored: requests the newest version refuses (400: `{"instances":
   [{"trip_miles": "not a number"}]}` to /v1/models/taxi:predict, --rate per second) until a
   newer version whose model fingerprint equals the previous version's answers (GET
   /v1/models/taxi shows it, a valid :predict answers with its X-Model-Version). Measured: fault
   start -> ServingErrorRateHigh firing, firing -> the first answer of the restored version, and
   the total, split into the stages in between (Prometheus's activeAt; its FiredAt, which the
   webhook receives as the alert's startsAt; the model_rollback DAG run and task times from
   Airflow's REST API and the task log; the new version's directory on disk; the server's first
   answer). The bad traffic stops when restored. The 15 s fault hits
   version 3 (a nightly push); between the two settings a clean span's run pushes a new nightly
   version (the webhook rolls back only nightly versions pushed in the last 24 h), which also
   resolves DataGateBlocked before the 1 s stack starts.
   DataGateBlocked waits its `for:` while the serving fault runs (started after the drifted run
   ended; a 0.25 s poll of Prometheus sees each alert's pending and firing times); the two share
   nothing but the machine.
3. the metrics push per node: p50/p99 of `monitoring.metrics.push` of a node registry to the live
   Pushgateway (--pushes, in this process, a group of its own that is deleted afterwards), the
   first push of a fresh process, and the pushes' share of the bench's nightly run (the last
   seeding `mlops run`, which pushed its own metrics to the same Pushgateway).

Targets: push per node < 50 ms and < 2% of a nightly run; serving fault -> restored <= 90 s with
the production intervals. Writes the "Alert loop (issue 21)" section of bench/RESULTS.md. A missed
target does not fail the benchmark (exit 0); exit 1 only when a step itself failed (then nothing
is written and the temp dir, logs and home, is kept). `make down MLOPS_HOME=<the bench home>`
runs whatever happens. Takes about 15-20 minutes on 2 cores (5 pipeline runs of a small span, `make up`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional

from common import CHILD_ENV, MLOPS, REPO, log, measure, publish, seed_home

from monitoring import metrics
from pipelines import services
from pipelines.http import free_port, http
from serving import home as home_record
from serving.retention import served_versions
from serving.versions import list_versions, model_fingerprint

SECTION = "## Alert loop (issue 21)"
PYTHON = REPO / ".venv" / "bin" / "python"
MAKE = ["make", "--no-print-directory", "-C", str(REPO), "-o", ".venv/.built", "-o", ".venv-airflow/.built"]
MODEL = "taxi"
MANIFEST = json.loads((REPO / "dags" / "taxi_manifest.json").read_text())
PUSH_ALL = ["--auc-floor", "0", "--min-improvement", "-1", "--slice-margin", "1"]  # every night's model is pushed
BAD = {"instances": [{"trip_miles": "not a number"}]}  # every version refuses it: 400
GOOD = {"instances": [dict(pickup_community_area=28, fare=15.25, trip_start_month=9, trip_start_hour=10,
                           trip_start_day=3, trip_start_timestamp=1379414700, pickup_latitude=41.87,
                           pickup_longitude=-87.66, dropoff_latitude=41.92, dropoff_longitude=-87.69,
                           trip_miles=1.2, payment_type="Cash", company="Blue Ribbon Taxi", trip_seconds=840,
                           dropoff_community_area=22)]}
BENCH_PIPELINE = "bench_alert_loop"  # the push-cost samples' own group (deleted afterwards)
RUN_GROUPS = 4  # a successful run's end pushes mlops_run, mlops_data, mlops_eval, mlops_run_success
PUSH_GROUP = 1  # and the AtomicPusher's push pushes mlops_push
PUSH_TARGET_MS = 50.0
SHARE_TARGET = 0.02
RESTORE_TARGET_S = 90.0
PRODUCTION_INTERVAL = 15

COLD_PUSH = """\
import json, sys, time
started = time.perf_counter()
from monitoring import metrics
imported = time.perf_counter()
registry = metrics.node_registry(sys.argv[2], "Trainer", "complete", 1.0)
built = time.perf_counter()
problem = metrics.push(sys.argv[1], metrics.JOB_NODE, {"pipeline": sys.argv[2], "node": "Trainer"}, registry)
pushed = time.perf_counter()
print(json.dumps({"import_s": imported - started, "registry_s": built - imported, "push_s": pushed - built,
                  "problem": problem}))
"""


class StepFailed(Exception):
    """A step of the benchmark did not do what it must (exit 1)."""


def parse_time(text) -> Optional[float]:
    """Epoch seconds of an RFC 3339 time as Prometheus (nanoseconds) and Airflow write it; None if empty."""
    if not text:
        return None
    match = re.fullmatch(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:?\d\d)?", str(text).strip())
    if not match:
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone in (None, "Z") else (zone if ":" in zone else f"{zone[:3]}:{zone[3:]}")
    parsed = dt.datetime.fromisoformat(f"{base}{zone}").timestamp()
    return parsed + (float(f"0.{fraction}") if fraction else 0.0)


def clock(epoch: Optional[float]) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int((epoch % 1) * 10)}" if epoch else "-"


def seconds(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return b - a if a is not None and b is not None else None


def fmt(value: Optional[float], digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------- the home and its stack


class Home:
    def __init__(self, path: Path, logs: Path, env: dict):
        self.path, self.logs, self.env = path, logs, env
        self.models = path / "serving" / "models" / MODEL
        self.steps = 0

    def mlops(self, name: str, *args: str, codes=(0,), echo: Callable[[str], bool] = lambda line: False) -> dict:
        self.steps += 1
        result = measure(name, [str(MLOPS), "--home", str(self.path), *args],
                         self.logs / f"{self.steps:02d}-{name}.log", echo=echo, env=self.env)
        if result["code"] not in codes:
            raise StepFailed(f"`mlops {' '.join(args)}` exited {result['code']} (expected {codes}); log: "
                             f"{self.logs / f'{self.steps:02d}-{name}.log'}")
        return result

    def make(self, name: str, *args: str, env: Optional[dict] = None) -> dict:
        self.steps += 1
        log_file = self.logs / f"{self.steps:02d}-{name}.log"
        result = measure(name, [*MAKE, *args, f"MLOPS_HOME={self.path}"], log_file,
                         echo=lambda line: not re.search(r"password", line, re.I), env=env or self.env)
        if result["code"] != 0:
            raise StepFailed(f"`make {' '.join(args)}` exited {result['code']}; log: {log_file}")
        return result

    def stack(self) -> dict:
        return json.loads(metrics.stack_file(self.path).read_text())

    def prometheus(self) -> str:
        return self.stack()["prometheus"]["url"].rstrip("/")

    def query(self, expr: str) -> list:
        status, answer = http(f"{self.prometheus()}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        if status != 200 or not isinstance(answer, dict) or answer.get("status") != "success":
            raise StepFailed(f"Prometheus query {expr!r} failed: HTTP {status} {str(answer)[:300]}")
        return answer["data"]["result"]

    def rest_url(self) -> str:
        server = home_record.running_model_server(self.path)
        if server is None:
            raise StepFailed(f"no model server runs for {self.path} (make up starts one)")
        return server.rest_url

    def versions(self) -> List[int]:
        return list_versions(self.models)

    def airflow(self) -> tuple:
        url = json.loads(services.state_file(self.path).read_text())["url"].rstrip("/")
        return url, services.token(url, services.admin_password(self.path))

    def pushes(self) -> List[dict]:
        done = subprocess.run([str(MLOPS), "--home", str(self.path), "models", "list", "--json"], env=self.env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise StepFailed(f"mlops models list --json exited {done.returncode}: {done.stderr[-500:]}")
        return json.loads(done.stdout)


def wait_until(what: str, probe: Callable[[], object], timeout: float, every: float = 0.5,
               progress: Optional[Callable[[float], str]] = None, progress_every: float = 30.0):
    """`probe()` until it returns something truthy, with progress lines every `progress_every` s;
    StepFailed after `timeout`."""
    started = time.monotonic()
    next_line = started + progress_every
    while True:
        found = probe()
        if found:
            return found
        now = time.monotonic()
        if now - started > timeout:
            raise StepFailed(f"{what}: not within {timeout:.0f}s")
        if now >= next_line:
            log(f"  waiting for {what}: {now - started:.0f}s{': ' + progress(now - started) if progress else ''}")
            next_line = now + progress_every
        time.sleep(every)


class AlertWatcher(threading.Thread):
    """Polls Prometheus's /api/v1/alerts every 0.25 s; remembers per alert (its labels) its activeAt and when it
    was first seen pending and firing (this machine's clock)."""

    def __init__(self, prometheus: str):
        super().__init__(daemon=True, name="alert-watcher")
        self.url = f"{prometheus}/api/v1/alerts"
        self.seen: Dict[tuple, dict] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.errors = 0

    def run(self) -> None:
        while not self.stopped.is_set():
            status, answer = http(self.url, timeout=5.0)
            now = time.time()
            if status == 200 and isinstance(answer, dict):
                with self.lock:
                    for alert in answer["data"]["alerts"]:
                        key = tuple(sorted(alert["labels"].items()))
                        record = self.seen.setdefault(key, {"labels": alert["labels"], "active_at": None,
                                                            "pending_seen": None, "firing_seen": None})
                        active_at = parse_time(alert.get("activeAt"))
                        if record["active_at"] is None or (active_at and active_at > record["active_at"] + 1
                                                           and record["firing_seen"] is None):
                            record["active_at"] = active_at
                        field = "firing_seen" if alert["state"] == "firing" else "pending_seen"
                        if record[field] is None:
                            record[field] = now
            else:
                self.errors += 1
            self.stopped.wait(0.25)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)

    def find(self, alertname: str, since: float, match: Callable[[dict], bool] = lambda labels: True,
             state: str = "firing") -> Optional[dict]:
        """The earliest alert `alertname` active since `since` (epoch) and seen in `state`."""
        with self.lock:
            found = [dict(r) for r in self.seen.values() if r["labels"].get("alertname") == alertname
                     and match(r["labels"]) and (r["active_at"] or 0) >= since - 1.0
                     and r[f"{state}_seen"] is not None]
        return min(found, key=lambda r: r[f"{state}_seen"]) if found else None


class Traffic(threading.Thread):
    """Requests the model refuses (400), `rate` a second, until stopped; counts the answers' status codes."""

    def __init__(self, rest_url: str, rate: float):
        super().__init__(daemon=True, name="bad-traffic")
        self.url = f"{rest_url}/v1/models/{MODEL}:predict"
        self.rate = rate
        self.codes: Counter = Counter()
        self.first: Optional[float] = None
        self.last: Optional[float] = None
        self.stopped = threading.Event()

    def run(self) -> None:
        body = json.dumps(BAD).encode()
        started, sent = time.monotonic(), 0
        while not self.stopped.is_set():
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            at = time.time()
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                    code = response.status
            except urllib.error.HTTPError as err:
                err.read()
                code = err.code
            except (urllib.error.URLError, OSError):
                code = 0
            self.first = self.first or at
            self.last = at
            self.codes[code] += 1
            sent += 1
            delay = started + sent / self.rate - time.monotonic()
            if delay > 0:
                self.stopped.wait(delay)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def answered_by(rest_url: str) -> Optional[int]:
    """The version that answers a valid :predict (its X-Model-Version header), None when none does."""
    request = urllib.request.Request(f"{rest_url}/v1/models/{MODEL}:predict", data=json.dumps(GOOD).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            header = response.headers.get("X-Model-Version")
            return int(header) if response.status == 200 and header else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------- the measurements


def data_fault_start(home: Home, day: str, args) -> dict:
    """Writes a drifted span and runs it (blocked: exit 3); the alert is awaited later (data_fault_finish)."""
    home.mlops(f"make-span-drift-{day}", "data", "make-span", "--date", day, "--fault", "drift", "--rows",
               str(args.rows))
    started = time.time()
    run = home.mlops(f"run-drift-{day}", "run", "--date", day, "--train-steps", str(args.train_steps),
                     "--eval-steps", str(args.eval_steps), *PUSH_ALL, codes=(3,),
                     echo=lambda line: "blocked" in line or "warning" in line)
    return dict(day=day, start=started, end=started + run["seconds"], run_s=run["seconds"])


def data_fault_finish(home: Home, watcher: AlertWatcher, fault: dict, interval: int, timeout: float) -> dict:
    def state(_elapsed) -> str:
        pending = watcher.find("DataGateBlocked", fault["start"], state="pending")
        return (f"pending since {clock(pending['active_at'])} (for: {rule_for('DataGateBlocked')})" if pending
                else f"not pending yet ({interval}s intervals)")

    alert = wait_until(f"DataGateBlocked firing ({interval}s intervals)",
                       lambda: watcher.find("DataGateBlocked", fault["start"]), timeout, progress=state)
    fired = fired_at(home, "DataGateBlocked", fault["start"]) or alert["firing_seen"]
    log(f"DataGateBlocked firing ({interval}s): feature {alert['labels'].get('feature')}, baseline "
        f"{alert['labels'].get('baseline')}, {fired - fault['start']:.1f}s after the run started, "
        f"{fired - fault['end']:.1f}s after it ended")
    return dict(fault, active_at=alert["active_at"], firing=fired, firing_seen=alert["firing_seen"],
                labels=alert["labels"])


def fired_at(home: Home, alertname: str, since: float, timeout: float = 15.0) -> Optional[float]:
    """When Prometheus fired `alertname` (its FiredAt, sent as the alert's startsAt), from Alertmanager's API:
    the earliest since `since`; None if Alertmanager has none within `timeout`."""
    url = home.stack()["alertmanager"]["url"].rstrip("/")
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})

    def earliest():
        status, answer = http(f"{url}/api/v2/alerts?{query}")
        times = [parse_time(a.get("startsAt")) for a in answer] if status == 200 and isinstance(answer, list) else []
        times = [t for t in times if t and t >= since - 1.0]
        return min(times) if times else None

    try:
        return wait_until(f"{alertname} in Alertmanager", earliest, timeout)
    except StepFailed:
        return None


def serving_fault(home: Home, watcher: AlertWatcher, interval: int, args) -> dict:
    """Bad requests to the newest version until the rolled-back model answers; the stages' times."""
    before = home.versions()
    if len(before) < 2:
        raise StepFailed(f"need 2 pushed versions for a rollback, {home.models} has {before}")
    bad, previous = before[-1], before[-2]
    rest_url = home.rest_url()
    wait_until(f"the server serving version {bad}", lambda: max(served_versions(rest_url, MODEL) or {0}) == bad, 60)
    rows = {row["version"]: row for row in home.pushes()}
    if (rows.get(bad) or {}).get("kind") != "nightly":
        raise StepFailed(f"version {bad} is not a nightly push ({rows.get(bad)}): the webhook would not roll it back")
    previous_fingerprint = model_fingerprint(home.models / str(previous))
    log(f"serving fault ({interval}s intervals): {args.rate:g} requests/s refused (400) by version {bad}; "
        f"expecting a new version with the model of version {previous}")
    traffic = Traffic(rest_url, args.rate)
    traffic.start()
    on_disk: Dict[int, float] = {}
    restored = None

    def state(_elapsed) -> str:
        match = lambda labels: labels.get("version") == str(bad)  # noqa: E731
        firing = watcher.find("ServingErrorRateHigh", traffic.first or time.time(), match)
        pending = watcher.find("ServingErrorRateHigh", traffic.first or time.time(), match, state="pending")
        alert = "firing" if firing else ("pending" if pending else "not pending yet")
        return (f"ServingErrorRateHigh {alert}; {sum(traffic.codes.values())} requests sent "
                f"({dict(traffic.codes)}); new versions on disk: {sorted(on_disk) or 'none'}")

    def probe():
        nonlocal restored
        now = time.time()
        for version in home.versions():
            if version > bad and version not in on_disk:
                on_disk[version] = now
                log(f"  version {version} on disk ({now - traffic.first:.1f}s after the fault started)")
        if not on_disk:
            return None
        try:
            available = served_versions(rest_url, MODEL, timeout=2.0)
        except (OSError, ValueError):
            return None
        if not available or max(available) <= bad:
            return None
        newest = max(available)
        if answered_by(rest_url) == newest:
            restored = newest
            return time.time()
        return None

    try:
        answered = wait_until(f"a restored version answering ({interval}s intervals)", probe, args.serving_timeout,
                              every=0.1, progress=state, progress_every=15.0)
    except StepFailed as err:
        raise StepFailed(f"{err}; {state(0)}; webhook decisions: {decisions(home)[-3:]}") from None
    finally:
        traffic.stop()
    fault = traffic.first
    log(f"version {restored} answers {answered - fault:.1f}s after the fault started; bad traffic stopped "
        f"({sum(traffic.codes.values())} requests: {dict(traffic.codes)})")
    if model_fingerprint(home.models / str(restored)) != previous_fingerprint:
        raise StepFailed(f"version {restored} does not hold the model of version {previous}")
    alert = watcher.find("ServingErrorRateHigh", fault, lambda labels: labels.get("version") == str(bad))
    if alert is None:
        raise StepFailed(f"version {restored} serves, but ServingErrorRateHigh for version {bad} was never seen firing")
    triggered = [d for d in decisions(home) if d.get("decision") == "triggered"
                 and d.get("alert", {}).get("version") == str(bad)]
    if not triggered:
        raise StepFailed(f"no `triggered` decision of the webhook for version {bad}: {decisions(home)[-3:]}")
    run_id = triggered[0]["dag_run_id"]
    airflow = rollback_run(home, run_id)
    command_start = rollback_command_start(home, run_id)
    push = {row["version"]: row for row in home.pushes()}.get(restored) or {}
    if push.get("kind") != "rollback" or push.get("trigger") != "alert":
        raise StepFailed(f"version {restored} is not an alert-triggered rollback: {push}")
    return dict(interval=interval, bad=bad, previous=previous, restored=restored, fault=fault,
                active_at=alert["active_at"], pending_seen=alert["pending_seen"], firing_seen=alert["firing_seen"],
                firing=parse_time(triggered[0]["alert"].get("startsAt")) or alert["firing_seen"],
                command_start=command_start,
                decision_time=parse_time(triggered[0]["time"]), run_id=run_id, on_disk=on_disk[restored],
                answered=answered, codes=dict(traffic.codes), last_bad=traffic.last,
                pushed_at=parse_time(push.get("pushed_at")), **airflow)


def decisions(home: Home) -> List[dict]:
    path = home.path / "var" / "monitoring" / "webhook" / "decisions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rollback_run(home: Home, run_id: str) -> dict:
    """The model_rollback DAG run's and its task's times (Airflow's REST API), once the run has ended."""
    url, token = home.airflow()
    base = f"{url}/api/v2/dags/model_rollback/dagRuns/{urllib.parse.quote(run_id, safe='')}"

    def ended():
        status, run = http(base, token=token)
        return run if status == 200 and isinstance(run, dict) and run.get("state") in ("success", "failed") else None

    run = wait_until(f"DAG run {run_id} to end", ended, 180, every=1.0)
    status, answer = http(f"{base}/taskInstances", token=token)
    if status != 200:
        raise StepFailed(f"task instances of {run_id}: HTTP {status} {str(answer)[:300]}")
    [task] = [t for t in answer["task_instances"] if t["task_id"] == "rollback"]
    return dict(dag_state=run["state"], dag_queued=parse_time(run.get("queued_at")),
                dag_start=parse_time(run.get("start_date")), dag_end=parse_time(run.get("end_date")),
                task_queued=parse_time(task.get("queued_when")), task_start=parse_time(task.get("start_date")),
                task_end=parse_time(task.get("end_date")))


def rollback_command_start(home: Home, run_id: str) -> Optional[float]:
    """When the rollback task started its command (`Running command:` in the Airflow task log)."""
    path = (home.path / "var" / "airflow" / "logs" / "dag_id=model_rollback" / f"run_id={run_id}" / "task_id=rollback"
            / "attempt=1.log")
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if str(record.get("event", "")).startswith("Running command"):
            return parse_time(record.get("timestamp"))
    return None


def push_cost(home: Home, count: int) -> dict:
    """p50/p99 of metrics.push of a node registry to the live Pushgateway, here and in a fresh process."""
    url = metrics.pushgateway_url(home.path)
    if not url:
        raise StepFailed("no Pushgateway in the home's stack.json")
    key = {"pipeline": BENCH_PIPELINE, "node": "Trainer"}
    build = []
    registry = None
    for _ in range(20):
        started = time.perf_counter()
        registry = metrics.node_registry(BENCH_PIPELINE, "Trainer", "complete", 12.3)
        build.append(time.perf_counter() - started)
    problem = metrics.push(url, metrics.JOB_NODE, key, registry)  # warm-up: the lazy import, the first connection
    if problem:
        raise StepFailed(problem)
    samples = []
    log(f"push cost: {count} pushes of a node registry to {url}")
    for _ in range(count):
        started = time.perf_counter()
        problem = metrics.push(url, metrics.JOB_NODE, key, registry)
        samples.append(time.perf_counter() - started)
        if problem:
            raise StepFailed(problem)
    cold = []
    for _ in range(3):
        done = subprocess.run([str(PYTHON), "-c", COLD_PUSH, url, BENCH_PIPELINE], env=home.env, capture_output=True,
                              text=True, timeout=120)
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        if done.returncode != 0 or answer["problem"]:
            raise StepFailed(f"push from a fresh process failed: {done.stderr[-300:]} {answer}")
        cold.append(answer)
    from prometheus_client import delete_from_gateway

    delete_from_gateway(url, job=metrics.JOB_NODE, grouping_key=key, timeout=metrics.PUSH_TIMEOUT)
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return dict(count=count, p50=statistics.median(samples), p99=p99,
                max=samples[-1], mean=statistics.fmean(samples), build=statistics.median(build),
                cold_push=statistics.median(c["push_s"] for c in cold),
                cold_import=statistics.median(c["import_s"] for c in cold))


def node_groups_on_pushgateway(home: Home) -> int:
    """Node groups of pipeline taxi the Pushgateway holds (the nightly runs pushed them)."""
    status, answer = http(f"{metrics.pushgateway_url(home.path)}/api/v1/metrics")
    if status != 200 or not isinstance(answer, dict):
        return 0
    return len({g["labels"].get("node") for g in answer.get("data", [])
                if g["labels"].get("job") == metrics.JOB_NODE and g["labels"].get("pipeline") == MODEL})


def models_list_seconds(home: Home, repeats: int = 3) -> float:
    """What the webhook runs for every alert that gets that far: `mlops models list --json`."""
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        home.pushes()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def restart_monitoring(home: Home, interval: int) -> None:
    home.mlops("monitoring-down", "monitoring", "down", echo=lambda line: True)
    home.mlops(f"monitoring-up-{interval}s", "monitoring", "up", "--interval-seconds", str(interval),
               "--auto-rollback", echo=lambda line: True)
    wait_for_scrapes(home, interval)


def wait_for_scrapes(home: Home, interval: int) -> None:
    def scraped():
        try:
            return all([float(r["value"][1]) for r in home.query(f'up{{job="{job}"}}')] == [1.0]
                       for job in ("pushgateway", "model_server"))
        except StepFailed:
            return False

    wait_until(f"Prometheus scraping the Pushgateway and the model server ({interval}s)", scraped, 60 + 3 * interval)


# ----------------------------------------------------------------------------------- the report


def rule_for(alertname: str) -> str:
    """The `for:` of an alert rule in monitoring/rules/*.yml (as written there)."""
    import yaml

    for path in sorted((REPO / "monitoring" / "rules").glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                if rule.get("alert") == alertname:
                    return str(rule.get("for") or "0s")
    return "?"


def render(args, r: dict, load: tuple) -> str:
    data_for, serving_for = rule_for("DataGateBlocked"), rule_for("ServingErrorRateHigh")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ok = lambda good: "met" if good else "**MISSED**"  # noqa: E731
    intervals = [s["interval"] for s in r["settings"]]
    by = {s["interval"]: s for s in r["settings"]}
    head = " | ".join(f"{i} s intervals" for i in intervals)
    dashes = "|".join("---" for _ in intervals)
    push = r["push"]
    nodes = len(MANIFEST["nodes"])
    nightly = r["nightly_s"][-1]
    share_nodes = nodes * push["p50"] / nightly
    pushes_per_run = nodes + RUN_GROUPS + PUSH_GROUP
    share_all = pushes_per_run * push["p50"] / nightly

    def row(label: str, value: Callable[[dict], Optional[float]], why: str, digits: int = 1) -> str:
        return f"| {label} | " + " | ".join(fmt(value(by[i]), digits) for i in intervals) + f" | {why} |"

    s = lambda setting: setting["serving"]  # noqa: E731
    d = lambda setting: setting["data"]  # noqa: E731
    production = by.get(PRODUCTION_INTERVAL)
    restore_prod = (s(production)["answered"] - s(production)["fault"]) if production else None
    lines = [
        SECTION, "",
        f"Date: {dt.datetime.now().isoformat(timespec='minutes')}. Machine: {os.cpu_count()} CPUs, {mem:.1f} GiB RAM; "
        f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. One run; other work may have shared "
        "the machine, so treat single-run seconds as +-10-20%, and each serving fault is one sample of a process "
        "whose scrape/evaluation phase is random (ranges below).",
        f"One home, {args.rows} rows per span, {args.train_steps} train steps, every model pushed (auc_floor 0, "
        "min_improvement -1, slice_margin 1); `make up AUTO_ROLLBACK=1` (Airflow 3 LocalExecutor on SQLite, the model "
        f"server, the monitoring stack at {intervals[0]} s), the model_rollback DAG unpaused beforehand (the webhook "
        "would unpause it at the first alert), 3 nightly `mlops run`s (versions 1-3). Then per setting, only the "
        "monitoring stack restarted in between (`mlops monitoring down`, `mlops monitoring up --interval-seconds N "
        f"--auto-rollback`): a drifted span's run, and {args.rate:g} requests/s that the newest version refuses "
        "(400) until the rolled-back model answers. A clean span's nightly run between the settings pushes a new "
        "nightly version for the second serving fault and resolves DataGateBlocked. The rules' own `for:` "
        f"(DataGateBlocked {data_for}, ServingErrorRateHigh {serving_for}) both times; Alertmanager's timings as "
        "`monitoring/stack.py` sets them (at <= 2 s intervals every route waits 1 s).", "",
        "### Serving fault -> restored", "",
        f"| stage (seconds) | {head} | what sets it |", f"|---|{dashes}|---|",
        f"| faulty version -> restored version (model of) | "
        + " | ".join(f"{s(by[i])['bad']} -> {s(by[i])['restored']} ({s(by[i])['previous']})" for i in intervals)
        + " | the webhook's `mlops rollback --previous --only-if-serving V` |",
        row("fault start -> alert pending (Prometheus activeAt)", lambda x: seconds(s(x)["fault"], s(x)["active_at"]),
            "two scrapes of the new error series (rate() needs two samples) and the next evaluation: 1-3 intervals"),
        row("alert pending -> firing (Prometheus's FiredAt, the alert's startsAt)",
            lambda x: seconds(s(x)["active_at"], s(x)["firing"]),
            f"the rule's `for: {serving_for}`, on evaluation ticks"),
        row("**(a) fault start -> ServingErrorRateHigh firing**", lambda x: seconds(s(x)["fault"], s(x)["firing"]),
            "the two above"),
        row("firing -> model_rollback DAG run created (queued_at)",
            lambda x: seconds(s(x)["firing"], s(x)["dag_queued"]),
            f"Prometheus -> Alertmanager, the rollback route's group_wait (0 s; 1 s at <= 2 s intervals), the webhook: "
            f"`mlops models list --json` ({r['models_list_s']:.1f} s measured alone), Airflow login, trigger"),
        row("DAG run created -> running (start_date)", lambda x: seconds(s(x)["dag_queued"], s(x)["dag_start"]),
            "the Airflow scheduler's loop picks up the new run"),
        row("DAG run running -> rollback task started", lambda x: seconds(s(x)["dag_start"], s(x)["task_start"]),
            "the scheduler queues the task, the LocalExecutor starts the task process"),
        row("task started -> its command running (task log)",
            lambda x: seconds(s(x)["task_start"], s(x)["command_start"]),
            "Airflow's task runner: DAG bundle, parsing model_rollback.py (slow in the executor's first task)"),
        row("command running -> new version directory on disk (0.1 s poll)",
            lambda x: seconds(s(x)["command_start"], s(x)["on_disk"]),
            "`mlops rollback` itself: CLI start, the warm worker's fork, rollback_target, AtomicPusher, ML Metadata"),
        row("version on disk -> its first answer", lambda x: seconds(s(x)["on_disk"], s(x)["answered"]),
            "the model server's directory poll (1 s) and load"),
        row("**(b) firing -> first answer of the restored version**",
            lambda x: seconds(s(x)["firing"], s(x)["answered"]), "the six above"),
        row("**fault start -> restored (total)**", lambda x: seconds(s(x)["fault"], s(x)["answered"]),
            f"target <= {RESTORE_TARGET_S:.0f} s at {PRODUCTION_INTERVAL} s intervals"),
        row("(rollback task ended (Airflow's end_date) relative to the first answer the bench saw)",
            lambda x: seconds(s(x)["answered"], s(x)["task_end"]),
            "about 0: the task waits until the server serves the version (its own poll), then exits"),
        row("(Prometheus firing -> seen firing by the bench's 0.25 s poll of /api/v1/alerts)",
            lambda x: seconds(s(x)["firing"], s(x)["firing_seen"]), "a check of the clocks above"),
        f"| (refused requests sent) | " + " | ".join(str(sum(s(by[i])["codes"].values())) for i in intervals)
        + " | until restored |",
        "",
        f"- serving fault -> restored with {PRODUCTION_INTERVAL} s intervals: **{fmt(restore_prod)} s** (target <= "
        f"{RESTORE_TARGET_S:.0f} s): {ok(restore_prod is not None and restore_prod <= RESTORE_TARGET_S)}"
        if production else f"- no run with {PRODUCTION_INTERVAL} s intervals: the restore target was not measured",
        "", "### Data fault -> alert", "",
        f"| stage (seconds) | {head} | what sets it |", f"|---|{dashes}|---|",
        row("drifted span written, run started -> run ended (blocked, exit 3)",
            lambda x: seconds(d(x)["start"], d(x)["end"]), "the run up to the DriftValidator, then its metrics push"),
        row("run ended -> alert pending (activeAt)", lambda x: seconds(d(x)["end"], d(x)["active_at"]),
            "the next scrape of the Pushgateway and the next evaluation: up to 2 intervals"),
        row("alert pending -> firing (FiredAt, from Alertmanager)",
            lambda x: seconds(d(x)["active_at"], d(x)["firing"]),
            f"the rule's `for: {data_for}`, on evaluation ticks"),
        row("**run start -> DataGateBlocked firing**", lambda x: seconds(d(x)["start"], d(x)["firing"]), "no target"),
        row("**run end -> DataGateBlocked firing**", lambda x: seconds(d(x)["end"], d(x)["firing"]), "no target"),
        "",
        "### Metrics push per node", "",
        "| | value | target |", "|---|---|---|",
        f"| `monitoring.metrics.push` of a node registry to the live Pushgateway, p50 / p99 / max ms ({push['count']} "
        f"pushes, one process) | {push['p50'] * 1000:.1f} / {push['p99'] * 1000:.1f} / {push['max'] * 1000:.1f} | "
        f"p50 < {PUSH_TARGET_MS:.0f} ms: {ok(push['p50'] * 1000 < PUSH_TARGET_MS)} |",
        f"| building the node registry, median ms | {push['build'] * 1000:.2f} | |",
        f"| first push of a fresh process, median of 3 ms (import of monitoring.metrics: "
        f"{push['cold_import'] * 1000:.0f} ms) | {push['cold_push'] * 1000:.1f} | |",
        f"| the bench's nightly runs (`mlops run`, pushing to the same Pushgateway), wall s | "
        f"{' / '.join(f'{x:.1f}' for x in r['nightly_s'])} (the last one is the reference) | |",
        f"| node groups of the pipeline on the Pushgateway after them | {r['node_groups']} of {nodes} nodes | |",
        f"| {nodes} nodes x p50 / nightly run | {share_nodes * 100:.3f}% | |",
        f"| ({nodes} nodes + {RUN_GROUPS} run groups + {PUSH_GROUP} push group) x p50 / nightly run | "
        f"{share_all * 100:.3f}% | < {SHARE_TARGET * 100:.0f}%: {ok(share_all < SHARE_TARGET)} |",
        "", "### Where the time goes", "",
    ]
    lines += where_the_time_goes(by, r, data_for, serving_for)
    lines += [
        "", "Commands (H = the bench's temp home; D1-D3 seeded, D4/D6 drifted, D5 clean):", "", "```",
        f"mlops --home H data seed --days 3 --rows-per-day {args.rows} --end D3",
        "MLOPS_MONITORING_INTERVAL_SECONDS=15 make up MLOPS_HOME=H AIRFLOW_PORT=<free> AUTO_ROLLBACK=1   "
        "# + MLOPS_SERVING_REST_PORT/GRPC_PORT=<free>",
        "mlops --home H airflow unpause --dag model_rollback",
        f"mlops --home H run --date D1|D2|D3 --train-steps {args.train_steps} --eval-steps {args.eval_steps} "
        "--auc-floor 0 --min-improvement -1 --slice-margin 1",
        f"mlops --home H data make-span --date D4 --fault drift; mlops --home H run --date D4 ...   # exit 3",
        f"POST {{\"instances\": [{{\"trip_miles\": \"not a number\"}}]}} to /v1/models/taxi:predict, {args.rate:g}/s, "
        "until a newer version answers",
        "mlops --home H data make-span --date D5 --fault none; mlops --home H run --date D5 ...",
        "mlops --home H monitoring down; mlops --home H monitoring up --interval-seconds 1 --auto-rollback",
        "(D6 drifted, the same two faults)",
        "make down MLOPS_HOME=H",
        "```", "",
    ]
    return "\n".join(lines)


def where_the_time_goes(by: dict, r: dict, data_for: str, serving_for: str) -> List[str]:
    out = []
    for interval, setting in by.items():
        sv = setting["serving"]
        total = sv["answered"] - sv["fault"]
        detect = sv["firing"] - sv["fault"]
        webhook = seconds(sv["firing"], sv["dag_queued"]) or 0
        airflow = seconds(sv["dag_queued"], sv["command_start"]) or 0
        task = seconds(sv["command_start"], sv["on_disk"]) or 0
        reload_ = sv["answered"] - sv["on_disk"]
        runner = fmt(seconds(sv["task_start"], sv["command_start"]))
        share = lambda part: f"{part:.1f} s ({part / total * 100:.0f}%)"  # noqa: E731
        out.append(
            f"- {interval} s intervals, serving fault ({total:.1f} s): detection in Prometheus {share(detect)} "
            f"(pending after {sv['active_at'] - sv['fault']:.1f} s, then `for: {serving_for}`); Alertmanager + "
            f"webhook {share(webhook)}; Airflow scheduling the DAG run and starting its task up to the command "
            f"{share(airflow)}, of which the task runner's start {runner} s; "
            f"the rollback command up to the new version on disk {share(task)}; the server's reload to the first "
            f"answer {share(reload_)}.")
        dt_ = setting["data"]
        out.append(
            f"- {interval} s intervals, data fault ({dt_['firing'] - dt_['start']:.1f} s from the run's start): "
            "the run "
            f"{dt_['end'] - dt_['start']:.1f} s, scrape + evaluation {dt_['active_at'] - dt_['end']:.1f} s, the rule's "
            f"`for: {data_for}` {dt_['firing'] - dt_['active_at']:.1f} s.")
    out.append(
        "- The interval matters for detection only: a new error series needs two scrapes and then an evaluation "
        f"(1-3 intervals: 15-45 s at 15 s, 1-3 s at 1 s) before the `for: {serving_for}` starts, and firing waits "
        "for an evaluation tick. After firing only Alertmanager's wait depends on it (monitoring/stack.py sets every "
        "route's group_wait to 1 s at <= 2 s intervals, so the rollback route's 0 s becomes 1 s); the webhook, "
        "Airflow, the rollback and the reload do not. DataGateBlocked is dominated by its "
        f"`for: {data_for}` at both intervals, plus up to two intervals for the scrape and the evaluation.")
    out.append(
        f"- The webhook's own share is mostly `mlops models list --json` ({r['models_list_s']:.1f} s alone, a Python "
        "start plus ML Metadata), then three Airflow API calls.")
    return out


# ----------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1500, help="rows per span (default: 1500)")
    parser.add_argument("--train-steps", type=int, default=30, help="train steps of every run (default: 30)")
    parser.add_argument("--eval-steps", type=int, default=5, help="Trainer eval steps (default: 5)")
    parser.add_argument("--rate", type=float, default=15.0, help="refused requests per second (default: 15)")
    parser.add_argument("--pushes", type=int, default=200, help="metrics pushes timed (default: 200)")
    parser.add_argument("--intervals", type=int, nargs="+", default=[PRODUCTION_INTERVAL, 1], metavar="SECONDS",
                        help="scrape/evaluation intervals, one setting each, in this order (default: 15 1)")
    parser.add_argument("--end", default=(dt.date.today() - dt.timedelta(days=10)).isoformat(),
                        help="last seeded span D3; D4-D6 follow it (default: 10 days ago)")
    parser.add_argument("--serving-timeout", type=float, default=300.0,
                        help="seconds from the serving fault to a restored answer before the step fails (default: 300)")
    parser.add_argument("--alert-timeout", type=float, default=600.0,
                        help="seconds from a drifted run's end to DataGateBlocked firing before the step fails "
                             "(default: 600; see the rule's `for:` in monitoring/rules/data.yml)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, the home)")
    args = parser.parse_args()
    if not 1 <= len(args.intervals) <= 2 or min(args.intervals) < 1:
        parser.error("--intervals takes one or two whole numbers of seconds >= 1 (one clean span lies between them)")

    for name in (metrics.PUSHGATEWAY_ENV, "MLOPS_HOME"):  # the home's own stack, for the children and for us
        os.environ.pop(name, None)
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-alert-loop-"))
    logs = tmp / "logs"
    logs.mkdir()
    env = {k: v for k, v in CHILD_ENV.items() if k not in (metrics.PUSHGATEWAY_ENV, "MLOPS_HOME")}
    env.update(MLOPS_SERVING_REST_PORT=str(free_port()), MLOPS_SERVING_GRPC_PORT=str(free_port()))
    end = dt.date.fromisoformat(args.end)
    # D1-D3 seeded, D4 drifted, D5 clean, D6 drifted
    days = [(end + dt.timedelta(days=n)).isoformat() for n in range(-2, 4)]
    drift_days, clean_day = [days[3], days[5]], days[4]
    home = Home(tmp / "home", logs, env)
    results: dict = {"settings": []}
    log(f"home {home.path}; logs {logs}; spans {days[0]}..{days[-1]}; intervals {args.intervals}")
    failed = None
    try:
        seed_home(home.path, args.rows, days[2], days=3)
        first = args.intervals[0]
        home.make("make-up", "up", f"AIRFLOW_PORT={free_port()}", "AUTO_ROLLBACK=1",
                  env=dict(env, MLOPS_MONITORING_INTERVAL_SECONDS=str(first)))
        home.mlops("unpause-model-rollback", "airflow", "unpause", "--dag", "model_rollback", echo=lambda line: True)
        steps = ["--train-steps", str(args.train_steps), "--eval-steps", str(args.eval_steps), *PUSH_ALL]
        results["nightly_s"] = []
        for day in days[:3]:
            before = home.versions()
            run = home.mlops(f"run-{day}", "run", "--date", day, *steps,
                             echo=lambda line: line.startswith("[") or "pushed:" in line or "warning" in line)
            if len(home.versions()) <= len(before):
                raise StepFailed(f"the run of {day} pushed no version ({home.versions()})")
            results["nightly_s"].append(run["seconds"])
        results["node_groups"] = node_groups_on_pushgateway(home)
        wait_for_scrapes(home, first)

        for index, interval in enumerate(args.intervals):
            if index:
                # A new nightly version for the next serving fault; its clean span resolves DataGateBlocked.
                before = home.versions()
                home.mlops(f"make-span-clean-{clean_day}", "data", "make-span", "--date", clean_day, "--fault", "none",
                           "--rows", str(args.rows), "--overwrite")
                home.mlops(f"run-clean-{clean_day}", "run", "--date", clean_day, *steps,
                           echo=lambda line: "pushed:" in line or "warning" in line or "blocked" in line)
                if len(home.versions()) <= len(before):
                    raise StepFailed(f"the clean run of {clean_day} pushed no version ({home.versions()})")
                wait_until("DataGateBlocked resolved", lambda: not home.query("ALERTS{alertname=\"DataGateBlocked\"}"),
                           120 + 3 * args.intervals[index - 1], every=1.0)
                restart_monitoring(home, interval)
            log(f"=== setting {index + 1}/{len(args.intervals)}: scrape and evaluation every {interval} s ===")
            watcher = AlertWatcher(home.prometheus())
            watcher.start()
            try:
                data = data_fault_start(home, drift_days[index % 2], args)
                serving = serving_fault(home, watcher, interval, args)
                if index == 0:  # while DataGateBlocked waits its `for:`
                    results["push"] = push_cost(home, args.pushes)
                    results["models_list_s"] = models_list_seconds(home)
                data = data_fault_finish(home, watcher, data, interval, args.alert_timeout)
            finally:
                watcher.stop()
            results["settings"].append(dict(interval=interval, data=data, serving=serving))
    except StepFailed as err:
        failed = str(err)
    except Exception as err:  # noqa: BLE001 -- report, stop the services, exit 1
        import traceback

        traceback.print_exc()
        failed = f"{type(err).__name__}: {err}"
    finally:
        down = subprocess.run([*MAKE, "down", f"MLOPS_HOME={home.path}"], env=env, capture_output=True, text=True,
                              timeout=600)
        (logs / "make-down.log").write_text(down.stdout + down.stderr)
        log(f"make down MLOPS_HOME={home.path}: exit {down.returncode}")
    if failed:
        log(f"step failed: {failed}; RESULTS.md not updated (kept {tmp})")
        return 1
    (logs / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")  # kept with --keep
    publish(args.results, SECTION, render(args, results, load), tmp, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
