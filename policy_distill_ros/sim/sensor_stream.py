"""A synthetic robot sensor stream (joint states + IMU) for exercising a deployed policy.

No physics: smooth, deterministic signals shaped like a walking robot's (joints swinging around
zero at a gait frequency, the base rocking a little, gravity on the accelerometer), so the
student node, timing monitor and benchmarks get realistic message content at any rate without a
simulator. ROS-free: `sensor_stream_node` turns each sample into messages.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["StreamConfig", "SensorStream", "GRAVITY_M_S2"]

GRAVITY_M_S2 = 9.81


@dataclass
class StreamConfig:
    """What the stream looks like. Angles in rad, rates in Hz."""

    joint_names: Sequence[str]
    gait_frequency_hz: float = 1.5
    joint_amplitude_rad: float = 0.3
    base_tilt_rad: float = 0.05
    noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.joint_names = tuple(self.joint_names)
        if not self.joint_names:
            raise ValueError("StreamConfig.joint_names is empty: name the joints to publish")
        if len(set(self.joint_names)) != len(self.joint_names):
            dup = sorted({n for n in self.joint_names if self.joint_names.count(n) > 1})
            raise ValueError(f"StreamConfig.joint_names has duplicates: {dup}")
        for name in ("gait_frequency_hz", "joint_amplitude_rad", "base_tilt_rad", "noise_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"StreamConfig.{name} must be a finite number >= 0, got "
                                 f"{value!r}")


class SensorStream:
    """`sample(t_s)` -> the sensor values at time t (arrays reused between calls).

    Joint j follows amplitude * sin(2 pi f t + phase_j) with phases spread over the joints
    (a gait-like pattern); velocity is its exact derivative. The base rolls and pitches by
    `base_tilt_rad` at the gait frequency; the IMU reports that orientation (x, y, z, w), its
    angular rate (roll and pitch rates; exact for small tilts), and gravity seen in the tilted
    base frame. Optional Gaussian noise on the joint and IMU rates.
    """

    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        n = len(config.joint_names)
        self._rng = np.random.default_rng(config.seed)
        self._phase = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        self._omega = 2.0 * np.pi * config.gait_frequency_hz
        self.position = np.zeros(n)
        self.velocity = np.zeros(n)
        self.effort = np.zeros(n)
        self.orientation = np.array([0.0, 0.0, 0.0, 1.0])
        self.angular_velocity = np.zeros(3)
        self.linear_acceleration = np.array([0.0, 0.0, GRAVITY_M_S2])
        self._angle = np.zeros(n)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(self.config.joint_names)

    def sample(self, t_s: float) -> dict[str, np.ndarray]:
        cfg, w = self.config, self._omega
        np.multiply(w, t_s, out=self._angle)
        np.add(self._angle, self._phase, out=self._angle)
        np.sin(self._angle, out=self.position)
        self.position *= cfg.joint_amplitude_rad
        np.cos(self._angle, out=self.velocity)
        self.velocity *= cfg.joint_amplitude_rad * w
        roll = cfg.base_tilt_rad * math.sin(w * t_s)
        pitch = cfg.base_tilt_rad * math.cos(w * t_s)
        cr, sr = math.cos(roll / 2), math.sin(roll / 2)
        cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
        self.orientation[:] = (sr * cp, cr * sp, -sr * sp, cr * cp)  # roll, then pitch; yaw 0
        self.angular_velocity[:] = (cfg.base_tilt_rad * w * math.cos(w * t_s),
                                    -cfg.base_tilt_rad * w * math.sin(w * t_s), 0.0)
        # gravity (0, 0, +g as an accelerometer at rest reads it) in the tilted base frame
        self.linear_acceleration[:] = (-GRAVITY_M_S2 * math.sin(pitch),
                                       GRAVITY_M_S2 * math.sin(roll) * math.cos(pitch),
                                       GRAVITY_M_S2 * math.cos(roll) * math.cos(pitch))
        if cfg.noise_std > 0:
            self.velocity += self._rng.normal(0.0, cfg.noise_std, self.velocity.shape)
            self.angular_velocity += self._rng.normal(0.0, cfg.noise_std, 3)
        return {"position": self.position, "velocity": self.velocity, "effort": self.effort,
                "orientation": self.orientation, "angular_velocity": self.angular_velocity,
                "linear_acceleration": self.linear_acceleration}
