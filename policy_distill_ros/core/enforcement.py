"""Deadline enforcement: when a stream of actions is late, and who commands the robot meanwhile.

One definition, used by the student (on its own publish times) and by the timing monitor (on
the publish times of the echoes it receives, DDS source timestamps), so both count the same
misses as an outside observer timing the echoes:

- **deadline**: the longest allowed gap between two consecutive actions. `base_deadline_s`
  (two control periods by default); for an on_message student raised to `input_periods` x the
  observed input period when the inputs are slower than that (it acts once per input: its
  actions can only be as frequent as its sensors). A timer student keeps the base: it acts at
  its own rate, and a slow one would otherwise stretch its deadline by the inputs it skips.
  The input period is the lower median gap between the distinct input stamps the actions
  carry, so one stall does not stretch it.
- **miss**: every whole deadline in a gap. A gap `g` between actions is `floor(g / deadline)`
  misses; a silence still open counts the same way as it grows.
- **states** (ros2_control's command timeout, twist_mux's priority, an e-stop's latch):
  `nominal` - the policy commands the robot; `fallback` - entered at the first miss, the
  watchdog commands the fallback and the policy is muted; it ends only after
  `recovery_periods` consecutive on-time actions made from good input; `latched` - with
  `escalation="latch"`, a fallback that reaches `latch_after_misses` misses latches: only
  `reset()` (a `~/reset` service) releases it, back to `fallback`, so recovery still needs
  the on-time periods.
- **time jumps** (sim reset, /clock going backwards): timing restarts; no miss, no absurd gap.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["NOMINAL", "FALLBACK", "LATCHED", "STATES", "ESCALATIONS", "TRIGGERS",
           "input_periods_for", "misses_in_gap",
           "InputPeriod", "StateChange", "DeadlineEnforcer"]

NOMINAL, FALLBACK, LATCHED = "nominal", "fallback", "latched"
STATES = (NOMINAL, FALLBACK, LATCHED)
ESCALATIONS = ("recover", "latch")
# How a student is triggered: a fixed-rate loop, or once per message of its trigger topic. Only
# the latter's deadline follows the input period (a timer student acts at its own rate).
TRIGGERS = ("timer", "on_message")


def input_periods_for(trigger: str) -> float:
    """The `input_periods` of a student triggered this way: 2 for on_message, 0 (off) else."""
    return 2.0 if trigger == "on_message" else 0.0
# A timestamp this far behind the previous one is a time jump (sim reset), not jitter.
TIME_JUMP_S = 1e-3


def misses_in_gap(gap_s: float, deadline_s: float) -> int:
    """Whole deadlines in a gap between two actions (0 while the gap is within the deadline)."""
    if not gap_s > deadline_s:
        return 0
    return int(gap_s / deadline_s + 1e-9)  # 0.12 / 0.04 is 2.9999...: whole deadlines


class InputPeriod:
    """Median gap between distinct input stamps over the last `window` gaps (None before the
    first gap). The median is sorted out when read, not per stamp: a control loop adds a
    stamp every action but needs the period only for a gap longer than the base deadline."""

    def __init__(self, window: int = 32) -> None:
        if window < 3:
            raise ValueError(f"InputPeriod window must be >= 3, got {window}")
        self._gaps: deque = deque(maxlen=window)
        self._last: float | None = None
        self._period_s: float | None = None
        self._stale = False  # gaps added since the median was last sorted out

    @property
    def period_s(self) -> float | None:
        if self._stale:
            ordered = sorted(self._gaps)
            self._period_s = ordered[(len(ordered) - 1) // 2]  # the lower median
            self._stale = False
        return self._period_s

    def add(self, stamp_s: float) -> None:
        last = self._last
        if last is not None and stamp_s < last - TIME_JUMP_S:
            self.reset()  # stamps went back: a new episode, a new clock
            last = None
        if last is not None and stamp_s <= last:
            return  # the same input again (a timer student acts faster than its sensors)
        if last is not None:
            self._gaps.append(stamp_s - last)
            self._stale = True
        self._last = stamp_s

    def reset(self) -> None:
        self._gaps.clear()
        self._last = None
        self._period_s = None
        self._stale = False


@dataclass(frozen=True)
class StateChange:
    """The enforcement state changed: log it once, publish it, act on it."""

    old: str
    new: str
    reason: str

    def describe(self) -> str:
        return f"enforcement {self.old} -> {self.new}: {self.reason}"


class DeadlineEnforcer:
    """The state machine above; feed it `on_action(t_s, stamp_s, good)` for every action and,
    as a watchdog, `check(now_s)` periodically. Not thread-safe: the caller holds a lock."""

    def __init__(self, base_deadline_s: float, recovery_periods: int = 10,
                 escalation: str = "recover", latch_after_misses: int = 50,
                 input_periods: float = 2.0) -> None:
        if not (base_deadline_s > 0 and math.isfinite(base_deadline_s)):
            raise ValueError(f"deadline must be a positive number of seconds, "
                             f"got {base_deadline_s!r}")
        if recovery_periods < 1 or latch_after_misses < 1:
            raise ValueError("recovery_periods and latch_after_misses must be >= 1")
        if escalation not in ESCALATIONS:
            raise ValueError(f"escalation {escalation!r}: expected one of "
                             f"{', '.join(ESCALATIONS)}")
        if not input_periods >= 0:
            raise ValueError(f"input_periods must be >= 0, got {input_periods!r}")
        self.base_deadline_s = float(base_deadline_s)
        self.recovery_periods = int(recovery_periods)
        self.escalation = escalation
        self.latch_after_misses = int(latch_after_misses)
        self.input_periods = float(input_periods)
        self.input_period = InputPeriod()
        self.state = NOMINAL
        self.actions = 0
        self.closed_misses = 0       # misses in gaps an action has ended
        self.open_misses = 0         # misses in the silence still running
        self.last_gap_misses = 0     # misses in the gap the latest action ended
        self.on_time_streak = 0      # consecutive on-time actions from good input
        self.fallback_misses = 0     # misses since this fallback began (escalation)
        self.time_jumps = 0
        self._last_s: float | None = None

    # ---- what the deadline is ------------------------------------------------------------
    @property
    def deadline_s(self) -> float:
        period = self.input_period.period_s
        if period is None or not self.input_periods:
            return self.base_deadline_s
        return max(self.base_deadline_s, self.input_periods * period)

    @property
    def misses(self) -> int:
        return self.closed_misses + self.open_misses

    def silence_s(self, now_s: float) -> float:
        return 0.0 if self._last_s is None else max(0.0, now_s - self._last_s)

    # ---- events ---------------------------------------------------------------------------
    def on_action(self, t_s: float, stamp_s: float | None = None,
                  good: bool = True) -> StateChange | None:
        """An action went out at `t_s` carrying input stamp `stamp_s`; `good`: made by the
        policy from good input (not a fallback of the student's own)."""
        self.actions += 1
        if stamp_s is not None:
            self.input_period.add(stamp_s)
        last = self._last_s
        self._last_s = t_s
        self.open_misses = 0
        if last is not None and t_s < last - TIME_JUMP_S:
            self.time_jumps += 1
            last = None  # a time jump: no gap to judge
        gap_s = None if last is None else t_s - last  # None: a first action has no gap
        # deadline_s >= base_deadline_s: a gap within the base misses nothing (no median)
        missed = 0 if gap_s is None or gap_s <= self.base_deadline_s else \
            misses_in_gap(gap_s, self.deadline_s)
        self.last_gap_misses = missed
        if gap_s is not None and missed:
            self.closed_misses += missed
            self.on_time_streak = 0
            return self._miss(missed, f"an action {gap_s * 1e3:.1f} ms after the "
                                      f"previous one (deadline {self.deadline_s * 1e3:.1f} ms)")
        if not good:
            self.on_time_streak = 0
            return None
        self.on_time_streak += 1
        if self.state == FALLBACK and self.on_time_streak >= self.recovery_periods:
            self.fallback_misses = 0
            return self._to(NOMINAL, f"{self.on_time_streak} consecutive on-time actions from "
                                     "good input")
        return None

    def check(self, now_s: float, margin_s: float = 0.0) -> StateChange | None:
        """Watchdog: count the silence since the last action; the first miss starts the
        fallback. Call it only after every action that has arrived was given to `on_action`;
        `margin_s`: how long an action may still be in flight (the silence is judged at
        `now_s - margin_s`)."""
        last = self._last_s
        if last is None:
            return None
        if now_s < last - TIME_JUMP_S:  # the clock went back (sim reset): start again
            self.time_jumps += 1
            self._last_s, self.open_misses = now_s, 0
            return None
        silent = misses_in_gap(now_s - margin_s - last, self.deadline_s)
        if silent <= self.open_misses:
            return None
        new = silent - self.open_misses
        self.open_misses = silent
        self.on_time_streak = 0
        return self._miss(new, f"no action for {(now_s - last) * 1e3:.1f} ms "
                               f"(deadline {self.deadline_s * 1e3:.1f} ms)")

    def reset(self) -> StateChange | None:
        """Release a latched stop; the policy still has to be on time to command again."""
        if self.state != LATCHED:
            return None
        self.fallback_misses = 0
        self.on_time_streak = 0
        self.restart_timing()  # a stopped policy's silence is not judged again
        return self._to(FALLBACK, "reset requested")

    def restart_timing(self) -> None:
        """Forget when the last action was (a student (re)activated, a deliberate pause)."""
        self._last_s = None
        self.open_misses = 0

    # ---- transitions ----------------------------------------------------------------------
    def _miss(self, count: int, why: str) -> StateChange | None:
        if self.state == NOMINAL:
            self.fallback_misses = count
            change = self._to(FALLBACK, why)
        else:
            self.fallback_misses += count
            change = None
        if self.state == FALLBACK and self.escalation == "latch" \
                and self.fallback_misses >= self.latch_after_misses:
            # Escalation replaces the fallback transition of the same miss (the log shows both
            # reasons in one line).
            old = change.old if change else FALLBACK
            self.state = LATCHED
            return StateChange(old, LATCHED, f"{why}; {self.fallback_misses} misses in this "
                                             "fallback: latched until reset")
        return change

    def _to(self, state: str, reason: str) -> StateChange | None:
        if state == self.state:
            return None
        change = StateChange(self.state, state, reason)
        self.state = state
        return change
