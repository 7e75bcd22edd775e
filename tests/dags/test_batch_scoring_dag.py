"""The `batch_scoring` DAG: it parses in Airflow's Python, is scheduled on the model asset, takes the
span and version from the push that triggered it (or from a manual run's conf), and runs `mlops score`
for real through Airflow (`dag.test()`) against a fake `mlops` that records its arguments."""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO

DAG_FILE = REPO / "dags" / "batch_scoring.py"

FAKE_MLOPS = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
date = args[args.index("--date") + 1]
sys.exit(3 if date == "2026-03-03" else 0)
"""


@pytest.fixture(scope="module")
def parsed(airflow_python, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scoring-dag")
    (tmp / "home").mkdir()
    return airflow_python(
        f"""
        import json, sys, importlib.util, types
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        dag = bag.dags["batch_scoring"]
        [task] = dag.tasks
        spec = importlib.util.spec_from_file_location("scoring_dag", {str(DAG_FILE)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tfx", "apache_beam", "pipelines"))
        push = lambda span, version, ts: types.SimpleNamespace(extra={{"kind": "nightly", "span": span,
                                                                       "pushed_version": version}}, timestamp=ts)
        rollback = types.SimpleNamespace(extra={{"kind": "rollback", "span": None, "pushed_version": 4}}, timestamp=9)
        try:
            mod.score_target({{}}, {{}})
            no_date = "no error"
        except Exception as err:
            no_date = type(err).__name__ + ": " + str(err)
        print(json.dumps({{
            "errors": {{k: str(v)[-500:] for k, v in bag.import_errors.items()}},
            "timetable": type(dag.timetable).__name__,
            "assets": [[a.name, a.uri] for a in dag.timetable.asset_condition.objects],
            "params": sorted(dag.params.keys()),
            "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
            "task": {{"id": task.task_id, "operator": type(task).__name__, "pool": task.pool, "retries": task.retries,
                      "command": task.bash_command}},
            "heavy": heavy,
            "manual": mod.score_target({{"date": "2026-03-01"}}, None),
            "manual_version": mod.score_target({{"date": "2026-03-01", "version": 2}}, None),
            "pushed": mod.score_target({{}}, {{mod.MODEL_ASSET: [push("2026-03-01", 1, 1), push("2026-03-02", 2, 2)]}}),
            "rollback": mod.score_target({{}}, {{mod.MODEL_ASSET: [rollback]}}),
            "no_date": no_date,
        }}))
        """,
        tmp,
        MLOPS_HOME=str(tmp / "home"),
    ) | {"home": str((tmp / "home").resolve())}


def test_the_dag_parses_and_is_scheduled_on_the_pushed_model_asset(parsed):
    assert parsed["errors"] == {}
    assert parsed["timetable"] == "AssetTriggeredTimetable"
    assert parsed["assets"] == [["taxi_model", f"file://{parsed['home']}/serving/models/taxi"]]
    assert parsed["params"] == ["date", "version"]
    assert parsed["catchup"] is False and parsed["max_active_runs"] == 1
    task = parsed["task"]
    assert task["id"] == "score" and task["operator"] == "ScoreOperator" and task["pool"] == "mlmd_writers"
    assert task["retries"] >= 1 and " score --date " in task["command"]
    assert parsed["heavy"] == []  # no TensorFlow, TFX, Beam or project import in Airflow's processes


def test_the_span_and_version_come_from_the_conf_or_the_push_that_triggered_the_run(parsed):
    assert parsed["manual"] == ["2026-03-01", None]  # the served version
    assert parsed["manual_version"] == ["2026-03-01", 2]
    assert parsed["pushed"] == ["2026-03-02", 2]  # the newest push event
    assert parsed["rollback"] is None  # a rollback names no span: the run is skipped
    assert parsed["no_date"].startswith("AirflowFailException") and '{"date": "YYYY-MM-DD"}' in parsed["no_date"]


def test_a_manual_run_scores_the_date_and_a_blocked_span_fails_without_retries(airflow_python, tmp_path):
    home, log = tmp_path / "home", tmp_path / "calls.jsonl"
    home.mkdir()
    fake = tmp_path / "mlops"
    fake.write_text(FAKE_MLOPS.format(python=sys.executable))
    fake.chmod(0o755)
    out = airflow_python(
        f"""
        import json, os, subprocess, sys
        airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
        subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
        from airflow.dag_processing.dagbag import DagBag
        runs = {{}}
        for conf in ({{"date": "2026-03-01"}}, {{"date": "2026-03-02", "version": 2}}, {{"date": "2026-03-03"}}):
            # A DAG object per run, as the scheduler has: dag.test() leaves a run's conf in the DAG's params.
            dag = DagBag(dag_folder={str(REPO / 'dags')!r}).dags["batch_scoring"]
            run = dag.test(run_conf=conf)
            runs[conf["date"]] = str(run.state)
        print(json.dumps(runs))
        """,
        tmp_path,
        MLOPS_HOME=str(home), MLOPS_BIN=str(fake), FAKE_LOG=str(log), MLOPS_RETRY_DELAY_SECONDS="1",
    )
    assert out == {"2026-03-01": "success", "2026-03-02": "success", "2026-03-03": "failed"}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[:2] == [["--home", str(home), "score", "--date", "2026-03-01"],
                         ["--home", str(home), "score", "--date", "2026-03-02", "--version", "2"]]
    assert calls[2:] == [["--home", str(home), "score", "--date", "2026-03-03"]]  # exit 3: tried once
