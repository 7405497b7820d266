"""core.cdr decodes JointState / Imu bytes exactly as rclpy deserializes them."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Imu, JointState

from policy_distill_ros.core.cdr import CdrError, JointStateDecoder, decode_imu
from policy_distill_ros.core.fields import extract, header_stamp_s, names_of

RNG = np.random.default_rng(0)


def joint_state(names, frame="", n_pos=None, n_vel=None, n_eff=None) -> JointState:
    n = len(names)
    msg = JointState(name=list(names), position=RNG.standard_normal(n if n_pos is None else n_pos),
                     velocity=RNG.standard_normal(n if n_vel is None else n_vel),
                     effort=RNG.standard_normal(n if n_eff is None else n_eff))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 987_654_321
    msg.header.frame_id = frame
    return msg


@pytest.mark.parametrize("names, frame, sizes", [
    (["hip_1", "ankle_1", "hip_2", "ankle_2"], "", (None, None, None)),
    (["a", "bb", "ccc", "dddd", "eeeee"], "base", (None, None, 0)),     # string alignments
    (["FL_hip_joint"] * 0, "x", (0, 0, 0)),                             # nothing at all
    (["j0", "j1", "j2"], "odd_len", (3, 0, 3)),                         # an empty middle array
])
def test_joint_state_matches_rclpy(names, frame, sizes):
    decoder = JointStateDecoder()
    for _ in range(2):  # the second time, joint names come from the cache
        msg = joint_state(names, frame, *sizes)
        data = serialize_message(msg)
        got = decoder(data)
        ref = deserialize_message(data, JointState)
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == (1_700_000_123, 987_654_321)
        assert got.header.frame_id == frame and got.name == list(ref.name)
        for field in ("position", "velocity", "effort"):
            np.testing.assert_array_equal(extract(got, field), extract(ref, field))
        assert_flat_form(got, ref)
        assert header_stamp_s(got) == header_stamp_s(ref)


def assert_flat_form(got, ref) -> None:
    """The flat form (one payload, each field's (start, count)) holds the same values."""
    for k, field in enumerate(type(got).FLAT_FIELDS):
        start, count = got.flat_layout[2 * k:2 * k + 2]
        np.testing.assert_array_equal(got.payload[start:start + count], extract(ref, field))


def test_joint_names_cache_follows_the_bytes():
    decoder = JointStateDecoder()
    a = decoder(serialize_message(joint_state(["x", "y"])))
    b = decoder(serialize_message(joint_state(["y", "x"])))
    assert a.name == ["x", "y"] and b.name == ["y", "x"]
    assert names_of(b, None) == ["y", "x"]


def test_imu_matches_rclpy():
    msg = Imu()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 5, 6
    msg.header.frame_id = "imu_link"
    msg.orientation.x, msg.orientation.y, msg.orientation.z, msg.orientation.w = 0.1, 0.2, 0.3, 0.9
    msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = 1.0, -2.0, 3.0
    msg.linear_acceleration.x, msg.linear_acceleration.z = 0.5, 9.81
    msg.orientation_covariance = RNG.standard_normal(9)
    msg.linear_acceleration_covariance = RNG.standard_normal(9)
    data = serialize_message(msg)
    got, ref = decode_imu(data), deserialize_message(data, Imu)
    for field in ("orientation", "angular_velocity", "linear_acceleration",
                  "orientation_covariance", "linear_acceleration_covariance"):
        np.testing.assert_array_equal(extract(got, field), extract(ref, field))
    assert_flat_form(got, ref)
    assert got.header.frame_id == "imu_link" and header_stamp_s(got) == 5 + 6e-9


def test_not_plain_cdr_or_truncated_is_refused():
    data = serialize_message(joint_state(["a", "b"]))
    with pytest.raises(CdrError, match="encapsulation"):
        JointStateDecoder()(b"\x00\x00" + data[2:])      # big-endian CDR: not ours
    with pytest.raises(CdrError):
        JointStateDecoder()(data[:40])
    with pytest.raises(CdrError):
        decode_imu(serialize_message(Imu())[:100])
