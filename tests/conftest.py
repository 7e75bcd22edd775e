"""Shared fixtures. Every test gets its own project home (data, var/, schema copy): no shared state."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

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
    """Runs the real `mlops` console command of .venv in `home` (`env`: added to this process's)."""
    result = subprocess.run(
        [str(VENV_PYTHON.parent / "mlops"), "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def home(tmp_path) -> Path:
    return make_home(tmp_path)
