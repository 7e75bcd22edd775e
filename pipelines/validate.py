"""`mlops validate --date D`: the span's data gates, without training.

Runs the nightly pipeline's first nodes (ImportSchemaGen ... DriftValidator, see
`pipeline.data_gate_components`) under the same pipeline name, so the verdict, findings and
per-feature distances land in ML Metadata exactly as in a nightly run, and reads them back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, Dict, List, Optional

from pipelines.config import PipelineConfig

@dataclasses.dataclass
class ValidationReport:
    span: str
    run_id: str
    blocked: bool = False
    stopped_at: str = ""
    rows: int = 0
    duplicate_rows: int = 0
    findings: List[dict] = dataclasses.field(default_factory=list)
    drift: Dict[str, dict] = dataclasses.field(default_factory=dict)
    reports: Dict[str, str] = dataclasses.field(default_factory=dict)  # gate -> report.html / report.txt
    baselines: List[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def lines(self) -> List[str]:
        verdict = f"BLOCKED at {self.stopped_at}" if self.blocked else "passed"
        out = [f"span {self.span}: {verdict} ({self.rows} rows, {self.duplicate_rows} duplicate rows; run {self.run_id})"]
        out += [f"  {note}" for note in self.baselines]
        if self.findings:
            width = max(len(f["feature"]) for f in self.findings)
            out.append(f"  {'':5} {'feature':<{width}}  {'kind':<15} seen vs expected")
            for finding in self.findings:
                status = "BLOCK" if finding.get("blocking") else "warn"
                message = finding["message"]
                prefix = f"{finding['feature']}: "
                message = message[len(prefix):] if message.startswith(prefix) else message
                out.append(f"  {status:<5} {finding['feature']:<{width}}  {finding['kind']:<15} {message}")
        else:
            out.append("  no anomalies")
        if self.drift:
            out.append(f"  {'drift':<5} {'feature':<22} {'comparator':<26} {'distance':>8} {'threshold':>9}  baseline")
            for feature, row in sorted(self.drift.items()):
                over = row["distance"] > row["threshold"]
                status = ("warn" if row.get("warn") else "OVER") if over else "ok"
                out.append(f"  {status:<5} {feature:<22} {row['comparator']:<26} {row['distance']:>8.3f} "
                           f"{row['threshold']:>9.2f}  {row['baseline']}")
        fixes = sorted({f["fix"] for f in self.findings if f.get("blocking")})
        out += [f"  fix: {fix}" for fix in fixes]
        out += [f"  report: {path}" for path in self.reports.values()]
        return out

def validate_span(config: PipelineConfig, run_id: Optional[str] = None,
                  progress: Callable[[str], None] = print) -> ValidationReport:
    """Runs the data gates for `config.span_date`; never raises for bad data (see `.blocked`)."""
    from pipelines.errors import DataError
    from pipelines.node_runner import compile_pipeline, node_ids, run_node
    from pipelines.pipeline import create_validation_pipeline
    from pipelines.node_runner import ensure_state_dirs, prepare_process_env
    from pipelines.runner import default_run_id

    prepare_process_env()
    config.check()
    ensure_state_dirs(config)
    run_id = run_id or default_run_id(config.span_date, kind="validate")
    ir = compile_pipeline(create_validation_pipeline(config), run_id)
    report = ValidationReport(span=config.span_date.isoformat(), run_id=run_id)
    nodes = node_ids(ir)
    for index, node_id in enumerate(nodes, start=1):
        try:
            result = run_node(ir, node_id)
        except DataError:
            report.blocked, report.stopped_at = True, node_id
            progress(f"[{index}/{len(nodes)}] {node_id} blocked the span")
            break
        progress(f"[{index}/{len(nodes)}] {node_id} {result.status} in {result.seconds:.1f}s")
    _read_gates(config, run_id, report)
    return report

def _read_gates(config: PipelineConfig, run_id: str, report: ValidationReport) -> None:
    import os

    from ml_metadata import metadata_store

    store = metadata_store.MetadataStore(config.metadata.to_proto())
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return
    for artifact in sorted(store.get_artifacts_by_context(context.id), key=lambda a: a.id):
        props = artifact.custom_properties
        if "findings" not in props or "gate" not in props:
            continue
        gate = props["gate"].string_value
        report.findings += json.loads(props["findings"].string_value or "[]")
        if "rows" in props:
            report.rows, report.duplicate_rows = props["rows"].int_value, props["duplicate_rows"].int_value
        if "drift_distances" in props:
            report.drift = json.loads(props["drift_distances"].string_value or "{}")
        for name in ("report.html", "report.txt"):
            path = os.path.join(artifact.uri, name)
            if os.path.exists(path):
                report.reports[gate] = path
                break
        if gate == "drift_validator":
            text_report = os.path.join(artifact.uri, "report.txt")
            if os.path.exists(text_report):
                with open(text_report) as handle:
                    report.baselines = handle.readline().strip().split(": ", 1)[-1].split("; ")
