"""Runs one span in-process: every node of the compiled pipeline, in order, with progress lines.

The same per-node code path (`node_runner.run_node`) is what the Airflow tasks run, one node
each, so `mlops run` and the nightly DAG behave the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable, Optional

from pipelines.config import PipelineConfig
from pipelines.node_runner import ensure_state_dirs, prepare_process_env
from pipelines.summary import RunSummary


def default_run_id(span_date: dt.date, kind: str = "local") -> str:
    """A new run id, unique per call: `<kind>__<span>__<UTC time>-<6 random hex digits>`.

    Seconds are not enough: a cached run through the warm worker ends in well under a
    second, and two runs sharing an id share one ML Metadata run context, so the second
    report would read the first run's verdict.
    """
    import secrets

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{kind}__{span_date.isoformat()}__{now}-{secrets.token_hex(3)}"


class RunFailed(Exception):
    def __init__(self, node_id: str, cause: BaseException, summary: RunSummary):
        super().__init__(f"node {node_id} failed: {cause}")
        self.node_id = node_id
        self.cause = cause
        self.summary = summary


def run_span(
    config: PipelineConfig,
    run_id: Optional[str] = None,
    progress: Callable[[str], None] = print,
) -> RunSummary:
    """Runs the whole pipeline for `config.span_date`; raises RunFailed on the first failed node."""
    prepare_process_env()
    config.check()
    ensure_state_dirs(config)
    from pipelines.monitor import report_run
    from pipelines.run_context import record_run
    from pipelines.node_runner import compile_for, node_ids, run_node
    from pipelines.summary import read_run_summary

    run_id = run_id or default_run_id(config.span_date)
    ir = compile_for(config, run_id)
    nodes = node_ids(ir)
    progress(f"run {run_id}: span {config.span_date}, {len(nodes)} nodes")
    for index, node_id in enumerate(nodes, start=1):
        progress(f"[{index}/{len(nodes)}] {node_id} ...")
        try:
            result = run_node(ir, node_id)
        except Exception as err:  # noqa: BLE001 -- reported with the summary, then re-raised
            progress(f"[{index}/{len(nodes)}] {node_id} FAILED: {err}")
            record_run(config.metadata.to_proto(), run_id, config)
            report_run(config.metadata.to_proto(), config.pipeline_root, run_id, config.pipeline_name)
            summary = read_run_summary(config.metadata.to_proto(), run_id, with_metrics=False)
            raise RunFailed(node_id, err, summary) from err
        progress(f"[{index}/{len(nodes)}] {node_id} {result.status} in {result.seconds:.1f}s")
    record_run(config.metadata.to_proto(), run_id, config)
    summary = read_run_summary(config.metadata.to_proto(), run_id)
    report_run(config.metadata.to_proto(), config.pipeline_root, run_id, config.pipeline_name, summary=summary)
    return summary
