"""Benchmark (issue 26): rows/second of batch scoring a span of 150k and 1.5M rows, side by side.

    .venv/bin/python bench/batch_scoring.py [--sizes 150000,1500000] [--rest-max-rows N]
        [--results PATH] [--keep] [--quick]

One home: a small first day (3000 rows) runs the pipeline once (`mlops run`, a short training) so a
model is pushed (version 1); then one day per size is seeded (`mlops data seed`, resampled with
jitter) and gated (`mlops validate`: the data gates and ExampleGen, so the span may be scored). Then,
per size, each in its own child process, over the same rows:

- ceiling: the SavedModel called in-process through the signature `mlops score` calls (the taxi
  model's `serving_features`) on the rows already in memory as input tensors (built untimed
  beforehand), in batches of 8192, after one warm-up call: only the model's work. As context,
  `serving_default` on the rows as serialized tf.Examples, timed the same way;
- ours: `mlops score --date D --json` (reads the CSV, encodes, calls the model in batches of 8192,
  writes the Parquet file, records ML Metadata). Its work rate is rows / (its own timer minus the
  model's load); its wall time (the process, imports included) is shown beside;
- scripted REST: what a user would script against the model server (`mlops serve`, started
  beforehand, untimed): read the CSV with csv.DictReader, type the cells, POST batches of 100 rows
  as JSON `instances` to `/v1/models/taxi:predict` one after the other on one keep-alive
  connection, keep the predictions. With --rest-max-rows N it runs on the first N rows only (rows/s
  does not depend on the span's length: each batch is the same work).

Targets: ours >= 0.8x the ceiling's rows/s and >= 3x scripted REST's. Ours' predictions are checked
against the ceiling's (same order) and REST's (first rows). Writes the "Batch scoring" section of
bench/RESULTS.md with the machine's load average (`uptime`) before and after. A missed target is
reported, not a failure; a way that failed is a FAILED cell (temp dir kept) and exit 1.
--quick: 3000 and 6000 rows, for a smoke test (writes to a temp RESULTS file unless --results).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CHILD_ENV, MLOPS, REPO, log, measure, publish, seed_span

SECTION = "## Batch scoring"
PYTHON = REPO / ".venv" / "bin" / "python"
SIZES = (150000, 1500000)
QUICK_SIZES = (3000, 6000)
MODEL_ROWS = 3000
CEILING_TARGET, REST_TARGET = 0.8, 3.0
REST_BATCH = 100
RESULT = "RESULT "
FIRST_DAY = dt.date(2026, 10, 1)

# The ceiling's child: the same signature `mlops score` calls, on input tensors built beforehand
# (untimed), one warm-up call, then only the calls are timed. serving_default on pre-serialized
# tf.Examples is timed too, as context.
CEILING_CHILD = """
import datetime as dt, json, sys, time
from pathlib import Path
import numpy as np, tensorflow as tf
from components.util.batch_predict import BATCH_SIZE, CsvExamples, tensors
from pipelines.scoring import _reader
from serving.servable import feature_spec_of
model_dir, folder, out = sys.argv[1:4]
model = tf.saved_model.load(model_dir, tags=["serve"])
signature, fn, rows, _ = _reader(model, Path(model_dir), Path(folder), dt.date(1970, 1, 1))
batches = [batch for _, batch in rows.batches(BATCH_SIZE)]
if isinstance(batches[0], dict):
    inputs = [tensors(batch) for batch in batches]
    run = lambda tensors: fn(**tensors)
else:
    inputs = [tf.constant(batch) for batch in batches]
    run = lambda tensor: fn(examples=tensor)
run(inputs[0])
started = time.perf_counter()
outputs = [run(tensors)["probabilities"].numpy() for tensors in inputs]
seconds = time.perf_counter() - started
np.save(out, np.concatenate(outputs).reshape(-1))
default = model.signatures["serving_default"]
serialized = [tf.constant(batch) for _, batch in CsvExamples(folder, feature_spec_of(default).kinds).batches(BATCH_SIZE)]
default(examples=serialized[0])
started = time.perf_counter()
for tensor in serialized:
    default(examples=tensor)["probabilities"].numpy()
default_seconds = time.perf_counter() - started
rows_in = sum(len(o) for o in outputs)
print("RESULT " + json.dumps({"rows": rows_in, "seconds": seconds, "signature": signature,
                              "default_seconds": default_seconds}))
"""

# The scripted REST client: what a user writes with the standard library.
REST_CHILD = """
import csv, http.client, json, sys, time
import numpy as np
port, path, kinds_json, batch, limit, out = sys.argv[1:7]
kinds, batch, limit = json.loads(kinds_json), int(batch), int(limit)
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
started = time.perf_counter()
predictions, instances, rows = [], [], 0

def send():
    conn.request("POST", "/v1/models/taxi:predict", json.dumps({"instances": instances}),
                 {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    predictions.extend(p[0] for p in answer["predictions"])

with open(path, newline="") as handle:
    for raw in csv.DictReader(handle):
        row = {}
        for name, value in raw.items():
            kind = kinds.get(name)
            if kind is None or value == "":
                continue
            row[name] = int(value) if kind == "INT" else float(value) if kind == "FLOAT" else value
        instances.append(row)
        rows += 1
        if len(instances) == batch:
            send()
            instances = []
        if limit and rows >= limit:
            break
if instances:
    send()
seconds = time.perf_counter() - started
np.save(out, np.array(predictions))
print("RESULT " + json.dumps({"rows": rows, "seconds": seconds}))
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def result_of(run: dict) -> dict:
    line = next((l for l in reversed(run["lines"]) if l.startswith(RESULT)), None)
    return json.loads(line[len(RESULT):]) if line else {}


def mlops(home: Path, *args: str, log_file: Path) -> dict:
    return measure(" ".join(args[:3]), [str(MLOPS), "--home", str(home), *args], log_file, echo=lambda _: False)


def model_kinds(model_dir: Path) -> dict:
    """The model's parse spec as schema kinds (INT, FLOAT, BYTES), read in a child (TensorFlow)."""
    code = ("import json, sys, tensorflow as tf\nfrom serving.servable import feature_spec_of\n"
            "fn = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
            "print(json.dumps(dict(feature_spec_of(fn).kinds)))")
    done = subprocess.run([str(PYTHON), "-c", code, str(model_dir)], capture_output=True, text=True, check=True,
                          env=CHILD_ENV, cwd=REPO)
    return {k: {"int64": "INT", "float": "FLOAT"}.get(v, "BYTES") for k, v in json.loads(done.stdout.splitlines()[-1]).items()}


def start_server(home: Path, log_file: Path):
    from serving.net import free_port  # standard library only

    port = free_port()
    proc = subprocess.Popen([str(MLOPS), "--home", str(home), "serve", "--rest-port", str(port), "--grpc-port", "0"],
                            stdout=open(log_file, "w"), stderr=subprocess.STDOUT, env=CHILD_ENV)
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/taxi", timeout=2) as answer:
                if any(s["state"] == "AVAILABLE" for s in json.loads(answer.read())["model_version_status"]):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the model server did not serve within 120 s: {log_file}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--rest-max-rows", type=int, default=0, help="scripted REST on the first N rows only (0: all)")
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--quick", action="store_true", help="small spans, a smoke test")
    args = parser.parse_args()
    sizes = QUICK_SIZES if args.quick else tuple(int(s) for s in args.sizes.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    results = args.results or (tmp / "RESULTS.md" if args.quick else REPO / "bench" / "RESULTS.md")
    load_before = uptime()
    log(f"load before: {load_before}")
    home, logs = tmp / "home", tmp / "logs"
    logs.mkdir(parents=True)
    import numpy as np

    seed_span(home, MODEL_ROWS, FIRST_DAY.isoformat())
    trained = mlops(home, "run", "--date", FIRST_DAY.isoformat(), "--train-steps", "100", "--eval-steps", "10",
                    "--auc-floor", "0", "--cold", log_file=logs / "run.log")
    model_dir = home / "serving" / "models" / "taxi" / "1"
    if trained["code"] != 0 or not model_dir.is_dir():
        raise SystemExit(f"the pipeline pushed no model: {logs / 'run.log'}")
    server, port = start_server(home, logs / "serve.log")
    rows_out, failed = [], False
    try:
        kinds = model_kinds(model_dir)
        for offset, size in enumerate(sizes, start=1):
            day = (FIRST_DAY + dt.timedelta(days=offset)).isoformat()
            span_csv = seed_span(home, size, day, seed=42 + offset)
            gated = mlops(home, "validate", "--date", day, "--json", "--cold", log_file=logs / f"validate-{size}.log")
            if gated["code"] != 0:
                raise SystemExit(f"span {day} did not pass the gates: {logs / f'validate-{size}.log'}")
            row = {"size": size}
            ceiling = measure(f"ceiling {size}", [str(PYTHON), "-c", CEILING_CHILD, str(model_dir), str(span_csv.parent),
                                                  str(tmp / f"ceiling-{size}.npy")], logs / f"ceiling-{size}.log",
                              echo=lambda _: False, env={**CHILD_ENV, "PYTHONPATH": str(REPO)})
            row["ceiling"] = result_of(ceiling)
            ours = mlops(home, "score", "--date", day, "--json", log_file=logs / f"score-{size}.log")
            text = "\n".join(ours["lines"])
            done = json.loads(text[text.index("{\n"):]) if ours["code"] == 0 and "{\n" in text else {}
            if done:
                row["ours"] = {"rows": done["rows"], "seconds": done["seconds"] - done["load_seconds"],
                               "wall": ours["seconds"], "load": done["load_seconds"]}
                import pyarrow.parquet as pq

                scored = pq.read_table(done["path"]).column("probabilities").to_numpy()
                reference = np.load(tmp / f"ceiling-{size}.npy")
                row["max_diff_ceiling"] = float(np.max(np.abs(scored - reference))) if len(scored) == len(reference) else None
            limit = min(size, args.rest_max_rows) if args.rest_max_rows else 0
            rest = measure(f"rest {size}", [str(PYTHON), "-c", REST_CHILD, str(port), str(span_csv), json.dumps(kinds),
                                            str(REST_BATCH), str(limit), str(tmp / f"rest-{size}.npy")],
                           logs / f"rest-{size}.log", echo=lambda _: False)
            row["rest"] = result_of(rest)
            if done and row["rest"]:
                answered = np.load(tmp / f"rest-{size}.npy")
                row["max_diff_rest"] = float(np.max(np.abs(scored[:len(answered)] - answered)))
            failed |= not (row["ceiling"] and done and row["rest"])
            rows_out.append(row)
    finally:
        from common import terminate

        terminate(server)
    load_after = uptime()
    section = render(rows_out, load_before, load_after, args)
    publish(results, SECTION, section, tmp, args.keep or failed)
    return 1 if failed else 0


def rate(way: dict) -> float:
    return way["rows"] / way["seconds"] if way and way.get("seconds") else 0.0


def render(rows, load_before: str, load_after: str, args) -> str:
    def cell(value: float) -> str:
        return f"{value:,.0f}" if value else "FAILED"

    lines = [SECTION, "",
             f"`bench/batch_scoring.py{' --quick' if args.quick else ''}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             "2 cores). One pushed taxi model; per size a seeded span that passed the data gates. rows/s of: the "
             "ceiling (the SavedModel called in-process through the signature ours calls, serving_features, on input "
             "tensors built beforehand, batches of 8192, after a warm-up call: model work only; in brackets "
             "serving_default on serialized tf.Examples, as context); ours (`mlops score`: CSV read, encode, model, Parquet write, ML Metadata; "
             "its own timer without the model load, and its process wall time beside); scripted REST (csv.DictReader, "
             f"batches of {REST_BATCH} rows as JSON instances to `mlops serve`, one keep-alive connection).", "",
             "| rows | ceiling rows/s (serving_default on tf.Examples, context) | ours rows/s (work) | ours wall s (rows/s) | scripted REST rows/s (rows sent) "
             f"| ours / ceiling (target >= {CEILING_TARGET}) | ours / REST (target >= {REST_TARGET}) | max abs diff vs ceiling, REST |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        ceiling, ours, rest = rate(row.get("ceiling")), rate(row.get("ours")), rate(row.get("rest"))
        wall = row.get("ours", {}).get("wall", 0)
        by_ceiling = ours / ceiling if ceiling and ours else 0
        by_rest = ours / rest if rest and ours else 0
        mark = lambda value, target: f"{value:.2f}x {'met' if value >= target else 'MISSED'}" if value else "FAILED"
        default = row["ceiling"]["rows"] / row["ceiling"]["default_seconds"] if row.get("ceiling") else 0
        lines.append(f"| {row['size']:,} | {cell(ceiling)} ({cell(default)}) | {cell(ours)} | "
                     f"{wall:.1f} ({row['size'] / wall:,.0f}) | {cell(rest)} ({row.get('rest', {}).get('rows', 0):,}) | "
                     f"{mark(by_ceiling, CEILING_TARGET)} | {mark(by_rest, REST_TARGET)} | "
                     f"{row.get('max_diff_ceiling', float('nan')):.1e}, {row.get('max_diff_rest', float('nan')):.1e} |")
    lines += ["", f"Load average before: `{load_before}`; after: `{load_after}`."]
    if any(rate(r.get("ours")) < CEILING_TARGET * rate(r.get("ceiling")) for r in rows):
        lines += ["", "Where ours loses against this ceiling on 2 cores (the CPU it spends reading, typing and writing "
                  "the rows, and what is not overlapped): "
                  "[docs/batch-scoring.md](../docs/batch-scoring.md#speed-and-why-not-bulkinferrer)."]
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
