"""How a teacher node shares the robot with another policy (DAgger), without ROS or torch.

Observations and actions are matched by the stamp rule: an action is keyed by the stamp (integer
nanoseconds) of the newest observation that produced it, so "the action for observation k" is
an exact lookup, never a guess by arrival time.

- `ActionMixer` (mode `mix`): per observation, the teacher's own action is executed with
  probability `beta`; otherwise the other policy's action for the *same* stamp (its stamped echo,
  e.g. `student/policy_action`) is forwarded. If that action has not arrived by the time the
  same observation comes again (a lockstep simulator re-publishes its frame when nobody
  answered), the teacher's action is executed instead, so a silent student cannot stall the
  simulator; if a newer observation comes first, the pending one is dropped. Both are counted.
- `LabelGate` (mode `label`): the teacher's observation includes the last *executed* action,
  which only the driving policy knows (its echo on `policy_action`). After labelling observation
  k the gate holds every further input until the executed action for k is known, so the label
  for k+1 is computed from exactly the state the driver acted on. If a second trigger arrives
  while still waiting (the driver does not echo per observation), the gate gives up for that
  step and releases what it holds; that label used the newest executed action heard (counted).
"""
from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Execute", "ActionMixer", "LabelGate", "TEACHER", "OTHER"]

TEACHER = "teacher"
OTHER = "other"


@dataclass
class Execute:
    """An action to execute for observation `key`, and whose it is."""

    key: int
    source: str              # TEACHER or OTHER
    values: np.ndarray
    fallback: bool = False   # the executed action is a fallback command (flagged in the echo)


class ActionMixer:
    """Mode `mix`: teacher with probability `beta`, else the other policy's action, per stamp."""

    def __init__(self, beta: float, seed: int = 0, keep: int = 16) -> None:
        if isinstance(beta, bool) or not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta must be in [0, 1] (probability of executing the teacher's "
                             f"action), got {beta!r}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.beta = float(beta)
        self._rng = random.Random(seed)
        self._keep = keep
        self._offered: OrderedDict[int, tuple[np.ndarray, bool]] = OrderedDict()
        self._pending: tuple[int, np.ndarray, bool] | None = None
        self.teacher_steps = 0
        self.other_steps = 0
        self.other_missed = 0      # observations whose other action never came (dropped)
        self.other_late = 0        # observations re-sent unanswered: teacher executed instead

    @property
    def pending_key(self) -> int | None:
        return None if self._pending is None else self._pending[0]

    def on_observation(self, key: int, teacher_values: np.ndarray,
                       teacher_fallback: bool = False) -> Execute | None:
        """A new observation was labelled by the teacher; what to execute now (None: wait for
        the other policy's action, which `offer` then returns)."""
        if self._pending is not None:
            pending_key, values, fallback = self._pending
            self._pending = None
            if pending_key == key:      # the same frame again: nobody answered it
                self.other_late += 1
                self.teacher_steps += 1
                return Execute(key, TEACHER, values, fallback)
            self.other_missed += 1
        if self._rng.random() < self.beta:
            self.teacher_steps += 1
            return Execute(key, TEACHER, np.asarray(teacher_values, dtype=np.float64),
                           teacher_fallback)
        offered = self._offered.pop(key, None)
        if offered is not None:
            self.other_steps += 1
            return Execute(key, OTHER, offered[0], offered[1])
        self._pending = (key, np.asarray(teacher_values, dtype=np.float64), teacher_fallback)
        return None

    def offer(self, key: int, values: Any, fallback: bool = False) -> Execute | None:
        """The other policy's action for observation `key` (its stamped echo)."""
        values = np.asarray(values, dtype=np.float64)
        if self._pending is not None and self._pending[0] == key:
            self._pending = None
            self.other_steps += 1
            return Execute(key, OTHER, values, fallback)
        self._offered[key] = (values, fallback)   # it may come before our own observation
        while len(self._offered) > self._keep:
            self._offered.popitem(last=False)
        return None

    def reset(self) -> None:
        """Episode reset: nothing pending carries over."""
        self._pending = None
        self._offered.clear()


class LabelGate:
    """Mode `label`: hold inputs after a label until the executed action for it is known."""

    def __init__(self) -> None:
        self._awaiting: int | None = None
        self._held: list[tuple[Any, bool]] = []
        self.gave_up = 0

    @property
    def waiting(self) -> bool:
        return self._awaiting is not None

    def labelled(self, key: int) -> None:
        """Observation `key` was just labelled: wait for the action executed for it."""
        self._awaiting = key

    def executed(self, key: int) -> bool:
        """An executed action for observation `key` arrived; True when it is the one awaited
        (or newer), i.e. the caller should take it as the last action and `release()`."""
        if self._awaiting is None or key < self._awaiting:
            return False
        self._awaiting = None
        return True

    def offer(self, item: Any, is_trigger: bool) -> list[tuple[Any, bool]] | None:
        """An input while waiting. Returns None when it is held; otherwise the items to process
        now, in order (everything held plus this one, after giving up on a silent driver)."""
        if self._awaiting is None:
            return [(item, is_trigger)]
        if is_trigger and any(trigger for _, trigger in self._held):
            self.gave_up += 1
            self._awaiting = None
            return self.release() + [(item, is_trigger)]
        self._held.append((item, is_trigger))
        return None

    def release(self) -> list[tuple[Any, bool]]:
        held, self._held = self._held, []
        return held

    def cancel(self) -> None:
        """Episode reset: the next observation has no previous action to wait for."""
        self._awaiting = None
