"""When a policy node must not act on its observation, and what it commands instead.

Shared by the student, the teacher and the timing monitor, so a fallback means the same pose
everywhere; numpy only, so it is tested without ROS.
"""
from __future__ import annotations

import threading

import numpy as np

__all__ = ["FALLBACK_MODES", "FallbackCommand", "input_fault"]

FALLBACK_MODES = ("hold_default", "zero", "last_safe")


class FallbackCommand:
    """The command sent when the policy cannot be trusted this tick.

    hold_default: the action spec's default pose; zero: all zeros (clipped to the limits);
    last_safe: the last command the policy produced from good input (default pose before any).
    """

    def __init__(self, mode: str, default_pose: np.ndarray, lower: np.ndarray | None = None,
                 upper: np.ndarray | None = None) -> None:
        if mode not in FALLBACK_MODES:
            raise ValueError(f"fallback_mode {mode!r}: expected one of {', '.join(FALLBACK_MODES)}")
        self.mode = mode
        self._default = np.asarray(default_pose, dtype=np.float64).copy()
        self._lower = None if lower is None else np.asarray(lower, dtype=np.float64)
        self._upper = None if upper is None else np.asarray(upper, dtype=np.float64)
        self._last_safe: np.ndarray | None = None
        self._lock = threading.Lock()

    def remember_safe(self, command: np.ndarray) -> None:
        """Every tick with a good command; kept only in last_safe mode (the hot path)."""
        if self.mode != "last_safe":
            return
        with self._lock:
            if self._last_safe is None:
                self._last_safe = np.array(command, dtype=np.float64)
            else:
                self._last_safe[:] = command

    def command(self) -> np.ndarray:
        if self.mode == "zero":
            value = np.zeros_like(self._default)
        elif self.mode == "last_safe":
            with self._lock:
                value = self._default if self._last_safe is None else self._last_safe
        else:
            value = self._default
        if self._lower is not None and self._upper is not None:
            value = np.clip(value, self._lower, self._upper)
        return np.array(value, dtype=np.float64)


def input_fault(obs, max_input_age_s: float) -> tuple[str, str] | None:
    """(kind, text) when an assembled observation must not be acted on: an input problem (NaN,
    wrong size, unknown joint, no message yet) or a topic older than `max_input_age_s`."""
    if obs.problem:
        return ("input", f"bad input: {obs.problem}")
    for topic, age_s in obs.ages_s.items():
        if age_s > max_input_age_s:
            return (f"stale:{topic}", f"stale input: '{topic}' is {age_s * 1e3:.1f} ms old "
                    f"(max_input_age_s {max_input_age_s:g})")
    return None
