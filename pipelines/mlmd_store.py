"""ML Metadata stores as whole things: create the schema once, describe one, copy one to another.

`init` exists because several processes opening an EMPTY store at once can fail ("MLMDEnv table
exists but no schema_version can be found", design.md section 5): a server-backed store gets its
schema from one process, before any task runs. `migrate` copies every row of an ML Metadata store
(SQLite or MySQL/MariaDB) into an empty one with the same ids and timestamps, so what orders by
creation time (the served model, rollback history, the newest gate verdict of a day) reads the
same after the move. ML Metadata's own API cannot do that: it assigns new ids and times on put.

Imports ML Metadata only inside the functions; the row copy goes through DB-API (sqlite3, PyMySQL).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

from pipelines.config import MetadataConfig
from pipelines.errors import ConfigError

# ML Metadata's tables in an order that puts every referenced row before the rows that refer to it
# (ML Metadata declares no foreign keys, but a reader of a half-copied store should see whole rows).
TABLES = ("Type", "TypeProperty", "ParentType", "Artifact", "ArtifactProperty", "Execution", "ExecutionProperty",
          "Context", "ContextProperty", "ParentContext", "Event", "EventPath", "Attribution", "Association")
# A new store already holds ML Metadata's system types (mlmd.Dataset, ...): replaced by the source's.
TYPE_TABLES = ("Type", "TypeProperty", "ParentType")
SCHEMA_TABLE = "MLMDEnv"
BATCH_ROWS = 2000
# MySQL's server-wide named lock around creating the schema of an empty store (ensure_schema).
INIT_LOCK = "mlops_mlmd_init"
INIT_LOCK_SECONDS = 120
COUNTED = (("types", "Type"), ("artifacts", "Artifact"), ("executions", "Execution"), ("contexts", "Context"),
           ("events", "Event"))


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    url: str
    schema_version: Optional[int]  # None: no ML Metadata schema yet
    counts: Dict[str, int]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def connect(metadata: MetadataConfig, create: bool = False) -> Iterator:
    """A DB-API connection to the store's database (None when a SQLite file or a MySQL database does
    not exist and `create` is false)."""
    if metadata.is_sqlite:
        path = Path(metadata.sqlite_path)
        if not path.is_file() and not create:
            yield None
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(path))
    else:
        connection = _mysql(metadata, create)
    try:
        yield connection
    finally:
        if connection is not None:
            connection.close()


def _mysql(metadata: MetadataConfig, create: bool):
    import pymysql

    try:
        server = pymysql.connect(host=metadata.mysql_host, port=metadata.mysql_port, user=metadata.mysql_user,
                                 password=metadata.mysql_password, connect_timeout=10,
                                 autocommit=True)  # each read sees what other processes committed
    except pymysql.MySQLError as err:
        raise ConfigError(f"cannot connect to ML Metadata at {metadata.url}: {err.args[-1] if err.args else err}",
                          "check that the server runs, the user and $MLOPS_MLMD_PASSWORD (or the Airflow connection)") from err
    with server.cursor() as cursor:
        found = cursor.execute("SHOW DATABASES LIKE %s", (metadata.mysql_database,))
        if not found and not create:
            server.close()
            return None
        if not found:
            cursor.execute(f"CREATE DATABASE {_quote(metadata.mysql_database)}")
        cursor.execute(f"USE {_quote(metadata.mysql_database)}")
    return server


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _tables(connection, metadata: MetadataConfig) -> List[str]:
    cursor = connection.cursor()
    if metadata.is_sqlite:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        cursor.execute("SHOW TABLES")
    return [row[0] for row in cursor.fetchall()]


def _schema_version(connection, metadata: MetadataConfig) -> Optional[int]:
    if connection is None or SCHEMA_TABLE not in _tables(connection, metadata):
        return None
    cursor = connection.cursor()
    cursor.execute(f"SELECT schema_version FROM {SCHEMA_TABLE}")
    rows = cursor.fetchall()
    return int(rows[0][0]) if rows else None


def _count(connection, table: str) -> int:
    cursor = connection.cursor()
    cursor.execute(f"SELECT COUNT(*) FROM {_quote(table)}")
    return int(cursor.fetchone()[0])


def info(metadata: MetadataConfig) -> StoreInfo:
    """Where the store is, its schema version and how much it holds; reads only."""
    with connect(metadata) as connection:
        version = _schema_version(connection, metadata)
        counts = {name: _count(connection, table) for name, table in COUNTED} if version is not None else {}
    return StoreInfo(metadata.url, version, counts)


def _open(metadata: MetadataConfig, upgrade: bool):
    from ml_metadata import errors, metadata_store

    try:
        return metadata_store.MetadataStore(metadata.to_proto(), enable_upgrade_migration=upgrade)
    except errors.MetadataStoreError as err:
        said = " ".join(str(err).split())[:300]
        fix = ("run `mlops metadata init` (it upgrades an older schema); a newer schema needs a newer project"
               if "schema" in said.lower() else "check the server, the database and its user's rights")
        raise ConfigError(f"cannot open ML Metadata at {metadata.url}: {said}", fix) from err


def init(metadata: MetadataConfig) -> dict:
    """Creates the store's schema, or upgrades an older one; nothing to do when it is current.
    Idempotent. Returns {"url", "schema_version", "before"} (before: None when there was no schema)."""
    if metadata.is_sqlite:
        Path(metadata.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    with connect(metadata) as connection:
        before = _schema_version(connection, metadata)
    _open(metadata, upgrade=True)
    with connect(metadata) as connection:
        after = _schema_version(connection, metadata)
    if after is None:
        raise ConfigError(f"ML Metadata at {metadata.url} still has no schema after init",
                          "check the database user may create tables")
    return {"url": metadata.url, "schema_version": after, "before": before}


def ensure_schema(metadata: MetadataConfig) -> None:
    """Makes sure a MySQL store has its schema before this process opens it through ML Metadata.
    Several processes creating the schema of an EMPTY database at once can fail; here the first one
    creates it under a server-wide named lock (GET_LOCK: it holds across hosts) while the others
    wait, then find it there. A store that has its schema costs one query."""
    if metadata.is_sqlite:
        return
    with connect(metadata, create=True) as connection:
        if _schema_version(connection, metadata) is not None:
            return
        cursor = connection.cursor()
        cursor.execute("SELECT GET_LOCK(%s, %s)", (INIT_LOCK, INIT_LOCK_SECONDS))
        if cursor.fetchone()[0] != 1:
            raise ConfigError(f"waited {INIT_LOCK_SECONDS} s for another process creating ML Metadata's schema "
                              f"at {metadata.url}", "run `mlops metadata init` once, then rerun the task")
        try:
            if _schema_version(connection, metadata) is None:
                init(metadata)
        finally:
            cursor.execute("SELECT RELEASE_LOCK(%s)", (INIT_LOCK,))


def migrate(source: MetadataConfig, target: MetadataConfig,
            progress: Callable[[str], None] = print) -> Dict[str, int]:
    """Copies every row of `source` into `target` (created or upgraded to this library's schema; it
    must hold no types, artifacts, executions or contexts yet). `source` is only read. Returns the
    rows copied per table."""
    if source.url == target.url:
        raise ConfigError(f"--from and --to are the same store ({source.url})", "name two different stores")
    with connect(source) as connection:
        source_version = _schema_version(connection, source)
        if source_version is None:
            raise ConfigError(f"no ML Metadata store at {source.url}", "check --from (sqlite:PATH or mysql://...)")
    target_version = init(target)["schema_version"]
    if source_version != target_version:
        raise ConfigError(f"{source.url} has ML Metadata schema version {source_version}, this project writes "
                          f"version {target_version}",
                          f"upgrade the source first: `mlops --metadata {source.url} metadata init`")
    copied: Dict[str, int] = {}
    with connect(source) as src, connect(target) as dst:
        present = {table: _count(dst, table) for table in TABLES}
        busy = {table: n for table, n in present.items() if table not in TYPE_TABLES and n}
        if busy and all(n == _count(src, table) for table, n in present.items()):
            progress(f"  {target.url} already holds as many rows of every table as {source.url}: "
                     "an earlier migration finished; nothing to do")
            return {}
        if busy:
            raise ConfigError(f"{target.url} is not empty ({', '.join(f'{t}: {n} rows' for t, n in busy.items())})",
                              "migrate into a new database (or a new SQLite file); nothing was copied")
        target_tables = set(_tables(dst, target))
        if not target.is_sqlite:
            dst.begin()  # one transaction: a failed copy leaves the target as it was
        try:
            for table in TYPE_TABLES:  # a new store's own system types: the source has them, same ids
                dst.cursor().execute(f"DELETE FROM {_quote(table)}")
            for table in TABLES:
                copied[table] = _copy_table(src, dst, table, target, target_tables)
                if copied[table]:
                    progress(f"  {table}: {copied[table]} rows")
            dst.commit()
        except BaseException:
            dst.rollback()
            raise
        found = {t: _count(dst, t) for t in copied}
        mismatched = {t: (n, found[t]) for t, n in copied.items() if found[t] != n}
    if mismatched:
        raise ConfigError(f"copy to {target.url} is incomplete: {mismatched} (copied, found)",
                          "drop the target database and run the migration again")
    return copied


def _copy_table(src, dst, table: str, target: MetadataConfig, target_tables: set) -> int:
    if table not in target_tables:
        raise ConfigError(f"{target.url} has no table {table}", "run `mlops metadata init` on it first")
    read = src.cursor()
    read.execute(f"SELECT * FROM {_quote(table)}")
    columns = [d[0] for d in read.description]
    mark = "?" if target.is_sqlite else "%s"
    insert = (f"INSERT INTO {_quote(table)} ({', '.join(_quote(c) for c in columns)}) "
              f"VALUES ({', '.join(mark for _ in columns)})")
    write, total = dst.cursor(), 0
    while True:
        rows = read.fetchmany(BATCH_ROWS)
        if not rows:
            return total
        write.executemany(insert, rows)
        total += len(rows)
