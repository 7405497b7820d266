"""Timing statistics, the loop timer and fault transitions.

Percentiles are compared with numpy on known data; the loop timer is checked loosely (the
machine is shared and loaded), never with tight timing assertions.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from policy_distill_ros.core.faults import FaultTracker
from policy_distill_ros.core.loop_timer import LoopTimer
from policy_distill_ros.core.timing import DeadlineCounter, LatencyStats, PeriodStats


def test_window_percentiles_equal_numpy_on_the_last_window():
    rng = np.random.default_rng(0)
    data = rng.lognormal(mean=-8, sigma=0.7, size=2500)  # ~ 0.3 ms latencies
    stats = LatencyStats(window=1000)
    for x in data:
        stats.add(float(x))
    last = data[-1000:]
    w = stats.window_percentiles()
    for q in (50, 90, 99):
        assert w[f"p{q}"] == pytest.approx(np.percentile(last, q), rel=1e-12)
    assert w["max"] == last.max() and w["count"] == 1000
    np.testing.assert_array_equal(stats.window_values(), last)
    assert stats.count == 2500


def test_total_percentiles_from_histogram_close_to_numpy_and_exact_max():
    rng = np.random.default_rng(1)
    data = np.concatenate([[0.05], rng.uniform(100e-6, 200e-6, 5000)])  # one early 50 ms spike
    stats = LatencyStats(window=100)
    for x in data:
        stats.add(float(x))
    t = stats.total_percentiles()
    for q in (50, 90, 99):
        assert t[f"p{q}"] == pytest.approx(np.percentile(data, q), rel=0.03)
    assert t["max"] == 0.05  # exact, although it left the window long ago
    assert stats.window_percentiles()["max"] < 0.001
    assert t["mean"] == pytest.approx(data.mean())


def test_latency_edge_cases():
    stats = LatencyStats(window=3)
    assert np.isnan(stats.window_percentiles()["p50"]) and stats.total_percentiles()["count"] == 0
    stats.add(-1e-6)  # clock skew between machines: kept, not a crash
    stats.add(0.0)
    assert stats.total_percentiles()["max"] == 0.0
    with pytest.raises(ValueError, match="finite"):
        stats.add(float("nan"))
    with pytest.raises(ValueError, match="window"):
        LatencyStats(window=0)


def test_period_stats_jitter():
    p = PeriodStats(nominal_period_s=0.01, window=10)
    for t in [0.0, 0.010, 0.021, 0.030, 0.040]:
        p.tick(t)
    s = p.stats()
    periods = np.array([0.010, 0.011, 0.009, 0.010])
    assert s["mean_period_s"] == pytest.approx(periods.mean())
    assert s["jitter_std_s"] == pytest.approx(periods.std())
    assert s["jitter_max_s"] == pytest.approx(0.001)
    p.tick(0.005)  # time went backwards: no negative period recorded
    assert p.stats()["count"] == 4


def test_deadline_counter_window_total_consecutive():
    d = DeadlineCounter(window=4)
    pattern = [False, True, True, True, False, False, False, False, True]
    for missed in pattern:
        d.record(missed)
    assert d.total == 9 and d.total_misses == 4
    assert d.window_misses == 1 and d.window_count == 4  # last four: F F F T
    assert d.consecutive_misses == 1 and d.max_consecutive_misses == 3
    assert d.check(0.002, 0.001) is True and d.check(0.0005, 0.001) is False
    assert d.check(float("nan"), 0.001) is True  # unknown elapsed time is a miss
    assert d.window_miss_ratio == pytest.approx(3 / 4)  # T (pattern end), T, F, T


def test_loop_timer_rate_and_absolute_schedule():
    due_times: list[float] = []
    timer = LoopTimer(200.0, due_times.append)
    with timer:
        time.sleep(0.5)
    n = len(due_times)
    assert 60 <= n <= 102, n  # ~100 expected; loose because the machine is loaded
    d = np.diff(due_times)
    # scheduled times lie exactly on the absolute grid: no drift, whatever the sleep error
    np.testing.assert_allclose(d / timer.period_s, np.round(d / timer.period_s), atol=1e-6)
    assert timer.ticks == n and not timer.running
    assert timer.period_stats.stats()["mean_period_s"] == pytest.approx(0.005, rel=0.5)


def test_loop_timer_overrun_skips_instead_of_bursting():
    calls: list[float] = []

    def slow(t: float) -> None:
        calls.append(t)
        if len(calls) == 3:
            time.sleep(0.055)  # ~5.5 periods of 10 ms

    with LoopTimer(100.0, slow) as timer:
        time.sleep(0.3)
    assert timer.overruns >= 1 and timer.skipped_ticks >= 4
    gaps = np.diff(calls) / timer.period_s
    assert gaps.max() >= 5  # a jump over the missed ticks...
    after = np.array(calls[3:6]) - calls[2]
    assert (after >= 0.055 - 1e-9).all()  # ...and no catch-up volley of stale ticks


def test_loop_timer_errors():
    seen: list[BaseException] = []

    def boom(_t: float) -> None:
        raise RuntimeError("callback failed")

    with LoopTimer(100.0, boom, on_error=seen.append) as timer:
        time.sleep(0.1)
    assert timer.errors >= 2 and isinstance(seen[0], RuntimeError)  # kept running
    timer = LoopTimer(100.0, boom).start()
    deadline = time.monotonic() + 2.0
    while timer.running and time.monotonic() < deadline:
        time.sleep(0.01)
    timer.stop()
    assert isinstance(timer.error, RuntimeError) and timer.errors == 1
    with pytest.raises(ValueError, match="rate_hz"):
        LoopTimer(0.0, boom)
    with pytest.raises(ValueError, match="spin_s"):
        LoopTimer(100.0, boom, spin_s=0.02)


def test_loop_timer_stops_promptly_at_slow_rate():
    timer = LoopTimer(0.5, lambda t: None).start()  # 2 s period
    time.sleep(0.05)
    t0 = time.monotonic()
    timer.stop()
    assert time.monotonic() - t0 < 1.0
    assert threading.active_count() >= 1 and not timer.running


def test_fault_tracker_transitions_once():
    f = FaultTracker()
    start = f.set("stale_input", "imu age 0.12 s", now_s=10.0)
    assert start.active and "started: imu age 0.12 s" in start.describe()
    assert f.set("stale_input", "imu age 0.30 s", now_s=10.1) is None  # no repeat
    assert f.active == {"stale_input": "imu age 0.30 s"} and f
    assert f.clear("nan_action") is None
    end = f.clear("stale_input", now_s=10.5)
    assert not end.active and end.duration_s == pytest.approx(0.5)
    assert "cleared after 0.500 s" in end.describe()
    assert f.clear("stale_input") is None and not f
    assert f.update("stale_input", "again").active and f.occurrences["stale_input"] == 2
    assert f.update("stale_input", None).active is False
