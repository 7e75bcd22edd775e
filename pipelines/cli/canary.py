"""`mlops models canary enable|disable|status|check`: canary rollout of nightly pushes (serving/canary.py)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from pipelines.cli.common import project_config, project_paths, require_metadata

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """Seconds from "90", "90s", "30m", "2h" or "1d"."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write e.g. 90s, 30m or 2h")
    return float(match.group(1)) * _UNITS[match.group(2)]


def share(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share: write a number in (0, 1], e.g. 0.1 or 10%")
    return value


def _settings_path(args) -> Path:
    from serving import canary

    return canary.state_path(canary.home_config_path(project_paths(args).home))


def cmd_enable(args) -> int:
    import dataclasses

    from serving import canary

    path = _settings_path(args)
    old = canary.load_settings(path)
    changes = {k: v for k, v in (("share", args.share), ("soak_seconds", args.soak), ("error_margin", args.error_margin),
                                 ("latency_margin", args.latency_margin), ("min_requests", args.min_requests))
               if v is not None}
    new = dataclasses.replace(old, enabled=True, **changes)
    canary.save_settings(path, new)
    print(f"canary on ({path}): the next nightly push answers {new.share:.0%} of the requests that name no version "
          f"for {new.soak_seconds:.0f}s, then `mlops models canary check` promotes it when its error rate is at most "
          f"stable's + {new.error_margin:.1%} and its p99 at most stable's x {1 + new.latency_margin:g} "
          f"(after at least {new.min_requests} canary requests), else rolls it back")
    return 0


def cmd_disable(args) -> int:
    import dataclasses

    from serving import canary

    path = _settings_path(args)
    canary.save_settings(path, dataclasses.replace(canary.load_settings(path), enabled=False))
    open_now = canary.windows(path)
    print(f"canary off ({path}): the next push serves all requests at once"
          + (f"; the open window of {', '.join(open_now)} stays until `mlops models canary check` decides it"
             if open_now else ""))
    return 0


def cmd_status(args) -> int:
    from pipelines.canary import read_state

    config = project_config(args)
    base = Path(config.serving_model_dir)
    state = read_state(project_paths(args).home, base, base.name, args.server)
    if args.json:
        print(json.dumps(state.as_dict(), indent=2, sort_keys=True))
        return 0
    s, w = state.settings, state.window
    print(f"canary {'on' if s.enabled else 'off'}: share {s.share:.0%}, soak {s.soak_seconds:.0f}s, error margin "
          f"{s.error_margin:.1%}, p99 margin +{s.latency_margin:.0%}, at least {s.min_requests} canary requests")
    if w is None:
        print(f"no canary window open for model {state.model}")
        return 0
    if w.canary is None:
        print(f"window opening: version {w.stable} is stable, the canary version is being pushed")
        return 0
    print(f"window: version {w.canary} (canary) answers {w.share:.0%} of the requests that name no version, "
          f"version {w.stable} (stable) the rest; soak time left {w.soak_left():.0f}s of {w.soak_seconds:.0f}s")
    if state.server_error:
        print(f"live comparison unavailable: {state.server_error}")
        return 0
    for label, version in (("stable", w.stable), ("canary", w.canary)):
        from pipelines.canary import VersionStats

        print(f"  {label:6} version {version}: {state.stats.get(version, VersionStats(version)).describe()}")
    verdict, why = state.comparison()
    print(f"if decided now: {verdict} ({why})")
    return 0


def cmd_check(args) -> int:
    from pipelines.canary import check

    config = require_metadata(project_config(args))
    decision = check(config, project_paths(args).home, args.server, force=args.now, requested_by=args.by,
                     progress=(lambda _: None) if args.json else print)
    if args.json:
        import dataclasses

        print(json.dumps(dataclasses.asdict(decision), indent=2, sort_keys=True))
    elif decision.verdict in ("none", "wait", "soaking"):
        print(f"no decision: {decision.why}")
    return 0


def register_under(models_commands) -> None:
    """Adds `canary` to the `mlops models` group."""
    parser = models_commands.add_parser(
        "canary", help="roll nightly pushes out to a share of the traffic first (off by default)",
        description="With canary on, a nightly push is served first under the `canary` label to a share of the "
        "requests that name no version (an X-Request-Id header, or x-request-id gRPC metadata, pins a request's "
        "choice); the rest stays on `stable`. After the soak period `check` promotes it or rolls it back "
        "(both recorded in ML Metadata, both shown by `mlops models list`). Settings and the open window live "
        "in canary.json beside the home's models.config, so a restarted server resumes the split.")
    commands = parser.add_subparsers(dest="canary_command", metavar="ACTION", required=True)
    enable = commands.add_parser("enable", help="turn canary rollout on (options change only what they name)",
                                 description="Turns canary rollout on for the next nightly pushes.")
    enable.add_argument("--share", type=share, help="share of the requests that name no version for the canary "
                                                     "(0-1 or a percentage; default 0.1)")
    enable.add_argument("--soak", type=duration, help="soak period before a decision, e.g. 30m (default 30m)")
    enable.add_argument("--error-margin", type=float, help="how much higher (absolute, 0.01 = 1 point) the canary's "
                                                           "error rate may be than stable's (default 0.01)")
    enable.add_argument("--latency-margin", type=float, help="how much higher (relative, 0.5 = +50%%) the canary's "
                                                             "p99 latency may be than stable's (default 0.5)")
    enable.add_argument("--min-requests", type=int, help="canary requests needed before a decision (default 50)")
    enable.set_defaults(handler=cmd_enable)
    disable = commands.add_parser("disable", help="turn canary rollout off (an open window stays until checked)",
                                  description="Turns canary rollout off: later pushes serve all requests at once.")
    disable.set_defaults(handler=cmd_disable)
    status = commands.add_parser("status", help="the current split, soak time left and the live comparison",
                                 description="Shows the settings, the open window (versions, share, soak time left) "
                                 "and how canary and stable compare now on the server's own metrics.")
    status.add_argument("--server", help="the model server to read metrics from, e.g. http://127.0.0.1:8501 "
                                         "(default: this home's model server)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)
    check = commands.add_parser(
        "check", help="after the soak period: promote the canary or roll it back (audited)",
        description="Compares the canary's error rate and p99 latency with stable's from the model server's "
        "/monitoring/prometheus/metrics once the soak period is over. No worse by the margins: promoted (`stable` "
        "moves to it; a `promotion` in ML Metadata). Worse: rolled back through `mlops rollback`'s audited path "
        "with the reason. Does nothing while soaking, with too few canary requests, or with no window open, so "
        "it is safe to run every few minutes (the `canary_check` DAG does).")
    check.add_argument("--server", help="the model server to read metrics from (default: this home's model server)")
    check.add_argument("--now", action="store_true", help="decide now, without waiting out the soak period")
    check.add_argument("--by", help="who decided (recorded; default: 'canary check (<user>)')")
    check.add_argument("--json", action="store_true", help="print the decision as JSON")
    check.set_defaults(handler=cmd_check)
