"""`mlops score` on the shared pipeline runs: predictions per row equal to the model server's answers,
reuse, ML Metadata, refusals.

The shared setups are read-only: each test scores a copy of their home (data, schema, model
directory, ML Metadata; the span files keep their mtimes, which ExampleGen's fingerprint holds).
`runs` (tests/e2e/conftest.py) pushed versions 2 and 3 on disk (1 was deleted by retention) after
runs of DAY1 and DAY2; `gated` (test_data_gates.py) holds spans its gates blocked.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from components.util.spans import span_number
from tests import prepared
from tests.conftest import DAY1, DAY2, mlops, readonly_store
from tests.e2e import test_data_gates  # registers the `gated` setup
from tests.serving.helpers import Http, Server, schema_kinds


def copy_home(source: Path, root: Path) -> Path:
    """What scoring reads from a home, copied with file times kept."""
    home = root / "home"
    for part in ("data", "schemas", "serving"):
        if (source / part).exists():
            shutil.copytree(source / part, home / part)
    (home / "var").mkdir(parents=True)
    shutil.copy2(source / "var" / "metadata.sqlite", home / "var" / "metadata.sqlite")
    return home


@pytest.fixture(scope="module")
def gated(request) -> dict:
    """The `gated` setup's result; its home's warm worker is stopped afterwards, as test_data_gates does."""
    out = prepared.result(request, "gated")
    yield out
    mlops(out["home"], "worker", "stop", check=False)


@pytest.fixture(scope="module")
def scored(runs, tmp_path_factory) -> dict:
    home = copy_home(runs["home"], tmp_path_factory.mktemp("scoring"))
    served = [row["version"] for row in runs["listed"] if row["serving"]]
    assert served == [3] and runs["after_retained"] == [2, 3], (served, runs["after_retained"])
    done = mlops(home, "score", "--date", DAY2.isoformat(), "--json")
    return {"home": home, "served": served[0], "first": json.loads(done.stdout), "progress": done.stderr,
            "listed": runs["listed"]}


def csv_rows(home: Path, day: dt.date) -> list:
    with open(home / "data" / "incoming" / day.isoformat() / "data.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_scores(path: str):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def test_one_prediction_per_row_keyed_by_row_equal_to_the_model_servers_answers(scored, tmp_path):
    first, home = scored["first"], scored["home"]
    rows = csv_rows(home, DAY2)
    assert not first["reused"] and first["version"] == scored["served"] and first["rows"] == len(rows)
    assert Path(first["path"]) == home / "var" / "scores" / DAY2.isoformat() / "v3.parquet"
    assert "scoring span" in scored["progress"]
    table = read_scores(first["path"])
    assert table.column_names == ["span_date", "file", "row", "probabilities"]
    assert set(table.column("span_date").to_pylist()) == {DAY2.isoformat()}
    assert set(table.column("file").to_pylist()) == {"data.csv"}
    assert table.column("row").to_pylist() == list(range(len(rows)))
    scores = table.column("probabilities").to_numpy()
    assert np.all((scores >= 0) & (scores <= 1)) and len(set(scores.tolist())) > 10

    # The real model server, asked for the same rows as a client would send them (JSON, typed by the schema).
    kinds = schema_kinds(home / "schemas" / "taxi" / "schema.pbtxt")
    instances = [{name: int(value) if kinds[name] == "INT" else float(value) if kinds[name] == "FLOAT" else value
                  for name, value in row.items() if name != "tips" and value != ""} for row in rows]
    server = Server(home, tmp_path / "serve.log", base=home / "serving" / "models" / "taxi")
    try:
        server.wait_serving(scored["served"])
        client, answers = Http(server.rest_port), []
        for start in range(0, len(instances), 100):
            code, _, body = client.post(f"/v1/models/taxi/versions/{scored['served']}:predict",
                                        {"instances": instances[start:start + 100]})
            assert code == 200, body
            answers.extend(p[0] for p in body["predictions"])
    finally:
        server.stop()
    np.testing.assert_allclose(scores, np.array(answers), rtol=0, atol=1e-5)


def test_scoring_again_reuses_the_file_and_another_version_scores_again(scored):
    home, first = scored["home"], scored["first"]
    path = Path(first["path"])
    before = path.stat()
    again = mlops(home, "score", "--date", DAY2.isoformat())
    assert again.stdout.startswith("reused:") and str(path) in again.stdout, again.stdout
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)

    other = json.loads(mlops(home, "score", "--date", DAY2.isoformat(), "--version", "2", "--json").stdout)
    assert not other["reused"] and other["version"] == 2 and Path(other["path"]).name == "v2.parquet"
    assert other["model_id"] != first["model_id"]
    v2 = read_scores(other["path"]).column("probabilities").to_numpy()
    v3 = read_scores(first["path"]).column("probabilities").to_numpy()
    assert len(v2) == len(v3) and not np.allclose(v2, v3, atol=1e-6)
    assert path.stat().st_mtime_ns == before.st_mtime_ns  # version 3's file untouched
    third = json.loads(mlops(home, "score", "--date", DAY2.isoformat(), "--version", "2", "--json").stdout)
    assert third["reused"] and third["path"] == other["path"]


def test_ml_metadata_records_the_model_and_the_span_in_and_the_scores_out(scored):
    from ml_metadata.proto import metadata_store_pb2 as pb

    home, first = scored["home"], scored["first"]
    reuse = json.loads(mlops(home, "score", "--date", DAY2.isoformat(), "--json").stdout)
    store = readonly_store(home)
    names = {t.id: t.name for t in store.get_artifact_types()}
    pushed = next(row for row in scored["listed"] if row["version"] == 3)
    for result, state in ((first, pb.Execution.COMPLETE), (reuse, pb.Execution.CACHED)):
        [execution] = store.get_executions_by_id([result["execution_id"]])
        assert store.get_execution_types_by_id([execution.type_id])[0].name == "BatchScorer"
        assert execution.last_known_state == state
        events = store.get_events_by_execution_ids([execution.id])
        by_key = {(e.type, e.path.steps[0].key): e.artifact_id for e in events}
        assert set(by_key) == {(pb.Event.INPUT, "model"), (pb.Event.INPUT, "pushed_model"),
                               (pb.Event.INPUT, "examples"), (pb.Event.OUTPUT, "scores")}
        found = {a.id: a for a in store.get_artifacts_by_id(list(by_key.values()))}
        model, pushed_model, examples, scores = (found[by_key[key]] for key in [
            (pb.Event.INPUT, "model"), (pb.Event.INPUT, "pushed_model"), (pb.Event.INPUT, "examples"),
            (pb.Event.OUTPUT, "scores")])
        assert names[model.type_id] == "Model" and model.id == pushed["model_id"]
        assert names[pushed_model.type_id] == "PushedModel" and pushed_model.id == pushed["artifact_id"]
        assert names[examples.type_id] == "Examples"
        assert examples.custom_properties["span"].int_value == span_number(DAY2)
        assert names[scores.type_id] == "BatchScores" and scores.uri == first["path"]
        assert scores.custom_properties["rows"].int_value == first["rows"]
        contexts = {c.name for c in store.get_contexts_by_execution(execution.id)}
        assert {result["run_id"], "taxi", "taxi.BatchScorer"} <= contexts
    lineage = json.loads(mlops(home, "lineage", "--run", first["run_id"], "--json").stdout)
    assert [e["node"] for e in lineage["run"]["executions"]] == ["BatchScorer"]
    # The span's lineage lists its scorings (the document as the schema describes it), and so does its text.
    import jsonschema

    from pipelines.lineage import SCHEMA_FILE

    doc = json.loads(mlops(home, "lineage", "--span", DAY2.isoformat(), "--json").stdout)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(doc)
    by_id = {s["execution_id"]: s for s in doc["span"]["scorings"]}
    done, reused = by_id[first["execution_id"]], by_id[reuse["execution_id"]]
    assert (done["state"], done["pushed_version"], done["model_id"], done["rows"], done["path"]) == \
        ("complete", 3, pushed["model_id"], first["rows"], first["path"])
    assert (reused["state"], reused["path"], reused["run_id"]) == ("cached", first["path"], reuse["run_id"])
    text = mlops(home, "lineage", "--span", DAY2.isoformat()).stdout
    assert f"scored by version 3 (model {pushed['model_id']})" in text and f"reused the scores in {first['path']}" in text


def test_versions_and_spans_that_cannot_be_scored_are_refused_with_the_fix(runs, tmp_path):
    home = copy_home(runs["home"], tmp_path)
    cases = {
        ("--date", DAY2.isoformat(), "--version", "1"): "no longer in",  # deleted by retention
        ("--date", DAY2.isoformat(), "--version", "99"): "never pushed",
        ("--date", "2026-11-29"): "no data for span 2026-11-29",
    }
    mlops(home, "data", "seed", "--days", "1", "--rows-per-day", "100", "--end", "2026-11-25")
    cases[("--date", "2026-11-25")] = "never ingested"
    span_csv = home / "data" / "incoming" / DAY1.isoformat() / "data.csv"
    os.utime(span_csv, (span_csv.stat().st_atime, span_csv.stat().st_mtime + 10))
    cases[("--date", DAY1.isoformat())] = "changed since they were ingested"
    for args, words in cases.items():
        done = mlops(home, "score", *args, check=False)
        assert done.returncode == 2 and words in done.stderr, (args, done.stdout, done.stderr)
        assert "(" in done.stderr and ")" in done.stderr  # the fix
    assert not (home / "var" / "scores").exists()


@pytest.mark.parametrize("kind", ["all_null", "missing_column"])
def test_a_span_the_data_gates_blocked_is_refused_and_nothing_is_written(gated, kind, tmp_path):
    gate, feature, _ = test_data_gates.FAULTS[kind]
    day = (test_data_gates.FIRST_FAULT_DAY + dt.timedelta(days=list(test_data_gates.FAULTS).index(kind))).isoformat()
    home = copy_home(gated["home"], tmp_path)
    done = mlops(home, "score", "--date", day, check=False)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert f"span {day} is not scored: its data gates blocked it" in done.stderr and feature in done.stderr
    assert {"SpanCheck": "span_check", "DriftValidator": "drift_validator"}[gate] in done.stderr
    assert not (home / "var" / "scores").exists() and done.stdout == ""
