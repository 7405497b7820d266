"""Input topics and their message types: the contract's topic table (docs/contracts.md).

A policy node resolves each observation topic to a message class here, so an unknown topic fails
at configure time with the fix in the message.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from geometry_msgs.msg import TwistStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from policy_distill_ros.core import contract

# The message classes of the types an observation term may read (core.contract.INPUT_TYPES).
MESSAGE_TYPES: dict[str, type] = {
    contract.JOINT_STATE_TYPE: JointState,
    contract.IMU_TYPE: Imu,
    contract.TWIST_STAMPED_TYPE: TwistStamped,
    contract.ODOMETRY_TYPE: Odometry,
    contract.FLOAT64_ARRAY_TYPE: Float64MultiArray,
}


def parse_topic_types(entries: Sequence[str]) -> dict[str, str]:
    """`["front/imu=sensor_msgs/msg/Imu", ...]` (a string-array parameter) -> {topic: type name};
    ValueError naming the entry (core.contract.parse_topic_types)."""
    return contract.parse_topic_types(entries, "topic_types", allowed=MESSAGE_TYPES)


def message_type_for(topic: str, overrides: Mapping[str, str] | None = None) -> type:
    """The message class of an input topic: explicit override, else the contract's topic table.

    Matched on the full topic, then on its last path component, so `front/imu` is an Imu.
    """
    overrides = overrides or {}
    for key in (topic, topic.lstrip("/")):
        if key in overrides:
            return MESSAGE_TYPES[overrides[key]]
    type_name = contract.input_type_name(topic)
    if type_name is None:
        raise ValueError(f"input topic {topic!r}: message type unknown; add "
                         f"'{topic}=pkg/msg/Type' to the topic_types parameter (one of "
                         f"{', '.join(sorted(MESSAGE_TYPES))})")
    return MESSAGE_TYPES[type_name]
