"""The DAGs' Airflow assets: the span the nightly run reads and accepts, the model versions pushed.

Run with the Airflow environment's Python (the airflow_python fixture). The first tests read the
declared inlets and outlets; the last ones run the DAGs for real (`dag.test()`, in-process, with a
throwaway Airflow database) against a fake `mlops` command (MLOPS_BIN) that plays the TFX side of
each scenario, then read the asset events Airflow recorded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SPAN, MODEL, PUSHES = "taxi_span", "taxi_model", "taxi_model_pushes"


def declared(airflow_python, cwd: Path, home: Path) -> dict:
    return airflow_python(
        f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        assert not bag.import_errors, bag.import_errors

        def port(p):
            return {{"type": type(p).__name__, "name": p.name, "uri": getattr(p, "uri", None)}}
        out = {{}}
        for dag_id in ("nightly_retrain", "model_rollback"):
            dag = bag.dags[dag_id]
            out[dag_id] = {{t.task_id: {{"inlets": [port(p) for p in t.inlets], "outlets": [port(p) for p in t.outlets],
                                        "operator": type(t).__name__}}
                           for t in dag.tasks}}
        print(json.dumps(out))
        """,
        cwd,
        MLOPS_HOME=str(home),
    )


@pytest.fixture(scope="module")
def ports(airflow_python, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("assets")
    home = tmp / "home"
    home.mkdir()
    return declared(airflow_python, tmp, home), home


def test_the_span_readers_declare_the_span_and_the_gate_and_the_pusher_their_outlets(ports):
    found, home = ports
    nightly = found["nightly_retrain"]
    span = {"type": "Asset", "name": SPAN, "uri": f"file://{home.resolve()}/data/incoming"}
    alias = {"type": "AssetAlias", "name": PUSHES, "uri": None}
    assert nightly["SpanCheck"]["inlets"] == [span] and nightly["CsvExampleGen"]["inlets"] == [span]
    # The span is accepted when it passes the data gates: the DriftValidator task's success.
    assert nightly["DriftValidator"]["outlets"] == [span]
    # A model event only when a version was pushed: an alias the task adds the event through at run time.
    assert nightly["AtomicPusher"]["outlets"] == [alias] and nightly["AtomicPusher"]["operator"] == "TfxPusherOperator"
    for task_id, task in nightly.items():
        if task_id not in ("SpanCheck", "CsvExampleGen", "DriftValidator", "AtomicPusher"):
            assert task["inlets"] == [] and task["outlets"] == [], task_id
    assert found["model_rollback"]["rollback"]["outlets"] == [alias]
    assert found["model_rollback"]["rollback"]["operator"] == "RollbackOperator"


def test_asset_uris_follow_the_project_home(ports, airflow_python, tmp_path):
    (tmp_path / "other").mkdir()
    other = declared(airflow_python, tmp_path, tmp_path / "other")
    first = ports[0]["nightly_retrain"]["SpanCheck"]["inlets"][0]["uri"]
    second = other["nightly_retrain"]["SpanCheck"]["inlets"][0]["uri"]
    assert first != second and second == f"file://{(tmp_path / 'other').resolve()}/data/incoming"


# ---- running the DAGs against a fake `mlops`

# Plays `mlops node run`, `mlops summary [--json]` and `mlops rollback --json` from scenario.json:
# {date: {"exit": {node: code}, "fail_once": node, "version": N|null, "state": "complete"|"cached"},
#  "rollback": {reason: result}}.
FAKE_MLOPS = """\
#!{python}
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
state = Path(os.environ["FAKE_STATE"])
scenario = json.loads((state / "scenario.json").read_text())


def opt(name):
    return args[args.index(name) + 1] if name in args else None


def runs(run_id):
    return state / ("run-" + run_id.replace("/", "_").replace(":", "_"))


if args[2:4] == ["node", "run"]:
    node, run_id, date = opt("--node"), opt("--run-id"), opt("--date")
    runs(run_id).write_text(date)
    day = scenario.get(date, dict())
    print("node", node, "run", run_id, "span", date)
    if day.get("fail_once") == node and not (state / ("failed-" + date)).exists():
        (state / ("failed-" + date)).write_text("")
        sys.exit(1)
    sys.exit(int(day.get("exit", dict()).get(node, 0)))
if args[2] == "summary" and "--json" in args:
    run_id = opt("--run-id")
    date = runs(run_id).read_text()
    day = scenario[date]
    print("some warning on stdout first")
    print(json.dumps(dict(run_id=run_id, span=date, node_states=dict(AtomicPusher=day.get("state", "complete")),
                          blessed=day.get("version") is not None, blessing_reason="AUC 0.71 >= 0.6",
                          pushed_version=day.get("version"),
                          push_reason="pushed" if day.get("version") else "not blessed"), indent=2))
    sys.exit(0)
if args[2] == "summary":
    sys.exit(0)
if args[2] == "rollback":
    print(json.dumps(scenario["rollback"][opt("--reason")], indent=2))
    sys.exit(0)
print("unexpected", args, file=sys.stderr)
sys.exit(2)
"""

DAYS = {
    "2026-03-01": {"version": 1},  # blessed and pushed
    "2026-03-02": {"version": None},  # not blessed: nothing pushed
    "2026-03-03": {"exit": {"DriftValidator": 3}},  # blocked by the drift gate
    "2026-03-04": {"version": 1, "state": "cached"},  # the Pusher served from another run's cache
    "2026-03-05": {"version": 2, "state": "cached", "fail_once": "AtomicPusher"},  # pushed, the try failed after
}
ROLLBACKS = {
    "canary alert": {"run_id": "rollback-1", "new_version": 3, "replaced_version": 2, "reason": "canary alert",
                     "requested_by": "on-call", "trigger": "manual", "target": {"version": 1}, "notes": []},
    "late alert": {"no_longer_served": 2, "served": 3},
}


@pytest.fixture(scope="module")
def events(airflow_python, tmp_path_factory):
    """The asset events and DAG run states after one nightly run per day of DAYS and two rollbacks."""
    tmp = tmp_path_factory.mktemp("asset-events")
    home, state = tmp / "home", tmp / "state"
    home.mkdir()
    state.mkdir()
    fake = tmp / "mlops"
    fake.write_text(FAKE_MLOPS.format(python=sys.executable))
    fake.chmod(0o755)
    (state / "scenario.json").write_text(json.dumps({**DAYS, "rollback": ROLLBACKS}))
    return airflow_python(
        f"""
        import datetime as dt, json, os, subprocess, sys
        airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
        subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
        from airflow.dag_processing.dagbag import DagBag
        from airflow.models.asset import AssetEvent
        from airflow.utils.session import create_session
        from sqlalchemy import select

        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        assert not bag.import_errors, bag.import_errors
        runs = {{}}
        for day in {sorted(DAYS)!r}:
            run = bag.dags["nightly_retrain"].test(run_conf={{"date": day, "train_steps": 1}})
            runs[day] = {{"run_id": run.run_id, "state": str(run.state)}}
        for reason in {sorted(ROLLBACKS)!r}:
            run = bag.dags["model_rollback"].test(run_conf={{"reason": reason}})
            runs[reason] = {{"run_id": run.run_id, "state": str(run.state)}}
        with create_session() as session:
            found = [{{"asset": e.asset.name, "uri": e.asset.uri, "dag": e.source_dag_id, "task": e.source_task_id,
                       "run": e.source_run_id, "extra": e.extra}} for e in session.scalars(select(AssetEvent))]
        print(json.dumps({{"runs": runs, "events": found}}))
        """,
        tmp,
        MLOPS_HOME=str(home), MLOPS_BIN=str(fake), FAKE_STATE=str(state), MLOPS_RETRY_DELAY_SECONDS="1",
    ) | {"home": str(home.resolve())}


def _of(events, asset: str, run: str) -> list:
    return [e for e in events["events"] if e["asset"] == asset and e["run"] == events["runs"][run]["run_id"]]


def test_a_span_that_passes_the_gates_is_an_event_with_the_span_and_the_tfx_run(events):
    for day in ("2026-03-01", "2026-03-02", "2026-03-04", "2026-03-05"):
        run = events["runs"][day]
        assert run["state"] == "success", (day, run)
        [event] = _of(events, SPAN, day)
        assert event["task"] == "DriftValidator" and event["uri"] == f"file://{events['home']}/data/incoming"
        assert event["extra"] == {"span": day, "run_id": f"nightly_retrain__{run['run_id']}"}, event


def test_a_blocked_span_is_no_event(events):
    assert events["runs"]["2026-03-03"]["state"] == "failed"
    assert _of(events, SPAN, "2026-03-03") == [] and _of(events, MODEL, "2026-03-03") == []


def test_a_pushed_version_is_a_model_event_with_span_version_and_blessing(events):
    [event] = _of(events, MODEL, "2026-03-01")
    run_id = f"nightly_retrain__{events['runs']['2026-03-01']['run_id']}"
    assert event["task"] == "AtomicPusher" and event["uri"] == f"file://{events['home']}/serving/models/taxi"
    assert event["extra"] == {"kind": "nightly", "pushed_version": 1, "span": "2026-03-01", "blessed": True,
                              "blessing_reason": "AUC 0.71 >= 0.6", "run_id": run_id, "push_reason": "pushed"}


def test_a_night_that_pushes_nothing_is_no_model_event(events):
    assert _of(events, MODEL, "2026-03-02") == []  # not blessed
    assert _of(events, MODEL, "2026-03-04") == []  # a cached Pusher: another run's push, nothing pushed now


def test_a_push_whose_try_failed_afterwards_is_recorded_by_the_retry(events):
    # The first try of AtomicPusher failed after the node (Airflow records no event for a failed
    # try); the retry is served from this run's cache and adds the event for version 2.
    [event] = _of(events, MODEL, "2026-03-05")
    assert event["extra"]["pushed_version"] == 2 and event["extra"]["span"] == "2026-03-05", event


def test_a_rollback_that_pushed_is_a_model_event_and_one_with_nothing_to_do_is_none(events):
    assert events["runs"]["canary alert"]["state"] == events["runs"]["late alert"]["state"] == "success"
    [event] = _of(events, MODEL, "canary alert")
    assert event["dag"] == "model_rollback" and event["task"] == "rollback"
    assert event["extra"] == {"kind": "rollback", "pushed_version": 3, "span": None, "blessed": True,
                              "blessing_reason": "", "run_id": "rollback-1", "push_reason": "canary alert",
                              "model_of_version": 1, "replaced_version": 2, "requested_by": "on-call",
                              "trigger": "manual"}
    assert _of(events, MODEL, "late alert") == []
    # Every model event in all: the three pushes (v1, v2 on the retry, the rollback's v3).
    assert sorted(e["extra"]["pushed_version"] for e in events["events"] if e["asset"] == MODEL) == [1, 2, 3]

