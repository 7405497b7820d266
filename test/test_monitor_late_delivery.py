"""The timing monitor tells a silence from echoes delivered late, after the fact.

A watchdog must decide on what it has taken: echoes held up between a healthy student and the
monitor (seen once in CI, 216 ms, ~4 s after a student was killed and restarted) look like a
silence and start a fallback. What the monitor owes the user then: the fallback ends as soon as
the held echoes are in (they are on time by their send times), and the log and /diagnostics
say it was a late delivery, not the policy, while a real silence is never called one.

The monitor runs in this process on real rclpy; echoes are handed to its echo handler with the
rmw message info a held-up delivery would carry (send times in the past), which DDS offers no
way to provoke on demand.
"""
from __future__ import annotations

import time

import pytest
import rclpy
from sensor_msgs.msg import JointState

from policy_distill_ros.nodes.ros_common import s_to_stamp
from policy_distill_ros.nodes.timing_monitor_node import TimingMonitorNode
from policy_models import make_linear_policy
from ros_harness import wait_until
from test_student_node import SPEC

pytestmark = [pytest.mark.dds, pytest.mark.timeout(60)]

PERIOD_S = 0.02
DEADLINE_S = 0.1
RECOVERY = 5


@pytest.fixture()
def monitor(tmp_path):
    model = str(tmp_path / "student.onnx")
    make_linear_policy(model, SPEC, seed=3)
    rclpy.init(args=["--ros-args", "-p", f"model_path:={model}",
                     "-p", f"deadline_s:={DEADLINE_S}", "-p", f"recovery_periods:={RECOVERY}"])
    node = TimingMonitorNode()
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


def echo(node: TimingMonitorNode, sent_s: float) -> None:
    """An echo the student sent at `sent_s`, taken now."""
    msg = JointState()
    msg.header.stamp = s_to_stamp(sent_s)
    node._on_action(msg, {"source_timestamp": int(sent_s * 1e9),
                          "received_timestamp": time.time_ns()})


def stream(node: TimingMonitorNode, start_s: float, end_s: float) -> float:
    """Echoes sent every PERIOD_S from start_s up to end_s; returns the last send time."""
    sent_s = start_s
    while sent_s <= end_s:
        echo(node, sent_s)
        sent_s += PERIOD_S
    return sent_s - PERIOD_S


def live(node: TimingMonitorNode, count: int) -> None:
    """`count` echoes sent now, one every PERIOD_S (never a send time in the future)."""
    for _ in range(count):
        echo(node, time.time())
        time.sleep(PERIOD_S)


def diagnostics(node: TimingMonitorNode) -> dict:
    with node._lock:
        status = node._diagnostics().status[0]
    return {kv.key: kv.value for kv in status.values}


def fallback_declared(node: TimingMonitorNode) -> bool:
    return node.enforcer.state == "fallback"


def test_a_real_silence_is_not_called_a_late_delivery(monitor):
    now_s = time.time()
    last_s = stream(monitor, now_s - 0.2, now_s)
    wait_until(lambda: fallback_declared(monitor), 5, "a fallback for the silence")
    # the student comes back: its echoes are sent after the verdict, so the silence was real
    time.sleep(0.05)
    resumed_s = time.time()
    live(monitor, RECOVERY + 1)  # the first one closes the gap: a miss, not on time
    assert monitor.enforcer.state == "nominal"
    assert monitor.late_deliveries == 0
    assert resumed_s - last_s > DEADLINE_S


def test_echoes_held_in_delivery_are_reported_and_control_returns_at_once(monitor):
    now_s = time.time()
    last_s = stream(monitor, now_s - 0.2, now_s)
    wait_until(lambda: fallback_declared(monitor), 5, "a fallback for the silence")
    # the echoes the student sent meanwhile, on time, arrive together (a held-up delivery)
    stream(monitor, last_s + PERIOD_S, time.time())
    assert monitor.enforcer.state == "nominal", "the held echoes were on time: control returns"
    assert monitor.late_deliveries == 1
    values = diagnostics(monitor)
    assert values["late_deliveries"] == "1"
    assert float(values["delivery_delay_max_ms"]) > DEADLINE_S * 1e3
    # said once per fallback: the next echoes are not late
    live(monitor, 5)
    assert monitor.late_deliveries == 1
