"""The nightly MLOps Grafana dashboard, generated in code with grafanalib (never edit the JSON by hand).

`python -m monitoring.dashboards` writes `monitoring/dashboards/nightly_mlops.json` (sorted keys,
indent 2, trailing newline); `--check` exits 1 when the committed file differs from what this code
generates. Import the JSON into any Grafana (Dashboards > New > Import): every panel, target and
annotation reads the Prometheus datasource of the dashboard variable `DS_PROMETHEUS`, which lists
the Grafana's Prometheus datasources (the default one first).

What it shows, top to bottom (metrics: monitoring/metrics.py for the pipeline, pushed to the
Pushgateway; serving/metrics.py for the model server, scraped as job `model_server`):

| row | panels |
|---|---|
| Nightly runs | last run outcome, last success age, last run's span, run duration, rows per split, node durations, node outcomes |
| Data gates | drift distance / threshold per feature and baseline (graph and table), blocked findings, findings by kind and severity |
| Model | blessed, not-blessed streak, overall AUC (candidate vs baseline), evaluation per slice |
| Serving | model server up, served version (loaded vs pushed), rollbacks by trigger, QPS by version and code, p50/p99 latency by version, 5xx and 400 share |
| Alerts | firing ALERTS (table, and an annotation on every time-series panel) |

For tests and live checks:
- `dashboard_json()`: the dict written; `render()`: the file's text;
- `panel_queries()` / `annotation_queries()` / `dashboard_queries()`: (title, PromQL) pairs, Grafana's
  `$__rate_interval` replaced, ready for Prometheus' API;
- `metrics_in(expr)`, `labels_in(expr)`, `unknown_metrics(expr, known)`: the metric and label names a
  query reads;
- `promql_errors(queries)`: `promtool check rules` on them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

OUTPUT = Path(__file__).resolve().parent / "nightly_mlops.json"
UID = "mlops-nightly"
TITLE = "Nightly MLOps: taxi pipeline and model server"
SCHEMA_VERSION = 39  # Grafana 10.4: panels and datasource references as below need no migration

DS_VARIABLE = "DS_PROMETHEUS"
DATASOURCE = {"type": "prometheus", "uid": "${%s}" % DS_VARIABLE}
RATE_INTERVAL = "$__rate_interval"  # Grafana's; panel_queries() replaces it for Prometheus itself
DEFAULT_RATE_WINDOW = "5m"
SERVING_JOB = "model_server"
GRID_WIDTH = 24

Query = Tuple[str, str]  # (panel title, PromQL)

# -------------------------------------------------------------------------------- panel helpers


def _target(expr: str, ref: str, legend: str = "", instant: bool = False, table: bool = False) -> g.Target:
    return g.Target(expr=expr, refId=ref, legendFormat=legend, instant=instant or table,
                    format=g.TABLE_TARGET_FORMAT if table else g.TIME_SERIES_TARGET_FORMAT,
                    datasource=DATASOURCE)


def _targets(*specs, **common) -> List[g.Target]:
    """`specs`: (expr, legend) pairs, refIds A, B, ... in order."""
    return [_target(expr, chr(ord("A") + i), legend, **common) for i, (expr, legend) in enumerate(specs)]


def _steps(*pairs) -> List[dict]:
    """Threshold steps: (color, from value); the first one's value is None (from -inf)."""
    return [{"color": color, "value": value} for color, value in pairs]


def _values(mapping: Dict[str, Tuple[str, str]]) -> List[dict]:
    """Value mappings {value: (text, color)}."""
    options = {value: {"text": text, "color": color, "index": i}
               for i, (value, (text, color)) in enumerate(mapping.items())}
    return [{"type": "value", "options": options}]


def _color_by_name(colors: Dict[str, str]) -> List[dict]:
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]}
            for name, color in colors.items()]


def _table_of(renames: Dict[str, str], hide: Sequence[str] = ("Time",)) -> List[dict]:
    """Joins a table panel's instant queries on their labels and names the value columns."""
    return [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {name: True for name in hide},
                                       "indexByName": {}, "renameByName": renames}},
    ]


def _timeseries(title: str, targets: List[g.Target], unit: str = "", description: str = "",
                steps: bool = True, **kwargs) -> g.TimeSeries:
    """Pipeline gauges change once a run: drawn as steps, last value in the legend."""
    kwargs.setdefault("legendDisplayMode", "table")
    kwargs.setdefault("legendCalcs", ["lastNotNull"])
    return g.TimeSeries(title=title, description=description, dataSource=DATASOURCE, targets=targets,
                        unit=unit, lineInterpolation="stepAfter" if steps else "linear",
                        spanNulls=steps, **kwargs)


def _stat(title: str, targets: List[g.Target], unit: str = "none", description: str = "",
          thresholds: Optional[List[dict]] = None, **kwargs) -> g.Stat:
    kwargs.setdefault("graphMode", "none")
    kwargs.setdefault("color", {"mode": "thresholds"})
    return g.Stat(title=title, description=description, dataSource=DATASOURCE, targets=targets,
                  format=unit, reduceCalc="lastNotNull", noValue="no data",
                  thresholds=thresholds or _steps(("blue", None)), **kwargs)


def _table(title: str, targets: List[g.Target], renames: Dict[str, str], description: str = "",
           hide: Sequence[str] = ("Time",), **kwargs) -> g.Table:
    return g.Table(title=title, description=description, dataSource=DATASOURCE, targets=targets,
                   transformations=_table_of(renames, hide), **kwargs)


# -------------------------------------------------------------------------------- the panels


def _runs_row() -> List[List[Tuple[g.Panel, int, int]]]:
    outcome = _stat(
        "Last run outcome",
        _targets(("max by (pipeline, outcome) (mlops_run_outcome) == 1", "{{outcome}}"), instant=True),
        description="The last nightly run's outcome (success, failed, blocked, not_blessed); pushed at the end of "
                    "every run (job mlops_run).",
        textMode="name", colorMode="background",
        overrides=_color_by_name({"success": "green", "not_blessed": "orange", "blocked": "orange",
                                  "failed": "red"}),
    )
    success_age = _stat(
        "Last success age",
        _targets(("time() - max by (pipeline) (mlops_run_last_success_timestamp_seconds)", "{{pipeline}}"),
                 instant=True),
        unit="s", colorMode="background",
        description="Time since a run last ended in success. Nightly: over 26 h means last night's run did not "
                    "succeed.",
        thresholds=_steps(("green", None), ("orange", 26 * 3600), ("red", 50 * 3600)),
    )
    span = _stat(
        "Last run's span",
        _targets(("max by (pipeline) (mlops_run_span_timestamp_seconds) * 1000", "{{pipeline}}"), instant=True),
        unit="dateTimeAsIso",
        description="The day of data (TFX span) the last run trained on, at 00:00 UTC.",
    )
    duration = _timeseries(
        "Run duration",
        _targets(("max by (pipeline) (mlops_run_duration_seconds)", "{{pipeline}}")),
        unit="s", description="First node start to the end of the run, per run.",
    )
    rows = _timeseries(
        "Rows per split",
        _targets(("sum by (pipeline, split) (mlops_run_rows)", "{{pipeline}} {{split}}")),
        unit="short", description="Rows of the last run's span per split (train, eval).",
    )
    nodes = _timeseries(
        "Node durations",
        _targets(("max by (node) (mlops_node_duration_seconds)", "{{node}}")),
        unit="s", description="Wall time of each node's last execution (a cached node takes about 0 s).",
    )
    node_outcomes = _table(
        "Node last outcome",
        _targets(("max by (node, outcome) (mlops_node_outcome) == 1", ""), table=True),
        renames={"node": "node", "outcome": "last outcome"}, hide=("Time", "Value"),
        description="Each node's last outcome (complete, cached, skipped, failed, blocked).",
    )
    return [
        [(outcome, 8, 4), (success_age, 8, 4), (span, 8, 4)],
        [(duration, 8, 8), (rows, 8, 8), (node_outcomes, 8, 8)],
        [(nodes, 24, 8)],
    ]


def _data_row() -> List[List[Tuple[g.Panel, int, int]]]:
    ratio = _timeseries(
        "Data drift per feature (distance / threshold)",
        _targets(("max by (feature, baseline) (mlops_data_drift_distance)"
                  " / max by (feature, baseline) (mlops_data_drift_threshold)", "{{feature}} vs {{baseline}}")),
        unit="percentunit",
        description="Drift distance of each feature against each baseline (previous_span, served_model_training), "
                    "as a share of the schema's threshold: above 100% the DriftValidator blocks the span unless the "
                    "feature is on the warn list.",
        thresholds=_steps(("green", None), ("red", 1)), thresholdsStyleMode="line",
    )
    drift_table = _table(
        "Drift distance vs threshold (last run)",
        _targets(("max by (feature, baseline) (mlops_data_drift_distance)", ""),
                 ("max by (feature, baseline) (mlops_data_drift_threshold)", ""), table=True),
        renames={"Value #A": "distance", "Value #B": "threshold"},
        sortBy=[g.TableSortByField(displayName="distance", desc=True)],
        description="The last run's drift distances and thresholds per feature and baseline.",
    )
    blocked = _table(
        "Data-gate blocked findings (last run)",
        _targets(("sum by (kind, feature, baseline) (mlops_data_gate_blocked)", ""), table=True),
        renames={"Value": "findings"},
        description="The findings that blocked the last run's span (kind schema or drift; baseline `schema` for "
                    "schema findings). Empty: nothing blocked.",
    )
    findings = _timeseries(
        "Data-gate findings by kind and severity",
        _targets(("sum by (kind, severity) (mlops_data_anomalies)", "{{kind}} {{severity}}")),
        unit="short", description="Data-gate findings per run (severity block or warn).",
    )
    return [
        [(ratio, 12, 8), (drift_table, 12, 8)],
        [(blocked, 12, 7), (findings, 12, 7)],
    ]


def _model_row() -> List[List[Tuple[g.Panel, int, int]]]:
    blessed = _stat(
        "Blessed",
        _targets(("max by (pipeline) (mlops_model_blessed)", "{{pipeline}}"), instant=True),
        colorMode="background", mappings=_values({"1": ("blessed", "green"), "0": ("not blessed", "red")}),
        description="Whether the last evaluated candidate was blessed (and so pushed).",
    )
    streak = _stat(
        "Not-blessed streak",
        _targets(("max by (pipeline) (mlops_run_not_blessed_streak)", "{{pipeline}}"), instant=True),
        colorMode="background", thresholds=_steps(("green", None), ("orange", 1), ("red", 3)),
        description="Consecutive evaluated runs, newest first, whose candidate was not blessed.",
    )
    overall = _timeseries(
        "Overall AUC: candidate vs baseline",
        _targets(('max by (model) (mlops_model_eval_auc{slice="overall"})', "{{model}}")),
        unit="none", description="AUC over all evaluation examples of the candidate and of the served model "
                                 "(the baseline).",
        overrides=_color_by_name({"candidate": "blue", "baseline": "purple"}),
    )
    per_slice = _table(
        "Evaluation per slice (last run)",
        _targets(('max by (slice) (mlops_model_eval_auc{model="candidate"})', ""),
                 ('max by (slice) (mlops_model_eval_auc{model="baseline"})', ""),
                 ('max by (slice) (mlops_model_eval_auc{model="candidate"})'
                  ' - max by (slice) (mlops_model_eval_auc{model="baseline"})', ""),
                 ("max by (slice) (mlops_model_eval_examples)", ""), table=True),
        renames={"Value #A": "candidate AUC", "Value #B": "baseline AUC", "Value #C": "candidate - baseline",
                 "Value #D": "examples"},
        sortBy=[g.TableSortByField(displayName="examples", desc=True)],
        description="AUC of the candidate and the baseline per slice (overall, trip_start_hour, payment_type). "
                    "Slices with few examples are noisy; NaN: one class only.",
    )
    return [
        [(blessed, 4, 8), (streak, 4, 8), (overall, 16, 8)],
        [(per_slice, 24, 10)],
    ]


def _serving_row() -> List[List[Tuple[g.Panel, int, int]]]:
    up = _stat(
        "Model server up",
        _targets((f'up{{job="{SERVING_JOB}"}}', "{{instance}}"), instant=True),
        colorMode="background", mappings=_values({"1": ("up", "green"), "0": ("down", "red")}),
        description=f"Whether Prometheus scrapes the model server (job {SERVING_JOB}).",
    )
    version = _timeseries(
        "Served version: loaded vs pushed",
        _targets(("max by (model) (mlops_serving_loaded_version)", "loaded {{model}}"),
                 ("max by (model) (mlops_model_pushed_version)", "pushed {{model}}")),
        unit="none", valueDecimals=0,
        description="The newest version the model server has loaded (0: none) and the newest version the pipeline "
                    "pushed (a rollback pushes an older model as a new version). They differ while the server "
                    "has not picked up a push.",
    )
    rollbacks = _timeseries(
        "Rollbacks by trigger",
        _targets(("sum by (trigger) (mlops_model_rollbacks_total)", "{{trigger}}")),
        unit="short", valueDecimals=0,
        description="Rollbacks recorded in ML Metadata, by trigger (manual, alert), cumulative.",
    )
    qps = _timeseries(
        "Serving QPS by version and code",
        _targets((f"sum by (version, code) (rate(mlops_serving_requests_total[{RATE_INTERVAL}]))",
                  "v{{version}} {{code}}")),
        unit="reqps", steps=False, legendCalcs=["mean", "lastNotNull"],
        description="Requests per second the model server answered, REST and gRPC (gRPC mapped to HTTP codes); "
                    "version empty: requests no version answered (unknown model, errors before loading).",
    )
    latency = _timeseries(
        "Latency p99 / p50 by version",
        _targets(("histogram_quantile(0.99, sum by (version, le) "
                  f"(rate(mlops_serving_request_latency_seconds_bucket[{RATE_INTERVAL}])))", "p99 v{{version}}"),
                 ("histogram_quantile(0.5, sum by (version, le) "
                  f"(rate(mlops_serving_request_latency_seconds_bucket[{RATE_INTERVAL}])))", "p50 v{{version}}")),
        unit="s", steps=False, legendCalcs=["mean", "max"],
        description="Request latency (body read to response) from the server's histogram.",
    )
    all_requests = f"sum(rate(mlops_serving_requests_total[{RATE_INTERVAL}]))"
    errors = _timeseries(
        "Error rate: 5xx and 400 share",
        _targets((f'(sum(rate(mlops_serving_requests_total{{code=~"5.."}}[{RATE_INTERVAL}])) or vector(0))'
                  f" / {all_requests}", "5xx share"),
                 (f'(sum(rate(mlops_serving_requests_total{{code="400"}}[{RATE_INTERVAL}])) or vector(0))'
                  f" / {all_requests}", "400 share")),
        unit="percentunit", steps=False, legendCalcs=["mean", "max"],
        thresholds=_steps(("green", None), ("red", 0.01)), thresholdsStyleMode="line",
        description="Share of requests answered 5xx (server errors) and 400 (bad requests: clients sending what "
                    "the model does not take). No line: no traffic.",
    )
    return [
        [(up, 4, 8), (version, 10, 8), (rollbacks, 10, 8)],
        [(qps, 8, 8), (latency, 8, 8), (errors, 8, 8)],
    ]


def _alerts_row() -> List[List[Tuple[g.Panel, int, int]]]:
    firing = _table(
        "Firing alerts",
        _targets((FIRING_ALERTS, ""), table=True),
        renames={}, hide=("Time", "Value", "__name__", "alertstate"),
        description="Prometheus alerts firing now (ALERTS); also drawn as annotations on the time-series panels.",
    )
    return [[(firing, 24, 8)]]


FIRING_ALERTS = 'ALERTS{alertstate="firing"}'
ROWS = (
    ("Nightly runs", _runs_row),
    ("Data gates", _data_row),
    ("Model", _model_row),
    ("Serving", _serving_row),
    ("Alerts", _alerts_row),
)


def _annotations() -> g.Annotations:
    return g.Annotations(list=[{
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": "red",
        "name": "Firing alerts",
        "expr": FIRING_ALERTS,
        "step": "60s",
        "titleFormat": "{{alertname}}",
        "textFormat": "{{severity}} {{pipeline}} {{model}}",
        "tagKeys": "alertname,severity",
        "useValueForTime": False,
    }])


def _layout() -> List[g.Panel]:
    """Rows of panels placed left to right, top to bottom, on Grafana's 24-column grid."""
    panels: List[g.Panel] = []
    y = 0
    for title, build in ROWS:
        panels.append(g.RowPanel(title=title, dataSource=DATASOURCE, gridPos=g.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)))
        y += 1
        for line in build():
            x = 0
            for panel, width, height in line:
                panel.gridPos = g.GridPos(h=height, w=width, x=x, y=y)
                panels.append(panel)
                x += width
            if x > GRID_WIDTH:
                raise ValueError(f"row {title!r}: panels {x} columns wide, the grid has {GRID_WIDTH}")
            y += max(height for _, _, height in line)
    return panels


def dashboard() -> g.Dashboard:
    """The grafanalib dashboard (panel ids assigned)."""
    datasource = g.Template(
        name=DS_VARIABLE, label="Prometheus", query="prometheus", type="datasource",
        refresh=g.REFRESH_ON_DASHBOARD_LOAD, hide=g.SHOW,
    )
    return g.Dashboard(
        title=TITLE,
        uid=UID,
        description="Nightly TFX retraining (runs, data gates, evaluation, pushes) and the model server. "
                    "Generated by `python -m monitoring.dashboards`; do not edit by hand.",
        tags=["mlops", "tfx", "taxi"],
        timezone="utc",
        time=g.Time("now-7d", "now"),
        refresh="1m",
        schemaVersion=SCHEMA_VERSION,
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        templating=g.Templating(list=[datasource]),
        annotations=_annotations(),
        panels=_layout(),
    ).auto_panel_ids()


def dashboard_json() -> dict:
    """The dashboard as the JSON dict Grafana imports (plain dicts and lists only)."""
    return json.loads(json.dumps(dashboard().to_json_data(), cls=DashboardEncoder))


def render() -> str:
    """The text of the committed file: sorted keys, indent 2, trailing newline."""
    return json.dumps(dashboard_json(), sort_keys=True, indent=2) + "\n"


# -------------------------------------------------------------------------------- the queries


def for_prometheus(expr: str, rate_window: str = DEFAULT_RATE_WINDOW) -> str:
    """A panel's expression as Prometheus takes it: Grafana's `$__rate_interval` replaced."""
    return expr.replace(RATE_INTERVAL, rate_window)


def _panels(data: dict) -> Iterable[dict]:
    for panel in data.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def panel_queries(rate_window: str = DEFAULT_RATE_WINDOW, data: Optional[dict] = None) -> List[Query]:
    """(panel title, PromQL) for every target of every panel, in dashboard order, with `$__rate_interval`
    replaced by `rate_window` (Grafana itself uses at least 4 scrape intervals)."""
    data = dashboard_json() if data is None else data
    return [(panel["title"], for_prometheus(target["expr"], rate_window))
            for panel in _panels(data) for target in panel.get("targets", [])]


def annotation_queries(data: Optional[dict] = None) -> List[Query]:
    """("annotation: <name>", PromQL) for every Prometheus annotation of the dashboard."""
    data = dashboard_json() if data is None else data
    return [(f"annotation: {item['name']}", item["expr"]) for item in data["annotations"]["list"] if item.get("expr")]


def dashboard_queries(rate_window: str = DEFAULT_RATE_WINDOW) -> List[Query]:
    """Every PromQL expression of the dashboard: panels, then annotations."""
    data = dashboard_json()
    return panel_queries(rate_window, data) + annotation_queries(data)


# -------------------------------------------------------------------------------- checking queries

# Names a query may read that no project registry exposes: Prometheus' own series.
PROMETHEUS_SERIES = frozenset({"ALERTS", "ALERTS_FOR_STATE", "up"})
# Keywords and literals that look like identifiers (PromQL is case-insensitive for these).
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
# A keyword followed by a parenthesised list of label names.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*(?![\w:]))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)


def _tokens(expr: str) -> List[Tuple[str, str]]:
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]


def _walk(expr: str) -> Tuple[Set[str], Set[str]]:
    """(metric names, label names) a PromQL expression names; see metrics_in and labels_in."""
    tokens = _tokens(expr)
    names: Set[str] = set()
    labels: Set[str] = set()
    braces = brackets = 0
    in_list = 0  # > 0: inside a label list, its paren depth
    expect_list = False
    for i, (kind, text) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if in_list:
            in_list += {"(": 1, ")": -1}.get(text, 0)
            if kind == "name":
                labels.add(text)
            continue
        if expect_list:
            expect_list = False
            if text == "(":
                in_list = 1
                continue
        if kind == "other":
            braces += {"{": 1, "}": -1}.get(text, 0)
            brackets += {"[": 1, "]": -1}.get(text, 0)
            continue
        if kind != "name" or brackets > 0:
            continue
        if braces > 0:
            if following in ("=", "!"):  # a matcher: label =, !=, =~, !~
                labels.add(text)
            continue
        lowered = text.lower()
        if lowered in _LABEL_LISTS:
            expect_list = True
        elif lowered in _KEYWORDS or following == "(" or following.lower() in ("by", "without"):
            continue  # a keyword, a function call, an aggregation `sum by (...) (...)`
        else:
            names.add(text)
    return names, labels


def metrics_in(expr: str) -> Set[str]:
    """The metric names a PromQL expression selects: identifiers outside label matchers `{...}`, range and
    subquery brackets `[...]` and label lists (`by (...)`, `on (...)`, ...), that are neither functions or
    aggregations (followed by `(`, `by` or `without`) nor keywords; strings, numbers, durations and Grafana
    variables never count."""
    return _walk(expr)[0]


def labels_in(expr: str) -> Set[str]:
    """The label names a PromQL expression names: in matchers (`{code=~"5.."}`) and in label lists (`by`,
    `without`, `on`, `ignoring`, `group_left`, `group_right`)."""
    return _walk(expr)[1]


def unknown_metrics(expr: str, known: Iterable[str], allowed: Iterable[str] = PROMETHEUS_SERIES) -> List[str]:
    """The metric names `expr` reads that are neither in `known` (sample names: `x_total`, `x_bucket`) nor
    Prometheus' own series."""
    ok = set(known) | set(allowed)
    return sorted(name for name in metrics_in(expr) if name not in ok)


def promql_errors(queries: Sequence[Query], promtool: str = "promtool", timeout: float = 60) -> List[str]:
    """Parses every query with `promtool check rules` (each one a recording rule of one group): one line per
    query Prometheus would reject, naming its panel; [] when all parse."""
    tool = shutil.which(promtool)
    if tool is None:
        raise FileNotFoundError(f"{promtool} not found: `make monitoring` installs it (Debian's prometheus "
                                "package), or pass promtool=PATH")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    handle, path = tempfile.mkstemp(prefix="dashboard-rules-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(rules, stream)  # JSON is YAML
        result = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True, timeout=timeout)
    finally:
        os.unlink(path)
    if result.returncode == 0:
        return []
    output = (result.stdout + result.stderr).strip()
    errors = []
    for line in output.splitlines():
        found = re.search(r'"dashboard:query_(\d+)": (.*)', line)
        if found:
            title, expr = queries[int(found.group(1))]
            errors.append(f"{title}: {expr}: {found.group(2)}")
    return errors or [output]


# -------------------------------------------------------------------------------- command line


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.dashboards",
        description="Write the nightly MLOps Grafana dashboard JSON generated by monitoring/dashboards, or check "
                    "that the committed file is up to date.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"the JSON file (default: {_display(OUTPUT)})")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when the file differs from what the code generates")
    args = parser.parse_args(argv)
    text = render()
    where = _display(args.output)
    if args.check:
        try:
            current = args.output.read_text()
        except OSError as err:
            current, problem = None, f"cannot be read ({err.strerror or err})"
        else:
            problem = "differs from what monitoring/dashboards generates"
        if current != text:
            regenerate = "python -m monitoring.dashboards" + ("" if args.output == OUTPUT else f" --output {where}")
            print(f"{where} {problem}; fix: run `.venv/bin/{regenerate}` and commit the result "
                  "(never edit the JSON by hand)", file=sys.stderr)
            return 1
        print(f"{where} is up to date ({len(panel_queries())} panel queries)")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, args.output)
    print(f"wrote {where}")
    return 0
