"""The nightly DAG through real Airflow 3 (`airflow dags test`), real TFX and real ML Metadata.

One sequence on small spans, shared by the tests below (each asserts one behaviour):
  1. span 1: every task succeeds, version 1 is pushed;
  2. span 1 again: every task succeeds, nothing new is pushed;
  3. span 2, with the Trainer's process SIGKILLed mid-run: Airflow retries it and the run
     completes (gates relaxed so that it pushes version 2);
  4. the `model_rollback` DAG: version 3 serves version 1's model, audited in ML Metadata;
  5. span 3 misses a required column: the run fails at validation, Transform/Trainer/Pusher
     never run, the served version stays 3.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from serving import versions
from pipelines import airflow_env
from pipelines.taxi.model_options import hyperparameters
from tests import prepared
from tests.conftest import DAY1, DAY2, FAST_RUN_ARGS, SMALL_ROWS, make_home, mlops, readonly_store

DAY3 = DAY2 + dt.timedelta(days=1)
DAY4 = DAY3 + dt.timedelta(days=1)
LENIENT = ("--auc-floor", "0.0", "--min-improvement", "-1.0", "--slice-margin", "1.0")


def airflow_run(home: Path, day, *extra: str, env=None) -> subprocess.CompletedProcess:
    """`mlops airflow run`: `airflow dags test nightly_retrain <day>` plus the run summary.

    Task states are read at once: `airflow dags test` replaces a logical date's earlier run."""
    result = mlops(home, "airflow", "run", "--date", day.isoformat(), *FAST_RUN_ARGS, *extra,
                   check=False, timeout=1100, env=env)
    result.states = task_states(home, airflow_run_id(result)) if "DAG run " in result.stdout else {}
    return result


def airflow_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(airflow_env.airflow_bin()), *args], capture_output=True, text=True,
                          timeout=600, env=airflow_env.environment(home))


def task_states(home: Path, run_id: str) -> dict:
    out = airflow_cli(home, "tasks", "states-for-dag-run", "nightly_retrain", run_id, "-o", "json").stdout
    rows = json.loads(out[out.index("["):])
    return {row["task_id"]: row for row in rows}


def airflow_run_id(result: subprocess.CompletedProcess) -> str:
    line = next(l for l in result.stdout.splitlines() if l.startswith("DAG run "))
    return line.split()[2].rstrip(":")


class Killer(threading.Thread):
    """SIGKILLs the process running `node` once, a few seconds after it started."""

    def __init__(self, home: Path, node: str, delay: float = 3.0):
        super().__init__(daemon=True)
        self.pid_file = home / "var" / "running" / f"{node}.pid"
        self.delay = delay
        self.killed = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            if self.pid_file.exists():
                time.sleep(self.delay)
                try:
                    pid = int(self.pid_file.read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
                    continue
                return
            time.sleep(0.2)


@prepared.setup("nightly", lane="airflow")
def _nightly(tmp_path_factory) -> dict:
    home = make_home(tmp_path_factory.mktemp("airflow"))
    mlops(home, "data", "make-span", "--date", DAY3.isoformat(), "--fault", "missing_column", "--column", "tips")
    bad_span = home / "data" / "incoming" / DAY3.isoformat() / "data.csv"
    bad_bytes = bad_span.read_bytes()
    mlops(home, "data", "make-span", "--date", DAY4.isoformat(), "--fault", "drift", "--severity", "2")
    models = home / "serving" / "models" / "taxi"
    fast_retry = {"MLOPS_RETRY_DELAY_SECONDS": "1"}
    out = {"home": home, "models": models}
    try:
        out["first"] = airflow_run(home, DAY1, "--auc-floor", "0.5")
        out["after_first"] = versions.list_versions(models)
        out["rerun"] = airflow_run(home, DAY1, "--auc-floor", "0.5")
        out["after_rerun"] = versions.list_versions(models)
        killer = Killer(home, "Trainer")
        killer.start()
        out["killed"] = airflow_run(home, DAY2, *LENIENT, env=fast_retry)
        killer.stop.set()
        out["killed_pid"] = killer.killed
        out["after_killed"] = versions.list_versions(models)
        out["rollback"] = airflow_cli(
            home, "dags", "test", "model_rollback",
            "--conf", json.dumps({"to_version": 1, "reason": "canary alert on v2", "requested_by": "on-call"}),
        )
        out["after_rollback"] = versions.list_versions(models)
        out["rollback_again"] = mlops(home, "rollback", "--to", "1", "--reason", "same again", check=False)
        out["after_rollback_again"] = versions.list_versions(models)
        out["bad"] = airflow_run(home, DAY3, *LENIENT, env=fast_retry)
        out["after_bad"] = versions.list_versions(models)
        out["bad_span_unchanged"] = bad_span.read_bytes() == bad_bytes
        out["drifted"] = airflow_run(home, DAY4, *LENIENT, env=fast_retry)
        out["after_drifted"] = versions.list_versions(models)
        return out
    finally:
        mlops(home, "worker", "stop", check=False)


@pytest.fixture(scope="module")
def nightly(request) -> dict:
    return prepared.result(request, "nightly")


def test_first_span_every_task_succeeds_and_version_1_is_pushed(nightly):
    result = nightly["first"]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    states = result.states
    manifest = json.loads((airflow_env.DAGS_FOLDER / "taxi_manifest.json").read_text())
    # One task per node, and the teardown that pushes the run's metrics.
    assert set(states) == {n["id"] for n in manifest["nodes"]} | {"report_metrics"}
    assert {row["state"] for row in states.values()} == {"success"}
    assert nightly["after_first"] == [1]
    # The same end-of-run summary as `mlops run`, for the TFX run id derived from the Airflow run.
    assert f"run nightly_retrain__{airflow_run_id(result)}" in result.stdout
    assert "pushed:    version 1" in result.stdout


def _recorded(home: Path, run_id: str) -> tuple:
    """({node: [custom properties of its executions]}, the pipeline_run context's custom properties)."""
    store = readonly_store(home)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    assert context is not None, run_id
    node_type = store.get_context_type("node").id
    by_node = {}
    for execution in store.get_executions_by_context(context.id):
        node = next(c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id) if c.type_id == node_type)
        by_node.setdefault(node, []).append({k: v.string_value for k, v in execution.custom_properties.items()
                                             if k.startswith("airflow_") or k == "code_version"})
    return by_node, {k: v.string_value for k, v in context.custom_properties.items()}


def test_every_execution_records_its_airflow_task_and_the_run_its_code_and_config(nightly):
    home = nightly["home"]
    run_id = f"nightly_retrain__{airflow_run_id(nightly['killed'])}"
    by_node, run = _recorded(home, run_id)
    for node, executions in by_node.items():
        for props in executions:
            assert props["airflow_dag_id"] == "nightly_retrain" and props["airflow_task_id"] == node, (node, props)
            assert props["airflow_run_id"] == airflow_run_id(nightly["killed"]), props
            assert props["code_version"].startswith(("git:", "package:")), props
    # The Trainer killed in its first try finished in the second: its execution says so.
    assert [p["airflow_try_number"] for p in by_node["Trainer"]][-1] == "2", by_node["Trainer"]
    config = json.loads(run["run_config"])
    assert config["span"] == DAY2.isoformat(), config
    assert config["train_steps"] == int(FAST_RUN_ARGS[FAST_RUN_ARGS.index("--train-steps") + 1]), config
    assert config["gates"]["min_relative_improvement"] == -1.0, config  # LENIENT's --min-improvement
    assert {"eval_steps", "strategy", "gates", "schema_sha256"} <= set(config) and len(config["schema_sha256"]) == 16
    assert run["code_version"] == by_node["Trainer"][-1]["code_version"]


def test_same_span_again_pushes_nothing(nightly):
    result = nightly["rerun"]
    assert result.returncode == 0, result.stdout[-4000:]
    assert nightly["after_rerun"] == [1]
    assert "pushed:    nothing" in result.stdout
    assert "CsvExampleGen:cached" in result.stdout and "Trainer:cached" in result.stdout


def test_a_sigkilled_trainer_is_retried_by_airflow_and_the_run_completes(nightly):
    result = nightly["killed"]
    assert nightly["killed_pid"], "the Trainer's pid file never appeared"
    assert result.returncode == 0, result.stdout[-6000:]
    states = result.states
    assert states["Trainer"]["state"] == "success"
    # Airflow started the Trainer task twice: the killed try, then the retry that succeeded.
    assert result.stdout.count("task Trainer ...") == 2, result.stdout[-6000:]
    assert nightly["after_killed"] == [1, 2]


def test_rollback_dag_pushes_the_earlier_model_again_and_records_it(nightly):
    result = nightly["rollback"]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert nightly["after_rollback"] == [1, 2, 3]
    models = nightly["models"]
    assert versions.model_fingerprint(models / "3") == versions.model_fingerprint(models / "1")
    assert versions.model_fingerprint(models / "3") != versions.model_fingerprint(models / "2")
    pushes = json.loads(mlops(nightly["home"], "models", "list", "--json").stdout)
    last = pushes[-1]
    assert last["version"] == 3 and last["kind"] == "rollback" and last["serving"]
    assert last["reason"] == "canary alert on v2" and last["requested_by"] == "on-call"
    assert last["replaced_version"] == 2 and last["model_id"] == pushes[0]["model_id"]


def test_rolling_back_to_the_served_model_again_changes_nothing(nightly):
    again = nightly["rollback_again"]
    assert again.returncode == 0, again.stderr
    assert "already serves model" in again.stdout and "nothing to do" in again.stdout
    assert nightly["after_rollback_again"] == [1, 2, 3]


def test_a_span_missing_a_required_column_stops_at_validation(nightly):
    result = nightly["bad"]
    assert result.returncode != 0
    states = result.states
    # The raw-file gate sees the header: ExampleGen never parses the span.
    assert states["SpanCheck"]["state"] == "failed"
    assert result.stdout.count("task SpanCheck ...") == 1  # bad data is not retried
    for node in ("CsvExampleGen", "DriftValidator", "Transform", "Trainer", "GatedEvaluator", "AtomicPusher"):
        assert states[node]["state"] in ("upstream_failed", None, "None", ""), (node, states[node])
    # The reason names the feature, in the task log relayed to the output, and nothing moved.
    assert "tips: required column missing" in result.stdout
    assert "mlops schema accept --date" in result.stdout
    assert nightly["after_bad"] == [1, 2, 3]
    assert nightly["bad_span_unchanged"]


def test_a_drifted_span_stops_at_the_drift_gate_after_statistics(nightly):
    result = nightly["drifted"]
    assert result.returncode != 0
    states = result.states
    assert states["StatisticsGen"]["state"] == "success" and states["SpanCheck"]["state"] == "success"
    assert states["DriftValidator"]["state"] == "failed"
    assert result.stdout.count("task DriftValidator ...") == 1
    for node in ("Transform", "Trainer", "GatedEvaluator", "AtomicPusher"):
        assert states[node]["state"] in ("upstream_failed", None, "None", ""), (node, states[node])
    assert "trip_miles: Jensen-Shannon divergence" in result.stdout
    assert nightly["after_drifted"] == [1, 2, 3]
    # The metrics teardown ran after the gate stopped the run, and the run still failed.
    assert states["report_metrics"]["state"] == "success"
    assert "no Pushgateway configured" in result.stdout + result.stderr


# ------------------------------------------------------------------ lineage (`mlops lineage`)


def lineage(nightly, *query: str, check: bool = True) -> dict:
    """`mlops lineage ... --json`, validated against the JSON schema kept in the repository."""
    import jsonschema

    from pipelines.lineage import SCHEMA_FILE

    result = mlops(nightly["home"], "lineage", *query, "--json", check=check)
    doc = json.loads(result.stdout)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(doc)
    return doc


def test_every_node_task_log_ends_with_its_execution_and_the_lineage_command(nightly):
    home, result = nightly["home"], nightly["first"]
    run_id = f"nightly_retrain__{airflow_run_id(result)}"
    blocks, current = {}, None
    for line in result.stdout.splitlines():
        if line.startswith("task ") and line.endswith(" ..."):
            current = line.split()[1]
            blocks[current] = []
        elif line.startswith("    ") and current:
            blocks[current].append(line.strip())
    manifest = json.loads((airflow_env.DAGS_FOLDER / "taxi_manifest.json").read_text())
    for node in (n["id"] for n in manifest["nodes"]):
        last = blocks[node][-1]
        assert last.startswith("ML Metadata: execution ") and f"in run {run_id};" in last, (node, blocks[node][-3:])
        assert last.endswith(f"explain it: mlops --home {home} lineage --run {run_id}"), last
    # The id it names is that node's execution in that run.
    trainer = int(blocks["Trainer"][-1].split()[3])
    store = readonly_store(home)
    [execution] = store.get_executions_by_id([trainer])
    assert [c.name for c in store.get_contexts_by_execution(trainer) if c.name.endswith(".Trainer")] == ["taxi.Trainer"]
    assert execution.custom_properties["airflow_task_id"].string_value == "Trainer"


def test_lineage_of_the_served_version_is_the_rollback_down_to_the_first_span_files(nightly):
    import hashlib

    home = nightly["home"]
    chain = lineage(nightly)["chain"]
    listed = json.loads(mlops(home, "models", "list", "--json").stdout)
    first_night = f"nightly_retrain__{airflow_run_id(nightly['first'])}"
    # The push: the rollback DAG's, with who and why, and the version it replaced.
    push = chain["push"]
    assert (chain["version"], chain["serving"], push["kind"], push["trigger"]) == (3, True, "rollback", "manual")
    assert (push["requested_by"], push["reason"], push["replaced_version"]) == ("on-call", "canary alert on v2", 2)
    assert push["execution"]["airflow"]["dag_id"] == "model_rollback"
    assert push["model_id"] == listed[0]["model_id"] == chain["model"]["artifact_id"] and push["first_pushed_as"] == 1
    # The model it serves again was trained, evaluated and blessed on the first night, by Airflow's tasks.
    training = chain["training"]
    assert training["run"]["run_id"] == first_night and training["execution"]["airflow"]["task_id"] == "Trainer"
    assert training["train_steps"] == int(FAST_RUN_ARGS[FAST_RUN_ARGS.index("--train-steps") + 1])
    assert training["strategy"] == "auto" and training["run"]["code_version"].startswith(("git:", "package:"))
    assert training["hyperparameters"] == {"batch_size": 64, **hyperparameters()}, training["hyperparameters"]
    assert training["run"]["config"]["gates"]["auc_floor"] == 0.5  # the first night's --auc-floor
    assert chain["blessing"]["blessed"] and chain["blessing"]["execution"]["run_id"] == first_night
    assert chain["evaluation"]["metrics"]["overall"]["example_count"] > 0
    assert 0.0 <= chain["evaluation"]["metrics"]["overall"]["auc"] <= 1.0
    assert Path(chain["transform"]["uri"]).is_dir() and Path(chain["schema"]["snapshot"]).is_file()
    # Down to the span: the gates passed it, and its file is the one on disk, checksum and rows.
    assert chain["examples"]["span"] == DAY1.isoformat()
    assert [(g["gate"], g["blocked"]) for g in chain["gates"]] == [("span_check", False), ("drift_validator", False)]
    assert all(g["run_id"] == first_night for g in chain["gates"])
    span_file = home / "data" / "incoming" / DAY1.isoformat() / "data.csv"
    [recorded] = chain["input_files"]
    assert recorded["sha256"] == hashlib.sha256(span_file.read_bytes()).hexdigest()
    assert recorded["rows"] == SMALL_ROWS == sum(chain["statistics"]["rows"].values())
    # The text says the same, in the order the chain runs.
    text = mlops(home, "lineage").stdout
    assert text.startswith("version 3 (serving now): rollback (manual) push") and '"canary alert on v2"' in text
    assert text.index("  model ") < text.index("  training ") < text.index("  span ") < text.index("file data.csv")
    mermaid = mlops(home, "lineage", "--mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and "vtrainer --> vmodel" in mermaid


def test_lineage_of_spans_names_the_models_they_trained_and_the_gates_that_blocked_them(nightly):
    first = lineage(nightly, "--span", DAY1.isoformat())["span"]
    # DAY1's own night's model, then DAY2's: its window trained on DAY1 (DAY2 held out).
    model, window_model = first["models"]
    assert [(v["version"], v["kind"]) for v in model["pushed_versions"]] == [(1, "nightly"), (3, "rollback")]
    assert model["serving"] and model["blessed"] and not first["blocked"]
    assert [(v["version"], v["kind"]) for v in window_model["pushed_versions"]] == [(2, "nightly")]
    missing = lineage(nightly, "--span", DAY3.isoformat())["span"]
    assert missing["models"] == [] and missing["examples"] == [] and missing["blocked"]
    assert missing["gates"][-1]["gate"] == "span_check" and "tips: required column missing" in missing["gates"][-1]["problem"]
    drifted = lineage(nightly, "--span", DAY4.isoformat())["span"]
    assert drifted["models"] == [] and drifted["blocked"]
    drift = drifted["gates"][-1]
    assert drift["gate"] == "drift_validator" and drift["drift"]["trip_miles"]["distance"] > drift["drift"]["trip_miles"]["threshold"]
    assert Path(drift["report"]).name == "report.html" and Path(drift["report"]).is_file()
    text = mlops(nightly["home"], "lineage", "--span", DAY4.isoformat()).stdout
    assert "drift_validator: BLOCKED" in text and "trip_miles" in text and "no model was trained" in text


def test_lineage_diff_names_the_differing_span_and_metrics(nightly):
    doc = lineage(nightly, "--diff", "1", "2")
    rows = {row["field"]: row for row in doc["fields"]}
    assert (rows["span"]["left"], rows["span"]["right"]) == (DAY1.isoformat(), DAY2.isoformat())
    assert "span" in doc["differing"] and "file.data.csv.sha256" in doc["differing"]
    assert any(field.startswith("metrics[overall].") for field in doc["differing"]), doc["differing"]
    assert rows["config.gates.auc_floor"]["left"] == 0.5 and rows["config.gates.auc_floor"]["right"] == 0.0
    assert not rows["schema.sha256"]["differs"] and not rows["training.train_steps"]["differs"]
    text = mlops(nightly["home"], "lineage", "--diff", "1", "2").stdout
    assert any(line.startswith("span ") and " * " in line for line in text.splitlines()), text


def test_lineage_of_an_airflow_run_id_finds_its_executions(nightly):
    airflow_id = airflow_run_id(nightly["killed"])
    run = lineage(nightly, "--run", airflow_id)["run"]
    assert run["run_id"] == f"nightly_retrain__{airflow_id}" and run["airflow_run_id"] == airflow_id
    nodes = {row["node"] for row in run["executions"]}
    assert {"SpanCheck", "CsvExampleGen", "Trainer", "GatedEvaluator", "AtomicPusher"} <= nodes
    assert all(row["airflow"]["run_id"] == airflow_id for row in run["executions"])
    assert run["pushed_version"] == 2 and run["chain"]["version"] == 2 and run["blocked_by"] is None
    blocked = lineage(nightly, "--run", airflow_run_id(nightly["bad"]))["run"]
    assert blocked["pushed_version"] is None and blocked["blocked_by"]["gate"] == "span_check"


def test_lineage_refuses_unknown_queries_with_the_known_ones(nightly):
    home = nightly["home"]
    for query, words in ((("--version", "99"), "no pushed version 99"), (("--run", "nope"), "no pipeline run 'nope'"),
                         (("--span", "2001-01-01"), "records nothing for span 2001-01-01")):
        result = mlops(home, "lineage", *query, check=False)
        assert result.returncode == 2 and words in result.stderr and result.stdout == "", (query, result.stderr)
    assert "pick one of the pushed versions: 1, 2, 3" in mlops(home, "lineage", "--version", "99", check=False).stderr
