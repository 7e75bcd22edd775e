"""The Evaluator's metrics per slice, as plain dicts: `{slice: {metric: value}}` of the candidate and
of the baseline (the served model it was compared with).

GatedEvaluator records them on its `evaluation` artifact (`slice_metrics`, JSON), so the run summary
and `mlops lineage` read them from ML Metadata without importing TFMA; `read_slice_metrics` reads
TFMA's own files, for evaluations recorded before that property existed.

A metric that is undefined on a slice is None, never 0: AUC where every label is one class (TFMA
reports 0 there; the share of positive labels, `mean_label`, tells it apart).
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, Optional, Tuple

SLICE_METRICS = "slice_metrics"  # custom property of the ModelEvaluation artifact
# Metrics that need both classes among the labels of a slice.
NEEDS_BOTH_CLASSES = ("auc",)

SliceMetrics = Dict[str, Dict[str, Optional[float]]]


def with_undefined(values: Dict[str, float]) -> Dict[str, Optional[float]]:
    """AUC of a slice whose labels are all one class is undefined (TFMA reports 0): None."""
    mean_label = values.get("mean_label")
    if mean_label is not None and (mean_label <= 0.0 or mean_label >= 1.0):
        return {k: (None if k in NEEDS_BOTH_CLASSES else v) for k, v in values.items()}
    return dict(values)


def slice_name(slice_key) -> str:
    """"overall", or "feature=value[,feature=value]" of a deserialized TFMA slice key."""
    if not slice_key:
        return "overall"
    return ",".join(f"{k}={v}" for k, v in slice_key)


def read_slice_metrics(evaluation_uri: str) -> Tuple[SliceMetrics, SliceMetrics]:
    """(the candidate's metrics per slice, the baseline's) from TFMA's files under `evaluation_uri`."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TFMA's reader logs a deprecation notice
    import tensorflow_model_analysis as tfma

    candidate, baseline = {}, {}
    for record in tfma.load_metrics(evaluation_uri):
        name = slice_name(tfma.slicer.deserialize_slice_key(record.slice_key))
        ours, theirs = {}, {}
        for kv in record.metric_keys_and_values:
            if kv.key.is_diff or not kv.value.HasField("double_value"):
                continue
            (theirs if kv.key.model_name == "baseline" else ours)[kv.key.name] = kv.value.double_value.value
        candidate[name] = with_undefined(ours)
        if theirs:
            # TFMA counts examples once per slice, not per model.
            theirs.setdefault("example_count", ours.get("example_count", 0))
            baseline[name] = with_undefined(theirs)
    return candidate, baseline


def to_property(candidate: SliceMetrics, baseline: SliceMetrics) -> str:
    return json.dumps({"candidate": candidate, "baseline": baseline}, sort_keys=True)


def from_property(text: str) -> Tuple[SliceMetrics, SliceMetrics]:
    data = json.loads(text or "{}")
    return data.get("candidate", {}), data.get("baseline", {})


def recorded_slice_metrics(artifact_properties, evaluation_uri: str) -> Tuple[SliceMetrics, SliceMetrics]:
    """The metrics of a ModelEvaluation: its `slice_metrics` property, else TFMA's files ({} , {} when
    there are none, e.g. an evaluation skipped because the candidate was the served model)."""
    if SLICE_METRICS in artifact_properties:
        return from_property(artifact_properties[SLICE_METRICS].string_value)
    # A skipped evaluation (the candidate was the served model) wrote no metrics: do not import TFMA
    # (seconds) to find that out.
    if not glob.glob(os.path.join(evaluation_uri, "metrics*")):
        return {}, {}
    try:
        return read_slice_metrics(evaluation_uri)
    except Exception:  # noqa: BLE001 -- unreadable metrics: none
        return {}, {}
