"""Join recorded state and action messages by exact header stamp (the package's stamp rule).

Every action echo carries the stamp of the newest observation that produced it, so a pair is
found by equality of (sec, nanosec), never by nearest-time guessing.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from policy_distill_ros.core.contract import stamp_ns
from policy_distill_ros.recording.bag_reader import BagMessage


@dataclass
class StampJoin:
    pairs: list[tuple[int, Any, Any]] = field(default_factory=list)  # (stamp ns, state, action)
    unmatched_states: int = 0
    unmatched_actions: int = 0
    duplicate_stamps: int = 0      # a second state with a stamp already seen (the first is kept)


def join_by_stamp(messages: Iterable[BagMessage], state_topic: str,
                  action_topic: str) -> StampJoin:
    """Pair each action on `action_topic` with the `state_topic` message of the same stamp."""
    states: dict[int, Any] = {}
    actions: list[tuple[int, Any]] = []
    result = StampJoin()
    state_names = {state_topic, "/" + state_topic.lstrip("/")}
    action_names = {action_topic, "/" + action_topic.lstrip("/")}
    for item in messages:
        if item.topic in state_names:
            key = stamp_ns(item.message.header.stamp)
            if key in states:
                result.duplicate_stamps += 1
            else:
                states[key] = item.message
        elif item.topic in action_names:
            actions.append((stamp_ns(item.message.header.stamp), item.message))
    used = set()
    for key, action in actions:
        state = states.get(key)
        if state is None:
            result.unmatched_actions += 1
        else:
            used.add(key)
            result.pairs.append((key, state, action))
    result.unmatched_states = len(states) - len(used)
    return result
