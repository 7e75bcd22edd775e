"""`mlops schema history|accept|diff|prune|lint`: what changed in schemas/taxi/schema.pbtxt, and accepting a span."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import difflib
import json
import os
import re
from pathlib import Path
from typing import Optional, Tuple

from pipelines.cli.common import date_arg, project_paths
from pipelines.errors import ConfigError
from pipelines.schema_diff import describe_changes, parse_schema
from pipelines.schema_history import (KEEP_DAYS, apply_accept, entry_sha, entry_summary, history_dir, is_risky,
                                      plan_accept, prune_snapshots, read_history, read_schema_bytes, schema_in_force,
                                      snapshot_path, utc_now)
from pipelines.schema_ranges import HISTORY_DAYS, SPANS_TO_NARROW


def cmd_history(args) -> int:
    paths = project_paths(args)
    entries = read_history(paths)
    previous: Optional[dict] = None
    for entry in entries:
        entry["summary"] = entry_summary(entry, previous, history_dir(paths))
        previous = entry
    if args.json:
        print(json.dumps(entries, indent=2, sort_keys=True))
        return 0
    if not entries:
        print("no schema history yet (it starts with the next pipeline run or `mlops schema accept`)")
    for entry in entries:
        span = f"span {entry['span']}" if entry.get("span") else ""
        by = f"by {entry['by']}" if entry.get("by") else ""
        reason = f"reason: {entry['reason']}" if entry.get("reason") else ""
        fields = [entry["time"], f"{entry.get('event', '?'):<8}", (entry_sha(entry) or "?")[:12], span, by, reason,
                  entry["summary"]]
        print("  ".join(f for f in fields if f))
    return 0


def cmd_accept(args) -> int:
    paths = project_paths(args)
    plan = plan_accept(paths, args.date, history_days=args.history_days, tighten=args.tighten)
    by = args.by or os.environ.get("USER") or "unknown"
    result = dataclasses.asdict(plan)
    del result["new_text"]
    result.update(by=by, reason=args.reason or "", dry_run=args.dry_run, written=False)
    risky = [line for line in plan.changes if is_risky(line)]
    if risky and not args.dry_run and not args.force:
        raise ConfigError(f"accepting span {plan.span} would stop validating features: {'; '.join(risky)}",
                          "fix the data producer instead, or pass --force if the change is intended "
                          "(`--dry-run` shows every change)")
    if plan.changes and not args.dry_run:
        apply_accept(paths, plan, by, args.reason or "")
        result["written"] = True
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    if not plan.changes:
        print(f"nothing to change: span {plan.span} already passes the schema")
    else:
        verb = "would change" if args.dry_run else "changed"
        print(f"span {plan.span}: {verb} {paths.schema_path} ({plan.from_sha[:12]} -> {plan.to_sha[:12]})")
        for line in plan.changes:
            print(f"  {line}")
    _print_ranges(plan.ranges)
    if plan.changes:
        print("dry run: nothing written" if args.dry_run else "recorded in `mlops schema history`")
    return 0


def _print_ranges(ranges: dict) -> None:
    """Where the proposed ranges came from, the narrowing offered and the notes (nothing when no range moved)."""
    if ranges["changes"] or ranges["offered"]:
        print(ranges["source"])
    if ranges["offered"]:
        print("offered, not applied (--tighten applies them):")
        print("\n".join(f"  {line}" for line in ranges["offered"]))
    for note in ranges["notes"]:
        print(f"note: {note}")


def _window(args) -> Tuple[dt.datetime, Optional[dt.datetime]]:
    if args.to and not args.start:
        raise ConfigError("--to needs --from", "pass --from DATE --to DATE, or --since DURATION")
    if args.start:
        start = dt.datetime.combine(args.start, dt.time(), dt.timezone.utc)
        end = dt.datetime.combine(args.to + dt.timedelta(days=1), dt.time(), dt.timezone.utc) if args.to else None
        if end is not None and end <= start:
            raise ConfigError(f"--to {args.to} is before --from {args.start}", "swap them")
        return start, end
    return utc_now() - (args.since or dt.timedelta(days=KEEP_DAYS)), None


def cmd_diff(args) -> int:
    paths = project_paths(args)
    start, end = _window(args)
    entries = read_history(paths)
    if not entries:
        print("no schema history yet (it starts with the next pipeline run or `mlops schema accept`): "
              "nothing to compare")
        return 0
    directory = history_dir(paths)
    before, notes = schema_in_force(paths, entries, start)
    old_file = snapshot_path(directory, before.sha)
    if end is None:
        new_file, new_label = paths.schema_path, f"{paths.schema_path} (current)"
        new_text = read_schema_bytes(paths).decode()
    else:
        after, more_notes = schema_in_force(paths, entries, end)
        notes += more_notes
        new_file, new_label = snapshot_path(directory, after.sha), f"schema in force at {end.isoformat()}"
        new_text = new_file.read_text()
    old_text = old_file.read_text()
    changes = describe_changes(parse_schema(old_text), parse_schema(new_text))
    unified = "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True),
                                           str(old_file), str(new_file))) if args.unified else ""
    if args.json:
        print(json.dumps({"from": {"sha": before.sha, "since": before.start.isoformat(), "file": str(old_file)},
                          "to": str(new_file), "notes": notes, "changes": changes, "unified": unified},
                         indent=2, sort_keys=True))
        return 0
    for note in notes:
        print(f"note: {note}")
    print(f"from {old_file} (in force since {before.start.isoformat()})")
    print(f"to   {new_label}")
    print("\n".join(f"  {line}" for line in changes) if changes else "no schema changes")
    if unified:
        print(unified, end="")
    return 0


def cmd_prune(args) -> int:
    if args.keep_days < 0:
        raise ConfigError(f"--keep-days {args.keep_days} is negative", "pass 0 or more days")
    removed = prune_snapshots(project_paths(args), args.keep_days)
    for path, end in removed:
        print(f"removed {path} (out of force since {end.isoformat()})")
    if not removed:
        print(f"nothing to prune: every snapshot was in force within the last {args.keep_days} days")
    return 0


def cmd_lint(args) -> int:
    from pipelines import schema_lint

    paths = project_paths(args)
    schema_path = Path(args.schema) if args.schema else paths.schema_path
    if not schema_path.is_file():
        raise ConfigError(f"schema file {schema_path} does not exist", "pass --schema PATH or run in the project home")
    rows = schema_lint.lint_file(schema_path)
    if args.date:
        folder = paths.data_root / args.date.isoformat()
        columns = schema_lint.span_columns(paths.data_root, args.date.isoformat())
        if not columns:
            raise ConfigError(f"span {args.date}: no CSV file with a header in {folder}",
                              "pick a date that has data under data/incoming/ (`mlops data seed`)")
        rows += schema_lint.unknown_columns(rows, columns)
    unguarded = [row for row in rows if not row.guarded]
    if args.json:
        print(json.dumps({"schema": str(schema_path), "span": args.date.isoformat() if args.date else None,
                          "ok": not unguarded, "unguarded": [row.name for row in unguarded],
                          "features": [dataclasses.asdict(row) for row in rows]}, indent=2, sort_keys=True))
    else:
        print(f"{schema_path}" + (f", span {args.date}" if args.date else ""))
        print(schema_lint.table(rows))
    if unguarded:
        names = ", ".join(f"{row.name} ({row.presence})" if row.presence == schema_lint.NOT_IN_SCHEMA else row.name
                          for row in unguarded)
        raise ConfigError(f"{len(unguarded)} unguarded feature(s), no value range/domain and no drift comparator: "
                          f"{names}",
                          f"add a value range/domain (int_domain, float_domain, string domain) or a "
                          f"drift_comparator for each to {schema_path}; a column not in the schema needs a "
                          f"feature there first")
    if not args.json:
        print(f"every feature is guarded ({len(rows)} features)")
    return 0


def _duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([wdhm])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d, 12h, 2w or 45m")
    unit = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
    return dt.timedelta(**{unit: int(match.group(1))})


def _days(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days (0 or more)")
    return int(text)


def register(commands) -> None:
    """Adds `mlops schema ...` to the CLI's subparsers (argument definitions only, no TFX)."""

    schema = commands.add_parser(
        "schema", help="history of schemas/taxi/schema.pbtxt: accept a span, diff, prune snapshots, lint",
        description="Every pipeline run snapshots the schema it uses under var/schemas/taxi/ and notes in "
        "history.jsonl when it changed. These commands list that history, change the schema so a span "
        "passes (recording who and why), compare schemas over time, prune old snapshots and lint the "
        "schema (every feature guarded by a range/domain or a drift check).",
    )
    actions = schema.add_subparsers(dest="schema_command", metavar="ACTION", required=True)

    history = actions.add_parser(
        "history", help="list schema changes: time, event, sha, span, who, why, what changed",
        description="One line per entry of var/schemas/taxi/history.jsonl, oldest first: snapshots taken "
        "by pipeline runs when the schema had changed, and acceptances by `mlops schema accept`.",
    )
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=cmd_history)

    accept = actions.add_parser(
        "accept", help="update the schema so that a span passes validation, propose ranges, and record why",
        description="Computes the span's statistics with TFDV, relaxes the schema for its anomalies "
        "(new features, domain values, ranges, presence) and raises the drift threshold of each feature "
        "whose drift blocked the span (from the drift validator's findings in ML Metadata) to 10% above "
        "the measured distance. Every INT/FLOAT feature without a string domain gets a value range "
        "proposed from the min/max of the spans that passed the data gates in the --history-days days "
        "before (their statistics in ML Metadata; blocked spans left out) and of the span itself, widened "
        "by 10% of the spread on each side, never past zero for a feature never seen on the other side "
        "or past its physical limit: a feature with no range gets one, a bound the history exceeds is "
        "widened, open bounds stay open, and a narrower range is only offered (--tighten applies it, "
        "given a week of passed spans). Without a passed span it uses the span alone and says so. The "
        "schema's leading comments are kept; the change and the spans the ranges came from are recorded "
        "in the history. Running it again for the same span changes nothing.",
    )
    accept.add_argument("--date", type=date_arg, required=True, help="span date, YYYY-MM-DD (data/incoming/DATE/)")
    accept.add_argument("--reason", help="why the change is acceptable (recorded in the history)")
    accept.add_argument("--by", help="who accepts it (default: $USER)")
    accept.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    accept.add_argument("--force", action="store_true",
                        help="also write changes that stop validating a feature (deprecated, removed, new type) "
                        "or let a range pass a physical limit")
    accept.add_argument("--history-days", type=_days, default=HISTORY_DAYS, metavar="N",
                        help=f"read the passed spans of the N days before DATE for ranges (default: {HISTORY_DAYS}; "
                        "0: the span alone)")
    accept.add_argument("--tighten", action="store_true",
                        help=f"also apply the narrower ranges history supports (needs {SPANS_TO_NARROW} passed spans)")
    accept.add_argument("--json", action="store_true",
                        help="print the result as JSON (with the range proposals, offers and their spans)")
    accept.set_defaults(handler=cmd_accept)

    diff = actions.add_parser(
        "diff", help="what changed in the schema since a time: features, types, presence, domains, drift",
        description="Compares the schema in force at the start (from the history and its snapshots) with "
        "the current schema, or the one in force at the end of --to. --from/--to are whole UTC days. When "
        "the history does not reach back that far, the oldest snapshot is used and a note says so.",
    )
    window = diff.add_mutually_exclusive_group()
    window.add_argument("--since", type=_duration, help="duration like 30d, 12h, 2w (default: 30d)")
    window.add_argument("--from", dest="start", type=date_arg, metavar="DATE", help="start of this day (UTC)")
    diff.add_argument("--to", type=date_arg, metavar="DATE", help="end of this day (UTC); needs --from")
    diff.add_argument("--unified", action="store_true", help="also print a unified diff of the two files")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.set_defaults(handler=cmd_diff)

    prune = actions.add_parser(
        "prune", help="delete schema snapshots out of force for more than --keep-days days",
        description="Pipeline runs prune after each snapshot (30 days); this runs it explicitly and prints "
        "what was removed. The current schema's snapshot and files the history does not name are kept; "
        "history.jsonl itself is never shortened.",
    )
    prune.add_argument("--keep-days", type=int, default=KEEP_DAYS, help="days to keep (default: 30)")
    prune.set_defaults(handler=cmd_prune)

    lint = actions.add_parser(
        "lint", help="list what guards each feature; fail on a feature with no range/domain and no drift check",
        description="One row per feature of the schema: type, presence (required: min_fraction 1.0, or "
        "optional), value range or domain (int/float min..max, a string domain with its value count and "
        "min_domain_mass), drift comparator and threshold, and a verdict. A feature with neither a range/domain "
        "nor a drift comparator is unguarded: any value passes validation. With --date, the span's CSV columns "
        "the schema does not know are listed as unguarded too. Exit 0 when every feature is guarded, 2 when "
        "one is not (the error names each and the fix).",
    )
    lint.add_argument("--schema", metavar="PATH", help="schema file (default: schemas/taxi/schema.pbtxt of the home)")
    lint.add_argument("--date", type=date_arg, help="also check span DATE's CSV columns (data/incoming/DATE/*.csv)")
    lint.add_argument("--json", action="store_true", help="print JSON")
    lint.set_defaults(handler=cmd_lint)
