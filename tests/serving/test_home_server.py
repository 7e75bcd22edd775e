"""Which running `mlops serve` is a home's model server, and what follows from it (issue 6).

`make up` records the server it starts. A `mlops serve` started by hand on the home's model
directory (the Pusher's) registers itself when no other server is registered, so that `mlops
rollback` waits for it and retention keeps what its models.config labels; it forgets itself when
it stops, and `make down` leaves it running. On the home's defaults it follows
`<home>/serving/models.config` also when that file is written or removed while it runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import services
from serving import home as home_record
from tests.conftest import mlops
from tests.serving.helpers import Http, Server, publish


def _home_with_versions(taxi_model, root: Path, versions) -> Path:
    home = root / "home"
    for version in versions:
        publish(taxi_model["model"], home / "serving" / "models" / "taxi", version)
    return home


def test_a_server_on_the_home_defaults_registers_itself_follows_the_home_config_and_outlives_make_down(
        taxi_model, tmp_path):
    home = _home_with_versions(taxi_model, tmp_path, (1, 2))
    base = (home / "serving" / "models" / "taxi").resolve()
    server = Server(home, tmp_path / "server.log")
    try:
        server.wait_serving(2)
        server.wait_until(lambda: home_record.running_model_server(home) is not None, 30, "the server registered")
        assert home_record.running_model_server(home) == home_record.RunningModelServer(
            server.proc.pid, f"http://127.0.0.1:{server.rest_port}", base,
            home.resolve() / "serving" / "models.config", home_record.STARTED_BY_HAND)
        assert "registered as the model server of" in server.log()
        assert "models.config (absent: the defaults serve; reread when it is written" in server.log()

        lines = []
        manager = services.Services(home, emit=lines.append)
        manager.status()
        assert any(line.startswith("model-server") and f"running (pid {server.proc.pid})" in line
                   and "serving version 2" in line and "started by `mlops serve`" in line
                   and "log: the stderr of the terminal" in line for line in lines), lines
        manager.down(stop_worker=False)
        assert any(f"left the model server started by `mlops serve` running (pid {server.proc.pid})" in line
                   for line in lines), lines
        assert server.alive() and home_record.running_model_server(home).pid == server.proc.pid

        # The home's models.config, written after the start: versions 1 and 2 with a label ...
        config = home / "serving" / "models.config"
        config.write_text('model_config_list { config { name: "taxi" base_path: "serving/models/taxi" '
                          'model_version_policy { specific { versions: 1 versions: 2 } } '
                          'version_labels { key: "stable" value: 1 } } }\n')
        server.wait_until(lambda: server.available_versions() == [1, 2], 60, "the written config's versions 1, 2")
        code, headers, _ = Http(server.rest_port).post("/v1/models/taxi/labels/stable:predict",
                                                       {"instances": taxi_model["rows"][:1]})
        assert code == 200 and headers["X-Model-Version"] == "1"
        # ... then removed: back to the default policy (the newest version only).
        config.unlink()
        server.wait_until(lambda: server.available_versions() == [2], 60, "the defaults again after the removal")
        assert "is gone: back to the defaults" in server.log()
        assert Http(server.rest_port).post("/v1/models/taxi/labels/stable:predict",
                                           {"instances": taxi_model["rows"][:1]})[0] == 404
    finally:
        assert server.stop() == 0
    assert home_record.running_model_server(home) is None, "a stopped server stays registered"
    assert not services.pid_file(home, services.MODEL_SERVER).exists()


def test_retention_reads_the_models_config_of_the_registered_server_and_a_second_server_does_not_take_over(
        taxi_model, tmp_path):
    home = _home_with_versions(taxi_model, tmp_path, (1, 2, 3))
    elsewhere = tmp_path / "elsewhere" / "models.config"
    elsewhere.parent.mkdir()
    base = home / "serving" / "models" / "taxi"
    elsewhere.write_text(f'model_config_list {{ config {{ name: "taxi" base_path: "{base}" '
                         'version_labels { key: "stable" value: 1 } } }\n')
    server = Server(home, tmp_path / "server.log", config=elsewhere)
    second = None
    try:
        server.wait_serving(3)
        server.wait_until(lambda: home_record.running_model_server(home) is not None, 30, "the server registered")
        registered = home_record.running_model_server(home)
        assert (registered.pid, registered.config_file) == (server.proc.pid, elsewhere.resolve())

        # No --model-config-file, no --server: the registered server's config and loaded versions.
        plan = json.loads(mlops(home, "models", "prune", "--keep", "1", "--dry-run", "--json").stdout)
        assert plan["delete"] == [2], plan
        assert "label 'stable'" in plan["keep"]["1"] and "loaded by the running server" in plan["keep"]["3"], plan
        # The same for the Pusher's retention: the models.config it would read.
        from serving.config import project_config_path

        assert project_config_path(home, None) == elsewhere.resolve()

        # A second server of the same directory serves, but the first stays the home's.
        second = Server(home, tmp_path / "second.log", base=home / "serving" / "models" / "taxi")
        second.wait_serving(3)
        second.wait_until(lambda: "not this home's registered model server" in second.log(), 30, "its log line")
        assert f"pid {server.proc.pid} is" in second.log()
        assert second.stop() == 0
        second = None
        assert home_record.running_model_server(home).pid == server.proc.pid
    finally:
        if second is not None:
            second.stop()
        assert server.stop() == 0
    assert home_record.running_model_server(home) is None
    assert project_config_path(home, None) is None  # no server, no <home>/serving/models.config


def test_the_home_server_record_follows_models_config_edits_and_a_waiting_server_takes_over(taxi_model, tmp_path):
    """The record is kept in step while the servers run: a models.config edit that drops the home's
    directory unregisters the server (rollbacks would otherwise wait for a server that never loads the
    restored version), a second server of the directory takes over, and the first one, its directory
    back, waits its turn until the second one stops."""
    home = _home_with_versions(taxi_model, tmp_path, (1,))
    base = (home / "serving" / "models" / "taxi").resolve()
    other = tmp_path / "other" / "taxi"
    publish(taxi_model["model"], other, 7)
    config = tmp_path / "first" / "models.config"
    config.parent.mkdir()

    def serve(directory: Path) -> None:
        config.write_text(f'model_config_list {{ config {{ name: "taxi" base_path: "{directory}" }} }}\n')

    def registered_pid():
        found = home_record.running_model_server(home)
        return found.pid if found else None

    serve(base)
    first = Server(home, tmp_path / "first.log", config=config)
    second = None
    try:
        first.wait_serving(1)
        first.wait_until(lambda: registered_pid() == first.proc.pid, 30, "the first server registered")
        second = Server(home, tmp_path / "second.log", base=base)
        second.wait_serving(1)
        second.wait_until(lambda: "not this home's registered model server" in second.log(), 30, "its log line")
        assert registered_pid() == first.proc.pid

        # The first server's models.config now serves another directory: it is not the home's any more,
        # and the second server, which still serves the home's directory, takes over.
        serve(other)
        first.wait_until(lambda: first.available_versions() == [7], 60, "the first server on the other directory")
        first.wait_until(lambda: registered_pid() == second.proc.pid, 30, "the second server took over")
        assert "no longer serves the home's model directory" in first.log()
        assert "registered as the model server of" in second.log()
        assert home_record.running_model_server(home).base_path == base

        # The home's directory back in the first server's config: the second stays the home's server ...
        serve(base)
        first.wait_until(lambda: first.available_versions() == [1], 60, "the first server back on the home")
        first.wait_until(lambda: first.log().count("not this home's registered model server") == 1, 30,
                         "the first server waiting its turn")
        assert registered_pid() == second.proc.pid
        # ... until it stops: then the first one is the home's server again.
        assert second.stop() == 0
        second = None
        first.wait_until(lambda: registered_pid() == first.proc.pid, 30, "the first server registered again")
        assert first.log().count("registered as the model server of") == 2
    finally:
        if second is not None:
            second.stop()
        assert first.stop() == 0
    assert registered_pid() is None
