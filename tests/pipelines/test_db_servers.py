"""The home's database servers (pipelines/db_servers.py): Debian's MariaDB, PostgreSQL 15 and Redis as
plain processes on 127.0.0.1, state under var/db/. Each test starts real servers in its own home
(about a second each; `make servers` installs them) and stops them whatever happens."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pipelines import db_servers
from serving.errors import ConfigError
from serving.net import port_free


@pytest.fixture
def db_home(tmp_path):
    """A home whose servers are stopped at the end of the test."""
    home = tmp_path / "home"
    home.mkdir()
    try:
        yield home
    finally:
        db_servers.stop(home, emit=lambda _: None)


def query(home: Path, name: str) -> str:
    """One query through the server's own client, logged in with the generated password."""
    port = db_servers.running_port(home, name)
    if name == "mariadb":
        env = dict(os.environ, MYSQL_PWD=db_servers.password(home, name, db_servers.MLMD_USER))
        command = ["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", db_servers.MLMD_USER,
                   "-N", "-B", "-e", "SELECT CONCAT(CURRENT_USER(), ' ', DATABASE())", db_servers.MLMD_DATABASE]
    elif name == "postgresql":
        env = dict(os.environ, PGPASSWORD=db_servers.password(home, name, db_servers.AIRFLOW_USER))
        command = ["psql", "-X", "-h", "127.0.0.1", "-p", str(port), "-U", db_servers.AIRFLOW_USER, "-d",
                   db_servers.AIRFLOW_DATABASE, "-Atc", "SELECT current_user || ' ' || current_database()"]
    else:
        env = dict(os.environ, REDISCLI_AUTH=db_servers.password(home, name, db_servers.REDIS_USER))
        command = ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "PING"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


ANSWERS = {"mariadb": "mlmd@127.0.0.1 mlmd", "postgresql": "airflow airflow", "redis": "PONG"}


@pytest.mark.parametrize("name", db_servers.SERVERS)
def test_a_server_starts_answers_is_reused_and_stops_by_pid(db_home, name):
    said = []
    first = db_servers.start(db_home, said.append, names=(name,))[name]
    print(f"{name}: first start (data initialised) ready in {first['seconds']:.2f}s")
    assert query(db_home, name) == ANSWERS[name]
    assert "started in" in said[0] and str(first["port"]) in said[0]

    again = db_servers.start(db_home, said.append, names=(name,))[name]
    assert (again["pid"], again["port"]) == (first["pid"], first["port"])
    assert "already running" in said[-1]

    assert db_servers.stop(db_home, emit=said.append) == [name]
    assert not db_servers.pid_file(db_home, name).exists()
    assert port_free(first["port"])
    recorded = db_servers.read_state(db_home)[name]
    assert "pid" not in recorded and recorded["port"] == first["port"]

    # A second start keeps the data (and so the accounts) and, while it is free, the port.
    restarted = db_servers.start(db_home, said.append, names=(name,))[name]
    print(f"{name}: restart ready in {restarted['seconds']:.2f}s")
    assert restarted["port"] == first["port"] and restarted["pid"] != first["pid"]
    assert query(db_home, name) == ANSWERS[name]


def test_all_three_keep_their_state_under_var_db_and_their_secrets_private(db_home):
    said = []
    record = db_servers.start(db_home, said.append)
    assert sorted(record) == sorted(db_servers.SERVERS)
    assert len({server["port"] for server in record.values()}) == 3
    assert not {3306, 5432, 6379} & {server["port"] for server in record.values()}
    secrets = []
    for name in db_servers.SERVERS:
        assert db_servers.data_dir(db_home, name).is_dir()
        assert db_servers.log_file(db_home, name).is_file()
        assert int(db_servers.pid_file(db_home, name).read_text()) == record[name]["pid"]
        files = sorted(db_servers.server_dir(db_home, name).glob("*.password"))
        assert files, name
        for path in files:
            assert path.stat().st_mode & 0o777 == 0o600
            secrets.append(path.read_text().strip())
    assert db_servers.redis_config(db_home).stat().st_mode & 0o777 == 0o600
    assert db_servers.mariadb_socket(db_home).is_socket()
    status = db_servers.status_lines(db_servers.status(db_home))
    assert all("ready" in line and "NOT" not in line for line in status), status
    # Never printed, never logged, never on a command line (what `ps` shows every user).
    logs = "".join(db_servers.log_file(db_home, name).read_text() for name in db_servers.SERVERS)
    shown = "\n".join(said + status)
    command_lines = b"".join(Path(f"/proc/{server['pid']}/cmdline").read_bytes() for server in record.values())
    for secret in secrets:
        assert secret not in logs and secret not in shown and secret.encode() not in command_lines


def test_only_password_logins_are_open(db_home):
    record = db_servers.start(db_home, lambda _: None, names=("mariadb", "postgresql"))
    no_password = subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(record["mariadb"]["port"]),
                                  "-u", "root", "-e", "SELECT 1"], capture_output=True, text=True,
                                 env={**os.environ, "MYSQL_PWD": ""})
    assert no_password.returncode != 0 and "Access denied" in no_password.stderr
    wrong = subprocess.run(["psql", "-X", "-w", "-h", "127.0.0.1", "-p", str(record["postgresql"]["port"]), "-U",
                            "postgres", "-d", "postgres", "-c", "SELECT 1"], capture_output=True, text=True,
                           env={**os.environ, "PGPASSWORD": "wrong"})
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_a_server_that_exits_while_starting_is_an_error_naming_its_log(db_home, monkeypatch):
    monkeypatch.setattr(db_servers, "command", lambda home, name, port: ["/bin/sh", "-c", "echo cannot bind; exit 1"])
    with pytest.raises(ConfigError) as failed:
        db_servers.start(db_home, lambda _: None, names=("redis",), timeout=10)
    assert "Redis exited while starting" in str(failed.value)
    assert str(db_servers.log_file(db_home, "redis")) in str(failed.value) and "cannot bind" in str(failed.value)
    assert db_servers.running_pid(db_home, "redis") is None


def test_a_long_home_path_gets_a_short_mariadb_socket(tmp_path):
    deep = tmp_path / ("x" * 90) / "home"
    assert str(db_servers.mariadb_socket(deep)).startswith("/tmp/mlops-db-")
    assert db_servers.pg_socket_dir(deep) is None  # TCP only
    assert db_servers.mariadb_socket(Path("/h")) == Path("/h/var/db/mariadb/mariadb.sock")


def test_clients_of_a_stopped_server_are_told_how_to_start_it(tmp_path):
    with pytest.raises(ConfigError) as failed:
        db_servers.mlmd_environment(tmp_path)
    assert "MariaDB" in str(failed.value) and "BACKEND=postgres" in str(failed.value)
