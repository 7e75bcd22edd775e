"""What the worker processes of one `mlops serve --workers N` share: small files under the home's var/.

    <home>/var/serving/server-<parent pid>/workers/<worker pid>.json   each worker's versions, by model
    <home>/var/serving/server-<parent pid>/metrics/                    prometheus_client's multiprocess files

Each worker writes its file (atomically) before it listens and again whenever a scan of its model
directories changes a version's state. A status request (REST `GET /v1/models/...`, gRPC
GetModelStatus) reaches one worker at random, so every worker answers for the whole server from
all listening workers' files (`ServerWideStatus`): a version is AVAILABLE only when every worker
that takes requests serves it. `mlops rollback`, `mlops models list --server` and `make status` ask that endpoint, so a
worker that loaded a new version first cannot make them believe the server serves it.

Standard library only (plus serving.store's status records): the supervising parent reads these
files without TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from serving.errors import NotFound
from serving.files import write_atomic
from serving.processes import pid_alive
from serving.store import AVAILABLE, END, LOADING, UNLOADING, VersionStatus

SERVER_DIR_PREFIX = "server-"


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """This process is worker `index` (1-based) of `count` of the `mlops serve --workers N` whose
    supervising parent is `parent_pid`; `directory`: that server's directory (`server_dir`)."""

    index: int
    count: int
    parent_pid: int
    directory: Path


def servers_root(home: Path) -> Path:
    return Path(home) / "var" / "serving"


def server_dir(home: Path, parent_pid: int) -> Path:
    return servers_root(home) / f"{SERVER_DIR_PREFIX}{parent_pid}"


def workers_dir(directory: Path) -> Path:
    return Path(directory) / "workers"


def metrics_dir(directory: Path) -> Path:
    return Path(directory) / "metrics"


def prepare_server_dir(home: Path, parent_pid: int) -> Path:
    """A fresh directory for this server; also removes those of servers that are gone (killed ones
    leave theirs behind), so stale metrics or worker states never count."""
    root = servers_root(home)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{SERVER_DIR_PREFIX}*"):
        number = old.name[len(SERVER_DIR_PREFIX):]
        if number.isdigit() and (int(number) == parent_pid or not pid_alive(int(number))):
            shutil.rmtree(old, ignore_errors=True)
    directory = server_dir(home, parent_pid)
    workers_dir(directory).mkdir(parents=True)
    metrics_dir(directory).mkdir()
    return directory


def remove_server_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def state_path(directory: Path, pid: int) -> Path:
    return workers_dir(directory) / f"{pid}.json"


def forget_worker(directory: Path, pid: int) -> None:
    with contextlib.suppress(OSError):
        state_path(directory, pid).unlink()


class StateWriter:
    """A worker's side: writes its file when what it says changes (from the watcher thread)."""

    def __init__(self, directory: Path, index: int):
        self.directory, self.index, self.pid = Path(directory), index, os.getpid()
        self._last: Optional[dict] = None

    def write(self, registry, listening: bool) -> None:
        models = {name: {"base_path": str(store.config.base_path),
                         "statuses": [[s.version, s.state, s.error_code, s.error_message] for s in store.statuses()],
                         # what its requests follow: labels (`stable`, `canary`) and an open canary's share
                         "labels": dict(store.snapshot.labels), "canary_share": store.canary_share}
                  for name, store in list(registry.models.items())}
        state = {"pid": self.pid, "index": self.index, "listening": listening, "models": models}
        if state != self._last:
            write_atomic(state_path(self.directory, self.pid), (json.dumps(state) + "\n").encode())
            self._last = state

    def forget(self) -> None:
        forget_worker(self.directory, self.pid)


def live_worker_states(directory: Path, exclude_pid: Optional[int] = None) -> List[dict]:
    """The states of the workers that run (a dead worker's file may linger until the parent reaps it)."""
    states = []
    for path in sorted(workers_dir(directory).glob("*.json")):
        if not path.stem.isdigit() or int(path.stem) == exclude_pid or not pid_alive(int(path.stem)):
            continue
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            state = {"pid": int(path.stem), "models": {}}  # counts as a worker that serves nothing yet
        states.append(state)
    return states


def statuses_in(state: dict, model: str) -> Dict[int, VersionStatus]:
    entry = state.get("models", {}).get(model) or {}
    return {int(v): VersionStatus(int(v), s, code, message) for v, s, code, message in entry.get("statuses", [])}


def combine(version: int, per_worker: List[Optional[VersionStatus]]) -> Optional[VersionStatus]:
    """One version's state for the whole server from each worker's (None: that worker does not know it).

    AVAILABLE when every worker serves it; a failure on any worker is shown (the version is not
    served everywhere); UNLOADING when some have dropped it and others still serve it; END when all
    that know it are done with it; otherwise LOADING (some serve it or load it, others not yet)."""
    known = [s for s in per_worker if s is not None]
    if not known:
        return None
    if len(known) == len(per_worker) and all(s.state == AVAILABLE for s in known):
        return VersionStatus(version, AVAILABLE)
    failed = next((s for s in known if s.error_code != "OK"), None)
    if failed is not None:
        return failed
    states = {s.state for s in known}
    if states == {END}:
        return VersionStatus(version, END)
    if AVAILABLE in states and END in states:
        return VersionStatus(version, UNLOADING)
    return VersionStatus(version, LOADING)


class ServerWideStatus:
    """The model status a worker answers: its own statuses combined with every live sibling's."""

    def __init__(self, registry, directory: Path):
        self.registry, self.directory, self.pid = registry, Path(directory), os.getpid()

    def __call__(self, name: str, version: Optional[int], label: Optional[str]) -> List[VersionStatus]:
        store = self.registry.get(name)  # NotFound for a model this worker does not serve
        if label is not None:
            labels = store.snapshot.labels or store.config.label_map
            if label not in labels:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = labels[label]
        tables = [{s.version: s for s in store.statuses()}]
        # A worker that does not listen yet (restarting: loading before it listens) gets no requests;
        # it serves the newest versions when it starts listening (serving/server.py ModelServer.start).
        tables += [statuses_in(state, name) for state in live_worker_states(self.directory, exclude_pid=self.pid)
                   if state.get("listening")]
        versions = set().union(*tables) if version is None else {version}
        combined = [combine(v, [table.get(v) for table in tables]) for v in sorted(versions, reverse=True)]
        combined = [status for status in combined if status is not None]
        if not combined:
            raise NotFound(f"Could not find version {version} of model {name}" if version is not None
                           else f"Could not find any versions of model {name}")
        return combined


def memory_of(pid: int) -> Tuple[int, int]:
    """(RSS, private) in bytes from /proc (0 when unknown). Private memory (USS: pages no other
    process maps) is what one more worker adds; RSS also counts the libraries all workers share."""
    rss = private = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:")), 0)
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            private = sum(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Private_"))
    except (OSError, ValueError, IndexError):
        pass
    return rss, private


def mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB"
