"""The nightly eval config stays inside what the fast evaluation covers (components/evaluator/fast.py):
a metric or option outside it would silently send every night back to TFMA's per-example Beam
pipeline (73 s instead of ~7 s for two models on a 150k-row span)."""

from __future__ import annotations

import datetime as dt

from components.evaluator import fast
from pipelines.config import PipelineConfig, ProjectPaths
from pipelines.pipeline import HEADLINE_METRIC, _eval_config


def test_the_pipelines_eval_config_is_covered_by_the_fast_evaluation(tmp_path):
    eval_config = _eval_config(PipelineConfig.for_project(ProjectPaths(tmp_path), dt.date(2026, 11, 20)))
    assert fast.unsupported_reason(eval_config) is None
    # The metrics the summary, the slice guard and the monitoring read.
    assert {HEADLINE_METRIC, "loss", "binary_accuracy", "example_count", "mean_label"} <= set(
        fast.metric_names(eval_config))
