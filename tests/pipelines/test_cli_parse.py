"""`mlops` parsing and the refusals that come before any work, called in-process through `main([...])`
(no subprocess, no TensorFlow): each command group registers its own parser in pipelines/cli/."""

from __future__ import annotations

import pytest

from pipelines import cli
from pipelines.cli import docs
from pipelines.worker.server import load_entry

GROUPS = ("data", "validate", "run", "summary", "node", "worker", "dags", "airflow", "compile", "monitoring", "rollback",
          "models", "score", "tune", "lineage", "metadata", "serve", "schema", "docs")


def run(capsys, *argv: str):
    """(exit code, stdout, stderr) of `mlops <argv>` in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as done:  # argparse: --help and usage errors
        code = done.code
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_lists_every_command_group(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    listed = [line.split()[0] for line in out.split("COMMAND\n", 1)[1].splitlines()
              if line.startswith("    ") and not line.startswith("     ")]
    assert listed == list(GROUPS)


@pytest.mark.parametrize("group", GROUPS)
def test_each_group_explains_itself(capsys, group):
    code, out, _ = run(capsys, group, "--help")
    assert code == 0
    assert out.startswith(f"usage: mlops {group}")
    assert len(out.splitlines()) > 3


def test_the_committed_cli_reference_is_what_the_parsers_say(capsys):
    code, out, err = run(capsys, "docs", "--check")
    assert code == 0, err
    assert "matches" in out
    text = docs.DEFAULT_PATH.read_text()
    for group in GROUPS:
        assert f"## `mlops {group}`" in text
    # Every option of every command is in it, e.g. the newest ones.
    assert "--keep-versions N" in text and "--single-threaded-executor" in text


def test_a_stale_cli_reference_fails_the_check_and_is_rewritten(capsys, tmp_path):
    stale = tmp_path / "cli.md"
    stale.write_text(docs.DEFAULT_PATH.read_text().replace("--train-steps", "--steps"))
    code, _, err = run(capsys, "docs", "--check", "--output", str(stale))
    assert code == 2
    assert "is not what `mlops --help` says now" in err and "mlops docs" in err
    assert run(capsys, "docs", "--output", str(stale))[0] == 0
    assert stale.read_text() == docs.DEFAULT_PATH.read_text()
    code, out, _ = run(capsys, "docs", "--output", str(stale))
    assert code == 0 and out.startswith("unchanged")


def test_the_reference_does_not_depend_on_the_terminal_width(monkeypatch):
    root = cli.build_parser()
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docs.render(root)
    monkeypatch.setenv("COLUMNS", "250")
    assert docs.render(root) == narrow
    import os

    assert os.environ["COLUMNS"] == "250"  # put back as it was


def test_a_bad_date_is_a_usage_error(capsys):
    code, _, err = run(capsys, "run", "--date", "22/11/2026")
    assert code == 2
    assert "'22/11/2026' is not a date like 2026-11-22" in err


def test_airflow_refuses_an_option_of_another_subcommand(capsys, tmp_path):
    code, _, err = run(capsys, "--home", str(tmp_path), "airflow", "status", "--port", "8093")
    assert code == 2
    assert "`mlops airflow status` does not use --port (--port is for up)" in err


def test_airflow_run_refuses_an_option_the_dag_would_ignore(capsys, tmp_path):
    code, _, err = run(capsys, "--home", str(tmp_path), "airflow", "run", "--strategy", "mirrored")
    assert code == 2
    assert "--strategy would be ignored" in err and "gates.toml" in err


def test_rollback_refuses_contradictory_server_options(capsys, tmp_path):
    code, _, err = run(capsys, "--home", str(tmp_path), "rollback", "--previous", "--reason", "bad model",
                       "--no-server", "--server", "http://127.0.0.1:1")
    assert code == 2
    assert "--no-server does not go with --server or --wait" in err


def test_models_prune_refuses_to_delete_the_served_version(capsys, tmp_path):
    code, _, err = run(capsys, "--home", str(tmp_path), "models", "prune", "--keep", "0")
    assert code == 2
    assert "--keep 0 would delete the served version" in err


def test_schema_prune_refuses_negative_days(capsys, tmp_path):
    code, _, err = run(capsys, "--home", str(tmp_path), "schema", "prune", "--keep-days", "-1")
    assert code == 2
    assert "--keep-days -1 is negative" in err


def test_serve_refuses_no_ports_before_loading_anything(capsys, tmp_path):
    code, _, err = run(capsys, "--home", str(tmp_path), "serve", "--rest-port", "0", "--grpc-port", "0")
    assert code == 2
    assert "both --rest-port and --grpc-port are 0" in err


def test_the_worker_server_runs_only_a_named_entry_function():
    assert load_entry("pipelines.cli:main") is cli.main
    with pytest.raises(ValueError, match="is not module:function"):
        load_entry("pipelines.cli")
