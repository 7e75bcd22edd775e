"""The numeric drift measure on real TFDV statistics of generated samples."""

import random

import pytest

from components.drift_validator.executor import QUANTILE_BUCKETS, _feature_stats, quantile_js_divergence


def _stats(values, missing=0):
    import pandas as pd
    import tensorflow_data_validation as tfdv

    frame = pd.DataFrame({"x": list(values) + [None] * missing})
    options = tfdv.StatsOptions(num_quantiles_histogram_buckets=QUANTILE_BUCKETS)
    return _feature_stats(tfdv.generate_statistics_from_dataframe(frame, stats_options=options))["x"]


def _heavy_tailed(rng, n, scale=1.0):
    # Like trip_miles: many exact zeros, a long tail, one huge outlier.
    return [0.0 if rng.random() < 0.2 else round(rng.lognormvariate(0.3, 1.0) * scale, 2) for _ in range(n)] + [170.0]


@pytest.fixture(scope="module")
def samples():
    rng = random.Random(3)
    return {name: _stats(_heavy_tailed(rng, 1500, scale)) for name, scale in
            (("base", 1.0), ("same", 1.0), ("x1.25", 1.25), ("x2", 2.0))}


def test_same_distribution_is_near_zero_and_shifts_grow_with_their_size(samples):
    same = quantile_js_divergence(samples["same"], samples["base"])
    small = quantile_js_divergence(samples["x1.25"], samples["base"])
    large = quantile_js_divergence(samples["x2"], samples["base"])
    assert same < 0.01 < small < large <= 1.0, (same, small, large)
    assert quantile_js_divergence(samples["base"], samples["base"]) == pytest.approx(0.0, abs=1e-9)


def test_missing_values_count_as_their_own_bin():
    rng = random.Random(5)
    values = _heavy_tailed(rng, 1000)
    full, half_missing = _stats(values), _stats(values[:500], missing=500)
    assert quantile_js_divergence(half_missing, full) > 0.1


# ------------------------------------------------- statistics made at another quantile resolution

def _months(seed, fold=False):
    # trip_start_month of 1500 rows of the bundled taxi data: 12 values, ties at every quantile edge.
    import pandas as pd

    from pipelines.data import bundled_csv_path

    months = pd.read_csv(bundled_csv_path(), usecols=["trip_start_month"]).sample(1500, random_state=seed)
    return [month - 6 if fold and month > 6 else month for month in months["trip_start_month"]]  # fold: Jan-Jun only


def _dataset_stats(values, buckets):
    import pandas as pd
    import tensorflow_data_validation as tfdv

    options = tfdv.StatsOptions(num_quantiles_histogram_buckets=buckets)
    return tfdv.generate_statistics_from_dataframe(pd.DataFrame({"month": values}), stats_options=options)


@pytest.fixture(scope="module")
def months():
    import tensorflow_data_validation as tfdv

    stats = {
        "today": _dataset_stats(_months(1), QUANTILE_BUCKETS),
        "same_at_10": _dataset_stats(_months(2), 10),
        "same_at_100": _dataset_stats(_months(2), QUANTILE_BUCKETS),
        "shifted_at_100": _dataset_stats(_months(2, fold=True), QUANTILE_BUCKETS),
        "shifted_at_10": _dataset_stats(_months(2, fold=True), 10),
    }
    schema = tfdv.infer_schema(stats["today"])
    tfdv.get_feature(schema, "month").drift_comparator.jensen_shannon_divergence.threshold = 0.02
    return stats, schema


LABELS = {"served_model_training": "the served model's training data", "previous_span": "the previous good span"}


def _findings(months, **baselines):
    from components.drift_validator.executor import drift_findings, drift_table

    stats, schema = months
    table = drift_table(stats["today"], schema, {name: stats[key] for name, key in baselines.items()})
    return table["month"], drift_findings(table, set(), LABELS, "2026-11-23")


def test_a_baseline_at_another_quantile_resolution_warns_instead_of_blocking(months):
    row, findings = _findings(months, previous_span="same_at_10")
    assert row["bucket_mismatch"] == {"previous_span": (QUANTILE_BUCKETS, 10)}
    # Same distribution, yet over the threshold: why such a measure must not block.
    assert row["distance"] > row["threshold"], row
    assert [f["blocking"] for f in findings] == [False], findings
    assert "10 quantile buckets and this span's 100" in findings[0]["message"], findings[0]["message"]
    same_row, same_findings = _findings(months, previous_span="same_at_100")
    assert same_row["distance"] < 0.01 and not same_findings and "bucket_mismatch" not in same_row, same_row


def test_real_drift_still_blocks_when_one_baseline_has_the_same_resolution(months):
    row, findings = _findings(months, served_model_training="shifted_at_10", previous_span="shifted_at_100")
    assert row["per_baseline"]["previous_span"] > 0.1 and row["blocks"], row
    assert [f["blocking"] for f in findings] == [True], findings
    alone, warned = _findings(months, previous_span="shifted_at_10")  # only an approximate measure: warned
    assert alone["distance"] > 0.1 and [f["blocking"] for f in warned] == [False], (alone, warned)
