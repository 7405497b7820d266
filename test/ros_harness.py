"""Test-side ROS peer for the policy-node end-to-end tests: fake robot sensors, recorded outputs.

Runs a real rclpy node in the test process (its own executor thread) that publishes JointState
(names in a shuffled order, extra joints included) and Imu with stamps it remembers, and records
everything the nodes under test publish. Nothing here reuses the package's node code paths.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64, Float64MultiArray

BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.BEST_EFFORT)
RECORD = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                    reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               period_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(period_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


# After a new client sees the service, the server may not have matched the client's response
# reader yet (discovery runs both ways, slower on a loaded machine) and would drop the answer.
CLIENT_SETTLE_S = 0.5


@contextmanager
def spun_node(name: str):
    """A node in an rclpy context of its own, spun by an executor thread: for a test that calls
    services or watches the graph while the nodes under test run as processes."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def call_service(node, srv_type, name: str, request, timeout_s: float = 15.0,
                 attempt_s: float = 3.0, settle_s: float = 0.0) -> tuple:
    """(response, resends): call a service from `node` (spun elsewhere), re-sending when
    unanswered: a client may first match the server of a node that just exited (its discovery
    data outlives it), or its answer may be dropped before discovery completes both ways. A
    non-idempotent service waits `settle_s` (CLIENT_SETTLE_S) before its first request, so
    that a re-send is rare, and its caller checks `resends`."""
    client = node.create_client(srv_type, name)
    try:
        deadline = time.monotonic() + timeout_s
        wait_until(client.service_is_ready, timeout_s, f"service {name}")
        time.sleep(settle_s)
        resends = 0
        while True:
            future = client.call_async(request)
            try:
                wait_until(future.done, min(attempt_s, deadline - time.monotonic()),
                           f"response of {name}")
                return future.result(), resends
            except AssertionError:
                client.remove_pending_request(future)
                if time.monotonic() >= deadline - 0.1:
                    raise
                resends += 1
    finally:
        node.destroy_client(client)


class RobotPeer:
    """Publishes sensors at `rate_hz` from a timer; records commands, echoes, diagnostics."""

    def __init__(self, joint_order: Sequence[str], rate_hz: float = 100.0,
                 namespace: str = "") -> None:
        self.node = rclpy.create_node("robot_peer", namespace=namespace)
        self.joint_order = list(joint_order)
        self.position = np.zeros(len(joint_order))
        self.velocity = np.zeros(len(joint_order))
        self.angular_velocity = np.zeros(3)
        self.publish_joints = True
        self.publish_imu = True
        self.stamp_offset_s = 0.0
        self.sent_stamps: list[tuple] = []   # (sec, nanosec) of every sensor publication
        self.lock = threading.Lock()
        self.commands: list[tuple] = []      # (receive_s, data)
        self.echoes: list[JointState] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.floats: dict[str, list[float]] = {}
        self._js_pub = self.node.create_publisher(JointState, "joint_states", BEST_EFFORT)
        self._imu_pub = self.node.create_publisher(Imu, "imu", BEST_EFFORT)
        self.node.create_subscription(Float64MultiArray, "policy_command", self._on_command,
                                      RECORD)
        self.node.create_subscription(JointState, "policy_action", self._on_echo, RECORD)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RECORD)
        self.node.create_timer(1.0 / rate_hz, self._publish)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _publish(self) -> None:
        stamp_ns = self.node.get_clock().now().nanoseconds + int(self.stamp_offset_s * 1e9)
        sec, nanosec = divmod(stamp_ns, 1_000_000_000)
        if self.publish_joints:
            msg = JointState(name=self.joint_order, position=self.position.tolist(),
                             velocity=self.velocity.tolist())
            msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
            self._js_pub.publish(msg)
        if self.publish_imu:
            imu = Imu()
            imu.header.stamp.sec, imu.header.stamp.nanosec = sec, nanosec
            imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = \
                (float(v) for v in self.angular_velocity)
            imu.orientation.w = 1.0
            self._imu_pub.publish(imu)
        if self.publish_joints or self.publish_imu:
            with self.lock:
                self.sent_stamps.append((sec, nanosec))

    def _on_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.commands.append((self.now_s(), np.array(msg.data)))

    def _on_echo(self, msg: JointState) -> None:
        with self.lock:
            self.echoes.append(msg)

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def record_floats(self, topic: str) -> None:
        self.floats[topic] = []
        self.node.create_subscription(Float64, topic,
                                      lambda m: self.floats[topic].append(m.data), RECORD)

    def echo_count(self) -> int:
        with self.lock:
            return len(self.echoes)

    def echoes_since(self, index: int) -> list[JointState]:
        with self.lock:
            return list(self.echoes[index:])

    def call(self, srv_type, name: str, request, timeout_s: float = 15.0,
             attempt_s: float = 3.0):
        return call_service(self.node, srv_type, name, request, timeout_s, attempt_s)[0]

    def publisher(self, msg_type, topic: str, qos=LATCHED):
        return self.node.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()


def echo_stamp_s(msg: JointState) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def echo_stamp(msg: JointState) -> tuple:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


def is_fallback(msg: JointState) -> bool:
    return msg.header.frame_id == "fallback"


def wait_for_log(proc_node, text: str, timeout_s: float = 10.0) -> str:
    wait_until(lambda: text in proc_node.read_log(), timeout_s, f"log line {text!r}")
    return proc_node.read_log()


__all__ = ["RobotPeer", "wait_until", "echo_stamp_s", "echo_stamp", "is_fallback", "wait_for_log",
           "BEST_EFFORT", "RECORD", "LATCHED"]
