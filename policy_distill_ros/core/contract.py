"""The wire contract every layer shares: topic names and types, stamps, the echo's markers.

One home (ROS-free, no message packages) so that what a node publishes, what the recorder
stores and what the trainer reads back cannot drift apart: nodes, recording and training import
these names instead of writing their own. docs/contracts.md describes them; test_contract.py
fails when a second copy appears elsewhere in the package.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

__all__ = [
    "JOINT_STATES", "IMU", "COMMAND", "ODOMETRY", "CONTACT_FORCES", "DYNAMICS", "POLICY_COMMAND",
    "POLICY_ACTION", "TEACHER_LABEL", "EPISODE", "DIAGNOSTICS", "MODEL_UPDATED",
    "POLICY_ENFORCEMENT", "EPISODE_LABELS", "JOINT_STATE_TYPE", "IMU_TYPE", "TWIST_STAMPED_TYPE",
    "ODOMETRY_TYPE", "FLOAT64_ARRAY_TYPE", "INPUT_TYPES", "TOPIC_TYPES", "input_type_name",
    "MessageTypeError", "normalize_type_name", "TopicTypeEntry", "parse_topic_type",
    "parse_topic_types", "NS_PER_S", "stamp_ns", "header_stamp_ns", "stamp_s", "header_stamp_s",
    "ns_to_s", "s_to_ns", "s_to_sec_nanosec", "ns_to_sec_nanosec", "FALLBACK_FRAME",
    "WITHHELD_FRAME", "WITHHELD_FALLBACK_FRAME", "echo_frame", "is_fallback_frame",
    "is_withheld_frame",
]

# ---------------------------------------------------------------------------------------------
# topics (relative names, so a namespace applies) and their message types

JOINT_STATES = "joint_states"
IMU = "imu"
COMMAND = "command"
ODOMETRY = "privileged/odometry"
CONTACT_FORCES = "privileged/contact_forces"
DYNAMICS = "privileged/dynamics"
POLICY_COMMAND = "policy_command"
POLICY_ACTION = "policy_action"          # the stamped echo of every command
TEACHER_LABEL = "teacher_label"
EPISODE = "episode"
DIAGNOSTICS = "/diagnostics"
MODEL_UPDATED = "model_updated"
POLICY_ENFORCEMENT = "policy_enforcement"   # the timing monitor's state (docs/enforcement.md)

# Layout labels of the `episode` topic's Float64MultiArray, in data order.
EPISODE_LABELS = ("episode_id", "step", "stamp_s", "reward", "episode_return", "terminated",
                  "truncated")

JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
IMU_TYPE = "sensor_msgs/msg/Imu"
TWIST_STAMPED_TYPE = "geometry_msgs/msg/TwistStamped"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
FLOAT64_ARRAY_TYPE = "std_msgs/msg/Float64MultiArray"

# The types an observation term may read (standard messages only).
INPUT_TYPES = (JOINT_STATE_TYPE, IMU_TYPE, TWIST_STAMPED_TYPE, ODOMETRY_TYPE, FLOAT64_ARRAY_TYPE)

# The topic table of docs/contracts.md.
TOPIC_TYPES: dict[str, str] = {
    JOINT_STATES: JOINT_STATE_TYPE,
    IMU: IMU_TYPE,
    COMMAND: TWIST_STAMPED_TYPE,
    ODOMETRY: ODOMETRY_TYPE,
    CONTACT_FORCES: FLOAT64_ARRAY_TYPE,
    DYNAMICS: FLOAT64_ARRAY_TYPE,
    POLICY_COMMAND: FLOAT64_ARRAY_TYPE,
    POLICY_ACTION: JOINT_STATE_TYPE,
    TEACHER_LABEL: JOINT_STATE_TYPE,
    EPISODE: FLOAT64_ARRAY_TYPE,
    DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
    MODEL_UPDATED: "std_msgs/msg/String",
    POLICY_ENFORCEMENT: "std_msgs/msg/String",
}

# Input topics by last path component, so `front/imu` or `privileged/odometry` resolve alike.
_INPUT_BY_BASE = {t.rsplit("/", 1)[-1]: TOPIC_TYPES[t]
                  for t in (JOINT_STATES, IMU, COMMAND, ODOMETRY, CONTACT_FORCES, DYNAMICS)}


def input_type_name(topic: str) -> str | None:
    """The type of an observation input topic from the table: matched on the whole relative
    name, then on its last path component (`front/imu` is an Imu); None when neither is known."""
    bare = topic.strip("/")
    return _INPUT_BY_BASE.get(bare) or _INPUT_BY_BASE.get(bare.rsplit("/", 1)[-1])


# ---------------------------------------------------------------------------------------------
# message type names

_TYPE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)/(?:(msg|srv|action)/)?([A-Za-z][A-Za-z0-9_]*)$")
TYPE_SEPARATOR = "="          # 'topic=pkg/msg/Type' (docs/contracts.md says why not ':')
_DEPRECATED_SEPARATOR = ":"


class MessageTypeError(ValueError):
    """A message type name that is not 'pkg/msg/Type' or 'pkg/Type'."""


def normalize_type_name(name: str) -> str:
    """'sensor_msgs/Imu' or 'sensor_msgs/msg/Imu' -> 'sensor_msgs/msg/Imu' (the form rclpy,
    rosbag2 and MCAP schemas use); MessageTypeError for anything else."""
    match = _TYPE_RE.match(name.strip())
    if not match:
        raise MessageTypeError(f"message type {name!r} is not 'package/msg/Type' or "
                               f"'package/Type'")
    pkg, kind, base = match.groups()
    return f"{pkg}/{kind or 'msg'}/{base}"


class TopicTypeEntry(NamedTuple):
    topic: str
    type_name: str | None       # normalized; None when the entry names no type
    deprecation: str               # one warning line when the entry used 'topic:Type', else ""


def parse_topic_type(entry: str, where: str, type_required: bool = True,
                     legacy_colon: bool = False) -> TopicTypeEntry:
    """'topic=pkg/msg/Type' (or just 'topic' when `type_required` is False) -> TopicTypeEntry.

    `legacy_colon`: also read 'topic:pkg/msg/Type' (the recorder's old form), with a deprecation
    line for the caller to log. ValueError names `where` and the entry.
    """
    text = entry.strip()
    topic, sep, type_name = text.partition(TYPE_SEPARATOR)
    deprecation = ""
    if legacy_colon and not sep and _DEPRECATED_SEPARATOR in text:
        topic, sep, type_name = text.partition(_DEPRECATED_SEPARATOR)
        deprecation = (f"{where}: entry {entry!r} uses the deprecated 'topic:Type' form; write "
                       f"'{topic.strip()}{TYPE_SEPARATOR}{type_name.strip()}'")
    topic = topic.strip()
    if not topic or any(c.isspace() or c in ":=" for c in topic) or (
            sep and not type_name.strip()) or (type_required and not sep):
        form = "'topic=pkg/msg/Type'" if type_required else "'topic' or 'topic=pkg/msg/Type'"
        raise ValueError(f"{where}: entry {entry!r}: expected {form}")
    if not sep:
        return TopicTypeEntry(topic, None, "")
    try:
        return TopicTypeEntry(topic, normalize_type_name(type_name), deprecation)
    except MessageTypeError as exc:
        raise ValueError(f"{where}: entry {entry!r}: {exc}") from None


def parse_topic_types(entries: Iterable[str], where: str = "topic_types",
                      allowed: Iterable[str] = INPUT_TYPES) -> dict[str, str]:
    """'topic=pkg/msg/Type' entries (the nodes' topic_types parameter) -> {topic: type name};
    a type outside `allowed` is refused, naming the ones that are."""
    allowed = tuple(allowed)
    table: dict[str, str] = {}
    for entry in entries:
        parsed = parse_topic_type(entry, where)
        if parsed.type_name not in allowed:
            raise ValueError(f"{where}: entry {entry!r}: type {parsed.type_name!r} is not one "
                             f"of {', '.join(sorted(allowed))}")
        table[parsed.topic] = parsed.type_name
    return table


# ---------------------------------------------------------------------------------------------
# stamps (builtin_interfaces/Time: sec, nanosec)
#
# The stamp rule: an echo's header.stamp is the stamp of the newest observation that produced
# it, copied exactly; recorded pairs are joined by equality of integer nanoseconds, never by
# float seconds. Float seconds are for ages and logs, and are computed one way everywhere.

NS_PER_S = 1_000_000_000


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact: the join key)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int | None:
    """`msg.header.stamp` in integer nanoseconds, or None for a message without a header."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    return None if stamp is None else stamp_ns(stamp)


def stamp_s(stamp: Any) -> float:
    """builtin_interfaces/Time -> float seconds; equals `ns_to_s(stamp_ns(stamp))` exactly."""
    return stamp.sec + stamp.nanosec * 1e-9


def header_stamp_s(msg: Any) -> float | None:
    """`msg.header.stamp` in seconds, or None for a message without a header."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    return None if stamp is None else stamp.sec + stamp.nanosec * 1e-9


def ns_to_s(ns: int) -> float:
    """Integer nanoseconds (a stamp, a clock reading) -> float seconds, rounded as `stamp_s`."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return sec + nanosec * 1e-9


def s_to_sec_nanosec(seconds: float) -> tuple[int, int]:
    """Float seconds -> (sec, nanosec) of a builtin_interfaces/Time, nanosec in [0, 1e9)."""
    sec = int(seconds // 1)
    return sec, min(int(round((seconds - sec) * 1e9)), NS_PER_S - 1)


def s_to_ns(seconds: float) -> int:
    """Float seconds -> integer nanoseconds, the same rounding as `s_to_sec_nanosec`."""
    sec, nanosec = s_to_sec_nanosec(seconds)
    return sec * NS_PER_S + nanosec


def ns_to_sec_nanosec(ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> (sec, nanosec), exact."""
    return divmod(int(ns), NS_PER_S)


# ---------------------------------------------------------------------------------------------
# the echo's header.frame_id: what happened to the command it carries

FALLBACK_FRAME = "fallback"                      # the node's own fallback command, published
WITHHELD_FRAME = "withheld"                      # not published: the timing monitor commands
WITHHELD_FALLBACK_FRAME = "withheld,fallback"    # both: a fallback the monitor replaced


def echo_frame(fallback: bool, withheld: bool) -> str:
    """The echo's frame_id: "" for the policy's command, published."""
    if withheld:
        return WITHHELD_FALLBACK_FRAME if fallback else WITHHELD_FRAME
    return FALLBACK_FRAME if fallback else ""


def is_fallback_frame(frame_id: str) -> bool:
    """True when the echoed command is a fallback, not a policy decision from good input."""
    return frame_id in (FALLBACK_FRAME, WITHHELD_FALLBACK_FRAME)


def is_withheld_frame(frame_id: str) -> bool:
    """True when the echoed command was not published (the monitor commanded meanwhile)."""
    return frame_id in (WITHHELD_FRAME, WITHHELD_FALLBACK_FRAME)
