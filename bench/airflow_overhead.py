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
Target: Airflow <= 1.3x in-process. A missed target does not fail the benchmark (exit 0);
exit 1 only when a run itself failed.
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
import time
from pathlib import Path

from common import CHILD_ENV, MLOPS, REPO, log, measure, publish, seed_home

SECTION = "## Airflow overhead (issue 4)"
PYTHON = REPO / ".venv" / "bin" / "python"
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
TARGET = 1.3

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=15000, help="rows in the span (default: 15000)")
    parser.add_argument("--train-steps", type=int, default=300, help="train steps (default: 300)")
    parser.add_argument("--eval-steps", type=int, default=50, help="eval steps (default: 50)")
    parser.add_argument("--day", default="2026-11-22", help="span date (default: 2026-11-22)")
    parser.add_argument("--startup-repeats", type=int, default=3, help="node start-up samples (default: 3)")
    parser.add_argument("--parse-repeats", type=int, default=5, help="DAG parse samples (default: 5)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes)")
    args = parser.parse_args()

    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-airflow-overhead-"))
    logs = tmp / "logs"
    logs.mkdir()
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
        log(f"runs failed: {', '.join(failed)}; RESULTS.md not updated (logs in {tmp})")
        return 1
    section = render(args, results, startup, parse_times(args.parse_repeats), load)
    publish(args.results, SECTION, section, tmp, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
