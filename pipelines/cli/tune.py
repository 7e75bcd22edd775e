"""`mlops tune`: weekly hyperparameter tuning (TFX's Tuner with KerasTuner; pipelines/tuning.py)."""

from __future__ import annotations

import contextlib
import json
import sys

from pipelines.cli.common import date_arg, project_config, require_metadata


def cmd_tune(args) -> int:
    import dataclasses

    from pipelines.config import DEFAULT_WINDOW_DAYS
    from pipelines.tuning import run_tuning

    config = require_metadata(project_config(args))
    config = dataclasses.replace(config, train_steps=args.train_steps, eval_steps=args.eval_steps,
                                 window_days=args.window_days or DEFAULT_WINDOW_DAYS, enable_cache=not args.no_cache)
    if args.json:  # KerasTuner prints its trials' summaries: to stderr, so stdout is the JSON alone
        with contextlib.redirect_stdout(sys.stderr):
            result = run_tuning(config, args.date, args.trials, progress=lambda _: None)
    else:
        result = run_tuning(config, args.date, args.trials)
    if args.json:
        print(json.dumps(dataclasses.asdict(result), sort_keys=True))
        return 0
    values = ", ".join(f"{k} {v}" for k, v in sorted(result.values.items()))
    reused = " (reused: the same window, settings and code were tuned before)" if result.status == "cached" else ""
    print(f"best hyperparameters: {values}; artifact {result.artifact_id}{reused}")
    print("the next nightly run trains with them (`mlops lineage --version V` shows the tuning it used)")
    return 0


def register(commands) -> None:
    from pipelines.tuning import DEFAULT_TRIALS

    parser = commands.add_parser(
        "tune",
        help="search the model's hyperparameters on the last window of good spans (TFX Tuner)",
        description="Runs TFX's Tuner (KerasTuner random search over the learning rate and the deep tower's "
        "widths: pipelines/taxi/model_options.py SEARCH_SPACE) on the raw Examples of the window of spans that "
        "passed every data gate, ending with --date (default: the newest good span), through the newest night's "
        "transform graph. The best trial's values are recorded in ML Metadata as a HyperParameters artifact; "
        "every later nightly Trainer takes the newest one instead of the defaults, and `mlops lineage` shows "
        "which tuning a model was trained with. Tuning the same window with the same settings again reuses the "
        "result (TFX's cache; --no-cache searches again). The weekly_tuning DAG runs this every week.",
    )
    parser.add_argument("--date", type=date_arg,
                        help="the window's newest span, YYYY-MM-DD (default: the newest span that passed the gates)")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"models to train and compare (default: {DEFAULT_TRIALS})")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps per trial (default: 300)")
    parser.add_argument("--eval-steps", type=int, default=50, help="evaluation steps per trial (default: 50)")
    parser.add_argument("--window-days", type=int, default=0, metavar="N",
                        help="days in the window (default: the nightly run's default window)")
    parser.add_argument("--no-cache", action="store_true", help="search again even if this window was tuned before")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_tune)
