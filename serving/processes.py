"""Is the process a pid file names still ours? (standard library only; Linux /proc)

Used for the home's model-server record (serving/home.py), for the Airflow services `make up`
starts (pipelines/services.py) and for the monitoring stack (monitoring/stack.py): a pid file
outlives its process, and the pid may be reused. `stop_in_order` stops a set of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def command_line_has(pid: int, marker: bytes) -> bool:
    """Guards against a pid file whose process is gone and whose pid was reused.

    A process that is in the middle of exec() shows an empty command line for a moment (the new
    program's arguments are not mapped yet): that is read again rather than taken for "not ours",
    which once deleted the pid file of a triggerer that had just started, so that `make up`
    reported it dead and `make down` left it running."""
    for _ in range(40):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                text = cmdline.read()
        except OSError:
            return pid_alive(pid)
        if text:
            return marker in text
        if not pid_alive(pid):
            return False  # a zombie has an empty command line too
        time.sleep(0.025)
    return pid_alive(pid)


def live_pid(path: Path, marker: bytes) -> Optional[int]:
    """The pid in `path` if that process runs and its command line contains `marker`; removes a
    stale pid file."""
    try:
        pid = int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and command_line_has(pid, marker):
        return pid
    with contextlib.suppress(OSError):
        Path(path).unlink()
    return None


def stop_in_order(pids: Dict[str, int], order: List[str], timeout: float, poll: float = 0.1) -> Dict[str, bool]:
    """SIGTERM to each named process in `order`, a wait of up to `timeout` for all of them, then
    SIGKILL to the whole session of each (its own children too: each was started in a session of its
    own). Returns {name: True when it had to be killed}, in `order`."""
    names = [name for name in order if name in pids]
    for name in names:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[name], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(pid_alive(pids[name]) for name in names) and time.monotonic() < deadline:
        time.sleep(poll)
    forced = {}
    for name in names:
        forced[name] = pid_alive(pids[name])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pids[name], signal.SIGKILL)
    return forced


def spawn_logged(command: Sequence[str], log_path: Path, banner: str, cwd: Path,
                 env: Optional[Dict[str, str]] = None) -> int:
    """Starts `command` in the background, in a session of its own (so stopping it can take its
    children too), stdout and stderr appended to `log_path` after a `===== <time> <banner> =====`
    line; returns its pid."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} {banner} =====\n".encode())
        log.flush()
        process = subprocess.Popen(list(command), env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return process.pid


def wait_until_ready(pids: Dict[str, int], answers, log_of, title_of, where_of, timeout: float,
                     poll: float = 0.1) -> Dict[str, float]:
    """Until each started process answers (`answers(name)` is true); {name: the monotonic time it
    first answered}. A process that exits, or one still silent after `timeout`, is a ConfigError
    naming its log (`log_of(name)`), its title and where it was asked (`where_of(name)`)."""
    from serving.errors import ConfigError
    from serving.files import tail

    deadline = time.monotonic() + timeout
    waiting, answered = dict(pids), {}
    while waiting:
        for name, pid in list(waiting.items()):
            if answers(name):
                answered[name] = time.monotonic()
                del waiting[name]
            elif not pid_alive(pid):
                raise ConfigError(f"{title_of(name)} exited while starting; last lines of {log_of(name)}:\n"
                                  f"{tail(log_of(name))}", "fix the cause above, then start again")
        if waiting and time.monotonic() > deadline:
            name = sorted(waiting)[0]
            raise ConfigError(f"{title_of(name)} did not answer {where_of(name)} within {timeout:.0f}s",
                              f"read {log_of(name)}")
        if waiting:
            time.sleep(poll)
    return answered
