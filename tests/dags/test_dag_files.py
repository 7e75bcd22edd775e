"""The DAG files: they load in real Airflow, match the pipeline, and never import TFX.

These run the DAG files with the Airflow environment's Python (3.11), as Airflow's parser does
(the airflow_python fixture); the manifest checks need only .venv.
"""

from __future__ import annotations

import json

import pytest

from pipelines import manifest
from tests.conftest import REPO, mlops_here

MANIFEST = json.loads((REPO / "dags" / "taxi_manifest.json").read_text())


@pytest.fixture(scope="module")
def dagbag(airflow_python, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dagbag")
    return airflow_python(
        f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        out = {{"errors": {{k: str(v)[-500:] for k, v in bag.import_errors.items()}}, "dags": {{}}}}
        for dag_id, dag in bag.dags.items():
            out["dags"][dag_id] = {{
                "schedule": str(next((getattr(dag.timetable, a) for a in ("expression", "_expression", "summary")
                                     if getattr(dag.timetable, a, None)), None)),
                "timetable": type(dag.timetable).__name__,
                "timezone": str(dag.timezone.name),
                "catchup": dag.catchup,
                "max_active_runs": dag.max_active_runs,
                "tags": sorted(dag.tags),
                "doc_md": bool(dag.doc_md and len(dag.doc_md) > 200),
                "params": sorted(dag.params.keys()),
                "tasks": {{
                    t.task_id: {{
                        "upstream": sorted(t.upstream_task_ids),
                        "pool": t.pool,
                        "retries": t.retries,
                        "backoff": bool(t.retry_exponential_backoff),
                        "timeout": t.execution_timeout.total_seconds() if t.execution_timeout else None,
                        "owner": t.owner,
                        "command": t.bash_command,
                        "is_teardown": t.is_teardown,
                        "trigger_rule": str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule),
                    }}
                    for t in dag.tasks
                }},
            }}
        print(json.dumps(out))
        """,
        tmp,
    )


def rendered_args(airflow_python, tmp_path, dag_file: str, render: str, confs: dict) -> dict:
    """{name: what the DAG's `render` macro makes of its params updated with conf, validated as Airflow
    does ("refused: <error type>" when the params refuse the conf)}, run in Airflow's Python."""
    return airflow_python(
        f"""
        import copy, json, importlib.util
        spec = importlib.util.spec_from_file_location("dag_module", {str(REPO / 'dags' / dag_file)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)

        def args_for(conf):
            params = copy.deepcopy(mod.dag.params)
            try:
                params.update(conf)
                return getattr(mod, {render!r})(params.validate())
            except Exception as err:
                return "refused: " + type(err).__name__
        print(json.dumps({{name: args_for(conf) for name, conf in {confs!r}.items()}}))
        """,
        tmp_path,
    )


def test_both_dags_load_without_import_errors(dagbag):
    assert dagbag["errors"] == {}
    assert {"nightly_retrain", "model_rollback"} <= set(dagbag["dags"])


def test_nightly_dag_has_one_task_per_tfx_node_wired_like_the_pipeline(dagbag):
    tasks = dict(dagbag["dags"]["nightly_retrain"]["tasks"])
    report = tasks.pop("report_metrics")  # the teardown after every node (below)
    assert set(tasks) == {n["id"] for n in MANIFEST["nodes"]}
    for node in MANIFEST["nodes"]:
        assert tasks[node["id"]]["upstream"] == sorted(node["upstream"]), node["id"]
    # The metrics report waits for every node, runs whatever they did, and never fails the run.
    assert report["upstream"] == sorted(tasks)
    assert report["is_teardown"] and report["trigger_rule"] == "all_done_setup_success"
    assert "summary --push-metrics" in report["command"] and "{{ tfx_run_id(dag.dag_id, run_id) }}" in report["command"]
    # The validation gate sits between the data and training: Trainer depends on it transitively.
    assert "DriftValidator" in tasks["Transform"]["upstream"]


def test_nightly_dag_schedule_and_safety_settings(dagbag):
    dag = dagbag["dags"]["nightly_retrain"]
    assert dag["schedule"] == "0 2 * * *" and dag["timetable"] == "CronDataIntervalTimetable"
    assert dag["timezone"] == "UTC"
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["doc_md"] and "mlops" in dag["tags"]
    assert {"date", "train_steps", "auc_floor", "min_improvement", "slice_margin"} <= set(dag["params"])
    for task_id, task in dag["tasks"].items():
        if task_id == "report_metrics":  # reads ML Metadata only; a teardown without retries
            assert task["pool"] == "default_pool" and task["retries"] == 0 and task["timeout"]
            continue
        assert task["pool"] == "mlmd_writers", task_id
        assert task["retries"] >= 1 and task["backoff"], task_id
        assert task["timeout"] and task["timeout"] <= 2 * 3600, task_id
        assert task["owner"] == "mlops"
        assert f"--node {task_id} " in task["command"]
        assert "node run" in task["command"] and "{{ tfx_run_id(dag.dag_id, run_id) }}" in task["command"]
    assert "--summary" in dag["tasks"][MANIFEST["nodes"][-1]["id"]]["command"]


def test_timezone_is_configurable(airflow_python, tmp_path):
    out = airflow_python(
        f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags' / 'nightly_retrain.py')!r})
        print(json.dumps({{"tz": bag.dags["nightly_retrain"].timezone.name}}))
        """,
        tmp_path,
        MLOPS_DAG_TIMEZONE="America/Chicago",
    )
    assert out["tz"] == "America/Chicago"


def test_rollback_dag_is_manual_with_reason_and_target_params(dagbag):
    dag = dagbag["dags"]["model_rollback"]
    assert dag["schedule"] == "None" and dag["timetable"] == "NullTimetable"  # manual trigger only
    assert {"to_version", "reason", "requested_by"} <= set(dag["params"])
    assert list(dag["tasks"]) == ["rollback"]
    assert " rollback " in dag["tasks"]["rollback"]["command"]


def test_the_alert_webhooks_conf_passes_the_rollback_dags_params_to_the_cli(dagbag, airflow_python, tmp_path):
    """The conf monitoring/webhook.py sends, validated by the DAG's params as Airflow does, becomes a
    `mlops rollback` command line that the real parser accepts; a bad trigger is refused."""
    import shlex

    from monitoring.webhook import rollback_conf
    from pipelines.cli import build_parser

    assert {"to_version", "reason", "requested_by", "trigger", "only_if_serving"} <= set(
        dagbag["dags"]["model_rollback"]["params"])
    alert_conf = rollback_conf("ServingErrorRateHigh fired for model taxi version 4 since 2026-12-06T01:02:03Z: "
                               "7% of requests fail (value 0.07, fingerprint f4)", 4)
    out = rendered_args(airflow_python, tmp_path, "model_rollback.py", "rollback_args", {
        "alert": alert_conf,
        "manual": {"reason": "bad model", "to_version": 2},
        "bad_trigger": {"reason": "bad model", "trigger": "pager"},
        "bad_version": {"reason": "bad model", "only_if_serving": "four"},
    })
    assert out["bad_trigger"].startswith("refused") and out["bad_version"].startswith("refused"), out
    assert shlex.split(out["manual"]) == ["--to", "2", "--reason", "bad model", "--by", "airflow", "--trigger", "manual"]
    alert_args = shlex.split(out["alert"])
    assert alert_args == ["--previous", "--reason", alert_conf["reason"], "--by", "alertmanager", "--trigger", "alert",
                          "--only-if-serving", "4"]
    parsed = build_parser().parse_args(["rollback", *alert_args])
    assert (parsed.previous, parsed.trigger, parsed.only_if_serving, parsed.by) == (True, "alert", 4, "alertmanager")
    assert parsed.reason == alert_conf["reason"]


@pytest.mark.parametrize("module", ["nightly_retrain", "model_rollback", "weekly_tuning"])
def test_importing_a_dag_module_leaves_tensorflow_and_tfx_out(airflow_python, tmp_path, module):
    out = airflow_python(
        f"""
        import json, sys, importlib.util
        spec = importlib.util.spec_from_file_location("dag_under_test", {str(REPO / 'dags' / (module + '.py'))!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tfx", "apache_beam", "pipelines"))
        print(json.dumps({{"heavy": heavy}}))
        """,
        tmp_path,
    )
    assert out["heavy"] == []


def test_span_date_and_run_id_macros(airflow_python, tmp_path):
    out = airflow_python(
        f"""
        import json, importlib.util, datetime as dt, types
        import pendulum
        spec = importlib.util.spec_from_file_location("nightly", {str(REPO / 'dags' / 'nightly_retrain.py')!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        scheduled = types.SimpleNamespace(logical_date=pendulum.datetime(2026, 11, 22, 2, tz="UTC"), run_after=None)
        manual = types.SimpleNamespace(logical_date=None, run_after=pendulum.datetime(2026, 11, 23, 9, 30, tz="UTC"))
        late = types.SimpleNamespace(logical_date=pendulum.datetime(2026, 11, 22, 23, tz="UTC"), run_after=None)
        print(json.dumps({{
            "scheduled": mod.span_date({{}}, scheduled, "UTC"),
            "param": mod.span_date({{"date": "2026-11-01"}}, scheduled, "UTC"),
            "manual": mod.span_date({{"date": None}}, manual, "UTC"),
            "chicago": mod.span_date({{}}, late, "America/Chicago"),
            "tokyo": mod.span_date({{}}, late, "Asia/Tokyo"),
            "run_id": mod.tfx_run_id("nightly_retrain", "scheduled__2026-11-22T02:00:00+00:00"),
        }}))
        """,
        tmp_path,
    )
    assert out["scheduled"] == "2026-11-22"
    assert out["param"] == "2026-11-01"
    assert out["manual"] == "2026-11-22"  # triggered on the 23rd without a date: yesterday
    assert out["chicago"] == "2026-11-22" and out["tokyo"] == "2026-11-23"
    assert out["run_id"] == "nightly_retrain__scheduled__2026-11-22T02:00:00+00:00"


def test_nightly_params_render_to_node_run_options_the_real_parser_accepts(dagbag, airflow_python, tmp_path):
    """Every node task renders the run's params with the `run_args` macro; `run_fn` (your own model code,
    `mlops run --run-fn`) is passed only when given, and a value that is no MODULE.FUNCTION is refused."""
    import shlex

    from pipelines.cli import build_parser

    for node in MANIFEST["nodes"]:
        assert "{{ run_args(params) }}" in dagbag["dags"]["nightly_retrain"]["tasks"][node["id"]]["command"]
    assert "run_fn" in dagbag["dags"]["nightly_retrain"]["params"]
    out = rendered_args(airflow_python, tmp_path, "nightly_retrain.py", "run_args", {
        "default": {},
        "own_model": {"run_fn": "my_models.wide_deep.run_fn", "train_steps": 90, "auc_floor": 0.7},
        "not_a_function": {"run_fn": "my_models"},
        "shell": {"run_fn": "x.y; rm -rf /"},
    })
    assert out["not_a_function"].startswith("refused") and out["shell"].startswith("refused"), out
    assert "--run-fn" not in out["default"]

    def parse(rendered: str):
        return build_parser().parse_args(["node", "run", "--node", "Trainer", "--run-id", "nightly_retrain__x",
                                          "--date", "2026-11-22", *shlex.split(rendered)])

    default, own = parse(out["default"]), parse(out["own_model"])
    assert (default.run_fn, default.train_steps, default.eval_steps, default.auc_floor, default.min_improvement,
            default.slice_margin, default.keep_versions, default.window_days) == (None, 300, 50, 0.6, 0.01, 0.05, 5, 7)
    assert (own.run_fn, own.train_steps, own.auc_floor) == ("my_models.wide_deep.run_fn", 90, 0.7)


def test_committed_manifest_matches_the_pipeline(tmp_path):
    result = mlops_here(tmp_path, "dags", "manifest", "--check")
    assert "matches the pipeline (17 nodes)" in result.stdout


def test_manifest_check_names_what_differs(tmp_path):
    stale = dict(MANIFEST, nodes=[n for n in MANIFEST["nodes"] if n["id"] != "DriftValidator"])
    path = tmp_path / "manifest.json"
    path.write_text(manifest.render(stale))
    result = mlops_here(tmp_path, "dags", "manifest", "--check", "--output", str(path), check=False)
    assert result.returncode == 2
    assert "missing nodes ['DriftValidator']" in result.stderr
    assert "mlops dags manifest" in result.stderr
    # Writing fixes it, and writing again is a no-op.
    assert "wrote" in mlops_here(tmp_path, "dags", "manifest", "--output", str(path)).stdout
    assert "unchanged" in mlops_here(tmp_path, "dags", "manifest", "--output", str(path)).stdout
    assert manifest.compare(json.loads(path.read_text()), path) is None


def test_the_dags_take_the_exit_codes_not_to_retry_from_the_cli_through_the_manifest(airflow_python, tmp_path):
    from pipelines.errors import NO_RETRY_EXIT_CODES

    assert {int(code): why for code, why in MANIFEST["no_retry_exit_codes"].items()} == NO_RETRY_EXIT_CODES
    stale = json.loads(json.dumps(MANIFEST))
    stale["no_retry_exit_codes"] = {"3": "the span failed data validation"}
    path = tmp_path / "manifest.json"
    path.write_text(manifest.render(stale))
    assert "exit codes not to retry" in manifest.compare(MANIFEST, path)
    seen = airflow_python(
        f"""
        import json, sys
        sys.path.insert(0, {str(REPO / 'dags')!r})
        import mlops_common
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        print(json.dumps({{"codes": mlops_common.NO_RETRY_EXIT_CODES,
                          "parsed": sorted(s.file.rsplit("/", 1)[-1] for s in bag.dagbag_stats)}}))
        """,
        tmp_path,
    )
    assert seen["codes"] == {str(code): why for code, why in NO_RETRY_EXIT_CODES.items()}
    # .airflowignore keeps the parser away from the shared module: it is not a DAG file.
    assert {"canary_check.py", "model_rollback.py", "nightly_retrain.py"} <= set(seen["parsed"])
    assert "mlops_common.py" not in seen["parsed"]


def test_tasks_take_the_ml_metadata_store_from_an_airflow_connection(airflow_python, tmp_path):
    # MLOPS_MLMD_CONN_ID: every task that runs `mlops` gets MLOPS_MLMD and MLOPS_MLMD_PASSWORD from the
    # connection when it runs; the DAG files and the rendered commands never hold the password.
    out = airflow_python(
        f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk.exceptions import AirflowFailException
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        envs, commands = {{}}, []
        for dag in bag.dags.values():
            for task in dag.tasks:
                commands.append(task.bash_command)
                envs[f"{{dag.dag_id}}.{{task.task_id}}"] = {{k: v for k, v in task.get_env({{}}).items()
                                                          if k in ("MLOPS_MLMD", "MLOPS_MLMD_PASSWORD")}}
        import mlops_common
        try:
            mlops_common.mlmd_environ("no_such_connection")
            missing = ""
        except AirflowFailException as err:
            missing = str(err)
        print(json.dumps({{"envs": envs, "commands": commands, "missing": missing}}))
        """,
        tmp_path,
        MLOPS_MLMD_CONN_ID="mlops_mlmd",
        AIRFLOW_CONN_MLOPS_MLMD="mysql://mlmd:s3cret-pw@db.example:3307/lineage",
    )
    expected = {"MLOPS_MLMD": "mysql://mlmd@db.example:3307/lineage", "MLOPS_MLMD_PASSWORD": "s3cret-pw"}
    assert len(out["envs"]) >= len(MANIFEST["nodes"]) + 2  # every node, the report task, the rollback
    assert all(env == expected for env in out["envs"].values()), out["envs"]
    assert not any("s3cret-pw" in command for command in out["commands"])
    assert "airflow connections add no_such_connection --conn-type mysql" in out["missing"]


def test_weekly_tuning_dag_runs_mlops_tune_on_sundays_with_params_the_cli_accepts(dagbag, airflow_python, tmp_path):
    """Optional weekly tuning: paused at creation like every project DAG, Sundays 04:00 (after that
    night's 02:00 run), one task whose rendered `mlops tune` arguments the real parser accepts."""
    import shlex

    from pipelines.cli import build_parser

    dag = dagbag["dags"]["weekly_tuning"]
    assert dag["schedule"] == "0 4 * * 0" and dag["timetable"] == "CronDataIntervalTimetable"
    assert dag["catchup"] is False and dag["max_active_runs"] == 1 and dag["doc_md"]
    assert list(dag["tasks"]) == ["tune"] and " tune " in dag["tasks"]["tune"]["command"]
    assert {"trials", "train_steps", "date"} <= set(dag["params"])
    out = rendered_args(airflow_python, tmp_path, "weekly_tuning.py", "tune_args", {
        "default": {}, "dated": {"date": "2026-11-22", "trials": 2}, "bad": {"trials": 0}})
    assert out["bad"].startswith("refused"), out
    default = build_parser().parse_args(["tune", *shlex.split(out["default"])])
    assert (default.trials, default.train_steps, default.date) == (6, 300, None)
    dated = build_parser().parse_args(["tune", *shlex.split(out["dated"])])
    assert (dated.trials, str(dated.date)) == (2, "2026-11-22")


def test_canary_check_dag_runs_the_canary_check_every_5_minutes_in_the_mlmd_pool(dagbag):
    """The canary's decision (serving/canary.py): one task, `mlops models canary check`, which does nothing
    while no window is open or the soak period runs."""
    dag = dagbag["dags"]["canary_check"]
    assert dag["schedule"] == "*/5 * * * *" and dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["doc_md"] and list(dag["tasks"]) == ["check"]
    task = dag["tasks"]["check"]
    assert task["command"].endswith(" models canary check") and task["pool"] == "mlmd_writers"
    assert task["retries"] == 0 and task["timeout"] == 600
