"""deploy/: the production stack on paper (Docker Compose, the image, Prometheus, Alertmanager, Grafana).

There is no Docker engine here, so nothing in deploy/ is started. What can be checked offline is:
the compose file parses and names every service; everything it mounts from the repository exists;
TF Serving reads the shared model directory and its models.config; the Prometheus config passes
`promtool check config` with the repository's rules mounted as compose mounts them, and scrapes
what monitoring/stack.py's config scrapes; the Alertmanager config passes `amtool check-config`
and routes as monitoring/alertmanager.yml; no password is written in the compose file. Each check
is shown failing on a broken input beside it.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

import pytest
import yaml

from monitoring import stack
from pipelines.config import ProjectPaths
from serving.config import parse_model_config
from serving.home import model_dir
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker")
SERVICES = (*AIRFLOW_SERVICES, "postgres", "mariadb", "redis", "tf-serving", "prometheus", "alertmanager",
            "pushgateway", "grafana")
HOME_VOLUME = "mlops-home"
SECRETS_DIR = "/run/secrets/"


# ------------------------------------------------------------------------------ helpers


def load(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())


def tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} not found: `make monitoring` installs Debian's prometheus (promtool) and "
                    f"prometheus-alertmanager (amtool)")
    return path


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


def mounts(service: dict) -> List[Tuple[str, str, bool]]:
    """(source, target, read_only) of a service's volumes, short or long syntax."""
    found = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            found.append((entry.get("source", ""), entry["target"], bool(entry.get("read_only"))))
            continue
        parts = entry.split(":")
        mode = parts[2] if len(parts) > 2 else ""
        found.append((parts[0], parts[1], "ro" in mode.split(",")))
    return found


def is_bind(source: str) -> bool:
    """A path on the host (compose: starts with . / or ~), not a named volume."""
    return source.startswith((".", "/", "~"))


def environment(service: dict) -> Dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def argv(service: dict) -> List[str]:
    """entrypoint + command of a service, as a list (a string is split on whitespace)."""
    words: List[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        words += value.split() if isinstance(value, str) else [str(v) for v in value]
    return words


def flag(service: dict, name: str) -> Optional[str]:
    """The value of `--name=value` in a service's command line, else None."""
    for word in argv(service):
        if word.startswith(f"--{name}="):
            return word.split("=", 1)[1]
    return None


def bind_source(service: dict, container_path: str, base: Path = DEPLOY) -> Optional[Path]:
    """The host file behind `container_path` in a service: the bind mount that covers it."""
    for source, target, _ in sorted(mounts(service), key=lambda m: -len(m[1])):
        if is_bind(source) and (container_path == target or container_path.startswith(target.rstrip("/") + "/")):
            return (base / source).resolve() / os.path.relpath(container_path, target)
    return None


def repo_files(compose: dict, base: Path = DEPLOY) -> List[Path]:
    """Every host path the compose file needs from the repository: bind mounts and the build's
    Dockerfile and context. (Secrets are files the user writes: deploy/init-secrets.sh.)"""
    paths = []
    for service in compose["services"].values():
        paths += [(base / source).resolve() for source, _, _ in mounts(service) if is_bind(source)]
        build = service.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if build:
            context = (base / build.get("context", ".")).resolve()
            paths += [context, context / build.get("dockerfile", "Dockerfile")]
    return sorted(set(paths))


SENSITIVE_KEY = re.compile(r"(PASSWORD|PASSWD|SECRET|SECRET_KEY|FERNET_KEY|TOKEN|SQL_ALCHEMY_CONN|RESULT_BACKEND)$", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@:]*:[^\s/@]+@", re.I)
# A command-line flag that takes a password or secret (`--requirepass=x`, `--password x`); not a
# flag that names a file holding one (`--secret-file /run/secrets/x`).
PASSWORD_FLAG = re.compile(r"(?<![\w-])--?(?![\w.-]*file\b)[\w.-]*(pass|secret)[\w.-]*(=| +)\S+", re.I)


def _strings(node, path: str = "") -> Iterator[Tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif node is not None:
        yield path.lstrip("."), str(node)


def plain_passwords(compose: dict) -> List[str]:
    """Where the compose file writes a password or key in plain text: a sensitive variable with a
    value (not its *_FILE form), a URL with a password, a --password flag with a value."""
    found = []
    for name, service in (compose.get("services") or {}).items():
        for key, value in environment(service).items():
            if (SENSITIVE_KEY.search(key) and value.strip() and "RANDOM" not in key.upper()
                    and not key.upper().endswith("FILE")):
                found.append(f"services.{name}.environment.{key}")
    for where, text in _strings(compose):
        if URL_WITH_PASSWORD.search(text) or PASSWORD_FLAG.search(text):
            found.append(where)
    return sorted(set(found))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load()


@pytest.fixture(scope="module")
def airflow_env(compose) -> Dict[str, str]:
    return environment(compose["services"]["airflow-worker"])


# ------------------------------------------------------------------------------ the compose file


def test_the_compose_file_names_every_service_and_says_it_is_untested(compose):
    assert isinstance(compose, dict) and isinstance(compose.get("services"), dict)
    missing = [name for name in SERVICES if name not in compose["services"]]
    assert missing == []
    header = " ".join(line.lstrip("#").strip() for line in COMPOSE.read_text().split("\nname:", 1)[0].splitlines())
    assert "UNTESTED" in header and "no Docker engine" in header


def test_airflow_runs_celery_on_postgres_and_redis(compose, airflow_env):
    services = compose["services"]
    commands = {name: argv(services[name]) for name in AIRFLOW_SERVICES}
    assert commands["airflow-apiserver"][:2] == ["airflow", "api-server"]
    assert commands["airflow-scheduler"][:2] == ["airflow", "scheduler"]
    assert commands["airflow-dag-processor"][:2] == ["airflow", "dag-processor"]
    assert commands["airflow-worker"][:3] == ["airflow", "celery", "worker"]
    for name in AIRFLOW_SERVICES:
        env = environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis", name
        # Airflow's database: a PostgreSQL URL from a secret file (deploy/entrypoint.sh exports it).
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_FILE"].startswith(SECRETS_DIR), name
        assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in env, name
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")


def test_ml_metadata_is_the_mariadb_service_with_the_password_from_a_secret(compose, airflow_env):
    url = urlsplit(airflow_env["MLOPS_MLMD"])
    mariadb = compose["services"]["mariadb"]
    db_env = environment(mariadb)
    assert url.scheme == "mysql" and url.password is None
    assert url.hostname == "mariadb" and (url.port or 3306) == 3306
    assert url.username == db_env["MARIADB_USER"] and url.path.strip("/") == db_env["MARIADB_DATABASE"]
    # The pipeline and MariaDB read the same secret.
    assert airflow_env["MLOPS_MLMD_PASSWORD_FILE"] == db_env["MARIADB_PASSWORD_FILE"] == SECRETS_DIR + "mlmd_password"
    assert "mlmd_password" in mariadb["secrets"]


def test_every_file_the_compose_file_takes_from_the_repository_exists(compose):
    needed = repo_files(compose)
    for must in (REPO / "monitoring" / "rules", REPO / "monitoring" / "dashboards" / "nightly_mlops.json",
                 DEPLOY / "prometheus" / "prometheus.yml", DEPLOY / "alertmanager" / "alertmanager.yml",
                 DEPLOY / "grafana" / "provisioning" / "datasources", DEPLOY / "grafana" / "provisioning" / "dashboards",
                 DEPLOY / "tfserving" / "monitoring.config", DEPLOY / "Dockerfile"):
        assert must in needed, must
    assert [p for p in needed if not p.exists()] == []
    assert all(REPO == p or REPO in p.parents for p in needed)


def test_the_repository_file_check_finds_a_missing_mount(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["prometheus"]["volumes"].append("../monitoring/no-such-rules:/etc/prometheus/more:ro")
    broken["services"]["airflow-worker"]["build"] = {"context": "..", "dockerfile": "deploy/Dockerfile.missing"}
    missing = [p for p in repo_files(broken) if not p.exists()]
    assert missing == [DEPLOY / "Dockerfile.missing", REPO / "monitoring" / "no-such-rules"]


def test_no_password_is_written_in_the_compose_file(compose):
    assert plain_passwords(compose) == []
    for name in compose["secrets"]:
        assert compose["secrets"][name]["file"].startswith("./secrets/"), name


@pytest.mark.parametrize("service, key, value", [
    ("postgres", "POSTGRES_PASSWORD", "hunter2"),
    ("airflow-worker", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow@postgres/airflow"),
    ("airflow-worker", "MLOPS_MLMD_PASSWORD", "hunter2"),
    ("airflow-worker", "MLOPS_MLMD", "mysql://mlmd:hunter2@mariadb:3306/mlmd"),
    ("grafana", "GF_SECURITY_ADMIN_PASSWORD", "admin"),
    ("airflow-worker", "AIRFLOW__CORE__FERNET_KEY", "x" * 44),
])
def test_the_password_check_finds_a_password_written_inline(compose, service, key, value):
    broken = copy.deepcopy(compose)
    broken["services"][service]["environment"] = {**environment(broken["services"][service]), key: value}
    assert plain_passwords(broken) != []


def test_the_password_check_finds_one_in_a_command(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["command"] = ["redis-server", "--requirepass=hunter2", "--masterauth", "x"]
    broken["services"]["redis"]["healthcheck"]["test"] = ["CMD", "redis-cli", "--password=hunter2", "ping"]
    assert plain_passwords(broken) == ["services.redis.command[1]", "services.redis.healthcheck.test[2]"]


def test_every_secret_variable_comes_from_a_mounted_secret_the_entrypoint_exports(compose):
    handled = re.findall(r"^\s+([A-Z][A-Z0-9_]+)$", (DEPLOY / "entrypoint.sh").read_text(), flags=re.M)
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("nightly-tfx") or "${MLOPS_IMAGE" in service.get("image", ""):
            env = environment(service)
            for key, value in env.items():
                if value.startswith(SECRETS_DIR):
                    assert key.endswith("_FILE") and key[:-len("_FILE")] in handled, (name, key)
                    assert value[len(SECRETS_DIR):] in service.get("secrets", []), (name, key)
            if name in AIRFLOW_SERVICES:
                assert [key for key in handled if f"{key}_FILE" not in env] == [], name
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"], (name, secret)


# ------------------------------------------------------------------------------ secrets and the image


@pytest.fixture(scope="module")
def written_secrets(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("secrets") / "secrets"
    done = run("bash", str(DEPLOY / "init-secrets.sh"), env={**os.environ, "SECRETS_DIR": str(folder)})
    assert done.returncode == 0, done.stderr
    return folder


def test_init_secrets_writes_every_secret_compose_reads(compose, written_secrets):
    wanted = {Path(spec["file"]).name for spec in compose["secrets"].values()}
    assert {p.name for p in written_secrets.iterdir()} == wanted
    assert stat.S_IMODE(written_secrets.stat().st_mode) == 0o700
    password = (written_secrets / "postgres_password").read_text()
    assert len(password) >= 32 and "\n" not in password
    conn = urlsplit((written_secrets / "airflow_db_conn").read_text())
    assert (conn.hostname, conn.username, conn.password) == ("postgres", "airflow", password)
    backend = urlsplit((written_secrets / "airflow_celery_result_backend").read_text())
    assert backend.scheme == "db+postgresql" and backend.password == password
    import base64

    assert len(base64.urlsafe_b64decode((written_secrets / "airflow_fernet_key").read_text())) == 32
    # Nothing it writes ever appears in the compose file.
    text = COMPOSE.read_text()
    assert not any(p.read_text() in text for p in written_secrets.iterdir())


def test_init_secrets_keeps_what_exists(written_secrets):
    before = {p.name: p.read_text() for p in written_secrets.iterdir()}
    done = run("bash", str(DEPLOY / "init-secrets.sh"), env={**os.environ, "SECRETS_DIR": str(written_secrets)})
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_text() for p in written_secrets.iterdir()} == before
    assert "wrote" not in done.stdout


def test_the_entrypoint_turns_secret_files_into_variables(tmp_path):
    secret = tmp_path / "mlmd_password"
    secret.write_text("s3cret\n")
    env = {"PATH": os.environ["PATH"], "MLOPS_MLMD_PASSWORD_FILE": str(secret)}
    done = run("bash", str(DEPLOY / "entrypoint.sh"), "env", env=env)
    assert done.returncode == 0, done.stderr
    assert "MLOPS_MLMD_PASSWORD=s3cret" in done.stdout.splitlines()
    assert "MLOPS_MLMD_PASSWORD_FILE" not in done.stdout
    missing = run("bash", str(DEPLOY / "entrypoint.sh"), "env",
                  env={**env, "MLOPS_MLMD_PASSWORD_FILE": str(tmp_path / "absent")})
    assert missing.returncode == 2 and "init-secrets.sh" in missing.stderr


def test_the_dockerfile_builds_both_environments_from_the_constraints_and_says_it_is_untested():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "UNTESTED" in text.split("FROM", 1)[0]
    assert re.search(r"^FROM python:3\.10[-.\w]*$", text, flags=re.M)
    assert "python3.11 -m venv .venv-airflow" in text and "python3.10 -m venv .venv" in text
    for constraints in ("constraints/tfx-py310.txt", "constraints/airflow-py311.txt"):
        assert constraints in text and (REPO / constraints).is_file()
    pinned = re.search(r"^apache-airflow==(\S+)$", (REPO / "constraints" / "airflow-py311.txt").read_text(), re.M)
    assert f"ARG AIRFLOW_VERSION={pinned.group(1)}" in text
    for source in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert (REPO / source).exists(), source
    assert (DEPLOY / "entrypoint.sh").is_file() and "deploy/entrypoint.sh" in text


# ------------------------------------------------------------------------------ TF Serving and the shared home


def test_every_service_mounts_the_project_home_at_the_same_path(compose, airflow_env):
    home = airflow_env["MLOPS_HOME"]
    targets = {name: target for name, service in compose["services"].items()
               for source, target, _ in mounts(service) if source == HOME_VOLUME}
    for name in (*AIRFLOW_SERVICES, "airflow-init", "tf-serving"):
        assert targets.get(name) == home, name
        assert environment(compose["services"][name]).get("MLOPS_HOME", home) == home, name
    assert set(targets.values()) == {home}
    # The pipeline root and the model directory are inside it, at the same path on every worker.
    paths = ProjectPaths(Path(home))
    for path in (paths.pipeline_root, paths.serving_model_dir, paths.data_root):
        assert str(path).startswith(home + "/"), path


def test_tf_serving_reads_the_shared_model_directory_and_models_config(compose, airflow_env):
    service = compose["services"]["tf-serving"]
    home = airflow_env["MLOPS_HOME"]
    assert service["image"].startswith("tensorflow/serving:")
    assert argv(service)[0] == "tensorflow_model_server"
    assert flag(service, "port") == "8500" and flag(service, "rest_api_port") == "8501"
    assert int(flag(service, "model_config_file_poll_wait_seconds")) > 0
    config_file = flag(service, "model_config_file")
    assert config_file == f"{home}/serving/models.config"  # serving/config.py default_config_path
    home_mounts = [(target, ro) for source, target, ro in mounts(service) if source == HOME_VOLUME]
    assert home_mounts == [(home, True)]  # read-only: only the Pusher writes versions
    assert config_file.startswith(home + "/") and str(model_dir(Path(home))).startswith(home + "/")


def test_the_default_models_config_serves_the_pushers_directory(airflow_env):
    home = Path(airflow_env["MLOPS_HOME"])
    models = parse_model_config((DEPLOY / "tfserving" / "models.config").read_text(), home)
    assert [(m.name, m.base_path) for m in models] == [("taxi", model_dir(home, "taxi"))]


def test_tf_serving_exposes_prometheus_metrics_where_the_model_server_job_scrapes(compose):
    service = compose["services"]["tf-serving"]
    config = bind_source(service, flag(service, "monitoring_config_file"))
    assert config is not None and config.is_file()
    text = config.read_text()
    assert re.search(r"enable:\s*true", text)
    assert re.search(r'path:\s*"%s"' % re.escape(stack.MODEL_SERVER_METRICS_PATH), text)


# ------------------------------------------------------------------------------ Prometheus


def mirror(service: dict, root: Path, base: Path = DEPLOY) -> None:
    """Lays out a service's bind mounts under `root` as the container sees them (symlinks)."""
    for source, target, _ in mounts(service):
        if is_bind(source):
            link = root / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((base / source).resolve())


def promtool_check(service: dict, root: Path) -> Tuple[subprocess.CompletedProcess, List[str]]:
    """`promtool check config` on the service's config, mounts laid out as in the container;
    (result, names of the rule files it checked)."""
    mirror(service, root)
    done = run(tool("promtool"), "check", "config", str(root / flag(service, "config.file").lstrip("/")))
    checked = re.findall(r"^\s*Checking (\S+)\s*$", done.stdout + done.stderr, flags=re.M)
    return done, sorted(Path(p).name for p in checked if not p.endswith("prometheus.yml"))


def test_promtool_accepts_the_compose_prometheus_config_with_the_repositorys_rules(compose, tmp_path):
    done, rules = promtool_check(compose["services"]["prometheus"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rules == sorted(p.name for p in stack.rule_files())
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_check_fails_on_a_broken_config_and_counts_missing_rules(compose, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("scrape_configs:\n  - job_name: x\n    honor_labels: maybe\n")
    service = copy.deepcopy(compose["services"]["prometheus"])
    service["volumes"] = [f"{broken}:/etc/prometheus/prometheus.yml:ro"]
    done, _ = promtool_check(service, tmp_path / "a")
    assert done.returncode != 0
    # Without the rules mount the real config still parses, but loads no rule file.
    service = copy.deepcopy(compose["services"]["prometheus"])
    service["volumes"] = [v for v in service["volumes"] if "monitoring/rules" not in v]
    done, rules = promtool_check(service, tmp_path / "b")
    assert rules == []


def _jobs(config: dict) -> Dict[str, dict]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _listens_on(service: dict, port: int) -> bool:
    words = " ".join(argv(service))
    return bool(re.search(rf"(listen-address=\S*:|_port=|--port=|--port ){port}\b", words))


def test_prometheus_scrapes_what_the_embedded_stack_scrapes(compose, tmp_path):
    service = compose["services"]["prometheus"]
    config = yaml.safe_load(bind_source(service, flag(service, "config.file")).read_text())
    reference = stack.prometheus_config(tmp_path, 15, {part: 1 for part in stack.PARTS})
    ours, theirs = _jobs(config), _jobs(reference)
    assert set(ours) == set(theirs)
    for name, job in theirs.items():
        for key in ("honor_labels", "metrics_path"):
            assert ours[name].get(key) == job.get(key), (name, key)
    assert ours["pushgateway"]["honor_labels"] is True
    # Each target is a compose service listening on that port (Prometheus scrapes itself on localhost).
    services = compose["services"]
    for name, job in ours.items():
        for target in job["static_configs"][0]["targets"]:
            host, port = target.rsplit(":", 1)
            if host == "localhost":
                assert name == "prometheus" and _listens_on(service, int(port)), target
            else:
                assert host in services and _listens_on(services[host], int(port)), target
    model_server = urlsplit("//" + ours["model_server"]["static_configs"][0]["targets"][0])
    assert model_server.hostname == "tf-serving"
    assert str(model_server.port) == flag(services["tf-serving"], "rest_api_port")  # metrics: REST port, not gRPC
    alertmanager = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"][0]
    host, port = alertmanager.rsplit(":", 1)
    assert host == "alertmanager" and _listens_on(services["alertmanager"], int(port))


# ------------------------------------------------------------------------------ Alertmanager


def _alertmanager_file(compose) -> Path:
    service = compose["services"]["alertmanager"]
    return bind_source(service, flag(service, "config.file"))


def test_amtool_accepts_the_alertmanager_config_compose_uses(compose):
    path = _alertmanager_file(compose)
    assert path == DEPLOY / "alertmanager" / "alertmanager.yml"
    done = run(tool("amtool"), "check-config", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_amtool_rejects_a_route_to_an_unknown_receiver(compose, tmp_path):
    config = yaml.safe_load(_alertmanager_file(compose).read_text())
    config["route"]["routes"][0]["receiver"] = "nobody"
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config))
    assert run(tool("amtool"), "check-config", str(broken)).returncode != 0


def _webhook(config: dict) -> dict:
    [receiver] = [r for r in config["receivers"] if r["name"] == stack.WEBHOOK_RECEIVER]
    return receiver["webhook_configs"][0]


def test_the_compose_alertmanager_routes_exactly_as_the_committed_one(compose):
    ours = yaml.safe_load(_alertmanager_file(compose).read_text())
    committed = yaml.safe_load(stack.ALERTMANAGER_TEMPLATE.read_text())
    hook, theirs_hook = _webhook(ours), _webhook(committed)
    # Only the webhook's address and secret differ...
    aligned = copy.deepcopy(ours)
    _webhook(aligned)["url"] = theirs_hook["url"]
    _webhook(aligned)["http_config"]["authorization"]["credentials_file"] = \
        theirs_hook["http_config"]["authorization"]["credentials_file"]
    assert aligned == committed
    # ... and they point at the compose webhook service and the secret mounted into Alertmanager.
    url = urlsplit(hook["url"])
    webhook = compose["services"][url.hostname]
    assert url.path == stack.WEBHOOK_PATH and f"--port {url.port}" in " ".join(argv(webhook))
    secret_file = hook["http_config"]["authorization"]["credentials_file"]
    assert secret_file.startswith(SECRETS_DIR)
    secret = secret_file[len(SECRETS_DIR):]
    assert secret in compose["services"]["alertmanager"]["secrets"] and secret in webhook["secrets"]
    assert f"--secret-file {secret_file}" in " ".join(argv(webhook))


def test_the_routing_comparison_sees_a_changed_route(compose):
    ours = yaml.safe_load(_alertmanager_file(compose).read_text())
    committed = yaml.safe_load(stack.ALERTMANAGER_TEMPLATE.read_text())
    ours["route"]["routes"][1]["group_wait"] = "5m"
    _webhook(ours).update(_webhook(committed))
    assert ours != committed


# ------------------------------------------------------------------------------ Grafana


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard(compose):
    service = compose["services"]["grafana"]
    datasources = bind_source(service, "/etc/grafana/provisioning/datasources/prometheus.yml")
    assert datasources == DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    [datasource] = yaml.safe_load(datasources.read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and _listens_on(compose["services"]["prometheus"], url.port)
    providers = bind_source(service, "/etc/grafana/provisioning/dashboards/mlops.yml")
    assert providers == DEPLOY / "grafana" / "provisioning" / "dashboards" / "mlops.yml"
    [provider] = yaml.safe_load(providers.read_text())["providers"]
    assert provider["type"] == "file"
    dashboards = [target for source, target, _ in mounts(service)
                  if is_bind(source) and target.startswith(provider["options"]["path"].rstrip("/") + "/")]
    assert [bind_source(service, target) for target in dashboards] == [
        REPO / "monitoring" / "dashboards" / "nightly_mlops.json"]
    assert environment(service)["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith(SECRETS_DIR)
