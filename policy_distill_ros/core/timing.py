"""Latency, period and deadline statistics for the control loop.

Cheap to update at 500 Hz (`add` is a few arithmetic operations, no allocation); the costly
percentile computation happens only when a report is asked for (1 Hz diagnostics).
Two views of latency: a sliding window (what is happening now, exact percentiles) and since
start (log-bucketed histogram, ~1% relative resolution, exact max), so a rare spike an hour
ago is not forgotten.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["LatencyStats", "PeriodStats", "DeadlineCounter", "LogHistogram"]

_PERCENTILES = (50.0, 90.0, 99.0)
_EMPTY = {"p50": math.nan, "p90": math.nan, "p99": math.nan, "max": math.nan}


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    return int(window)


class LogHistogram:
    """Counts of positive values in log-spaced buckets between `low` and `high` seconds.

    Values at or below `low` go to the first bucket, above `high` to the last; percentiles
    are reported as the bucket's geometric centre, clamped to the exact min/max seen.
    """

    def __init__(self, low: float = 1e-7, high: float = 100.0, buckets_per_decade: int = 100):
        if not (0 < low < high) or buckets_per_decade < 1:
            raise ValueError(f"LogHistogram needs 0 < low < high and buckets_per_decade >= 1, "
                             f"got low={low}, high={high}, per_decade={buckets_per_decade}")
        self._log_low = math.log10(low)
        self._per_decade = buckets_per_decade
        self._n = int(math.ceil((math.log10(high) - self._log_low) * buckets_per_decade)) + 1
        self._counts = np.zeros(self._n, dtype=np.int64)
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.sum = 0.0

    def add(self, value: float) -> None:
        if value > 0.0:
            i = int((math.log10(value) - self._log_low) * self._per_decade)
            i = 0 if i < 0 else (self._n - 1 if i >= self._n else i)
        else:
            i = 0
        self._counts[i] += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def percentile(self, q: float) -> float:
        if self.count == 0:
            return math.nan
        rank = q / 100.0 * (self.count - 1)  # same convention as numpy's linear method
        cumulative = np.cumsum(self._counts)
        i = int(np.searchsorted(cumulative, math.floor(rank) + 1))
        centre = 10.0 ** (self._log_low + (i + 0.5) / self._per_decade)
        return min(max(centre, self.min), self.max)


class LatencyStats:
    """Latency samples (seconds): sliding-window exact percentiles + since-start histogram."""

    def __init__(self, window: int = 1000):
        self.window = _check_window(window)
        self.reset()

    def reset(self) -> None:
        """Forget every sample; the window size stays."""
        self._ring = np.zeros(self.window, dtype=np.float64)
        self._next = 0
        self._filled = 0
        self._hist = LogHistogram()

    @property
    def count(self) -> int:
        """Samples since start."""
        return self._hist.count

    def add(self, latency_s: float) -> None:
        if not math.isfinite(latency_s):
            raise ValueError(f"latency must be finite, got {latency_s!r}")
        self._ring[self._next] = latency_s
        self._next = (self._next + 1) % self.window
        if self._filled < self.window:
            self._filled += 1
        self._hist.add(latency_s)

    def window_values(self) -> np.ndarray:
        """The samples in the window, oldest first (a copy)."""
        if self._filled < self.window:
            return self._ring[: self._filled].copy()
        return np.roll(self._ring, -self._next)

    def window_percentiles(self) -> dict[str, float]:
        """p50/p90/p99/max over the window (NaN when empty), seconds."""
        if self._filled == 0:
            return dict(_EMPTY)
        values = self._ring[: self._filled]
        p50, p90, p99 = np.percentile(values, _PERCENTILES)
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99),
                "max": float(values.max())}

    def total_percentiles(self) -> dict[str, float]:
        """p50/p90/p99 since start from the histogram (~1% resolution) and the exact max."""
        h = self._hist
        if h.count == 0:
            return dict(_EMPTY)
        return {"p50": h.percentile(50.0), "p90": h.percentile(90.0),
                "p99": h.percentile(99.0), "max": h.max}

    @property
    def mean_s(self) -> float:
        """Mean since start (NaN when empty)."""
        return self._hist.sum / self._hist.count if self._hist.count else math.nan


class PeriodStats:
    """Loop or arrival period and jitter over a sliding window.

    Jitter is reported as the standard deviation of the period and as the largest
    |period - nominal| (nominal = `nominal_period_s`, or the window mean when not given).
    """

    def __init__(self, nominal_period_s: float | None = None, window: int = 1000):
        if nominal_period_s is not None and not (
                isinstance(nominal_period_s, (int, float)) and nominal_period_s > 0
                and math.isfinite(nominal_period_s)):
            raise ValueError(f"nominal_period_s must be a positive number or None, "
                             f"got {nominal_period_s!r}")
        self.nominal_period_s = None if nominal_period_s is None else float(nominal_period_s)
        self.window = _check_window(window)
        self._ring = np.zeros(self.window, dtype=np.float64)
        self._next = 0
        self._filled = 0
        self._last_tick_s: float | None = None
        self.count = 0

    def add(self, t_s: float) -> None:
        """Record one loop iteration / arrival at time `t_s`; time going backwards (sim reset)
        restarts the measurement instead of recording a negative period."""
        last = self._last_tick_s
        self._last_tick_s = t_s
        if last is not None and t_s >= last:
            self.add_period(t_s - last)

    tick = add

    def add_period(self, period_s: float) -> None:
        self._ring[self._next] = period_s
        self._next = (self._next + 1) % self.window
        if self._filled < self.window:
            self._filled += 1
        self.count += 1

    def summary(self) -> dict[str, float]:
        """rate_hz (0 when unknown), mean_s, jitter_s (std), jitter_max_s, over the window."""
        if self._filled == 0:
            return {"rate_hz": 0.0, "mean_s": math.nan, "jitter_s": math.nan,
                    "jitter_max_s": math.nan}
        v = self._ring[: self._filled]
        mean = float(v.mean())
        nominal = self.nominal_period_s if self.nominal_period_s is not None else mean
        return {"rate_hz": 1.0 / mean if mean > 0 else 0.0, "mean_s": mean,
                "jitter_s": float(v.std()), "jitter_max_s": float(np.abs(v - nominal).max())}

    def restart(self) -> None:
        """Forget the last timestamp (after a pause), keep the window."""
        self._last_tick_s = None


class DeadlineCounter:
    """Deadline misses: in a sliding window of outcomes, since start, and consecutive.

    Two ways to feed it. Per control tick: `record(missed)` or `record_elapsed(elapsed_s)`.
    As a watchdog on a stream of events (action echoes): `on_event(t_s)` when one arrives and
    `check(now_s)` periodically; every whole `deadline_s` without an event is one miss, so a
    silent stream keeps counting (and `in_miss` says the fallback should be active).
    """

    def __init__(self, deadline_s: float, window: int = 1000):
        if not (isinstance(deadline_s, (int, float)) and deadline_s > 0
                and math.isfinite(deadline_s)):
            raise ValueError(f"deadline_s must be a positive number, got {deadline_s!r}")
        self.deadline_s = float(deadline_s)
        self.window = _check_window(window)
        self._ring = np.zeros(self.window, dtype=bool)
        self._next = 0
        self._filled = 0
        self._window_misses = 0
        self.total = 0
        self.misses = 0
        self.consecutive = 0
        self.max_consecutive = 0
        self._last_event_s: float | None = None

    # -- per tick ---------------------------------------------------------------------------
    def record(self, missed: bool) -> None:
        missed = bool(missed)
        if self._filled == self.window:
            self._window_misses -= int(self._ring[self._next])
        else:
            self._filled += 1
        self._ring[self._next] = missed
        self._next = (self._next + 1) % self.window
        self._window_misses += int(missed)
        self.total += 1
        if missed:
            self.misses += 1
            self.consecutive += 1
            if self.consecutive > self.max_consecutive:
                self.max_consecutive = self.consecutive
        else:
            self.consecutive = 0

    def record_elapsed(self, elapsed_s: float) -> bool:
        """Record whether `elapsed_s` exceeded the deadline; True on a miss (NaN is a miss)."""
        missed = not (elapsed_s <= self.deadline_s)
        self.record(missed)
        return missed

    # -- watchdog ---------------------------------------------------------------------------
    def on_event(self, t_s: float) -> bool:
        """An event arrived at `t_s`. Returns True when it ends a run of misses (recovered).

        A late event that `check` has not yet counted is counted here as one miss."""
        recovered = self.consecutive > 0
        last = self._last_event_s
        if not recovered and last is not None and t_s - last > self.deadline_s:
            self.record(True)
        self.record(False)
        self._last_event_s = t_s
        return recovered

    def check(self, now_s: float) -> bool:
        """Count misses for every whole deadline since the last event; True if new ones."""
        last = self._last_event_s
        if last is None:
            return False
        due = int(math.floor((now_s - last) / self.deadline_s))
        if due <= self.consecutive:
            return False
        for _ in range(due - self.consecutive):
            self.record(True)
        return True

    @property
    def in_miss(self) -> bool:
        return self.consecutive > 0

    def silence_s(self, now_s: float) -> float:
        """Time since the last event (0 before the first)."""
        return 0.0 if self._last_event_s is None else now_s - self._last_event_s

    # -- window -----------------------------------------------------------------------------
    @property
    def window_misses(self) -> int:
        return self._window_misses

    @property
    def window_count(self) -> int:
        return self._filled

    @property
    def window_miss_ratio(self) -> float:
        return self._window_misses / self._filled if self._filled else 0.0
