"""Model store: which versions of each model are loaded, watched from the model directory.

One watcher thread scans every base path about once a second (and the models.config file, when
there is one). A new version is loaded and warmed up completely in the watcher thread while the
old one keeps serving; only then does the served set switch, in one assignment (request threads
read an immutable snapshot, so the swap needs no lock on the hot path), and the old version is
dropped. A version that fails to load is logged, recorded as failed, and not retried until its
files change; the versions already loaded keep serving.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from serving.config import ConfigFileError, ModelConfig, config_stamp, load_model_config
from serving.errors import NotFound, Unavailable

log = logging.getLogger("serving")

# States of TF Serving's ModelVersionStatus.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str
    error_code: str = "OK"  # google.rpc code name, as in TF Serving's status
    error_message: str = ""


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What one model serves right now. Replaced as a whole, never mutated."""

    servables: Dict[int, object]  # version -> Servable
    labels: Dict[str, int]
    latest: Optional[int]


EMPTY = Snapshot({}, {}, None)


def version_stamp(path: Path) -> Tuple:
    """Names, sizes and mtimes of every file of a version: a failed version is retried when this changes."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            entries.append((os.path.relpath(full, path), st.st_size, st.st_mtime_ns))
    return tuple(entries)


def _list_versions(base: Path) -> List[int]:
    """Integer version directories, newest first. Hidden ones (`.incoming-*`, `.deleting-*`) are skipped."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        name = entry.name
        if name.isdigit() and not name.startswith(".") and entry.is_dir():
            out.append(int(name))
    return sorted(out, reverse=True)


def _canary_route(snap: Snapshot, share: float, request_id: Optional[str]):
    """During a canary window: `canary` or `stable` for a request that names no version (None: neither
    is loaded yet, the newest version answers)."""
    from serving.canary import CANARY, STABLE, goes_to_canary

    stable = snap.servables.get(snap.labels.get(STABLE, -1))
    canary = snap.servables.get(snap.labels.get(CANARY, -1))
    if canary is not None and stable is not None:
        return canary if goes_to_canary(share, request_id) else stable
    return stable


class ModelStore:
    """Versions of one model. `poll()` runs in the watcher thread; `resolve()` in request threads."""

    def __init__(self, config: ModelConfig, loader: Callable, stamp: Callable, metrics=None):
        self.config = config
        self._loader = loader  # (name, version, path) -> Servable, raises on failure
        self._stamp = stamp  # path -> hashable summary of the files
        self._metrics = metrics
        self.snapshot: Snapshot = EMPTY
        self._status: Dict[int, VersionStatus] = {}
        self._failed: Dict[int, Tuple] = {}  # version -> stamp of the files that failed to load
        self._status_lock = threading.Lock()
        self._waiting_logged = False
        # An open canary window (serving/canary.py): the share of unversioned requests for the
        # `canary` label, the rest to `stable`; None: no window (the newest version answers them).
        self.canary_share: Optional[float] = None

    @property
    def name(self) -> str:
        return self.config.name

    # -- request side -----------------------------------------------------------------------

    def resolve(self, version: Optional[int] = None, label: Optional[str] = None,
                request_id: Optional[str] = None):
        snap = self.snapshot
        share = self.canary_share
        if share is not None and version is None and label is None:
            servable = _canary_route(snap, share, request_id)
            if servable is not None:
                return servable
        if label is not None:
            if label not in snap.labels and label not in self.config.label_map:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = snap.labels.get(label, self.config.label_map.get(label))
            servable = snap.servables.get(version)
            if servable is None:
                raise Unavailable(f"Version {version} of model {self.name} (label {label!r}) is not loaded")
            return servable
        if version is None:
            if snap.latest is None:
                raise Unavailable(f"Model {self.name} has no loaded version yet (see GET /v1/models/{self.name})")
            return snap.servables[snap.latest]
        servable = snap.servables.get(version)
        if servable is not None:
            return servable
        status = self._status.get(version)
        if status is not None and (status.state in (START, LOADING) or status.error_code != "OK"):
            why = "is loading" if status.state in (START, LOADING) else f"failed to load: {status.error_message}"
            raise Unavailable(f"Version {version} of model {self.name} {why}")
        raise NotFound(f"Servable not found for request: Specific({self.name}, {version})")

    def statuses(self) -> List[VersionStatus]:
        with self._status_lock:
            return sorted(self._status.values(), key=lambda s: -s.version)

    def status_of(self, version: Optional[int] = None, label: Optional[str] = None) -> List[VersionStatus]:
        if label is not None:
            labels = self.snapshot.labels or self.config.label_map
            if label not in labels:
                raise NotFound(f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            statuses = self.statuses()
            if not statuses:
                raise NotFound(f"Could not find any versions of model {self.name}")
            return statuses
        status = self._status.get(version)
        if status is None:
            raise NotFound(f"Could not find version {version} of model {self.name}")
        return [status]

    # -- watcher side -----------------------------------------------------------------------

    def _set_status(self, status: VersionStatus) -> None:
        with self._status_lock:
            self._status[status.version] = status

    def _try_load(self, version: int, path: Path):
        stamp = self._stamp(path)
        if self._failed.get(version) == stamp:
            return None  # failed before with these very files
        self._set_status(VersionStatus(version, LOADING))
        started = time.monotonic()
        try:
            servable = self._loader(self.name, version, path)
        except Exception as err:  # noqa: BLE001 -- every failure is logged and skipped
            message = " ".join(str(err).split())[:1000]
            self._failed[version] = self._stamp(path)
            self._set_status(VersionStatus(version, END, "UNKNOWN", message))
            log.error("model %s version %d: load FAILED after %.1fs, skipped (old versions keep serving): %s",
                      self.name, version, time.monotonic() - started, message)
            if self._metrics:
                self._metrics.load_failed(self.name)
            return None
        self._failed.pop(version, None)
        paths = servable.call_paths() if hasattr(servable, "call_paths") else ""
        log.info("model %s version %d: loaded and warmed up in %.1fs from %s%s",
                 self.name, version, time.monotonic() - started, path, f" ({paths})" if paths else "")
        if self._metrics:
            self._metrics.load_succeeded(self.name, time.monotonic() - started)
        return servable

    def poll(self, stop: Optional[threading.Event] = None) -> bool:
        """One scan: load what the policy wants, switch, unload the rest. Returns True if anything changed."""
        base = self.config.base_path
        on_disk = _list_versions(base)
        if not on_disk and not self._waiting_logged and not self.snapshot.servables:
            log.warning("model %s: no version under %s yet; serving 503 until one is pushed", self.name, base)
            self._waiting_logged = True
        candidates, keep = self.config.policy.candidates(on_disk)
        old = self.snapshot
        chosen: Dict[int, object] = {}
        for version in candidates:
            if keep is not None and len(chosen) >= keep:
                break
            if stop is not None and stop.is_set():
                return False
            servable = old.servables.get(version)
            if servable is None:
                servable = self._try_load(version, base / str(version))
            if servable is not None:
                chosen[version] = servable
        if not chosen and old.servables:
            # Nothing loadable on disk (directory gone, every version broken): keep what serves.
            if set(old.servables) - set(on_disk):
                log.warning("model %s: no loadable version under %s; keeping version(s) %s",
                            self.name, base, sorted(old.servables))
            chosen = dict(old.servables)
        labels = {k: v for k, v in self.config.labels}
        new = Snapshot(chosen, labels, max(chosen) if chosen else None)
        if new.servables.keys() == old.servables.keys() and new.labels == old.labels:
            return False
        for version in chosen:
            self._set_status(VersionStatus(version, AVAILABLE))
        self.snapshot = new  # the switch: one reference assignment
        if self._metrics:
            self._metrics.set_loaded(self.name, new.latest, list(chosen))
        if new.latest != old.latest:
            log.info("model %s: now serving version %s (loaded: %s)", self.name, new.latest, sorted(chosen))
        for version in sorted(set(old.servables) - set(chosen)):
            self._set_status(VersionStatus(version, END))
            log.info("model %s version %d: unloaded", self.name, version)
        if set(old.servables) - set(chosen):
            gc.collect()  # in-flight requests still hold their Servable; memory goes when they finish
        return True

    def unload_all(self) -> None:
        old, self.snapshot = self.snapshot, EMPTY
        for version in sorted(old.servables):
            self._set_status(VersionStatus(version, END))
            log.info("model %s version %d: unloaded", self.name, version)


class Registry:
    """All models, the watcher thread, and config reloads."""

    def __init__(self, configs: List[ModelConfig], loader: Callable, stamp: Callable,
                 config_path: Optional[Path] = None, home: Optional[Path] = None,
                 poll_seconds: float = 1.0, metrics=None, fallback: Optional[List[ModelConfig]] = None,
                 on_poll: Optional[Callable[[], None]] = None):
        self._loader, self._stamp, self._metrics = loader, stamp, metrics
        self._on_poll = on_poll  # after every scan (a worker of several publishes its versions there)
        self.config_path, self.home = config_path, home
        # What serves while `config_path` does not exist (the home's default models.config, which
        # may be written, edited and removed while the server runs); None: a missing file is an error.
        self._fallback = fallback
        self._config_stamp = config_stamp(config_path)
        # canary.json beside the models.config (serving/canary.py): open canary windows, reread on change.
        self._canary_path = config_path.parent / "canary.json" if config_path is not None else None
        self._canary_stamp: Optional[Tuple[int, int]] = None
        self._canary_shares: Dict[str, float] = {}
        self.models: Dict[str, ModelStore] = {c.name: ModelStore(c, loader, stamp, metrics) for c in configs}
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def get(self, name: str) -> ModelStore:
        store = self.models.get(name)
        if store is None:
            raise NotFound(f"Servable not found for request: Latest({name})" if name else "Missing model name in request.")
        return store

    def _reload_config(self) -> None:
        stamp = config_stamp(self.config_path)
        if self.config_path is None or stamp == self._config_stamp:
            return
        self._config_stamp = stamp
        if stamp is None and self._fallback is not None:
            configs = self._fallback
            log.info("model config %s is gone: back to the defaults (%s)", self.config_path,
                     ", ".join(f"{c.name} from {c.base_path}" for c in configs))
        else:
            try:
                configs = load_model_config(self.config_path, self.home or Path.cwd())
            except ConfigFileError as err:
                log.error("model config %s: %s; keeping the previous config", self.config_path, err)
                return
        models = dict(self.models)
        for config in configs:
            if config.name in models:
                if models[config.name].config != config:
                    models[config.name].config = config
                    log.info("model %s: config changed (policy %s, labels %s)", config.name,
                             config.policy.describe(), dict(config.labels))
            else:
                models[config.name] = ModelStore(config, self._loader, self._stamp, self._metrics)
                log.info("model %s: added from %s", config.name, self.config_path)
        removed = [name for name in models if name not in {c.name for c in configs}]
        self.models = {name: store for name, store in models.items() if name not in removed}
        for name in removed:
            models[name].unload_all()
            log.info("model %s: removed from %s", name, self.config_path)

    def _reload_canary(self) -> None:
        stamp = config_stamp(self._canary_path)
        if stamp != self._canary_stamp:
            from serving.canary import windows

            self._canary_stamp = stamp
            shares = {name: (w.share if w.canary is not None else 0.0) for name, w in windows(self._canary_path).items()}
            if shares != self._canary_shares:
                log.info("canary windows: %s", ", ".join(f"{name} {share:.0%} to canary" for name, share in
                                                         sorted(shares.items())) or "none")
            self._canary_shares = shares
        for name, store in self.models.items():
            store.canary_share = self._canary_shares.get(name)

    def poll_once(self) -> None:
        self._reload_config()
        try:
            self._reload_canary()
        except Exception:  # noqa: BLE001 -- a broken canary.json must not stop the watcher
            log.exception("canary state %s: cannot read it; keeping the previous split", self._canary_path)
        for store in list(self.models.values()):
            if self._stop.is_set():
                return
            try:
                store.poll(self._stop)
            except Exception:  # noqa: BLE001 -- the watcher must survive anything on disk
                log.exception("model %s: scan failed; will retry", store.name)
        if self._on_poll is not None:
            try:
                self._on_poll()
            except Exception:  # noqa: BLE001 -- e.g. a full disk: serving goes on, the next scan retries
                log.exception("after a scan: could not publish this worker's versions; will retry")

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.05, self.poll_seconds - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
