"""The policy node a user writes first, as the benchmark's point of comparison.

Plain rclpy Node, default executor (`rclpy.spin`), everything in the joint_states callback:
build the observation with Python/numpy (joints by name, the newest Imu, a history deque, the last
action), run a torch MLP, publish the command and the stamped echo. Same observation layout and
network size as the student in bench/student_latency.py; the weights are random (latency only).

    python bench/baseline_node.py --ros-args -p joints:="j0,j1" -p hidden:="256,128"
"""
from __future__ import annotations

import collections
import sys

import numpy as np
import rclpy
import torch
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS


class BaselineNode(Node):
    def __init__(self) -> None:
        super().__init__("baseline_node")
        self.joints = self.declare_parameter("joints", "j0").value.split(",")
        hidden = [int(h) for h in self.declare_parameter("hidden", "256,128").value.split(",")]
        self.history_length = self.declare_parameter("history_length", 3).value
        threads = self.declare_parameter("torch_threads", 0).value  # 0: torch's default
        if threads > 0:
            torch.set_num_threads(threads)
        n = len(self.joints)
        step_size = n + n + 3 + 4 + 3 + n  # pos, vel, ang vel, orientation, command, action
        layers, width = [], step_size * self.history_length
        for h in hidden:
            layers += [torch.nn.Linear(width, h), torch.nn.ELU()]
            width = h
        layers.append(torch.nn.Linear(width, n))
        self.net = torch.nn.Sequential(*layers).eval()
        self.history = collections.deque(maxlen=self.history_length)
        self.last_action = np.zeros(n)
        self.command = np.zeros(3)  # velocity command term (no operator in the benchmark)
        self.imu = None
        self.command_pub = self.create_publisher(Float64MultiArray, "policy_command", COMMAND_QOS)
        self.echo_pub = self.create_publisher(JointState, "policy_action", COMMAND_QOS)
        self.create_subscription(Imu, "imu", self.on_imu, SENSOR_QOS)
        self.create_subscription(JointState, "joint_states", self.on_joints, SENSOR_QOS)

    def on_imu(self, msg: Imu) -> None:
        self.imu = msg

    def on_joints(self, msg: JointState) -> None:
        if self.imu is None:
            return
        index = [msg.name.index(j) for j in self.joints]
        w, o = self.imu.angular_velocity, self.imu.orientation
        step = np.concatenate([np.array(msg.position)[index], np.array(msg.velocity)[index],
                               [w.x, w.y, w.z], [o.x, o.y, o.z, o.w], self.command,
                               self.last_action])
        self.history.append(step)
        while len(self.history) < self.history_length:
            self.history.appendleft(step)
        obs = torch.tensor(np.concatenate(self.history), dtype=torch.float32).unsqueeze(0)
        with torch.no_grad():
            action = self.net(obs)[0].numpy().astype(np.float64)
        self.last_action = action
        self.command_pub.publish(Float64MultiArray(data=action.tolist()))
        echo = JointState(name=self.joints, position=action.tolist())
        echo.header.stamp = msg.header.stamp
        self.echo_pub.publish(echo)


def main(args=None) -> None:
    rclpy.init(args=args)
    node = BaselineNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main(sys.argv)
