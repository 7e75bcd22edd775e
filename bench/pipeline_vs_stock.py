"""Benchmark (issues 3 and 23): our nightly pipeline against the stock TFX Chicago taxi example.

    .venv/bin/python bench/pipeline_vs_stock.py [--scenarios base,window] [--window-rows 150000] ...

Same rows, same Beam mode (DirectRunner, --beam-mode, default in_memory), both in-process in a fresh
child process per run. Scenarios (`--scenarios`, default both, one section of bench/RESULTS.md each):

- base (issue 3): one span; full run and no-change rerun (wall time, peak RSS, whether a new model
  version was pushed), optionally one bigger span of ours: "Pipeline vs stock TFX (issue 3)".
- window (issue 23, bench/window_vs_stock.py): a rolling window of `--window-days` seeded days of
  `--window-rows` rows; ours cold, then the next night with the analyzer cache, vs stock on the
  same days at equal train steps; both final models' AUC on the newest span: "Rolling window vs
  stock TFX (issue 23)".

A benchmark reports: a missed target does not fail it (exit 0); exit 1 only when a run itself
crashed (the scenarios that ran through are still written; the temp dir is kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import window_vs_stock
from common import MLOPS, REPO, log, publish_sections, seed_home
from pipeline_runs import BEAM, STOCK_CHILD, STOCK_TRAIN_STEPS, fmt, outside, run_ours, run_stock

SECTION = "## Pipeline vs stock TFX (issue 3)"
OURS_TRAIN_STEPS = 300  # `mlops run` default, left as is


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
        f"Both pipelines: Beam DirectRunner `--direct_running_mode={args.beam_mode}`, in-process (stock: LocalDagRunner; "
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


def run_base(args, tmp: Path, logs: Path, load: tuple):
    """One span, both pipelines: full run and no-change rerun; ours also on a bigger span.
    Returns (the section, or None when a core run failed; the names of the runs that failed)."""
    home, stock, date, beam = tmp / "home", tmp / "stock", args.date.isoformat(), args.beam_mode
    log(f"base: seeding {args.rows} rows for {date}")
    span_csv = seed_home(home, args.rows, date)
    (stock / "data").mkdir(parents=True)
    shutil.copy(span_csv, stock / "data" / "data.csv")  # identical rows for stock

    # Stock first, then ours; each rerun reuses the state (MLMD, pipeline root) of its full run.
    results = {name: run_stock(name, stock, logs, beam=beam) for name in ("stock_full", "stock_rerun")}
    results["ours_full"] = run_ours("ours_full", home, date, logs, beam=beam)
    results["ours_rerun_cold"] = run_ours("ours_rerun_cold", home, date, logs, beam=beam)
    results["ours_rerun"] = run_ours("ours_rerun", home, date, logs, cold=False, beam=beam)
    subprocess.run([str(MLOPS), "--home", str(home), "worker", "stop"], capture_output=True)
    if not args.skip_150k:
        big_home = tmp / "home_big"
        log(f"base: seeding {args.big_rows} rows for {date}")
        seed_home(big_home, args.big_rows, date)
        results["ours_big"] = run_ours("ours_big", big_home, date, logs, beam=beam)

    commands = [
        f"mlops --home H data seed --days 1 --rows-per-day {args.rows} --end {date}",
        f"cp H/data/incoming/{date}/data.csv S/data/   # stock data_root",
        f"python -c \"$STOCK_CHILD\" <tfx>/examples/chicago_taxi_pipeline/taxi_pipeline_native_keras.py "
        f"<tfx>/examples/chicago_taxi_pipeline/taxi_utils_native_keras.py S {beam}   # twice: full run, rerun",
        f"mlops --home H run --date {date} --beam-mode {beam} --json --cold   # twice: full run, cold rerun",
        "mlops --home H worker start   # untimed",
        f"mlops --home H run --date {date} --beam-mode {beam} --json   # no-change rerun in the warm worker",
        *([f"mlops --home H2 data seed --days 1 --rows-per-day {args.big_rows} --end {date} && "
           f"mlops --home H2 run --date {date} --beam-mode {beam} --json --cold"] if not args.skip_150k else []),
        "# STOCK_CHILD (imports the unmodified example, runs _create_pipeline with LocalDagRunner):",
        *STOCK_CHILD.splitlines(),
    ]
    failed = [name for name, r in results.items() if r["code"] != 0]
    if {"stock_full", "stock_rerun", "ours_full", "ours_rerun"} & set(failed):
        log(f"base: runs failed: {', '.join(failed)}; its section not written (logs in {tmp})")
        return None, failed
    return render(args, args.rows, results, commands, load), failed


def run_window(args, tmp: Path, logs: Path, load: tuple):
    """The rolling window, cold and the next night, vs stock on the same days (bench/window_vs_stock.py).
    Returns (the section, or None when a night or stock's run failed; the names of the runs that failed)."""
    out = window_vs_stock.run_window(args, tmp, logs)
    failed = window_vs_stock.failed_runs(out)
    if {"window_cold", "window_next", "stock_window"} & set(failed):
        log(f"window: runs failed: {', '.join(failed)}; its section not written (logs in {tmp})")
        return None, failed
    return window_vs_stock.render(args, out, load), failed


SCENARIOS = {"base": (SECTION, run_base), "window": (window_vs_stock.SECTION, run_window)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default="base,window",
                        help=f"comma-separated scenarios to run: {', '.join(SCENARIOS)} (default: base,window)")
    parser.add_argument("--rows", type=int, default=15000, help="base: rows in the span both pipelines run (default: 15000)")
    parser.add_argument("--big-rows", type=int, default=150000,
                        help="base: rows in the ours-only growth span (default: 150000)")
    parser.add_argument("--skip-150k", action="store_true", help="base: skip the ours-only big span")
    parser.add_argument("--window-days", type=int, default=7, help="window: days in the training window (default: 7)")
    parser.add_argument("--window-rows", type=int, default=150000, help="window: rows per seeded day (default: 150000)")
    parser.add_argument("--window-train-steps", type=int, default=STOCK_TRAIN_STEPS,
                        help=f"window: train steps of both pipelines (default: stock's own {STOCK_TRAIN_STEPS}; "
                             "another value runs stock from a copy of its pipeline file with that constant changed)")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 22),
                        help="base: the span; window: the cold window night (the next night is the day after) "
                             "(default: 2026-11-22)")
    parser.add_argument("--beam-mode", default=BEAM, help=f"Beam DirectRunner mode of both pipelines (default: {BEAM})")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, homes) for inspection")
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: unknown {unknown or 'none given'}; choose from {', '.join(SCENARIOS)}")
    if args.window_days < 2:
        parser.error(f"--window-days {args.window_days}: the window scenario needs at least 2 days (older + newest)")
    return args


def main() -> int:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-vs-stock-"))
    logs = tmp / "logs"
    logs.mkdir()
    log(f"temp dir {tmp}; scenarios {', '.join(args.scenarios)}")
    sections, failed = [], []
    for name in args.scenarios:
        heading, run = SCENARIOS[name]
        section, failed_runs = run(args, tmp, logs, os.getloadavg())  # the load as this scenario starts
        failed += failed_runs
        sections += [(heading, section)] if section else []
    if sections:
        publish_sections(args.results, sections, tmp, keep=args.keep or bool(failed))
    if failed:
        log(f"runs failed: {', '.join(failed)} (logs in {tmp})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
