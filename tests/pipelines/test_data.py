"""`mlops data seed`: deterministic daily spans from the bundled taxi data."""

import csv
import datetime as dt
from collections import Counter

from pipelines.data import SeedPlan, bundled_csv_path, read_rows, seed
from pipelines.taxi import features as F


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_default_plan_splits_the_bundled_rows_over_five_days_ending_at_end(tmp_path):
    end = dt.date(2026, 11, 22)
    written = seed(tmp_path, SeedPlan(end=end), progress=lambda _: None)
    assert [p.parent.name for p in written] == [(end - dt.timedelta(days=d)).isoformat() for d in range(4, -1, -1)]
    header, bundled = read_rows(bundled_csv_path())
    seeded = [_rows(p) for p in written]
    assert all(rows[0] == header for rows in seeded)
    assert sum(len(rows) - 1 for rows in seeded) == len(bundled) // 5 * 5
    # Days are disjoint slices of the shuffled sample: together they use each bundled row at most once.
    seen = Counter(tuple(r) for rows in seeded for r in rows[1:])
    assert seen <= Counter(tuple(r) for r in bundled)


def test_same_seed_same_bytes_and_existing_spans_are_kept(tmp_path):
    plan = SeedPlan(end=dt.date(2026, 1, 3), days=2, rows_per_day=300, seed=7)
    first = [p.read_bytes() for p in seed(tmp_path / "a", plan, progress=lambda _: None)]
    second = [p.read_bytes() for p in seed(tmp_path / "b", plan, progress=lambda _: None)]
    assert first == second
    messages = []
    assert seed(tmp_path / "a", plan, progress=messages.append) == []
    assert all("kept existing" in m for m in messages)
    other = [p.read_bytes() for p in seed(tmp_path / "c", SeedPlan(end=plan.end, days=2, rows_per_day=300, seed=8), progress=lambda _: None)]
    assert other != first


def test_more_rows_than_bundled_resamples_with_noise(tmp_path):
    header, bundled = read_rows(bundled_csv_path())
    plan = SeedPlan(end=dt.date(2026, 1, 1), days=1, rows_per_day=len(bundled) + 500)
    [path] = seed(tmp_path, plan, progress=lambda _: None)
    rows = _rows(path)[1:]
    assert len(rows) == len(bundled) + 500
    fare = header.index(F.FARE_KEY)
    bundled_fares = {r[fare] for r in bundled}
    jittered = sum(1 for r in rows if r[fare] and r[fare] not in bundled_fares)
    assert jittered > len(rows) // 2
