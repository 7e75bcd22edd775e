"""`mlops rollback`: push an earlier blessed model again, audited in ML Metadata, and wait until the
home's model server serves it."""

from __future__ import annotations

import sys

from pipelines.cli.common import COLD_HELP, in_warm_worker, project_config, project_paths, project_serving, require_metadata
from pipelines.errors import ConfigError

def cmd_rollback(args) -> int:
    import getpass
    import json

    from pipelines.canary import rollback_during_window
    from pipelines.rollback import AlreadyServing, NoLongerServed, rollback

    if args.no_server and (args.server or args.wait is not None):
        raise ConfigError("--no-server does not go with --server or --wait", "pick one")
    args.wait = 30.0 if args.wait is None else args.wait
    config = require_metadata(project_config(args))
    serving = project_serving(args, config)  # a broken models.config fails here, before the worker starts
    code = in_warm_worker(args, "rollback")
    if code is not None:
        return code
    # By default, the model server `make up` started for this home, when it runs and serves this directory.
    server, found, unchecked = args.server, None, ""
    if not server and not args.no_server:
        from serving.home import model_server_for

        found, unchecked = model_server_for(project_paths(args).home, serving.base_path)
        server = found.rest_url if found else None
    window_note = ""
    try:
        # An open canary window: the rollback ends it (pipelines/canary.py, the canary check's path).
        ended = rollback_during_window(
            config, project_paths(args).home, None if args.previous else args.to, args.reason,
            args.by or getpass.getuser(), trigger=args.trigger, only_if_serving=args.only_if_serving, server_url=server,
            force=args.force, progress=(lambda _: None) if args.json else print)
        if ended is not None and ended[1] is None:  # the canary had stable's model: no push was needed
            decision = ended[0]
            print(json.dumps({"already_serving": decision.version, "canary_window_ended": True}) if args.json else
                  f"the canary window ended: version {decision.version} serves every request (the canary had "
                  "its model; nothing pushed)")
            return 0
        if ended is not None:
            result = ended[1]
            window_note = "the canary window ended: "
        else:
            result = rollback(config, None if args.previous else args.to, args.reason, args.by,
                              progress=(lambda _: None) if args.json else print, force=args.force, serving=serving,
                              trigger=args.trigger, only_if_serving=args.only_if_serving)
    except AlreadyServing as done:
        print(json.dumps({"already_serving": done.served.version}) if args.json else str(done))
        return 0
    except NoLongerServed as gone:
        print(json.dumps({"no_longer_served": gone.version, "served": gone.served}) if args.json else str(gone))
        return 0
    waited = None
    if server:
        from serving.retention import wait_until_served

        if not args.json:
            whose = f" of this home (pid {found.pid}, started by `{found.started_by}`)" if found else ""
            print(f"waiting up to {args.wait:g}s for the model server{whose} at {server} to serve version "
                  f"{result.new_version}", flush=True)
        waited = wait_until_served(server, serving.model_name, result.new_version, args.wait)
    if args.json:
        print(json.dumps({**result.as_dict(), "server": server, "served_after_seconds": waited,
                          "canary_window_ended": bool(window_note)}, indent=2, sort_keys=True))
    else:
        print(f"{window_note}rolled back: version {result.new_version} now serves model {result.target.model_id} "
              f"(the model of version {result.target.version}), replacing version {result.replaced_version}; "
              f"by {result.requested_by}{' (alert)' if result.trigger == 'alert' else ''}: {result.reason} "
              f"[run {result.run_id}]")
        for note in result.notes:
            print(f"note: {note}")
        if waited is not None:
            print(f"the model server at {server} serves version {result.new_version} "
                  f"({waited:.1f}s after the push)")
        elif unchecked:
            print(f"{unchecked}, so no server was checked; a server elsewhere: --server URL")
    if server and waited is None:
        print(f"error: the model server at {server} did not serve version {result.new_version} within "
              f"{args.wait:g}s (the push is done and recorded; fix: read the server's log -- a version that fails "
              f"to load is skipped -- and `mlops models list --server {server}`)", file=sys.stderr)
        return 1
    return 0


def register(commands) -> None:
    from serving.config import PROJECT_CONFIG_HELP_DEFAULT  # no TensorFlow import

    rollback_parser = commands.add_parser(
        "rollback",
        help="push an earlier blessed model again (audited: an execution in ML Metadata)",
        description="Pick an earlier pushed model and push it again through the Pusher as the newest "
        "version, recording who, when, why and which version it replaced. Refuses unknown versions and "
        "models the Evaluator never blessed (unless --force); rolling back to the model already served "
        "does nothing and exits 0. Refuses, before pushing, when the server's models.config would not serve a "
        "new version (a `specific` policy pins versions: change the pins there instead), except during a canary "
        "window (`mlops models canary`), which a rollback ends: --previous or --to STABLE pushes stable's model "
        "again, so it serves every request and the canary version is no longer served (recorded as any rollback, "
        "with its trigger and reason); --to V, another pushed version, ends the window serving V's model; --to "
        "CANARY is refused (`mlops models canary check --now` promotes); repeating --to V does nothing (exit 0). "
        "With --only-if-serving V "
        "it rolls back only while version V is the one served, else says so and exits 0 (what an alert-triggered "
        "rollback uses, so that a late or repeated alert never rolls back further). `mlops models list` shows the "
        "versions.",
    )
    target = rollback_parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--previous", action="store_true", help="the model served before the current one")
    target.add_argument("--to", type=int, metavar="VERSION", help="the model of this pushed version")
    rollback_parser.add_argument("--reason", required=True, help="why (recorded in ML Metadata)")
    rollback_parser.add_argument("--by", help="who asked (default: the current user)")
    rollback_parser.add_argument(
        "--trigger", choices=("manual", "alert"), default="manual",
        help="what started the rollback, recorded in ML Metadata and shown by `mlops models list`: manual (a "
             "person; the default) or alert (the alert webhook, through the model_rollback DAG)")
    rollback_parser.add_argument(
        "--only-if-serving", type=int, metavar="VERSION",
        help="roll back only if this version is still the one served (the newest push, or a newer version "
             "directory copied in by hand; during a canary window the canary's version, and stable's is refused); "
             "otherwise print 'version V is no longer served (now N): nothing to roll "
             "back' and exit 0")
    rollback_parser.add_argument("--json", action="store_true", help="print the result as JSON")
    rollback_parser.add_argument(
        "--force", action="store_true", help="push the model even if the Evaluator never blessed it"
    )
    rollback_parser.add_argument(
        "--model-config-file",
        help="the models.config the model server runs with: a rollback is refused when its version policy "
             "would not serve the push (" + PROJECT_CONFIG_HELP_DEFAULT + ")")
    rollback_parser.add_argument(
        "--server", help="after the push, wait until the model server at this URL serves the new version "
                         "(e.g. http://127.0.0.1:8501); exit 1 if it does not within --wait seconds. Default: this "
                         "home's model server, when it runs (`make up` starts it; a `mlops serve` of the home's "
                         "model directory registers itself)")
    rollback_parser.add_argument("--wait", type=float, metavar="SECONDS",
                                 help="how long to wait for the model server (default: 30)")
    rollback_parser.add_argument("--no-server", action="store_true",
                                 help="do not wait for this home's model server "
                                      "(by default, when it runs, the rollback waits until it serves the new version)")
    rollback_parser.add_argument("--cold", action="store_true", help=COLD_HELP)
    rollback_parser.set_defaults(handler=cmd_rollback)
