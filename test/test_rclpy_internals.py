"""Pins the rclpy behaviour that nodes/rclpy_internals.py relies on beyond rclpy's public API.

An rclpy upgrade that changes any of it fails here first, with the piece named, instead of the
hot path silently taking its slower public-API fallback.
"""
from __future__ import annotations

import time

from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from policy_distill_ros.nodes.rclpy_internals import HotPathLog, LoopServed, TakeLoop

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                      reliability=ReliabilityPolicy.RELIABLE)


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def publish_until_matched(node, pub) -> None:
    assert wait_for(lambda: pub.get_subscription_count() > 0), "subscription never matched"


def test_wait_set_and_take_message_binding(ros_node):
    """TakeLoop's wait-set path: WaitSet(...) over subscription handles, ready entities by
    pointer, take_message(type, raw) -> (bytes, info with source/received timestamps) | None."""
    sub = ros_node.create_subscription(JointState, "pin_ws", lambda msg: None, RELIABLE, raw=True)
    pub = ros_node.create_publisher(JointState, "pin_ws", RELIABLE)
    publish_until_matched(ros_node, pub)
    wait_set = _rclpy.WaitSet(1, 1, 0, 0, 0, 0, ros_node.context.handle)
    guard = ros_node.create_guard_condition(lambda: None)
    pub.publish(JointState(name=["a"], position=[1.5]))
    with sub.handle, guard.handle:
        ready = []
        deadline = time.monotonic() + 10.0
        while not ready and time.monotonic() < deadline:
            wait_set.clear_entities()
            wait_set.add_subscription(sub.handle)
            wait_set.add_guard_condition(guard.handle)
            wait_set.wait(100_000_000)
            ready = wait_set.get_ready_entities("subscription")
        assert sub.handle.pointer in ready
        taken = sub.handle.take_message(sub.msg_type, sub.raw)
        assert isinstance(taken, tuple) and isinstance(taken[0], bytes)
        info = taken[1]
        assert isinstance(info["source_timestamp"], int) and info["source_timestamp"] > 0
        assert abs(info["received_timestamp"] - time.time_ns()) < 5e9  # system clock, ns
        assert sub.handle.take_message(sub.msg_type, sub.raw) is None  # nothing left
        guard.trigger()  # a guard condition wakes the wait
        wait_set.clear_entities()
        wait_set.add_subscription(sub.handle)
        wait_set.add_guard_condition(guard.handle)
        t0 = time.monotonic()
        wait_set.wait(5_000_000_000)
        assert time.monotonic() - t0 < 2.0
        assert guard.handle.pointer in wait_set.get_ready_entities("guard_condition")
    assert callable(sub.callback)


def test_executor_never_runs_a_loop_served_subscription(ros_node):
    """LoopServed: the executor filters entities through the group's can_execute, so a sensor
    subscription on the node (listed by `ros2 node info`) is served by the TakeLoop only."""
    by_executor, by_loop = [], []
    group = LoopServed()
    sub = ros_node.create_subscription(JointState, "pin_group", by_executor.append, RELIABLE,
                                       callback_group=group)
    pub = ros_node.create_publisher(JointState, "pin_group", RELIABLE)
    assert sub in list(ros_node.subscriptions)
    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)
    publish_until_matched(ros_node, pub)
    pub.publish(JointState(name=["a"]))
    for _ in range(20):
        executor.spin_once(timeout_sec=0.02)
    assert by_executor == []
    sub.callback = by_loop.append  # what TakeLoop reads when it starts
    loop = TakeLoop(ros_node, [sub], "pin_loop", group=group)
    assert loop._executor is None and loop._thread is not None, "wait-set path unavailable"
    loop.start()
    try:
        assert wait_for(lambda: len(by_loop) == 1), "TakeLoop did not serve the subscription"
        pub.publish(JointState(name=["b"]))
        assert wait_for(lambda: len(by_loop) == 2)
        for _ in range(10):
            executor.spin_once(timeout_sec=0.02)
        assert by_executor == [] and by_loop[1].name == ["b"]
    finally:
        loop.close()
        executor.shutdown(timeout_sec=1.0)


def test_take_loop_hands_the_message_info_to_a_two_argument_callback(ros_node):
    infos = []
    sub = ros_node.create_subscription(JointState, "pin_info",
                                       lambda msg, info=None: infos.append(info), RELIABLE)
    pub = ros_node.create_publisher(JointState, "pin_info", RELIABLE)
    publish_until_matched(ros_node, pub)
    loop = TakeLoop(ros_node, [sub], "pin_info_loop").start()
    try:
        pub.publish(JointState())
        assert wait_for(lambda: infos)
        assert infos[0]["source_timestamp"] > 0
    finally:
        loop.close()


def test_hot_path_log_binding_is_the_rcutils_one(ros_node):
    """HotPathLog: rclpy_logging_rcutils_log(severity, name, text, function, file, line)."""
    assert callable(getattr(_rclpy, "rclpy_logging_rcutils_log", None))
    log = HotPathLog(ros_node.get_logger())
    log.info("pinning the rcutils binding")
    assert log._emit is not None, "HotPathLog fell back to the public logger methods"



def test_passive_subscriptions_are_taken_first_when_the_waited_one_wakes_the_loop(ros_node):
    """One wake-up per sensor frame: the imu never wakes the thread, it is taken (with its rmw
    receive time) just before the joint_states message that does."""
    order = []
    imu_sub = ros_node.create_subscription(
        JointState, "pin_imu", lambda msg, info=None: order.append(("imu", info)), RELIABLE)
    joints_sub = ros_node.create_subscription(
        JointState, "pin_joints", lambda msg: order.append(("joints", None)), RELIABLE)
    imu_pub = ros_node.create_publisher(JointState, "pin_imu", RELIABLE)
    joints_pub = ros_node.create_publisher(JointState, "pin_joints", RELIABLE)
    publish_until_matched(ros_node, imu_pub)
    publish_until_matched(ros_node, joints_pub)
    loop = TakeLoop(ros_node, [joints_sub], "pin_passive", passive=[imu_sub]).start()
    try:
        imu_pub.publish(JointState())
        time.sleep(0.3)
        assert order == [], "a passive subscription woke the loop"
        joints_pub.publish(JointState())
        assert wait_for(lambda: len(order) == 2)
        assert [name for name, _ in order] == ["imu", "joints"]
        received_ns = order[0][1]["received_timestamp"]
        assert 0.2e9 < time.time_ns() - received_ns < 10e9  # when it arrived, not when taken
        imu_pub.publish(JointState())
        time.sleep(0.2)
        loop.take_passive()  # a timer loop takes on its own thread
        assert [name for name, _ in order] == ["imu", "joints", "imu"]
    finally:
        loop.close()
