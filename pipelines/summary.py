"""End-of-run summary read back from ML Metadata (so any process can print it, e.g. Airflow)."""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, List, Optional


from pipelines.config import GateConfig

# Slices too small to be gated are not worth a line either.
MIN_SHOWN_SLICE_EXAMPLES = GateConfig.min_slice_examples


@dataclasses.dataclass
class RunSummary:
    run_id: str
    span: str = ""
    rows: Dict[str, int] = dataclasses.field(default_factory=dict)
    node_states: Dict[str, str] = dataclasses.field(default_factory=dict)
    anomalies: List[str] = dataclasses.field(default_factory=list)
    # The data gates' findings as recorded: {"kind", "feature", "blocking", "message", ...}.
    findings: List[dict] = dataclasses.field(default_factory=list)
    blocked: bool = False  # a data gate blocked the span
    # {feature: {"distance", "threshold", "comparator", "baseline", ...}} from the DriftValidator.
    drift: Dict[str, dict] = dataclasses.field(default_factory=dict)
    # {slice: {metric: value}} of the candidate; a metric that is undefined on a slice (AUC where every
    # label is the same class) is None, never 0.
    metrics: Dict[str, Dict[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    # The same for the baseline (the served model the candidate was compared with), when there was one.
    baseline_metrics: Dict[str, Dict[str, Optional[float]]] = dataclasses.field(default_factory=dict)
    # The spans the model trained on and was evaluated on, and the window's skipped days with
    # reasons (pipelines/window.py); None when no model was trained.
    window: Optional[dict] = None
    blessed: Optional[bool] = None
    blessing_reason: str = ""
    # The InfraValidator's verdict: did the project's model server load the candidate and answer on
    # every signature (None: it did not run), why, and how long the throwaway server took.
    servable: Optional[bool] = None
    servable_reason: str = ""
    servable_seconds: Optional[float] = None
    pushed_version: Optional[int] = None
    push_reason: str = ""
    pruned_versions: List[int] = dataclasses.field(default_factory=list)  # deleted by retention after the push
    prune_error: str = ""

    def lines(self) -> List[str]:
        out = [f"run {self.run_id}", f"  span:      {self.span or '?'}"]
        out.append("  rows:      " + (", ".join(f"{k}={v}" for k, v in sorted(self.rows.items())) or "?"))
        out.append("  nodes:     " + ", ".join(f"{k}:{v}" for k, v in self.node_states.items()))
        out.append("  anomalies: " + ("; ".join(self.anomalies) if self.anomalies else "none"))
        if self.drift:
            out.append("  drift:     " + ", ".join(
                f"{feature} {row['distance']:.2f}/{row['threshold']:.2f}" + (" OVER" if row["distance"] > row["threshold"] else "")
                for feature, row in sorted(self.drift.items())) + " (distance/threshold)")
        from pipelines.window import lines as window_lines

        out.extend(window_lines(self.window))
        small = 0
        for slice_name, values in sorted(self.metrics.items(), key=lambda kv: (kv[0] != "overall", kv[0])):
            if slice_name != "overall" and values.get("example_count", 0) < MIN_SHOWN_SLICE_EXAMPLES:
                small += 1
                continue
            shown = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(values.items()) if k not in HIDDEN_METRICS)
            out.append(f"  metrics[{slice_name}] ({values.get('example_count', 0):.0f} examples): {shown}")
        if small:
            out.append(f"  ({small} slices with fewer than {MIN_SHOWN_SLICE_EXAMPLES} examples not shown; --json has them)")
        if self.blessed is not None:
            out.append(f"  blessed:   {'yes' if self.blessed else 'no'} ({self.blessing_reason})")
        if self.servable is not None:
            took = f"; {self.servable_seconds:.1f}s" if self.servable_seconds else ""
            out.append(f"  servable:  {'yes' if self.servable else 'no'} ({self.servable_reason}{took})")
        if self.pushed_version:
            out.append(f"  pushed:    version {self.pushed_version} ({self.push_reason})")
            if self.pruned_versions:
                out.append(f"  retention: deleted version(s) {', '.join(map(str, self.pruned_versions))} "
                           "(older than the newest kept; labelled, pinned and served ones stay)")
            if self.prune_error:
                out.append(f"  retention: {self.prune_error}")
        else:
            out.append(f"  pushed:    nothing ({self.push_reason or 'the Pusher did not run'})")
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Shown elsewhere (the count) or only used to tell an undefined AUC (the share of positive labels).
HIDDEN_METRICS = ("example_count", "mean_label")


def _shown(value: Optional[float]) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def read_run_summary(connection_config, run_id: str, pipeline_name: str = "taxi", with_metrics: bool = True) -> RunSummary:
    """Collects what one pipeline run did from ML Metadata."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    store = metadata_store.MetadataStore(connection_config)
    summary = RunSummary(run_id=run_id)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return summary
    state_names = {v: k.lower() for k, v in metadata_store_pb2.Execution.State.items()}
    for execution in sorted(store.get_executions_by_context(context.id), key=lambda e: e.id):
        node = next(
            (c.name.split(".", 1)[-1] for c in store.get_contexts_by_execution(execution.id)
             if c.type_id == store.get_context_type("node").id),
            str(execution.id),
        )
        summary.node_states[node] = state_names.get(execution.last_known_state, "?")
        events = store.get_events_by_execution_ids([execution.id])
        out_ids = [e.artifact_id for e in events if e.type == metadata_store_pb2.Event.OUTPUT]
        for artifact in store.get_artifacts_by_id(out_ids):
            _absorb(summary, node, artifact, store, with_metrics)
    return summary


def _absorb(summary: RunSummary, node: str, artifact, store, with_metrics: bool) -> None:
    props = artifact.custom_properties
    type_name = store.get_artifact_types_by_id([artifact.type_id])[0].name
    if type_name == "Examples" and "span" in props:
        from components.util.spans import span_date

        summary.span = span_date(props["span"].int_value)
    elif type_name == "ExampleStatistics":
        from components.util.statistics import statistics_rows

        summary.rows.update(statistics_rows(artifact.uri))
    elif type_name == "ExampleAnomalies" and "findings" in props:  # a data gate (components/verdict.py)
        import json

        for finding in json.loads(props["findings"].string_value or "[]"):
            summary.anomalies.append(("" if finding.get("blocking") else "(warn) ") + finding["message"])
            summary.findings.append(finding)
        if "blocked" in props and props["blocked"].int_value == 1:
            summary.blocked = True
        if "drift_distances" in props:
            summary.drift = json.loads(props["drift_distances"].string_value or "{}")
    elif type_name == "Model":
        from pipelines.window import describe

        summary.window = describe(store, artifact)
    elif type_name == "ModelBlessing":
        summary.blessed = props["blessed"].int_value == 1 if "blessed" in props else None
        summary.blessing_reason = props["reason"].string_value if "reason" in props else ""
    elif type_name == "InfraBlessing":
        summary.servable = props["blessed"].int_value == 1 if "blessed" in props else None
        summary.servable_reason = props["reason"].string_value if "reason" in props else ""
        seconds = props["validation_seconds"] if "validation_seconds" in props else None
        summary.servable_seconds = seconds.double_value if seconds is not None else None
    elif type_name == "ModelEvaluation" and with_metrics:
        from components.evaluator.metrics import recorded_slice_metrics

        summary.metrics, summary.baseline_metrics = recorded_slice_metrics(props, artifact.uri)
    elif type_name == "PushedModel":
        if "pushed" in props and props["pushed"].int_value == 1:
            summary.pushed_version = props["pushed_version"].int_value
        summary.push_reason = props["reason"].string_value if "reason" in props else ""
        pruned = props["pruned_versions"].string_value if "pruned_versions" in props else ""
        summary.pruned_versions = [int(v) for v in pruned.split(",") if v]
        summary.prune_error = props["prune_error"].string_value if "prune_error" in props else ""


def latest_run_id(connection_config) -> Optional[str]:
    """The id of the most recently created pipeline run, or None."""
    from ml_metadata import metadata_store

    store = metadata_store.MetadataStore(connection_config)
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return None
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)).name
