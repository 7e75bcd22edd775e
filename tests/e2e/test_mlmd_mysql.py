"""ML Metadata on a real MariaDB server (Debian's mariadbd, started for the test on 127.0.0.1 under the
home's var/db/ and stopped by pid): the nightly runs, a rollback and `mlops models list` behave as on
SQLite; several node processes opening an empty database at once do not fail; `mlops metadata
migrate` moves a SQLite history with its pushes and rollback to MariaDB, and the moved history keeps
working (another rollback, lineage).

The history (module fixture `mysql_history`): two homes seeded alike run the same sequence, one on
SQLite, one on MariaDB: night 1 pushes version 1, night 2 (lenient gates, more steps: another model)
pushes version 2, then `mlops rollback --to 1` pushes version 3.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pipelines import db_servers
from tests import prepared
from tests.conftest import DAY1, DAY2, FAST_RUN_ARGS, VENV_PYTHON, make_home, mlops

LENIENT = ("--auc-floor", "0.0", "--min-improvement", "-1.0", "--slice-margin", "1.0", "--train-steps", "40")
ROOTS = ("ImportSchemaGen", "previous_span_statistics", "served_model", "served_training_statistics")


def _sequence(home: Path, env: dict) -> dict:
    def run(*args: str) -> dict:
        out = mlops(home, *args, "--json", env=env, timeout=1200).stdout
        return json.loads(out[out.index("{"):])

    first = run("run", "--date", DAY1.isoformat(), *FAST_RUN_ARGS, "--auc-floor", "0.5")
    second = run("run", "--date", DAY2.isoformat(), *FAST_RUN_ARGS, *LENIENT)
    rollback = run("rollback", "--to", "1", "--reason", "night 2 looks wrong", "--by", "tester", "--no-server")
    listed = json.loads(mlops(home, "models", "list", "--json", env=env).stdout)
    return {"first": first, "second": second, "rollback": rollback, "listed": listed}


def _mariadb(home: Path) -> dict:
    db_servers.start(home, emit=lambda line: None, names=("mariadb",))
    return db_servers.mlmd_environment(home)


def _concurrent_roots(home: Path, env: dict) -> list:
    """The pipeline's root nodes of one run, each in its own cold process, all started at once on an
    EMPTY database (no schema yet)."""
    command = [str(VENV_PYTHON.parent / "mlops"), "--home", str(home), "node", "run", "--run-id", "concurrent-roots",
               "--date", DAY1.isoformat(), *FAST_RUN_ARGS, "--cold"]
    started = [subprocess.Popen([*command, "--node", node], env={**os.environ, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for node in ROOTS]
    return [(node, process.wait(timeout=600), process.stdout.read()) for node, process in zip(ROOTS, started)]


@prepared.setup("mysql_history", lane="pipelines")  # beside the other shared setups (tests/prepared.py)
def _mysql_history(tmp_path_factory) -> dict:
    on_sqlite = make_home(tmp_path_factory.mktemp("mlmd-sqlite"))
    on_mysql = make_home(tmp_path_factory.mktemp("mlmd-mysql"))
    try:
        env = _mariadb(on_mysql)
        roots = _concurrent_roots(on_mysql, env)
        out = {"sqlite_home": on_sqlite, "mysql_home": on_mysql, "mysql_env": env, "roots": roots,
               "sqlite": _sequence(on_sqlite, {}), "mysql": _sequence(on_mysql, env)}
    except BaseException:
        _stop(on_sqlite, on_mysql)
        raise
    for home in (on_sqlite, on_mysql):
        mlops(home, "worker", "stop", check=False)
    return out


def _stop(*homes: Path) -> None:
    for home in homes:
        db_servers.stop(home, emit=lambda line: None)


@pytest.fixture(scope="module")
def mysql_history(request):
    out = prepared.result(request, "mysql_history")
    try:
        yield out
    finally:  # the MariaDB servers the setup and the tests started
        _stop(out["sqlite_home"], out["mysql_home"])


def _shape(listed: list) -> list:
    """What `models list` says about each version, without times, ids and fingerprints (two homes
    train their own models), but with which version's model each version serves."""
    by_fingerprint = {}
    for entry in listed:
        by_fingerprint.setdefault(entry["fingerprint"], entry["version"])
    return [(e["version"], e["kind"], e["replaced_version"], e["reason"], e["requested_by"], e["serving"],
             by_fingerprint[e["fingerprint"]]) for e in listed]


def test_several_node_processes_open_an_empty_mariadb_store_at_once(mysql_history):
    for node, code, output in mysql_history["roots"]:
        assert code == 0, f"{node} exited {code}:\n{output[-3000:]}"
    from ml_metadata import metadata_store
    from pipelines.config import MetadataConfig

    env = mysql_history["mysql_env"]
    store = metadata_store.MetadataStore(MetadataConfig.parse(env["MLOPS_MLMD"], env["MLOPS_MLMD_PASSWORD"]).to_proto())
    run = store.get_context_by_type_and_name("pipeline_run", "concurrent-roots")
    executions = store.get_executions_by_context(run.id)
    node_type = store.get_context_type("node").id
    nodes = {c.name.split(".")[-1] for e in executions for c in store.get_contexts_by_execution(e.id)
             if c.type_id == node_type}
    assert all(e.last_known_state == e.COMPLETE for e in executions)
    assert len(executions) == len(ROOTS) and nodes == set(ROOTS), nodes


def test_nightly_runs_rollback_and_models_list_on_mariadb_as_on_sqlite(mysql_history):
    on_sqlite, on_mysql = mysql_history["sqlite"], mysql_history["mysql"]
    for history in (on_sqlite, on_mysql):
        assert history["first"]["pushed_version"] == 1
        assert history["second"]["pushed_version"] == 2
        assert history["rollback"]["new_version"] == 3 and history["rollback"]["target"]["version"] == 1
    assert _shape(on_mysql["listed"]) == _shape(on_sqlite["listed"])
    assert _shape(on_mysql["listed"])[-1][1:] == ("rollback", 2, "night 2 looks wrong", "tester", True, 1)
    # Nothing went to the home's SQLite file: the MariaDB home has none.
    assert not (mysql_history["mysql_home"] / "var" / "metadata.sqlite").exists()


def test_migrate_moves_the_sqlite_history_and_it_keeps_working(mysql_history, tmp_path):
    home = mysql_history["sqlite_home"]
    before = json.loads(mlops(home, "models", "list", "--json").stdout)
    env = _mariadb(home)
    url = env["MLOPS_MLMD"]
    password_only = {"MLOPS_MLMD_PASSWORD": env["MLOPS_MLMD_PASSWORD"]}  # --from: the home's SQLite file
    moved = mlops(home, "metadata", "migrate", "--to", url, "--json", env=password_only)
    result = json.loads(moved.stdout[moved.stdout.index("{"):])
    assert result["to"] == url and result["counts"]["artifacts"] > 0
    assert env["MLOPS_MLMD_PASSWORD"] not in moved.stdout + moved.stderr
    sqlite_info = json.loads(mlops(home, "metadata", "info", "--json").stdout)
    mysql_info = json.loads(mlops(home, "metadata", "info", "--json", env=env).stdout)
    assert mysql_info["counts"] == sqlite_info["counts"]
    # Every push and the rollback, with the same ids and times.
    assert json.loads(mlops(home, "models", "list", "--json", env=env).stdout) == before
    # Running it again is a no-op, not a second copy.
    again = mlops(home, "metadata", "migrate", "--to", url, env=password_only).stdout
    assert "nothing to do" in again
    assert json.loads(mlops(home, "metadata", "info", "--json", env=env).stdout)["counts"] == mysql_info["counts"]
    # The moved history keeps working: a rollback finds the pushed model of version 2 and records a
    # push in MariaDB (version 4), lineage answers from there, and the SQLite file stays as it was.
    rolled = mlops(home, "rollback", "--to", "2", "--reason", "after the move", "--no-server", "--json", env=env).stdout
    rolled = json.loads(rolled[rolled.index("{"):])
    assert rolled["new_version"] == 4 and rolled["target"]["version"] == 2
    after = json.loads(mlops(home, "models", "list", "--json", env=env).stdout)
    assert [e["version"] for e in after] == [1, 2, 3, 4] and after[-1]["kind"] == "rollback"
    assert json.loads(mlops(home, "metadata", "info", "--json").stdout) == sqlite_info
    lineage = mlops(home, "lineage", "--version", "4", env=env).stdout
    assert "after the move" in lineage


def test_the_password_is_in_no_row_of_the_store_and_no_log(mysql_history):
    import pymysql

    from pipelines.config import MetadataConfig

    env = mysql_history["mysql_env"]
    secret = env["MLOPS_MLMD_PASSWORD"]
    assert len(secret) >= 12
    config = MetadataConfig.parse(env["MLOPS_MLMD"], secret)
    connection = pymysql.connect(host=config.mysql_host, port=config.mysql_port, user=config.mysql_user,
                                 password=secret, database=config.mysql_database)
    rows = 0
    with connection.cursor() as cursor:
        cursor.execute("SHOW TABLES")
        for (table,) in cursor.fetchall():
            cursor.execute(f"SELECT * FROM `{table}`")
            for row in cursor.fetchall():
                rows += 1
                assert secret not in repr(row), f"the password is in a row of {table}"
    connection.close()
    assert rows > 100  # the runs' whole history was searched
    home = mysql_history["mysql_home"]
    logs = [p for p in (home / "var").rglob("*") if p.is_file() and p.suffix in (".log", ".json", ".txt")]
    assert logs
    for path in logs:
        assert secret not in path.read_text(errors="replace"), f"the password is in {path}"
