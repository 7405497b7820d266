"""sim_node over real DDS: lockstep handshake, command checking, realtime rate, clean exit."""
from __future__ import annotations

import time
from itertools import pairwise

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from node_process import node_process, read_log
from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS, stamp_to_s
from policy_distill_ros.sim.frame import EPISODE_LABELS

pytestmark = pytest.mark.dds

JOINTS = ["hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4"]
DISCOVERY_TIMEOUT_S = 15.0


class Driver:
    """Test-side peer of sim_node: records what it publishes, sends policy commands."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("sim_test_driver", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.joint_states: list[JointState] = []
        self.episodes: list[dict] = []
        self.arrays: dict[str, list[Float64MultiArray]] = {}
        self.clock: list[float] = []
        n = self.node
        n.create_subscription(JointState, "joint_states", self.joint_states.append, SENSOR_QOS)
        events_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        n.create_subscription(Float64MultiArray, "episode", self._on_episode, events_qos)
        n.create_subscription(Clock, "/clock", lambda m: self.clock.append(stamp_to_s(m.clock)),
                              SENSOR_QOS)
        for topic in ("privileged/contact_forces", "privileged/dynamics"):
            self.arrays[topic] = []
            n.create_subscription(Float64MultiArray, topic, self.arrays[topic].append,
                                  SENSOR_QOS)
        self.command_pub = n.create_publisher(Float64MultiArray, "policy_command", COMMAND_QOS)

    def _on_episode(self, msg: Float64MultiArray) -> None:
        labels = msg.layout.dim[0].label.split(",")
        assert tuple(labels) == EPISODE_LABELS
        self.episodes.append(dict(zip(labels, msg.data, strict=True)))

    def spin_until(self, condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def send(self, values, labels=None) -> None:
        msg = Float64MultiArray()
        if labels:
            msg.layout.dim = [MultiArrayDimension(label=",".join(labels), size=len(labels),
                                                  stride=len(labels))]
        msg.data = [float(v) for v in values]
        self.command_pub.publish(msg)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def driver():
    d = Driver()
    yield d
    d.close()


def stamps(msgs) -> list[float]:
    return [stamp_to_s(m.header.stamp) for m in msgs]


def new_frame_count(driver: Driver) -> int:
    return len(set(stamps(driver.joint_states)))


def test_lockstep_one_frame_per_command(driver):
    params = dict(mode="lockstep", seed=3, max_episode_steps=500, lockstep_timeout_s=1.0,
                  motor_strength_range=[1.0, 1.0], reset_noise_scale=0.0)
    with node_process("sim_node", "sim_node", params) as proc:
        assert driver.spin_until(lambda: driver.joint_states and
                                 driver.command_pub.get_subscription_count() > 0,
                                 DISCOVERY_TIMEOUT_S), read_log(proc)
        n_commands = 10
        answered: set[float] = set()
        # Answer each new frame once: commands in sim joint order, unlabelled.
        while len(answered) < n_commands:
            assert driver.spin_until(lambda: stamps(driver.joint_states)[-1] not in answered,
                                     10.0), read_log(proc)
            answered.add(stamps(driver.joint_states)[-1])
            driver.send(np.full(8, 0.1 * len(answered)))
        assert driver.spin_until(lambda: new_frame_count(driver) == n_commands + 1, 10.0)
        time.sleep(0.3)  # nothing more may come without a command, except a re-published frame
        driver.spin_until(lambda: False, 0.3)
        frame_stamps = sorted(set(stamps(driver.joint_states)))
        assert len(frame_stamps) == n_commands + 1
        np.testing.assert_allclose(np.diff(frame_stamps), 0.05, atol=1e-6)
        assert all(list(m.name) == JOINTS for m in driver.joint_states)

        assert driver.spin_until(lambda: len({e["step"] for e in driver.episodes})
                                 == n_commands + 1, 5.0)
        assert {e["episode_id"] for e in driver.episodes} == {0.0}
        for e in driver.episodes:
            assert e["stamp_s"] == pytest.approx(0.05 * e["step"], abs=1e-9)
        assert driver.clock and max(driver.clock) == pytest.approx(frame_stamps[-1])

        # The last command (1.0 on every joint) shows as effort: gear 150 x strength 1.
        np.testing.assert_allclose(driver.joint_states[-1].effort, 150.0)

        # A wrong-size command is refused with a warning; the sim does not step.
        before = new_frame_count(driver)
        driver.send(np.zeros(7))
        driver.spin_until(lambda: False, 0.5)
        assert new_frame_count(driver) == before
        assert driver.spin_until(lambda: "policy_command ignored" in read_log(proc), 5.0)
        assert "7 values, expected 8" in read_log(proc)

        # A labelled command is mapped by name: reversed labels, only hip_1 driven.
        labels = list(reversed(JOINTS))
        values = [0.5 if name == "hip_1" else 0.0 for name in labels]
        driver.send(values, labels)
        assert driver.spin_until(lambda: new_frame_count(driver) == before + 1, 10.0)
        last = driver.joint_states[-1]
        effort = dict(zip(last.name, last.effort, strict=True))
        assert effort.pop("hip_1") == pytest.approx(75.0)
        assert all(v == 0.0 for v in effort.values())

        dynamics = driver.arrays["privileged/dynamics"][-1]
        assert dynamics.layout.dim[0].label.split(",")[:3] == ["friction", "payload_kg",
                                                               "motor_strength"]
        assert dynamics.data[2] == pytest.approx(1.0)
        contact = driver.arrays["privileged/contact_forces"][-1]
        assert contact.layout.dim[0].label == "foot_1,foot_2,foot_3,foot_4"
        assert len(contact.data) == 4


def test_lockstep_republishes_frame_for_a_late_subscriber(driver):
    """Nobody answers: the same frame (same stamp) keeps coming, the sim does not step."""
    params = dict(mode="lockstep", lockstep_timeout_s=0.2)
    with node_process("sim_node", "sim_node", params) as proc:
        assert driver.spin_until(lambda: len(driver.joint_states) >= 3, DISCOVERY_TIMEOUT_S), \
            read_log(proc)
        assert set(stamps(driver.joint_states)) == {0.0}


def test_realtime_publishes_at_the_control_rate(driver):
    with node_process("sim_node", "sim_node", dict(mode="realtime", seed=1)) as proc:
        assert driver.spin_until(lambda: driver.joint_states, DISCOVERY_TIMEOUT_S), read_log(proc)
        start_count, start = len(driver.joint_states), time.monotonic()
        driver.spin_until(lambda: False, 3.0)
        rate_hz = (len(driver.joint_states) - start_count) / (time.monotonic() - start)
        assert 10.0 < rate_hz < 30.0, rate_hz  # loose: 20 Hz nominal on a loaded machine
        frame_stamps = stamps(driver.joint_states)
        assert all(b > a for a, b in pairwise(frame_stamps))


def test_runs_the_requested_episodes_then_exits_cleanly(driver):
    params = dict(mode="realtime", max_episode_steps=5, num_episodes=2, real_time_factor=4.0,
                  reset_noise_scale=0.0)
    with node_process("sim_node", "sim_node", params) as proc:
        assert driver.spin_until(lambda: proc.poll() is not None, 30.0), read_log(proc)
        assert proc.returncode == 0, read_log(proc)
        driver.spin_until(lambda: False, 0.2)
        assert "finished 2 episode(s)" in read_log(proc)


def test_bad_parameters_fail_at_start_naming_the_parameter(driver):
    with node_process("sim_node", "sim_node", dict(friction_range=[1.5, 0.5])) as proc:
        assert driver.spin_until(lambda: proc.poll() is not None, 30.0)
        assert proc.returncode != 0
        assert "friction_range" in read_log(proc)
