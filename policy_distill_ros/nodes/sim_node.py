"""sim_node: the embedded MuJoCo simulator on ROS topics.

Publishes every SensorFrame as standard messages stamped with sim time, plus `/clock`, and takes
`policy_command`. Modes: `realtime` steps at the control rate holding the newest command;
`lockstep` publishes a frame and steps once per command received (re-publishing the frame after
`lockstep_timeout_s` of silence, so a late subscriber cannot deadlock it). Sim time continues
across episodes unless `reset_time_on_episode` (the time-jumps-backwards case).
`paused` (settable at run time: `ros2 param set /sim_node paused false`) holds everything, the
first frame included, so a recorder can subscribe before the first step.
Odometry note: twist.linear is world-frame velocity (MuJoCo free joint), twist.angular is in
the base frame; frame ids say so.
"""
from __future__ import annotations

import sys

import numpy as np
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from policy_distill_ros.core.contract import POLICY_COMMAND, ns_to_s
from policy_distill_ros.nodes.ros_common import (
    COMMAND_QOS,
    SENSOR_QOS,
    declare,
    s_to_stamp,
    spin_node,
    warn_unknown_parameters,
)
from policy_distill_ros.sim import frame as topics
from policy_distill_ros.sim.ant import AntSim
from policy_distill_ros.sim.config import ROBOTS, sim_config_from_params
from policy_distill_ros.sim.runner import CommandError, CommandMapper, SimRunner

RELIABLE_EVENTS_QOS = COMMAND_QOS  # reliable keep-last: episode info and /clock must not drop
EXIT_LINGER_S = 0.5                # after the last episode, let reliable messages drain


def _vector3(target, values) -> None:
    target.x, target.y, target.z = (float(v) for v in values)


def _quaternion(target, xyzw) -> None:
    target.x, target.y, target.z, target.w = (float(v) for v in xyzw)


def _labelled_array(values, labels) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=",".join(labels), size=len(labels),
                                          stride=len(labels))]
    msg.data = [float(v) for v in values]
    return msg


class SimNode(Node):
    """The simulator behind ROS topics (see the module docstring); the physics is `sim.AntSim`,
    so this class only maps parameters, frames and commands to and from messages."""

    def __init__(self) -> None:
        super().__init__("sim_node")
        robot = declare(self, "robot", "ant", "simulated robot", choices=ROBOTS)
        seed = declare(self, "seed", 0, "seed of all randomness", min_value=0)
        self.mode = declare(self, "mode", "realtime", "realtime | lockstep",
                            choices=("realtime", "lockstep"))
        num_episodes = declare(self, "num_episodes", 0, "episodes to run, 0 = forever",
                               min_value=0)
        self.timeout_s = declare(self, "lockstep_timeout_s", 1.0,
                                 "lockstep: re-publish the frame after this long without a "
                                 "command", min_value=0.01)
        rtf = declare(self, "real_time_factor", 1.0, "realtime: sim speed / wall-clock speed",
                      min_value=0.01, max_value=1000.0)
        self.publish_privileged = declare(self, "publish_privileged", True,
                                          "publish privileged/* ground-truth topics")
        self.paused = declare(self, "paused", False, "hold the simulation: no frames, no "
                              "steps; set false to start (lets recorders subscribe first)")
        self.world_frame = declare(self, "world_frame_id", "world", "odometry parent frame")
        self.base_frame = declare(self, "base_frame_id", "torso", "robot base / IMU frame")
        params = {"robot": robot,
                  "max_episode_steps": declare(self, "max_episode_steps", 1000,
                                               "steps before truncation", min_value=1),
                  "frame_skip": declare(self, "frame_skip", 5,
                                        "0.01 s physics steps per control step", min_value=1),
                  "reset_noise_scale": declare(self, "reset_noise_scale", 0.1,
                                               "initial-state noise", min_value=0.0),
                  "ctrl_cost_weight": declare(self, "ctrl_cost_weight", 0.1,
                                              "reward: weight of the action cost",
                                              min_value=0.0),
                  "vertical_velocity_cost_weight": declare(
                      self, "vertical_velocity_cost_weight", 0.0,
                      "reward: weight of the torso's squared vertical velocity", min_value=0.0),
                  "tilt_cost_weight": declare(self, "tilt_cost_weight", 0.0,
                                              "reward: weight of 1 - up_z of the torso",
                                              min_value=0.0),
                  "fall_cost": declare(self, "fall_cost", 0.0, "reward: cost of the step "
                                       "that ends an episode unhealthy", min_value=0.0),
                  "forward_speed_cap_mps": declare(
                      self, "forward_speed_cap_mps", 0.0, "reward: forward speed (m/s) above "
                      "which the forward reward stops growing; 0 = no cap", min_value=0.0),
                  "healthy_z_range": list(declare(self, "healthy_z_range", [0.3, 2.0],
                                                  "[min, max] torso height (m) of a healthy ant")),
                  "terminate_when_unhealthy": declare(self, "terminate_when_unhealthy", True,
                                                      "end episodes when the ant falls"),
                  "reset_time_on_episode": declare(self, "reset_time_on_episode", False,
                                                   "restart sim time at 0 each episode")}
        for name, default, what in (("friction_range", [0.6, 1.2], "sliding friction"),
                                    ("payload_kg_range", [0.0, 0.3], "torso payload, kg"),
                                    ("motor_strength_range", [0.8, 1.2], "actuator gear scale")):
            params[name] = list(declare(self, name, default, f"[low, high] of the {what}, "
                                        "sampled per episode"))
        params["action_delay_steps"] = list(declare(
            self, "action_delay_steps", [0, 0], "[min, max] command delay in control steps"))
        for name in ("joint_position_std", "joint_velocity_std", "angular_velocity_std",
                     "linear_acceleration_std"):
            params[f"sensor_noise.{name}"] = declare(self, f"sensor_noise.{name}", 0.0,
                                                     "Gaussian sensor noise std", min_value=0.0)
        try:
            config = sim_config_from_params(params)
        except ValueError as e:
            raise ValueError(f"sim_node parameters: {e}") from None
        self.sim = AntSim(config, seed)
        self.runner = SimRunner(self.sim, num_episodes)
        command_joints = declare(self, "command_joints", list(self.sim.joint_names),
                                 "joint order of unlabelled policy_command arrays")
        self.mapper = CommandMapper(self.sim.joint_names, command_joints)
        warn_unknown_parameters(self)
        self.command = np.zeros(self.sim.num_joints)

        self.pub_joints = self.create_publisher(JointState, topics.JOINT_STATES, SENSOR_QOS)
        self.pub_imu = self.create_publisher(Imu, topics.IMU, SENSOR_QOS)
        self.pub_odom = self.create_publisher(Odometry, topics.ODOMETRY, SENSOR_QOS)
        self.pub_contact = self.create_publisher(Float64MultiArray, topics.CONTACT_FORCES,
                                                 SENSOR_QOS)
        self.pub_dynamics = self.create_publisher(Float64MultiArray, topics.DYNAMICS, SENSOR_QOS)
        self.pub_episode = self.create_publisher(Float64MultiArray, topics.EPISODE,
                                                 RELIABLE_EVENTS_QOS)
        self.pub_clock = self.create_publisher(Clock, "/clock", RELIABLE_EVENTS_QOS)
        self.create_subscription(Float64MultiArray, POLICY_COMMAND, self._on_command,
                                 COMMAND_QOS)
        self._last_publish_ns = 0
        self._stopping = False
        first = self.runner.start()
        if not self.paused:
            self._publish(first)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.mode == "realtime":
            self.create_timer(config.control_dt_s / rtf, self._advance)
        else:
            self.create_timer(min(self.timeout_s, 0.1), self._republish_if_idle)
        self.get_logger().info(
            f"sim_node: {robot}, mode {self.mode}, {config.rate_hz:g} Hz control, seed {seed}, "
            f"episodes {num_episodes or 'forever'}, joints {list(self.sim.joint_names)}")

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "paused" and param.type_ == Parameter.Type.BOOL:
                resumed = self.paused and not param.value
                self.paused = bool(param.value)
                if resumed and self.runner.frame is not None and not self._stopping:
                    self.get_logger().info("resumed")
                    self._publish(self.runner.frame)
        return SetParametersResult(successful=True)

    def _on_command(self, msg: Float64MultiArray) -> None:
        if self.paused:
            return
        labels = msg.layout.dim[0].label.split(",") if msg.layout.dim and \
            msg.layout.dim[0].label else None
        try:
            self.command = self.mapper.to_sim_order(msg.data, labels)
        except CommandError as e:
            self.get_logger().warning(f"policy_command ignored: {e}", throttle_duration_sec=1.0)
            return
        if self.mode == "lockstep":
            self._advance()

    def _advance(self) -> None:
        if self._stopping or self.paused:
            return
        frame = self.runner.advance(self.command)
        if frame is not None:
            self._publish(frame)
        if self.runner.finished:
            self._stopping = True
            self.get_logger().info(f"finished {self.runner.episodes_done} episode(s); exiting")
            self.create_timer(EXIT_LINGER_S, self._exit)

    def _republish_if_idle(self) -> None:
        idle_ns = self.get_clock().now().nanoseconds - self._last_publish_ns
        if not self._stopping and not self.paused and ns_to_s(idle_ns) > self.timeout_s and \
                self.runner.frame:
            self._publish(self.runner.frame)

    def _exit(self) -> None:
        raise SystemExit(0)

    def _publish(self, frame: topics.SensorFrame) -> None:
        self._last_publish_ns = self.get_clock().now().nanoseconds
        stamp = s_to_stamp(frame.stamp_s)
        self.pub_clock.publish(Clock(clock=stamp))
        self.pub_episode.publish(_labelled_array(frame.episode_values(), topics.EPISODE_LABELS))
        if self.publish_privileged:
            self._publish_privileged(frame, stamp)
        imu = Imu()
        imu.header.stamp, imu.header.frame_id = stamp, self.base_frame
        f = frame.topics[topics.IMU].fields
        _quaternion(imu.orientation, f["orientation"])
        _vector3(imu.angular_velocity, f["angular_velocity"])
        _vector3(imu.linear_acceleration, f["linear_acceleration"])
        self.pub_imu.publish(imu)
        js = JointState()  # last: a policy that triggers on joint_states has the rest already
        js.header.stamp = stamp
        sample = frame.topics[topics.JOINT_STATES]
        js.name = list(sample.names["position"])
        js.position, js.velocity, js.effort = (sample.fields[k].tolist()
                                               for k in ("position", "velocity", "effort"))
        self.pub_joints.publish(js)

    def _publish_privileged(self, frame: topics.SensorFrame, stamp) -> None:
        odom = Odometry()
        odom.header.stamp, odom.header.frame_id = stamp, self.world_frame
        odom.child_frame_id = self.base_frame
        f = frame.topics[topics.ODOMETRY].fields
        _vector3(odom.pose.pose.position, f["pose.pose.position"])
        _quaternion(odom.pose.pose.orientation, f["pose.pose.orientation"])
        _vector3(odom.twist.twist.linear, f["twist.twist.linear"])
        _vector3(odom.twist.twist.angular, f["twist.twist.angular"])
        self.pub_odom.publish(odom)
        for pub, topic in ((self.pub_contact, topics.CONTACT_FORCES),
                           (self.pub_dynamics, topics.DYNAMICS)):
            sample = frame.topics[topic]
            pub.publish(_labelled_array(sample.fields["data"], sample.names["data"]))

    def destroy_node(self) -> None:
        sim = getattr(self, "sim", None)  # absent when a bad parameter stopped __init__
        if sim is not None:
            sim.close()
        super().destroy_node()


def main(args=None) -> int:
    """`ros2 run policy_distill_ros sim_node`: exit code 0 on Ctrl-C or SIGTERM (spin_node)."""
    return spin_node(SimNode, args)


if __name__ == "__main__":
    sys.exit(main())
