"""Canary rollout: a new version answers a share of the requests that name no version, then is promoted or rolled back.

With canary on (`mlops models canary enable`, off by default) a nightly push does not become the
served version at once. The Pusher (components/pusher/executor.py) calls `begin`, which writes the
home's models.config so that the version served until then keeps serving under the `stable` label
and the new one loads under the `canary` label (a `specific` policy keeps both loaded), and records
the window (share, start, soak period) in `canary.json` beside that models.config:

    {"settings": {"enabled": true, "share": 0.1, "soak_seconds": 1800, ...},
     "windows": {"taxi": {"stable": 3, "canary": 4, "share": 0.1, "started_at": 1765000000.0, ...}}}

The model server rereads both files every scan (serving/store.py): while a window is open, a request
that names no version goes to `canary` with probability `share` and to `stable` otherwise. With a
request id (REST `X-Request-Id`, gRPC metadata `x-request-id`) the choice is a stable hash of the id,
so one id always meets the same version; without one it is random. Requests that name a version or
a label get what they name. Because the window lives in a file, a restarted server resumes it.

`mlops models canary check` (pipelines/canary.py) decides after the soak period: `promote` (the
`stable` label moves to the canary, the window closes, the policy before the canary comes back) or
an audited rollback. Standard library only (the config text is written here, parsed by
serving/config.py): the server, the Pusher and the CLI all use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from serving.config import (ConfigFileError, ModelConfig, VersionPolicy, default_config_path, load_model_config,
                            project_config_path)
from serving.files import write_atomic

CANARY, STABLE = "canary", "stable"
FILE_NAME = "canary.json"
REQUEST_ID_HEADER = "X-Request-Id"  # REST; gRPC metadata key: its lower-case form
GRPC_REQUEST_ID_KEY = "x-request-id"

DEFAULT_SHARE = 0.1
DEFAULT_SOAK_SECONDS = 1800.0
DEFAULT_ERROR_MARGIN = 0.01  # canary error rate may exceed stable's by 1 percentage point
DEFAULT_LATENCY_MARGIN = 0.5  # canary p99 may be up to 1.5x stable's
DEFAULT_MIN_REQUESTS = 50  # fewer canary requests than this after the soak: no decision yet


@dataclasses.dataclass(frozen=True)
class Settings:
    """The home's canary settings (`mlops models canary enable|disable`)."""

    enabled: bool = False
    share: float = DEFAULT_SHARE
    soak_seconds: float = DEFAULT_SOAK_SECONDS
    error_margin: float = DEFAULT_ERROR_MARGIN
    latency_margin: float = DEFAULT_LATENCY_MARGIN
    min_requests: int = DEFAULT_MIN_REQUESTS

    @classmethod
    def from_dict(cls, raw: dict) -> "Settings":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (raw or {}).items() if k in known})


@dataclasses.dataclass(frozen=True)
class Window:
    """An open canary of one model: which versions, which share, since when."""

    model: str
    stable: int
    canary: Optional[int]  # None for the moment between pinning `stable` and the new version's arrival
    share: float
    started_at: float  # time.time()
    soak_seconds: float
    # The version policy before the canary (restored when it ends): {"kind": "latest", "num_versions": 1}.
    previous_policy: Tuple[Tuple[str, object], ...] = (("kind", "latest"), ("num_versions", 1))

    def soak_left(self, now: Optional[float] = None) -> float:
        return max(0.0, self.started_at + self.soak_seconds - (time.time() if now is None else now))

    def policy(self) -> VersionPolicy:
        raw = dict(self.previous_policy)
        return VersionPolicy(str(raw.get("kind", "latest")), int(raw.get("num_versions", 1) or 1))

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["previous_policy"] = dict(self.previous_policy)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "Window":
        policy = raw.get("previous_policy") or {"kind": "latest", "num_versions": 1}
        return cls(model=str(raw["model"]), stable=int(raw["stable"]),
                   canary=None if raw.get("canary") is None else int(raw["canary"]),
                   share=float(raw["share"]), started_at=float(raw["started_at"]),
                   soak_seconds=float(raw.get("soak_seconds", DEFAULT_SOAK_SECONDS)),
                   previous_policy=tuple(sorted(policy.items())))


# -- the file ------------------------------------------------------------------------------------


def state_path(config_path: Path) -> Path:
    """canary.json beside the models.config the server follows."""
    return Path(config_path).parent / FILE_NAME


def home_config_path(home: Path) -> Path:
    """The models.config that the home's model server follows (written by canaries when absent)."""
    try:
        return project_config_path(Path(home), None) or default_config_path(Path(home))
    except ConfigFileError:
        return default_config_path(Path(home))


def read_state(path: Path) -> dict:
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_state(path: Path, state: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(path), (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def load_settings(path: Path) -> Settings:
    return Settings.from_dict(read_state(path).get("settings") or {})


def save_settings(path: Path, settings: Settings) -> None:
    state = read_state(path)
    state["settings"] = dataclasses.asdict(settings)
    _write_state(path, state)


def windows(path: Optional[Path]) -> Dict[str, Window]:
    """The open windows by model name ({} without a file, or for an unreadable one)."""
    if path is None:
        return {}
    out = {}
    for name, raw in (read_state(path).get("windows") or {}).items():
        try:
            out[name] = Window.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            continue  # a hand-edited entry that makes no sense opens no window
    return out


def save_window(path: Path, window: Window) -> None:
    state = read_state(path)
    state.setdefault("windows", {})[window.model] = window.as_dict()
    _write_state(path, state)


def close_window(path: Path, model: str) -> None:
    state = read_state(path)
    if model in (state.get("windows") or {}):
        del state["windows"][model]
        _write_state(path, state)


# -- the split (the server's side) ----------------------------------------------------------------


def request_fraction(request_id: str) -> float:
    """A request id's place in [0, 1): the first 8 bytes of its sha256 (the same in every process)."""
    return int.from_bytes(hashlib.sha256(request_id.encode("utf-8", "surrogatepass")).digest()[:8], "big") / 2.0 ** 64


def goes_to_canary(share: float, request_id: Optional[str]) -> bool:
    if share <= 0.0:
        return False
    if share >= 1.0:
        return True
    return (request_fraction(request_id) if request_id else random.random()) < share


# -- models.config -------------------------------------------------------------------------------


def render_config(models: List[ModelConfig], home: Path) -> str:
    """ModelServerConfig text for `models` (base paths inside the home written relative to it)."""
    lines = ["model_config_list {"]
    for model in models:
        base = Path(model.base_path)
        try:
            base_text = str(base.resolve().relative_to(Path(home).resolve()))
        except ValueError:
            base_text = str(base)
        lines += ["  config {", f"    name: {json.dumps(model.name)}", f"    base_path: {json.dumps(base_text)}",
                  '    model_platform: "tensorflow"']
        policy = model.policy
        if policy.kind == "specific":
            versions = " ".join(f"versions: {v}" for v in sorted(policy.versions))
            lines.append(f"    model_version_policy {{ specific {{ {versions} }} }}")
        elif policy.kind == "all":
            lines.append("    model_version_policy { all {} }")
        else:
            lines.append(f"    model_version_policy {{ latest {{ num_versions: {policy.num_versions} }} }}")
        for label, version in model.labels:
            lines.append(f"    version_labels {{ key: {json.dumps(label)} value: {version} }}")
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def read_configs(config_path: Path, home: Path, base: Path, name: str) -> Tuple[List[ModelConfig], int]:
    """The models of `config_path` (one model serving `base` when the file does not exist) and the
    index of the one whose base_path is `base` (-1: the file does not serve it)."""
    base = Path(base).resolve()
    configs = load_model_config(config_path, home) if Path(config_path).is_file() else [ModelConfig(name, base)]
    match = [i for i, c in enumerate(configs) if c.base_path == base]
    return configs, (match[0] if match else -1)


def write_model_entry(config_path: Path, home: Path, configs: List[ModelConfig], index: int,
                      policy: VersionPolicy, labels: Dict[str, int]) -> None:
    """Rewrites one model's policy and labels in the models.config (atomically; the server rereads it)."""
    configs = list(configs)
    old = configs[index]
    configs[index] = ModelConfig(old.name, old.base_path, policy, tuple(sorted(labels.items())))
    Path(config_path).parent.mkdir(parents=True, exist_ok=True)
    write_atomic(Path(config_path), render_config(configs, home).encode())


def _other_labels(model: ModelConfig) -> Dict[str, int]:
    return {k: v for k, v in model.labels if k not in (CANARY, STABLE)}


def begin(home: Path, base: Path, publish: Callable[[], int], served_before: Optional[int],
          log: Callable[[str], None] = lambda _: None) -> Tuple[int, Optional[Window]]:
    """Publishes a new version (`publish()` returns it) as a canary when the home's settings say so.

    Returns (version, the window opened, or None when the push was published as usual: canary off,
    nothing served before, or a models.config that pins versions or does not serve `base`). The
    order keeps every request on a loaded version: the window (share) first, then a config pinning
    `stable`, then the new directory, then the config that adds it under `canary`."""
    config_path = home_config_path(home)
    path = state_path(config_path)
    settings = load_settings(path)
    if not settings.enabled:
        return publish(), None
    try:
        configs, index = read_configs(config_path, home, base, Path(base).name)
    except ConfigFileError as err:
        log(f"canary skipped: {config_path}: {err}")
        return publish(), None
    if index < 0:
        log(f"canary skipped: {config_path} does not serve {base}")
        return publish(), None
    model = configs[index]
    current = windows(path).get(model.name)
    if current is not None:  # a newer push replaces the canary still soaking; stable stays
        stable, previous = current.stable, current.previous_policy
    elif model.policy.kind == "specific":
        log(f"canary skipped: {config_path} pins {model.name} to versions {sorted(model.policy.versions)}")
        return publish(), None
    else:
        stable = served_before
        previous = tuple(sorted({"kind": model.policy.kind, "num_versions": model.policy.num_versions}.items()))
    if stable is None:
        log("canary skipped: nothing was served before this push")
        return publish(), None
    pending = Window(model.name, stable, None, settings.share, time.time(), settings.soak_seconds, previous)
    save_window(path, pending)
    keep = {stable} | ({current.canary} if current is not None and current.canary is not None else set())
    labels = {**_other_labels(model), STABLE: stable}
    write_model_entry(config_path, home, configs, index, VersionPolicy("specific", versions=frozenset(keep)), labels)
    version = publish()
    window = dataclasses.replace(pending, canary=version, started_at=time.time())
    save_window(path, window)
    write_model_entry(config_path, home, configs, index, VersionPolicy("specific", versions=frozenset({stable, version})),
                      {**labels, CANARY: version})
    log(f"canary: version {version} answers {settings.share:.0%} of the requests that name no version, "
        f"version {stable} (stable) the rest; soak {settings.soak_seconds:.0f}s ({config_path})")
    return version, window


def promote(home: Path, base: Path, window: Window, config_path: Optional[Path] = None) -> None:
    """`stable` -> the canary, `canary` label removed, the policy before the canary back; window closed."""
    config_path = config_path or home_config_path(home)
    configs, index = read_configs(config_path, home, base, window.model)
    if index < 0:
        raise ConfigFileError(f"{config_path} does not serve {base} any more")
    labels = {**_other_labels(configs[index]), STABLE: window.canary}
    write_model_entry(config_path, home, configs, index, window.policy(), labels)
    close_window(state_path(config_path), window.model)


def stop_canary_traffic(home: Path, base: Path, window: Window, config_path: Optional[Path] = None) -> None:
    """Before a rollback: every request that names no version goes to `stable` (the canary stays loaded
    for requests in flight and those naming it; its label goes)."""
    config_path = config_path or home_config_path(home)
    path = state_path(config_path)
    configs, index = read_configs(config_path, home, base, window.model)
    if index < 0:
        raise ConfigFileError(f"{config_path} does not serve {base} any more")
    save_window(path, dataclasses.replace(window, share=0.0))
    keep = {window.stable} | ({window.canary} if window.canary is not None else set())
    write_model_entry(config_path, home, configs, index, VersionPolicy("specific", versions=frozenset(keep)),
                      {**_other_labels(configs[index]), STABLE: window.stable})


def load_alongside(home: Path, base: Path, window: Window, version: int, config_path: Optional[Path] = None) -> None:
    """The rollback's new version loads beside stable (still answering) before it takes over."""
    config_path = config_path or home_config_path(home)
    configs, index = read_configs(config_path, home, base, window.model)
    keep = {window.stable, version} | ({window.canary} if window.canary is not None else set())
    write_model_entry(config_path, home, configs, index, VersionPolicy("specific", versions=frozenset(keep)),
                      {**_other_labels(configs[index]), STABLE: window.stable})


def finish_rollback(home: Path, base: Path, window: Window, version: int, config_path: Optional[Path] = None) -> None:
    """After the rollback's push (`version`, stable's bytes) loaded: it is `stable`, the old policy is back."""
    config_path = config_path or home_config_path(home)
    configs, index = read_configs(config_path, home, base, window.model)
    write_model_entry(config_path, home, configs, index, window.policy(),
                      {**_other_labels(configs[index]), STABLE: version})
    close_window(state_path(config_path), window.model)
