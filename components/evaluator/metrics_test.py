"""components/evaluator/metrics.py and the slice guard over it: metrics per slice as recorded in ML
Metadata (no TFMA needed to read them back)."""

from ml_metadata.proto import metadata_store_pb2

from components.evaluator import metrics
from components.evaluator.executor import slice_regressions


def test_auc_of_a_one_class_slice_is_undefined_not_zero():
    assert metrics.with_undefined({"auc": 0.0, "mean_label": 1.0}) == {"auc": None, "mean_label": 1.0}
    assert metrics.with_undefined({"auc": 0.7, "mean_label": 0.3}) == {"auc": 0.7, "mean_label": 0.3}


def test_the_recorded_property_is_read_back_without_tfma():
    candidate = {"overall": {"auc": 0.8, "example_count": 300.0}, "payment_type=Cash": {"auc": None}}
    baseline = {"overall": {"auc": 0.75, "example_count": 300.0}}
    artifact = metadata_store_pb2.Artifact()
    artifact.custom_properties[metrics.SLICE_METRICS].string_value = metrics.to_property(candidate, baseline)
    # The URI does not exist: the property alone answers.
    assert metrics.recorded_slice_metrics(artifact.custom_properties, "/nonexistent") == (candidate, baseline)
    assert metrics.recorded_slice_metrics(metadata_store_pb2.Artifact().custom_properties, "/nonexistent") == ({}, {})


def test_a_skipped_evaluation_is_empty_without_importing_tfma(tmp_path):
    """The evaluation of a rerun whose candidate is the served model has no metrics files: reading it
    must not import TFMA (seconds in every summary of such a run)."""
    import subprocess
    import sys

    code = ("import sys; from ml_metadata.proto import metadata_store_pb2 as pb; "
            "from components.evaluator import metrics; "
            f"assert metrics.recorded_slice_metrics(pb.Artifact().custom_properties, {str(tmp_path)!r}) == ({{}}, {{}}); "
            "assert 'tensorflow_model_analysis' not in sys.modules and 'tensorflow' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_slice_guard_names_slices_that_lost_more_than_the_margin_and_skips_small_or_undefined_ones():
    candidate = {
        "overall": {"auc": 0.5, "example_count": 1000.0},  # gated by TFMA's thresholds, not here
        "payment_type=Cash": {"auc": 0.70, "example_count": 200.0},
        "payment_type=Credit Card": {"auc": 0.84, "example_count": 200.0},
        "trip_start_hour=3": {"auc": 0.10, "example_count": 5.0},
        "trip_start_hour=4": {"auc": None, "example_count": 300.0},
    }
    baseline = {
        "overall": {"auc": 0.9}, "payment_type=Cash": {"auc": 0.80}, "payment_type=Credit Card": {"auc": 0.85},
        "trip_start_hour=3": {"auc": 0.9}, "trip_start_hour=4": {"auc": 0.9},
    }
    found = slice_regressions(candidate, baseline, margin=0.05, min_examples=50)
    assert found == ["auc on payment_type=Cash fell to 0.7000 from the served 0.8000 (allowed loss 0.05, 200 examples)"]
