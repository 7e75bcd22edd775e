"""Benchmark (issue 23): rows/second of data validation on spans of 150k, 1.5M and 5M rows, side by side.

    .venv/bin/python bench/validation_throughput.py [--sizes 150000,1500000,5000000]
        [--target-sizes 1500000,5000000] [--warmup-rows 150000] [--results PATH] [--keep]

Per size, one fresh home seeded with two days (`mlops data seed --days 1`, once per day; rows
beyond the bundled ~15k are resampled with jitter): the first day of --warmup-rows rows (at most
N; only the warm-up reads it), the second of N rows. Then, on the second day's CSV:

- ceiling: `pyarrow.csv.read_csv` of the file (the physical parse rate; pyarrow uses all cores);
- baseline: plain `tensorflow_data_validation.generate_statistics_from_csv(path)` (Beam
  DirectRunner defaults, types inferred from the CSV);
- ours: `mlops --home H validate --date D --json --cold`: statistics + schema validation + drift
  gate through our pipeline's validation nodes, in its own process like the baseline (so its
  imports are paid and its memory is measured). It runs once on the first day (untimed warm-up,
  and the drift baseline: the gate compares statistics, whose size does not grow with the rows),
  then is timed on the second day;
- ours through the home's warm worker (the default without --cold: TFX already imported), timed
  on the second day again with --no-cache, for spans up to WARM_MAX_ROWS (beyond, the ~10 s of
  imports it saves are within the noise). It runs in a fork of the worker, not a child of the
  command, so no peak RSS is reported for it.

Each way runs in its own child process: wall seconds and peak RSS (getrusage of the child) come
from bench/common.measure. Ceiling and baseline also report their own timer around the work
(after imports), so the fixed start-up cost is visible apart from the per-row cost. Writes the
"Validation throughput" section of bench/RESULTS.md (--results), with the issue's targets:
`mlops validate --cold` >= 1.0x plain TFDV's rows/s (wall) at the first --target-sizes size, and
its peak RSS at the second size <= 2x that at the first. A benchmark reports: a missed target is
not a failure; a run that failed is a FAILED cell in the table (still written, temp dir kept) and
exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from common import CHILD_ENV, MLOPS, REPO, log, measure, publish, seed_span

SECTION = "## Validation throughput"
PYTHON = REPO / ".venv" / "bin" / "python"
SIZES = (150000, 1500000, 5000000)
TARGET_SIZES = (1500000, 5000000)  # rows/s target at the first, memory growth from the first to the second
SPEED_TARGET = 1.0  # ours / plain TFDV rows/s (wall)
MEMORY_TARGET = 2.0  # ours' peak RSS at the second target size / at the first
WARMUP_ROWS = 150000
WARMUP_SEED = 7  # the warm-up day's rows apart from the timed day's (seed 42)
WAYS = ("ceiling", "tfdv", "ours", "ours_warm")  # the summary table's throughput columns
LABELS = {"ceiling": "ceiling: pyarrow.csv.read_csv", "tfdv": "baseline: tfdv.generate_statistics_from_csv",
          "ours_warmup": "ours, warm-up on the first day (`--cold`, untimed)", "ours": "ours: `mlops validate --cold`",
          "ours_warm": "ours via the warm worker (default; RSS not seen)"}
RESULT = "RESULT "  # prefix of the one JSON line each timing child prints last
WARM_MAX_ROWS = 150000
VALIDATE_VERDICTS = {0: "passes", 3: "blocked"}  # `mlops validate` exit codes; others are failures
NODE_LINE = re.compile(r"\[\d+/\d+\] (\S+) (?:\w+) in ([\d.]+)s$")  # `[5/8] CsvExampleGen complete in 11.9s`

CEILING_CHILD = """\
import json, sys, time
started = time.perf_counter()
import pyarrow.csv
imported = time.perf_counter()
table = pyarrow.csv.read_csv(sys.argv[1])
done = time.perf_counter()
print("RESULT " + json.dumps({"rows": table.num_rows, "import_s": imported - started, "work_s": done - imported}))
"""

TFDV_CHILD = """\
import json, sys, time
started = time.perf_counter()
import tensorflow_data_validation as tfdv
imported = time.perf_counter()
stats = tfdv.generate_statistics_from_csv(sys.argv[1], output_path=sys.argv[2])
done = time.perf_counter()
print("RESULT " + json.dumps({"rows": stats.datasets[0].num_examples, "import_s": imported - started,
                              "work_s": done - imported}))
"""


def child_result(result: dict) -> dict:
    """Adds the child's own report (rows, import and work seconds) from its RESULT line."""
    line = next((l for l in reversed(result["lines"]) if l.startswith(RESULT)), None)
    result.update(json.loads(line[len(RESULT):]) if line else {})
    return result


def json_summary(lines) -> dict:
    """The JSON document `--json` prints after any progress lines ({} when there is none)."""
    start = next((i for i, l in enumerate(lines) if l.startswith("{")), None)
    if start is None:
        return {}
    try:
        return json.loads("\n".join(lines[start:]))
    except json.JSONDecodeError:
        return {}


def timed(name: str, cmd: list, logs: Path, echo=lambda l: l.startswith(RESULT), ok_codes=(0,)) -> dict:
    """measure() plus the 1-minute load when the run started and whether its exit code means it ran."""
    load = os.getloadavg()[0]
    result = measure(name, cmd, logs / f"{name}.log", echo=echo)
    return dict(result, load=load, failed=result["code"] not in ok_codes)


def run_ours(name: str, home: Path, date: str, logs: Path, flags=("--cold",)) -> dict:
    """`mlops validate`; exit 3 (the span would be blocked) is a verdict, not a failed run."""
    cmd = [str(MLOPS), "--home", str(home), "validate", "--json", "--date", date, *flags]
    progress = lambda l: not l.startswith((" ", "{", "}", '"'))  # noqa: E731 -- echo progress, not the JSON
    result = timed(name, cmd, logs, echo=progress, ok_codes=tuple(VALIDATE_VERDICTS))
    summary = json_summary(result["lines"])
    nodes = [float(m[2]) for m in map(NODE_LINE.match, result["lines"]) if m]
    return dict(result, summary=summary, rows=summary.get("rows"), verdict=VALIDATE_VERDICTS.get(result["code"]),
                work_s=sum(nodes) if nodes else None, cached=any(" cached in " in l for l in result["lines"][1:]))


def run_ours_warm(name: str, home: Path, date: str, logs: Path) -> dict:
    """The default path: the command runs in a fork of the home's warm worker, started untimed first."""
    worker = [str(MLOPS), "--home", str(home), "worker"]
    subprocess.run(worker + ["start"], env=CHILD_ENV, check=False)
    try:
        result = run_ours(name, home, date, logs, flags=("--no-cache",))
    finally:
        subprocess.run(worker + ["stop"], env=CHILD_ENV, check=False)
    # The work runs in the worker's fork, so this process's memory is only the client's.
    return dict(result, rss_mb=None, tree_mb=None,
                cold_start=any(l.startswith("starting a warm worker") for l in result["lines"]))


def run_size(rows: int, days: tuple, tmp: Path, logs: Path, warmup_rows: int) -> dict:
    first, second = days
    home = tmp / f"home-{rows}"
    warmup_rows = min(warmup_rows, rows)
    log(f"{rows} rows: seeding {first} ({warmup_rows} rows, warm-up) and {second} ({rows} rows) in {home}")
    seed_span(home, warmup_rows, first, seed=WARMUP_SEED)
    span_csv = seed_span(home, rows, second)
    log(f"{rows} rows: seeded {span_csv} ({span_csv.stat().st_size / 2**20:.0f} MiB)")
    out = {"bytes": span_csv.stat().st_size, "warmup_rows": warmup_rows}
    out["ceiling"] = child_result(timed(f"ceiling_{rows}", [str(PYTHON), "-c", CEILING_CHILD, str(span_csv)], logs))
    stats_out = tmp / f"tfdv-{rows}" / "stats.tfrecord"
    stats_out.parent.mkdir()
    out["tfdv"] = child_result(timed(f"tfdv_{rows}", [str(PYTHON), "-c", TFDV_CHILD, str(span_csv), str(stats_out)], logs))
    out["ours_warmup"] = run_ours(f"ours_warmup_{rows}", home, first, logs)
    out["ours"] = run_ours(f"ours_{rows}", home, second, logs, flags=("--cold", "--no-cache"))
    if rows <= WARM_MAX_ROWS:
        out["ours_warm"] = run_ours_warm(f"ours_warm_{rows}", home, second, logs)
    return out


def cell(result: dict | None, key: str, digits: int = 1) -> str:
    if result is None:
        return "not run"
    if result["failed"]:
        return f"FAILED (exit {result['code']})"
    value = result.get(key)
    return "-" if value is None else f"{value:,.{digits}f}"


def with_rates(result: dict | None, rows: int) -> dict | None:
    """The result plus rows/s on wall time and on the child's own work timer (when it has one)."""
    if result is None or result["failed"]:
        return result
    work = result.get("work_s")
    return dict(result, wall_rate=rows / result["seconds"], work_rate=rows / work if work else None)


def detail_row(rows: int, label: str, result: dict | None, span_rows: int | None = None) -> str:
    """One way's row in the size group `rows`; `span_rows`: the rows it read when not `rows` (the warm-up)."""
    span_rows = span_rows or rows
    r = with_rates(result, span_rows)
    load = f"{r['load']:.2f}" if r else "-"
    read = cell(r, "rows", 0) + (" **(not the span's rows)**" if r and r.get("rows") not in (None, span_rows) else "")
    return (f"| {rows:,} | {label} | {load} | {cell(r, 'seconds')} | {cell(r, 'wall_rate', 0)} | {cell(r, 'work_s', 2)} "
            f"| {cell(r, 'work_rate', 0)} | {read} | {cell(r, 'rss_mb', 0)} | {cell(r, 'tree_mb', 0)} |")


def summary_row(rows: int, out: dict) -> str:
    wall = {way: (with_rates(out.get(way), rows) or {}).get("wall_rate") for way in WAYS}
    ratio = lambda a, b: f"{wall[a] / wall[b]:.2f}x" if wall[a] and wall[b] else "-"  # noqa: E731
    rates = " | ".join(cell(with_rates(out.get(way), rows), "wall_rate", 0) for way in WAYS)
    memory = " / ".join(cell(out.get(way), "rss_mb", 0) for way in ("ceiling", "tfdv", "ours"))
    return (f"| {rows:,} | {out['bytes'] / 2**20:.0f} | {rates} | {ratio('ours', 'tfdv')} | {ratio('ours_warm', 'tfdv')} "
            f"| {ratio('ours', 'ceiling')} | {memory} |")


def verdict(result: dict) -> str:
    """What one `mlops validate` run decided (a blocked span still ran every node), and what to
    distrust about its timing (nodes served from cache; a worker that had to start inside it)."""
    if result["failed"]:
        return f"FAILED (exit {result['code']})"
    drift = result["summary"].get("drift", {})
    blocked = [f"{name} {d['distance']:.3f} > {d['threshold']}" for name, d in drift.items() if d.get("blocked")]
    notes = [f"{len(result['summary'].get('findings', []))} findings"]
    notes += [f"drift over threshold: {', '.join(blocked)}"] if blocked else []
    notes += ["**some nodes were cached**"] if result["cached"] else []
    notes += ["**the worker started inside the timed run**"] if result.get("cold_start") else []
    return f"exit {result['code']} = {result['verdict']} ({'; '.join(notes)})"


def verdict_line(rows: int, days: tuple, out: dict) -> str:
    runs = [f"warm-up {days[0]}: {verdict(out['ours_warmup'])}", f"`--cold` {days[1]}: {verdict(out['ours'])}"]
    runs += [f"warm worker {days[1]}: {verdict(out['ours_warm'])}"] if "ours_warm" in out else []
    return f"- {rows:,} rows, `mlops validate`: " + "; ".join(runs)


def label(way: str, out: dict) -> str:
    return LABELS[way] + (f", {out['warmup_rows']:,} rows" if way == "ours_warmup" else "")


def peak_mb(result: dict | None) -> float | None:
    """A run's memory footprint: the larger of its largest process (exact) and its polled process tree
    (which also counts Beam worker processes, should a run start some)."""
    if not result or result["failed"] or result.get("rss_mb") is None:
        return None
    return max(result["rss_mb"], result.get("tree_mb") or 0)


def target_lines(sizes: dict, target_sizes: tuple) -> list:
    """The issue's two targets, judged on `mlops validate --cold` (ours) against the baseline."""
    speed_rows, memory_rows = target_sizes
    ok = lambda met: "MET" if met else "**MISSED**"  # noqa: E731
    out = sizes.get(speed_rows, {})
    ours, tfdv = (with_rates(out.get(way), speed_rows) or {} for way in ("ours", "tfdv"))
    if ours.get("wall_rate") and tfdv.get("wall_rate"):
        ratio = ours["wall_rate"] / tfdv["wall_rate"]
        speed = (f"- ours / plain TFDV rows/s (wall) at {speed_rows:,} rows: **{ratio:.2f}x** "
                 f"(target >= {SPEED_TARGET}x): {ok(ratio >= SPEED_TARGET)}")
    else:
        speed = f"- ours / plain TFDV rows/s at {speed_rows:,} rows (target >= {SPEED_TARGET}x): not measured"
    low, high = (peak_mb(sizes.get(n, {}).get("ours")) for n in (speed_rows, memory_rows))
    if low and high:
        growth = high / low
        memory = (f"- ours' peak RSS at {memory_rows:,} rows / at {speed_rows:,} rows: {high:,.0f} / {low:,.0f} MB = "
                  f"**{growth:.2f}x** (target <= {MEMORY_TARGET}x): {ok(growth <= MEMORY_TARGET)}")
    else:
        memory = (f"- ours' peak RSS at {memory_rows:,} rows / at {speed_rows:,} rows (target <= {MEMORY_TARGET}x): "
                  "not measured")
    return [speed, memory + " (peak RSS: the larger of the largest process and the process tree)"]


def render(sizes: dict, days: tuple, load: tuple, commands: list, target_sizes: tuple) -> str:
    mem = psutil.virtual_memory().total / 2**30
    detail = ["| rows | way | load at start | wall s | rows/s (wall) | work s (own timer) | rows/s (work) "
              "| rows read | peak RSS MB (largest process) | peak RSS MB (process tree) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    summary = ["| rows | CSV MiB | ceiling rows/s | tfdv rows/s | ours rows/s (`--cold`) | ours rows/s (warm worker) "
               "| ours/tfdv | ours warm/tfdv | ours/ceiling | peak RSS MB ceiling / tfdv / ours |",
               "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for rows, out in sizes.items():
        detail += [detail_row(rows, label(way, out), out.get(way), out["warmup_rows"] if way == "ours_warmup" else None)
                   for way in LABELS if way in out or way in ("ceiling", "tfdv", "ours")]
        summary.append(summary_row(rows, out))
        verdicts += [verdict_line(rows, days, out)] if "ours" in out else []
    return "\n".join([
        SECTION, "",
        f"Date: {dt.datetime.now().isoformat(timespec='minutes')}. Machine: {os.cpu_count()} CPUs (nproc), "
        f"{mem:.1f} GiB RAM, shared: load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end (1-minute "
        "load at the start of each run in the detail table). One run of each; treat seconds as +-10-20%.",
        "How measured: per size a fresh home with two seeded days, the warm-up day of up to "
        f"{max(out['warmup_rows'] for out in sizes.values()):,} rows and the timed day of N rows (rows beyond the "
        "bundled ~15k are resampled with jitter); every way reads the same CSV, the timed day "
        f"({days[1]}), already in the page cache "
        "after seeding. Each way is a fresh child process; wall s covers the whole command (Python start, imports, "
        "work), peak RSS is the child's getrusage max RSS (largest process) and the psutil-polled sum over its "
        "process tree. Work s: the child's own timer after imports (ceiling, baseline), or for ours the sum of the "
        "seconds its node progress lines report (a node that blocks the span prints no time). Ceiling: "
        "`pyarrow.csv.read_csv` (multithreaded parse, no statistics). Baseline: plain "
        "`tfdv.generate_statistics_from_csv` (Beam DirectRunner defaults, types inferred). Ours: `mlops validate "
        "--cold` (statistics + schema validation + drift gate through the pipeline's validation nodes, in the Beam "
        "mode `mlops validate` picks by default (no --beam-mode given), in its own process like the baseline; Beam "
        f"workers it starts count in its process tree), run once on {days[0]} untimed (warm-up and drift "
        f"baseline), then timed on {days[1]}. Ours via the warm worker: the default `mlops validate` (a fork of the "
        "home's worker, TFX already imported; the worker is started untimed first), timed on the same day with "
        f"--no-cache, for spans up to {WARM_MAX_ROWS:,} rows; its work runs outside the command's process tree, "
        "so no RSS is reported for it.",
        "Ratios are throughput ratios on wall time: ours/tfdv > 1 means ours validates more rows per second than "
        "plain TFDV.", "",
        *target_lines(sizes, target_sizes), "",
        *summary, "", *detail, "", *verdicts, *([""] if verdicts else []),
        "Commands (H = a fresh temp home per size, N = rows):", "", "```", *commands, "```", "",
    ])


def row_counts(parser, option: str, text: str) -> list:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        parser.error(f"{option} {text!r}: expected comma-separated row counts such as 150000,1500000 ({err})")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help=f"comma-separated span sizes in rows (default: {','.join(map(str, SIZES))})")
    parser.add_argument("--target-sizes", default=",".join(map(str, TARGET_SIZES)),
                        help="the two sizes the targets compare: rows/s vs TFDV at the first, peak RSS growth from the "
                             f"first to the second (default: {','.join(map(str, TARGET_SIZES))})")
    parser.add_argument("--warmup-rows", type=int, default=WARMUP_ROWS,
                        help=f"rows of the untimed warm-up day, at most N (default: {WARMUP_ROWS})")
    parser.add_argument("--date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 22),
                        help="the timed (second) span's date; the warm-up span is the day before (default: 2026-11-22)")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "RESULTS.md", help="results file to update")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (homes, logs)")
    args = parser.parse_args(argv)
    args.sizes = row_counts(parser, "--sizes", args.sizes)
    args.target_sizes = tuple(row_counts(parser, "--target-sizes", args.target_sizes))
    if len(args.target_sizes) != 2:
        parser.error(f"--target-sizes: expected two sizes (speed, memory growth), got {list(args.target_sizes)}")
    return args


def main() -> int:
    args = parse_args()
    days = ((args.date - dt.timedelta(days=1)).isoformat(), args.date.isoformat())
    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-validation-throughput-"))
    logs = tmp / "logs"
    logs.mkdir()
    log(f"temp dir {tmp}; sizes {args.sizes}")
    results = {rows: run_size(rows, days, tmp, logs, args.warmup_rows) for rows in args.sizes}

    commands = [
        f"mlops --home H data seed --days 1 --rows-per-day W --end {days[0]} --seed {WARMUP_SEED}   "
        f"# W = min(N, {args.warmup_rows})",
        f"mlops --home H data seed --days 1 --rows-per-day N --end {days[1]}",
        f"python -c \"$CEILING_CHILD\" H/data/incoming/{days[1]}/data.csv",
        f"python -c \"$TFDV_CHILD\" H/data/incoming/{days[1]}/data.csv OUT/stats.tfrecord",
        f"mlops --home H validate --json --date {days[0]} --cold   # warm-up, drift baseline; untimed",
        f"mlops --home H validate --json --date {days[1]} --cold --no-cache   # timed",
        f"mlops --home H worker start; mlops --home H validate --json --date {days[1]} --no-cache   # timed, "
        f"N <= {WARM_MAX_ROWS}; then worker stop",
        "# CEILING_CHILD:", *CEILING_CHILD.splitlines(), "# TFDV_CHILD:", *TFDV_CHILD.splitlines(),
    ]
    failed = [f"{way}_{rows}" for rows, out in results.items() for way in LABELS
              if out.get(way) and out[way]["failed"]]
    # Written even when a run failed (a FAILED cell): a 5M-row run takes hours, its other cells count.
    publish(args.results, SECTION, render(results, days, load, commands, args.target_sizes), tmp,
            args.keep or bool(failed))
    if failed:
        log(f"runs failed: {', '.join(failed)} (logs in {tmp})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
