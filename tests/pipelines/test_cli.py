"""The `mlops` command: help, fast import, one-line errors that name the fix."""

import subprocess
import sys

import pytest

from tests.conftest import DAY1, FAST_RUN_ARGS, REPO, make_home, mlops


def test_importing_the_cli_does_not_import_tensorflow_or_tfx():
    code = "import sys, pipelines.cli; print(sorted(m for m in ('tensorflow', 'tfx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [[], ["data"], ["data", "seed"], ["run"], ["node"], ["node", "run"], ["node", "list"], ["dags", "manifest"],
     ["summary"], ["airflow"], ["rollback"], ["models", "list"], ["models", "prune"], ["serve"], ["worker"],
     ["data", "make-span"]],
)
def test_every_command_explains_itself(tmp_path, command):
    result = mlops(tmp_path, *command, "--help")
    assert result.returncode == 0
    assert "usage: mlops" in result.stdout
    assert len(result.stdout.splitlines()) > 3


def test_run_help_documents_the_gates(tmp_path):
    text = mlops(tmp_path, "run", "--help").stdout
    for option in ("--date", "--strategy", "--auc-floor", "--min-improvement", "--slice-margin"):
        assert option in text


def _one_line_error(result):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_unknown_strategy_is_a_one_line_error_naming_the_choices(tmp_path):
    home = make_home(tmp_path, days=1, rows=50)
    line = _one_line_error(mlops(home, "run", "--strategy", "tpu_pod", check=False))
    assert "unknown distribution strategy 'tpu_pod'" in line
    assert "mirrored" in line and "multi_worker" in line


def test_a_run_fn_that_is_not_module_dot_function_is_a_one_line_error(tmp_path):
    home = make_home(tmp_path, days=1, rows=50)
    line = _one_line_error(mlops(home, "run", "--run-fn", "my model.py", check=False))
    assert "--run-fn 'my model.py' is not MODULE.FUNCTION" in line and "--run-fn my_model.run_fn" in line


def test_missing_schema_file_is_a_one_line_error_naming_the_fix(tmp_path):
    home = make_home(tmp_path, days=1, rows=50)
    (home / "schemas" / "taxi" / "schema.pbtxt").unlink()
    line = _one_line_error(mlops(home, "run", check=False))
    assert "schema file" in line and "does not exist" in line
    assert "restore schemas/taxi/schema.pbtxt" in line


def test_empty_data_dir_is_a_one_line_error_naming_the_fix(tmp_path):
    home = make_home(tmp_path, days=0)
    line = _one_line_error(mlops(home, "run", check=False))
    assert "no spans under" in line and "mlops data seed" in line


def test_span_folder_without_csv_blocks_the_run_at_the_span_check_naming_the_folder(pipeline_home):
    home = pipeline_home(days=0)
    folder = home / "data" / "incoming" / DAY1.isoformat()
    folder.mkdir(parents=True)
    result = mlops(home, "run", "--date", DAY1.isoformat(), *FAST_RUN_ARGS, check=False)
    assert result.returncode == 3, result.stdout + result.stderr  # blocked: retrying would block again
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("run stopped at SpanCheck: ") and f"no CSV file in the span folder {folder}" in last
    assert "CsvExampleGen" not in result.stdout.split("nodes:")[-1]


def test_bad_date_is_rejected_by_the_parser(tmp_path):
    result = mlops(tmp_path, "run", "--date", "22/11/2026", check=False)
    assert result.returncode == 2
    assert "is not a date like" in result.stderr


@pytest.mark.parametrize(
    "gates, words",
    [("[drift]\nwarn = [\"no_such_feature\"]\n", "names features the schema does not have: no_such_feature"),
     ("[drift]\nwarn = \"company\"\n", "must be a list of feature names"),
     ("[span]\nmax_duplicate_fraction = 2\n", "is not a fraction"),
     ("[drift\n", "is not valid TOML")],
)
def test_a_bad_gates_file_is_a_one_line_error_before_anything_runs(tmp_path, gates, words):
    home = make_home(tmp_path, days=0)
    (home / "schemas" / "taxi" / "gates.toml").write_text(gates)
    (home / "data" / "incoming" / DAY1.isoformat()).mkdir(parents=True)
    line = _one_line_error(mlops(home, "validate", "--date", DAY1.isoformat(), check=False))
    assert words in line and "gates.toml" in line
    assert not (home / "var" / "metadata.sqlite").exists()  # nothing ran


def test_run_ids_made_in_the_same_second_differ():
    # A cached validate through the warm worker ends in well under a second; two runs that
    # shared an id shared one ML Metadata run context and the second reported the first's verdict.
    import datetime as dt

    from pipelines.runner import default_run_id

    ids = {default_run_id(dt.date(2026, 11, 20), kind="validate") for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("validate__2026-11-20__") for i in ids)
