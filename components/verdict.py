"""How a data gate records its verdict on its output artifact (and so in ML Metadata).

A gate node always completes and publishes its report artifact -- findings, distances and the
verdict are then queryable in ML Metadata like any other output. The node runner
(`pipelines.node_runner`) reads `blocked` back and stops the run with the recorded problem and
fix, so a blocked span never reaches Transform, Trainer or Pusher, and a cached rerun of the
same span blocks again with the same words.
"""

from __future__ import annotations

import json
from typing import Iterable, Optional

BLOCKED = "blocked"
PROBLEM = "problem"
FIX = "fix"
FINDINGS = "findings"
SPAN_DATE = "span_date"
GATE = "gate"


def fix_or_accept(span_date: str) -> str:
    """The fix a blocking data finding names: repair the producer, or accept the change."""
    return f"fix the data producer and rerun the span, or accept the change with `mlops schema accept --date {span_date}`"


def record(artifact, gate: str, span_date: str, findings: Iterable[dict], problem: str = "", fix: str = "") -> None:
    """Sets the verdict properties. `findings`: dicts with at least feature, kind, message, blocking."""
    findings = list(findings)
    blocked = any(finding.get("blocking") for finding in findings)
    artifact.set_string_custom_property(GATE, gate)
    artifact.set_string_custom_property(SPAN_DATE, span_date)
    artifact.set_int_custom_property(BLOCKED, int(blocked))
    artifact.set_string_custom_property(FINDINGS, json.dumps(findings, sort_keys=True))
    artifact.set_string_custom_property(PROBLEM, problem if blocked else "")
    artifact.set_string_custom_property(FIX, fix if blocked else "")


def blocking_message(span_date: str, findings: Iterable[dict], stage: str) -> str:
    lines = [f["message"] for f in findings if f.get("blocking")]
    return f"span {span_date} blocked {stage}: " + "; ".join(lines)


def verdict_of(properties) -> Optional[tuple]:
    """(problem, fix) when an MLMD artifact's custom properties say blocked, else None."""
    blocked = properties.get(BLOCKED)
    if blocked is None or blocked.int_value != 1:
        return None
    problem = properties[PROBLEM].string_value if PROBLEM in properties else "a data gate blocked the span"
    fix = properties[FIX].string_value if FIX in properties else "see the gate's report"
    return problem, fix
