"""monitoring/dashboards: the committed Grafana JSON is what the code generates, has a shape Grafana
imports, reads only metrics the project exposes (with labels they carry), and every query parses as
PromQL (promtool). Live queries against a real Prometheus: the monitoring stack's end-to-end test."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from collections import defaultdict
from typing import Dict, Set

import pytest

from monitoring import dashboards, metrics
from serving.metrics import ServingMetrics
from tests.conftest import REPO

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
ROW = "row"


def _registries():
    facts = metrics.RunFacts(
        outcome="blocked", seconds=42.0, span="2026-11-21", rows={"train": 900, "eval": 100},
        anomalies=[("drift", "trip_miles", True), ("schema", "tips", True), ("drift", "fare", False)],
        drift={"trip_miles": {"per_baseline": {"previous_span": 0.4, "served_model_training": 0.05},
                              "threshold": 0.1, "blocked": True},
               "fare": {"per_baseline": {"previous_span": 0.2}, "threshold": 0.1, "blocked": False}},
        candidate={"overall": {"auc": 0.8, "example_count": 100}, "payment_type=Cash": {"auc": None, "example_count": 7}},
        baseline={"overall": {"auc": 0.75, "example_count": 100}},
        blessed=False, not_blessed_streak=2, finished_at=1.7e9,
    )
    server = ServingMetrics(["taxi"])
    server.observe("taxi", 1, "predict", 200, 0.004, "rest")
    return [
        metrics.node_registry("taxi", "Trainer", "complete", 3.0, finished_at=1.7e9),
        *[registry for _, registry in metrics.run_groups("taxi", facts)],
        metrics.success_registry("taxi", finished_at=1.7e9),
        metrics.push_registry("taxi", "taxi", 3, 1.7e9, {"manual": 1, "alert": 1}),
        server.registry,
    ]


@pytest.fixture(scope="module")
def exposed() -> Dict[str, Set[str]]:
    """{sample name: its label names} of every project registry, every metric family filled."""
    registries = _registries()
    labels: Dict[str, Set[str]] = defaultdict(set)
    for registry in registries:
        for family in registry.collect():
            for sample in family.samples:
                labels[sample.name].update(sample.labels)
    assert set(labels) == set(metrics.metric_names(registries))
    return dict(labels)


@pytest.fixture(scope="module")
def data() -> dict:
    return dashboards.dashboard_json()


def _panels(data):
    return [p for p in data["panels"]] + [c for p in data["panels"] for c in p.get("panels", [])]


# ---------------------------------------------------------------------------------------- the file


def test_the_committed_json_is_what_the_code_generates(data):
    committed = dashboards.OUTPUT.read_text()
    assert committed == dashboards.render(), "run `.venv/bin/python -m monitoring.dashboards` and commit the JSON"
    assert json.loads(committed) == data
    assert committed.endswith("}\n") and committed == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert dashboards.render() == dashboards.render()  # deterministic: no ids or times that move


def test_check_names_the_fix_when_the_file_differs_and_write_makes_it_pass(tmp_path, capsys):
    stale = tmp_path / "dash.json"
    stale.write_text(dashboards.render().replace("mlops_run_rows", "mlops_run_row"))
    assert dashboards.main(["--check", "--output", str(stale)]) == 1
    err = capsys.readouterr().err
    assert "differs from what monitoring/dashboards generates" in err
    assert f"python -m monitoring.dashboards --output {stale}" in err
    assert dashboards.main(["--check", "--output", str(tmp_path / "missing.json")]) == 1
    assert "cannot be read" in capsys.readouterr().err

    assert dashboards.main(["--output", str(stale)]) == 0
    assert stale.read_text() == dashboards.render()
    assert dashboards.main(["--check", "--output", str(stale)]) == 0


def test_python_dash_m_check_passes_on_the_committed_file():
    result = subprocess.run([sys.executable, "-m", "monitoring.dashboards", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "is up to date" in result.stdout


# ---------------------------------------------------------------------------------------- the shape


def test_the_json_is_a_grafana_dashboard_with_a_prometheus_datasource_variable(data):
    assert data["uid"] and data["title"] and data["id"] is None  # id null: Grafana assigns one on import
    assert isinstance(data["schemaVersion"], int) and data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert data["rows"] == []  # gridPos panels, not legacy rows

    # Every datasource reference anywhere (panels, targets, annotations) is the variable.
    def references(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "datasource":
                    yield path, value
                else:
                    yield from references(value, f"{path}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from references(value, f"{path}[{i}]")

    found = list(references({k: v for k, v in data.items() if k != "templating"}))
    assert len(found) > 2 * len(data["panels"])
    assert [(path, ref) for path, ref in found if ref != DATASOURCE] == []
    annotations = data["annotations"]["list"]
    assert annotations and all(a["datasource"] == DATASOURCE and a["expr"] for a in annotations)


def test_panels_have_targets_unique_ids_and_grid_positions_that_never_overlap(data):
    panels = _panels(data)
    ids = [p["id"] for p in panels]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(ids) == len(set(ids))
    titles = [p["title"] for p in panels if p["type"] != ROW]
    assert len(titles) == len(set(titles)) and all(titles)
    for panel in panels:
        pos = panel["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in pos.values()), panel["title"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == ROW:
            assert (pos["w"], pos["h"], pos["x"]) == (24, 1, 0)
            continue
        assert panel["type"] in {"timeseries", "stat", "table"}
        assert panel["datasource"] == DATASOURCE
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == DATASOURCE, panel["title"]
            if target["format"] == "table":
                assert target["instant"] and panel["type"] == "table", panel["title"]

    def cells(pos):
        return {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}

    for a, b in itertools.combinations(panels, 2):
        assert not cells(a["gridPos"]) & cells(b["gridPos"]), f"{a['title']!r} overlaps {b['title']!r}"


def test_the_overlap_check_would_catch_an_overlap():
    def overlap(a, b):
        return not (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                    or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])

    data = dashboards.dashboard_json()
    panels = [p for p in data["panels"] if p["type"] != ROW]
    assert not any(overlap(a["gridPos"], b["gridPos"]) for a, b in itertools.combinations(panels, 2))
    moved = dict(panels[1]["gridPos"], x=panels[0]["gridPos"]["x"] + 1, y=panels[0]["gridPos"]["y"])
    assert overlap(panels[0]["gridPos"], moved)


# ---------------------------------------------------------------------------------------- the queries


def test_panel_queries_are_the_json_targets_with_grafana_variables_replaced(data):
    queries = dashboards.panel_queries()
    targets = [(p["title"], t["expr"]) for p in _panels(data) for t in p.get("targets", [])]
    assert [title for title, _ in queries] == [title for title, _ in targets]
    assert any("$__rate_interval" in expr for _, expr in targets)
    assert all("$" not in expr for _, expr in queries)
    assert ("Serving QPS by version and code",
            "sum by (version, code) (rate(mlops_serving_requests_total[1m]))") in dashboards.panel_queries("1m")
    assert dashboards.dashboard_queries() == queries + dashboards.annotation_queries()
    assert dashboards.annotation_queries() == [("annotation: Firing alerts", 'ALERTS{alertstate="firing"}')]


def test_the_dashboard_covers_what_issue_21_asks_for():
    read = set().union(*(dashboards.metrics_in(expr) for _, expr in dashboards.dashboard_queries()))
    assert read >= {
        "mlops_run_outcome", "mlops_run_duration_seconds", "mlops_run_last_success_timestamp_seconds",
        "mlops_run_span_timestamp_seconds", "mlops_run_rows", "mlops_node_duration_seconds",
        "mlops_data_drift_distance", "mlops_data_drift_threshold", "mlops_data_gate_blocked",
        "mlops_model_eval_auc", "mlops_model_blessed", "mlops_serving_requests_total",
        "mlops_serving_request_latency_seconds_bucket", "mlops_serving_loaded_version",
        "mlops_model_pushed_version", "mlops_model_rollbacks_total", "ALERTS",
    }
    queries = dashboards.panel_queries()
    assert any(expr.startswith("histogram_quantile(0.99,") and "by (version, le)" in expr for _, expr in queries)
    assert any(title.startswith("Overall AUC") and "by (model)" in expr for title, expr in queries)
    errors = [expr for title, expr in queries if title.startswith("Error rate")]
    assert any('code=~"5.."' in e for e in errors) and any('code="400"' in e for e in errors)


def test_every_metric_a_query_reads_is_exposed_by_the_project(exposed):
    unknown = {(title, expr): dashboards.unknown_metrics(expr, exposed)
               for title, expr in dashboards.dashboard_queries()}
    assert {k: v for k, v in unknown.items() if v} == {}
    for title, expr in dashboards.dashboard_queries():
        assert dashboards.metrics_in(expr), f"{title}: {expr} reads no metric"


def test_every_label_a_query_names_is_carried_by_the_metrics_it_reads(exposed):
    scrape = {"job", "instance"}  # added by Prometheus (the Pushgateway's are honoured)
    for title, expr in dashboards.dashboard_queries():
        names = dashboards.metrics_in(expr)
        if names & dashboards.PROMETHEUS_SERIES:
            continue
        carried = set().union(*(exposed[name] for name in names)) | scrape
        assert dashboards.labels_in(expr) <= carried, (title, expr, dashboards.labels_in(expr) - carried)


def test_legends_name_only_labels_the_query_keeps(data, exposed):
    for panel in _panels(data):
        for target in panel.get("targets", []):
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target["legendFormat"]))
            expr = dashboards.for_prometheus(target["expr"])
            names = dashboards.metrics_in(expr)
            if re.search(r"\b(sum|max|min|avg|count)\s*(by\b|\()", expr):
                kept = dashboards.labels_in(expr)
            else:
                kept = set().union(*(exposed.get(n, set()) for n in names)) | {"job", "instance"}
            assert legend <= kept, (panel["title"], target["legendFormat"], expr)


@pytest.mark.parametrize("expr, unknown", [
    ("sum by (version) (rate(mlops_serving_request_total[5m]))", ["mlops_serving_request_total"]),
    ("histogram_quantile(0.99, sum by (le) (rate(mlops_serving_request_latency_seconds[5m])))",
     ["mlops_serving_request_latency_seconds"]),  # a histogram is read through _bucket
    ("mlops_model_rollbacks", ["mlops_model_rollbacks"]),  # a counter is exposed as _total
    ("max by (node) (mlops_node_duration_secs) / on (node) group_left (outcome) mlops_node_outcome",
     ["mlops_node_duration_secs"]),
    # label names, label values, functions, keywords, numbers, durations and Prometheus' series never count
    ('sum without (mlops_fake_label) (mlops_run_rows{split=~"mlops_fake_value"}) offset 1h > bool 1e3',
     []),
    ('(sum(rate(mlops_serving_requests_total{code="500"}[$__rate_interval])) or vector(0)) and on() up', []),
    ('count(ALERTS{alertstate="firing"}) + NaN * max_over_time(mlops_run_outcome[1d:5m])', []),
])
def test_the_metric_check_catches_a_misspelled_metric_and_nothing_else(exposed, expr, unknown):
    assert dashboards.unknown_metrics(expr, exposed) == unknown


def test_the_label_reader_finds_matchers_and_label_lists():
    expr = 'sum by (version, code) (x{model!~"t.*", api="rest"}) / ignoring (code) group_left (api) y'
    assert dashboards.labels_in(expr) == {"version", "code", "model", "api"}
    assert dashboards.metrics_in(expr) == {"x", "y"}


def test_every_query_is_valid_promql_for_promtool():
    queries = dashboards.dashboard_queries()
    assert dashboards.promql_errors(queries) == []


def test_promtool_check_names_the_panel_of_a_bad_query():
    queries = [("Good", "sum(rate(mlops_serving_requests_total[5m]))"),
               ("Unclosed", "sum by (version) (rate(mlops_serving_requests_total[5m])"),
               ("Grafana variable left in", "rate(mlops_serving_requests_total[$__rate_interval])")]
    errors = dashboards.promql_errors(queries)
    assert len(errors) == 2, errors
    assert errors[0].startswith("Unclosed: ") and "parse error" in errors[0]
    assert errors[1].startswith("Grafana variable left in: ")
