"""`mlops metadata init|info|migrate`: the home's ML Metadata store as a whole (pipelines/mlmd_store.py).

Which store: `--metadata URL` (before the command) or $MLOPS_MLMD, else the home's var/metadata.sqlite;
a MySQL/MariaDB password comes from $MLOPS_MLMD_PASSWORD only."""

from __future__ import annotations

import json
import os

from pipelines.cli.common import project_paths
from pipelines.errors import ConfigError

FROM_PASSWORD_ENV = "MLOPS_MLMD_FROM_PASSWORD"


def cmd_metadata(args) -> int:
    from pipelines import mlmd_store
    from pipelines.config import MLMD_PASSWORD_ENV, MetadataConfig

    paths = project_paths(args)
    home_store = MetadataConfig.for_home(paths)
    if args.metadata_command != "migrate" and (args.source or args.target):
        raise ConfigError(f"`mlops metadata {args.metadata_command}` takes no --from/--to",
                          "name the store with `mlops --metadata URL ...` or $MLOPS_MLMD")
    if args.metadata_command == "init":
        done = mlmd_store.init(home_store)
        if done["before"] is None:
            said = f"created ML Metadata schema version {done['schema_version']}"
        elif done["before"] != done["schema_version"]:
            said = f"upgraded ML Metadata schema version {done['before']} to {done['schema_version']}"
        else:
            said = f"ML Metadata schema version {done['schema_version']} is current: nothing to do"
        print(json.dumps(done) if args.json else f"{done['url']}: {said}", flush=True)
        return 0
    if args.metadata_command == "info":
        found = mlmd_store.info(home_store)
        if args.json:
            print(json.dumps(found.as_dict()))
        elif found.schema_version is None:
            print(f"{found.url}: no ML Metadata store yet (`mlops metadata init` creates one; a run does too)")
        else:
            counts = ", ".join(f"{n} {name}" for name, n in found.counts.items())
            print(f"{found.url}: schema version {found.schema_version}; {counts}")
        return 0 if found.schema_version is not None else 3
    if not args.target:
        raise ConfigError("`mlops metadata migrate` needs --to URL", "e.g. --to mysql://mlops@db-host:3306/mlmd "
                          f"with the password in ${MLMD_PASSWORD_ENV}")
    source = (MetadataConfig.parse(args.source, os.environ.get(FROM_PASSWORD_ENV, "")) if args.source
              else home_store)
    target = MetadataConfig.parse(args.target, os.environ.get(MLMD_PASSWORD_ENV, ""))
    print(f"copying ML Metadata {source.url} -> {target.url}", flush=True)
    copied = mlmd_store.migrate(source, target, progress=lambda line: print(line, flush=True))
    after = mlmd_store.info(target)
    if args.json:
        print(json.dumps({"from": source.url, "to": target.url, "rows": copied, "counts": after.counts}))
    elif copied:
        print(f"done: {sum(copied.values())} rows, ids and times kept ({', '.join(f'{n} {k}' for k, n in after.counts.items())}). "
              f"Use it from now on: export MLOPS_MLMD={target.url} (and {MLMD_PASSWORD_ENV}); "
              f"{source.url} is unchanged.", flush=True)
    return 0


def register(commands) -> None:
    metadata = commands.add_parser(
        "metadata",
        help="create, inspect or move the ML Metadata store (SQLite or MySQL/MariaDB)",
        description="Which store: `mlops --metadata URL metadata ...` or $MLOPS_MLMD (sqlite:PATH or "
        "mysql://USER@HOST:PORT/DATABASE, the password in $MLOPS_MLMD_PASSWORD), else the home's "
        "var/metadata.sqlite. `init` creates the schema, or upgrades an older one (idempotent; run it once "
        "before Airflow's tasks share a new server-backed store: several processes creating it at once can "
        "fail). `info` shows the schema version and how many types, artifacts, executions, contexts and "
        "events it holds (exit 3 when there is no store). `migrate --to URL [--from URL]` copies every row "
        "of a store (default --from: the home's store; its password, if MySQL, in $MLOPS_MLMD_FROM_PASSWORD) "
        "into a new, empty one with the same ids and creation times, so runs, pushes, rollbacks and lineage "
        "read the same there; the source is only read. See docs/scale-out.md.",
    )
    metadata.add_argument("metadata_command", choices=("init", "info", "migrate"), help="what to do")
    metadata.add_argument("--from", dest="source", metavar="URL",
                          help="`migrate`: the store to copy (default: the home's store)")
    metadata.add_argument("--to", dest="target", metavar="URL", help="`migrate`: the new, empty store")
    metadata.add_argument("--json", action="store_true", help="print the result as one JSON object")
    metadata.set_defaults(handler=cmd_metadata)
