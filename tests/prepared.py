"""The expensive shared setups, computed side by side when the first of them is needed.

Each of these setups runs real pipelines in a home of its own and shares nothing with the others;
each spends its time in one process at a time (a TFX node, an Airflow task), so on 2 cores one
core idles while it runs. When a test first needs one of them, every setup the selected tests need
starts, on background threads (one per lane, a lane's setups in turn; a setup on lane MAIN would
run on this thread). Setups run their pipelines in subprocesses (`mlops`, Airflow), not in this
process: `gated`'s runs inside this process took 3-8x as long as the same node in another lane's
subprocess at the same time (StatisticsGen 42-121 s against 15-26 s). The fixture returns
only when all of them are done, so no test ever runs beside background work: the timing checks of
the tests see the machine as they did when each fixture ran alone.

A setup is started early only when the test that asks first has all of its markers (the stand-in
airflow binary and the guards look at that test); otherwise it runs when its own fixture asks.
MLOPS_TEST_SETUPS_SERIAL=1 computes each setup when its fixture asks, one at a time (as before).

A fixture reads its result with `prepared.result(request, name)`; a setup that failed raises its
error there, in every test that uses it, as a fixture that failed does.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import pytest

from tests.conftest import FIXTURE_MARKERS, missing_markers

MAIN = "main"  # the lane of setups that must run on pytest's own thread
# The first test of each setup waits for it (and the others): more than pytest.ini's 1200 s per test.
FIRST_USER_TIMEOUT = 3600


@dataclass
class Setup:
    name: str  # the fixture that reads it (its markers come from FIXTURE_MARKERS)
    lane: str
    compute: Callable[[Any], Any]  # (tmp_path_factory) -> result
    done: bool = False
    result: Any = None
    error: Optional[BaseException] = None
    seconds: float = 0.0


SETUPS: Dict[str, Setup] = {}
_lock = threading.Lock()  # tmp_path_factory.mktemp from several threads
_log: List[str] = []


def setup(name: str, lane: str):
    """Registers `compute(tmp_path_factory)` as the setup of fixture `name`, run on `lane`."""
    assert name in FIXTURE_MARKERS, f"{name}: add it to FIXTURE_MARKERS in tests/conftest.py"

    def register(compute):
        SETUPS[name] = Setup(name, lane, compute)
        return compute

    return register


class _LockedFactory:
    """tmp_path_factory, one mktemp at a time."""

    def __init__(self, factory):
        self._factory = factory

    def mktemp(self, basename: str, numbered: bool = True):
        with _lock:
            return self._factory.mktemp(basename, numbered)

    def getbasetemp(self):
        return self._factory.getbasetemp()


def _run(setup_: Setup, factory) -> None:
    started = time.monotonic()
    try:
        setup_.result = setup_.compute(factory)
    except BaseException as err:  # noqa: BLE001 -- re-raised in the fixture that reads it
        setup_.error = err
    finally:
        setup_.seconds = time.monotonic() - started
        setup_.done = True


def _needed(session) -> List[Setup]:
    names = {name for item in session.items for name in getattr(item, "fixturenames", ()) if name in SETUPS}
    return [s for s in SETUPS.values() if s.name in names and not s.done]


def result(request, name: str):
    """The result of setup `name`, computing it (and the others the selected tests need) first."""
    wanted = SETUPS[name]
    if not wanted.done:
        factory = _LockedFactory(request.getfixturevalue("tmp_path_factory"))
        if os.environ.get("MLOPS_TEST_SETUPS_SERIAL") == "1":
            batch = [wanted]
        else:
            # Only setups whose markers the asking test has: the guards judge by that test.
            batch = [s for s in _needed(request.session)
                     if s is wanted or not missing_markers(FIXTURE_MARKERS[s.name])]
        lanes: Dict[str, List[Setup]] = {}
        for s in batch:
            lanes.setdefault(s.lane, []).append(s)
        threads = [threading.Thread(target=lambda todo=todo: [_run(s, factory) for s in todo],
                                    name=f"setup-{lane}", daemon=True)
                   for lane, todo in lanes.items() if lane != MAIN]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for s in lanes.get(MAIN, []):
            _run(s, factory)
        for thread in threads:
            while thread.is_alive():  # joined in steps, so that Ctrl-C still stops the session
                thread.join(1.0)
        _log.append(f"{request.node.nodeid}: {', '.join(f'{s.name} {s.seconds:.0f}s' for s in batch)} "
                    f"side by side in {time.monotonic() - started:.0f}s")
    if wanted.error is not None:
        raise wanted.error
    return wanted.result


def mark_first_users(items) -> None:
    """Gives the first selected test of each setup the timeout of a wait for all of them."""
    for setup_ in SETUPS.values():
        first = next((item for item in items if setup_.name in getattr(item, "fixturenames", ())), None)
        if first is not None:
            first.add_marker(pytest.mark.timeout(FIRST_USER_TIMEOUT))


def report() -> List[str]:
    return list(_log)
