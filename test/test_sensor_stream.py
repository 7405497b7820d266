"""SensorStream: the synthetic sensor signals behave like sensors of one rigid robot."""
from __future__ import annotations

import numpy as np
import pytest

from policy_distill_ros.sim.sensor_stream import GRAVITY_M_S2, SensorStream, StreamConfig

JOINTS = ["hip_1", "ankle_1", "hip_2", "ankle_2"]


def test_velocity_is_the_derivative_of_position_and_imu_is_consistent():
    stream = SensorStream(StreamConfig(JOINTS, gait_frequency_hz=2.0, joint_amplitude_rad=0.4))
    dt = 1e-6
    for t in (0.0, 0.13, 1.7):
        before = stream.sample(t)["position"].copy()
        sample = stream.sample(t + dt)
        np.testing.assert_allclose((sample["position"] - before) / dt, sample["velocity"],
                                   rtol=1e-4, atol=1e-4)
        assert np.all(np.abs(sample["position"]) <= 0.4 + 1e-12)
        assert np.linalg.norm(sample["orientation"]) == pytest.approx(1.0)
        assert np.linalg.norm(sample["linear_acceleration"]) == pytest.approx(GRAVITY_M_S2)
        assert sample["linear_acceleration"][2] > 9.0  # upright, gravity on +z


def test_joints_move_out_of_phase_and_noise_follows_the_seed():
    quiet = SensorStream(StreamConfig(JOINTS)).sample(0.2)["position"]
    assert len(set(np.round(quiet, 9))) == len(JOINTS)
    a = SensorStream(StreamConfig(JOINTS, noise_std=0.1, seed=3)).sample(0.2)["velocity"].copy()
    b = SensorStream(StreamConfig(JOINTS, noise_std=0.1, seed=3)).sample(0.2)["velocity"].copy()
    c = SensorStream(StreamConfig(JOINTS, noise_std=0.1, seed=4)).sample(0.2)["velocity"].copy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("kwargs, match", [
    ({"joint_names": []}, "empty"),
    ({"joint_names": ["a", "a"]}, "duplicates"),
    ({"joint_names": ["a"], "noise_std": -1.0}, "noise_std"),
    ({"joint_names": ["a"], "gait_frequency_hz": float("nan")}, "gait_frequency_hz"),
])
def test_bad_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StreamConfig(**kwargs)
