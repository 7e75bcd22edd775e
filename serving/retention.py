"""Retention of pushed model versions (`mlops models prune`).

Keeps the newest N versions (default 5), every version a models.config pins (`specific` policy),
keeps loaded (`latest N`) or labels (`stable`, `canary`, ...), the newest version (what a `latest`
server serves), the newest *complete* version (what the server falls back to when newer ones are
broken), and any version a running server reports as loaded (`--server URL`, by default the one
`make up` started for the home). The Pusher applies the same plan after each push. Everything
else is deleted atomically: renamed to a hidden `.deleting-*` directory (which servers and
`list_versions` ignore) and then removed. No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

from serving.versions import list_versions

log = logging.getLogger("serving")

DEFAULT_KEEP = 5
DELETING_PREFIX = ".deleting-"


@dataclasses.dataclass
class PrunePlan:
    base: Path
    on_disk: List[int]
    keep: Dict[int, List[str]]  # version -> why it stays
    delete: List[int]
    failed: Dict[int, str] = dataclasses.field(default_factory=dict)  # version -> why apply_prune could not delete it

    def lines(self) -> List[str]:
        out = [f"{self.base}: {len(self.on_disk)} version(s) on disk, keeping {len(self.keep)}, "
               f"deleting {len(self.delete)}"]
        for version in sorted(self.on_disk, reverse=True):
            if version in self.keep:
                out.append(f"  keep   {version:>5}  {'; '.join(self.keep[version])}")
            else:
                out.append(f"  delete {version:>5}")
        return out

    def as_dict(self) -> dict:
        return {"base": str(self.base), "on_disk": self.on_disk,
                "keep": {str(v): r for v, r in sorted(self.keep.items())}, "delete": self.delete}


def looks_complete(version_dir: Path) -> bool:
    """A SavedModel with its variables written (cheap check; the server does the real load)."""
    return ((version_dir / "saved_model.pb").is_file()
            and (version_dir / "variables" / "variables.index").is_file()
            and any((version_dir / "variables").glob("variables.data-*")))


def plan_prune(base: Path, keep_newest: int = DEFAULT_KEEP, labels: Optional[Dict[str, int]] = None,
               pinned: Set[int] = frozenset(), served: Set[int] = frozenset(),
               latest=None, also_keep: Optional[Dict[int, str]] = None) -> PrunePlan:
    """`latest`: a `latest N` serving.config.VersionPolicy, whose loaded versions stay;
    `also_keep`: more versions to keep, each with why."""
    if keep_newest < 1:
        raise ValueError("keep at least 1 version (the served one)")
    base = Path(base)
    on_disk = list_versions(base)
    keep: Dict[int, List[str]] = {}

    def mark(version: int, why: str) -> None:
        if version in on_disk:
            keep.setdefault(version, []).append(why)

    if on_disk:
        mark(on_disk[-1], "newest: served")
        complete = [v for v in on_disk if looks_complete(base / str(v))]
        if complete and complete[-1] != on_disk[-1]:
            mark(complete[-1], "newest complete version: served while newer ones are broken")
    for version in on_disk[-keep_newest:]:
        mark(version, f"among the newest {keep_newest}")
    for label, version in sorted((labels or {}).items()):
        mark(version, f"label {label!r}")
    for version in sorted(pinned):
        mark(version, "pinned by the version policy")
    for version in latest.loads(on_disk) if latest is not None else []:
        mark(version, f"loaded under the version policy ({latest.describe()})")
    for version, why in sorted((also_keep or {}).items()):
        mark(version, why)
    for version in sorted(served):
        mark(version, "loaded by the running server")
    delete = [v for v in on_disk if v not in keep]
    return PrunePlan(base, on_disk, keep, delete)


def plan_for(serving, keep_newest: int = DEFAULT_KEEP, served: Set[int] = frozenset(),
             also_keep: Optional[Dict[int, str]] = None) -> PrunePlan:
    """The plan for a `serving.config.ProjectServing`'s directory: what its models.config entry (if
    the file exists) labels, pins (`specific`) or keeps loaded (`latest N`) stays."""
    model = serving.model if serving.config_path is not None else None
    labels = model.label_map if model else {}
    pinned = set(model.policy.versions) if model and model.policy.kind == "specific" else set()
    latest = model.policy if model and model.policy.kind == "latest" else None
    return plan_prune(serving.base_path, keep_newest, labels, pinned, served, latest, also_keep)


def remove_version(base: Path, version: int) -> None:
    """Atomic from a reader's point of view: one rename makes the version disappear, then rmtree."""
    source = Path(base) / str(version)
    hidden = Path(base) / f"{DELETING_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
    source.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def apply_prune(plan: PrunePlan, emit: Callable[[str], None] = print) -> List[int]:
    deleted = []
    for version in plan.delete:
        try:
            remove_version(plan.base, version)
        except FileNotFoundError:
            continue  # someone else removed it first
        except OSError as err:  # not ours to delete (permissions, a read-only mount): the rest still go
            plan.failed[version] = " ".join(str(err).split())
            emit(f"could not delete version {version}: {plan.failed[version]}")
            continue
        deleted.append(version)
        emit(f"deleted version {version}")
    for leftover in plan.base.glob(f"{DELETING_PREFIX}*"):  # from an interrupted earlier prune
        shutil.rmtree(leftover, ignore_errors=True)
    return deleted


def served_versions(server_url: str, model: str, timeout: float = 2.0) -> Set[int]:
    """Versions a running model server reports AVAILABLE (GET /v1/models/<model>)."""
    import urllib.error
    import urllib.request

    url = f"{server_url.rstrip('/')}/v1/models/{model}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 -- operator-given URL
            body = json.loads(response.read())
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return set()
        raise
    return {int(s["version"]) for s in body.get("model_version_status", []) if s.get("state") == "AVAILABLE"}


def wait_until_served(server_url: str, model: str, version: int, timeout: float = 30.0,
                      poll: float = 0.2) -> Optional[float]:
    """Seconds until the server's default version (its newest AVAILABLE one) is `version`; None on timeout.

    An unreachable server counts as not serving it yet (it may be restarting)."""
    import time

    started = time.monotonic()
    while True:
        try:
            available = served_versions(server_url, model)
        except (OSError, ValueError):
            available = set()
        if available and max(available) == version:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(poll)
