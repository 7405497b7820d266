"""What a policy node keeps of its inputs between messages: the newest message per topic (timer
trigger), the newest header stamp (the echo's stamp rule) and the operator's command.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
from geometry_msgs.msg import TwistStamped

from policy_distill_ros.core.episode import EpisodeBoundary
from policy_distill_ros.nodes.ros_common import stamp_to_s


@dataclass
class StoredInput:
    """The newest message of one topic and when it arrived (node clock, seconds)."""

    msg: object
    receive_s: float
    seq: int


class InputCache:
    """Newest message per topic, written by subscription callbacks, read by the control loop.

    A callback does one dict assignment (atomic under the GIL); the loop takes what is new since
    its last look. No lock on the hot path; the sequence number tells new from already seen.
    """

    def __init__(self, topics: Iterable[str]) -> None:
        self._latest: Dict[str, Optional[StoredInput]] = {t: None for t in topics}
        self._seen: Dict[str, int] = {t: 0 for t in self._latest}
        self._seq = 0

    @property
    def topics(self) -> List[str]:
        return list(self._latest)

    def store(self, topic: str, msg: object, receive_s: float) -> None:
        self._seq += 1  # only the executor thread writes, so this counter needs no lock
        self._latest[topic] = StoredInput(msg, receive_s, self._seq)

    def take_new(self) -> List[Tuple[str, StoredInput]]:
        """Entries stored since the previous call, oldest arrival first."""
        fresh = []
        for topic, entry in list(self._latest.items()):
            if entry is not None and entry.seq != self._seen[topic]:
                self._seen[topic] = entry.seq
                fresh.append((topic, entry))
        fresh.sort(key=lambda item: item[1].seq)
        return fresh

    def clear(self) -> None:
        for topic in self._latest:
            self._latest[topic] = None
            self._seen[topic] = 0


def header_stamp_s(msg: object) -> Optional[float]:
    """Seconds of `msg.header.stamp`, or None for messages without a header."""
    header = getattr(msg, "header", None)
    return None if header is None else stamp_to_s(header.stamp)


def twist_command(msg: TwistStamped) -> np.ndarray:
    """The usual legged-robot velocity command [v_x, v_y, yaw_rate] from a TwistStamped."""
    twist = msg.twist
    return np.array([twist.linear.x, twist.linear.y, twist.angular.z], dtype=np.float64)


class InputStamps:
    """Header stamps of a policy node's inputs: the newest one as its own Time message (the
    stamp rule copies it exactly into the echo) and episode resets from stamps going back."""

    def __init__(self) -> None:
        self.episodes = EpisodeBoundary()
        self.newest = None   # (seconds, builtin_interfaces/Time)

    def on_message(self, topic: str, msg: object) -> Optional[str]:
        """Record `msg`'s stamp; a description when time went backwards (reset), else None."""
        stamp = header_stamp_s(msg)
        if stamp is None:
            return None
        jump = self.episodes.on_stamp(topic, stamp)
        if jump is not None:
            self.newest = None
        if self.newest is None or stamp >= self.newest[0]:
            self.newest = (stamp, msg.header.stamp)
        return jump
