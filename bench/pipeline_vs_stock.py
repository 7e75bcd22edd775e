"""Benchmark (issue 3): our nightly pipeline against the stock TFX Chicago taxi example.

Same rows, same Beam mode (DirectRunner in_memory), both in-process in a fresh child process per
run. Measures full run and no-change rerun (wall time, peak RSS, whether a new model version was
pushed), optionally one bigger span of ours, and writes the "Pipeline vs stock TFX (issue 3)"
section of bench/RESULTS.md. A benchmark reports: a missed target does not fail it (exit 0);
exit 1 only when a run itself crashed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from common import MLOPS, REPO, log, measure, publish, seed_home
from pipelines.data import bundled_csv_path
from serving.versions import list_versions

# The example inside the installed wheel, found without importing tfx (TensorFlow costs seconds).
TAXI = bundled_csv_path().parents[2]  # .../examples/chicago_taxi_pipeline
PYTHON = REPO / ".venv" / "bin" / "python"
SECTION = "## Pipeline vs stock TFX (issue 3)"
STOCK_TRAIN_STEPS = 1000  # hard-coded in the stock example's Trainer
OURS_TRAIN_STEPS = 300  # `mlops run` default, left as is
BEAM = "in_memory"

# Runs the unmodified stock example in-process with LocalDagRunner. The only addition is a timer
# around Launcher.launch (measurement only) so stock per-node seconds can be compared with ours.
STOCK_CHILD = """\
import importlib.util, sys, time
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.portable import launcher
example, module_file, root, beam_mode = sys.argv[1:5]
spec = importlib.util.spec_from_file_location('taxi_pipeline_native_keras', example)
taxi = importlib.util.module_from_spec(spec); spec.loader.exec_module(taxi)
launch = launcher.Launcher.launch
def timed_launch(self):
    start = time.monotonic()
    try: return launch(self)
    finally: print(f'[stock] {self._pipeline_node.node_info.id} in {time.monotonic() - start:.1f}s', flush=True)
launcher.Launcher.launch = timed_launch
LocalDagRunner().run(taxi._create_pipeline(
    pipeline_name=taxi._pipeline_name, pipeline_root=root + '/pipeline_root', data_root=root + '/data',
    module_file=module_file, serving_model_dir=root + '/serving_model',
    metadata_path=root + '/metadata.db', beam_pipeline_args=['--direct_running_mode=' + beam_mode]))
"""


def run_ours(name: str, home: Path, date: str, logs: Path, cold: bool = True) -> dict:
    """`mlops run`: --cold is a fresh process like stock's (peak RSS visible); warm runs in the
    home's warm worker, the product's default (the worker is started untimed beforehand)."""
    if not cold:
        subprocess.run([str(MLOPS), "--home", str(home), "worker", "start"], check=True, capture_output=True)
    cmd = [str(MLOPS), "--home", str(home), "run", "--date", date, "--beam-mode", BEAM, "--json",
           *(["--cold"] if cold else [])]
    result = measure(name, cmd, logs / f"{name}.log", echo=lambda l: l.startswith(("[", "run ")))
    lines = result["lines"]
    start = next((i for i, l in enumerate(lines) if l == "{"), None)  # JSON summary follows progress
    result["summary"] = json.loads("\n".join(lines[start:])) if start is not None else {}
    result["nodes"] = {m[1]: float(m[3]) for m in (re.match(r"\[\d+/\d+\] (\S+) (\w+) in ([\d.]+)s$", l) for l in lines) if m}
    result["versions"] = list_versions(home / "serving" / "models" / "taxi")
    return result


def run_stock(name: str, root: Path, logs: Path) -> dict:
    cmd = [str(PYTHON), "-c", STOCK_CHILD, str(TAXI / "taxi_pipeline_native_keras.py"),
           str(TAXI / "taxi_utils_native_keras.py"), str(root), BEAM]
    result = measure(name, cmd, logs / f"{name}.log", echo=lambda l: l.startswith("[stock]"))
    result["nodes"] = {m[1]: float(m[2]) for m in (re.match(r"\[stock\] (\S+) in ([\d.]+)s$", l) for l in result["lines"]) if m}
    result["versions"] = list_versions(root / "serving_model")
    return result


def fmt(result: dict | None, key: str) -> str:
    if result is None:
        return "not run"
    if result["code"] != 0:
        return f"FAILED (exit {result['code']})"
    return f"{result[key]:.1f}" if key == "seconds" else f"{result[key]:.0f}"


def outside(result: dict) -> str:
    """Wall seconds not spent in any node: the fixed cost of a run, which bounds the rerun."""
    return "-" if result["code"] else f"{result['seconds'] - sum(result['nodes'].values()):.1f}"


def render(args, rows: int, r: dict, commands: list, load: tuple) -> str:
    sf, sr, of, orr, big = r["stock_full"], r["stock_rerun"], r["ours_full"], r["ours_rerun"], r.get("ours_big")
    stock_new = len(sr["versions"]) - len(sf["versions"])
    ours_new = len(orr["versions"]) - len(of["versions"])
    full_ratio = of["seconds"] / sf["seconds"]
    rerun_ratio = orr["seconds"] / of["seconds"]
    rerun_pushed = orr["summary"].get("pushed_version") is not None or ours_new > 0
    ok = lambda met: "MET" if met else "**MISSED**"
    mem = psutil.virtual_memory().total / 2**30
    big_col = f"ours, {args.big_rows // 1000}k rows"
    t = [f"| | stock TFX example | ours | {big_col} |", "|---|---|---|---|",
         f"| rows in the span | {rows} | {rows} | {args.big_rows if big else 'not run'} |",
         f"| rows read by StatisticsGen (train+eval, must equal the span) | not reported | {sum(of['summary'].get('rows', {}).values())} "
         f"| {sum(big['summary'].get('rows', {}).values()) if big and big['code'] == 0 else '-'} |",
         f"| train steps | {STOCK_TRAIN_STEPS} | {OURS_TRAIN_STEPS} | {OURS_TRAIN_STEPS} |",
         f"| full run, wall s | {fmt(sf, 'seconds')} | {fmt(of, 'seconds')} | {fmt(big, 'seconds')} |",
         f"| full run, peak RSS MB (largest process, getrusage) | {fmt(sf, 'rss_mb')} | {fmt(of, 'rss_mb')} | {fmt(big, 'rss_mb')} |",
         f"| full run, peak RSS MB (process tree, psutil 0.2 s polls) | {fmt(sf, 'tree_mb')} | {fmt(of, 'tree_mb')} | {fmt(big, 'tree_mb')} |",
         f"| no-change rerun, wall s (ours: through the warm worker, the default) | {fmt(sr, 'seconds')} "
         f"| {fmt(orr, 'seconds')} | - |",
         f"| no-change rerun in a cold process, wall s (ours: `--cold`) | {fmt(sr, 'seconds')} "
         f"| {fmt(r.get('ours_rerun_cold'), 'seconds')} | - |",
         f"| s outside nodes (start-up, imports, compile, summary): full / rerun | {outside(sf)} / {outside(sr)} "
         f"| {outside(of)} / {outside(orr)} | {outside(big) if big else '-'} |",
         f"| no-change rerun, peak RSS MB (largest process; ours: the `--cold` rerun) | {fmt(sr, 'rss_mb')} "
         f"| {fmt(r.get('ours_rerun_cold'), 'rss_mb')} | - |",
         f"| rerun pushed a new model version? | {'yes' if stock_new else 'no'} ({len(sf['versions'])} -> {len(sr['versions'])} version dirs) "
         f"| {'yes' if rerun_pushed else 'no'} (pushed_version={orr['summary'].get('pushed_version')}; {len(of['versions'])} -> {len(orr['versions'])} version dirs) | - |"]
    nodes = ["| pipeline | node | full run s | rerun s |", "|---|---|---|---|"]
    for label, full, rerun in (("stock", sf, sr), ("ours", of, orr)):
        nodes += [f"| {label} | {n} | {s:.1f} | {rerun['nodes'].get(n, float('nan')):.1f} |" for n, s in full["nodes"].items()]
    if big:
        nodes += [f"| ours {args.big_rows // 1000}k | {n} | {s:.1f} | - |" for n, s in big["nodes"].items()]
    return "\n".join([
        SECTION, "",
        f"Date: {dt.datetime.now().isoformat(timespec='minutes')}. Machine: {os.cpu_count()} CPUs (nproc), "
        f"{mem:.1f} GiB RAM; load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. Other work may "
        "have run on this machine at the same time, so treat single-run seconds as +-10-20%.",
        f"Both pipelines: Beam DirectRunner `--direct_running_mode={BEAM}`, in-process (stock: LocalDagRunner; "
        "ours: `mlops run`, the portable Launcher per node), SQLite ML Metadata, a fresh Python process per full run "
        "(ours: `--cold`), "
        f"the same {rows}-row CSV (our seeded span, copied for stock). Train steps differ: stock's example hard-codes "
        f"{STOCK_TRAIN_STEPS}, ours defaults to {OURS_TRAIN_STEPS}; stock also infers its schema (SchemaGen) where we "
        "import ours and add drift validation and gated evaluation per slice.", "",
        *t, "",
        f"- ours / stock, full run: **{full_ratio:.2f}x** (target <= 0.8x): {ok(full_ratio <= 0.8)}",
        f"- ours no-change rerun / ours full run: **{rerun_ratio:.0%}** (target <= 10%, no push): "
        f"{ok(rerun_ratio <= 0.10 and not rerun_pushed)}" + (" (a new version was pushed)" if rerun_pushed else ""),
        *([f"- ours {args.big_rows // 1000}k / ours {rows // 1000}k full run: {big['seconds'] / of['seconds']:.2f}x time, "
           f"{big['rss_mb'] / of['rss_mb']:.2f}x peak RSS"] if big and big["code"] == 0 else []),
        "", "Seconds per node (stock: timer around `Launcher.launch`; ours: `mlops run` progress lines):", "",
        *nodes, "", "Commands (H = a fresh temp home; S = a temp dir for stock; TF_USE_LEGACY_KERAS=1):", "", "```",
        *commands, "```", "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=15000, help="rows in the span both pipelines run (default: 15000)")
    parser.add_argument("--big-rows", type=int, default=150000, help="rows in the ours-only growth span (default: 150000)")
    parser.add_argument("--skip-150k", action="store_true", help="skip the ours-only big span")
    parser.add_argument("--date", default="2026-11-22", help="span date to seed and run (default: 2026-11-22)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes) for inspection")
    args = parser.parse_args()

    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-vs-stock-"))
    logs, home, stock = tmp / "logs", tmp / "home", tmp / "stock"
    logs.mkdir()
    log(f"temp dir {tmp}; seeding {args.rows} rows for {args.date}")
    span_csv = seed_home(home, args.rows, args.date)
    (stock / "data").mkdir(parents=True)
    shutil.copy(span_csv, stock / "data" / "data.csv")  # identical rows for stock

    # Stock first, then ours; each rerun reuses the state (MLMD, pipeline root) of its full run.
    results = {name: run_stock(name, stock, logs) for name in ("stock_full", "stock_rerun")}
    results["ours_full"] = run_ours("ours_full", home, args.date, logs)
    results["ours_rerun_cold"] = run_ours("ours_rerun_cold", home, args.date, logs)
    results["ours_rerun"] = run_ours("ours_rerun", home, args.date, logs, cold=False)
    subprocess.run([str(MLOPS), "--home", str(home), "worker", "stop"], capture_output=True)
    if not args.skip_150k:
        big_home = tmp / "home_big"
        log(f"seeding {args.big_rows} rows for {args.date}")
        seed_home(big_home, args.big_rows, args.date)
        results["ours_big"] = run_ours("ours_big", big_home, args.date, logs)

    commands = [
        f"mlops --home H data seed --days 1 --rows-per-day {args.rows} --end {args.date}",
        "cp H/data/incoming/{date}/data.csv S/data/   # stock data_root".format(date=args.date),
        f"python -c \"$STOCK_CHILD\" <tfx>/examples/chicago_taxi_pipeline/taxi_pipeline_native_keras.py "
        f"<tfx>/examples/chicago_taxi_pipeline/taxi_utils_native_keras.py S {BEAM}   # twice: full run, rerun",
        f"mlops --home H run --date {args.date} --beam-mode {BEAM} --json --cold   # twice: full run, cold rerun",
        "mlops --home H worker start   # untimed",
        f"mlops --home H run --date {args.date} --beam-mode {BEAM} --json   # no-change rerun in the warm worker",
        *([f"mlops --home H2 data seed --days 1 --rows-per-day {args.big_rows} --end {args.date} && "
           f"mlops --home H2 run --date {args.date} --beam-mode {BEAM} --json"] if not args.skip_150k else []),
        "# STOCK_CHILD (imports the unmodified example, runs _create_pipeline with LocalDagRunner):",
        *STOCK_CHILD.splitlines(),
    ]
    failed = [name for name, r in results.items() if r["code"] != 0]
    if {"stock_full", "stock_rerun", "ours_full", "ours_rerun"} & set(failed):
        log(f"runs failed: {', '.join(failed)}; RESULTS.md not updated (logs in {tmp})")
        return 1
    section = render(args, args.rows, results, commands, load)
    publish(args.results, SECTION, section, tmp, args.keep or bool(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
