"""FallbackCommand and input_fault: what a policy node commands when it must not trust its policy,
and when that is (no ROS: the same rules serve student, teacher and timing monitor)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from policy_distill_ros.core.fallback import FALLBACK_MODES, FallbackCommand, input_fault
from policy_distill_ros.core.observation import Observation

DEFAULT = np.array([0.1, -0.8, 1.6])
LOWER, UPPER = np.array([-0.5, -0.5, 0.5]), np.array([0.5, 0.5, 2.0])


def test_hold_default_is_the_default_pose_and_a_copy():
    fallback = FallbackCommand("hold_default", DEFAULT)
    command = fallback.command()
    np.testing.assert_array_equal(command, DEFAULT)
    command[:] = 99.0  # a caller writing into it changes no later fallback
    np.testing.assert_array_equal(fallback.command(), DEFAULT)
    fallback.remember_safe(np.ones(3))  # ignored outside last_safe
    np.testing.assert_array_equal(fallback.command(), DEFAULT)


def test_zero_is_clipped_into_the_joint_limits():
    np.testing.assert_array_equal(FallbackCommand("zero", DEFAULT).command(), np.zeros(3))
    np.testing.assert_array_equal(FallbackCommand("zero", DEFAULT, LOWER, UPPER).command(),
                                  [0.0, 0.0, 0.5])


def test_last_safe_is_the_default_until_a_good_command_then_that_command():
    fallback = FallbackCommand("last_safe", DEFAULT, LOWER, UPPER)
    np.testing.assert_array_equal(fallback.command(), [0.1, -0.5, 1.6])  # default, clipped
    good = np.array([0.2, 0.3, 1.0])
    fallback.remember_safe(good)
    good[:] = 0.0  # the node reuses its command buffer: the fallback kept its own copy
    np.testing.assert_array_equal(fallback.command(), [0.2, 0.3, 1.0])
    fallback.remember_safe(np.array([0.4, 0.4, 0.9]))
    np.testing.assert_array_equal(fallback.command(), [0.4, 0.4, 0.9])


def test_unknown_mode_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="hold_default, zero, last_safe"):
        FallbackCommand("freeze", DEFAULT)
    assert FALLBACK_MODES == ("hold_default", "zero", "last_safe")


def observation(problem=None, **ages_s) -> Observation:
    return Observation(np.zeros(4, dtype=np.float32), 1.0, dict(ages_s), problem)


def test_input_fault_names_the_problem_or_the_stale_topic():
    assert input_fault(observation(imu=0.01, joint_states=0.02), 0.05) is None
    assert input_fault(observation(imu=0.05), 0.05) is None  # exactly the limit is still fresh
    kind, text = input_fault(observation("topic 'imu': NaN", imu=0.0), 0.05)
    assert kind == "input" and text == "bad input: topic 'imu': NaN"
    kind, text = input_fault(observation(imu=0.01, joint_states=0.2), 0.05)
    assert kind == "stale:joint_states"
    assert text == "stale input: 'joint_states' is 200.0 ms old (max_input_age_s 0.05)"
    kind, _ = input_fault(observation(imu=math.inf), 10.0)  # never received
    assert kind == "stale:imu"
