"""Shared fixtures. Every test gets its own project home (data, var/, schema copy): no shared state
except the session's pipeline runs, which the tests that use them only read.

Markers: a test is marked from the fixtures it uses (FIXTURE_MARKERS below), never by hand:
  pipeline  runs a real TFX pipeline, or uses a fixture that did (minutes)
  airflow   needs .venv-airflow (runs Airflow, or Airflow's Python on the DAG files)
  browser   needs headless Chromium and chromedriver (`make browser`)
`make test-fast` deselects all three. The helpers below refuse to start a pipeline or Airflow from a
test that lacks the marker, so a new test cannot slip a pipeline run into the fast loop.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

import pytest

from pipelines.errors import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = Path(sys.executable)

# Small spans and few training steps keep the suite within CI's budget (brief: < 30 min).
SMALL_ROWS = 1500
FAST_RUN_ARGS = ("--train-steps", "60", "--eval-steps", "10")
DAY1 = dt.date(2026, 11, 20)
DAY2 = dt.date(2026, 11, 21)

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Every test home gets its own warm worker; let idle ones go after 2 min, not 15, so a 25-minute
# suite does not keep a dozen TFX processes (~0.5 GB each) alive.
os.environ.setdefault("MLOPS_WORKER_IDLE_SECONDS", "120")
# For a shared setup's home whose tests run more commands there long after the setup (the shared
# setups run first, tests/prepared.py): its worker stays, and the fixture stops it when they are done.
KEEP_WORKER = {"MLOPS_WORKER_IDLE_SECONDS": "1800"}

# ---------------------------------------------------------------------------------------- markers

# The one table that says what a test needs beyond .venv: a test gets the markers of every fixture
# it uses, directly or through other fixtures (item.fixturenames is the whole closure). A test that
# runs a pipeline or Airflow itself asks for pipeline_home / airflow_project, so that it is listed here.
FIXTURE_MARKERS: Dict[str, Tuple[str, ...]] = {
    # fixtures of this file, for tests that run things themselves
    "pipeline_home": ("pipeline",),  # a seeded home the test runs `mlops run|validate|node run` in
    "airflow_project": ("airflow",),  # an empty home the test sets up Airflow in (airflow_env.init)
    "airflow_python": ("airflow",),  # runs code with .venv-airflow's Python (tests/dags)
    # shared sequences of real runs (each module says what it runs)
    "runs": ("pipeline",),  # tests/e2e/conftest.py: 6 `mlops run`s of two spans
    "gated": ("pipeline",),  # tests/e2e/test_data_gates.py: one good run, then a run per fault kind
    "windowed": ("pipeline",),  # tests/e2e/test_window.py: nights over a rolling window of spans
    "tuned": ("pipeline",),  # tests/e2e/test_tuning.py: a night, `mlops tune`, the next night
    "nightly": ("pipeline", "airflow"),  # tests/e2e/test_airflow_nightly.py: `airflow dags test` runs
    "airflow_services": ("pipeline", "airflow"),  # tests/e2e/test_airflow_ui.py: `make up`, a backfill
    "airflow_postgres": ("pipeline", "airflow"),  # tests/e2e/test_airflow_postgres.py: `up --backend postgres`, a run
    "taxi_model": ("pipeline",),  # tests/serving/conftest.py: the model a pipeline run pushed
    "mysql_history": ("pipeline",),  # tests/e2e/test_mlmd_mysql.py: runs and rollbacks on SQLite and MariaDB
    "chromium": ("browser",),  # tests/e2e/conftest.py: headless Chromium via chromedriver
}
MARKERS = ("pipeline", "airflow", "browser")
# What to ask for when a marker is missing (the guard's message).
FIXTURE_FOR = {
    "pipeline": "pipeline_home (or a shared run: runs, taxi_model, gated)",
    "airflow": "airflow_project (or airflow_python, nightly, airflow_services)",
    "browser": "chromium",
}

# `mlops` subcommands that start real work, and the markers a test needs to start them.
COMMAND_MARKERS: Dict[Tuple[str, ...], FrozenSet[str]] = {
    ("run",): frozenset({"pipeline"}),
    ("validate",): frozenset({"pipeline"}),
    ("node", "run"): frozenset({"pipeline"}),
    ("rollback",): frozenset({"pipeline"}),
    ("tune",): frozenset({"pipeline"}),
    ("worker", "start"): frozenset({"pipeline"}),
    ("airflow", "run"): frozenset({"pipeline", "airflow"}),
    **{("airflow", sub): frozenset({"airflow"}) for sub in ("backfill", "up", "init", "pause", "unpause")},
}

_MARKS: Dict[str, FrozenSet[str]] = {}  # node id -> its markers among MARKERS, filled at collection


def markers_for(fixturenames: Iterable[str]) -> FrozenSet[str]:
    return frozenset(m for name in fixturenames for m in FIXTURE_MARKERS.get(name, ()))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    # Called for every collected item, components/*/*_test.py included (this hook is not per directory).
    for item in items:
        implied = markers_for(getattr(item, "fixturenames", ()))
        by_hand = {m.name for m in item.iter_markers() if m.name in MARKERS} - implied
        if by_hand:  # the table stays the single source: a fixture says what a test needs
            raise pytest.UsageError(
                f"{item.nodeid} is marked {', '.join(sorted(by_hand))} by hand: use a fixture instead "
                f"({'; '.join(f'{m}: {FIXTURE_FOR[m]}' for m in sorted(by_hand))}; FIXTURE_MARKERS in tests/conftest.py)")
        for marker in sorted(implied):
            item.add_marker(marker)
        _MARKS[item.nodeid] = implied


def _current_test() -> Optional[Tuple[str, str]]:
    """(node id, phase) of the test pytest is running, from PYTEST_CURRENT_TEST; None outside one."""
    current = os.environ.get("PYTEST_CURRENT_TEST")
    if not current:
        return None
    nodeid, _, phase = current.rpartition(" (")
    return nodeid, phase.rstrip(")")


def missing_markers(needed: Iterable[str]) -> FrozenSet[str]:
    """The markers of `needed` the running test lacks (none outside a test and in teardown)."""
    current = _current_test()
    if current is None or current[1] == "teardown":  # fixtures' finalizers only stop things
        return frozenset()
    nodeid, _ = current
    if nodeid not in _MARKS:
        raise AssertionError(f"{nodeid}: its markers are unknown because tests/conftest.py was not loaded as a "
                             "conftest; run pytest from the repository root (as `make test` does)")
    return frozenset(needed) - _MARKS[nodeid]


def refusal(what: str, missing: Iterable[str]) -> str:
    nodeid = (_current_test() or ("this test",))[0]
    fixtures = "; ".join(f"{m}: {FIXTURE_FOR[m]}" for m in sorted(missing))
    return (f"{nodeid} starts {what} but is not marked {' and '.join(sorted(missing))}: markers come from the "
            f"fixtures a test uses (FIXTURE_MARKERS in tests/conftest.py); use {fixtures}")


def require(needed: Iterable[str], what: str) -> None:
    """Refuses (AssertionError) to start `what` from a test without the markers `needed`."""
    missing = missing_markers(needed)
    if missing:
        raise AssertionError(refusal(what, missing))


def command_markers(args: Tuple[str, ...]) -> Tuple[str, FrozenSet[str]]:
    """(`mlops <subcommand>`, the markers it needs) for a command line of `mlops` (after --home)."""
    if "--help" in args or "-h" in args:
        return "", frozenset()
    for words in (tuple(args[:2]), tuple(args[:1])):
        if words in COMMAND_MARKERS:
            return f"`mlops {' '.join(words)}`", COMMAND_MARKERS[words]
    return "", frozenset()


# Stands in for .venv-airflow/bin/airflow (airflow_env.airflow_bin() reads MLOPS_AIRFLOW_BIN) while a
# test without the airflow marker runs: Airflow reached some other way fails loudly there too.
NO_AIRFLOW = Path(__file__).with_name("no_airflow")
_AIRFLOW_BIN = os.environ.get("MLOPS_AIRFLOW_BIN")  # a user's own Airflow, if set


def _restore_airflow_bin() -> None:
    if _AIRFLOW_BIN is None:
        os.environ.pop("MLOPS_AIRFLOW_BIN", None)
    else:
        os.environ["MLOPS_AIRFLOW_BIN"] = _AIRFLOW_BIN


class _AirflowOnlyWithTheMarker:
    """Registered as a plugin (not a conftest hook) so that it runs for components/ tests too."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        if "airflow" in _MARKS.get(item.nodeid, ()):
            _restore_airflow_bin()
        else:
            os.environ["MLOPS_AIRFLOW_BIN"] = str(NO_AIRFLOW)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        _restore_airflow_bin()  # finalizers (e.g. `make down`) get the real one


def pytest_configure(config):
    if not config.pluginmanager.has_plugin("mlops-airflow-guard"):
        config.pluginmanager.register(_AirflowOnlyWithTheMarker(), "mlops-airflow-guard")


def pytest_collection_finish(session):
    from tests import prepared

    prepared.mark_first_users(session.items)


def pytest_terminal_summary(terminalreporter):
    from tests import prepared

    lines = prepared.report()
    if lines:
        terminalreporter.section("shared setups (tests/prepared.py)")
        for line in lines:
            terminalreporter.write_line(line)


# ---------------------------------------------------------------------------------------- helpers


def make_home(root: Path, days: int = 2, rows: int = SMALL_ROWS, end: dt.date = DAY2) -> Path:
    """A project home with a copy of the curated schema and `days` seeded spans."""
    home = root / "home"
    (home / "schemas" / "taxi").mkdir(parents=True)
    shutil.copy(REPO / "schemas" / "taxi" / "schema.pbtxt", home / "schemas" / "taxi" / "schema.pbtxt")
    if days:
        mlops(home, "data", "seed", "--days", str(days), "--rows-per-day", str(rows), "--end", end.isoformat())
    return home


def mlops(home: Path, *args: str, check: bool = True, timeout: int = 900,
          env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """Runs the real `mlops` console command of .venv in `home` (`env`: added to this process's).

    A subcommand that runs a pipeline or Airflow (COMMAND_MARKERS) needs the test's marker: without
    it the call is refused, unless the test expects the command to refuse (check=False), in which
    case it must exit EXIT_CONFIG (2: a usage or configuration error, nothing ran)."""
    what, needed = command_markers(args)
    missing = missing_markers(needed) if needed else frozenset()
    if missing and check:
        raise AssertionError(refusal(what, missing))
    result = subprocess.run(
        [str(VENV_PYTHON.parent / "mlops"), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )
    if missing and result.returncode != EXIT_CONFIG:
        raise AssertionError(f"{refusal(what, missing)} (it ran: exit {result.returncode}, not the "
                             f"{EXIT_CONFIG} of a refusal)"
                             f"\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    if check and result.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def readonly_store(home: Path):
    """The home's ML Metadata store (var/metadata.sqlite), opened read-only: what a test inspects."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(home / "var" / "metadata.sqlite")
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def mlops_here(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`mlops` through the CLI's own main() in this process (TFX is imported once, not per call),
    with mlops()'s guard and result; for commands that run no pipeline (e.g. `dags manifest`)."""
    import contextlib
    import io

    from pipelines import cli

    what, needed = command_markers(args)
    require(needed, what)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["--home", str(home), *args])
    result = subprocess.CompletedProcess(["mlops", "--home", str(home), *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"mlops {' '.join(args)} exited {code}\n{result.stdout}\n{result.stderr}")
    return result


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def home(tmp_path) -> Path:
    """A seeded home for commands that run no pipeline (data, schema, models, serve)."""
    return make_home(tmp_path)


@pytest.fixture
def pipeline_home(tmp_path):
    """make_home(...) for a test that runs the pipeline in it: `pipeline_home(days=1, rows=200)`."""

    def make(days: int = 2, rows: int = SMALL_ROWS, end: dt.date = DAY2) -> Path:
        return make_home(tmp_path, days=days, rows=rows, end=end)

    return make


@pytest.fixture
def airflow_project(tmp_path) -> Path:
    """An empty project home (the test's tmp_path) for a test that sets up Airflow in it."""
    return tmp_path


@pytest.fixture(scope="session")
def airflow_python():
    """Runs code with the Airflow environment's Python (3.11), as Airflow's DAG parser does:
    `airflow_python(code, tmp_path, **env)` -> the JSON document the code printed last."""
    import json
    import textwrap

    python = REPO / ".venv-airflow" / "bin" / "python"

    def run(code: str, cwd: Path, **env) -> dict:
        require({"airflow"}, "the Airflow environment's Python")
        result = subprocess.run(
            [str(python), "-c", textwrap.dedent(code)],
            capture_output=True, text=True, timeout=300, cwd=cwd,
            env={"AIRFLOW_HOME": str(cwd / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                 "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "PATH": "/usr/bin:/bin", **env},
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run
