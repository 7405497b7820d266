"""Policy-node output without DDS peers: patched-CDR publishing, hot-path logging, throttling."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from policy_distill_ros.core.contract import FALLBACK_FRAME, WITHHELD_FALLBACK_FRAME, WITHHELD_FRAME
from policy_distill_ros.core.log_throttle import LogThrottle
from policy_distill_ros.nodes.action_publisher import ActionPublisher
from policy_distill_ros.nodes.patched_message import PatchedMessage

REPO = Path(__file__).resolve().parents[1]
JOINTS = ["hip_1", "ankle_1", "hip_2"]


def test_patched_messages_deserialize_to_the_published_values(ros_node):
    pub = ActionPublisher(ros_node, JOINTS)
    assert pub._patched is not None, "serialized publishing unavailable on this rclpy"
    command, echo, fallback, withheld, withheld_fallback = pub._patched
    values = np.array([0.25, -1.5, 1e-9])
    cmd = deserialize_message(command.fill(values), Float64MultiArray)
    np.testing.assert_array_equal(cmd.data, values)
    assert cmd.layout.dim[0].label == ",".join(JOINTS) and cmd.layout.dim[0].size == 3
    for patched, frame in ((echo, ""), (fallback, FALLBACK_FRAME),
                           (withheld, WITHHELD_FRAME),
                           (withheld_fallback, WITHHELD_FALLBACK_FRAME)):
        msg = deserialize_message(patched.fill(values, 1_700_000_000, 999_999_999), JointState)
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_700_000_000, 999_999_999)
        assert msg.header.frame_id == frame and list(msg.name) == JOINTS
        np.testing.assert_array_equal(msg.position, values)
        assert len(msg.velocity) == 0 and len(msg.effort) == 0


@pytest.mark.filterwarnings("error")  # +inf and -inf must not print numpy's invalid-value warning
def test_publish_refuses_non_finite_and_wrong_size(ros_node):
    pub = ActionPublisher(ros_node, JOINTS)
    pub.publish(np.array([1e308, 1e308, -1e308]), 1.5)  # huge but finite: no overflow refusal
    with pytest.raises(ValueError, match="non-finite"):
        pub.publish(np.array([0.0, np.nan, 0.0]), 1.5)
    with pytest.raises(ValueError, match="non-finite"):
        pub.publish(np.array([np.inf, -np.inf, 0.0]), 1.5)
    with pytest.raises(ValueError, match="3 joints"):
        pub.publish(np.zeros(4), 1.5)
    pub.publish(np.zeros(3), 1.5)  # and a good one goes out


def test_patched_message_refuses_a_message_it_cannot_locate(ros_node):
    with pytest.raises(LookupError):  # a 0-length value field has no sentinel to find
        PatchedMessage(JointState(name=[]), "position", 0, True)


def test_log_throttle_lets_one_line_per_period_through():
    throttle = LogThrottle(0.2)
    assert throttle.due()
    assert not throttle.due() and not throttle.due()
    assert throttle.suppressed == 2
    time.sleep(0.25)
    assert throttle.due() and throttle.suppressed == 0
    with pytest.raises(ValueError, match="period_s"):
        LogThrottle(0.0)


CHILD = """
import rclpy
from rclpy.logging import LoggingSeverity
from policy_distill_ros.nodes.rclpy_internals import HotPathLog
rclpy.init()
node = rclpy.create_node("hot_log_child")
log = HotPathLog(node.get_logger())
log.error("first line"); log.warning("second line"); log.info("third line")
node.get_logger().set_level(LoggingSeverity.WARN)
log.info("not shown")
node.destroy_node(); rclpy.shutdown()
"""


def test_hot_path_log_keeps_levels_and_logger_name():
    err = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True).stderr
    lines = [line for line in err.splitlines() if "hot_log_child" in line]
    assert len(lines) == 3, err
    for line, (level, text) in zip(lines, [("ERROR", "first line"), ("WARN", "second line"),
                                           ("INFO", "third line")], strict=True):
        assert f"[{level}]" in line and line.endswith(f"[hot_log_child]: {text}"), line
