"""core.enforcement without DDS: the deadline, the miss count and the nominal / fallback /
latched state machine shared by the student and the timing monitor."""
import math

import numpy as np
import pytest

from policy_distill_ros.core.enforcement import (
    FALLBACK,
    LATCHED,
    NOMINAL,
    DeadlineEnforcer,
    InputPeriod,
    misses_in_gap,
)


def feed(e: DeadlineEnforcer, times, good=True):
    return [c for t in times if (c := e.on_action(t, None, good)) is not None]


def test_misses_are_whole_deadlines_in_a_gap():
    assert misses_in_gap(0.039, 0.04) == 0
    assert misses_in_gap(0.041, 0.04) == 1
    assert misses_in_gap(0.125, 0.04) == 3
    assert misses_in_gap(math.nan, 0.04) == 0


def test_on_time_stream_stays_nominal_and_counts_nothing():
    e = DeadlineEnforcer(0.04)
    assert feed(e, np.arange(0, 10, 0.02)) == []
    for now in np.arange(0.0, 10.0, 0.01):
        e.on_action(now, now) if round(now / 0.01) % 2 == 0 else None
        assert e.check(now + 0.005) is None
    assert e.state == NOMINAL and e.misses == 0


def test_silence_starts_the_fallback_which_holds_until_enough_on_time_actions():
    e = DeadlineEnforcer(0.04, recovery_periods=5)
    feed(e, [0.0, 0.02])
    assert e.check(0.059) is None
    change = e.check(0.061)
    assert change.new == FALLBACK and "no action for 41.0 ms" in change.reason
    assert e.check(0.5) is None and e.misses == 12 and e.state == FALLBACK
    # actions resume: 4 on time are not enough, a late one restarts the count, a bad one too
    assert feed(e, [0.6, 0.62, 0.64, 0.66, 0.68]) == [] and e.state == FALLBACK
    assert feed(e, [0.75]) == [] and e.on_time_streak == 0
    assert feed(e, [0.76, 0.77], good=False) == [] and e.on_time_streak == 0
    changes = feed(e, [0.78, 0.79, 0.80, 0.81, 0.82])
    assert [c.new for c in changes] == [NOMINAL] and e.state == NOMINAL


def test_a_late_action_is_a_miss_even_if_the_watchdog_never_saw_the_silence():
    e = DeadlineEnforcer(0.04, recovery_periods=2)
    changes = feed(e, [0.0, 0.02, 0.11])
    assert [c.new for c in changes] == [FALLBACK] and e.last_gap_misses == 2 and e.misses == 2


def test_deadline_follows_a_slower_input_period_and_ignores_repeated_stamps():
    e = DeadlineEnforcer(0.004)  # a 500 Hz model: two periods
    for i in range(50):  # on_message at 200 Hz: one action per input, 5 ms apart
        t = i * 0.005
        assert e.on_action(t, t) is None
    assert e.deadline_s == pytest.approx(0.010) and e.misses == 0
    timer = DeadlineEnforcer(0.004)
    for i in range(100):  # timer at 500 Hz, inputs at 200 Hz: stamps repeat
        assert timer.on_action(i * 0.002, (i * 0.002) // 0.005 * 0.005) is None
    assert timer.deadline_s == pytest.approx(0.010)


def test_a_stall_does_not_stretch_the_deadline():
    e = DeadlineEnforcer(0.004)
    t = 0.0
    for i in range(40):
        t = i * 0.005
        e.on_action(t, t)
    e.on_action(t + 0.3, t + 0.005)  # stalled 300 ms, acting on the next input
    assert e.deadline_s == pytest.approx(0.010) and e.last_gap_misses == 30


def test_latch_escalation_needs_a_reset_and_then_on_time_actions():
    e = DeadlineEnforcer(0.04, recovery_periods=2, escalation="latch", latch_after_misses=5)
    feed(e, [0.0])
    assert e.check(0.1).new == FALLBACK
    change = e.check(0.25)
    assert change.new == LATCHED and "latched until reset" in change.reason
    assert feed(e, [0.3 + 0.02 * i for i in range(20)]) == [] and e.state == LATCHED
    assert e.reset().new == FALLBACK and e.reset() is None
    assert [c.new for c in feed(e, [0.70, 0.72])] == [NOMINAL]


def test_recover_escalation_never_latches():
    e = DeadlineEnforcer(0.04, recovery_periods=1, latch_after_misses=1)
    feed(e, [0.0])
    e.check(10.0)
    assert e.state == FALLBACK and e.misses == 250


def test_time_going_back_restarts_timing_without_a_miss():
    e = DeadlineEnforcer(0.04)
    feed(e, [100.0, 100.02])
    assert e.on_action(0.0, 0.0) is None and e.misses == 0 and e.time_jumps == 1
    assert e.check(0.01) is None
    assert e.check(-5.0) is None and e.time_jumps == 2 and e.misses == 0


def test_input_period_is_a_median_and_resets_on_a_jump():
    p = InputPeriod(window=5)
    for s in [0.0, 0.01, 0.02, 0.5, 0.51, 0.52]:
        p.add(s)
    assert p.period_s == pytest.approx(0.01)
    p.add(0.0)
    assert p.period_s is None


def test_bad_arguments_are_refused():
    for kwargs in ({"base_deadline_s": 0}, {"base_deadline_s": math.inf},
                   {"base_deadline_s": 0.1, "escalation": "panic"},
                   {"base_deadline_s": 0.1, "recovery_periods": 0}):
        with pytest.raises(ValueError):
            DeadlineEnforcer(**kwargs)
