"""Which spans a model trained on, and why the other days of its window were left out.

The Trainer records the spans on its Model (components/window); the days it skipped are
explained from the data gates' reports in ML Metadata as they stood when the model was trained
(reports written later, e.g. a day validated afterwards, do not rewrite history).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Dict, List, Optional

from components.window.properties import EVAL_SPAN, TRAIN_SPANS, WINDOW_DAYS

BLOCKED_GATE = "blocked by {gate}: {problem}"
NOT_GATED = "no span recorded: no data that day, or never gated (`mlops validate --date DAY` gates it)"
NOT_FINISHED = "its data gates did not finish (the span check passed; run it again to gate it)"


def _string(props, key: str) -> str:
    return props[key].string_value if key in props else ""


def _int(props, key: str) -> int:
    return props[key].int_value if key in props else 0


def skip_reasons(store, days: List[str], before_artifact_id: int) -> Dict[str, str]:
    """{day: why it is not in the window} from the newest gate report on each day written before
    `before_artifact_id` (artifact ids grow with time)."""
    from ml_metadata.metadata_store import metadata_store

    reasons: Dict[str, str] = {}
    if not days:
        return reasons
    quoted = ", ".join(f"'{d}'" for d in days)
    reports = store.get_artifacts(list_options=metadata_store.ListOptions(
        filter_query=f"type = 'ExampleAnomalies' AND custom_properties.span_date.string_value IN ({quoted}) "
                     f"AND id < {int(before_artifact_id)}"))
    standing = {}
    for report in sorted(reports, key=lambda a: a.id):
        if _string(report.custom_properties, "gate"):
            standing[_string(report.custom_properties, "span_date")] = report
    for day in days:
        report = standing.get(day)
        if report is None:
            reasons[day] = NOT_GATED
        elif _int(report.custom_properties, "blocked") == 1:
            problem = _string(report.custom_properties, "problem") or "see its report"
            reasons[day] = BLOCKED_GATE.format(gate=_string(report.custom_properties, "gate"), problem=problem)
        else:
            reasons[day] = NOT_FINISHED
    return reasons


def describe(store, model) -> Optional[dict]:
    """{"days", "train_spans", "eval_span", "skipped": [{"span", "reason"}]} of a Model artifact
    (an MLMD proto), or None for a model trained before windows were recorded."""
    props = model.custom_properties
    if EVAL_SPAN not in props:
        return None
    days = _int(props, WINDOW_DAYS) or 1
    train = json.loads(_string(props, TRAIN_SPANS) or "[]")
    newest = dt.date.fromisoformat(_string(props, EVAL_SPAN))
    window = [(newest - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]
    missing = [d for d in window if d not in train and d != newest.isoformat()]
    reasons = skip_reasons(store, missing, model.id)
    return {"days": days, "train_spans": train, "eval_span": newest.isoformat(),
            "skipped": [{"span": d, "reason": reasons[d]} for d in missing]}


def lines(window: Optional[dict]) -> List[str]:
    """The summary's lines for a window."""
    if not window:
        return []
    train, held = window["train_spans"], window["eval_span"]
    if train == [held]:
        out = [f"  window:    {window['days']} day(s); trained on {held} alone (its train split; nothing older "
               "passed the gates), evaluated on its eval split"]
    else:
        out = [f"  window:    {window['days']} days; trained on {len(train)} span(s) {', '.join(train)}; "
               f"evaluated on {held} (held out)"]
    for first, last, reason in _runs(window["skipped"]):
        days = first if first == last else f"{first}..{last}"
        out.append(f"  skipped:   {days}: {reason}")
    return out


def _runs(skipped: List[dict]):
    """Consecutive days with the same reason as (first, last, reason)."""
    runs: List[list] = []
    for skip in skipped:
        day = dt.date.fromisoformat(skip["span"])
        if runs and runs[-1][2] == skip["reason"] and runs[-1][1] + dt.timedelta(days=1) == day:
            runs[-1][1] = day
        else:
            runs.append([day, day, skip["reason"]])
    return [(a.isoformat(), b.isoformat(), reason) for a, b, reason in runs]
