"""Typed, frozen configuration for one pipeline run.

The environment is read once, at the edge (`ProjectPaths.from_env`, the CLI, the DAG files);
everything below takes these objects.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from pathlib import Path
from typing import Optional, Tuple

from pipelines.errors import ConfigError
from pipelines.taxi.model_options import STRATEGIES
from serving.retention import DEFAULT_KEEP as DEFAULT_KEEP_VERSIONS  # pushed versions kept after a push

PIPELINE_NAME = "taxi"
BEAM_MODES = ("in_memory", "multi_processing", "multi_threading")
AUTO = "auto"  # --beam-mode auto: `beam_mode_for()` picks one of BEAM_MODES from the span's size
# Above this many bytes of CSV a span runs on the multi-processing DirectRunner (one worker per
# core): the in-memory runner holds every element of a stage in this process, so its memory grows
# with the span. About 125 bytes a taxi row: 64 MB is roughly 500k rows.
MULTI_PROCESSING_BYTES = 64 * 1024 * 1024
# Beam flags that tell TFX the workers already have their Python dependencies.
_BEAM_DEPENDENCY_FLAGS = ("extra_package", "extra_packages", "setup_file", "requirements_file",
                          "sdk_container_image", "worker_harness_container_image")
DEFAULT_WINDOW_DAYS = 7
MAX_WINDOW_DAYS = 90
DIRECT_RUNNER_IMAGE = "unused-by-the-direct-runner"
# More Beam pipeline arguments for every Beam node (e.g. a Flink or Dataflow runner: docs/scale-out.md),
# shell-quoted, space-separated; `--beam-arg` adds to them. Airflow's tasks inherit it.
BEAM_ARGS_ENV = "MLOPS_BEAM_ARGS"


def _beam_version() -> str:
    from importlib.metadata import version  # the installed wheel's metadata: no Beam import

    return version("apache-beam")


@dataclasses.dataclass(frozen=True)
class ProjectPaths:
    """Where a project keeps its inputs and state. Everything mutable lives under `var/`."""

    home: Path

    @classmethod
    def from_env(cls, home: Optional[str] = None) -> "ProjectPaths":
        return cls(Path(home or os.environ.get("MLOPS_HOME") or os.getcwd()).resolve())

    @property
    def data_root(self) -> Path:
        return self.home / "data" / "incoming"

    @property
    def var(self) -> Path:
        return self.home / "var"

    @property
    def pipeline_root(self) -> Path:
        return self.var / "pipeline_root"

    @property
    def metadata_path(self) -> Path:
        return self.var / "metadata.sqlite"

    @property
    def schema_path(self) -> Path:
        return self.home / "schemas" / "taxi" / "schema.pbtxt"

    @property
    def gates_path(self) -> Path:
        return self.home / "schemas" / "taxi" / "gates.toml"

    @property
    def serving_model_dir(self) -> Path:
        from serving.home import model_dir

        return model_dir(self.home, PIPELINE_NAME)


# Where ML Metadata lives (docs/scale-out.md): unset means the SQLite file var/metadata.sqlite;
# `sqlite:PATH` another file; `mysql://USER@HOST[:PORT]/DATABASE` a MySQL/MariaDB server, whose password
# is read from MLMD_PASSWORD_ENV only (never from the URL: URLs end up in logs and process lists).
MLMD_ENV = "MLOPS_MLMD"
MLMD_PASSWORD_ENV = "MLOPS_MLMD_PASSWORD"
MYSQL_DEFAULT_PORT = 3306


@dataclasses.dataclass(frozen=True)
class MetadataConfig:
    """ML Metadata connection: SQLite file by default, MySQL when `mysql_host` is set."""

    sqlite_path: str = ""
    mysql_host: str = ""
    mysql_port: int = MYSQL_DEFAULT_PORT
    mysql_database: str = "mlmd"
    mysql_user: str = "root"
    mysql_password: str = dataclasses.field(default="", repr=False)

    @classmethod
    def parse(cls, url: str, password: str = "") -> "MetadataConfig":
        """`sqlite:PATH` or `mysql://USER@HOST[:PORT]/DATABASE` (the password comes separately)."""
        from urllib.parse import unquote, urlsplit

        url = url.strip()
        scheme, _, rest = url.partition(":")
        if scheme == "sqlite" and rest:
            path = rest[2:] if rest.startswith("//") else rest  # sqlite:///abs/path and sqlite:/abs/path alike
            return cls(sqlite_path=str(Path(path).expanduser().resolve()))
        if scheme == "mysql":
            try:
                parts = urlsplit(url)
                port = parts.port or MYSQL_DEFAULT_PORT
            except ValueError as err:
                raise ConfigError(f"ML Metadata URL {url!r} is not a valid MySQL URL: {err}", _URL_FIX) from err
            if parts.password is not None:
                raise ConfigError(f"the ML Metadata URL for {parts.hostname} carries a password",
                                  f"remove it from the URL and put it in ${MLMD_PASSWORD_ENV} (or an Airflow connection)")
            database = parts.path.strip("/")
            if not parts.hostname or not parts.username or not database or "/" in database:
                raise ConfigError(f"ML Metadata URL {url!r} needs a user, a host and one database name", _URL_FIX)
            return cls(mysql_host=parts.hostname, mysql_port=port, mysql_database=unquote(database),
                       mysql_user=unquote(parts.username), mysql_password=password)
        raise ConfigError(f"ML Metadata URL {url!r} is neither sqlite:PATH nor mysql://...", _URL_FIX)

    @classmethod
    def for_home(cls, paths: "ProjectPaths", environ=None) -> "MetadataConfig":
        """The home's store: $MLOPS_MLMD (password in $MLOPS_MLMD_PASSWORD) if set; else the home's own
        MariaDB while `make up BACKEND=postgres` runs the home's services on it (so commands typed by
        hand read what the DAG's tasks write); else var/metadata.sqlite."""
        environ = os.environ if environ is None else environ
        url = environ.get(MLMD_ENV, "").strip()
        if url:
            return cls.parse(url, environ.get(MLMD_PASSWORD_ENV, ""))
        from pipelines import airflow_env, db_servers  # standard library only, no TFX

        if airflow_env.backend(paths.home) == "postgres":
            found = db_servers.mlmd_environment(paths.home)
            return cls.parse(found[MLMD_ENV], found[MLMD_PASSWORD_ENV])
        return cls(sqlite_path=str(paths.metadata_path))

    @property
    def is_sqlite(self) -> bool:
        return not self.mysql_host

    @property
    def url(self) -> str:
        """Where the store is, fit for logs: never the password."""
        if self.is_sqlite:
            return f"sqlite:{self.sqlite_path}"
        return f"mysql://{self.mysql_user}@{self.mysql_host}:{self.mysql_port}/{self.mysql_database}"

    def to_proto(self):
        from ml_metadata.proto import metadata_store_pb2

        config = metadata_store_pb2.ConnectionConfig()
        if self.is_sqlite:
            config.sqlite.filename_uri = self.sqlite_path
            config.sqlite.connection_mode = 3  # READWRITE_OPENCREATE
        else:
            config.mysql.host = self.mysql_host
            config.mysql.port = self.mysql_port
            config.mysql.database = self.mysql_database
            config.mysql.user = self.mysql_user
            config.mysql.password = self.mysql_password
        return config


_URL_FIX = (f"set {MLMD_ENV} (or --metadata) to sqlite:PATH or mysql://USER@HOST:PORT/DATABASE, "
            f"with the password in ${MLMD_PASSWORD_ENV}")


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """When a candidate model is blessed (and so pushed)."""

    auc_floor: float = 0.6
    # Candidate must beat the served model's AUC by this fraction (0.01 = 1% relative).
    min_relative_improvement: float = 0.01
    # No monitored slice may lose more than this much AUC against the served model.
    slice_margin: float = 0.05
    # Slices with fewer evaluation examples are neither reported nor gated (too noisy).
    min_slice_examples: int = 50


@dataclasses.dataclass(frozen=True)
class DataGateConfig:
    """When a span is blocked before training (drift thresholds themselves live in the schema)."""

    # Features whose drift only warns: the run goes on and the warning is recorded.
    warn_features: Tuple[str, ...] = ()
    # More duplicate rows than this fraction of the span blocks it.
    max_duplicate_fraction: float = 0.05

    @classmethod
    def load(cls, path: Path) -> "DataGateConfig":
        """Reads `schemas/taxi/gates.toml`; a missing file means the defaults."""
        if not path.is_file():
            return cls()
        import tomli

        try:
            data = tomli.loads(path.read_text())
        except tomli.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}", "fix the file or restore it from git") from err
        drift, span = data.get("drift", {}), data.get("span", {})
        warn = drift.get("warn", [])
        if not isinstance(warn, list) or not all(isinstance(name, str) for name in warn):
            raise ConfigError(f"{path}: [drift] warn must be a list of feature names, not {warn!r}",
                              'write it like: warn = ["company"]')
        fraction = span.get("max_duplicate_fraction", cls.max_duplicate_fraction)
        if not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ConfigError(f"{path}: [span] max_duplicate_fraction {fraction!r} is not a fraction",
                              "use a number between 0 and 1, such as 0.05")
        return cls(warn_features=tuple(warn), max_duplicate_fraction=float(fraction))


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything `create_pipeline` needs for one span. Pure data: no I/O happens here."""

    span_date: dt.date
    data_root: str
    pipeline_root: str
    schema_path: str
    serving_model_dir: str
    metadata: MetadataConfig
    pipeline_name: str = PIPELINE_NAME
    train_steps: int = 300
    eval_steps: int = 50
    batch_size: int = 64
    strategy: str = "auto"
    gates: GateConfig = GateConfig()
    data_gates: DataGateConfig = DataGateConfig()
    beam_mode: str = "in_memory"
    beam_workers: int = 1
    extra_beam_args: Tuple[str, ...] = ()
    enable_cache: bool = True
    # Pusher retention: newest pushed versions kept after a push (0: all), and the home whose
    # serving/models.config labels, pins or keeps loaded more of them.
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    project_home: str = ""
    # Name, size and mtime of the span's files (`span_fingerprint()`, read at the edge): a changed
    # file gives the span check a new cache key.
    span_fingerprint: str = ""
    # Training window: the newest N days that passed the data gates (the newest is held out for
    # evaluation). 1: train and evaluate on this span's own train/eval splits.
    window_days: int = DEFAULT_WINDOW_DAYS
    # Digest of what an analyzer cache depends on (schema, preprocessing code, tf.Transform
    # version; `transform_fingerprint()`, read at the edge): a cache written under another is unused.
    transform_fingerprint: str = ""
    # The Trainer's `run_fn` as MODULE.FUNCTION ("": the taxi model, pipelines.taxi.model.run_fn):
    # users bring their own model code; the InfraValidator checks what it exports can be served.
    trainer_run_fn: str = ""

    @classmethod
    def for_project(cls, paths: ProjectPaths, span_date: dt.date, metadata: Optional[MetadataConfig] = None,
                    **overrides) -> "PipelineConfig":
        """The home's config for one span; ML Metadata from the environment unless `metadata` is given."""
        return cls(
            span_date=span_date,
            data_root=str(paths.data_root),
            pipeline_root=str(paths.pipeline_root),
            schema_path=str(paths.schema_path),
            serving_model_dir=str(paths.serving_model_dir),
            metadata=metadata or MetadataConfig.for_home(paths),
            project_home=str(paths.home),
            **overrides,
        )

    @property
    def beam_pipeline_args(self) -> list:
        args = [f"--direct_running_mode={self.beam_mode}"]
        if self.beam_mode != "in_memory":
            # 0 workers once silently dropped rows here (design.md, section 7): always explicit.
            args.append(f"--direct_num_workers={max(1, self.beam_workers)}")
        extra = list(self.extra_beam_args)
        runner = next((a.split("=", 1)[1] for a in extra if a.startswith("--runner=")), "DirectRunner")
        if runner in ("DirectRunner", "direct") and not any(
                a.split("=")[0].lstrip("-") in _BEAM_DEPENDENCY_FLAGS for a in extra):
            # Otherwise every Beam node copies TFX's 48 MB install and builds an sdist of it for
            # remote workers (2-6 s per node, and a /tmp/tmp*/build/tfx left behind each time);
            # the DirectRunner runs in this process and needs none of it. TFX skips the packaging
            # when a dependency flag is set; the image name is never used by the DirectRunner.
            args.append(f"--sdk_container_image={DIRECT_RUNNER_IMAGE}")
        if not any(a.split("=")[0].lstrip("-") in ("runner", "update_compatibility_version") for a in extra):
            # Beam >= 2.6x's DirectRunner first tries the Prism runner, which downloads a Go binary
            # from GitHub at run time: here that fails (no internet) and leaves an empty
            # /tmp/beam-temp* per pipeline; with internet the pipeline would silently run on a
            # runner nobody tested. Beam skips Prism when this option is set; set to the installed
            # version it changes nothing else (it only matters when older than a breaking change).
            args.append(f"--update_compatibility_version={_beam_version()}")
        return args + extra

    def check(self) -> "PipelineConfig":
        """Fails fast, before any TFX import, on settings that cannot work. Returns self."""
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown distribution strategy {self.strategy!r}",
                f"use one of: {', '.join(STRATEGIES)}",
            )
        if self.beam_mode not in BEAM_MODES:
            raise ConfigError(
                f"unknown Beam direct running mode {self.beam_mode!r}",
                f"use one of: {', '.join(BEAM_MODES)}",
            )
        if not Path(self.schema_path).is_file():
            raise ConfigError(
                f"schema file {self.schema_path} does not exist",
                "restore schemas/taxi/schema.pbtxt from git or pass --schema PATH",
            )
        if not 1 <= self.window_days <= MAX_WINDOW_DAYS:
            raise ConfigError(f"window of {self.window_days} days is outside [1, {MAX_WINDOW_DAYS}]",
                              f"pass --window-days N with 1 <= N <= {MAX_WINDOW_DAYS} (1: train on this span alone)")
        if self.train_steps < 1 or self.eval_steps < 1:
            raise ConfigError(
                f"train_steps={self.train_steps} and eval_steps={self.eval_steps} must be positive",
                "pass --train-steps N and --eval-steps N with N >= 1",
            )
        if self.trainer_run_fn and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", self.trainer_run_fn):
            raise ConfigError(f"--run-fn {self.trainer_run_fn!r} is not MODULE.FUNCTION",
                              "name a function of an importable module, e.g. --run-fn my_model.run_fn")
        if not 0.0 <= self.gates.auc_floor <= 1.0:
            raise ConfigError(f"AUC floor {self.gates.auc_floor} is outside [0, 1]", "pass --auc-floor between 0 and 1")
        unknown = [name for name in self.data_gates.warn_features if name not in _schema_feature_names(self.schema_path)]
        if unknown:
            raise ConfigError(f"drift warn setting names features the schema does not have: {', '.join(unknown)}",
                              "fix [drift] warn in schemas/taxi/gates.toml")
        return self


def _schema_feature_names(schema_path: str) -> set:
    """Feature names of a schema.pbtxt, read as text (no protobuf import in the CLI process)."""
    import re

    return set(re.findall(r'^feature \{\s*\n\s*name: "([^"]+)"', Path(schema_path).read_text(), flags=re.M))


def span_fingerprint(data_root: Path, day: dt.date) -> str:
    import hashlib

    folder = span_dir(Path(data_root), day)
    digest = hashlib.sha1()
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def transform_fingerprint(schema_path: str) -> str:
    """Digest of what tf.Transform's analyzer cache depends on: the schema, the preprocessing code
    and tf.Transform's version. Read from files (no TensorFlow import)."""
    import hashlib
    import importlib.metadata

    package = Path(__file__).resolve().parent / "taxi"
    digest = hashlib.sha256()
    for path in (Path(schema_path), package / "preprocessing.py", package / "features.py"):
        digest.update(path.read_bytes() if path.is_file() else b"")
        digest.update(b"\0")
    try:
        digest.update(importlib.metadata.version("tensorflow-transform").encode())
    except importlib.metadata.PackageNotFoundError:
        pass
    return digest.hexdigest()[:16]


def beam_mode_for(data_root: Path, day: dt.date, threshold: int = MULTI_PROCESSING_BYTES) -> Tuple[str, int]:
    """(mode, workers) for `--beam-mode auto`: in-memory for a small span, multi-processing with a
    worker per core for a large one (the span's CSV bytes against `threshold`)."""
    folder = span_dir(Path(data_root), day)
    size = sum(p.stat().st_size for p in folder.glob("*.csv")) if folder.is_dir() else 0
    if size >= threshold:
        return "multi_processing", os.cpu_count() or 1
    return "in_memory", 1


def span_dir(data_root: Path, day: dt.date) -> Path:
    return data_root / day.isoformat()


def check_span_dir(data_root: Path, day: dt.date) -> Path:
    folder = span_dir(data_root, day)
    if not folder.is_dir():
        raise ConfigError(
            f"no data for span {day}: {folder} does not exist",
            "seed data with `mlops data seed` or pick a date that has a folder under data/incoming/",
        )
    if not any(folder.glob("*.csv")):
        raise ConfigError(
            f"span {day} has no CSV files in {folder}",
            "put the day's *.csv files there or pick another --date",
        )
    return folder
