"""Episode boundaries as a policy node sees them: time going backwards, a new episode id.

A recurrent student must forget its hidden state and observation history when a new episode
starts, or the first actions of the episode are computed from the previous one. The node is
told in one of three ways: input stamps jump back (a simulator reset with
`reset_time_on_episode`), the simulator's `episode` array shows a new `episode_id`, or someone
calls the node's reset service. This module decides the first two, without ROS.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["EpisodeBoundary", "BACKWARDS_TOLERANCE_S"]

BACKWARDS_TOLERANCE_S = 1e-6


class EpisodeBoundary:
    """Watches input stamps per topic and episode ids; says when a new episode started."""

    def __init__(self, id_label: str = "episode_id",
                 tolerance_s: float = BACKWARDS_TOLERANCE_S) -> None:
        if not id_label:
            raise ValueError("id_label must name the episode id label, e.g. 'episode_id'")
        if not tolerance_s >= 0.0:
            raise ValueError(f"tolerance_s must be >= 0, got {tolerance_s!r}")
        self.id_label = id_label
        self.tolerance_s = tolerance_s
        self._last_stamp: dict[str, float] = {}
        self._episode_id: float | None = None
        self._index: int | None = None
        self._labels: tuple | None = None

    def on_stamp(self, topic: str, stamp_s: float) -> str | None:
        """Record an input stamp; a description of the jump when it went backwards, else None.

        After a jump every topic's history is forgotten (they all restart together).
        """
        previous = self._last_stamp.get(topic)
        if previous is not None and stamp_s < previous - self.tolerance_s:
            self._last_stamp.clear()
            self._last_stamp[topic] = stamp_s
            return f"time went backwards on '{topic}' ({previous:.6f} -> {stamp_s:.6f} s)"
        self._last_stamp[topic] = stamp_s
        return None

    def on_episode(self, labels: Sequence[str] | None, values: Sequence[float]) -> str | None:
        """An `episode` array (layout labels + data); a description when the id changed.

        Raises ValueError naming the problem when the array has no `id_label` or too few values.
        The first array seen only records the id.
        """
        key = tuple(labels) if labels is not None else None
        if self._index is None or key != self._labels:
            if key is None or self.id_label not in key:
                raise ValueError(f"episode array has no '{self.id_label}' label (labels: "
                                 f"{list(key) if key is not None else 'none'})")
            self._labels, self._index = key, key.index(self.id_label)
        if len(values) <= self._index:
            raise ValueError(f"episode array has {len(values)} values; '{self.id_label}' is "
                             f"label {self._index}")
        episode_id = float(values[self._index])
        if not math.isfinite(episode_id):
            raise ValueError(f"episode array: '{self.id_label}' is {episode_id}")
        previous, self._episode_id = self._episode_id, episode_id
        if previous is None or previous == episode_id:
            return None
        return f"new episode {episode_id:g} (was {previous:g})"

    def forget_stamps(self) -> None:
        """After an external reset: the next stamp of every topic starts fresh."""
        self._last_stamp.clear()
