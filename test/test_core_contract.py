"""core/contract.py and core/config_keys.py: the shared conventions behave as documented."""
from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from policy_distill_ros.core import contract as c
from policy_distill_ros.core.config_keys import check_keys
from policy_distill_ros.core.spec import SpecError


def time(sec: int, nanosec: int) -> NS:
    return NS(sec=sec, nanosec=nanosec)


def test_integer_stamps_are_exact_and_float_seconds_agree_both_ways():
    rng = np.random.default_rng(0)
    for sec, nanosec in [(0, 0), (1_700_000_000, 999_999_999), (5, 6)] + [
            (int(s), int(n)) for s, n in zip(rng.integers(0, 2**31, 500),
                                             rng.integers(0, c.NS_PER_S, 500), strict=True)]:
        ns = c.stamp_ns(time(sec, nanosec))
        assert ns == sec * 1_000_000_000 + nanosec
        assert c.ns_to_sec_nanosec(ns) == (sec, nanosec)
        assert c.stamp_s(time(sec, nanosec)) == c.ns_to_s(ns)   # one rounding everywhere
        assert c.header_stamp_s(NS(header=NS(stamp=time(sec, nanosec)))) == c.ns_to_s(ns)
    assert c.header_stamp_ns(NS(data=[1.0])) is None and c.header_stamp_s(NS(data=[])) is None


def test_seconds_to_stamp_rounds_to_the_nearest_nanosecond_and_never_overflows():
    assert c.s_to_sec_nanosec(12.25) == (12, 250_000_000)
    assert c.s_to_sec_nanosec(-0.5) == (-1, 500_000_000)
    assert c.s_to_sec_nanosec(3.9999999999) == (3, 999_999_999)   # not (3, 1e9)
    for seconds in np.random.default_rng(1).uniform(0, 1e6, 1000):
        sec, nanosec = c.s_to_sec_nanosec(float(seconds))
        assert 0 <= nanosec < c.NS_PER_S and c.s_to_ns(seconds) == sec * c.NS_PER_S + nanosec
        assert abs(c.ns_to_s(c.s_to_ns(seconds)) - seconds) < 1e-6


def test_type_names_are_normalized_or_refused():
    assert c.normalize_type_name("sensor_msgs/Imu") == c.IMU_TYPE
    assert c.normalize_type_name(" sensor_msgs/msg/Imu ") == c.IMU_TYPE
    assert c.normalize_type_name("std_srvs/srv/Trigger") == "std_srvs/srv/Trigger"
    for bad in ("Imu", "sensor_msgs/msg/sub/Imu", "sensor msgs/Imu", ""):
        with pytest.raises(c.MessageTypeError, match="is not 'package/msg/Type'"):
            c.normalize_type_name(bad)


def test_topic_type_entries_use_equals_and_read_the_old_colon_form_with_one_warning():
    assert c.parse_topic_type("front/imu=sensor_msgs/Imu", "x") == ("front/imu", c.IMU_TYPE, "")
    assert c.parse_topic_type("imu", "rec", type_required=False) == ("imu", None, "")
    old = c.parse_topic_type("vec:std_msgs/msg/Float64MultiArray", "recorder topics",
                             type_required=False, legacy_colon=True)
    assert old.topic == "vec" and old.type_name == c.FLOAT64_ARRAY_TYPE
    assert old.deprecation == ("recorder topics: entry 'vec:std_msgs/msg/Float64MultiArray' uses "
                               "the deprecated 'topic:Type' form; write "
                               "'vec=std_msgs/msg/Float64MultiArray'")
    for entry, match in (("imu", "expected 'topic=pkg/msg/Type'"),
                         ("imu:sensor_msgs/msg/Imu", "expected 'topic=pkg/msg/Type'"),
                         ("=sensor_msgs/msg/Imu", "expected"), ("imu=", "expected"),
                         ("imu=Imu", "not 'package/msg/Type'")):
        with pytest.raises(ValueError, match=f"topic_types: entry '{entry}'.*{match}"):
            c.parse_topic_types([entry])
    with pytest.raises(ValueError, match="type 'std_msgs/msg/String' is not one of"):
        c.parse_topic_types(["status=std_msgs/String"])
    assert c.parse_topic_types(["a=nav_msgs/Odometry", "b=sensor_msgs/msg/Imu"]) == {
        "a": c.ODOMETRY_TYPE, "b": c.IMU_TYPE}


def test_input_topics_resolve_by_full_name_then_last_component():
    assert c.input_type_name("joint_states") == c.JOINT_STATE_TYPE
    assert c.input_type_name("/front/imu") == c.IMU_TYPE
    assert c.input_type_name(c.ODOMETRY) == c.ODOMETRY_TYPE
    assert c.input_type_name("robot/privileged/contact_forces") == c.FLOAT64_ARRAY_TYPE
    assert c.input_type_name(c.POLICY_ACTION) is None and c.input_type_name("lidar") is None
    assert set(c.TOPIC_TYPES[t] for t in (c.JOINT_STATES, c.IMU, c.COMMAND, c.ODOMETRY,
                                          c.CONTACT_FORCES, c.DYNAMICS)) == set(c.INPUT_TYPES)


def test_echo_markers_round_trip():
    cases = {(False, False): "", (True, False): "fallback", (False, True): "withheld",
             (True, True): "withheld,fallback"}
    for (fallback, withheld), frame in cases.items():
        assert c.echo_frame(fallback, withheld) == frame
        assert c.is_fallback_frame(frame) is fallback
        assert c.is_withheld_frame(frame) is withheld
    assert not c.is_fallback_frame("base_link")


def test_unknown_keys_give_one_line_naming_the_place_and_the_key():
    check_keys({"scale": 1}, ["scale", "clip"], "term 'x'")
    with pytest.raises(SpecError) as err:
        check_keys({"scael": 1, "clip": 2}, ["scale", "clip"], "term 'x'", SpecError)
    assert str(err.value) == ("term 'x': unknown keys ['scael'] (did you mean 'scale'? "
                              "known: clip, scale)")
    with pytest.raises(ValueError) as err:
        check_keys({"zzz": 1, "lrr": 2}, ["lr"], "train.yaml")
    assert str(err.value) == ("train.yaml: unknown keys ['lrr', 'zzz'] (did you mean "
                              "'lrr' -> 'lr'? known: lr)")
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="train.yaml must be a mapping, got list"):
        check_keys([1], ["lr"], "train.yaml")
