"""The home's monitoring stack: Prometheus, Alertmanager, the Pushgateway and the alert webhook.

Pipeline tasks push their metrics to the Pushgateway (monitoring/metrics.py), Prometheus scrapes it,
itself, Alertmanager and the home's model server, evaluates the alert rules of monitoring/rules/,
and sends firing alerts to Alertmanager, which calls the webhook (monitoring/webhook.py) that can
trigger a rollback. `make up` starts the stack after the model server (`mlops airflow up`), `mlops
monitoring up` starts it alone. Each part is a plain background process in its own session (no
service manager here), bound to 127.0.0.1 on a free port (9090, 9093, 9091 and 9095 when free:
another home's stack, or anything else, may hold them). State, all under the home:

    var/monitoring/stack.json           URL, pid and port of every part while the stack runs (the
                                        contract: monitoring.metrics.pushgateway_url reads it)
    var/monitoring/prometheus.yml       generated Prometheus config (scrape jobs, rules, Alertmanager)
    var/monitoring/alertmanager.yml     generated from the committed monitoring/alertmanager.yml
    var/monitoring/prometheus/          Prometheus's TSDB
    var/monitoring/alertmanager/        Alertmanager's silences and notification log
    var/monitoring/pushgateway.store    the Pushgateway's persisted metrics
    var/monitoring/webhook.secret       the bearer token Alertmanager sends the webhook (mode 600)
    var/monitoring/run/<part>.pid       one pid file per part
    var/log/<part>.log                  each part's stdout and stderr

Why the flags (design.md, section 8): Debian's binaries default to system paths (/var/lib/...), so
the TSDB, Alertmanager's storage and the Pushgateway's persistence file are always given, or old
metrics and silences would come back from elsewhere; Alertmanager gossips on 0.0.0.0:9094 unless
`--cluster.listen-address=` is empty; `--web.external-url` keeps alert links on 127.0.0.1.

Layer 0 (beside serving): the standard library, yaml and the serving package's process and file
helpers only, so that the CLI and `make up` (pipelines/services.py) drive it without TensorFlow.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from monitoring.metrics import stack_file
from serving import home as home_record
from serving.errors import ConfigError
from serving.files import write_atomic
from serving.home import HOST, read_json
from serving.net import free_port, port_free
from serving.processes import live_pid, spawn_logged, stop_in_order, wait_until_ready

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "monitoring" / "rules"
ALERTMANAGER_TEMPLATE = REPO / "monitoring" / "alertmanager.yml"
WEBHOOK_RECEIVER = "rollback-webhook"  # the receiver of the committed alertmanager.yml whose URL and secret we fill in
WEBHOOK_PATH = "/alerts"
BIN_DIR = Path("/usr/bin")  # where Debian's packages (`make monitoring`) put the binaries
INTERVAL_ENV = "MLOPS_MONITORING_INTERVAL_SECONDS"
DEFAULT_INTERVAL = 15
MODEL_SERVER_REST_PORT = 8501  # the model server's default (pipelines/model_server.py) when the home has no record
MODEL_SERVER_METRICS_PATH = "/monitoring/prometheus/metrics"
START_TIMEOUT = 30.0  # each part is ready in well under a second here
STOP_TIMEOUT = 10.0

# Start order: what a part sends to comes up before it. Stop order: the webhook first, so that no
# rollback is triggered by alerts about the parts `make down` is stopping.
PARTS = ("webhook", "pushgateway", "alertmanager", "prometheus")
STOP_ORDER = ("webhook", "prometheus", "alertmanager", "pushgateway")
SHOWN = ("prometheus", "alertmanager", "pushgateway", "webhook")
TITLES = {"prometheus": "Prometheus", "alertmanager": "Alertmanager", "pushgateway": "Pushgateway",
          "webhook": "alert webhook"}
PREFERRED_PORTS = {"prometheus": 9090, "alertmanager": 9093, "pushgateway": 9091, "webhook": 9095}
BINARIES = {"prometheus": "prometheus", "alertmanager": "prometheus-alertmanager",
            "pushgateway": "prometheus-pushgateway"}
# Every binary `make monitoring` installs; the checkers validate the generated configs before a start.
REQUIRED_BINARIES = ("prometheus", "promtool", "prometheus-alertmanager", "amtool", "prometheus-pushgateway")


@dataclasses.dataclass(frozen=True)
class StackSettings:
    """How to run the stack for one home. `interval_seconds`: scrape and rule evaluation interval (the
    tests use 1); `auto_rollback`: whether the webhook may trigger the rollback DAG by itself; None
    keeps what a running webhook does (`make up` again leaves it alone) and is off for a new one."""

    home: Path
    interval_seconds: int = DEFAULT_INTERVAL
    auto_rollback: Optional[bool] = None
    bin_dir: Path = BIN_DIR
    python: Path = Path(sys.executable)  # runs the webhook: .venv's, which has this project installed

    @classmethod
    def from_env(cls, home: Path, auto_rollback: Optional[bool] = None, interval_seconds: Optional[int] = None,
                 ) -> "StackSettings":
        """`interval_seconds` if given, else $MLOPS_MONITORING_INTERVAL_SECONDS, else 15."""
        raw = interval_seconds if interval_seconds is not None else os.environ.get(INTERVAL_ENV) or DEFAULT_INTERVAL
        try:
            interval = int(raw)
        except ValueError:
            interval = 0
        if interval < 1:
            raise ConfigError(f"the monitoring interval {raw!r} is not a whole number of seconds >= 1",
                              f"set {INTERVAL_ENV} (or --interval-seconds) to e.g. 15")
        return cls(home=Path(home).resolve(), interval_seconds=interval, auto_rollback=auto_rollback)


@dataclasses.dataclass(frozen=True)
class PartStatus:
    name: str
    pid: Optional[int]
    port: Optional[int]
    ready: bool
    log: Path

    @property
    def url(self) -> Optional[str]:
        return f"http://{HOST}:{self.port}" if self.port else None


# ----------------------------------------------------------------------------------- paths


def monitoring_dir(home: Path) -> Path:
    return stack_file(home).parent


def pid_file(home: Path, part: str) -> Path:
    return monitoring_dir(home) / "run" / f"{part}.pid"


def log_file(home: Path, part: str) -> Path:
    return Path(home) / "var" / "log" / f"{part}.log"


def config_file(home: Path, part: str) -> Path:
    """The generated config of `prometheus` or `alertmanager`."""
    return monitoring_dir(home) / f"{part}.yml"


def secret_file(home: Path) -> Path:
    return monitoring_dir(home) / "webhook.secret"


def tsdb_dir(home: Path) -> Path:
    return monitoring_dir(home) / "prometheus"


def alertmanager_dir(home: Path) -> Path:
    return monitoring_dir(home) / "alertmanager"


def pushgateway_file(home: Path) -> Path:
    return monitoring_dir(home) / "pushgateway.store"


# ----------------------------------------------------------------------------------- configs


def rule_files() -> List[Path]:
    """The alert and recording rules Prometheus loads: monitoring/rules/*.yml, without promtool's rule
    test files (`*_test.yml`), which are not rule files."""
    return sorted(p.resolve() for p in RULES_DIR.glob("*.yml") if not p.name.endswith("_test.yml"))


def model_server_rest_port(home: Path) -> int:
    """The REST port of the home's model server record (it serves /monitoring/prometheus/metrics there),
    else the default: the job exists either way, so that an alert on `up{job="model_server"}` fires."""
    return int(read_json(home_record.state_file(home)).get("rest_port") or MODEL_SERVER_REST_PORT)


def prometheus_config(home: Path, interval: int, ports: Dict[str, int]) -> dict:
    every = f"{interval}s"

    def job(name: str, port: int, **extra) -> dict:
        return {"job_name": name, "static_configs": [{"targets": [f"{HOST}:{port}"]}], **extra}

    return {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "rule_files": [str(path) for path in rule_files()],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [
            job("prometheus", ports["prometheus"]),
            job("alertmanager", ports["alertmanager"]),
            # The pushed `job` label is the pipeline's (mlops_node, mlops_run, ...), not "pushgateway".
            job("pushgateway", ports["pushgateway"], honor_labels=True),
            job("model_server", model_server_rest_port(home), metrics_path=MODEL_SERVER_METRICS_PATH),
        ],
    }


# Used when monitoring/alertmanager.yml is not there: every alert to the webhook.
FALLBACK_ALERTMANAGER = {
    "route": {"receiver": WEBHOOK_RECEIVER, "group_by": ["alertname"]},
    "receivers": [{"name": WEBHOOK_RECEIVER, "webhook_configs": [{"url": "", "send_resolved": True}]}],
}


def alertmanager_config(home: Path, interval: int, webhook_port: int, template: Path = ALERTMANAGER_TEMPLATE) -> dict:
    """The committed Alertmanager config with the webhook's URL and secret file of this home; with a
    short interval (the tests) every route groups and sends within about a second."""
    config = yaml.safe_load(template.read_text()) if template.is_file() else copy.deepcopy(FALLBACK_ALERTMANAGER)
    receivers = [r for r in (config or {}).get("receivers") or [] if r.get("name") == WEBHOOK_RECEIVER]
    hooks = receivers[0].get("webhook_configs") if receivers else None
    if not hooks:
        raise ConfigError(f"{template} has no receiver {WEBHOOK_RECEIVER!r} with a webhook_configs entry",
                          "add it: the stack points its url at the home's webhook and its credentials_file at "
                          "the home's secret")
    hooks[0]["url"] = f"http://{HOST}:{webhook_port}{WEBHOOK_PATH}"
    http_config = hooks[0].setdefault("http_config", {})
    http_config.setdefault("authorization", {})["credentials_file"] = str(secret_file(home))
    if interval <= 2:
        _shorten_timings(config["route"], root=True)
    return config


# With scrape and evaluation every 1-2 s, an alert reaches the webhook in a few seconds (design.md, section 8).
SHORT_TIMINGS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"}


def _shorten_timings(route: dict, root: bool) -> None:
    """The root route gets every short timing; a child route only those it sets (the others it inherits).
    A timing already shorter stays (the rollback route's `group_wait: 0s`)."""
    for key, value in SHORT_TIMINGS.items():
        if (root or key in route) and (key not in route or _seconds(route[key]) > _seconds(value)):
            route[key] = value
    for child in route.get("routes") or []:
        _shorten_timings(child, root=False)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _seconds(duration) -> float:
    """A Prometheus/Alertmanager duration ("0s", "30s", "1h30m") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", str(duration))
    if not parts or "".join(n + u for n, u in parts) != str(duration).strip():
        raise ConfigError(f"{duration!r} is not a duration", "write it like 30s, 5m or 1h30m")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _write_config(path: Path, config: dict) -> None:
    text = "# Generated by monitoring/stack.py at every start; edits are overwritten.\n" + yaml.safe_dump(
        config, sort_keys=False, default_flow_style=False)
    write_atomic(path, text.encode())


def check_config(settings: StackSettings, part: str) -> None:
    """`promtool check config` / `amtool check-config` on the generated file."""
    tool = ["promtool", "check", "config"] if part == "prometheus" else ["amtool", "check-config"]
    path = config_file(settings.home, part)
    result = subprocess.run([str(settings.bin_dir / tool[0]), *tool[1:], str(path)], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        source = (RULES_DIR if part == "prometheus" else ALERTMANAGER_TEMPLATE)
        raise ConfigError(f"`{' '.join(tool)}` rejects the generated {path}:\n{(result.stdout + result.stderr).strip()}",
                          f"fix {source} (the file named above), then start again")


# ----------------------------------------------------------------------------------- processes


def check_binaries(settings: StackSettings) -> None:
    missing = [name for name in REQUIRED_BINARIES if not os.access(settings.bin_dir / name, os.X_OK)]
    if missing:
        raise ConfigError(f"{', '.join(str(settings.bin_dir / name) for name in missing)} not installed",
                          "`make monitoring` installs Debian's prometheus, prometheus-alertmanager and "
                          "prometheus-pushgateway (`make up` and `make test` do it too)")
    if not os.access(settings.python, os.X_OK):
        raise ConfigError(f"no Python at {settings.python} to run the webhook", "`make venvs`")


def marker(home: Path, part: str) -> bytes:
    """An argument only this home's `part` has: a pid file naming another process is not ours."""
    if part == "webhook":
        return b"\0--secret-file\0" + str(secret_file(home)).encode() + b"\0"
    if part == "pushgateway":
        return f"--persistence.file={pushgateway_file(home)}\0".encode()
    return f"--config.file={config_file(home, part)}\0".encode()


def running_pid(home: Path, part: str) -> Optional[int]:
    """The pid of this home's `part` if it runs; removes a stale pid file."""
    return live_pid(pid_file(home, part), marker(home, part))


def _arguments(pid: int) -> List[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def running_port(pid: int) -> Optional[int]:
    """The port a part listens on, from its command line (the one source: nothing to go stale)."""
    args = _arguments(pid)
    for index, arg in enumerate(args):
        if arg.startswith(b"--web.listen-address="):
            return int(arg.rsplit(b":", 1)[1])
        if arg == b"--port" and index + 1 < len(args):
            return int(args[index + 1])
    return None


def command(settings: StackSettings, part: str, port: int) -> List[str]:
    home = settings.home
    listen = [f"--web.listen-address={HOST}:{port}", f"--web.external-url=http://{HOST}:{port}/"]
    if part == "prometheus":
        return [str(settings.bin_dir / BINARIES[part]), f"--config.file={config_file(home, part)}",
                f"--storage.tsdb.path={tsdb_dir(home)}", *listen, "--web.enable-lifecycle"]
    if part == "alertmanager":
        return [str(settings.bin_dir / BINARIES[part]), f"--config.file={config_file(home, part)}",
                f"--storage.path={alertmanager_dir(home)}", *listen, "--cluster.listen-address="]
    if part == "pushgateway":
        # Written at most one interval after a push (and at exit), not after Debian's default 5 minutes.
        return [str(settings.bin_dir / BINARIES[part]), *listen, f"--persistence.file={pushgateway_file(home)}",
                f"--persistence.interval={settings.interval_seconds}s"]
    return [str(settings.python), "-m", "monitoring.webhook", "--host", HOST, "--port", str(port),
            "--secret-file", str(secret_file(home)), "--home", str(home),
            *(["--auto-rollback"] if settings.auto_rollback else [])]


def choose_ports(running: Dict[str, Optional[int]], previous: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """A running part keeps its port; the others get `previous` (a part restarted now) or their usual
    one when free, else any free one."""
    ports: Dict[str, int] = {}
    for part in PARTS:
        port = running_port(running[part]) if running[part] else None
        if port is None:
            preferred = (previous or {}).get(part) or PREFERRED_PORTS[part]
            taken = set(ports.values())
            port = preferred if preferred not in taken and port_free(preferred) else free_port()
            while port in taken:
                port = free_port()
        ports[part] = port
    return ports


def ensure_secret(home: Path) -> Path:
    """The webhook's shared secret, generated once (mode 600), kept across restarts."""
    path = secret_file(home)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another start made it meanwhile: keep that one
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(32))
    return path


def _spawn(settings: StackSettings, part: str, port: int) -> int:
    pid = spawn_logged(command(settings, part, port), log_file(settings.home, part), f"monitoring stack: {part}",
                       settings.home, dict(os.environ, PYTHONUNBUFFERED="1"))
    write_atomic(pid_file(settings.home, part), f"{pid}\n".encode())
    return pid


def _status_code(url: str, method: str = "GET", timeout: float = 1.0) -> int:
    """The HTTP status `url` answers with; 0 when nothing answers."""
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return 0


def ready(port: Optional[int]) -> bool:
    return bool(port) and _status_code(f"http://{HOST}:{port}/-/ready") == 200


def wait_ready(home: Path, pids: Dict[str, int], ports: Dict[str, int], timeout: float = START_TIMEOUT) -> None:
    """Until each part answers /-/ready with 200; a part that exits or stays unready is an error naming its log."""
    wait_until_ready(pids, lambda part: ready(ports[part]), lambda part: log_file(home, part), TITLES.get,
                     lambda part: f"http://{HOST}:{ports[part]}/-/ready", timeout)


# ----------------------------------------------------------------------------------- commands


def _settle_auto_rollback(settings: StackSettings, running: Dict[str, Optional[int]], emit: Callable[[str], None]):
    """(settings with auto_rollback decided, {"webhook": its port} when it was stopped to switch it).

    None keeps what the running webhook does; a switch restarts the webhook alone, on its port."""
    webhook = running["webhook"]
    running_auto = bool(webhook) and b"--auto-rollback" in _arguments(webhook)
    if settings.auto_rollback is None:
        return dataclasses.replace(settings, auto_rollback=running_auto), {}
    if not webhook or running_auto == settings.auto_rollback:
        return settings, {}
    emit(f"restarting the alert webhook: automatic rollback {'on' if settings.auto_rollback else 'off'}")
    port = running_port(webhook) or 0
    _stop_pids(settings.home, {"webhook": webhook}, STOP_TIMEOUT, lambda _: None)
    running["webhook"] = None
    return settings, {"webhook": port}


def start(settings: StackSettings, emit: Callable[[str], None] = print, timeout: float = START_TIMEOUT) -> dict:
    """Starts whatever part of the stack is not running (idempotent) and returns stack.json's record."""
    home = settings.home
    check_binaries(settings)
    for directory in (pid_file(home, "prometheus").parent, tsdb_dir(home), alertmanager_dir(home)):
        directory.mkdir(parents=True, exist_ok=True)
    ensure_secret(home)
    running = {part: running_pid(home, part) for part in PARTS}
    settings, restarted = _settle_auto_rollback(settings, running, emit)
    ports = choose_ports(running, previous=restarted)
    _write_config(config_file(home, "prometheus"), prometheus_config(home, settings.interval_seconds, ports))
    _write_config(config_file(home, "alertmanager"),
                  alertmanager_config(home, settings.interval_seconds, ports["webhook"]))
    for part in ("prometheus", "alertmanager"):  # the rule files too: they may have changed, the config not
        check_config(settings, part)
    started: Dict[str, int] = {}
    try:
        for part in PARTS:
            if not running[part]:
                started[part] = _spawn(settings, part, ports[part])
        wait_ready(home, started, ports, timeout)
    except BaseException:
        _stop_pids(home, started, STOP_TIMEOUT, lambda _: None)
        raise
    for part in ("prometheus", "alertmanager"):  # a part that was running rereads its config and rules
        if running[part] and _status_code(f"http://{HOST}:{ports[part]}/-/reload", "POST") != 200:
            emit(f"warning: {TITLES[part]} did not reload {config_file(home, part)}; `mlops monitoring down` and up "
                 "again applies it")
    pids = {part: running[part] or started[part] for part in PARTS}
    record = {part: {"url": f"http://{HOST}:{ports[part]}", "pid": pids[part], "port": ports[part],
                     "log": str(log_file(home, part))} for part in SHOWN}
    record.update(interval_seconds=settings.interval_seconds, auto_rollback=settings.auto_rollback,
                  home=str(home), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_atomic(stack_file(home), (json.dumps(record, indent=2) + "\n").encode())
    if not started:
        emit(f"the monitoring stack was already running for {home}")
    return record


def describe(record: dict) -> List[str]:
    """Where each UI is, for `make up` and `mlops monitoring up`."""
    def url(part: str) -> str:
        return record[part]["url"]

    rollback = ("on: a firing rollback alert triggers the model_rollback DAG" if record.get("auto_rollback")
                else "off; `make up AUTO_ROLLBACK=1` turns it on")
    return [
        f"Prometheus:    {url('prometheus')}/  (alerts: {url('prometheus')}/alerts, targets: "
        f"{url('prometheus')}/targets; every {record.get('interval_seconds')}s)",
        f"Alertmanager:  {url('alertmanager')}/",
        f"Pushgateway:   {url('pushgateway')}/  (pipeline metrics: MLOPS_PUSHGATEWAY_URL overrides it)",
        f"alert webhook: {url('webhook')}{WEBHOOK_PATH}  (automatic rollback {rollback})",
        f"  logs: {log_file(Path(record.get('home', '.')), 'prometheus').parent}/{{{','.join(SHOWN)}}}.log",
    ]


def status(home: Path) -> List[PartStatus]:
    """Each part: pid when it runs, its port and whether it answers /-/ready."""
    home = Path(home).resolve()
    parts = []
    for part in SHOWN:
        pid = running_pid(home, part)
        port = running_port(pid) if pid else None
        parts.append(PartStatus(part, pid, port, ready(port), log_file(home, part)))
    return parts


def status_lines(parts: List[PartStatus]) -> List[str]:
    lines = []
    for part in parts:
        state = (f"running (pid {part.pid}), {part.url}/, {'ready' if part.ready else 'NOT ready'}" if part.pid
                 else "stopped")
        lines.append(f"{part.name:14} {state:54} log: {part.log}")
    return lines


def _stop_pids(home: Path, pids: Dict[str, int], timeout: float, emit: Callable[[str], None]) -> None:
    """SIGTERM, then SIGKILL of the part's whole session after `timeout`; removes the pid files."""
    for part, forced in stop_in_order(pids, list(STOP_ORDER), timeout, poll=0.05).items():
        with contextlib.suppress(OSError):
            pid_file(home, part).unlink()
        emit(f"stopped {part} (pid {pids[part]}){f' with SIGKILL after {timeout:.0f}s' if forced else ''}")


def stop(home: Path, emit: Callable[[str], None] = print, timeout: float = STOP_TIMEOUT) -> List[str]:
    """Stops every running part (the webhook first) and removes stack.json; the parts it stopped."""
    home = Path(home).resolve()
    pids = {part: pid for part in PARTS if (pid := running_pid(home, part))}
    _stop_pids(home, pids, timeout, emit)
    with contextlib.suppress(OSError):
        stack_file(home).unlink()
    if not pids:
        emit(f"the monitoring stack is not running for {home}")
    return [part for part in STOP_ORDER if part in pids]
