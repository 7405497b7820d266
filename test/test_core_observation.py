"""Messages to numbers (fields.py) and observation assembly (observation.py).

Fields are checked on plain stand-in objects (what rosbags deserializes to: same attribute
names) and on real rclpy message classes; both must give identical vectors.
"""
from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from policy_distill_ros.core.fields import FieldError, extract, header_stamp_s, names_of
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.spec import ObservationSpec, ObsTerm, PolicySpec, SpecError

# ---------------------------------------------------------------------------------------------
# stand-in messages (rosbags-like: plain attributes)

def stamp(t: float) -> NS:
    sec = math.floor(t)
    return NS(sec=sec, nanosec=round((t - sec) * 1e9))


def js(names, pos, vel=None, t=1.0):
    return NS(header=NS(stamp=stamp(t), frame_id=""), name=list(names),
              position=np.asarray(pos, dtype=float),
              velocity=np.asarray(vel if vel is not None else [], dtype=float),
              effort=np.zeros(0))


def imu(gyro, quat=(0.0, 0.0, 0.0, 1.0), t=1.0):
    return NS(header=NS(stamp=stamp(t), frame_id=""),
              orientation=NS(x=quat[0], y=quat[1], z=quat[2], w=quat[3]),
              angular_velocity=NS(x=gyro[0], y=gyro[1], z=gyro[2]),
              linear_acceleration=NS(x=0.0, y=0.0, z=9.81))


def multiarray(labels, data):
    return NS(layout=NS(dim=[NS(label=",".join(labels), size=len(data), stride=len(data))],
                        data_offset=0), data=np.asarray(data, dtype=float))


# ---------------------------------------------------------------------------------------------
# fields

def test_extract_standin_types():
    m = imu([1, 2, 3], quat=(0.1, 0.2, 0.3, 0.9), t=12.25)
    np.testing.assert_array_equal(extract(m, "angular_velocity"), [1, 2, 3])
    np.testing.assert_array_equal(extract(m, "orientation"), [0.1, 0.2, 0.3, 0.9])
    assert header_stamp_s(m) == pytest.approx(12.25)
    odom = NS(twist=NS(twist=NS(linear=NS(x=4.0, y=5.0, z=6.0))))
    np.testing.assert_array_equal(extract(odom, "twist.twist.linear"), [4, 5, 6])
    np.testing.assert_array_equal(extract(odom, "twist.twist.linear.y"), [5.0])
    assert header_stamp_s(odom) is None
    with pytest.raises(FieldError, match="twist.angular"):
        extract(odom, "twist.angular")
    with pytest.raises(FieldError, match="not numeric"):
        extract(NS(frame_id="base"), "frame_id")
    ma = multiarray(["f1", "f2"], [7, 8])
    assert names_of(ma) == ["f1", "f2"]
    assert names_of(js(["a"], [0])) == ["a"]


def test_extract_real_rclpy_messages_matches_standins():
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    j = JointState(name=["b", "a"], position=[2.0, 1.0], velocity=[0.2, 0.1])
    j.header.stamp = Time(sec=3, nanosec=500_000_000)
    s = js(["b", "a"], [2.0, 1.0], [0.2, 0.1], t=3.5)
    for f in ("position", "velocity", "effort"):
        np.testing.assert_array_equal(extract(j, f), extract(s, f))
    assert header_stamp_s(j) == header_stamp_s(s) == 3.5
    assert names_of(j) == names_of(s) == ["b", "a"]

    i = Imu()
    i.angular_velocity.x, i.angular_velocity.y, i.angular_velocity.z = 1.0, 2.0, 3.0
    i.orientation.x, i.orientation.w = 0.5, 0.5
    np.testing.assert_array_equal(extract(i, "angular_velocity"), [1, 2, 3])
    np.testing.assert_array_equal(extract(i, "orientation"), [0.5, 0, 0, 0.5])
    assert extract(i, "orientation_covariance").shape == (9,)

    ma = Float64MultiArray(data=[7.0, 8.0])
    ma.layout.dim = [MultiArrayDimension(label="f1, f2", size=2, stride=2)]
    assert names_of(ma) == ["f1", "f2"]
    np.testing.assert_array_equal(extract(ma, "data"), [7, 8])


# ---------------------------------------------------------------------------------------------
# assembly

def small_spec(history: int = 1, **pos_term) -> PolicySpec:
    term = {"name": "pos", "topic": "joint_states", "field": "position", "joints": ["a", "b", "c"]}
    term.update(pos_term)
    return PolicySpec.from_dict({
        "observation": {"history_length": history, "terms": [
            term,
            {"name": "gyro", "topic": "imu", "field": "angular_velocity", "size": 3},
            {"name": "last_action", "kind": "last_action"},
        ]},
        "action": {"joints": ["a", "b"]},
        "rate_hz": 100.0,
    })


def ready(asm, t=1.0):
    asm.on_message("imu", imu([0.0, 0.0, 0.0], t=t), t)


def test_joint_order_by_name_and_unknown_joints_ignored():
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    ready(asm)
    # shuffled, with an extra joint the spec does not use
    assert asm.on_message("joint_states", js(["c", "x", "a", "b"], [3, 99, 1, 2]), 1.0) is None
    obs = asm.build(1.0)
    assert obs.ok, obs.problem
    np.testing.assert_array_equal(obs.vector, [1, 2, 3, 0, 0, 0, 0, 0])
    assert obs.vector.dtype == np.float32 and obs.vector.shape == (spec.observation.size,)
    # another order on the next message: the right values again
    asm.on_message("joint_states", js(["b", "c", "a"], [20, 30, 10]), 1.1)
    np.testing.assert_array_equal(asm.build(1.1).vector[:3], [10, 20, 30])
    # and back to the first order (cached map)
    asm.on_message("joint_states", js(["c", "x", "a", "b"], [6, 0, 4, 5]), 1.2)
    np.testing.assert_array_equal(asm.build(1.2).vector[:3], [4, 5, 6])


def test_real_jointstate_through_assembler():
    from sensor_msgs.msg import Imu, JointState
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    asm.on_message("imu", Imu(), 2.0)
    assert asm.on_message("joint_states",
                          JointState(name=["c", "b", "a"], position=[3.0, 2.0, 1.0]), 2.0) is None
    obs = asm.build(2.5)
    assert obs.ok and obs.stamp_s == 0.0  # default header stamp of the real messages
    np.testing.assert_array_equal(obs.vector[:3], [1, 2, 3])
    assert obs.ages_s == {"joint_states": 0.5, "imu": 0.5}


def test_missing_joint_is_a_problem_naming_joint_and_topic():
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    ready(asm)
    problem = asm.on_message("joint_states", js(["a", "c"], [1, 3]), 1.0)
    assert "'b'" in problem and "joint_states" in problem
    obs = asm.build(1.0)
    assert obs.problem == problem
    assert asm.on_message("joint_states", js(["a", "b", "c"], [1, 2, 3]), 1.1) is None
    assert asm.build(1.1).ok  # a good message clears it


def test_missing_topic_reported_and_ages_infinite():
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    asm.on_message("joint_states", js(["a", "b", "c"], [1, 2, 3], t=5.0), 5.5)
    obs = asm.build(6.0)
    assert obs.problem == "no message yet on topic 'imu'"
    assert obs.ages_s["imu"] == math.inf and obs.ages_s["joint_states"] == 0.5
    assert obs.stamp_s == 5.0  # header stamp, not receive time


def test_stamp_is_newest_input_stamp_receive_time_without_header():
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    asm.on_message("joint_states", js(["a", "b", "c"], [1, 2, 3], t=5.0), 5.2)
    headerless = NS(angular_velocity=NS(x=0.0, y=0.0, z=0.0))
    asm.on_message("imu", headerless, 5.1)
    # newest of 5.0 (joint_states header) and 5.1 (imu receive time, it has no header)
    assert asm.build(5.3).stamp_s == pytest.approx(5.1)


def test_nan_keeps_last_good_value_and_reports():
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    ready(asm)
    asm.on_message("joint_states", js(["a", "b", "c"], [1, 2, 3]), 1.0)
    problem = asm.on_message("joint_states", js(["a", "b", "c"], [1, np.nan, 7]), 2.0)
    assert "non-finite" in problem and "'b'" in problem
    obs = asm.build(2.0)
    assert obs.problem == problem
    np.testing.assert_array_equal(obs.vector[:3], [1, 2, 3])  # nothing of the bad message
    assert obs.ages_s["joint_states"] == 1.0  # age of the last GOOD message
    # NaN in a joint the spec does not use does not matter
    assert asm.on_message("joint_states", js(["a", "b", "c", "z"], [4, 5, 6, np.inf]), 3.0) is None


def test_wrong_size_and_inf_are_problems_for_that_topic():
    spec = small_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    asm.on_message("joint_states", js(["a", "b", "c"], [1, 2, 3]), 1.0)
    bad = NS(header=NS(stamp=stamp(1.0)), angular_velocity=NS(x=np.inf, y=0.0, z=0.0))
    assert "imu" in asm.on_message("imu", bad, 1.0)
    p = asm.on_message("joint_states", js(["a", "b", "c"], [1, 2]), 1.0)
    assert "2 values for 3 names" in p
    p = asm.on_message("joint_states", NS(name=["a", "b", "c"], position=[1, 2, 3]), 1.0)
    assert p is None  # no header, no velocity: position is all the spec wants
    p = asm.on_message("joint_states", NS(name=["a", "b", "c"]), 1.0)
    assert "position" in p
    assert "not used" in asm.on_message("odom", NS(), 1.0)


def test_history_oldest_first_term_major_with_padding():
    spec = small_spec(history=3)
    asm = ObservationAssembler(spec.observation, spec.action.size)

    def step(k):
        return [k, k + 0.1, k + 0.2, 10 * k, 0, 0, -k, -k - 0.5]

    seen = []
    for k in (1, 2, 3, 4):
        asm.on_message("joint_states", js(["a", "b", "c"], [k, k + 0.1, k + 0.2]), k)
        asm.on_message("imu", imu([10 * k, 0, 0]), k)
        asm.build(k)  # first build with the previous last action
        asm.set_last_action([-k, -k - 0.5])
        seen.append(asm.build(k).vector)
    # builds pushed per k: (k, last action of k-1), (k, last action k)

    def s(k, la):
        return step(k)[:6] + la

    np.testing.assert_allclose(seen[0], s(1, [0, 0]) + s(1, [0, 0]) + s(1, [-1, -1.5]), rtol=1e-6)
    np.testing.assert_allclose(seen[1], s(1, [-1, -1.5]) + s(2, [-1, -1.5]) + s(2, [-2, -2.5]),
                               rtol=1e-6)
    np.testing.assert_allclose(seen[3], s(3, [-3, -3.5]) + s(4, [-3, -3.5]) + s(4, [-4, -4.5]),
                               rtol=1e-6)
    asm.reset()
    obs = asm.build(5)
    np.testing.assert_allclose(obs.vector, s(4, [0, 0]) * 3, rtol=1e-6)  # padded, last action 0


def test_offset_scale_clip_applied():
    spec = small_spec(offset=[1.0, 0.0, 0.0], scale=[2.0, 3.0, 100.0], clip=[-50, 50])
    asm = ObservationAssembler(spec.observation, spec.action.size)
    ready(asm)
    asm.on_message("joint_states", js(["a", "b", "c"], [2.0, -1.0, 1.0]), 1.0)
    np.testing.assert_allclose(asm.build(1.0).vector[:3], [2.0, -3.0, 50.0])


def test_labels_select_by_layout_label_and_command():
    spec = PolicySpec.from_dict({
        "observation": {"terms": [
            {"name": "contact", "topic": "privileged/contact_forces", "field": "data",
             "labels": ["f2", "f1"]},
            {"name": "cmd", "kind": "command", "size": 2, "scale": 2.0},
        ]},
        "action": {"joints": ["a"]}, "rate_hz": 10.0})
    asm = ObservationAssembler(spec.observation, 1)
    assert asm.on_message("privileged/contact_forces", multiarray(["f1", "f2", "f3"], [1, 2, 3]),
                          0.0) is None
    np.testing.assert_array_equal(asm.build(0.0).vector, [2, 1, 0, 0])
    assert asm.set_command([0.5, 1.0]) is None
    np.testing.assert_array_equal(asm.build(0.0).vector, [2, 1, 1, 2])
    assert "non-finite" in asm.set_command([np.nan, 1.0])
    obs = asm.build(0.0)
    assert "cmd" in obs.problem
    np.testing.assert_array_equal(obs.vector, [2, 1, 1, 2])
    p = asm.on_message("privileged/contact_forces", NS(layout=NS(dim=[]), data=[1.0, 2.0]), 0.0)
    assert "layout labels" in p


def test_on_sample_path_equals_on_message_path():
    spec = small_spec(history=2)
    a1 = ObservationAssembler(spec.observation, 2)
    a2 = ObservationAssembler(spec.observation, 2)
    for k in range(3):
        names = ["b", "a", "c"]
        pos = [k + 1.0, k, k + 2.0]
        a1.on_message("joint_states", js(names, pos, t=k), k)
        a1.on_message("imu", imu([k, 1, 2], t=k), k)
        a2.on_sample("joint_states", k, {"position": pos}, {"position": names})
        a2.on_sample("imu", k, {"angular_velocity": [k, 1, 2]})
        o1, o2 = a1.build(k), a2.build(k)
        np.testing.assert_array_equal(o1.vector, o2.vector)
        assert o1.stamp_s == o2.stamp_s and o1.problem == o2.problem is None
    assert "no field 'angular_velocity'" in a2.on_sample("imu", 4.0, {"gyro": [0, 0, 0]})


def test_one_component_of_a_vector_field_on_both_paths():
    """`pose.pose.position.z`: extract reads the attribute of a message; a simulator sample
    that carries `pose.pose.position` as [x, y, z] gives the same number."""
    term = ObsTerm(name="height", topic="privileged/odometry", field="pose.pose.position.z",
                   size=1, offset=0.5)
    spec = ObservationSpec(terms=(term,), history_length=1)
    a1, a2 = ObservationAssembler(spec, 1), ObservationAssembler(spec, 1)
    odom = NS(header=NS(stamp=stamp(1.0)), pose=NS(pose=NS(position=NS(x=3.0, y=4.0, z=0.75))))
    a1.on_message("privileged/odometry", odom, 1.0)
    a2.on_sample("privileged/odometry", 1.0, {"pose.pose.position": [3.0, 4.0, 0.75]})
    np.testing.assert_allclose(a1.build(1.0).vector, [0.25])
    np.testing.assert_allclose(a2.build(1.0).vector, [0.25])
    assert "no field 'pose.pose.position.z'" in a2.on_sample(
        "privileged/odometry", 2.0, {"pose.pose.orientation": [0, 0, 0, 1]})


def test_action_size_mismatch_refused():
    spec = small_spec()
    with pytest.raises(SpecError, match="last_action"):
        ObservationAssembler(spec.observation, 5)
    asm = ObservationAssembler(spec.observation, 2)
    with pytest.raises(ValueError, match="set_last_action"):
        asm.set_last_action([1.0, np.nan])


def test_obs_term_standalone_topic_spec():
    obs = ObservationSpec(terms=(ObsTerm(name="g", topic="imu", field="angular_velocity", size=3),))
    asm = ObservationAssembler(obs, 1)
    asm.on_message("imu", imu([1, 2, 3]), 0.0)
    np.testing.assert_array_equal(asm.build(0.0).vector, [1, 2, 3])


def test_rosbags_messages_give_the_same_observation_as_rclpy_messages():
    """The trainer reads bags with rosbags; the robot gets rclpy messages: same vector."""
    from rosbags.typesys import Stores, get_typestore
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types

    def cdr_round_trip(msg):
        return store.deserialize_cdr(store.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)

    header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=7, nanosec=250),
                                      frame_id="base")
    vec3, quat = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Quaternion"]
    bag_js = cdr_round_trip(T["sensor_msgs/msg/JointState"](
        header=header, name=["c", "a", "b"], position=np.array([3.0, 1.0, 2.0]),
        velocity=np.array([0.3, 0.1, 0.2]), effort=np.zeros(0)))
    bag_imu = cdr_round_trip(T["sensor_msgs/msg/Imu"](
        header=header, orientation=quat(x=0.1, y=0.2, z=0.3, w=0.9),
        orientation_covariance=np.zeros(9), angular_velocity=vec3(x=1.0, y=2.0, z=3.0),
        angular_velocity_covariance=np.zeros(9), linear_acceleration=vec3(x=0.0, y=0.0, z=9.8),
        linear_acceleration_covariance=np.zeros(9)))
    dim = T["std_msgs/msg/MultiArrayDimension"](label="f1,f2", size=2, stride=2)
    bag_ma = cdr_round_trip(T["std_msgs/msg/Float64MultiArray"](
        layout=T["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0),
        data=np.array([5.0, 6.0])))

    ros_js = JointState(name=["c", "a", "b"], position=[3.0, 1.0, 2.0], velocity=[0.3, 0.1, 0.2])
    ros_js.header.stamp.sec, ros_js.header.stamp.nanosec = 7, 250
    ros_imu = Imu()
    ros_imu.header.stamp.sec, ros_imu.header.stamp.nanosec = 7, 250
    ros_imu.orientation.x, ros_imu.orientation.y = 0.1, 0.2
    ros_imu.orientation.z, ros_imu.orientation.w = 0.3, 0.9
    ros_imu.angular_velocity.x, ros_imu.angular_velocity.y, ros_imu.angular_velocity.z = 1., 2., 3.
    ros_ma = Float64MultiArray(data=[5.0, 6.0])
    ros_ma.layout.dim = [MultiArrayDimension(label="f1,f2", size=2, stride=2)]

    spec = PolicySpec.from_dict({
        "observation": {"history_length": 2, "terms": [
            {"name": "pos", "topic": "joint_states", "field": "position",
             "joints": ["a", "b", "c"]},
            {"name": "vel", "topic": "joint_states", "field": "velocity", "joints": ["b", "a"],
             "scale": 0.5},
            {"name": "quat", "topic": "imu", "field": "orientation", "size": 4},
            {"name": "gyro", "topic": "imu", "field": "angular_velocity", "size": 3},
            {"name": "contact", "topic": "contacts", "field": "data", "labels": ["f2", "f1"]},
        ]},
        "action": {"joints": ["a"]}, "rate_hz": 50.0})
    vectors = []
    for js_msg, imu_msg, ma_msg in ((ros_js, ros_imu, ros_ma), (bag_js, bag_imu, bag_ma)):
        asm = ObservationAssembler(spec.observation, 1)
        for topic, msg in (("joint_states", js_msg), ("imu", imu_msg)):
            assert asm.on_message(topic, msg, 8.0) is None
        assert asm.build(8.0).stamp_s == pytest.approx(7.00000025)  # header stamps
        assert asm.on_message("contacts", ma_msg, 8.5) is None  # no header: receive time
        obs = asm.build(8.5)
        assert obs.ok and obs.stamp_s == 8.5
        vectors.append(obs.vector)
    np.testing.assert_array_equal(vectors[0], vectors[1])
    np.testing.assert_allclose(vectors[0][14:], [1, 2, 3, 0.1, 0.05, 0.1, 0.2, 0.3, 0.9, 1, 2, 3,
                                                 6, 5], rtol=1e-6)
