"""Input topics and their message types: the contract's topic table (docs/contracts.md).

A policy node resolves each observation topic to a message class here, so an unknown topic fails
at configure time with the fix in the message.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

# The message types an observation term may read (standard types only, see docs/contracts.md).
MESSAGE_TYPES: Dict[str, type] = {
    "sensor_msgs/msg/JointState": JointState,
    "sensor_msgs/msg/Imu": Imu,
    "geometry_msgs/msg/TwistStamped": TwistStamped,
    "nav_msgs/msg/Odometry": Odometry,
    "std_msgs/msg/Float64MultiArray": Float64MultiArray,
}

# Topic (or last path component of a topic) -> type, from the topic table in docs/contracts.md.
DEFAULT_TOPIC_TYPES: Dict[str, str] = {
    "joint_states": "sensor_msgs/msg/JointState",
    "imu": "sensor_msgs/msg/Imu",
    "command": "geometry_msgs/msg/TwistStamped",
    "odometry": "nav_msgs/msg/Odometry",
    "contact_forces": "std_msgs/msg/Float64MultiArray",
    "dynamics": "std_msgs/msg/Float64MultiArray",
}

# The timing monitor's enforcement state (std_msgs/String, latched): the student withholds its
# commands while it is not "nominal" (core.enforcement, docs/enforcement.md).
ENFORCEMENT_TOPIC = "policy_enforcement"


def parse_topic_types(entries: Sequence[str]) -> Dict[str, str]:
    """`["front/imu=sensor_msgs/msg/Imu", ...]` (a string-array parameter) -> {topic: type name}."""
    table: Dict[str, str] = {}
    for entry in entries:
        topic, sep, type_name = entry.partition("=")
        topic, type_name = topic.strip(), _normalize_type_name(type_name.strip())
        if not sep or not topic or not type_name:
            raise ValueError(f"topic_types entry {entry!r}: expected 'topic=pkg/msg/Type'")
        if type_name not in MESSAGE_TYPES:
            raise ValueError(f"topic_types entry {entry!r}: type {type_name!r} is not one of "
                             f"{', '.join(sorted(MESSAGE_TYPES))}")
        table[topic] = type_name
    return table


def _normalize_type_name(name: str) -> str:
    """Accept `sensor_msgs/Imu` as well as `sensor_msgs/msg/Imu`."""
    parts = name.split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else name


def message_type_for(topic: str, overrides: Optional[Mapping[str, str]] = None) -> type:
    """The message class of an input topic: explicit override, else the contract's topic table.

    Matched on the full topic, then on its last path component, so `front/imu` is an Imu.
    """
    overrides = overrides or {}
    for key in (topic, topic.lstrip("/")):
        if key in overrides:
            return MESSAGE_TYPES[overrides[key]]
    base = topic.rstrip("/").rsplit("/", 1)[-1]
    type_name = DEFAULT_TOPIC_TYPES.get(topic.lstrip("/")) or DEFAULT_TOPIC_TYPES.get(base)
    if type_name is None:
        raise ValueError(f"input topic {topic!r}: message type unknown; add "
                         f"'{topic}=pkg/msg/Type' to the topic_types parameter (one of "
                         f"{', '.join(sorted(MESSAGE_TYPES))})")
    return MESSAGE_TYPES[type_name]
