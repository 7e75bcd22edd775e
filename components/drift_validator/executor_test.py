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
