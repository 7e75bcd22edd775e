"""The alert rules (monitoring/rules/*.yml), their promtool unit tests, the runbook and the
Alertmanager routing, checked offline with Debian's promtool and amtool: no Prometheus, no
Alertmanager, no pipeline. A few seconds."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest
import yaml
from prometheus_client.exposition import generate_latest

from monitoring import metrics
from serving.metrics import ServingMetrics
from tests.conftest import REPO
from tests.test_docs import anchors, broken_links

MONITORING = REPO / "monitoring"
RULE_FILES = sorted((MONITORING / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((MONITORING / "rules" / "tests").glob("*.yml"))
RUNBOOK = MONITORING / "RUNBOOK.md"
ALERTMANAGER = MONITORING / "alertmanager.yml"
RUNBOOK_URL = "https://github.com/mlops/nightly-tfx/blob/main/monitoring/RUNBOOK.md#"

# alert -> (severity, component): what issue 21 asks for, and where each one is routed.
ALERTS: Dict[str, Tuple[str, str]] = {
    "NightlyRetrainFailed": ("warning", "pipeline"),
    "NightlyRetrainMissing": ("warning", "pipeline"),
    "DataGateBlocked": ("warning", "data"),
    "ModelNotBlessed": ("warning", "model"),
    "ModelStale": ("warning", "model"),
    "RollbackPerformed": ("info", "model"),
    "ServingDown": ("critical", "serving"),
    "ServingErrorRateHigh": ("critical", "serving"),
    "ServingLatencyP99High": ("critical", "serving"),
    "ServingModelLoadFailed": ("warning", "serving"),
}
# Only these reach the automatic-rollback webhook; they must keep `version` in their output.
ROLLBACK_ALERTS = {"ServingErrorRateHigh", "ServingLatencyP99High"}
RECEIVER_OF_SEVERITY = {"critical": "oncall", "warning": "team", "info": "log"}


def _tool(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(path).exists():
        pytest.fail(f"{name} not found: install Debian's prometheus (promtool) and "
                    f"prometheus-alertmanager (amtool) packages")
    return path


def _run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=60)


def _output(done: subprocess.CompletedProcess) -> str:
    return (done.stdout + done.stderr).decode(errors="replace")


def _rules() -> Iterator[Tuple[Path, dict]]:
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path, rule


def _alert_rules() -> Dict[str, dict]:
    found: Dict[str, dict] = {}
    for path, rule in _rules():
        if "alert" in rule:
            assert rule["alert"] not in found, f"{rule['alert']} defined twice ({path.name})"
            found[rule["alert"]] = rule
    return found


def _seconds(duration: str) -> float:
    """A Prometheus duration ("30s", "1h30m", "0s") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(int(n) * units[u] for n, u in parts)


# ------------------------------------------------------------------------------- promtool


def test_there_are_rule_files_and_test_files():
    assert {p.name for p in RULE_FILES} >= {"pipeline.yml", "data.yml", "model.yml", "serving.yml"}
    assert RULE_TEST_FILES


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path):
    done = _run(_tool("promtool"), "check", "rules", str(path))
    assert done.returncode == 0, _output(done)
    rules = len(list(rule for p, rule in _rules() if p == path))
    assert f"SUCCESS: {rules} rules found" in _output(done)


@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path):
    done = _run(_tool("promtool"), "test", "rules", str(path))
    assert done.returncode == 0, _output(done)
    assert "SUCCESS" in _output(done)


def test_every_rules_file_is_unit_tested():
    tested = {(path.parent / rule_file).resolve()
              for path in RULE_TEST_FILES for rule_file in yaml.safe_load(path.read_text())["rule_files"]}
    assert {p.resolve() for p in RULE_FILES} == tested


# ------------------------------------------------------------------------------- the rules


def test_every_alert_of_the_issue_exists_and_nothing_else():
    assert set(_alert_rules()) == set(ALERTS)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_for_severity_component_and_annotations(name):
    rule = _alert_rules()[name]
    severity, component = ALERTS[name]
    assert "for" in rule, f"{name}: no `for:`"
    _seconds(rule["for"])
    assert rule["labels"]["severity"] == severity
    assert rule["labels"]["component"] == component
    for key in ("summary", "description", "runbook_url"):
        assert rule["annotations"].get(key, "").strip(), f"{name}: no {key}"
    assert rule["annotations"]["runbook_url"] == RUNBOOK_URL + name.lower()
    # the summary says where: a label value or a query, never a fixed sentence
    assert "{{" in rule["annotations"]["summary"]


def test_only_the_two_serving_alerts_ask_for_a_rollback():
    asking = {name for name, rule in _alert_rules().items() if "action" in rule["labels"]}
    assert asking == ROLLBACK_ALERTS
    assert all(_alert_rules()[name]["labels"]["action"] == "rollback" for name in ROLLBACK_ALERTS)


@pytest.mark.parametrize("name", sorted(ROLLBACK_ALERTS))
def test_rollback_alerts_fit_the_90s_budget_and_keep_the_version(name):
    """Fault -> restored model within 90 s at scrape/evaluation 15 s: `for` at most 30 s and rate
    windows of 1m; aggregated by model and version (the webhook reads the version)."""
    rule = _alert_rules()[name]
    assert _seconds(rule["for"]) <= 30
    windows = re.findall(r"\[([^\]]+)\]", rule["expr"])
    assert windows and all(_seconds(w) <= 60 for w in windows), windows
    for aggregation in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
        assert {"model", "version"} <= {label.strip() for label in aggregation.split(",")}, aggregation


# ------------------------------------------------------------------------------- unit-test coverage


def _alert_rule_tests() -> Iterator[dict]:
    for path in RULE_TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            yield from test.get("alert_rule_test") or ()


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_a_firing_and_a_quiet_unit_test(name):
    cases = [case for case in _alert_rule_tests() if case["alertname"] == name]
    firing = [case for case in cases if case.get("exp_alerts")]
    quiet = [case for case in cases if "exp_alerts" in case and case["exp_alerts"] == []]
    assert firing, f"{name}: no unit test where it fires"
    assert quiet, f"{name}: no unit test where it must not fire"
    severity, component = ALERTS[name]
    for case in firing:
        for alert in case["exp_alerts"]:
            assert alert["exp_labels"]["severity"] == severity
            assert alert["exp_labels"]["component"] == component
    # promtool compares the whole label and annotation sets: a case that names the summary checks
    # the rendered text of every annotation
    assert any(alert.get("exp_annotations", {}).get("summary") for case in firing for alert in case["exp_alerts"])
    if name in ROLLBACK_ALERTS:
        assert any("version" in alert["exp_labels"] for case in firing for alert in case["exp_alerts"])


# ------------------------------------------------------------------------------- runbook


def test_every_runbook_url_lands_on_a_runbook_heading():
    headings = anchors(RUNBOOK)
    for name, rule in _alert_rules().items():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_URL), url
        assert url[len(RUNBOOK_URL):] in headings, f"{name}: no heading #{url[len(RUNBOOK_URL):]} in RUNBOOK.md"


def test_runbook_links_land_inside_the_repository():
    assert broken_links(RUNBOOK) == []


def test_runbook_has_a_section_named_after_each_alert():
    titles = {line[3:].strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    assert set(ALERTS) <= titles


def _cli_heading(cli: str, path: List[str]) -> str:
    found = re.search(rf"^#+ `mlops {re.escape(' '.join(path))}`$", cli, re.M)
    return found.group(0) if found else ""


def test_runbook_commands_exist():
    """Every `mlops ...` command the runbook names is one docs/cli.md (generated from the parsers)
    documents, with the options it uses."""
    cli = (REPO / "docs" / "cli.md").read_text()
    commands = re.findall(r"`mlops ([^`]*)`", RUNBOOK.read_text())
    assert len(commands) > 10
    for command in commands:
        path = re.match(r"[a-z ]*", command).group(0).split()
        # the longest documented command path the words start with (cli.md: one heading each)
        while path and not _cli_heading(cli, path):
            path.pop()
        assert path, f"mlops {command}: no such command in docs/cli.md"
        section = cli.split(_cli_heading(cli, path), 1)[1].split("\n#", 1)[0]
        for option in re.findall(r"(?<![\w-])--[a-z][a-z-]*", command):
            assert re.search(rf"{option}(?![\w-])", section), f"mlops {' '.join(path)} has no option {option}"


# ------------------------------------------------------------------------------- metric names

PROMQL_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_sum", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2", "max_over_time",
    "min_over_time", "minute", "month", "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad",
    "rate", "resets", "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}
PROMQL_AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                       "bottomk", "topk", "quantile"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset", "atan2", "inf", "nan", "start", "end"}
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def promql_metric_names(expr: str) -> Set[str]:
    """Metric names in a PromQL expression (or a template's query with %q placeholders): strings,
    label matchers, range/subquery brackets and label lists of by/on/... removed, then every
    identifier that is not a function call, an aggregation or a keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        word = match.group(1)
        if word.lower() not in PROMQL_KEYWORDS and word not in PROMQL_FUNCTIONS | PROMQL_AGGREGATIONS:
            names.add(word)
    return names


def test_the_metric_name_reader_finds_names_and_skips_the_rest():
    expr = ('sum by (model, version) (rate(foo_total{code=~"5..|400", job="up"}[1m])) / on(model) group_left() '
            'bar > bool 0.5 and absent(up{job="x"}) or time() - max_over_time(baz:ratio[27h] offset 1d) > 26 * 3600'
            ' unless histogram_quantile(0.99, sum by (le) (rate(qux_bucket[5m]))) > 1e3')
    assert promql_metric_names(expr) == {"foo_total", "bar", "up", "baz:ratio", "qux_bucket"}
    assert promql_metric_names('max(mlops_x{pipeline=%q,model="candidate"})') == {"mlops_x"}


def _registries() -> List:
    """Every pipeline group with facts that fill every family, and a model server that answered once."""
    facts = metrics.RunFacts(
        outcome="blocked", seconds=600.0, span="2026-12-05", rows={"train": 2400, "eval": 600},
        anomalies=[("schema", "fare", True), ("drift", "trip_miles", True), ("drift", "company", False)],
        drift={"trip_miles": {"per_baseline": {"previous_span": 0.07, "served_model_training": 0.01},
                              "threshold": 0.02, "blocked": True}},
        candidate={"overall": {"auc": 0.71, "example_count": 600}}, baseline={"overall": {"auc": 0.78, "example_count": 600}},
        blessed=False, not_blessed_streak=3, finished_at=time.time(),
    )
    registries = [registry for _, registry in metrics.run_groups("taxi", facts)]
    registries += [
        metrics.success_registry("taxi", time.time()),
        metrics.node_registry("taxi", "Trainer", "failed", 12.5),
        metrics.push_registry("taxi", "taxi", 3, time.time(), {"alert": 1}),
    ]
    serving = ServingMetrics(["taxi"])
    serving.observe("taxi", 3, "predict", 200, 0.004, "rest")
    serving.load_succeeded("taxi", 2.0)
    serving.batch_ran("taxi", 1)
    return registries + [serving.registry]


def test_the_registries_fill_every_family():
    empty = [family.name for registry in _registries() for family in registry.collect() if not family.samples]
    assert empty == []


def test_every_metric_a_rule_uses_is_exposed():
    exposed = set(metrics.metric_names(_registries())) | PROMETHEUS_OWN
    for name, rule in _alert_rules().items():
        used = promql_metric_names(rule["expr"])
        assert used, f"{name}: no metric found in {rule['expr']!r}"
        assert used <= exposed, f"{name}: {sorted(used - exposed)} not exposed by monitoring/ or serving/metrics.py"
        # the queries of the annotation templates (printf `...`) too: a typo there renders "(unknown)"
        for query in re.findall(r"`([^`]*)`", " ".join(rule["annotations"].values())):
            if re.search(r"[{(]", query):
                assert promql_metric_names(query) <= exposed, f"{name}: template query {query!r}"


def test_exposed_metrics_pass_promtool_lint():
    promtool = _tool("promtool")
    for registry in _registries():
        text = generate_latest(registry)
        done = _run(promtool, "check", "metrics", stdin=text)
        assert done.returncode == 0 and not _output(done).strip(), f"{_output(done)}\n{text.decode()}"
    # the check does lint what it is given
    bad = _run(promtool, "check", "metrics", stdin=b"# HELP requests Requests\n# TYPE requests counter\nrequests 1\n")
    assert bad.returncode != 0 and "_total" in _output(bad)


# ------------------------------------------------------------------------------- Alertmanager


def test_amtool_checks_the_config():
    done = _run(_tool("amtool"), "check-config", str(ALERTMANAGER))
    assert done.returncode == 0, _output(done)
    assert "SUCCESS" in _output(done)


def _routes_to(*labels: str) -> List[str]:
    done = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert done.returncode == 0, _output(done)
    return done.stdout.decode().strip().splitlines()[-1].split(",")


@pytest.mark.parametrize("labels, receivers", [
    (("action=rollback", "severity=critical"), ["rollback-webhook", "oncall"]),
    (("severity=critical",), ["oncall"]),
    (("severity=warning",), ["team"]),
    (("severity=info",), ["log"]),
    (("alertname=NewRuleWithoutSeverity",), ["team"]),
    (("action=none", "severity=critical"), ["oncall"]),
])
def test_alertmanager_routes(labels, receivers):
    assert _routes_to(*labels) == receivers
    verified = _run(_tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                    f"--verify.receivers={','.join(receivers)}", *labels)
    assert verified.returncode == 0, _output(verified)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_each_alert_reaches_its_receivers(name):
    rule = _alert_rules()[name]
    labels = [f"alertname={name}"] + [f"{key}={value}" for key, value in sorted(rule["labels"].items())]
    expected = (["rollback-webhook"] if name in ROLLBACK_ALERTS else []) + [RECEIVER_OF_SEVERITY[ALERTS[name][0]]]
    assert _routes_to(*labels) == expected


def test_rollback_webhook_receiver():
    config = yaml.safe_load(ALERTMANAGER.read_text())
    first = config["route"]["routes"][0]
    assert first["receiver"] == "rollback-webhook" and first["continue"] is True
    assert first["matchers"] == ['action="rollback"']
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert set(receivers) == {"oncall", "team", "log", "rollback-webhook"}
    (webhook,) = receivers["rollback-webhook"]["webhook_configs"]
    assert webhook == {
        "url": "http://127.0.0.1:9095/alerts",
        "send_resolved": False,
        "max_alerts": 0,
        "http_config": {"authorization": {"type": "Bearer", "credentials_file": "../var/monitoring/webhook.secret"}},
    }
    # the alert already waited its `for:` in Prometheus: Alertmanager must not add its 30 s default
    assert _seconds(first["group_wait"]) <= 1
    assert {"model", "version"} <= set(first["group_by"])
