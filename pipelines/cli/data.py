"""`mlops data seed|make-span`: the bundled taxi data as daily spans, and spans with one fault."""

from __future__ import annotations

from pipelines.cli.common import date_arg, project_paths, yesterday

def cmd_data_seed(args) -> int:
    from pipelines.data import SeedPlan, seed

    paths = project_paths(args)
    plan = SeedPlan(end=args.end or yesterday(), days=args.days, rows_per_day=args.rows_per_day, seed=args.seed)
    seed(paths.data_root, plan, overwrite=args.overwrite)
    return 0


def cmd_data_make_span(args) -> int:
    from pipelines.data import DEFAULT_SEVERITY, FaultSpec, make_span

    paths = project_paths(args)
    fault = FaultSpec(args.fault, args.column, args.severity)
    path = make_span(paths.data_root, args.date, fault, rows=args.rows, seed_value=args.seed, overwrite=args.overwrite)
    target = f" on {fault.target}" if fault.target and fault.kind != "none" else ""
    severity = f" (severity {fault.amount:g})" if fault.kind in DEFAULT_SEVERITY or args.severity is not None else ""
    print(f"span {args.date}: wrote {path} with fault {fault.kind}{target}{severity}")
    return 0


def register(commands) -> None:
    data = commands.add_parser("data", help="bundled data and generated spans")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    seed = data_commands.add_parser(
        "seed",
        help="split the bundled Chicago taxi data into daily spans under data/incoming/",
        description="Write data/incoming/YYYY-MM-DD/data.csv for N days ending at --end. Deterministic for a "
        "given --seed; existing spans are kept unless --overwrite. More rows than the bundled sample "
        "(about 15k) are resampled with small noise.",
    )
    seed.add_argument("--days", type=int, default=5, help="number of daily spans (default: 5)")
    seed.add_argument("--rows-per-day", type=int, help="rows per span (default: bundled rows / days)")
    seed.add_argument("--end", type=date_arg, help="last span date (default: yesterday)")
    seed.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    seed.add_argument("--overwrite", action="store_true", help="rewrite spans that already exist")
    seed.set_defaults(handler=cmd_data_seed)
    from pipelines.data import FAULTS

    make_span = data_commands.add_parser(
        "make-span",
        help="write a span with one fault injected (tests, demos, drills)",
        description="Write data/incoming/DATE/ from the bundled taxi data with one fault: "
        + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()) + ".",
    )
    make_span.add_argument("--date", type=date_arg, required=True, help="span date, YYYY-MM-DD")
    make_span.add_argument("--fault", required=True, choices=sorted(FAULTS), help="what to break")
    make_span.add_argument("--column", help="column to break (default depends on the fault)")
    make_span.add_argument("--severity", type=float,
                           help="fraction of rows / size of the shift (default: depends on the fault)")
    make_span.add_argument("--rows", type=int, default=1500, help="rows in the span (default: 1500)")
    make_span.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    make_span.add_argument("--overwrite", action="store_true", help="replace an existing span")
    make_span.set_defaults(handler=cmd_data_make_span)
