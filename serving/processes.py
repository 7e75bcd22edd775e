"""Is the process a pid file names still ours? (standard library only; Linux /proc)

Used for the home's model-server record (serving/home.py) and for the Airflow services `make up`
starts (pipelines/services.py): a pid file outlives its process, and the pid may be reused.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Optional


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
