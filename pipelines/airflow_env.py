"""Drives the Airflow environment (`.venv-airflow`, Python 3.11) from the `mlops` command.

Airflow and TFX cannot share a Python environment (design.md, section 2), so `mlops airflow ...`
runs Airflow's own CLI as a subprocess with a project-local configuration: AIRFLOW_HOME under
`var/airflow`, the repository's `dags/` folder, no example DAGs, the ML Metadata pool. Imports
nothing heavy.

Two backends (`mlops airflow up --backend`): `sqlite` (the default: Airflow's database in
var/airflow/airflow.db, ML Metadata in var/metadata.sqlite, the pool one slot wide) and `postgres`
(Airflow's database on the home's PostgreSQL, Celery with Redis as broker, ML Metadata on the home's
MariaDB: pipelines/db_servers.py; the pool POOL_SLOTS["postgres"] wide). The backend in use is the
one the running services were started with (var/airflow/backend, written by `up`, removed by
`down`), so that every Airflow CLI call of the home talks to the same database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from pipelines import db_servers
from pipelines.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
DAGS_FOLDER = REPO / "dags"
PLUGINS_FOLDER = DAGS_FOLDER / "plugins"
NIGHTLY_DAG = "nightly_retrain"
ROLLBACK_DAG = "model_rollback"
SCORING_DAG = "batch_scoring"  # dags/batch_scoring.py: runs after each nightly push
TUNING_DAG = "weekly_tuning"  # dags/weekly_tuning.py: `mlops tune` on Sundays (optional: paused)
POOL = "mlmd_writers"
BACKENDS = ("sqlite", "postgres")
# SQLite's ML Metadata takes one writer at a time ("database is locked", design.md section 4); MariaDB
# takes several, and then the pool is as wide as the machine has cores (at least 2): a node task is a
# CPU-bound process, and the DAG's widest step (its 5 root nodes) is cheap while its heavy nodes form
# a chain. On 2 cores a 4-slot pool ran 4 roots at once in contention, each on a cold Celery process
# (bench/airflow_overhead.py --only services and bench/RESULTS.md have the measured runs).
POOL_SLOTS = {"sqlite": 1, "postgres": max(2, os.cpu_count() or 2)}
POOL_DESCRIPTIONS = {"sqlite": "TFX nodes that write ML Metadata; 1 slot while the store is SQLite",
                     "postgres": "TFX nodes that write ML Metadata (MariaDB: several writers at once)"}


def airflow_bin() -> Path:
    return Path(os.environ.get("MLOPS_AIRFLOW_BIN") or REPO / ".venv-airflow" / "bin" / "airflow")


def airflow_home(home: Path) -> Path:
    return Path(home) / "var" / "airflow"


def backend_file(home: Path) -> Path:
    return airflow_home(home) / "backend"


def backend(home: Path) -> str:
    """The backend the home's running Airflow services use: `postgres` while `up --backend postgres`
    runs them, else `sqlite`."""
    try:
        chosen = backend_file(home).read_text().strip()
    except OSError:
        return "sqlite"
    return chosen if chosen in BACKENDS else "sqlite"


def set_backend(home: Path, chosen: Optional[str]) -> None:
    """Records the backend of the services `up` starts; None (at `down`) returns to the default."""
    path = backend_file(home)
    if chosen in (None, "sqlite"):
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{chosen}\n")


def describe_backend(chosen: str) -> str:
    if chosen == "postgres":
        return ("postgres: Airflow's database on PostgreSQL, CeleryExecutor (Redis broker, one worker), "
                f"ML Metadata on MariaDB, pool {POOL} {POOL_SLOTS[chosen]} slots")
    return f"sqlite: Airflow's database in SQLite, LocalExecutor, ML Metadata in var/metadata.sqlite, pool {POOL} 1 slot"


def backend_environment(home: Path) -> Dict[str, str]:
    """What the `postgres` backend adds for every Airflow process of the home: Airflow's database and
    Celery's broker and result backend (the home's PostgreSQL and Redis), and ML Metadata on the home's
    MariaDB (MLOPS_MLMD, MLOPS_MLMD_PASSWORD), which the node tasks inherit. These hold passwords:
    never print them."""
    database = db_servers.airflow_database_url(home)
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CELERY__BROKER_URL": db_servers.redis_url(home),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database,
        **db_servers.mlmd_environment(home),
    }


def environment(home: Path, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment every Airflow process of this project home runs with."""
    env = dict(os.environ if base is None else base)
    env.update(
        AIRFLOW_HOME=str(airflow_home(home)),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS_FOLDER),
        # The UI pages (dags/plugins/mlops_ui.py): Models, a DAG run's data gates and lineage.
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS_FOLDER),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        MLOPS_HOME=str(Path(home).resolve()),
        MLOPS_BIN=str(Path(sys.executable).parent / "mlops"),
    )
    if backend(home) == "postgres":
        env.update(backend_environment(home))
    elif not env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        # Airflow's default SQLite store, with a longer busy timeout: the scheduler, dag-processor,
        # api-server and CLI calls such as `airflow backfill create` all write to it, and Python's
        # default 5 s wait gave "database is locked" on a loaded 2-core machine (CI, session 3).
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = (
            f"sqlite:///{airflow_home(home).resolve() / 'airflow.db'}?timeout={SQLITE_BUSY_TIMEOUT_S}")
    # The TFX environment's variables must not leak into Airflow's Python 3.11 processes.
    for name in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", ENV_IN_WORKER):
        env.pop(name, None)
    return env


ENV_IN_WORKER = "MLOPS_IN_WORKER"
SQLITE_BUSY_TIMEOUT_S = 60


def check_installed() -> Path:
    binary = airflow_bin()
    if not binary.exists():
        raise ConfigError(f"Airflow is not installed at {binary}", "run `make venvs` to build .venv-airflow")
    return binary


LOCKED = "database is locked"
LOCK_RETRIES = 4


def run_airflow(home: Path, args: List[str], check: bool = True, progress: Optional[Callable[[str], None]] = None,
                **kwargs) -> subprocess.CompletedProcess:
    """Runs `airflow ARGS`; a call that failed on SQLite's "database is locked" is tried again.

    The busy timeout does not cover every case: a transaction that read first and then writes while
    the scheduler holds the write lock gets SQLITE_BUSY at once (SQLite's deadlock guard), as
    `airflow backfill create` did on CI. Airflow rolls such a call back (a backfill's partial runs
    included), so the same call is safe to repeat."""
    binary = check_installed()
    for attempt in range(1, LOCK_RETRIES + 1):
        result = subprocess.run([str(binary), *args], env=environment(home), capture_output=True, text=True, **kwargs)
        if result.returncode == 0 or LOCKED not in (result.stderr + result.stdout) or attempt == LOCK_RETRIES:
            break
        wait = 2.0 * attempt
        (progress or _log_to_stderr)(
            f"`airflow {' '.join(args[:2])}` hit \"{LOCKED}\" (another Airflow process was writing); trying again in "
            f"{wait:.0f}s ({attempt}/{LOCK_RETRIES - 1})")
        time.sleep(wait)
    if check and result.returncode != 0:
        raise ConfigError(
            f"`airflow {' '.join(args)}` exited {result.returncode}: {_last_line(result.stderr or result.stdout)}",
            f"see the full output with AIRFLOW_HOME={airflow_home(home)} airflow {' '.join(args)}",
        )
    return result


def _log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines()
             if line.strip() and not line.startswith("(Background on this error")]  # SQLAlchemy's link
    return lines[-1] if lines else "(no output)"


def init(home: Path, progress: Callable[[str], None] = print, force: bool = False) -> None:
    """Idempotent: creates or upgrades Airflow's database and the ML Metadata pool.

    Each Airflow CLI call costs seconds, so once done for an installed Airflow (the stamp names
    the binary and its mtime), later calls return at once unless `force` (`mlops airflow init`)."""
    folder = airflow_home(home)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = backend(home)
    slots = POOL_SLOTS[chosen]
    stamp = folder / (".migrated" if chosen == "sqlite" else f".migrated-{chosen}")
    binary = check_installed()
    key = f"{binary}:{binary.resolve().stat().st_mtime_ns}:{POOL}={slots}"
    if chosen == "postgres":  # a PostgreSQL data directory made anew needs the migration again
        key += f":{db_servers.identity(home, 'postgresql')}"
        db_present = True
    else:
        default_db = not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        db_present = (folder / "airflow.db").exists() or not default_db
    if not force and db_present and stamp.exists() and stamp.read_text().strip() == key:
        return
    version = run_airflow(home, ["version"]).stdout.strip()
    where = f"PostgreSQL ({db_servers.server_dir(home, 'postgresql')})" if chosen == "postgres" else folder
    progress(f"airflow {version}: preparing its database in {where}")
    run_airflow(home, ["db", "migrate"])
    pools = run_airflow(home, ["pools", "list", "--output", "json"]).stdout
    if not any(p.get("pool") == POOL and str(p.get("slots")) == str(slots) for p in _json_list(pools)):
        run_airflow(home, ["pools", "set", POOL, str(slots), POOL_DESCRIPTIONS[chosen]])
    stamp.write_text(key + "\n")


def _json_list(text: str) -> list:
    start = text.find("[")
    try:
        return json.loads(text[start:]) if start >= 0 else []
    except json.JSONDecodeError:
        return []


_RECORD = re.compile(r"^\S+Z \[(?P<level>\w+)\s*\] (?P<message>.*?)\s+\[(?P<logger>[\w.]+)\](?P<rest>.*)$")
_SUBPROCESS_NOISE = ("Tmp dir root location", "Running command:", "Output:", "Command exited with return code")


class DagTestReport:
    """Turns `airflow dags test` output into readable progress lines (full log kept on disk)."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.started: Dict[str, float] = {}
        self.failed: List[str] = []
        self.run_id: Optional[str] = None
        self.state: Optional[str] = None
        self.current: Optional[str] = None
        self.in_summary = False
        self.outcome: Dict[str, str] = {}

    def feed(self, line: str) -> None:
        match = _RECORD.match(line.rstrip("\n"))
        if not match:
            return
        message, logger, rest = match["message"], match["logger"], match["rest"]
        if logger.endswith("SubprocessHook"):
            code = re.match(r"Command exited with return code (\d+)", message)
            if code and code[1] != "0":
                self.emit(f"    exit code {code[1]}" + (" (killed by a signal)" if int(code[1]) > 128 else ""))
            elif message.startswith(f"run {NIGHTLY_DAG}__"):
                self.in_summary = True  # the last node's run summary: printed once, after the run
            elif not message.startswith(_SUBPROCESS_NOISE) and not (self.in_summary and message.startswith(" ")):
                self.emit(f"    {message}")
            return
        found = re.search(r"\[DAG TEST\] starting task_id=(\S+)", message)
        if found:
            self.current = found[1]
            self.started[found[1]] = time.monotonic()
            self.emit(f"task {found[1]} ...")
            return
        found = re.search(r"\[DAG TEST\] end task task_id=(\S+)", message)
        if found:
            self.in_summary = False
            seconds = time.monotonic() - self.started.get(found[1], time.monotonic())
            self.emit(f"task {found[1]} {self.outcome.pop(found[1], 'done')} in {seconds:.1f}s")
            return
        found = re.search(r"^Marking run <DagRun .*?: (\w+__\S+?), state:.*> (\w+)$", message)
        if found:
            self.run_id, self.state = found[1], found[2]
            self.emit(f"DAG run {self.run_id}: {self.state}")
            return
        new_state = re.search(r"new_state=(\w+)", rest)
        if new_state and self.current and new_state[1] in ("up_for_retry", "failed"):
            self.outcome[self.current] = "failed, will retry" if new_state[1] == "up_for_retry" else "FAILED"
        elif match["level"] in ("error", "critical") and "Task failed" not in message:
            self.emit(f"  airflow: {message}")


def dags_test(
    home: Path,
    span: str,
    conf: Dict[str, object],
    log_path: Path,
    emit: Callable[[str], None] = print,
    extra_env: Optional[Dict[str, str]] = None,
) -> tuple:
    """`airflow dags test nightly_retrain <span>`: one whole DAG run, in a child process.

    Returns (exit code, Airflow run id). The full Airflow log goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    report = DagTestReport(emit)
    args = [str(check_installed()), "dags", "test", NIGHTLY_DAG, span, "--conf", json.dumps(conf)]
    env = environment(home)
    env.update(extra_env or {})
    with open(log_path, "w") as log:
        process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in _lines(process.stdout):
            log.write(line)
            report.feed(line)
        code = process.wait()
    if code == 0 and report.state not in (None, "successful", "success"):
        code = 1  # the DAG run failed although the command itself exited 0
    return code, report.run_id


def _lines(stream) -> Iterable[str]:
    for line in iter(stream.readline, ""):
        yield line


def backfill(home: Path, first: dt.date, last: dt.date, conf: Dict[str, object],
             progress: Callable[[str], None] = print, dry_run: bool = False) -> List[str]:
    """One nightly_retrain run per day from `first` to `last` (inclusive), oldest first, one at a time.

    A run's logical date is its day at 02:00 UTC, so the range ends at `last`T23:59. Days that
    already have a finished or running run are skipped (Airflow's reprocess behaviour "none"), and
    when none is left nothing is created, so repeating the call is harmless. Returns the logical
    dates of the runs created (with `dry_run`: that would be created)."""
    if last < first:
        raise ConfigError(f"--to-date {last} is before --from-date {first}", "give the oldest day first")
    args = ["backfill", "create", "--dag-id", NIGHTLY_DAG, "--from-date", first.isoformat(),
            "--to-date", f"{last.isoformat()}T23:59", "--max-active-runs", "1", "--dag-run-conf", json.dumps(conf)]
    planned = _backfill_call(home, [*args, "--dry-run"], progress)
    if "Runs to be attempted:" not in planned:  # never read "nothing to do" into output we do not know
        raise ConfigError(f"unexpected `airflow backfill create --dry-run` output: {_last_line(planned)}",
                          "check the Airflow version in .venv-airflow against constraints/airflow-py311.txt")
    todo = _RUN_ROW.findall(planned.partition("Runs to be attempted:")[2])
    if dry_run or not todo:
        return todo
    _backfill_call(home, args, progress)
    return todo


_RUN_ROW = re.compile(r"^\|\s*(\d{4}-\d\d-\d\d[ T][\d:]+\S*)", re.MULTILINE)


def _backfill_call(home: Path, args: List[str], progress: Callable[[str], None]) -> str:
    result = run_airflow(home, args, check=False, progress=progress)
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return output
    if "Another backfill is running" in output:
        raise ConfigError(
            f"a backfill of {NIGHTLY_DAG} is still running; Airflow allows one at a time",
            "wait until its runs finish (UI: Dags > nightly_retrain > Backfills) or cancel it there",
        )
    if "Could not find Dag" in output or "DagNotFound" in output:
        raise ConfigError(f"Airflow has not parsed {NIGHTLY_DAG} yet", "start Airflow with `make up` (it waits for the DAG)")
    raise ConfigError(f"`airflow {' '.join(args[:2])}` exited {result.returncode}: {_last_line(output)}",
                      f"see the full output with AIRFLOW_HOME={airflow_home(home)} airflow {' '.join(args)}")
