"""The home's database servers: MariaDB (ML Metadata), PostgreSQL 15 (Airflow's database) and Redis
(Celery's broker), Debian's binaries run as plain background processes.

`make up BACKEND=postgres` (`mlops airflow up --backend postgres`, pipelines/services.py) starts them
before Airflow; `make down` stops them after it. Like the monitoring stack (monitoring/stack.py) each
is a process in its own session, bound to 127.0.0.1, with every path given on its command line or in
a generated config, because Debian builds system paths in (/var/run/mysqld, /etc/mysql,
/etc/postgresql, /var/lib/redis) and another server may already use those. State, all under the home:

    var/db/servers.json                  port, pid and start time of each server (a stopped one: its last port)
    var/db/<server>/data/                its data directory (Redis: its working directory)
    var/db/<server>/<server>.pid         its pid
    var/db/<server>/<server>.log         its stdout and stderr
    var/db/mariadb/mariadb.sock          MariaDB's socket (a short path under /tmp when this one is too long)
    var/db/postgresql/run/               PostgreSQL's socket directory (none when the path is too long)
    var/db/redis/redis.conf              Redis's generated config (mode 600: it holds the password)
    var/db/<server>/<user>.password      generated once, mode 600, never printed or logged

Ports: not the usual 3306/5432/6379, which a Debian host's own services take when they start; a
server keeps the port it had last time while that port is free, else gets any free one.

Accounts: MariaDB's `root@localhost` (socket only) and `mlmd` (database `mlmd`, from 127.0.0.1 and
the socket), both with a password, no anonymous or other root accounts; PostgreSQL's superuser
`postgres` and `airflow` (owner of database `airflow`), password (SCRAM) logins only; Redis with
`requirepass`.

Running as root (the containers here): mariadbd runs with `--user=root`; postgres refuses root, so it
and initdb run as the `postgres` user Debian's package creates (else `nobody`) through `setpriv`, and
its data and socket directories belong to that user. When a directory above the home is closed to
that user (pytest's 0700 temporary directories, /root), it also keeps CAP_DAC_READ_SEARCH (to reach
its data directory); only then.

Standard library only, plus the serving package's process and file helpers: `make up` drives it
from the TFX environment without importing TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

from serving.errors import ConfigError
from serving.files import tail, write_atomic
from serving.home import HOST, read_json
from serving.net import free_port, port_free
from serving.processes import live_pid, pid_alive, spawn_logged, wait_until_ready

SERVERS = ("mariadb", "postgresql", "redis")
TITLES = {"mariadb": "MariaDB", "postgresql": "PostgreSQL", "redis": "Redis"}
PG_BIN = Path("/usr/lib/postgresql/15/bin")
BINARIES = {"mariadb": ["/usr/sbin/mariadbd", "/usr/bin/mariadb-install-db"],
            "postgresql": [str(PG_BIN / name) for name in ("initdb", "postgres", "pg_isready")] + ["/usr/bin/psql"],
            "redis": ["/usr/bin/redis-server"]}
# The database and login each server is there for.
MLMD_DATABASE = MLMD_USER = "mlmd"
AIRFLOW_DATABASE = AIRFLOW_USER = "airflow"
PG_SUPERUSER = "postgres"
MARIADB_ROOT = "root"
REDIS_USER = "default"
# Who runs postgres when we are root: Debian's `postgres` user, else `nobody`.
PG_RUN_AS = ("postgres", "nobody")
START_TIMEOUT = 60.0  # each is ready in about a second here; a first start initialises its data too
STOP_TIMEOUT = 30.0
# PostgreSQL's SIGTERM waits for every client to disconnect; SIGINT is its "fast" shutdown.
STOP_SIGNALS = {"mariadb": signal.SIGTERM, "postgresql": signal.SIGINT, "redis": signal.SIGTERM}
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    name: str
    pid: Optional[int]
    port: Optional[int]
    ready: bool
    log: Path


# ----------------------------------------------------------------------------------- paths


def db_dir(home: Path) -> Path:
    return Path(home) / "var" / "db"


def state_file(home: Path) -> Path:
    return db_dir(home) / "servers.json"


def server_dir(home: Path, name: str) -> Path:
    return db_dir(home) / name


def data_dir(home: Path, name: str) -> Path:
    return server_dir(home, name) / "data"


def pid_file(home: Path, name: str) -> Path:
    return server_dir(home, name) / f"{name}.pid"


def log_file(home: Path, name: str) -> Path:
    return server_dir(home, name) / f"{name}.log"


def password_file(home: Path, name: str, user: str) -> Path:
    return server_dir(home, name) / f"{user}.password"


def redis_config(home: Path) -> Path:
    return server_dir(home, "redis") / "redis.conf"


def mariadb_socket(home: Path) -> Path:
    """var/db/mariadb/mariadb.sock, or a short path under /tmp when that one is too long for a socket."""
    path = server_dir(home, "mariadb").resolve() / "mariadb.sock"
    if len(str(path)) <= SOCKET_PATH_MAX:
        return path
    key = hashlib.sha1(str(Path(home).resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"mlops-db-{os.getuid()}" / f"{key}-mariadb.sock"


def pg_socket_dir(home: Path) -> Optional[Path]:
    """PostgreSQL's socket directory; None (TCP only) when its socket path would be too long."""
    path = server_dir(home, "postgresql").resolve() / "run"
    return path if len(str(path)) + len("/.s.PGSQL.65535") <= SOCKET_PATH_MAX else None


# ----------------------------------------------------------------------------------- secrets


def password(home: Path, name: str, user: str) -> str:
    """The password of `user` on `name`: generated once, kept in a mode-600 file."""
    path = password_file(home, name, user)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another start made it meanwhile: keep that one
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as out:
                out.write(secrets.token_urlsafe(24))  # URL- and SQL-safe: [A-Za-z0-9_-]
    return path.read_text().strip()


# ----------------------------------------------------------------------------------- records


def read_state(home: Path) -> dict:
    return read_json(state_file(home))


def _write_state(home: Path, state: dict) -> None:
    db_dir(home).mkdir(parents=True, exist_ok=True)
    write_atomic(state_file(home), (json.dumps(state, indent=2) + "\n").encode())


def marker(home: Path, name: str) -> bytes:
    """What only this home's server has on its command line (Redis rewrites its title to name the config)."""
    if name == "redis":
        return str(redis_config(home).resolve()).encode()
    if name == "postgresql":
        return b"\0-D\0" + str(data_dir(home, name).resolve()).encode() + b"\0"
    return f"--datadir={data_dir(home, name).resolve()}\0".encode()


def running_pid(home: Path, name: str) -> Optional[int]:
    """The pid of this home's `name` if it runs; removes a stale pid file."""
    return live_pid(pid_file(home, name), marker(home, name))


def running_port(home: Path, name: str) -> Optional[int]:
    port = (read_state(home).get(name) or {}).get("port")
    return int(port) if port and running_pid(home, name) else None


# ----------------------------------------------------------------------------------- running as root


def _pg_user() -> Optional[pwd.struct_passwd]:
    """The user postgres runs as: None when we are not root (it runs as us)."""
    if os.geteuid() != 0:
        return None
    for name in PG_RUN_AS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ConfigError("running as root, and there is no `postgres` or `nobody` user to run PostgreSQL as",
                      "create one (`useradd --system postgres`), or run as another user")


def _as_pg_user(home: Path, command: List[str]) -> List[str]:
    user = _pg_user()
    if user is None:
        return command
    drop = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
    reach = subprocess.run([*drop, "test", "-x", str(data_dir(home, "postgresql").resolve())],
                           capture_output=True).returncode == 0
    if not reach:  # a directory above the home is closed to that user
        drop += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [*drop, *command]


def _give_to_pg_user(*paths: Path) -> None:
    user = _pg_user()
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o700)
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)


# ----------------------------------------------------------------------------------- first start


def _run(command: List[str], what: str, home: Path, name: str, stdin: str = "",
         env: Optional[Dict[str, str]] = None) -> None:
    """Runs a set-up step, its output appended to the server's log; an error names the log."""
    log = log_file(home, name)
    with open(log, "ab") as out:
        out.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} {what} =====\n".encode())
        out.flush()
        result = subprocess.run(command, input=stdin.encode(), stdout=out, stderr=subprocess.STDOUT,
                                cwd=str(server_dir(home, name)), env=env, timeout=START_TIMEOUT)
    if result.returncode != 0:
        raise ConfigError(f"{what} failed (exit {result.returncode}); last lines of {log}:\n{tail(log)}",
                          f"fix the cause above; to start {TITLES[name]} from nothing, remove {server_dir(home, name)}")


def _root_flag() -> List[str]:
    return ["--user=root"] if os.geteuid() == 0 else []


def _init_mariadb(home: Path) -> None:
    """mariadb-install-db, then (still offline) passwords for root and the `mlmd` user and its database."""
    data = data_dir(home, "mariadb")
    done = server_dir(home, "mariadb") / ".initialised"
    if done.exists():
        return
    shutil.rmtree(data, ignore_errors=True)  # a half-made data directory from a failed first start
    _run(["/usr/bin/mariadb-install-db", "--no-defaults", f"--datadir={data.resolve()}", "--skip-test-db",
          "--auth-root-authentication-method=normal", "--skip-name-resolve", *_root_flag()],
         "mariadb-install-db", home, "mariadb")
    root, mlmd = password(home, "mariadb", MARIADB_ROOT), password(home, "mariadb", MLMD_USER)
    sql = "\n".join([
        # Only root@localhost (socket) stays: install-db also makes root@127.0.0.1, @::1 and @<hostname>.
        "DELETE FROM mysql.global_priv WHERE Host <> 'localhost' OR User = '';",
        "FLUSH PRIVILEGES;",  # loads the grant tables, which bootstrap mode starts without
        f"ALTER USER '{MARIADB_ROOT}'@'localhost' IDENTIFIED BY '{root}';",
        f"CREATE DATABASE IF NOT EXISTS `{MLMD_DATABASE}`;",
        *[statement for host in ("127.0.0.1", "localhost") for statement in (
            f"CREATE USER IF NOT EXISTS '{MLMD_USER}'@'{host}' IDENTIFIED BY '{mlmd}';",
            f"GRANT ALL PRIVILEGES ON `{MLMD_DATABASE}`.* TO '{MLMD_USER}'@'{host}';")],
    ]) + "\n"
    _run(["/usr/sbin/mariadbd", "--no-defaults", "--bootstrap", f"--datadir={data.resolve()}", "--skip-networking",
          *_root_flag()], "mariadbd --bootstrap (accounts and database)", home, "mariadb", stdin=sql)
    done.write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def _init_postgresql(home: Path) -> None:
    """initdb with the superuser's password (SCRAM for every login), as the user postgres runs as."""
    data = data_dir(home, "postgresql")
    if (data / "PG_VERSION").exists():
        return
    shutil.rmtree(data, ignore_errors=True)
    run = server_dir(home, "postgresql") / "run"
    _give_to_pg_user(data, run)
    # initdb reads the password from a file that user can read: a copy, removed right after.
    pwfile = run / "initdb.pw"
    _write_private(pwfile, password(home, "postgresql", PG_SUPERUSER) + "\n")
    if (user := _pg_user()) is not None:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        _run(_as_pg_user(home, [str(PG_BIN / "initdb"), "-D", str(data.resolve()), "-U", PG_SUPERUSER,
                                f"--pwfile={pwfile.resolve()}", "--auth=scram-sha-256", "--encoding=UTF8",
                                "--locale=C.UTF-8"]), "initdb", home, "postgresql")
    finally:
        pwfile.unlink(missing_ok=True)


def _provision_postgresql(home: Path, port: int) -> None:
    """Role and database `airflow` (idempotent), through psql as the superuser; the SQL goes on stdin."""
    secret = password(home, "postgresql", AIRFLOW_USER)
    sql = "\n".join([
        "SET log_statement = 'none';",
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{AIRFLOW_USER}') THEN "
        f"CREATE ROLE {AIRFLOW_USER} LOGIN PASSWORD '{secret}'; END IF; END $$;",
        f"SELECT 'CREATE DATABASE {AIRFLOW_DATABASE} OWNER {AIRFLOW_USER}' WHERE NOT EXISTS "
        f"(SELECT FROM pg_database WHERE datname = '{AIRFLOW_DATABASE}')\\gexec",
    ]) + "\n"
    env = dict(os.environ, PGPASSWORD=password(home, "postgresql", PG_SUPERUSER), PGCONNECT_TIMEOUT="10")
    _run(["/usr/bin/psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(port), "-U", PG_SUPERUSER,
          "-d", "postgres", "-f", "-"], f"psql: role and database {AIRFLOW_DATABASE}", home, "postgresql",
         stdin=sql, env=env)


def _write_redis_config(home: Path, port: int) -> None:
    directory = data_dir(home, "redis")
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Generated by pipelines/db_servers.py at every start; edits are overwritten.",
        f"bind {HOST}", f"port {port}", "protected-mode yes", "daemonize no",
        f"dir {directory.resolve()}", f"pidfile {pid_file(home, 'redis').resolve()}", 'logfile ""',
        f"requirepass {password(home, 'redis', REDIS_USER)}",
        'save ""', "appendonly no",  # a broker's queue: Airflow requeues what a restart loses
        # The process title names this config: how a pid file is known to be this home's Redis.
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
    ]
    _write_private(redis_config(home), "\n".join(lines) + "\n")


def _write_private(path: Path, text: str) -> None:
    """Writes a file only its owner may read (it holds a password), whatever was there before."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


# ----------------------------------------------------------------------------------- processes


def command(home: Path, name: str, port: int) -> List[str]:
    if name == "mariadb":
        return ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data_dir(home, name).resolve()}",
                f"--socket={mariadb_socket(home)}", f"--pid-file={pid_file(home, name).resolve()}",
                f"--port={port}", f"--bind-address={HOST}", "--skip-name-resolve",
                # The readiness probe reads the handshake and hangs up: that must never block 127.0.0.1.
                "--max-connect-errors=4294967295", *_root_flag()]
    if name == "postgresql":
        sockets = pg_socket_dir(home)
        return _as_pg_user(home, [str(PG_BIN / "postgres"), "-D", str(data_dir(home, name).resolve()), "-p", str(port),
                                  "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={sockets or ''}",
                                  "-c", "max_connections=200"])
    return ["/usr/bin/redis-server", str(redis_config(home).resolve())]


def check_binaries(names=SERVERS) -> None:
    missing = [path for name in names for path in BINARIES[name] if not os.access(path, os.X_OK)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not installed",
                          "`make servers` installs Debian's mariadb-server, postgresql and redis-server "
                          "(`make up` and `make test` do it too)")


def _answers(name: str, port: int, home: Path) -> bool:
    """Does the server take a login now? MariaDB: its handshake packet; PostgreSQL: pg_isready; Redis: PONG."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            if name == "mariadb":
                packet = sock.recv(5)
                return len(packet) == 5 and packet[4] == 10  # protocol version 10, not an error packet (0xff)
            if name == "redis":
                secret = password(home, "redis", REDIS_USER)
                sock.sendall(f"AUTH {secret}\r\nPING\r\n".encode())
                answer = b""
                while b"PONG" not in answer and len(answer) < 200 and not answer.startswith(b"-"):
                    chunk = sock.recv(200)
                    if not chunk:
                        break
                    answer += chunk
                return b"+PONG" in answer
    except OSError:
        return False
    result = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", HOST, "-p", str(port), "-t", "2"])
    return result.returncode == 0


def _choose_port(previous: Optional[int], taken: set) -> int:
    if previous and previous not in taken and port_free(previous):
        return previous
    port = free_port()
    while port in taken:
        port = free_port()
    return port


def _prepare(home: Path, name: str, port: int) -> None:
    server_dir(home, name).mkdir(parents=True, exist_ok=True)
    server_dir(home, name).chmod(0o700 if name != "postgresql" or _pg_user() is None else 0o711)
    if name == "mariadb":
        _init_mariadb(home)
        mariadb_socket(home).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif name == "postgresql":
        _init_postgresql(home)
        if pg_socket_dir(home):
            _give_to_pg_user(pg_socket_dir(home))
    else:
        _write_redis_config(home, port)


def _wait_ready(home: Path, started: Dict[str, int], ports: Dict[str, int], since: Dict[str, float],
                timeout: float) -> Dict[str, float]:
    """Until each started server answers; the seconds each took `since` its start began (its first
    start: with initialising its data). An exit or a timeout names the log."""
    answered = wait_until_ready(started, lambda name: _answers(name, ports[name], home),
                                lambda name: log_file(home, name), TITLES.get,
                                lambda name: f"on {HOST}:{ports[name]}", timeout)
    return {name: at - since[name] for name, at in answered.items()}


def start(home: Path, emit: Callable[[str], None] = print, names=SERVERS, timeout: float = START_TIMEOUT) -> dict:
    """Starts whichever of `names` is not running (a running one is reused), waits until each answers,
    and returns servers.json's record: {name: {port, pid, log, started_at, seconds}}."""
    home = Path(home).resolve()
    check_binaries(names)
    state = read_state(home)
    running = {name: running_pid(home, name) for name in names}
    ports: Dict[str, int] = {}
    for name in names:
        recorded = (state.get(name) or {}).get("port")
        ports[name] = int(recorded) if running[name] and recorded else _choose_port(recorded, set(ports.values()))
    started: Dict[str, int] = {}
    since: Dict[str, float] = {}
    try:
        for name in names:
            if running[name]:
                continue
            since[name] = time.monotonic()
            _prepare(home, name, ports[name])
            started[name] = spawn_logged(command(home, name, ports[name]), log_file(home, name),
                                         f"mlops: {TITLES[name]} on {HOST}:{ports[name]}", server_dir(home, name),
                                         dict(os.environ))
            write_atomic(pid_file(home, name), f"{started[name]}\n".encode())
        seconds = _wait_ready(home, started, ports, since, timeout)
        if "postgresql" in started:
            _provision_postgresql(home, ports["postgresql"])
    except BaseException:
        _stop_pids(home, started, STOP_TIMEOUT)
        raise
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for name in names:
        if name in started:
            state[name] = {"port": ports[name], "pid": started[name], "log": str(log_file(home, name)),
                           "started_at": now, "seconds": round(seconds[name], 2)}
    _write_state(home, state)
    for name in names:
        how = (f"started in {seconds[name]:.1f}s" if name in started else f"already running (pid {running[name]})")
        emit(f"{TITLES[name]:10} {HOST}:{ports[name]}  {how}; log: {log_file(home, name)}")
    return {name: state[name] for name in names}


def _stop_pids(home: Path, pids: Dict[str, int], timeout: float) -> Dict[str, bool]:
    """Each server's own shutdown signal, a wait of up to `timeout`, then SIGKILL of its session."""
    for name, pid in pids.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNALS[name])
    deadline = time.monotonic() + timeout
    while any(pid_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    forced = {}
    for name, pid in pids.items():
        forced[name] = pid_alive(pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            pid_file(home, name).unlink()
    return forced


def stop(home: Path, emit: Callable[[str], None] = print, timeout: float = STOP_TIMEOUT) -> List[str]:
    """Stops every running server of the home by its pid; the ones it stopped."""
    home = Path(home).resolve()
    pids = {name: pid for name in SERVERS if (pid := running_pid(home, name))}
    for name, forced in _stop_pids(home, pids, timeout).items():
        emit(f"stopped {TITLES[name]} (pid {pids[name]}){f' with SIGKILL after {timeout:.0f}s' if forced else ''}")
    state = read_state(home)
    if pids and state:  # the port stays on record: the next start takes it again while it is free
        stopped_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_state(home, {name: ({"port": record.get("port"), "stopped_at": stopped_at} if name in pids else record)
                            for name, record in state.items()})
    return list(pids)


def status(home: Path) -> List[ServerStatus]:
    home = Path(home).resolve()
    found = []
    for name in SERVERS:
        pid = running_pid(home, name)
        port = running_port(home, name) if pid else None
        found.append(ServerStatus(name, pid, port, bool(port) and _answers(name, port, home), log_file(home, name)))
    return found


def status_lines(found: List[ServerStatus]) -> List[str]:
    lines = []
    for server in found:
        state = (f"running (pid {server.pid}), {HOST}:{server.port}, {'ready' if server.ready else 'NOT ready'}"
                 if server.pid else "stopped")
        lines.append(f"{server.name:14} {state:54} log: {server.log}")
    return lines


# ----------------------------------------------------------------------------------- clients


def _port_or_fail(home: Path, name: str) -> int:
    port = running_port(home, name)
    if not port:
        raise ConfigError(f"{TITLES[name]} of {Path(home).resolve()} is not running",
                          "`make up BACKEND=postgres` (or `mlops airflow up --backend postgres`) starts it")
    return port


def airflow_database_url(home: Path, driver: str = "postgresql+psycopg2") -> str:
    """Airflow's SQLAlchemy URL for the home's PostgreSQL (it holds the password: never print it)."""
    port = _port_or_fail(home, "postgresql")
    return f"{driver}://{AIRFLOW_USER}:{password(home, 'postgresql', AIRFLOW_USER)}@{HOST}:{port}/{AIRFLOW_DATABASE}"


def redis_url(home: Path, database: int = 0) -> str:
    """The Celery broker URL of the home's Redis (it holds the password: never print it)."""
    return f"redis://:{password(home, 'redis', REDIS_USER)}@{HOST}:{_port_or_fail(home, 'redis')}/{database}"


def mlmd_environment(home: Path) -> Dict[str, str]:
    """ML Metadata on the home's MariaDB, as pipelines/config.py reads it: MLOPS_MLMD (no password in
    the URL) and MLOPS_MLMD_PASSWORD."""
    port = _port_or_fail(home, "mariadb")
    return {"MLOPS_MLMD": f"mysql://{MLMD_USER}@{HOST}:{port}/{MLMD_DATABASE}",
            "MLOPS_MLMD_PASSWORD": password(home, "mariadb", MLMD_USER)}


def identity(home: Path, name: str) -> str:
    """Changes when the server's data directory is made anew (so a stamp of what was set up in it goes stale)."""
    marker_file = {"postgresql": data_dir(home, name) / "PG_VERSION",
                   "mariadb": server_dir(home, name) / ".initialised"}.get(name)
    try:
        found = marker_file.stat() if marker_file else None
    except OSError:
        return "none"
    return f"{found.st_ino}:{found.st_mtime_ns}" if found else "none"
