"""The rolling-window scenario of bench/pipeline_vs_stock.py (issue 23).

Seeds window+1 days of R rows. Ours: the days before the newest pass the data gates first
(`mlops validate --cold` each, timed apart), then the cold window night (`mlops run --date D
--window-days W`, trains on the older days, evaluates on D held out) and the next night (D+1,
the analyzer cache from night D covers every old span). Stock: the unmodified TFX taxi example on
the same W days' CSV files in one input folder, at the same train steps. Both final models are
scored on D's rows by one child (bench/score_auc.py). Writes the "Rolling window vs stock TFX
(issue 23)" section.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import psutil
from common import MLOPS, count_rows, log, measure, seed_home
from pipeline_runs import (PYTHON, STOCK_BATCH_SIZE, STOCK_CHILD, STOCK_TRAIN_STEPS, fmt, outside, run_outputs,
                           run_ours, run_stock, stock_pipeline_file)
from pipelines.config import PipelineConfig
from pipelines.data import bundled_csv_path

SECTION = "## Rolling window vs stock TFX (issue 23)"
SCORER = Path(__file__).with_name("score_auc.py")
OURS_BATCH_SIZE = next(f.default for f in dataclasses.fields(PipelineConfig) if f.name == "batch_size")
VALIDATE_VERDICTS = {0: "passes", 3: "blocked"}  # `mlops validate` exit codes; others are failures
NEXT_NIGHT_TARGET, STOCK_TARGET = 0.6, 0.8


def seeded_days(newest: dt.date, window_days: int) -> list:
    """The seeded dates, oldest first: the cold night's window (ending `newest`) and the next night."""
    return [(newest + dt.timedelta(days=n)).isoformat() for n in range(1 - window_days, 2)]


def gate_days(home: Path, days: list, logs: Path) -> list:
    """`mlops validate --cold` per older day (what each day's own night would have gated)."""
    gates = []
    for day in days:
        cmd = [str(MLOPS), "--home", str(home), "validate", "--date", day, "--json", "--cold"]
        result = measure(f"window_gate_{day}", cmd, logs / f"window_gate_{day}.log", echo=lambda l: False)
        gates.append(dict(result, day=day, verdict=VALIDATE_VERDICTS.get(result["code"], "FAILED")))
    return gates


def only(pattern_root: Path, pattern: str) -> Path:
    found = sorted(pattern_root.glob(pattern))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one {pattern} under {pattern_root}, found {len(found)}: {found}")
    return found[0]


def score(home: Path, stock: Path, newest: str, ours: dict, logs: Path) -> dict:
    """Both final models (the Trainers' SavedModels) on the newest span's rows; stock trained on its
    train split of every day, so the rows in its eval split are the ones neither model saw."""
    stock_root = stock / "pipeline_root"
    cmd = [str(PYTHON), str(SCORER), "--csv", str(home / "data" / "incoming" / newest / "data.csv"),
           "--model", "ours", str(Path(ours["Model"]["uri"]) / "Format-Serving"), ours["TransformGraph"]["uri"],
           "--model", "stock", str(only(stock_root, "Trainer/model/*/Format-Serving")),
           str(only(stock_root, "Transform/transform_graph/*")),
           "--held-out", "stock", str(only(stock_root, "CsvExampleGen/examples/*/Split-eval"))]
    result = measure("window_score_auc", cmd, logs / "window_score_auc.log", echo=lambda l: l.startswith("RESULT "))
    line = next((l for l in reversed(result["lines"]) if l.startswith("RESULT ")), None)
    return dict(result, report=json.loads(line[len("RESULT "):]) if line else {})


def run_window(args, tmp: Path, logs: Path) -> dict:
    days = seeded_days(args.date, args.window_days)
    newest, next_night = days[-2], days[-1]
    stock_pipeline = stock_pipeline_file(tmp, args.window_train_steps)  # fails before the long runs, if it must
    home, stock = tmp / "home_window", tmp / "stock_window"
    log(f"window: seeding {len(days)} days of {args.window_rows} rows ({days[0]}..{next_night})")
    seed_home(home, args.window_rows, next_night, days=len(days))
    (stock / "data").mkdir(parents=True)
    for day in days[:-1]:  # the cold night's window, one file per day in one input folder
        shutil.copy(home / "data" / "incoming" / day / "data.csv", stock / "data" / f"{day}.csv")
    out = {"days": days, "gates": gate_days(home, days[:-2], logs)}
    flags = ("--window-days", str(args.window_days), "--train-steps", str(args.window_train_steps))
    for key, day in (("cold", newest), ("next", next_night)):
        load = os.getloadavg()[0]
        out[key] = dict(run_ours(f"window_{key}", home, day, logs, extra=flags, beam=args.beam_mode), load=load)
        run_id = out[key]["summary"].get("run_id")
        out[key]["outputs"] = run_outputs(home, run_id) if run_id else {}
    out["stock_pipeline"] = stock_pipeline
    load = os.getloadavg()[0]
    out["stock"] = dict(run_stock("stock_window", stock, logs, out["stock_pipeline"], beam=args.beam_mode), load=load)
    cold_outputs = out["cold"]["outputs"]
    if out["stock"]["code"] == 0 and {"Model", "TransformGraph"} <= cold_outputs.keys():
        try:
            out["score"] = score(home, stock, newest, cold_outputs, logs)
        except FileNotFoundError as err:  # reported as the failed run window_score_auc
            log(f"window: cannot score the models: {err}")
    return out


def failed_runs(out: dict) -> list:
    runs = {"window_cold": out["cold"], "window_next": out["next"], "stock_window": out["stock"]}
    runs.update({f"window_gate_{g['day']}": g for g in out["gates"]})
    failed = [name for name, r in runs.items() if r["code"] not in (0, 3 if name.startswith("window_gate") else 0)]
    score_run = out.get("score")
    return failed + ([] if score_run and score_run["code"] == 0 and score_run["report"] else ["window_score_auc"])


def _ok(met) -> str:
    return "not measured" if met is None else ("MET" if met else "**MISSED**")


def _transform_spans(result: dict) -> str:
    graph = result.get("outputs", {}).get("TransformGraph", {})
    if "analyzed_spans" not in graph:
        return "not recorded"
    analyzed, cached = json.loads(graph["analyzed_spans"]), json.loads(graph.get("cached_spans") or "[]")
    return f"{len(analyzed)} analyzed / {len(cached)} from the cache"


def _window(result: dict) -> str:
    window = result.get("summary", {}).get("window") or {}
    if not window:
        return "-"
    train = window["train_spans"]
    skipped = f"; skipped {len(window['skipped'])}" if window.get("skipped") else ""
    return f"train {train[0]}..{train[-1]} ({len(train)} spans), eval {window['eval_span']}{skipped}"


def pushed(result: dict) -> str:
    version = result.get("summary", {}).get("pushed_version")
    return f"yes, version {version}" if version else "no"


def scored(models: dict, name: str, key: str) -> str:
    return _auc(models[name][key]) if name in models else "not measured"


def _auc(value) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def comparison(out: dict) -> dict:
    """The three targets' ratios and whether each is met (None: not measured)."""
    cold, nxt, stock = out["cold"], out["next"], out["stock"]
    report = (out.get("score") or {}).get("report") or {}
    models = report.get("models", {})
    next_ratio = nxt["seconds"] / cold["seconds"] if not (cold["code"] or nxt["code"]) else None
    stock_ratio = cold["seconds"] / stock["seconds"] if not (cold["code"] or stock["code"]) else None
    ours_auc, stock_auc = (models.get(m, {}).get("auc_held_out") for m in ("ours", "stock"))
    auc_met = None if ours_auc is None or stock_auc is None else ours_auc >= stock_auc
    return dict(next_ratio=next_ratio, stock_ratio=stock_ratio, ours_auc=ours_auc, stock_auc=stock_auc,
                next_met=None if next_ratio is None else next_ratio <= NEXT_NIGHT_TARGET,
                stock_met=None if stock_ratio is None else stock_ratio <= STOCK_TARGET, auc_met=auc_met)


def _table(args, out: dict) -> list:
    cold, nxt, stock = out["cold"], out["next"], out["stock"]
    days, rows = out["days"], args.window_rows
    report = (out.get("score") or {}).get("report") or {}
    models = report.get("models", {})
    steps_note = "" if args.window_train_steps == STOCK_TRAIN_STEPS else " (a copy of its pipeline file, num_steps changed)"
    own_auc = lambda r: _auc(r["summary"].get("metrics", {}).get("overall", {}).get("auc")) if r["code"] == 0 else "-"  # noqa: E731
    return [
        f"| | stock TFX example | ours, cold window night ({days[-2]}) | ours, next night ({days[-1]}) |",
        "|---|---|---|---|",
        f"| data | {len(days) - 1} days x {rows:,} rows ({days[0]}..{days[-2]}) in one folder, split 2:1 train/eval "
        f"| {_window(cold)} | {_window(nxt)} |",
        f"| train steps x batch size | {args.window_train_steps}{steps_note} x {STOCK_BATCH_SIZE} "
        f"| {args.window_train_steps} x {OURS_BATCH_SIZE} | {args.window_train_steps} x {OURS_BATCH_SIZE} |",
        f"| 1-minute load average at its start | {stock['load']:.2f} | {cold['load']:.2f} | {nxt['load']:.2f} |",
        f"| wall s | {fmt(stock, 'seconds')} | {fmt(cold, 'seconds')} | {fmt(nxt, 'seconds')} |",
        f"| peak RSS MB (largest process, getrusage) | {fmt(stock, 'rss_mb')} | {fmt(cold, 'rss_mb')} | {fmt(nxt, 'rss_mb')} |",
        f"| peak RSS MB (process tree, psutil 0.2 s polls) | {fmt(stock, 'tree_mb')} | {fmt(cold, 'tree_mb')} "
        f"| {fmt(nxt, 'tree_mb')} |",
        "| Transform s | " + " | ".join(f"{r['nodes'].get('Transform', float('nan')):.1f}" if r["code"] == 0 else "-"
                                     for r in (stock, cold, nxt)) + " |",
        f"| Transform: spans analyzed / read from the analyzer cache | all {len(days) - 1} days as one dataset, no cache "
        f"| {_transform_spans(cold)} | {_transform_spans(nxt)} |",
        f"| s outside nodes (start-up, imports, summary) | {outside(stock)} | {outside(cold)} | {outside(nxt)} |",
        f"| AUC on {days[-2]}, all {report.get('scored', 0):,} scored rows (bench/score_auc.py) "
        f"| {scored(models, 'stock', 'auc')} | {scored(models, 'ours', 'auc')} | - |",
        f"| AUC on the {report.get('held_out', 0):,} rows of {days[-2]} neither model trained on (stock's eval split) "
        f"| {scored(models, 'stock', 'auc_held_out')} | {scored(models, 'ours', 'auc_held_out')} | - |",
        f"| AUC in the run's own evaluation (GatedEvaluator, TFMA's AUC, its span's eval split) | - (its eval config has BinaryAccuracy only) "
        f"| {own_auc(cold)} | {own_auc(nxt)} |",
        f"| pushed a model version? | {'yes' if stock.get('versions') else 'no'} "
        "| " + " | ".join(pushed(r) for r in (cold, nxt)) + " |",
    ]


def _targets(args, out: dict) -> list:
    c = comparison(out)
    ratio = lambda value: "-" if value is None else f"{value:.2f}x"  # noqa: E731
    report = (out.get("score") or {}).get("report") or {}
    equal_steps = "" if args.window_train_steps == STOCK_TRAIN_STEPS else (
        f" -- **at {args.window_train_steps} train steps, not the issue's {STOCK_TRAIN_STEPS}**")
    return [
        f"- ours next night / ours cold window night: **{ratio(c['next_ratio'])}** (target <= {NEXT_NIGHT_TARGET}x): "
        f"{_ok(c['next_met'])}",
        f"- ours cold window night / stock, equal train steps: **{ratio(c['stock_ratio'])}** (target <= {STOCK_TARGET}x): "
        f"{_ok(c['stock_met'])}{equal_steps}",
        "- AUC on the newest span's rows neither model trained on (target: ours >= stock): not measured (no scores)"
        if not report else
        f"- AUC on the newest span's rows neither model trained on: ours **{_auc(c['ours_auc'])}** vs stock "
        f"**{_auc(c['stock_auc'])}** (target: ours >= stock): {_ok(c['auc_met'])}" + (
            f" ({report['held_out']:,} of {report['rows']:,} rows; label tips > 0.2 x fare with fare > 0, "
            f"{report['positives']:,} positives in the span; {report['fare_zero_tipped']} rows have a 0 fare and a "
            "tip, where the stock module's label would say big tipper)"),
    ]


def _gates(out: dict) -> str:
    gates = out["gates"]
    if not gates:
        return "- Data gates before the cold night: none (a window of 1 day)."
    total = sum(g["seconds"] for g in gates)
    verdicts = ", ".join(f"{g['day']} {g['verdict']} {g['seconds']:.1f}s" for g in gates)
    return (f"- Data gates before the cold night (setup, not in the night's wall time): {len(gates)} x "
            f"`mlops validate --cold`, {total:.1f} s in all ({verdicts}); peak RSS "
            f"{max(g['rss_mb'] for g in gates):.0f} MB.")


def _nodes(out: dict) -> list:
    runs = (("stock", out["stock"]), ("ours cold night", out["cold"]), ("ours next night", out["next"]))
    table = ["| pipeline | node | s |", "|---|---|---|"]
    for label, result in runs:
        table += [f"| {label} | {node} | {seconds:.1f} |" for node, seconds in result["nodes"].items() if seconds >= 0.05]
    return table


def commands(args, out: dict) -> list:
    days, steps = out["days"], args.window_train_steps
    run = f"--window-days {args.window_days} --train-steps {steps} --beam-mode {args.beam_mode} --json --cold"
    stock_file, stock_note = "<tfx>/examples/chicago_taxi_pipeline/taxi_pipeline_native_keras.py", ""
    if steps != STOCK_TRAIN_STEPS:
        stock_file = f"T/{out['stock_pipeline'].name}"
        stock_note = f"   # T/...: a copy of the stock pipeline file with num_steps={STOCK_TRAIN_STEPS} -> {steps}"
    return [
        f"mlops --home H data seed --days {len(days)} --rows-per-day {args.window_rows} --end {days[-1]}",
        f"cp H/data/incoming/DAY/data.csv S/data/DAY.csv   # DAY = {days[0]}..{days[-2]}, stock's data_root",
        *(f"mlops --home H validate --date {day} --json --cold   # setup: gate the older day" for day in days[:-2]),
        f"mlops --home H run --date {days[-2]} {run}   # cold window night",
        f"mlops --home H run --date {days[-1]} {run}   # next night (analyzer cache)",
        "# untimed, per night: its Model and TransformGraph (uri, cached_spans, analyzed_spans) from H's ML Metadata",
        f"python -c \"$STOCK_CHILD\" {stock_file} <tfx>/examples/chicago_taxi_pipeline/taxi_utils_native_keras.py "
        f"S {args.beam_mode}{stock_note}",
        f"python bench/score_auc.py --csv H/data/incoming/{days[-2]}/data.csv --model ours <cold night model>/Format-Serving "
        "<its transform graph> --model stock S/pipeline_root/Trainer/model/*/Format-Serving "
        "S/pipeline_root/Transform/transform_graph/* --held-out stock S/pipeline_root/CsvExampleGen/examples/*/Split-eval",
    ]


def resampled(rows: int) -> bool:
    """Whether seeding this many rows in all resamples the bundled sample (with jitter)."""
    return rows > count_rows(bundled_csv_path())


def render(args, out: dict, load: tuple) -> str:
    days = out["days"]
    mem = psutil.virtual_memory().total / 2**30
    return "\n".join([
        SECTION, "",
        f"Date: {dt.datetime.now().isoformat(timespec='minutes')}. Machine: {os.cpu_count()} CPUs (nproc), "
        f"{mem:.1f} GiB RAM; load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end. Other work may "
        "have run on this machine at the same time, so treat single-run seconds as +-10-20%.",
        f"{len(days)} seeded days of {args.window_rows:,} rows (rows beyond the bundled ~15k are resampled with "
        f"jitter). Ours: the {len(days) - 2} older days pass the data gates first (`mlops validate`, as their own "
        f"nights would have), then `mlops run --window-days {args.window_days}` in a fresh process per night "
        f"(`--cold`): the cold window night {days[-2]} (trains on the older spans, evaluates on {days[-2]} held out, "
        f"writes the analyzer cache), then the next night {days[-1]} (re-analyzes only its new span). Stock: the "
        f"TFX taxi example (LocalDagRunner, unmodified module file) on the same {len(days) - 1} days' CSV files in "
        "one input folder; it trains on the train split of every day, including the newest. Both: Beam DirectRunner "
        f"`--direct_running_mode={args.beam_mode}`, SQLite ML Metadata, {args.window_train_steps} train steps. AUC: "
        "each pipeline's final model (its Trainer's SavedModel, `serving_default` on serialized raw tf.Examples) "
        f"scored on the rows of {days[-2]} by one child; the target is judged on the rows neither model trained on "
        "(ours held out the whole span; stock's eval split of it, matched by feature values)." + (
            " At this size every day resamples the same ~15k bundled trips with jitter, so held-out rows have "
            "near-copies in both models' training days." if resampled(args.window_rows * (len(days) - 1)) else ""),
        "",
        *_table(args, out), "", *_targets(args, out), _gates(out), "",
        "Seconds per node (stock: timer around `Launcher.launch`; ours: `mlops run` progress lines; nodes under "
        "0.05 s left out):", "", *_nodes(out), "",
        "Commands (H = a fresh temp home; S = a temp dir for stock; T = the temp dir; TF_USE_LEGACY_KERAS=1):", "",
        "```", *commands(args, out), "# STOCK_CHILD (imports the example, runs _create_pipeline with LocalDagRunner):",
        *STOCK_CHILD.splitlines(), "```", "",
    ])
