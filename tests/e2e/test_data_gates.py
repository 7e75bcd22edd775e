"""Every fault kind of `mlops data make-span`, end to end through the real pipeline.

After one good run (version 1 pushed), each kind gets its own span and a full `mlops run`
(in a fork of the home's warm worker, which has TFX imported; run inside pytest's process, as
before, their nodes took 3-8x as long beside the other shared setups): the run must stop before
Transform/Trainer, the error must name the feature and the fault, the verdict must be in ML
Metadata, the served model must not move, and the span's files must be untouched. Then a drift
just under the schema's threshold passes and just over it blocks.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest

from serving import versions
from tests import prepared
from tests.conftest import DAY1, FAST_RUN_ARGS, KEEP_WORKER, REPO, make_home, mlops, readonly_store

# kind -> (the gate that blocks it, the feature the error must name, words naming the fault)
FAULTS = {
    "missing_column": ("SpanCheck", "tips", "required column missing"),
    "extra_column": ("SpanCheck", "surge_multiplier", "not in the schema"),
    "strings_in_numeric": ("SpanCheck", "fare", "not numbers"),
    "empty_file": ("SpanCheck", "data.csv", "no rows"),
    "no_files": ("SpanCheck", "span", "no CSV file"),
    "malformed_row": ("SpanCheck", "data.csv", "fields"),
    "non_utf8": ("SpanCheck", "company", "not UTF-8"),
    "duplicates": ("SpanCheck", "rows", "duplicates"),
    "all_null": ("DriftValidator", "trip_miles", "not present in any examples"),
    "unknown_category": ("DriftValidator", "payment_type", "Unexpected string values"),
    "out_of_range": ("DriftValidator", "fare", "Out-of-range values"),
    "drift": ("DriftValidator", "trip_miles", "Jensen-Shannon divergence"),
    "categorical_shift": ("DriftValidator", "payment_type", "L-infinity distance"),
    "label_shift": ("DriftValidator", "tips", "Jensen-Shannon divergence"),
}
FIRST_FAULT_DAY = dt.date(2026, 12, 1)
NEVER_REACHED = ("Transform", "Trainer", "GatedEvaluator", "AtomicPusher")


@dataclasses.dataclass
class Outcome:
    kind: str
    day: dt.date
    code: int
    out: str
    err: str
    node_states: dict
    verdicts: list  # (gate, blocked, findings) recorded in ML Metadata for the run
    files_before: dict
    files_after: dict
    served_before: tuple
    served_after: tuple


def _files(folder: Path) -> dict:
    """{relative path: sha256} of every file under `folder`."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _served(models: Path) -> tuple:
    return tuple(versions.list_versions(models)), _files(models / "1")


def _run_in_worker(home: Path, day: dt.date, *extra: str):
    """`mlops run` in a fork of the home's warm worker (started by the good run, kept by KEEP_WORKER)."""
    result = mlops(home, "run", "--date", day.isoformat(), *FAST_RUN_ARGS, "--json", *extra, check=False,
                   timeout=1200, env=KEEP_WORKER)
    return result.returncode, result.stdout, result.stderr


def _run_context_verdicts(home: Path, run_id: str) -> list:
    store = readonly_store(home)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    found = []
    for artifact in store.get_artifacts_by_context(context.id) if context else []:
        props = artifact.custom_properties
        if "gate" in props:
            found.append((props["gate"].string_value, props["blocked"].int_value,
                          json.loads(props["findings"].string_value)))
    return found


def _run_id(text: str) -> str:
    match = re.search(r"run (local__[^\s:]+)", text)
    assert match, text[-3000:]
    return match[1]


@prepared.setup("gated", lane="gates")  # beside the other shared setups (tests/prepared.py)
def _gated(tmp_path_factory) -> dict:
    home = make_home(tmp_path_factory.mktemp("gates"))
    models = home / "serving" / "models" / "taxi"
    # The validations below run in this home's warm worker, after the other shared setups: it stays.
    mlops(home, "run", "--date", DAY1.isoformat(), *FAST_RUN_ARGS, "--auc-floor", "0.5", timeout=1200, env=KEEP_WORKER)
    assert versions.list_versions(models) == [1]
    outcomes = {}
    for offset, kind in enumerate(FAULTS):
        day = FIRST_FAULT_DAY + dt.timedelta(days=offset)
        mlops(home, "data", "make-span", "--date", day.isoformat(), "--fault", kind)
        folder = home / "data" / "incoming" / day.isoformat()
        files_before, served_before = _files(folder), _served(models)
        code, out, err = _run_in_worker(home, day, "--auc-floor", "0.0", "--min-improvement", "-1")
        summary = json.loads(out[out.index("{"):]) if "{" in out else {}
        outcomes[kind] = Outcome(kind, day, code, out, err, summary.get("node_states", {}),
                                 _run_context_verdicts(home, _run_id(out + err)), files_before, _files(folder),
                                 served_before, _served(models))
    return dict(home=home, models=models, outcomes=outcomes)


@pytest.fixture(scope="module")
def gated(request) -> dict:
    out = prepared.result(request, "gated")
    yield out
    mlops(out["home"], "worker", "stop", check=False)


@pytest.mark.parametrize("kind", list(FAULTS))
def test_fault_stops_the_run_before_training_names_it_and_loses_nothing(gated, kind):
    gate, feature, words = FAULTS[kind]
    outcome = gated["outcomes"][kind]
    assert outcome.code == 3, f"{kind}: exit {outcome.code}\n{outcome.out[-3000:]}\n{outcome.err[-3000:]}"
    stopped = re.search(r"run stopped at (\S+): (.*)", outcome.err)
    assert stopped and stopped[1] == gate, outcome.err[-3000:]
    reason = stopped[2]
    assert feature in reason and words in reason, f"{kind}: {reason}"
    assert re.search(r"\(.*rerun the span.*\)$", reason), f"{kind}: no fix in {reason}"  # the fix, last
    for node in NEVER_REACHED:
        assert node not in outcome.node_states, (kind, outcome.node_states)
    # Recorded in ML Metadata: the gate's verdict artifact, blocked, with the finding.
    blocked = [(g, findings) for g, is_blocked, findings in outcome.verdicts if is_blocked]
    assert blocked, f"{kind}: no blocked verdict in ML Metadata: {outcome.verdicts}"
    assert any(words in f["message"] for _, findings in blocked for f in findings if f["blocking"]), blocked
    # Nothing lost: the served model and the span's files are exactly as they were.
    assert outcome.served_after == outcome.served_before == ((1,), outcome.served_before[1])
    assert outcome.files_after == outcome.files_before


def test_a_clean_span_after_the_faults_still_passes_the_gates(gated):
    home = gated["home"]
    day = FIRST_FAULT_DAY + dt.timedelta(days=len(FAULTS))
    mlops(home, "data", "make-span", "--date", day.isoformat(), "--fault", "none")
    result = mlops(home, "validate", "--date", day.isoformat(), "--json", check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not report["blocked"] and not [f for f in report["findings"] if f["blocking"]]
    # Blocked spans never became the baseline: the drift check compared with the first good span.
    assert any(DAY1.isoformat() in note for note in report["baselines"]), report["baselines"]
    assert {"trip_miles", "payment_type", "tips"} <= set(report["drift"])


def test_a_shift_just_under_the_threshold_passes_and_just_over_blocks(gated, tmp_path):
    home = gated["home"]
    day = FIRST_FAULT_DAY + dt.timedelta(days=list(FAULTS).index("drift"))
    measured = json.loads(mlops(home, "validate", "--date", day.isoformat(), "--json", check=False).stdout)
    distance = measured["drift"]["trip_miles"]["distance"]
    schema = (REPO / "schemas" / "taxi" / "schema.pbtxt").read_text()

    def with_threshold(value: float) -> Path:
        block = re.search(r'name: "trip_miles".*?threshold: ([0-9.]+)', schema, flags=re.S)
        path = tmp_path / f"schema-{value:.4f}.pbtxt"
        path.write_text(schema[: block.start(1)] + f"{value:.4f}" + schema[block.end(1):])
        return path

    under = mlops(home, "validate", "--date", day.isoformat(), "--json", "--schema", str(with_threshold(distance + 0.005)),
                  check=False)
    over = mlops(home, "validate", "--date", day.isoformat(), "--json", "--schema", str(with_threshold(distance - 0.005)),
                 check=False)
    assert under.returncode == 0, under.stdout[-3000:]
    assert over.returncode == 3, over.stdout[-3000:]
    assert json.loads(over.stdout)["drift"]["trip_miles"]["distance"] == pytest.approx(distance, abs=1e-6)
    assert any(f["feature"] == "trip_miles" and f["blocking"] for f in json.loads(over.stdout)["findings"])


def test_warn_setting_lets_the_drift_through_with_a_warning(gated):
    home = gated["home"]
    day = FIRST_FAULT_DAY + dt.timedelta(days=list(FAULTS).index("categorical_shift"))
    (home / "schemas" / "taxi" / "gates.toml").write_text('[drift]\nwarn = ["payment_type"]\n')
    try:
        result = mlops(home, "validate", "--date", day.isoformat(), "--json", check=False)
    finally:
        (home / "schemas" / "taxi" / "gates.toml").unlink()
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout[-3000:]
    warned = [f for f in report["findings"] if f["feature"] == "payment_type"]
    assert warned and not any(f["blocking"] for f in warned), warned
    assert "allowed by the warn setting" in warned[0]["message"]


def test_accepting_a_blocked_span_records_the_change_and_the_span_then_passes(gated):
    home = gated["home"]
    day = FIRST_FAULT_DAY + dt.timedelta(days=list(FAULTS).index("extra_column"))
    accepted = mlops(home, "schema", "accept", "--date", day.isoformat(), "--reason", "new tariff field", "--by", "ops")
    assert "surge_multiplier: new feature" in accepted.stdout
    result = mlops(home, "validate", "--date", day.isoformat(), "--json", check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    history = json.loads(mlops(home, "schema", "history", "--json").stdout)
    accept = [entry for entry in history if entry["event"] == "accept"]
    assert accept and accept[-1]["span"] == day.isoformat() and accept[-1]["by"] == "ops"
    # The run after the accept imported the new schema (a new content-addressed snapshot).
    assert accept[-1]["to_sha"][:12] in {p.stem for p in (home / "var" / "schemas" / "taxi").glob("*.pbtxt")}
