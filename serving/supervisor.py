"""`mlops serve --workers N`: the parent process that starts and supervises N model server workers.

The workers are forked from this process, which never imports TensorFlow or gRPC (forking after
either is unsafe). Each worker is a whole ModelServer with its own copy of the models on the same
REST and gRPC ports (SO_REUSEPORT: the kernel spreads new connections over the workers); it loads
before it listens, writes its versions to a state file and counts metrics in the server's
multiprocess directory (serving/worker_state.py, serving/metrics.py).

The parent:
- is the home's model server in the record (serving/home.py), as a single server would be;
- restarts a worker that exits while the server is not stopping, with a log line, at once when it
  had run for a while, else after 1, 2, 4 ... 30 s (no restart storm);
- on SIGTERM/SIGINT sends SIGTERM to every worker (each drains its in-flight requests within
  --grace-seconds), SIGKILLs any that outlive the grace by 10 s, and exits 0 when all are gone.
Workers get SIGTERM when the parent dies (PR_SET_PDEATHSIG) and also stop when they see it gone.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

from serving import worker_state
from serving.worker_state import WorkerRole, memory_of, mib

log = logging.getLogger("serving")

STEADY_SECONDS = 30.0  # a worker that ran this long before it died is restarted at once
MAX_RESTART_DELAY = 30.0
KILL_MARGIN_SECONDS = 10.0  # after --grace-seconds, on top: then SIGKILL
PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class Slot:
    """One of the N workers: the process filling it now, and its restart history."""

    index: int
    pid: Optional[int] = None
    started: float = 0.0
    quick_failures: int = 0  # exits in a row, each within STEADY_SECONDS of its start
    restart_at: Optional[float] = None  # when to start it again (None: running, or not to restart)


def check_ports_free(host: str, ports: List[int]) -> None:
    """Workers bind with SO_REUSEPORT, which would let them join the listeners of another server of
    this user on the same port: refuse a port that something listens on first."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                raise OSError(errno.EADDRINUSE, f"port {port} on {host} is in use ({err.strerror})") from err


def die_with_parent() -> None:
    """Linux: the kernel sends this process SIGTERM when the thread that forked it exits."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the worker's own check of its parent (serving/server.py run_worker) still stops it


class Supervisor:
    def __init__(self, options, configs):
        self.options, self.configs = options, configs
        self.pid = os.getpid()
        self.directory: Path = worker_state.prepare_server_dir(options.home, self.pid)
        self.slots = [Slot(index) for index in range(1, options.workers + 1)]
        self.stopping = False
        self._memory_reported = False

    # -- workers --------------------------------------------------------------------------------

    def spawn(self, slot: Slot) -> None:
        role = WorkerRole(slot.index, len(self.slots), self.pid, self.directory)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                die_with_parent()
                if os.getppid() != role.parent_pid:
                    os._exit(0)  # the parent died before the line above took effect
                from serving.server import run_worker

                code = run_worker(self.options, role)
            except BaseException:  # noqa: BLE001 -- logged; the parent restarts the worker
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)  # no interpreter teardown of TensorFlow and gRPC in a forked child
        slot.pid, slot.started, slot.restart_at = pid, time.monotonic(), None
        log.info("worker %d of %d started: pid %d", slot.index, len(self.slots), pid)

    def reap(self) -> None:
        """Collects exited workers; schedules restarts unless the server is stopping."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            worker_state.forget_worker(self.directory, pid)
            from serving.metrics import mark_worker_dead

            mark_worker_dead(worker_state.metrics_dir(self.directory), pid)
            if self.stopping:
                continue
            self._schedule_restart(slot, pid, os.waitstatus_to_exitcode(status))

    def _schedule_restart(self, slot: Slot, pid: int, code: int) -> None:
        lived = time.monotonic() - slot.started
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if lived >= STEADY_SECONDS:
            slot.quick_failures, delay = 0, 0.0
        else:
            slot.quick_failures += 1
            delay = min(MAX_RESTART_DELAY, 2.0 ** (slot.quick_failures - 1))
        slot.restart_at = time.monotonic() + delay
        log.warning("worker %d (pid %d) %s after %.1fs, unexpectedly: restarting it %s", slot.index, pid, how, lived,
                    "now" if not delay else f"in {delay:.0f}s ({slot.quick_failures} quick exits in a row)")

    def restart_due(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid is None and slot.restart_at is not None and now >= slot.restart_at:
                self.spawn(slot)

    def served_bases(self) -> List[Path]:
        """What the workers serve now (their models.config may have changed), for the home's record."""
        bases = {Path(model["base_path"]) for state in worker_state.live_worker_states(self.directory)
                 for model in state.get("models", {}).values()}
        return sorted(bases) if bases else [config.base_path for config in self.configs]

    def report_memory(self) -> None:
        """Once, when every worker listens with its models loaded: the memory each one takes."""
        if self._memory_reported:
            return
        states = worker_state.live_worker_states(self.directory)
        if len(states) < len(self.slots) or not all(state.get("listening") for state in states):
            return
        self._memory_reported = True
        parts = []
        for state in sorted(states, key=lambda s: s.get("index", 0)):
            rss, private = memory_of(state["pid"])
            parts.append(f"worker {state.get('index')} (pid {state['pid']}) RSS {mib(rss)}, private {mib(private)}")
        rss, private = memory_of(self.pid)
        log.info("all %d workers listen: %s; parent (pid %d) RSS %s, private %s", len(self.slots),
                 "; ".join(parts), self.pid, mib(rss), mib(private))

    # -- stopping -------------------------------------------------------------------------------

    def live_pids(self) -> Dict[int, int]:
        return {slot.index: slot.pid for slot in self.slots if slot.pid is not None}

    def stop_workers(self) -> bool:
        """SIGTERM to every worker, a wait for them to drain, SIGKILL for any still there. True if none was killed."""
        self.stopping = True
        for pid in self.live_pids().values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.options.grace_seconds + KILL_MARGIN_SECONDS
        while self.live_pids() and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        clean = not self.live_pids()
        for index, pid in self.live_pids().items():
            log.error("worker %d (pid %d) did not stop within %.0fs of SIGTERM: killing it", index, pid,
                      self.options.grace_seconds + KILL_MARGIN_SECONDS)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for slot in self.slots:
            slot.pid = None
        return clean


def run(options) -> int:
    """`mlops serve --workers N`: the parent's whole life; its exit code."""
    from serving.server import model_configs, setup_logging

    setup_logging()
    # A broken models.config fails here, before any worker starts.
    return supervise(options, model_configs(options))


def supervise(options, configs) -> int:
    """Runs `options.workers` workers until SIGTERM/SIGINT; returns the exit code (0)."""
    from serving.server import HomeRegistration, stop_on_signals

    cores = os.cpu_count() or 1
    if options.workers > cores:
        log.warning("--workers %d is more than this machine's %d CPU cores: the extra workers add memory, "
                    "not speed", options.workers, cores)
    check_ports_free(options.host, [port for port in (options.rest_port, options.grpc_port) if port])
    stop = stop_on_signals()
    supervisor = Supervisor(options, configs)
    rss, _ = memory_of(supervisor.pid)
    log.info("starting %d workers on REST %s, gRPC %s (shared with SO_REUSEPORT); parent pid %d (RSS %s); "
             "worker state and metrics in %s", options.workers,
             f"http://{options.host}:{options.rest_port}" if options.rest_port else "off",
             f"{options.host}:{options.grpc_port}" if options.grpc_port else "off", supervisor.pid, mib(rss),
             supervisor.directory)
    for slot in supervisor.slots:
        supervisor.spawn(slot)
    registration = HomeRegistration(options, options.rest_port, options.grpc_port, supervisor.served_bases)
    try:
        last_update = 0.0
        while not stop.wait(0.2):
            supervisor.reap()
            supervisor.restart_due()
            if time.monotonic() - last_update >= 1.0:
                registration.update()  # a models.config edit, or the registered server gone
                supervisor.report_memory()
                last_update = time.monotonic()
        log.info("stopping %d workers (each finishes its in-flight requests, up to %.0fs)", len(supervisor.slots),
                 options.grace_seconds)
        clean = supervisor.stop_workers()
        log.info("all workers stopped%s", "" if clean else " (some had to be killed)")
    finally:
        supervisor.stopping = True
        for pid in supervisor.live_pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        registration.forget()
        worker_state.remove_server_dir(supervisor.directory)
    return 0
