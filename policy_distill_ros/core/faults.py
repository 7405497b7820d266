"""Named fault bookkeeping so a node logs each fault once when it starts and once when it ends.

At 500 Hz a stale topic would otherwise print 500 lines a second; with transitions the log
shows "started: cause" and "cleared after N s" and diagnostics show the active set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

__all__ = ["FaultTransition", "FaultTracker"]

# What `update` takes: None (no fault), a cause, or (kind, cause) where a change of kind on the
# same name counts as a new fault (e.g. channel "policy": "stale:imu" then "inference").
FaultState = Union[None, str, "tuple[str, str]"]


@dataclass(frozen=True)
class FaultTransition:
    """A fault started (active=True) or cleared (active=False)."""

    name: str
    active: bool
    cause: str
    duration_s: float | None = None  # for a clear: how long it was active (when times given)

    @property
    def level(self) -> str:
        """Log level for this transition: "error" when a fault starts, "info" when it clears."""
        return "error" if self.active else "info"

    def describe(self) -> str:
        if self.active:
            return f"fault '{self.name}' started: {self.cause}"
        took = f" after {self.duration_s:.3f} s" if self.duration_s is not None else ""
        return f"fault '{self.name}' cleared{took} (was: {self.cause})"


class FaultTracker:
    """Active faults by name with their latest cause and how often each has started."""

    def __init__(self) -> None:
        self._active: dict[str, tuple[str | None, str, float | None]] = {}
        self.occurrences: dict[str, int] = {}

    def set(self, name: str, cause: str, now_s: float | None = None,
            kind: str | None = None) -> FaultTransition | None:
        """Mark `name` active. Returns a transition only when it was not active before; a new
        cause for an active fault just replaces the stored cause (no new log line)."""
        entry = self._active.get(name)
        if entry is not None:
            self._active[name] = (entry[0], cause, entry[2])
            return None
        self._active[name] = (kind, cause, now_s)
        self.occurrences[name] = self.occurrences.get(name, 0) + 1
        return FaultTransition(name, True, cause)

    def clear(self, name: str, now_s: float | None = None) -> FaultTransition | None:
        """Mark `name` inactive; returns a transition only if it was active."""
        entry = self._active.pop(name, None)
        if entry is None:
            return None
        _, cause, since = entry
        duration = now_s - since if (now_s is not None and since is not None) else None
        return FaultTransition(name, False, cause, duration)

    def update(self, name: str, fault: FaultState,
               now_s: float | None = None) -> list[tuple[str, str]]:
        """Set or clear `name` from a per-tick fault state; returns the log lines to emit as
        (level, text) pairs: nothing while the state is unchanged, ("error", ...) when a fault
        starts, ("info", ...) when it clears (a change of kind gives both)."""
        if fault is None:
            transitions = [self.clear(name, now_s)]
        else:
            kind, cause = (None, fault) if isinstance(fault, str) else fault
            entry = self._active.get(name)
            transitions = []
            if entry is not None and entry[0] != kind:
                transitions.append(self.clear(name, now_s))
            transitions.append(self.set(name, cause, now_s, kind))
        return [(t.level, t.describe()) for t in transitions if t is not None]

    def is_active(self, name: str) -> bool:
        return name in self._active

    @property
    def active(self) -> dict[str, str]:
        """Active fault name -> latest cause."""
        return {name: cause for name, (_, cause, _) in self._active.items()}

    def __bool__(self) -> bool:
        return bool(self._active)

    def clear_all(self, now_s: float | None = None) -> list[FaultTransition]:
        return [t for t in (self.clear(n, now_s) for n in list(self._active)) if t is not None]
