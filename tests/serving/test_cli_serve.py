"""`mlops serve` / `mlops models prune` on the command line: help, and one-line errors before any work."""

from __future__ import annotations

import pytest

from tests.conftest import mlops


@pytest.mark.parametrize("command", [["serve"], ["models", "prune"]])
def test_commands_explain_themselves(tmp_path, command):
    result = mlops(tmp_path, *command, "--help")
    assert result.returncode == 0 and "usage: mlops" in result.stdout
    if command == ["serve"]:
        for option in ("--model-name", "--model-base-path", "--model-config-file", "--rest-port", "--grpc-port",
                       "--host", "--max-body-bytes", "--request-timeout", "--enable-batching", "--max-batch-size",
                       "--num-batch-threads", "--tensorflow-inter-op-parallelism", "--tensorflow-intra-op-parallelism"):
            assert option in result.stdout


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_serve_refuses_a_missing_models_config(tmp_path):
    line = _one_line_error(mlops(tmp_path, "serve", "--model-config-file", "nope.config", check=False))
    assert "nope.config does not exist" in line


def test_serve_refuses_a_broken_models_config_before_importing_tensorflow(tmp_path):
    (tmp_path / "models.config").write_text("model_config_list { config { name: 'taxi' }")
    line = _one_line_error(mlops(tmp_path, "serve", "--model-config-file", "models.config", check=False, timeout=60))
    assert "ModelServerConfig" in line


def test_serve_refuses_to_run_without_any_port(tmp_path):
    line = _one_line_error(mlops(tmp_path, "serve", "--rest-port", "0", "--grpc-port", "0", check=False))
    assert "enable at least one" in line


@pytest.mark.parametrize("flag, value", [("--max-batch-size", "0"), ("--num-batch-threads", "0"),
                                         ("--tensorflow-inter-op-parallelism", "-1"),
                                         ("--tensorflow-intra-op-parallelism", "-2")])
def test_serve_refuses_sizes_that_cannot_work(tmp_path, flag, value):
    line = _one_line_error(mlops(tmp_path, "serve", flag, value, check=False))
    assert flag in line and "or more" in line
