"""sensor_stream_node: publishes a synthetic JointState + Imu stream at a fixed rate.

For running a deployed student without a robot or simulator (`policy-distill deploy --source
stream`) and for benchmarks: the signals come from `sim.sensor_stream.SensorStream`, the joint
names from the `joint_names` parameter or, when that is empty, from the policy file named by
`model_path` (every joint its observation reads from `joint_states`). Stamps are the node clock
(wall clock, or /clock under use_sim_time) taken just before publishing; the Imu goes out
first, so a policy triggered by `joint_states` always has the IMU of the same instant.
A dedicated absolute-time thread (core LoopTimer) keeps the rate steady.
"""
from __future__ import annotations

import array
import sys
import time

from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState

from policy_distill_ros.core.contract import JOINT_STATES, ns_to_s, ns_to_sec_nanosec
from policy_distill_ros.core.loop_timer import LoopTimer
from policy_distill_ros.core.policy_file import read_metadata
from policy_distill_ros.nodes.ros_common import (
    SENSOR_QOS,
    declare,
    spin_node,
    warn_unknown_parameters,
)
from policy_distill_ros.sim.sensor_stream import SensorStream, StreamConfig


def joints_read_by(model_path: str) -> list[str]:
    """Joint names a policy file's observation reads from `joint_states`, first-seen order."""
    spec = read_metadata(model_path).observation_spec
    names: list[str] = []
    for term in spec.terms:
        if term.topic == JOINT_STATES and term.joints is not None:
            names += [j for j in term.joints if j not in names]
    if not names:
        raise ValueError(f"model_path {model_path!r}: its observation reads no joints from "
                         f"'{JOINT_STATES}'; set the joint_names parameter")
    return names


class SensorStreamNode(Node):
    """Publishes `sim.sensor_stream.SensorStream` samples from a LoopTimer thread, off the
    executor, so a busy callback cannot shift the stream's rate."""

    def __init__(self) -> None:
        super().__init__("sensor_stream_node")
        joint_names = list(declare(self, "joint_names", [""], "joints to publish; [''] = from "
                                   "model_path"))
        model_path = declare(self, "model_path", "", "policy file whose joints to publish")
        self.rate_hz = declare(self, "rate_hz", 500.0, "publishing rate", min_value=1.0,
                               max_value=10000.0)
        config = StreamConfig(
            joint_names=[n for n in joint_names if n] or (
                joints_read_by(model_path) if model_path else []),
            gait_frequency_hz=declare(self, "gait_frequency_hz", 1.5, "joint swing frequency",
                                      min_value=0.0),
            joint_amplitude_rad=declare(self, "joint_amplitude_rad", 0.3, "joint swing",
                                        min_value=0.0),
            base_tilt_rad=declare(self, "base_tilt_rad", 0.05, "base roll/pitch rocking",
                                  min_value=0.0),
            noise_std=declare(self, "noise_std", 0.0, "noise on joint velocity and IMU rate",
                              min_value=0.0),
            seed=declare(self, "seed", 0, "noise seed", min_value=0))
        self.stream = SensorStream(config)
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        self._joints = JointState(name=list(config.joint_names))
        self._imu = Imu()
        self._imu.header.frame_id = declare(self, "imu_frame_id", "base_link", "Imu frame")
        warn_unknown_parameters(self)
        self._joints_pub = self.create_publisher(JointState, JOINT_STATES, SENSOR_QOS)
        self._imu_pub = self.create_publisher(Imu, "imu", SENSOR_QOS)
        self.published = 0
        self._t0_ns = time.monotonic_ns()
        self._loop = LoopTimer.at_rate(self.rate_hz, self._publish, name="sensor_stream",
                                       on_error=self._on_error)
        self._loop.start()
        self.get_logger().info(f"publishing {JOINT_STATES} ({len(config.joint_names)} "
                               f"joints: {', '.join(config.joint_names)}) + imu at "
                               f"{self.rate_hz:g} Hz")

    def _stamp_ns(self) -> int:
        return self.get_clock().now().nanoseconds if self._sim_time else time.time_ns()

    def _publish(self) -> None:
        sample = self.stream.sample(ns_to_s(time.monotonic_ns() - self._t0_ns))
        joints, imu = self._joints, self._imu
        joints.position = array.array("d", sample["position"].tobytes())
        joints.velocity = array.array("d", sample["velocity"].tobytes())
        joints.effort = array.array("d", sample["effort"].tobytes())
        o, w, a = sample["orientation"], sample["angular_velocity"], \
            sample["linear_acceleration"]
        imu.orientation.x, imu.orientation.y, imu.orientation.z, imu.orientation.w = \
            float(o[0]), float(o[1]), float(o[2]), float(o[3])
        imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = \
            float(w[0]), float(w[1]), float(w[2])
        imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = \
            float(a[0]), float(a[1]), float(a[2])
        sec, nanosec = ns_to_sec_nanosec(self._stamp_ns())
        imu.header.stamp.sec = joints.header.stamp.sec = sec
        imu.header.stamp.nanosec = joints.header.stamp.nanosec = nanosec
        self._imu_pub.publish(imu)
        self._joints_pub.publish(joints)
        self.published += 1

    def _on_error(self, exc: BaseException) -> None:
        self.get_logger().error(f"publishing failed: {exc!r}", throttle_duration_sec=1.0)

    def destroy_node(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.stop()
            self.get_logger().info(f"published {self.published} samples; loop overruns "
                                   f"{loop.overruns}, skipped ticks {loop.skipped_ticks}")
        super().destroy_node()


def main(args=None) -> int:
    return spin_node(SensorStreamNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
