"""recorder_node over real DDS: what is published is what an independent reader finds.

The node runs as its own process (test/node_process.py); this test publishes standard messages
from its own rclpy node and reads the bag back with our reader and with rosbags' Reader.
"""
from __future__ import annotations

import hashlib
import os
import time

import pytest
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from node_process import node_process, read_log
from policy_distill_ros.recording.bag_reader import bag_info, read_bag, read_bag_raw
from policy_distill_ros.recording.join import join_by_stamp
from policy_distill_ros.recording.recorder_config import KEY_TEACHER_SHA256, KEY_TEACHER_SPEC

pytestmark = pytest.mark.dds

RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
BEST_EFFORT = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.VOLATILE)


def wait_for(predicate, timeout_s: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"recorder exited while waiting for {what}:\n{read_log(proc)}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}" + (f":\n{read_log(proc)}" if proc else ""))


def count_in_bag(bag: str) -> int:
    try:
        return sum(1 for _ in read_bag_raw(bag))
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def joint_state(i: int) -> JointState:
    m = JointState()
    m.header.stamp.sec, m.header.stamp.nanosec = 50 + i // 100, (i % 100) * 10_000_000
    m.name = ["hip_1", "ankle_1"]
    m.position = [0.1 * i, -0.1 * i]
    m.velocity = [1.0, float(i)]
    return m


def imu(i: int) -> Imu:
    m = Imu()
    m.header.stamp.sec = 1000 + i
    m.angular_velocity.y = 0.25 * i
    m.orientation.w = 1.0
    return m


def array(i: int) -> Float64MultiArray:
    m = Float64MultiArray()
    m.data = [float(i), 2.0 * i, -1.0]
    return m


def test_records_three_types_and_closes_on_sigint(ros_node, tmp_path):
    n = 300
    bag = str(tmp_path / "bag")
    teacher = tmp_path / "teacher.safetensors"
    teacher.write_bytes(os.urandom(4096))
    spec = tmp_path / "teacher_spec.yaml"
    spec.write_text("observation: {history_length: 1, terms: []}\n")
    pubs = {"joint_states": ros_node.create_publisher(JointState, "joint_states", RELIABLE),
            "imu": ros_node.create_publisher(Imu, "imu", RELIABLE),
            "vec": ros_node.create_publisher(Float64MultiArray, "vec", RELIABLE),
            "noisy": ros_node.create_publisher(Float64MultiArray, "noisy", BEST_EFFORT)}
    params = {"topics": ["joint_states", "imu", "vec:std_msgs/msg/Float64MultiArray",
                         "noisy"],
              "bag_path": bag, "flush_period_s": 0.2, "teacher_path": str(teacher),
              "teacher_spec_path": str(spec)}
    with node_process("recorder_node", "recorder_node", params) as proc:
        wait_for(lambda: all(p.get_subscription_count() >= 1 for p in pubs.values()), 15.0,
                 "the recorder to subscribe every topic", proc)
        for i in range(n):
            pubs["joint_states"].publish(joint_state(i))
            pubs["imu"].publish(imu(i))
            pubs["vec"].publish(array(i))
            pubs["noisy"].publish(array(-i))
            time.sleep(0.002)
        wait_for(lambda: count_in_bag(bag) >= 3 * n, 15.0, "all reliable messages on disk", proc)
        proc.node.stop()
        assert proc.returncode == 0, read_log(proc)
    log = read_log(proc)
    assert "closed bag" in log
    assert "entry 'vec:std_msgs/msg/Float64MultiArray' uses the deprecated 'topic:Type' form; " \
        "write 'vec=std_msgs/msg/Float64MultiArray'" in log   # the old form still records

    by_topic = {}
    for item in read_bag(bag):
        by_topic.setdefault(item.topic, []).append(item)
    assert [list(m.message.position) for m in (x for x in by_topic["/joint_states"])] == \
        [list(joint_state(i).position) for i in range(n)]
    assert [m.message.header.stamp.sec for m in by_topic["/imu"]] == [1000 + i for i in range(n)]
    assert [m.message.angular_velocity.y for m in by_topic["/imu"]] == [0.25 * i for i in range(n)]
    assert [list(m.message.data) for m in by_topic["/vec"]] == [list(array(i).data)
                                                                for i in range(n)]
    # Best effort on localhost: nearly everything arrives, and what arrives is intact, in order.
    noisy = [m.message.data[0] for m in by_topic["/noisy"]]
    assert len(noisy) >= 0.9 * n and noisy == sorted(noisy, reverse=True)
    log_times = [m.log_time_ns for items in by_topic.values() for m in items]
    assert abs(max(log_times) * 1e-9 - time.time()) < 120, "log time is receive wall time"

    info = bag_info(bag)
    assert info.complete and not info.problems
    assert info.custom_data[KEY_TEACHER_SHA256] == hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert info.custom_data[KEY_TEACHER_SPEC] == spec.read_text()
    from rosbags.rosbag2 import Reader
    with Reader(bag) as reader:
        assert reader.message_count == info.message_count
        assert reader.topics["/imu"].msgtype == "sensor_msgs/msg/Imu"
        qos = reader.topics["/joint_states"].connections[0].ext.offered_qos_profiles
        assert qos and qos[0].reliability.name == "RELIABLE"


def test_sigkill_leaves_everything_before_the_last_flush(ros_node, tmp_path):
    bag = str(tmp_path / "killed")
    pub = ros_node.create_publisher(JointState, "joint_states", RELIABLE)
    params = {"topics": ["joint_states"], "bag_path": bag, "flush_period_s": 0.2}
    with node_process("recorder_node", "recorder_node", params) as proc:
        wait_for(lambda: pub.get_subscription_count() >= 1, 15.0, "subscription", proc)
        sent_at = []
        start = time.monotonic()
        i = 0
        while time.monotonic() - start < 2.0:
            pub.publish(joint_state(i))
            sent_at.append(time.monotonic())
            i += 1
            time.sleep(0.005)
        proc.node.kill()
        killed_at = time.monotonic()
    info = bag_info(bag)
    assert not info.complete   # no summary: the recorder never closed the file
    got = [list(m.message.position) for m in read_bag(bag)]
    assert got == [list(joint_state(k).position) for k in range(len(got))]
    # Delivery takes a moment on a loaded machine: allow 0.5 s on top of one flush period.
    must_have = sum(1 for t in sent_at if t < killed_at - 0.2 - 0.5)
    assert len(got) >= must_have > 0, (len(got), must_have, len(sent_at))


def test_state_action_pairs_join_by_exact_stamp(ros_node, tmp_path):
    bag = str(tmp_path / "pairs")
    states = ros_node.create_publisher(JointState, "joint_states", RELIABLE)
    actions = ros_node.create_publisher(JointState, "policy_action", RELIABLE)
    params = {"topics": ["joint_states", "policy_action"], "bag_path": bag,
              "flush_period_s": 0.2}
    n = 200
    with node_process("recorder_node", "recorder_node", params) as proc:
        wait_for(lambda: states.get_subscription_count() >= 1
                 and actions.get_subscription_count() >= 1, 15.0, "subscriptions", proc)
        for i in range(n):
            state = joint_state(i)
            state.header.stamp.nanosec += 123     # not round numbers: exact equality matters
            echo = JointState()
            echo.header.stamp = state.header.stamp
            echo.name = ["hip_1"]
            echo.position = [-2.0 * state.position[0]]
            states.publish(state)
            actions.publish(echo)
            time.sleep(0.002)
        wait_for(lambda: count_in_bag(bag) >= 2 * n, 15.0, "all messages on disk", proc)
    joined = join_by_stamp(read_bag(bag), "joint_states", "policy_action")
    assert len(joined.pairs) == n
    assert joined.unmatched_actions == 0 and joined.unmatched_states == 0
    for _stamp, state, action in joined.pairs:
        assert action.position[0] == -2.0 * state.position[0]


def test_bad_topic_entry_is_refused_at_start(tmp_path):
    params = {"topics": ["imu:not a type"], "bag_path": str(tmp_path / "never")}
    with node_process("recorder_node", "recorder_node", params) as proc:
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
    assert proc.returncode not in (0, None)
    assert "imu:not a type" in read_log(proc)
    assert not os.path.exists(tmp_path / "never")


def test_disk_full_stops_with_a_clear_error_and_a_readable_bag(ros_node, tmp_path):
    """A real 1 MiB tmpfs (root with mount rights); the writer test injects ENOSPC elsewhere."""
    import shutil
    import subprocess
    import uuid
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and the mount command to create a 1 MiB tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m",
                           f"tmpfs-{uuid.uuid4().hex[:6]}", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs refused: {done.stderr.strip()}")
    bag = str(mount_point / "bag")
    try:
        pub = ros_node.create_publisher(JointState, "joint_states", RELIABLE)
        params = {"topics": ["joint_states"], "bag_path": bag, "flush_period_s": 0.1}
        with node_process("recorder_node", "recorder_node", params) as proc:
            wait_for(lambda: pub.get_subscription_count() >= 1, 15.0, "subscription", proc)
            big = JointState()
            big.name = [f"joint_{k}" for k in range(300)]   # ~5 KB: 1 MiB fills in ~1 s
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                pub.publish(big)
                time.sleep(0.001)
            assert proc.poll() == 1, "recorder should exit with 1 when the disk is full"
        log = read_log(proc)
        assert "disk full" in log and bag in log and "Kept" in log and "Traceback" not in log
        info = bag_info(bag)
        assert info.message_count > 0
        assert all(len(m.message.name) == 300 for m in read_bag(bag))
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
