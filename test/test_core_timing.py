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
from policy_distill_ros.core.loop_timer import LoopTimer, lateness_line
from policy_distill_ros.core.timing import (
    DeadlineCounter,
    LatencyStats,
    LogHistogram,
    PeriodStats,
)


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
    assert w["max"] == last.max() and set(w) == {"p50", "p90", "p99", "max"}
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
    assert stats.mean_s == pytest.approx(data.mean())


def test_latency_edge_cases():
    stats = LatencyStats(window=3)
    assert np.isnan(stats.window_percentiles()["p50"]) and stats.count == 0
    assert np.isnan(stats.total_percentiles()["max"])
    stats.add(-1e-6)  # clock skew between machines: kept, not a crash
    stats.add(0.0)
    assert stats.total_percentiles()["max"] == 0.0
    with pytest.raises(ValueError, match="finite"):
        stats.add(float("nan"))
    with pytest.raises(ValueError, match="window"):
        LatencyStats(window=0)


def test_latency_reset_forgets_every_sample_and_keeps_the_window():
    stats = LatencyStats(window=3)
    for x in (0.5, 0.1, 0.2, 0.3):
        stats.add(x)
    stats.reset()
    assert stats.count == 0 and stats.window == 3 and stats.window_values().size == 0
    assert np.isnan(stats.total_percentiles()["max"])
    for x in (1e-3, 2e-3, 3e-3, 4e-3):
        stats.add(x)
    np.testing.assert_array_equal(stats.window_values(), [2e-3, 3e-3, 4e-3])
    assert stats.total_percentiles()["max"] == 4e-3 and stats.count == 4


def test_period_stats_jitter():
    p = PeriodStats(nominal_period_s=0.01, window=10)
    assert p.summary()["rate_hz"] == 0.0
    for t in [0.0, 0.010, 0.021, 0.030, 0.040]:
        p.add(t)
    s = p.summary()
    periods = np.array([0.010, 0.011, 0.009, 0.010])
    assert s["mean_s"] == pytest.approx(periods.mean())
    assert s["rate_hz"] == pytest.approx(1 / periods.mean())
    assert s["jitter_s"] == pytest.approx(periods.std())
    assert s["jitter_max_s"] == pytest.approx(0.001)
    p.add(0.005)  # time went backwards: no negative period recorded
    assert p.count == 4
    free = PeriodStats(window=2)  # no nominal: deviation from the window mean
    for t in [0.0, 0.1, 0.4]:
        free.add(t)
    assert free.summary()["jitter_max_s"] == pytest.approx(0.1)


def test_deadline_counter_window_total_consecutive():
    d = DeadlineCounter(deadline_s=0.001, window=4)
    pattern = [False, True, True, True, False, False, False, False, True]
    for missed in pattern:
        d.record(missed)
    assert d.total == 9 and d.misses == 4
    assert d.window_misses == 1 and d.window_count == 4  # last four: F F F T
    assert d.consecutive == 1 and d.max_consecutive == 3 and d.in_miss
    assert d.record_elapsed(0.002) is True and d.record_elapsed(0.0005) is False
    assert d.record_elapsed(float("nan")) is True  # unknown elapsed time is a miss
    assert d.window_miss_ratio == pytest.approx(3 / 4)  # T (pattern end), T, F, T


def test_deadline_counter_as_watchdog():
    d = DeadlineCounter(deadline_s=0.1)
    assert d.check(5.0) is False  # nothing to watch before the first event
    assert d.on_event(1.0) is False
    assert d.check(1.05) is False and not d.in_miss
    assert d.check(1.25) is True and d.consecutive == 2 and d.misses == 2  # two deadlines
    assert d.check(1.28) is False  # still the same two
    assert d.silence_s(1.28) == pytest.approx(0.28)
    assert d.check(1.31) is True and d.consecutive == 3
    assert d.on_event(1.32) is True and not d.in_miss  # recovered
    assert d.on_event(1.50) is False and d.misses == 4  # late, not seen by check: one miss
    assert d.max_consecutive == 3 and d.total == d.misses + 3


def test_loop_timer_rate_and_absolute_schedule():
    due_times: list[float] = []
    timer = LoopTimer.at_rate(200.0, lambda: due_times.append(timer.due_s))
    with timer:
        time.sleep(0.5)
    n = len(due_times)
    assert 60 <= n <= 102, n  # ~100 expected; loose because the machine is loaded
    d = np.diff(due_times)
    # scheduled times lie exactly on the absolute grid: no drift, whatever the sleep error
    np.testing.assert_allclose(d / timer.period_s, np.round(d / timer.period_s), atol=1e-6)
    assert timer.ticks == n and not timer.running
    assert timer.period_stats.summary()["mean_s"] == pytest.approx(0.005, rel=0.5)


def test_loop_timer_overrun_skips_instead_of_bursting():
    calls: list[float] = []

    def slow() -> None:
        calls.append(timer.due_s)
        if len(calls) == 3:
            time.sleep(0.055)  # ~5.5 periods of 10 ms

    timer = LoopTimer(0.01, slow)
    with timer:
        time.sleep(0.3)
    assert timer.overruns >= 1 and timer.skipped_ticks >= 4
    gaps = np.diff(calls) / timer.period_s
    assert gaps.max() >= 5  # a jump over the missed ticks...
    after = np.array(calls[3:6]) - calls[2]
    assert (after >= 0.055 - 1e-9).all()  # ...and no catch-up volley of stale ticks


def test_loop_timer_errors():
    seen: list[BaseException] = []

    def boom() -> None:
        raise RuntimeError("callback failed")

    with LoopTimer(0.01, boom, on_error=seen.append) as timer:
        time.sleep(0.1)
    assert timer.errors >= 2 and isinstance(seen[0], RuntimeError)  # kept running
    timer = LoopTimer(0.01, boom).start()
    deadline = time.monotonic() + 2.0
    while timer.running and time.monotonic() < deadline:
        time.sleep(0.01)
    timer.stop()
    assert isinstance(timer.error, RuntimeError) and timer.errors == 1
    with pytest.raises(ValueError, match="period_s"):
        LoopTimer(0.0, boom)
    with pytest.raises(ValueError, match="rate_hz"):
        LoopTimer.at_rate(-1.0, boom)
    with pytest.raises(ValueError, match="spin_s"):
        LoopTimer(0.01, boom, spin_s=0.02)


def test_loop_timer_stops_promptly_at_slow_rate():
    timer = LoopTimer(2.0, lambda: None).start()
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
    assert f.set("stale_input", "again") is not None and f.occurrences["stale_input"] == 2
    assert f.clear("stale_input").active is False


def test_fault_tracker_update_gives_log_lines_per_kind():
    f = FaultTracker()
    assert f.update("policy", None) == []
    lines = f.update("policy", ("stale:imu", "stale input: 'imu' is 120 ms old"))
    assert lines == [("error", "fault 'policy' started: stale input: 'imu' is 120 ms old")]
    assert f.update("policy", ("stale:imu", "stale input: 'imu' is 140 ms old")) == []
    lines = f.update("policy", ("inference", "inference failed: boom"))  # kind changed
    assert [level for level, _ in lines] == ["info", "error"]
    assert "140 ms" in lines[0][1] and "inference failed" in lines[1][1]
    assert f.update("policy", None) == [("info", "fault 'policy' cleared "
                                                 "(was: inference failed: boom)")]
    assert f.update("policy", None) == [] and not f


def test_the_loop_lateness_line_is_what_the_latency_bench_parses():
    """The student logs it when its loop stops, bench/student_latency.py's timer_floor prints
    it, and the bench reads both with one pattern: a change on one side breaks the other."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "bench" / "student_latency.py"
    spec = importlib.util.spec_from_file_location("student_latency", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    late = LogHistogram()
    for value_s in (2e-4, 3e-4, 5e-3):
        late.add(value_s)
    loop = LoopTimer(0.002, lambda: None)
    loop.skipped_ticks, loop.overruns = 4, 3
    found = bench.TIMER_LINE.search(lateness_line(late, loop))
    assert found is not None
    assert int(found[1]) == 3 and int(found[5]) == 4
    assert float(found[4]) == pytest.approx(5.0)  # max, ms (exact: the histogram keeps it)
