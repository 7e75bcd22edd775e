"""Benchmark (issue 4): what running the pipeline through Airflow costs over running it in-process.

One span, four ways, each in a fresh project home so every full run starts from nothing:

- `local_dag_runner`: TFX's LocalDagRunner over our pipeline (the in-process baseline);
- `mlops run`: our in-process runner (the same Launcher loop, with progress lines);
- Airflow, warm worker: `airflow dags test nightly_retrain` (via `mlops airflow run`), one task
  per node, each node forked from the warm worker;
- Airflow, cold: the same DAG with MLOPS_WARM_WORKER=0, so each task is a fresh Python process.

Each is run twice (full run, then the no-change rerun). Also measured: the per-task start-up
cost (`mlops node run` of a resolver node, cold vs warm) and the DAG files' parse time in the
Airflow environment. Writes the "Airflow overhead (issue 4)" section of bench/RESULTS.md.
Target: Airflow <= 1.3x in-process.

Part `services` (issue 24; its own section, "Server-backed Airflow (issue 24)"): the same span as
users run it on a schedule, through Airflow's long-running services, side by side in one run:

- the SQLite default: `mlops airflow up` (LocalExecutor, Airflow's database and ML Metadata in
  SQLite, the mlmd_writers pool one slot wide);
- the server-backed variant: `mlops airflow up --backend postgres` (Airflow on PostgreSQL, the
  CeleryExecutor with Redis, ML Metadata on MariaDB, the pool 4 slots wide).

Each in a fresh home on free ports: `up` (timed apart), nightly_retrain triggered for the span
through the REST API (then unpaused, as tests/e2e/test_airflow_postgres.py does), waited for, a
second run for the same span (the no-change rerun, another dag_run_id), then `mlops airflow down`,
which runs whatever happens. From the API: each run's start to end, the task instances' durations,
what their overlap saved, the most tasks at once, the time no task ran, queued -> running.
Target: server-backed <= 1.0x the SQLite default on the full run.

`--only overhead` or `--only services` runs one part (default: both). A missed target does not
fail the benchmark (exit 0); exit 1 only when a run itself failed (that part's section is then
not written).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from common import CHILD_ENV, MLOPS, REPO, log, measure, publish_sections, seed_home

from pipelines import airflow_env, db_servers, services
from pipelines.http import free_port, http

SECTION = "## Airflow overhead (issue 4)"
PYTHON = REPO / ".venv" / "bin" / "python"
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
TARGET = 1.3
SERVICES_SECTION = "## Server-backed Airflow (issue 24)"
SERVICES_TARGET = 1.0
BACKENDS = ("sqlite", "postgres")
DAG = airflow_env.NIGHTLY_DAG
RUN_TIMEOUT = 30 * 60
POLL = 0.5  # seconds between the client's looks at the DAG run (its trigger -> success resolution)

LOCAL_DAG_RUNNER = """\
import datetime as dt, sys
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from pipelines.config import PipelineConfig, ProjectPaths
from pipelines.pipeline import create_pipeline
from pipelines.node_runner import ensure_state_dirs, prepare_process_env
prepare_process_env()
home, day, steps, eval_steps = sys.argv[1:5]
config = PipelineConfig.for_project(ProjectPaths.from_env(home), dt.date.fromisoformat(day),
                                    train_steps=int(steps), eval_steps=int(eval_steps)).check()
ensure_state_dirs(config)
LocalDagRunner().run(create_pipeline(config))
"""

PARSE_TIME = """\
import importlib.util, json, sys, time
path = sys.argv[1]
started = time.perf_counter()
import airflow.sdk  # noqa -- what every DAG file pays first
from airflow.providers.standard.operators.bash import BashOperator  # noqa
imported = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
done = time.perf_counter()
print(json.dumps({"airflow_import_s": imported - started, "dag_file_s": done - imported}))
"""


def home_for(tmp: Path, name: str, rows: int, day: str) -> Path:
    home = tmp / name
    seed_home(home, rows, day)
    return home


def node_seconds(lines) -> float:
    """Sum of the seconds the nodes themselves reported (`node X: complete in 1.2s`)."""
    return sum(float(m[1]) for m in (re.search(r"node \S+: \w+ in ([\d.]+)s", l) for l in lines) if m)


def versions_pushed(home: Path) -> int:
    folder = home / "serving" / "models" / "taxi"
    return len([p for p in folder.iterdir() if p.name.isdigit()]) if folder.exists() else 0


def startup_cost(home: Path, day: str, warm: bool, repeats: int, logs: Path) -> list:
    """Wall seconds of `mlops node run` for a resolver node (no real work: start-up only)."""
    env = dict(CHILD_ENV, MLOPS_WARM_WORKER="1" if warm else "0")
    out = []
    for index in range(repeats):
        cmd = [str(MLOPS), "--home", str(home), "node", "run", "--node", "served_model",
               "--run-id", f"bench-startup-{'warm' if warm else 'cold'}-{index}", "--date", day]
        result = measure(f"startup_{'warm' if warm else 'cold'}_{index}", cmd, logs / f"startup-{warm}-{index}.log",
                         echo=lambda l: False, env=env)
        if result["code"] != 0:
            raise SystemExit(f"node run failed: see {logs}")
        out.append(result["seconds"])
    return out


def parse_times(repeats: int) -> dict:
    out = {}
    for dag in ("nightly_retrain", "model_rollback"):
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            proc = subprocess.run([str(AIRFLOW_PYTHON), "-c", PARSE_TIME, str(REPO / "dags" / f"{dag}.py")],
                                  capture_output=True, text=True, check=True)
            total = time.perf_counter() - started
            samples.append(dict(json.loads(proc.stdout.strip().splitlines()[-1]), process_s=total))
        out[dag] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
    return out


def render(args, r: dict, startup: dict, parse: dict, load: tuple) -> str:
    base = r["local_full"]["seconds"]
    base_rerun = r["local_rerun"]["seconds"]

    def row(label, full, rerun):
        return (f"| {label} | {r[full]['seconds']:.1f} | {r[full]['seconds'] / base:.2f}x | "
                f"{r[rerun]['seconds']:.1f} | {r[rerun]['seconds'] / base_rerun:.2f}x | "
                f"{r[full]['rss_mb']:.0f} | {r[rerun]['pushed_new']} |")

    warm_ratio = r["airflow_warm_full"]["seconds"] / base
    cold_ratio = r["airflow_cold_full"]["seconds"] / base
    warm_nodes = node_seconds(r["airflow_warm_full"]["lines"])
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ok = lambda good: "met" if good else "**MISSED**"  # noqa: E731
    cold_med, warm_med = statistics.median(startup["cold"]), statistics.median(startup["warm"])
    return "\n".join([
        SECTION, "",
        f"Date: {dt.datetime.now().isoformat(timespec='minutes')}. Machine: {os.cpu_count()} CPUs, {mem:.1f} GiB RAM; "
        f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. One run of each; other work may have "
        "shared the machine, so treat single-run seconds as +-10-20%.",
        f"Span: {args.rows} rows (seeded), {args.train_steps} train steps, {args.eval_steps} eval steps, Beam "
        "in_memory, SQLite ML Metadata. Each way runs in its own fresh home (full run), then again (no-change rerun). "
        "Airflow runs are `airflow dags test nightly_retrain <span>` (Airflow 3, "
        f"{len(json.loads((REPO / 'dags' / 'taxi_manifest.json').read_text())['nodes'])} tasks, one per TFX node); the "
        "Airflow database is prepared before timing (`mlops airflow init`, once per home).", "",
        "| way | full run s | vs LocalDagRunner | rerun s | vs LocalDagRunner rerun | peak RSS MB (largest process) | rerun pushed? |",
        "|---|---|---|---|---|---|---|",
        row("TFX LocalDagRunner, in-process (baseline)", "local_full", "local_rerun"),
        row("`mlops run`, in-process", "ours_full", "ours_rerun"),
        row("Airflow DAG, warm worker (default)", "airflow_warm_full", "airflow_warm_rerun"),
        row("Airflow DAG, cold process per task", "airflow_cold_full", "airflow_cold_rerun"),
        "",
        f"- Airflow (warm worker) / in-process LocalDagRunner, full run: **{warm_ratio:.2f}x** (target <= {TARGET}x): "
        f"{ok(warm_ratio <= TARGET)}",
        f"- Airflow (cold process per task) / in-process: {cold_ratio:.2f}x, i.e. what the warm worker saves.",
        f"- Airflow warm full run: {warm_nodes:.1f} s inside the nodes (their own timers), "
        f"{r['airflow_warm_full']['seconds'] - warm_nodes:.1f} s outside them (Airflow CLI start, task "
        "transitions, worker start-up, the run summary).",
        "", "Per-task start-up (`mlops node run --node served_model`, a resolver that does no real work; "
        f"median of {len(startup['cold'])}):", "",
        "| | wall s per task |", "|---|---|",
        f"| cold process (Python start + TF/TFX imports + compile) | {cold_med:.2f} |",
        f"| forked from the warm worker | {warm_med:.2f} |",
        "", "DAG parse time in the Airflow environment (fresh Python 3.11 process; median of "
        f"{args.parse_repeats}):", "",
        "| DAG file | import airflow.sdk + BashOperator s | the DAG file itself s | whole process s |",
        "|---|---|---|---|",
        *[f"| {dag} | {p['airflow_import_s']:.2f} | {p['dag_file_s']:.3f} | {p['process_s']:.2f} |"
          for dag, p in parse.items()],
        "", "Commands (H = a fresh temp home per way):", "", "```",
        f"mlops --home H data seed --days 1 --rows-per-day {args.rows} --end {args.day}",
        f"python -c \"$LOCAL_DAG_RUNNER\" H {args.day} {args.train_steps} {args.eval_steps}   # twice",
        f"mlops --home H run --cold --date {args.day} --train-steps {args.train_steps} --eval-steps {args.eval_steps}   # twice",
        f"mlops --home H airflow init; mlops --home H airflow run --date {args.day} --train-steps {args.train_steps} "
        f"--eval-steps {args.eval_steps}   # twice; cold: MLOPS_WARM_WORKER=0",
        "```", "",
    ])


def run_overhead(args, tmp: Path, logs: Path) -> Optional[str]:
    """Part `overhead` (issue 4): its section, or None when a run failed."""
    load = os.getloadavg()
    steps = ["--train-steps", str(args.train_steps), "--eval-steps", str(args.eval_steps)]
    results = {}

    home = home_for(tmp, "local", args.rows, args.day)
    for name in ("local_full", "local_rerun"):
        cmd = [str(PYTHON), "-c", LOCAL_DAG_RUNNER, str(home), args.day, str(args.train_steps), str(args.eval_steps)]
        before = versions_pushed(home)
        results[name] = measure(name, cmd, logs / f"{name}.log", echo=lambda l: False)
        results[name]["pushed_new"] = "yes" if versions_pushed(home) > before else "no"

    home = home_for(tmp, "ours", args.rows, args.day)
    for name in ("ours_full", "ours_rerun"):
        before = versions_pushed(home)
        cmd = [str(MLOPS), "--home", str(home), "run", "--cold", "--date", args.day, *steps]  # in this process
        results[name] = measure(name, cmd, logs / f"{name}.log", echo=lambda l: l.startswith("["))
        results[name]["pushed_new"] = "yes" if versions_pushed(home) > before else "no"

    for mode in ("warm", "cold"):
        home = home_for(tmp, f"airflow_{mode}", args.rows, args.day)
        env = dict(CHILD_ENV, MLOPS_WARM_WORKER="1" if mode == "warm" else "0")
        subprocess.run([str(MLOPS), "--home", str(home), "airflow", "init"], check=True, env=env)
        for run in ("full", "rerun"):
            name = f"airflow_{mode}_{run}"
            before = versions_pushed(home)
            cmd = [str(MLOPS), "--home", str(home), "airflow", "run", "--date", args.day, *steps]
            results[name] = measure(name, cmd, logs / f"{name}.log", echo=lambda l: l.startswith("task "), env=env)
            results[name]["pushed_new"] = "yes" if versions_pushed(home) > before else "no"
        if mode == "warm":
            startup = {"warm": startup_cost(home, args.day, True, args.startup_repeats, logs),
                       "cold": startup_cost(home, args.day, False, args.startup_repeats, logs)}
            subprocess.run([str(MLOPS), "--home", str(home), "worker", "stop"], env=env)

    failed = [name for name, r in results.items() if r["code"] != 0]
    if failed:
        log(f"runs failed: {', '.join(failed)}; its section not written (logs in {tmp})")
        return None
    return render(args, results, startup, parse_times(args.parse_repeats), load)


# ----------------------------------------------------------------------------------- part `services` (issue 24)


class RunFailed(Exception):
    pass


def when(text: Optional[str]) -> Optional[dt.datetime]:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def last_complete_day(now: dt.datetime) -> dt.date:
    """The logical day of the newest due nightly run (as tests/e2e/test_airflow_postgres.py): a run triggered
    for it before unpausing means the scheduler starts no scheduled run of its own beside ours."""
    return (now - dt.timedelta(days=1, hours=2)).date()


class Api:
    """Airflow's REST API as the admin user, with a token renewed when it is refused."""

    def __init__(self, url: str, home: Path):
        self.url, self.home, self.auth = url, home, None

    def __call__(self, path: str, method: str = "GET", body=None) -> Tuple[int, object]:
        for _ in range(2):
            if self.auth is None:
                self.auth = services.token(self.url, services.admin_password(self.home))
            status, answer = http(self.url + path, method, body, token=self.auth, timeout=30.0)
            if status != 401:
                return status, answer
            self.auth = None
        return status, answer


def task_stats(run: dict, tis: List[dict]) -> dict:
    """What the DAG run's task instances say: durations, overlap, the most at once, the time none ran."""
    start, end = when(run.get("start_date")), when(run.get("end_date"))
    wall = (end - start).total_seconds() if start and end else float("nan")
    spans = sorted((when(ti["start_date"]), when(ti["end_date"])) for ti in tis
                   if ti.get("start_date") and ti.get("end_date"))
    durations = sum((b - a).total_seconds() for a, b in spans)
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in events:  # an end before a start at the same instant: no false overlap
        running += step
        most = max(most, running)
    busy, covered_to = 0.0, None
    for a, b in spans:  # the union of the running intervals
        if covered_to is None or a > covered_to:
            busy += (b - a).total_seconds()
            covered_to = b
        elif b > covered_to:
            busy += (b - covered_to).total_seconds()
            covered_to = b
    waits = [(when(ti["start_date"]) - when(ti["queued_when"])).total_seconds() for ti in tis
             if ti.get("start_date") and ti.get("queued_when")]
    first = (spans[0][0] - start).total_seconds() if spans and start else float("nan")
    last = (end - max(b for _, b in spans)).total_seconds() if spans and end else float("nan")
    return dict(wall=wall, tasks=len(spans), durations=durations, saved=durations - wall, most=most,
                idle=wall - busy, queued_median=statistics.median(waits) if waits else float("nan"),
                queued_sum=sum(waits), first_task=first, after_last=last)


def dag_run(api: Api, run_id: str, logical_day: dt.date, conf: dict, unpause: bool) -> dict:
    """Triggers one nightly_retrain run (unpausing the DAG after the first trigger) and waits for it."""
    began = time.monotonic()
    status, answer = api(f"/api/v2/dags/{DAG}/dagRuns", "POST", {
        "dag_run_id": run_id, "logical_date": f"{logical_day.isoformat()}T02:00:00Z", "conf": conf})
    if status != 200:
        raise RunFailed(f"trigger of {run_id}: HTTP {status} {answer}")
    if unpause:
        status, answer = api(f"/api/v2/dags/{DAG}", "PATCH", {"is_paused": False})
        if status != 200:
            raise RunFailed(f"unpause {DAG}: HTTP {status} {answer}")
    run, seen = {}, None
    while time.monotonic() - began < RUN_TIMEOUT:
        status, run = api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}")
        if status == 200 and run.get("state") != seen:
            seen = run.get("state")
            log(f"  {run_id}: {seen} after {time.monotonic() - began:.1f}s")
        if status == 200 and run.get("state") in ("success", "failed"):
            break
        time.sleep(POLL)
    client = time.monotonic() - began
    status, answer = api(f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances?limit=100")
    tis = answer.get("task_instances", []) if status == 200 and isinstance(answer, dict) else []
    return dict(run=run, tis=tis, client=client, state=run.get("state"))


def services_variant(backend: str, args, tmp: Path, logs: Path) -> dict:
    """up, the full run, the rerun, down, in a fresh home; `down` runs whatever happens. An `up` that fails
    (e.g. a port another process took between the check and the bind) is tried once more in a fresh home."""
    conf = {"date": args.day, "train_steps": args.train_steps, "eval_steps": args.eval_steps}
    out = dict(backend=backend, runs={}, error=None, up_failures=[], left={})
    for attempt in (1, 2):
        home = home_for(tmp, f"services_{backend}" + (f"_{attempt}" if attempt > 1 else ""), args.rows, args.day)
        port = free_port()
        env = dict(CHILD_ENV, MLOPS_SERVING_REST_PORT=str(free_port()), MLOPS_SERVING_GRPC_PORT=str(free_port()))
        try:
            cmd = [str(MLOPS), "--home", str(home), "airflow", "up", "--port", str(port)]
            if backend == "postgres":
                cmd += ["--backend", "postgres"]
            out["up"] = measure(f"{backend}_up", cmd, logs / f"{backend}-up-{attempt}.log", env=env,
                                echo=lambda l: l.startswith(("started", "airflow ", "ML Metadata", "error")) or "started in" in l)
            if out["up"]["code"] != 0:
                reason = next((l for l in out["up"]["lines"] if l.startswith("error")), f"exit {out['up']['code']}")
                out["up_failures"].append(reason[:200])
                if attempt == 1:
                    log(f"{backend}: `mlops airflow up` failed ({reason[:200]}); once more in a fresh home")
                    continue  # after `finally` stopped what it started
                raise RunFailed(f"`mlops airflow up` exited {out['up']['code']} twice")
            api = Api(services.base_url(port), home)
            day = last_complete_day(dt.datetime.now(dt.timezone.utc))
            for index, run in enumerate(("full", "rerun")):
                before = versions_pushed(home)
                log(f"{backend}_{run}: trigger {DAG} for span {args.day}")
                result = dag_run(api, f"bench_{backend}_{run}", day - dt.timedelta(days=index), conf, unpause=index == 0)
                result.update(task_stats(result["run"], result["tis"]),
                              pushed_new="yes" if versions_pushed(home) > before else "no")
                out["runs"][run] = result
                (logs / f"{backend}-{run}-task-instances.json").write_text(json.dumps(result["tis"], indent=1))
                log(f"{backend}_{run}: {result['state']}; API {result['wall']:.1f}s, client {result['client']:.1f}s, "
                    f"tasks {result['durations']:.1f}s summed, at most {result['most']} at once, "
                    f"{result['idle']:.1f}s with none running, median queued->running {result['queued_median']:.2f}s")
                for ti in sorted(result["tis"], key=lambda t: t.get("start_date") or ""):
                    print(f"    | {ti['task_id']:28} {ti['state']:8} {ti.get('queued_when') or '-':33} "
                          f"{ti.get('start_date') or '-':33} {ti.get('duration') or 0:7.1f}s", flush=True)
                if result["state"] != "success":
                    failed = [ti["task_id"] for ti in result["tis"] if ti["state"] != "success"]
                    raise RunFailed(f"DAG run bench_{backend}_{run}: {result['state']} (tasks not successful: {failed})")
            out["worker_starts"] = warm_worker_starts(home)
            status, answer = api(f"/api/v2/dags/{DAG}/dagRuns")
            out["other_runs"] = [r["dag_run_id"] for r in (answer or {}).get("dag_runs", [])
                                 if not r["dag_run_id"].startswith("bench_")] if status == 200 else ["(unknown)"]
        except (RunFailed, services.ConfigError) as error:
            out["error"] = str(error)
            log(f"{backend}: FAILED: {error}")
        finally:
            out["down"] = stop_services(home, backend, env, logs, attempt)
            out["left"].update(out["down"]["left"])
        break
    return out


def warm_worker_starts(home: Path) -> int:
    """How many warm workers the home's node tasks started (var/log/worker.log). More than one means a
    task found no worker for the current code: a source file of the project changed during the run."""
    try:
        return (home / "var" / "log" / "worker.log").read_text(errors="replace").count(" ready on ")
    except OSError:
        return 0


def stop_services(home: Path, backend: str, env: dict, logs: Path, attempt: int = 1) -> dict:
    """`mlops airflow down`; if that fails, the same in this process; then checks nothing is left."""
    down = measure(f"{backend}_down", [str(MLOPS), "--home", str(home), "airflow", "down"],
                   logs / f"{backend}-down-{attempt}.log",
                   env=env, echo=lambda l: False)
    if down["code"] != 0:
        services.Services(home, emit=log).down()
    left = {name: pid for name, pid in {
        **{s: services.running_pid(home, s) for s in (*services.services_of("postgres"), services.MODEL_SERVER)},
        **{s: db_servers.running_pid(home, s) for s in db_servers.SERVERS}}.items() if pid}
    if left:
        log(f"{backend}: still running after down: {left}")
    down["left"] = left
    stop_stale_workers(home, backend)
    return down


def stop_stale_workers(home: Path, backend: str) -> None:
    """`down` stops the home's warm worker for the current code; one a task started under an older code
    fingerprint (a source file changed mid-run) is out of its reach and would idle for 15 minutes: stop it."""
    try:
        text = (home / "var" / "log" / "worker.log").read_text(errors="replace")
    except OSError:
        return
    for pid in {int(found) for found in re.findall(r"worker\[(\d+)\] ready on ", text)}:
        try:
            if b"pipelines.worker.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGTERM)
                log(f"{backend}: stopped warm worker {pid}, still running after down")
        except OSError:
            pass


def run_services(args, tmp: Path, logs: Path) -> Optional[str]:
    """Part `services` (issue 24): its section, or None when a run failed."""
    load = os.getloadavg()
    results = {}
    for backend in BACKENDS:
        results[backend] = services_variant(backend, args, tmp, logs)
    failed = [f"{b}: {r['error']}" for b, r in results.items() if r["error"]]
    failed += [f"{b}: processes left after down: {r['left']}" for b, r in results.items() if r["left"]]
    if failed:
        log(f"services part failed ({'; '.join(failed)}); its section not written (logs in {tmp})")
        return None
    return render_services(args, results, load)


def render_services(args, r: dict, load: tuple) -> str:
    labels = {"sqlite": "SQLite default: LocalExecutor, pool 1", "postgres": "server-backed: PostgreSQL + Celery/Redis "
              f"+ MariaDB, pool {airflow_env.POOL_SLOTS['postgres']}"}
    full = {b: r[b]["runs"]["full"] for b in BACKENDS}
    ratio = full["postgres"]["wall"] / full["sqlite"]["wall"]
    client_ratio = full["postgres"]["client"] / full["sqlite"]["client"]
    rerun_ratio = r["postgres"]["runs"]["rerun"]["wall"] / r["sqlite"]["runs"]["rerun"]["wall"]
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    ok = lambda good: "met" if good else "**MISSED**"  # noqa: E731

    def rows(run: str) -> List[str]:
        out = []
        for b in BACKENDS:
            x = r[b]["runs"][run]
            out.append(f"| {labels[b]} | {x['wall']:.1f} | {x['client']:.1f} | {x['durations']:.1f} | {x['saved']:.1f} | "
                       f"{x['most']} | {x['idle']:.1f} | {x['first_task']:.1f} | {x['queued_median']:.2f} | "
                       f"{x['pushed_new']} |")
        return out

    header = ["| variant | run s (API start -> end) | trigger -> success s (client) | sum of task durations s | "
              "saved by overlap s | most tasks at once | no task running s | run start -> first task s | "
              "median queued -> running s | pushed? |", "|---|---|---|---|---|---|---|---|---|---|"]
    others = sorted({run for b in BACKENDS for run in r[b].get("other_runs", [])})
    return "\n".join([
        SERVICES_SECTION, "",
        f"Date: {dt.datetime.now().isoformat(timespec='minutes')}. Machine: {os.cpu_count()} CPUs, {mem:.1f} GiB RAM; "
        f"load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. One run of each; other work may have "
        "shared the machine, so treat single-run seconds as +-10-20%.",
        f"Span: {args.rows} rows (seeded), {args.train_steps} train steps, {args.eval_steps} eval steps (the other "
        "params: the DAG's defaults, which are `mlops run`'s), the same span as the Airflow overhead section. Each "
        "variant in its own fresh home on free ports: `mlops airflow up [--backend postgres] --port P`, then "
        f"{DAG} triggered through the REST API (`POST /api/v2/dags/{DAG}/dagRuns` with dag_run_id, logical_date and "
        "conf {date, train_steps, eval_steps}; the DAG unpaused right after), waited for (polled every "
        f"{POLL:g} s), then a second run for the same span (the no-change rerun, another dag_run_id), then "
        f"`mlops airflow down`. {len(full['sqlite']['tis'])} tasks per run (one per TFX node, and report_metrics). "
        "Times from the API: the DAG run's and the task instances' start and end dates. Settings of the server-backed "
        "services beyond the SQLite default's (pipelines/services.py): "
        + ", ".join(f"{k}={v}" for k, v in {**getattr(services, "POSTGRES_TASK_SETTINGS", {}),
                                              **getattr(services, "CELERY_WORKER_SETTINGS", {})}.items()) + ".", "",
        "Full run (from nothing):", "", *header, *rows("full"), "",
        "No-change rerun (same span, second DAG run):", "", *header, *rows("rerun"), "",
        "| variant | `up` s (not part of the runs) | `down` s |", "|---|---|---|",
        *[f"| {labels[b]} | {r[b]['up']['seconds']:.1f} | {r[b]['down']['seconds']:.1f} |" for b in BACKENDS], "",
        f"- Server-backed / SQLite default, full run (API start -> end): **{ratio:.3f}x** (target <= "
        f"{SERVICES_TARGET}x): {ok(ratio <= SERVICES_TARGET)}; trigger -> success: {client_ratio:.2f}x; "
        f"no-change rerun: {rerun_ratio:.2f}x.",
        "- saved by overlap = sum of the task instances' durations - the run's wall time (negative: the gaps between "
        "tasks cost more than the overlap saved); no task running = the run's wall time outside every task instance "
        "(scheduling and queueing between tasks); queued -> running: from the task instance's queued_when to its "
        "start_date (the executor picking the task up and starting its process).",
        *([f"- Other DAG runs the scheduler made meanwhile: {', '.join(others)}."] if others else []),
        *[f"- {labels[b]}: the node tasks started {r[b]['worker_starts']} warm workers, not one: a project source "
          "file changed during the run (the worker's code fingerprint), so a task paid a new worker's TFX imports "
          "(about 5 s)." for b in BACKENDS if r[b].get("worker_starts", 1) > 1],
        *[f"- {labels[b]}: the first `up` failed ({'; '.join(r[b]['up_failures'])}) and was run once more in a "
          "fresh home (the `up` time above is the second one's)." for b in BACKENDS if r[b]["up_failures"]],
        "", "Commands (H = a fresh temp home per variant; P, R, G = free ports):", "", "```",
        f"mlops --home H data seed --days 1 --rows-per-day {args.rows} --end {args.day}",
        "MLOPS_SERVING_REST_PORT=R MLOPS_SERVING_GRPC_PORT=G mlops --home H airflow up --port P   "
        "# server-backed: ... up --backend postgres --port P",
        f"POST /api/v2/dags/{DAG}/dagRuns {{\"dag_run_id\": \"bench_<variant>_full\", \"logical_date\": "
        f"\"<yesterday>T02:00:00Z\", \"conf\": {{\"date\": \"{args.day}\", \"train_steps\": {args.train_steps}, "
        f"\"eval_steps\": {args.eval_steps}}}}}; PATCH /api/v2/dags/{DAG} {{\"is_paused\": false}}",
        f"POST /api/v2/dags/{DAG}/dagRuns {{\"dag_run_id\": \"bench_<variant>_rerun\", \"logical_date\": "
        "\"<the day before>T02:00:00Z\", ...}   # the rerun",
        "mlops --home H airflow down",
        "```", "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("overhead", "services"),
                        help="run one part: `overhead` (issue 4: in-process vs `airflow dags test`) or `services` "
                             "(issue 24: `mlops airflow up`, SQLite vs server-backed); default: both")
    parser.add_argument("--rows", type=int, default=15000, help="rows in the span (default: 15000)")
    parser.add_argument("--train-steps", type=int, default=300, help="train steps (default: 300)")
    parser.add_argument("--eval-steps", type=int, default=50, help="eval steps (default: 50)")
    parser.add_argument("--day", default="2026-11-22", help="span date (default: 2026-11-22)")
    parser.add_argument("--startup-repeats", type=int, default=3, help="node start-up samples (default: 3)")
    parser.add_argument("--parse-repeats", type=int, default=5, help="DAG parse samples (default: 5)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so that the services part's `finally` stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="bench-airflow-overhead-"))
    logs = tmp / "logs"
    logs.mkdir()
    parts = [("overhead", SECTION, run_overhead), ("services", SERVICES_SECTION, run_services)]
    sections, failed = [], []
    for name, heading, run in parts:
        if args.only in (None, name):
            section = run(args, tmp, logs)
            if section is None:
                failed.append(name)
            else:
                sections.append((heading, section))
    if sections:
        publish_sections(args.results, sections, tmp, args.keep or bool(failed))
    if failed:
        log(f"failed: {', '.join(failed)} (logs kept in {tmp})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
