"""`mlops lineage` output: the documents of pipelines/lineage.py as text or as a Mermaid flowchart
(which GitHub renders in Markdown). JSON is the document itself (docs/lineage.schema.json)."""

from __future__ import annotations

from typing import Dict, List, Optional

from pipelines.config import GateConfig

Json = Dict[str, object]
SHOWN_METRICS = ("auc", "loss", "binary_accuracy")
MIN_SHOWN_SLICE_EXAMPLES = GateConfig.min_slice_examples


def _value(value) -> str:
    if value is None:
        return "undefined"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return str(value)


def _metric(value) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def _who(execution: Optional[Json]) -> str:
    if not execution:
        return ""
    text = f"execution {execution['execution_id']} in run {execution['run_id'] or '?'}"
    airflow = execution.get("airflow") or {}
    if airflow:
        text += (f" (Airflow {airflow.get('dag_id', '?')} / {airflow.get('run_id', '?')} / {airflow.get('task_id', '?')}"
                 f" try {airflow.get('try_number', '?')})")
    return text


def _push_line(push: Json, serving: bool) -> str:
    kind = push["kind"] + (f" ({push['trigger']})" if push.get("trigger") else "")
    line = (f"version {push['version']}{' (serving now)' if serving else ''}: {kind} push at "
            f"{str(push['pushed_at'])[:19].replace('T', ' ')} UTC by {push['requested_by'] or '?'}")
    if push.get("replaced_version"):
        line += f", replacing version {push['replaced_version']}"
    return line + (f' -- "{push["reason"]}"' if push.get("reason") else "")


def _metric_lines(evaluation: Optional[Json]) -> List[str]:
    if not evaluation:
        return ["  evaluation  none (skipped: the candidate was the model being served)"]
    metrics, baseline = evaluation["metrics"], evaluation["baseline_metrics"]
    against = "against the served model" if baseline else "no baseline: no model was served"
    out = [f"  evaluation  {evaluation['artifact_id']} ({against}): metrics per slice"
           + (" (baseline in brackets)" if baseline else "")]
    hidden = 0
    for name, values in sorted(metrics.items(), key=lambda kv: (kv[0] != "overall", kv[0])):
        count = values.get("example_count") or 0
        if name != "overall" and count < MIN_SHOWN_SLICE_EXAMPLES:
            hidden += 1
            continue
        theirs = baseline.get(name, {})
        shown = ", ".join(f"{m} {_metric(values[m])}" + (f" [{_metric(theirs.get(m))}]" if baseline else "")
                          for m in SHOWN_METRICS if m in values)
        out.append(f"      {name} ({count:.0f} examples): {shown}")
    if hidden:
        out.append(f"      ({hidden} slices with fewer than {MIN_SHOWN_SLICE_EXAMPLES} examples not shown; --json has them)")
    return out


def _gate_line(gate: Json) -> str:
    verdict = "BLOCKED" if gate["blocked"] else "passed"
    line = f"  gate        {gate['gate']}: {verdict} (run {gate['run_id'] or '?'})"
    if gate["blocked"] and gate.get("problem"):
        line += f": {gate['problem']}"
    warnings = [f["message"] for f in gate.get("findings") or [] if not f.get("blocking")]
    if warnings:
        line += f"; warnings: {'; '.join(warnings)}"
    drift = gate.get("drift") or {}
    if drift:
        line += "\n      drift (distance/threshold): " + ", ".join(
            f"{feature} {row['distance']:.3f}/{row['threshold']:.2f}" + (" OVER" if row["distance"] > row["threshold"] else "")
            for feature, row in sorted(drift.items()))
    if gate.get("report"):
        line += f"\n      report: {gate['report']}"
    return line


def _infra_lines(infra: Optional[Json]) -> List[str]:
    """The InfraValidator's verdict: the candidate served by a throwaway model server and called."""
    if not infra:
        return ["  infra       none recorded (pushed before the InfraValidator, or not infra-validated)"]
    timings = infra.get("timings") or {}
    took = ", ".join(f"{label} {round(timings[key], 3):g}s" for key, label in (
        ("server_start_seconds", "server start"), ("requests_seconds", "requests"), ("validation_seconds", "total"))
        if isinstance(timings.get(key), (int, float)))
    whose = "" if infra.get("read_by_push") else " (the model's, from its nightly run: this push read none)"
    line = (f"  infra       {infra['artifact_id']}: {'blessed' if infra['blessed'] else 'NOT blessed'} -- "
            f"{infra['reason']}{whose}")
    out = [line]
    details = [f"signatures {', '.join(infra['signatures'])}" if infra.get("signatures") else "",
               f"{infra['requests_answered']} requests answered" if infra.get("requests_answered") is not None else "",
               took]
    execution = infra.get("execution")
    if any(details) or execution:
        out.append("              " + "; ".join([d for d in details if d] + ([_who(execution)] if execution else [])))
    return out


def chain_lines(item: Json) -> List[str]:
    out = [_push_line(item["push"], item["serving"])]
    push = item["push"]
    out.append(f"  push        {_who(push.get('execution'))}")
    model = item.get("model")
    if model:
        first = push.get("first_pushed_as")
        again = f" (first pushed as version {first})" if first and first != push["version"] else ""
        out.append(f"  model       {model['artifact_id']}{again}: {model['uri']}")
    blessing = item.get("blessing")
    if blessing:
        out.append(f"  blessing    {blessing['artifact_id']}: {'blessed' if blessing['blessed'] else 'NOT blessed'} -- "
                   f"{blessing['reason']}")
    out += _metric_lines(item.get("evaluation"))
    out += _infra_lines(item.get("infra_blessing"))
    training = item.get("training")
    if training:
        hyper = ", ".join(f"{k} {v}" for k, v in sorted((training.get("hyperparameters") or {}).items()))
        out.append(f"  training    {training['train_steps']} train steps, {training['eval_steps']} eval steps, "
                   f"strategy {training['strategy']}" + (f", {hyper}" if hyper else "")
                   + f"; {_who(training['execution'])}")
        tuning = training.get("tuning")
        if tuning:
            out.append(f"  tuning      hyperparameters {tuning['artifact_id']} from weekly tuning; "
                       f"{_who(tuning['execution']) if tuning.get('execution') else 'its Tuner execution is not in the store'}")
        run = training.get("run") or {}
        if run.get("code_version"):
            out.append(f"      code {run['code_version']}")
    out += _window_lines(item.get("window"))
    transform = item.get("transform")
    if transform:
        out.append(f"  transform   graph {transform['artifact_id']} ({transform['preprocessing_fn']}): {transform['uri']}")
        if transform.get("analyzed_spans") is not None:
            out.append(f"      analyzed {', '.join(transform['analyzed_spans']) or 'nothing'}; from the analyzer cache: "
                       f"{', '.join(transform['cached_spans'] or []) or 'nothing'}")
    schema = item.get("schema")
    if schema:
        out.append(f"  schema      {schema['artifact_id']}: snapshot {schema['snapshot'] or '?'}"
                   + (f" (sha256 {schema['sha256']})" if schema.get("sha256") else ""))
    statistics = item.get("statistics")
    if statistics:
        rows = ", ".join(f"{k} {v} rows" for k, v in sorted(statistics["rows"].items())) or "rows not on disk"
        out.append(f"  statistics  {statistics['artifact_id']}: {rows}")
    for gate in item.get("gates") or []:
        out.append(_gate_line(gate))
    examples = item.get("examples")
    if examples:
        out.append(f"  span        {examples['span']}: examples {examples['artifact_id']} "
                   f"({examples['input_fingerprint']})")
    for row in item.get("input_files") or []:
        out.append(f"      file {row['name']}: {row['rows']} rows, {row['bytes']} bytes, sha256 {row['sha256']}")
    return out


def span_lines(span: Json) -> List[str]:
    out = [f"span {span['span']}"]
    for gate in span["gates"]:
        out.append(_gate_line(gate))
    if not span["models"]:
        why = "a data gate blocked it" if span["blocked"] else "no Trainer ran on it"
        out.append(f"  no model was trained on span {span['span']} ({why})")
    for model in span["models"]:
        versions = ", ".join(f"version {v['version']} ({v['kind']}{', serving now' if v['serving'] else ''})"
                             for v in model["pushed_versions"]) or "never pushed"
        blessed = {True: "blessed", False: "not blessed", None: "not evaluated"}[model["blessed"]]
        out.append(f"  model {model['model_id']}: {blessed}"
                   + (f" ({model['blessing_reason']})" if model["blessing_reason"] else "")
                   + f"; pushed as {versions}; trained by {_who(model['training'])}")
    for scoring in span.get("scorings", []):
        how = "reused the scores in" if scoring["state"] == "cached" else f"scored {scoring['rows']:,} rows into"
        out.append(f"  scored by version {scoring['pushed_version']} (model {scoring['model_id']}) at "
                   f"{scoring['scored_at']}: {how} {scoring['path']} [execution {scoring['execution_id']}, "
                   f"run {scoring['run_id']}]")
    return out


def _window_lines(window: Optional[Json]) -> List[str]:
    if not window:
        return []
    trained = ", ".join(window["train_spans"])
    out = [f"  window      {window['days']} days: trained on {trained}; evaluated on {window['eval_span']}"
           + (" (held out)" if window["train_spans"] != [window["eval_span"]] else " (its eval split)")]
    return out + [f"      skipped {skip['span']}: {skip['reason']}" for skip in window["skipped"]]


def run_lines(run: Json) -> List[str]:
    out = [f"run {run['run_id']}" + (f" (Airflow run {run['airflow_run_id']})" if run["airflow_run_id"] else "")]
    if run["code_version"]:
        out.append(f"  code        {run['code_version']}")
    config = run.get("config") or {}
    if config:
        out.append("  config      " + ", ".join(f"{k}={v}" for k, v in sorted(config.items()) if k != "gates"))
    for row in run["executions"]:
        airflow = row.get("airflow") or {}
        task = f" (task {airflow.get('task_id')} try {airflow.get('try_number')})" if airflow else ""
        out.append(f"  execution {row['execution_id']:>5}  {row['node']:28} {row['state']}{task}")
    if run["blocked_by"]:
        out.append(_gate_line(run["blocked_by"]))
    if run["chain"]:
        out += ["", *chain_lines(run["chain"])]
    elif not run["blocked_by"]:
        out += _window_lines(run.get("window"))
        out.append("  pushed nothing")
    return out


def _big_slices(doc: Json) -> set:
    """Slices with enough examples (on either side) to be worth a line of text."""
    out = {"overall"}
    for side in ("left", "right"):
        for name, values in (((doc[side].get("evaluation") or {}).get("metrics")) or {}).items():
            if (values.get("example_count") or 0) >= MIN_SHOWN_SLICE_EXAMPLES:
                out.add(name)
    return out


def diff_lines(doc: Json) -> List[str]:
    left, right = doc["query"]["diff"]
    big = _big_slices(doc)
    rows, hidden = [], 0
    for row in doc["fields"]:
        if row["field"].startswith("metrics[") and row["field"][len("metrics["):].split("]", 1)[0] not in big:
            hidden += 1
            continue
        rows.append(row)
    width = max([5] + [len(r["field"]) for r in rows])
    out = [f"{'field':{width}}   {'version ' + str(left):40}  version {right}"]
    for row in rows:
        mark = "*" if row["differs"] else " "
        left_value, right_value = row["left"], row["right"]
        if row["field"].startswith("metrics[") and not row["field"].endswith(".example_count"):
            left_value, right_value = (_metric(v) if v is not None else None for v in (left_value, right_value))
        out.append(f"{row['field']:{width}} {mark} {_short(left_value):40}  {_short(right_value)}")
    out.append(f"* = differs ({len(doc['differing'])} of {len(doc['fields'])} fields)")
    if hidden:
        out.append(f"({hidden} metric fields of slices with fewer than {MIN_SHOWN_SLICE_EXAMPLES} examples not shown; "
                   "--json has them)")
    return out


def _short(value) -> str:
    text = _value(value) if value is not None else "-"
    if len(text) <= 40:
        return text
    return "..." + text[-37:] if text.startswith("/") else text[:37] + "..."  # a path's end tells it apart


def render_text(doc: Json) -> str:
    kind = doc["kind"]
    if kind == "chain":
        return "\n".join(chain_lines(doc["chain"]))
    if kind == "span":
        return "\n".join(span_lines(doc["span"]))
    if kind == "run":
        return "\n".join(run_lines(doc["run"]))
    return "\n".join(diff_lines(doc))


# ------------------------------------------------------------------------------------- Mermaid


def _label(text: str) -> str:
    return '"' + str(text).replace('"', "'").replace("\n", "<br/>") + '"'


def _chain_mermaid(item: Json, prefix: str) -> List[str]:
    p = prefix
    lines = []
    nodes: List[tuple] = []

    def node(key: str, text: str, shape: str = "box") -> str:
        name = f"{p}{key}"
        nodes.append((name, text, shape))
        return name

    push = item["push"]
    version = node("version", f"version {item['version']}{' (serving)' if item['serving'] else ''}<br/>"
                   f"{push['kind']}{' (' + push['trigger'] + ')' if push.get('trigger') else ''}: {push['reason']}", "round")
    pusher = node("pusher", "AtomicPusher", "exec")
    lines.append(f"{pusher} --> {version}")
    if item.get("model"):
        model = node("model", f"Model {item['model']['artifact_id']}")
        lines.append(f"{model} --> {pusher}")
        if item.get("training"):
            t = item["training"]
            trainer = node("trainer", f"Trainer<br/>{t['train_steps']} steps, {t['strategy']}", "exec")
            lines.append(f"{trainer} --> {model}")
            if item.get("transform"):
                graph = node("graph", f"TransformGraph {item['transform']['artifact_id']}")
                transform = node("transform", "Transform", "exec")
                lines += [f"{transform} --> {graph}", f"{graph} --> {trainer}"]
                if item.get("examples"):
                    examples = node("examples", f"Examples {item['examples']['artifact_id']}<br/>span {item['examples']['span']}")
                    gen = node("examplegen", "CsvExampleGen", "exec")
                    lines += [f"{gen} --> {examples}", f"{examples} --> {transform}"]
                    for row in item.get("input_files") or []:
                        f = node(f"file{len(nodes)}", f"{row['name']}<br/>{row['rows']} rows, sha256 {row['sha256'][:12]}", "file")
                        lines.append(f"{f} --> {gen}")
                    if item.get("statistics"):
                        stats = node("stats", f"ExampleStatistics {item['statistics']['artifact_id']}")
                        sgen = node("statsgen", "StatisticsGen", "exec")
                        lines += [f"{examples} --> {sgen}", f"{sgen} --> {stats}"]
                        for gate in item.get("gates") or []:
                            if gate["gate"] == "drift_validator":
                                verdict = node("drift", f"drift gate: {'BLOCKED' if gate['blocked'] else 'passed'}")
                                lines.append(f"{stats} --> {verdict}")
            if item.get("schema"):
                schema = node("schema", f"Schema {item['schema']['artifact_id']}")
                lines.append(f"{schema} --> {trainer}")
                if item.get("transform"):
                    lines.append(f"{schema} --> {p}transform")
    if item.get("blessing"):
        b = item["blessing"]
        blessing = node("blessing", f"ModelBlessing {b['artifact_id']}<br/>{'blessed' if b['blessed'] else 'not blessed'}")
        evaluator = node("evaluator", "GatedEvaluator", "exec")
        lines += [f"{evaluator} --> {blessing}", f"{blessing} --> {pusher}"]
        if item.get("model"):
            lines.append(f"{p}model --> {evaluator}")
        if item.get("examples"):
            lines.append(f"{p}examples --> {evaluator}")
        if item.get("evaluation"):
            auc = (item["evaluation"]["metrics"].get("overall") or {}).get("auc")
            evaluation = node("evaluation", f"ModelEvaluation {item['evaluation']['artifact_id']}<br/>overall auc {_value(auc)}")
            lines.append(f"{evaluator} --> {evaluation}")
    if item.get("infra_blessing"):
        i = item["infra_blessing"]
        infra = node("infra", f"InfraBlessing {i['artifact_id']}<br/>{'blessed' if i['blessed'] else 'not blessed'}")
        validator = node("infravalidator", "InfraValidator", "exec")
        lines.append(f"{validator} --> {infra}")
        if i.get("read_by_push"):
            lines.append(f"{infra} --> {pusher}")
        if item.get("model"):
            lines.append(f"{p}model --> {validator}")
    shapes = {"box": ("[", "]"), "round": ("([", "])"), "exec": ("[[", "]]"), "file": ("[/", "/]")}
    return [f"    {name}{shapes[shape][0]}{_label(text)}{shapes[shape][1]}" for name, text, shape in nodes] + \
        [f"    {line}" for line in lines]


def render_mermaid(doc: Json) -> str:
    """A `flowchart LR` (paste it into a ```mermaid block of GitHub Markdown)."""
    kind = doc["kind"]
    out = ["flowchart LR"]
    if kind == "chain":
        out += _chain_mermaid(doc["chain"], "v")
    elif kind == "run":
        run = doc["run"]
        if run["chain"]:
            out += _chain_mermaid(run["chain"], "v")
        else:
            previous = None
            for i, row in enumerate(run["executions"]):
                out.append(f"    e{i}[[{_label(row['node'] + ': ' + row['state'])}]]")
                if previous is not None:
                    out.append(f"    e{previous} --> e{i}")
                previous = i
    elif kind == "span":
        span = doc["span"]
        out.append(f"    span([{_label('span ' + span['span'])}])")
        for i, gate in enumerate(span["gates"]):
            out.append(f"    g{i}{{{{{_label(gate['gate'] + ': ' + ('BLOCKED' if gate['blocked'] else 'passed'))}}}}}")
            out.append(f"    span --> g{i}")
        for model in span["models"]:
            out.append(f"    m{model['model_id']}[{_label('Model ' + str(model['model_id']))}]")
            out.append(f"    span --> m{model['model_id']}")
            for v in model["pushed_versions"]:
                out.append(f"    v{v['version']}([{_label('version ' + str(v['version']) + (' (serving)' if v['serving'] else ''))}])")
                out.append(f"    m{model['model_id']} --> v{v['version']}")
    else:
        for side, prefix in (("left", "a"), ("right", "b")):
            item = doc[side]
            out.append(f"    subgraph {prefix}[{_label('version ' + str(item['version']))}]")
            out += ["  " + line for line in _chain_mermaid(item, prefix)]
            out.append("    end")
    return "\n".join(out)
