"""Judging a canary from the model server's own metrics (pipelines/canary.py) and the split's hash
(serving/canary.py); the end-to-end tests with real servers are tests/serving/test_canary.py."""

from __future__ import annotations

import pytest

from pipelines.canary import VersionStats, compare, histogram_quantile, parse_stats
from serving import canary
from serving.metrics import ServingMetrics
from tests.conftest import mlops


def test_stats_by_version_come_from_the_servers_exposition():
    metrics = ServingMetrics(["taxi"])
    for i in range(100):
        metrics.observe("taxi", 3, "predict", 200, 0.004, "rest")
        metrics.observe("taxi", 4, "predict", 400 if i % 10 == 0 else 200, 0.004 if i < 95 else 0.2, "grpc")
    metrics.observe("taxi", 4, "status", 500, 0.001, "rest")  # not an inference answer: not counted
    metrics.observe("other", 4, "predict", 500, 0.001, "rest")  # another model
    stats = parse_stats(metrics.exposition().decode(), "taxi")
    assert (stats[3].requests, stats[3].errors, stats[4].requests, stats[4].errors) == (100, 0, 100, 10)
    assert 0.0025 < stats[3].p99_seconds <= 0.005  # inside the bucket holding 4 ms
    assert 0.1 < stats[4].p99_seconds <= 0.25  # 5 of 100 took 200 ms


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.005, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.002)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.002 + 0.003 * 49 / 50)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 10.0)]) == 0.1  # beyond the last bucket


@pytest.mark.parametrize("canary_stats, verdict, why", [
    (VersionStats(4, 10, 0, 0.003), "wait", "fewer than the 50 needed"),
    (VersionStats(4, 100, 12, 0.003), "rollback", "canary error rate 12.0% vs stable 0.0%"),
    (VersionStats(4, 100, 0, 0.010), "rollback", "canary p99 latency 10.0 ms vs stable 3.0 ms"),
    (VersionStats(4, 100, 1, 0.004), "promote", "no worse than stable"),
])
def test_the_verdict_follows_the_margins(canary_stats, verdict, why):
    settings = canary.Settings(enabled=True, error_margin=0.01, latency_margin=0.5, min_requests=50)
    got, text = compare(VersionStats(3, 1000, 0, 0.003), canary_stats, settings)
    assert got == verdict and why in text, text


def test_a_request_id_always_lands_on_the_same_side_and_ids_spread_evenly():
    assert canary.request_fraction("order-17") == canary.request_fraction("order-17")
    fractions = [canary.request_fraction(f"id-{i}") for i in range(4000)]
    share = sum(f < 0.1 for f in fractions) / len(fractions)
    assert 0.085 < share < 0.115  # 4 standard deviations of a binomial(4000, 0.1)
    assert not canary.goes_to_canary(0.0, "x") and canary.goes_to_canary(1.0, None)


def test_enable_refuses_a_share_outside_0_1_and_an_unreadable_duration(tmp_path):
    bad = mlops(tmp_path, "models", "canary", "enable", "--share", "1.5", check=False)
    assert bad.returncode == 2 and "is not a share" in bad.stderr
    bad = mlops(tmp_path, "models", "canary", "enable", "--soak", "soon", check=False)
    assert bad.returncode == 2 and "is not a duration: write e.g. 90s, 30m or 2h" in bad.stderr
    assert mlops(tmp_path, "models", "canary", "enable", "--soak", "90s").returncode == 0
    assert "no canary window open" in mlops(tmp_path, "models", "canary", "status").stdout
    assert canary.load_settings(canary.state_path(tmp_path / "serving" / "models.config")).soak_seconds == 90
