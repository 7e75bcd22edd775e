"""`mlops models list|prune`: every pushed version (who, when, why, what serves), and retention by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Set

from pipelines.cli.common import has_metadata, project_config, project_paths, project_serving
from pipelines.errors import ConfigError

def cmd_models_list(args) -> int:
    import json

    from serving.versions import list_versions
    from pipelines.rollback import PushRecord, list_pushes

    config = project_config(args)
    serving = project_serving(args, config)
    on_disk = set(list_versions(Path(config.serving_model_dir)))
    if args.server:
        from serving.retention import served_versions

        try:
            loaded = sorted(served_versions(args.server, serving.model_name))
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot ask the model server at {args.server}: {err}",
                              "start it (`make up`), or leave out --server") from err
        how = f"as the server at {args.server} reports"
    else:
        loaded = serving.loaded(on_disk)
        how = serving.describe()
    served = loaded[-1] if loaded else None
    labels = serving.model.label_map if serving.model else {}
    if "canary" in labels and labels.get("stable") in loaded:
        served = labels["stable"]  # a canary window: stable answers most requests (`mlops models canary status`)
    pushes = list_pushes(config.metadata.to_proto()) if has_metadata(config) else []
    # A version directory no push explains (copied in by hand, or its ML Metadata store replaced):
    # the server serves it all the same, so it is listed rather than silently left out.
    recorded = {push.version for push in pushes}
    records = pushes + [PushRecord.unrecorded(version) for version in sorted(on_disk - recorded)]
    # version -> the push after which the Pusher's retention deleted it
    pruned_by = {version: push.version for push in pushes for version in push.pruned_versions}
    # JSON: `kind` stays "nightly", "rollback" or "unrecorded"; `trigger` says what started a rollback
    # ("manual" or "alert"; "" for the others); the table shows an alert's rollback as "rollback (alert)".
    rows = [{**push.__dict__, "kind_label": push.kind_label, "on_disk": push.version in on_disk,
             "serving": push.version == served, "loaded": push.version in loaded,
             "labels": serving.labels_of(push.version),
             "deleted_by_retention_after": pruned_by.get(push.version) if push.version not in on_disk else None}
            for push in records]
    rows.sort(key=lambda row: row["version"])
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print(f"no model pushed yet to {config.serving_model_dir}")
        return 0
    by_width = max([2] + [len(row["requested_by"]) for row in rows])
    label_width = max(len(",".join(row["labels"])) for row in rows)
    kind_width = max([10] + [len(row["kind_label"]) for row in rows])
    labels_head = f"{'labels':{max(6, label_width)}}  " if label_width else ""
    print(f"{'version':>7}  {'model':>5}  {'kind':{kind_width}}  {'pushed at (UTC)':19}  {'by':{by_width}}  "
          f"{labels_head}{'replaced':>8}  reason")
    for row in rows:
        mark = " *" if row["serving"] else " +" if row["loaded"] else "  " if row["on_disk"] else " -"
        replaced = str(row["replaced_version"]) if row["replaced_version"] else ""
        labels = f"{','.join(row['labels']):{max(6, label_width)}}  " if label_width else ""
        print(f"{row['version']:>7}{mark}{row['model_id'] or '':>5}  {row['kind_label']:{kind_width}}  "
              f"{row['pushed_at'][:19]:19}  {row['requested_by']:{by_width}}  {labels}{replaced:>8}  {row['reason']}"
              + (f" (deleted by retention after version {row['deleted_by_retention_after']})"
                 if row["deleted_by_retention_after"] else ""))
    print("* = served to requests that name no version; + = loaded too; - = no longer on disk; "
          "replaced = the version served before this push")
    print(f"served versions under {config.serving_model_dir}: {how}")
    return 0


def cmd_models_prune(args) -> int:
    """`mlops models prune`."""
    from serving.config import ConfigFileError, ProjectServing, load_model_config, project_config_path
    from serving.retention import apply_prune, plan_for, served_versions

    home = project_paths(args).home
    try:
        config_path = project_config_path(home, args.model_config_file)
        configs = load_model_config(config_path, home) if config_path else []
    except ConfigFileError as err:
        raise ConfigError(str(err), "fix the models.config file or pass another --model-config-file") from err
    if args.model_base_path:
        base = Path(args.model_base_path)
        base = base if base.is_absolute() else home / base
    else:
        named = [c.base_path for c in configs if c.name == args.model_name]
        base = named[0] if named else home / "serving" / "models" / args.model_name
    # What the config says about *this directory*: its entry by base_path, as a server reads it.
    serving = ProjectServing.from_configs(base, config_path, configs)
    served: Set[int] = set()
    server = args.server
    if not server:
        from serving.home import model_server_for

        found, _ = model_server_for(home, serving.base_path)
        server = found.rest_url if found else None
    if server:
        try:
            served = served_versions(server, serving.model_name if not args.server else args.model_name)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot ask the model server at {server}: {err}",
                              "start it, or leave out --server" if args.server else
                              "it may be restarting: try again, or name a server with --server URL") from err
    if args.keep < 1:
        raise ConfigError(f"--keep {args.keep} would delete the served version", "keep at least 1")
    plan = plan_for(serving, args.keep, served)
    if args.json:
        result = plan.as_dict()
        result["dry_run"] = bool(args.dry_run)
        result["deleted"] = [] if args.dry_run else apply_prune(plan, emit=lambda _: None)
        result["failed"] = {str(v): why for v, why in plan.failed.items()}
        print(json.dumps(result, indent=2, sort_keys=True))
        return 1 if plan.failed else 0
    for line in plan.lines():
        print(line)
    if args.dry_run:
        print("dry run: nothing deleted")
        return 0
    apply_prune(plan)
    return 1 if plan.failed else 0


def _add_prune_arguments(parser) -> None:
    from serving.config import PROJECT_CONFIG_HELP_DEFAULT
    from serving.retention import DEFAULT_KEEP

    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="newest versions to keep (default: 5)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    parser.add_argument("--model-name", default="taxi", help="model (default: taxi)")
    parser.add_argument("--model-base-path", help="version directory (default: from models.config, else "
                                                  "<home>/serving/models/<name>)")
    parser.add_argument("--model-config-file", help="models.config whose labels and pinned versions are kept "
                                                    f"({PROJECT_CONFIG_HELP_DEFAULT})")
    parser.add_argument("--server", help="also keep what the model server at this URL has loaded, "
                                         "e.g. http://127.0.0.1:8501 (default: this home's model server, when "
                                         "it runs)")
    parser.add_argument("--json", action="store_true", help="print the plan and result as JSON")


def register(commands) -> None:
    from serving.config import PROJECT_CONFIG_HELP_DEFAULT  # no TensorFlow import

    models = commands.add_parser("models", help="pushed model versions")
    models_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    models_list = models_commands.add_parser(
        "list", help="every push (nightly, rollback or canary promotion) with version, model, who, when, why",
        description="Every push: version, source model, kind (nightly, rollback, 'rollback (alert)' or "
        "'rollback (canary)' for one an alert or a failing canary triggered, or promotion: a canary made stable; "
        "--json: `kind` and `trigger`), when (UTC), by whom, labels, the version it replaced and why, with marks "
        "for what is served.",
    )
    models_list.add_argument("--json", action="store_true", help="print JSON")
    models_list.add_argument(
        "--model-config-file",
        help="the models.config the model server runs with, whose version policy and labels say what is served "
             "(" + PROJECT_CONFIG_HELP_DEFAULT + "; without one the newest version is served)")
    models_list.add_argument("--server", help="ask the running model server which versions it has loaded instead, "
                                              "e.g. http://127.0.0.1:8501")
    models_list.set_defaults(handler=cmd_models_list)
    models_prune = models_commands.add_parser(
        "prune",
        help="delete old pushed versions: keep the newest N plus labelled, pinned and served ones",
        description="Keeps the newest --keep versions, every version the models.config labels or pins, the "
        "served (newest) version and the newest complete one; deletes the rest atomically (rename to a hidden "
        "directory, then remove). --dry-run only prints the plan.",
    )
    _add_prune_arguments(models_prune)
    models_prune.set_defaults(handler=cmd_models_prune)
    from pipelines.cli.canary import register_under

    register_under(models_commands)
