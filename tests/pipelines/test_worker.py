"""The warm worker: nodes run in forks of it, with their output and exit codes relayed."""

from tests.conftest import DAY1, mlops


def node(home, *args, env=None):
    return mlops(home, "node", "run", *args, check=False, timeout=600, env=env)


def test_nodes_run_in_the_warm_worker_with_output_and_exit_codes_relayed(pipeline_home):
    home = pipeline_home(days=1, rows=200, end=DAY1)
    try:
        first = node(home, "--node", "served_model", "--run-id", "w1", "--date", DAY1.isoformat())
        assert first.returncode == 0, first.stderr
        assert "node served_model: complete" in first.stdout
        status = mlops(home, "worker", "status").stdout
        assert status.startswith("warm worker ") and str(home) not in status  # socket in /tmp
        pid = int(status.split()[2])
        # A second node is forked from the same worker: not a new one.
        second = node(home, "--node", "ImportSchemaGen", "--run-id", "w1", "--date", DAY1.isoformat())
        assert second.returncode == 0 and "node ImportSchemaGen: complete" in second.stdout
        assert int(mlops(home, "worker", "status").stdout.split()[2]) == pid
        # Errors keep their exit code and one-line reason through the worker.
        unknown = node(home, "--node", "NoSuchNode", "--run-id", "w1", "--date", DAY1.isoformat())
        assert unknown.returncode == 2
        assert "no node 'NoSuchNode'" in (unknown.stdout + unknown.stderr)
        assert "mlops node list" in (unknown.stdout + unknown.stderr)
        # The same node without the worker gives the same answer.
        cold = node(home, "--node", "served_model", "--run-id", "w2", "--date", DAY1.isoformat(), "--cold")
        assert cold.returncode == 0 and "node served_model: complete" in cold.stdout
    finally:
        stopped = mlops(home, "worker", "stop", check=False).stdout
    assert "stops after" in stopped


def test_a_change_to_any_package_a_node_imports_retires_the_warm_worker(tmp_path, monkeypatch):
    """The socket name carries a fingerprint of the code: an edited file means a new worker."""
    from pipelines.worker import protocol

    for package in ("pipelines", "components", "serving", "monitoring"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "module.py").write_text("x = 1\n")
    monkeypatch.setattr(protocol, "REPO", tmp_path)
    before = protocol.code_fingerprint()
    for package in ("pipelines", "components", "serving", "monitoring"):
        (tmp_path / package / "module.py").write_text(f"x = 2  # {package} changed\n")
        after = protocol.code_fingerprint()
        assert after != before, f"a change under {package}/ keeps the old worker"
        before = after
