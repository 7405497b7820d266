"""A fixed-rate loop on its own thread, scheduled on absolute monotonic times.

Tick k is due at start + k * period, so sleep error never accumulates into drift. When a
callback overruns past the next tick, the missed ticks are skipped (counted, not bursted):
a controller wants the newest data at the proper rate, not a catch-up volley.
By default it only sleeps (`spin_s=0`). bench/loop_timer.py measures the trade-off; on the
2-core dev box at 500 Hz: sleep only -> wake-up lateness p50 74 us / p99 148 us at 2 % CPU;
200 us final spin -> p50 7 us / p99 30 us at 8 % CPU; 500 us -> p99 19 us at 23 % CPU. A
control loop with a 2 ms period rarely needs the spin, so it is opt-in.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from .timing import LogHistogram, PeriodStats

__all__ = ["LoopTimer", "lateness_line"]

_MAX_SLEEP_CHUNK_S = 0.05  # stop() is honoured within this even at slow rates


class LoopTimer:
    """Calls `callback()` every `period_s` seconds on a dedicated thread.

    During a call, `due_s` holds the scheduled (not actual) monotonic time of the tick.
    Exceptions from the callback go to `on_error(exc)` and the loop continues; without
    `on_error` the loop stops and the exception is kept in `.error`.
    """

    def __init__(self, period_s: float, callback: Callable[[], None], *,
                 name: str = "loop_timer", spin_s: float = 0.0,
                 on_error: Callable[[BaseException], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if not (isinstance(period_s, (int, float)) and math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"LoopTimer period_s must be a positive number, got {period_s!r}")
        if not (isinstance(spin_s, (int, float)) and 0.0 <= spin_s < period_s):
            raise ValueError(f"LoopTimer spin_s must be in [0, period_s), got {spin_s!r}")
        self.period_s = float(period_s)
        self.rate_hz = 1.0 / self.period_s
        self.spin_s = float(spin_s)
        self._callback = callback
        self._on_error = on_error
        self._clock = clock
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.due_s = math.nan
        self.ticks = 0
        self.overruns = 0        # callbacks that ran past the next tick's due time
        self.skipped_ticks = 0   # ticks dropped because of overruns
        self.errors = 0
        self.error: BaseException | None = None
        self.period_stats = PeriodStats(self.period_s)  # actual wake-to-wake periods
        self.max_lateness_s = 0.0  # worst wake-up after a due time

    @classmethod
    def at_rate(cls, rate_hz: float, callback: Callable[[], None], *,
                name: str = "loop_timer", spin_s: float = 0.0,
                on_error: Callable[[BaseException], None] | None = None) -> LoopTimer:
        """Same, given a rate instead of a period."""
        if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and rate_hz > 0):
            raise ValueError(f"LoopTimer rate_hz must be a positive number, got {rate_hz!r}")
        return cls(1.0 / rate_hz, callback, name=name, spin_s=spin_s, on_error=on_error)

    # -- control ----------------------------------------------------------------------------
    def start(self) -> LoopTimer:
        if self._thread is not None:
            raise RuntimeError(f"LoopTimer '{self._name}' already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop and join; safe to call twice or from the callback itself."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
            if thread.is_alive():
                raise RuntimeError(f"LoopTimer '{self._name}' did not stop within {timeout_s} s "
                                   f"(callback blocked?)")
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> LoopTimer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- loop -------------------------------------------------------------------------------
    def _sleep_until(self, due_s: float) -> bool:
        """Sleep until `due_s`; False if stop was requested meanwhile."""
        clock = self._clock
        while True:
            remaining = due_s - clock()
            if self._stop.is_set():
                return False
            if remaining <= self.spin_s:
                break
            time.sleep(min(remaining - self.spin_s, _MAX_SLEEP_CHUNK_S))
        while clock() < due_s:  # short final spin (only when spin_s > 0)
            pass
        return True

    def _run(self) -> None:
        clock = self._clock
        period = self.period_s
        start = clock()
        k = 0
        while not self._stop.is_set():
            due = start + k * period
            if not self._sleep_until(due):
                break
            woke = clock()
            lateness = woke - due
            if lateness > self.max_lateness_s:
                self.max_lateness_s = lateness
            self.period_stats.add(woke)
            self.due_s = due
            try:
                self._callback()
            except BaseException as e:  # noqa: BLE001 - reported, never silently lost
                self.errors += 1
                if self._on_error is None:
                    self.error = e
                    break
                self._on_error(e)
            self.ticks += 1
            k += 1
            now = clock()
            next_due = start + k * period
            if now > next_due:
                self.overruns += 1
                behind = int((now - start) / period) + 1  # first tick still in the future
                self.skipped_ticks += behind - k
                k = behind


def lateness_line(lateness: LogHistogram, loop: LoopTimer) -> str:
    """How late a loop's actions went out against their due times, in one line: the student's
    log line on stopping, which bench/student_latency.py parses (its TIMER_LINE)."""
    return (f"timer loop: {lateness.count} actions, published after their due time p50 "
            f"{lateness.percentile(50) * 1e3:.3f} / p99 {lateness.percentile(99) * 1e3:.3f} / "
            f"max {lateness.max * 1e3:.3f} ms; {loop.skipped_ticks} ticks skipped after "
            f"{loop.overruns} overruns")
