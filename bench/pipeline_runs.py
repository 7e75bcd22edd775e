"""Timed runs of our pipeline and of the stock TFX Chicago taxi example, shared by the scenarios of
bench/pipeline_vs_stock.py (one span vs stock; a rolling window vs stock on the same days)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from common import MLOPS, REPO, measure
from pipelines.data import bundled_csv_path
from serving.versions import list_versions

# The example inside the installed wheel, found without importing tfx (TensorFlow costs seconds).
TAXI = bundled_csv_path().parents[2]  # .../examples/chicago_taxi_pipeline
STOCK_PIPELINE = TAXI / "taxi_pipeline_native_keras.py"
STOCK_MODULE = TAXI / "taxi_utils_native_keras.py"
PYTHON = REPO / ".venv" / "bin" / "python"
STOCK_TRAIN_STEPS = 1000  # hard-coded in the stock example's Trainer
STOCK_TRAIN_ARGS = f"train_args=trainer_pb2.TrainArgs(num_steps={STOCK_TRAIN_STEPS})"
STOCK_BATCH_SIZE = 40  # hard-coded in the stock module file's run_fn
BEAM = "in_memory"
NODE_LINE = re.compile(r"\[\d+/\d+\] (\S+) (\w+) in ([\d.]+)s$")  # `[9/15] Transform complete in 20.7s`

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


def json_document(lines: list) -> dict:
    """The JSON document a `--json` command prints after its progress lines ({} when there is none)."""
    start = next((i for i, l in enumerate(lines) if l == "{"), None)
    return json.loads("\n".join(lines[start:])) if start is not None else {}


def run_ours(name: str, home: Path, date: str, logs: Path, cold: bool = True, extra: tuple = (),
             beam: str = BEAM) -> dict:
    """`mlops run`: --cold is a fresh process like stock's (peak RSS visible); warm runs in the
    home's warm worker, the product's default (the worker is started untimed beforehand).
    `extra`: more `mlops run` options (e.g. --window-days, --train-steps)."""
    if not cold:
        subprocess.run([str(MLOPS), "--home", str(home), "worker", "start"], check=True, capture_output=True)
    cmd = [str(MLOPS), "--home", str(home), "run", "--date", date, "--beam-mode", beam, "--json", *extra,
           *(["--cold"] if cold else [])]
    result = measure(name, cmd, logs / f"{name}.log", echo=lambda l: l.startswith(("[", "run ")))
    result["summary"] = json_document(result["lines"])  # the JSON summary follows the progress lines
    result["nodes"] = {m[1]: float(m[3]) for m in map(NODE_LINE.match, result["lines"]) if m}
    result["versions"] = list_versions(home / "serving" / "models" / "taxi")
    return result


def run_outputs(home: Path, run_id: str) -> dict:
    """What one `mlops run` wrote, read from the home's ML Metadata (untimed; a run that pushed
    nothing has no lineage chain to ask `mlops lineage` for): {type name: {"uri", custom property:
    value}} of its output artifacts (the last of each type), e.g. the Model's uri and the
    TransformGraph's cached_spans."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from pipelines.config import ProjectPaths

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(ProjectPaths(home).metadata_path)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return {}
    executions = store.get_executions_by_context(context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    produced = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
    types = {t.id: t.name for t in store.get_artifact_types()}
    out = {}
    for artifact in store.get_artifacts_by_id(produced):
        props = {k: getattr(v, v.WhichOneof("value")) for k, v in artifact.custom_properties.items() if v.WhichOneof("value")}
        out[types[artifact.type_id]] = dict(props, uri=artifact.uri)
    return out


def stock_pipeline_file(tmp: Path, train_steps: int) -> Path:
    """The stock example's pipeline file: the installed one when `train_steps` is its own 1000, else
    a copy in `tmp` with that one constant changed (the module file stays the installed one)."""
    if train_steps == STOCK_TRAIN_STEPS:
        return STOCK_PIPELINE
    text = STOCK_PIPELINE.read_text()
    if text.count(STOCK_TRAIN_ARGS) != 1:
        raise SystemExit(f"{STOCK_PIPELINE} no longer has exactly one `{STOCK_TRAIN_ARGS}`: cannot set stock's "
                         f"train steps to {train_steps}; run with the stock's {STOCK_TRAIN_STEPS}")
    copy = tmp / f"taxi_pipeline_native_keras_{train_steps}_steps.py"
    copy.write_text(text.replace(STOCK_TRAIN_ARGS, f"train_args=trainer_pb2.TrainArgs(num_steps={train_steps})"))
    return copy


def run_stock(name: str, root: Path, logs: Path, pipeline_file: Path = STOCK_PIPELINE, beam: str = BEAM) -> dict:
    cmd = [str(PYTHON), "-c", STOCK_CHILD, str(pipeline_file), str(STOCK_MODULE), str(root), beam]
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
