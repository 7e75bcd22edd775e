"""Which models the server serves, and how: TF Serving's `models.config` (ModelServerConfig text proto).

Shared by the model server and by retention (`mlops models prune`), so that both agree on which
versions are pinned or labelled. Importing this module does not import TensorFlow.

```
model_config_list {
  config {
    name: "taxi"
    base_path: "serving/models/taxi"          # relative paths: relative to the project home
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 3 versions: 4 } }   # or latest { num_versions: 2 } / all {}
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 4 }
  }
}
```
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

DEFAULT_MODEL_NAME = "taxi"
DEFAULT_CONFIG_NAME = "models.config"  # looked for in <home>/serving/ when no file is given
# --help of the commands that read how the home's model server serves (project_config_path)
PROJECT_CONFIG_HELP_DEFAULT = ("default: the one this home's running model server follows, else "
                               "<home>/serving/models.config if it exists")


class ConfigFileError(ValueError):
    """The models.config file cannot be read or does not make sense."""


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's model_version_policy: `latest` N (default 1), `all`, or `specific` versions."""

    kind: str = "latest"
    num_versions: int = 1
    versions: FrozenSet[int] = frozenset()

    def describe(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        if self.kind == "specific":
            return "specific " + ",".join(str(v) for v in sorted(self.versions))
        return "all"

    def candidates(self, on_disk: Iterable[int]) -> Tuple[List[int], Optional[int]]:
        """(the versions a server tries to load, newest first; how many of them it keeps, None for all).

        Under `latest N` a server loads the newest N that load, so an older version stands in for
        a newer one that is broken; `loads` is the answer when every version loads."""
        versions = sorted(set(on_disk), reverse=True)
        if self.kind == "specific":
            return [v for v in versions if v in self.versions], None
        if self.kind == "all":
            return versions, None
        return versions, self.num_versions

    def loads(self, on_disk: Iterable[int]) -> List[int]:
        """The versions out of `on_disk` a server with this policy keeps loaded, ascending, if each loads.

        (The server also skips a version that fails to load and then keeps an older one; only a
        running server can say that, see `mlops models list --server`.)"""
        versions, keep = self.candidates(on_disk)
        return sorted(versions if keep is None else versions[:keep])


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    policy: VersionPolicy = VersionPolicy()
    labels: Tuple[Tuple[str, int], ...] = ()  # sorted (label, version) pairs: hashable and comparable

    @property
    def label_map(self) -> Dict[str, int]:
        return dict(self.labels)

    def protected_versions(self) -> FrozenSet[int]:
        """Versions that retention must keep: pinned by a `specific` policy or named by a label."""
        pinned = self.policy.versions if self.policy.kind == "specific" else frozenset()
        return frozenset(pinned) | frozenset(v for _, v in self.labels)

    def labels_of(self, version: int) -> List[str]:
        return [label for label, v in self.labels if v == version]


def single_model(name: str, base_path: Path) -> List[ModelConfig]:
    return [ModelConfig(name=name, base_path=Path(base_path).resolve())]


def default_config_path(home: Path) -> Path:
    return Path(home) / "serving" / DEFAULT_CONFIG_NAME


def resolve_config_path(home: Path, explicit: Optional[str]) -> Optional[Path]:
    """The explicit --model-config-file, else <home>/serving/models.config when it exists."""
    if explicit:
        path = Path(explicit)
        if not path.is_absolute():
            path = Path(home) / path if not path.exists() else path.resolve()
        if not path.is_file():
            raise ConfigFileError(f"model config file {path} does not exist")
        return path.resolve()
    path = default_config_path(home)
    return path if path.is_file() else None


def project_config_path(home: Path, explicit: Optional[str]) -> Optional[Path]:
    """The models.config that says how the home's model server serves: the explicit one; else the
    one the home's running model server follows (`make up`'s, or a `mlops serve` that registered
    itself with --model-config-file elsewhere); else <home>/serving/models.config when it exists."""
    if explicit:
        return resolve_config_path(home, explicit)
    from serving.home import running_model_server  # standard library only

    server = running_model_server(Path(home))
    if server is not None and server.config_file is not None and server.config_file.is_file():
        return server.config_file.resolve()
    return resolve_config_path(home, None)


def parse_model_config(text: str, home: Path) -> List[ModelConfig]:
    """Parses a ModelServerConfig text proto into ModelConfigs (base paths resolved against `home`)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigFileError(f"not a ModelServerConfig text proto: {err}") from err
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigFileError("the config has no model_config_list (custom_model_config is not supported)")
    models: List[ModelConfig] = []
    for entry in proto.model_config_list.config:
        if not entry.name:
            raise ConfigFileError("a model config has no name")
        if not entry.base_path:
            raise ConfigFileError(f"model {entry.name!r} has no base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigFileError(f"model {entry.name!r}: platform {entry.model_platform!r} is not supported")
        base = Path(entry.base_path)
        if not base.is_absolute():
            base = Path(home) / base
        which = entry.model_version_policy.WhichOneof("policy_choice")
        if which == "specific":
            versions = frozenset(int(v) for v in entry.model_version_policy.specific.versions)
            if not versions:
                raise ConfigFileError(f"model {entry.name!r}: specific policy lists no versions")
            policy = VersionPolicy("specific", versions=versions)
        elif which == "all":
            policy = VersionPolicy("all")
        else:
            num = entry.model_version_policy.latest.num_versions if which == "latest" else 1
            policy = VersionPolicy("latest", num_versions=max(1, int(num or 1)))
        labels = tuple(sorted((str(k), int(v)) for k, v in entry.version_labels.items()))
        models.append(ModelConfig(entry.name, base.resolve(), policy, labels))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigFileError(f"model names repeat in the config: {names}")
    if not models:
        raise ConfigFileError("the config lists no model")
    return models


def load_model_config(path: Path, home: Path) -> List[ModelConfig]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(f"cannot read model config {path}: {err}") from err
    return parse_model_config(text, home)


def config_stamp(path: Optional[Path]) -> Optional[Tuple[int, int]]:
    """(mtime_ns, size) of the config file, to notice changes cheaply; None when absent."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


@dataclasses.dataclass(frozen=True)
class ProjectServing:
    """How a model server on the project's defaults (`mlops serve`, `make up`) serves one version directory.

    With no models.config it serves the newest version (`latest 1`); with one, the entry whose
    base_path is that directory says how, and no entry means that server does not serve it."""

    base_path: Path
    config_path: Optional[Path] = None
    model: Optional[ModelConfig] = None

    @classmethod
    def read(cls, home: Path, base_path: Path, explicit: Optional[str] = None) -> "ProjectServing":
        """Raises ConfigFileError for a models.config that is missing (when explicit) or unreadable."""
        path = project_config_path(home, explicit)
        return cls.from_configs(base_path, path, load_model_config(path, home) if path else [])

    @classmethod
    def from_configs(cls, base_path: Path, path: Optional[Path], configs: List[ModelConfig]) -> "ProjectServing":
        """`read` for a models.config already loaded (`path` None: there is none)."""
        base = Path(base_path).resolve()
        if path is None:
            return cls(base, None, ModelConfig(base.name, base))
        match = [m for m in configs if m.base_path == base]
        return cls(base, path, match[0] if match else None)

    @property
    def model_name(self) -> str:
        """The name to ask a server about: the config's, else the directory's (what `mlops serve` defaults to)."""
        return self.model.name if self.model else self.base_path.name

    def loaded(self, on_disk: Iterable[int]) -> List[int]:
        return self.model.policy.loads(on_disk) if self.model else []

    def labels_of(self, version: int) -> List[str]:
        return self.model.labels_of(version) if self.model else []

    def serves_new_pushes(self) -> bool:
        """A push (a new, newest version directory) becomes the default version."""
        return self.model is not None and self.model.policy.kind != "specific"

    def describe(self) -> str:
        if self.config_path is None:
            return "no models.config: the newest version is served"
        if self.model is None:
            return f"{self.config_path} has no model with base_path {self.base_path}: a server started from it does not serve it"
        labels = ", ".join(f"{label} -> {version}" for label, version in self.model.labels)
        return (f"model {self.model.name!r} in {self.config_path}: policy {self.model.policy.describe()}"
                + (f", labels {labels}" if labels else ""))
