"""`mlops airflow` plumbing against the real Airflow CLI (.venv-airflow) and its SQLite database."""

from __future__ import annotations

import json
import sqlite3

from pipelines import airflow_env
from tests.conftest import make_home, mlops


def test_a_call_that_hit_database_is_locked_is_tried_again(airflow_project, monkeypatch):
    db = airflow_env.airflow_home(airflow_project) / "airflow.db"
    # A 1 s busy timeout instead of the project's 60 s, so the held lock fails the first call soon.
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{db}?timeout=1")
    airflow_env.init(airflow_project, progress=lambda line: None)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what a scheduler mid-write looks like to everyone else
    retries = []

    def progress(line: str) -> None:
        retries.append(line)
        if holder.in_transaction:
            holder.execute("ROLLBACK")  # the writer finishes while we wait

    try:
        airflow_env.run_airflow(airflow_project, ["pools", "set", "lock_test", "3", "set while locked"],
                                progress=progress)
    finally:
        holder.close()
    assert len(retries) == 1 and airflow_env.LOCKED in retries[0] and "trying again" in retries[0], retries
    pools = airflow_env.run_airflow(airflow_project, ["pools", "list", "--output", "json"]).stdout
    assert {"pool": "lock_test", "slots": 3} in [
        {"pool": p["pool"], "slots": int(p["slots"])} for p in json.loads(pools[pools.index("["):])
    ]


def test_backfill_refuses_days_without_a_span_before_touching_airflow(tmp_path):
    home = make_home(tmp_path, days=0)
    mlops(home, "data", "seed", "--end", "2026-11-21", "--days", "2", "--rows-per-day", "50")
    result = mlops(home, "airflow", "backfill", "--from-date", "2026-11-19", "--to-date", "2026-11-21", check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no span under" in result.stderr and "2026-11-19" in result.stderr, result.stderr
    assert "2026-11-20" not in result.stderr.split("for ")[1].split("\n")[0], result.stderr
    assert "mlops data seed --end 2026-11-21 --days 3" in result.stderr, result.stderr
    assert not airflow_env.airflow_home(home).exists()  # refused before Airflow was set up


def test_backfill_needs_both_dates_oldest_first(tmp_path):
    home = make_home(tmp_path, days=0)
    result = mlops(home, "airflow", "backfill", "--from-date", "2026-11-19", check=False)
    assert result.returncode == 2 and "needs --from-date and --to-date" in result.stderr, result.stderr
    result = mlops(home, "airflow", "backfill", "--from-date", "2026-11-21", "--to-date", "2026-11-19", check=False)
    assert result.returncode == 2 and "--to-date 2026-11-19 is before --from-date 2026-11-21" in result.stderr, result.stderr
    assert not airflow_env.airflow_home(home).exists()


def test_airflow_commands_refuse_run_options_the_dag_would_ignore(tmp_path):
    home = make_home(tmp_path, days=0)
    for command in (["run"], ["backfill", "--from-date", "2026-11-19", "--to-date", "2026-11-21"]):
        result = mlops(home, "airflow", *command, "--warn-drift", "fare", "--no-cache", check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "--warn-drift, --no-cache would be ignored" in result.stderr, result.stderr
        assert "gates.toml" in result.stderr, result.stderr
    # --run-fn is a param of the DAG (`run_fn`): passed on, never named as ignored.
    result = mlops(home, "airflow", "run", "--run-fn", "my_models.wide.run_fn", "--no-cache", check=False)
    assert result.returncode == 2 and "--no-cache would be ignored" in result.stderr, result.stderr
    assert "the nightly_retrain DAG has no such param (it takes --date, " in result.stderr
    assert "--keep-versions, --run-fn)" in result.stderr, result.stderr
    assert not airflow_env.airflow_home(home).exists()


def test_airflow_subcommands_refuse_options_they_do_not_use(tmp_path):
    home = make_home(tmp_path, days=0)
    cases = [
        (["backfill", "--from-date", "2026-11-19", "--to-date", "2026-11-21", "--date", "2026-11-20"],
         "`mlops airflow backfill` does not use --date (--date is for run)", "--from-date/--to-date"),
        (["run", "--from-date", "2026-11-19", "--dry-run"],
         "`mlops airflow run` does not use --from-date, --dry-run (--from-date is for backfill; --dry-run is for backfill)",
         "drop --from-date --dry-run"),
        (["status", "--port", "9000"], "`mlops airflow status` does not use --port (--port is for up)", "drop --port"),
        (["up", "--dag", "model_rollback", "--train-steps", "5"],
         "`mlops airflow up` does not use --dag, --train-steps (--dag is for pause / unpause; --train-steps is for run / backfill)",
         "drop --dag --train-steps"),
    ]
    for command, error, hint in cases:
        result = mlops(home, "airflow", *command, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert error in result.stderr and hint in result.stderr, result.stderr
    assert not airflow_env.airflow_home(home).exists()  # nothing was started or set up
