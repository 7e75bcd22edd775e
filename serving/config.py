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
from typing import Dict, FrozenSet, List, Optional, Tuple

DEFAULT_MODEL_NAME = "taxi"
DEFAULT_CONFIG_NAME = "models.config"  # looked for in <home>/serving/ when no file is given


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
