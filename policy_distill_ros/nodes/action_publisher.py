"""A policy node's output: the command and its stamped echo (docs/contracts.md)."""
from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from policy_distill_ros.core.contract import (
    FALLBACK_FRAME,
    POLICY_ACTION,
    POLICY_COMMAND,
    WITHHELD_FALLBACK_FRAME,
    WITHHELD_FRAME,
    echo_frame,
    s_to_sec_nanosec,
)
from policy_distill_ros.nodes.patched_message import PatchedMessage
from policy_distill_ros.nodes.ros_common import COMMAND_QOS


class ActionPublisher:
    """Publishes `policy_command` (Float64MultiArray) and its stamped echo `policy_action`.

    The stamp rule: the echo's `header.stamp` is the stamp of the newest observation that
    produced the command, so `now - echo.stamp` is the sensor-to-action latency. Messages are
    serialized once; per tick only the numbers change (`PatchedMessage`; rclpy message objects
    where serialized publishing is unavailable). A non-finite command is refused here, the last
    line of defence, so no NaN ever leaves a policy node. `withheld=True` (the timing monitor
    commands the fallback meanwhile, core.enforcement): only the echo goes out, flagged
    `withheld` (`withheld,fallback` when the input was bad), so the monitor still times the
    policy without two commanders on the topic.
    """

    def __init__(self, node: Node, joint_names: Sequence[str],
                 command_topic: str = POLICY_COMMAND, echo_topic: str = POLICY_ACTION) -> None:
        self._names = list(joint_names)
        self._size = len(self._names)
        self._command_pub = node.create_publisher(Float64MultiArray, command_topic, COMMAND_QOS)
        self._echo_pub = node.create_publisher(JointState, echo_topic, COMMAND_QOS)
        self._command = Float64MultiArray()
        self._command.layout.dim = [MultiArrayDimension(label=",".join(self._names),
                                                        size=self._size, stride=self._size)]
        self._echo = JointState()
        self._echo.name = list(self._names)
        self._values = np.zeros(self._size, dtype=np.float64)
        self._finite = np.empty(self._size, dtype=bool)
        self._node = node
        try:
            self._patched = (PatchedMessage(self._command, "data", self._size, False),
                             PatchedMessage(self._echo, "position", self._size, True),
                             PatchedMessage(self._flagged_echo(FALLBACK_FRAME), "position",
                                             self._size, True),
                             PatchedMessage(self._flagged_echo(WITHHELD_FRAME), "position",
                                             self._size, True),
                             PatchedMessage(self._flagged_echo(WITHHELD_FALLBACK_FRAME),
                                             "position", self._size, True))
        except (ImportError, AttributeError, TypeError, LookupError):
            self._patched = None  # message objects below: slower, same bytes on the wire

    def _flagged_echo(self, frame_id: str) -> JointState:
        echo = JointState(name=list(self._names))
        echo.header.frame_id = frame_id
        return echo

    def publish(self, command: np.ndarray, stamp, fallback: bool = False,
                withheld: bool = False) -> None:
        """`stamp`: the input's own builtin_interfaces/Time (copied exactly, so echoes join
        inputs by exact stamp), or float seconds when there is no input message."""
        values = self._values
        try:
            values[:] = command
        except ValueError:
            raise ValueError(f"command has {np.size(command)} values, action spec has "
                             f"{self._size} joints") from None
        # Exact and silent (a sum would overflow on huge finite values, and +inf + -inf
        # prints numpy's "invalid value" RuntimeWarning); 1 us, into a reused buffer.
        if not np.isfinite(values, out=self._finite).all():
            raise ValueError("refusing to publish a non-finite command")
        if isinstance(stamp, float):
            sec, nanosec = s_to_sec_nanosec(stamp)
        else:
            sec, nanosec = stamp.sec, stamp.nanosec
        if self._patched is not None:
            command_msg, echo, fallback_echo, withheld_echo, withheld_fallback = self._patched
            if not withheld:
                self._command_pub.publish(command_msg.fill(values))
                echo = fallback_echo if fallback else echo
            else:
                echo = withheld_fallback if fallback else withheld_echo
            self._echo_pub.publish(echo.fill(values, sec, nanosec))
            return
        data = array.array("d", values.tobytes())
        self._command.data = data
        self._echo.header.stamp.sec, self._echo.header.stamp.nanosec = sec, nanosec
        self._echo.header.frame_id = echo_frame(fallback, withheld)
        self._echo.position = data
        if not withheld:
            self._command_pub.publish(self._command)
        self._echo_pub.publish(self._echo)

    def destroy(self) -> None:
        self._node.destroy_publisher(self._command_pub)
        self._node.destroy_publisher(self._echo_pub)

