"""Robustness scenarios: the simulator outside its training ranges, and faulty robot sensors.

A `Scenario` is a `SimConfig` (dynamics pinned beyond the training randomization: friction,
payload, motor strength; Gaussian sensor noise) plus `SensorFaults` the plain simulator does not
model: a constant sensor bias, an IMU whose samples arrive k control steps late, and lost sensor
messages. `FaultySensorSim` is an `AntSim` that applies the faults to every frame it returns, so
anything driving an AntSim (SpecEnv, the rollouts) sees them. Only the robot's own sensors
(`joint_states`, `imu`) are touched; privileged topics stay ground truth.

How a lost message looks to a policy: the topic is absent from that frame, so the observation
assembler keeps the last sample it had (what the student node does while the input is younger
than `max_input_age_s`). The first frame of an episode is never dropped.

Every random draw (bias signs, drops) derives from the episode seed, so a scenario episode is
reproducible and teacher and student face the same faults on the same seed.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ant import AntSim
from .config import SimConfig
from .frame import IMU, JOINT_STATES, SensorFrame, TopicSample

__all__ = ["SensorFaults", "Scenario", "FaultySensorSim", "default_scenarios",
           "scenario_by_name"]


@dataclass(frozen=True)
class SensorFaults:
    """Faults of the robot's sensors, fixed for an episode."""

    joint_position_bias_rad: float = 0.0    # added to each joint position, sign per joint
    angular_velocity_bias_rps: float = 0.0  # added to each gyro axis, sign per axis
    imu_delay_steps: int = 0                # the IMU sample is this many control steps old
    drop_probability: float = 0.0           # P(a joint_states / imu message is lost), per topic

    def __post_init__(self) -> None:
        for name in ("joint_position_bias_rad", "angular_velocity_bias_rps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"sensor fault '{name}' must be a finite number, got {v!r}")
        d = self.imu_delay_steps
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"sensor fault 'imu_delay_steps' must be an integer >= 0, got {d!r}")
        p = self.drop_probability
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"sensor fault 'drop_probability' must be in [0, 1), got {p!r}")

    @property
    def enabled(self) -> bool:
        return bool(self.joint_position_bias_rad or self.angular_velocity_bias_rps
                    or self.imu_delay_steps or self.drop_probability)


@dataclass(frozen=True)
class Scenario:
    """One named evaluation condition."""

    name: str
    description: str
    sim_config: SimConfig
    faults: SensorFaults = field(default_factory=SensorFaults)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "sim_config": self.sim_config.to_dict(),
                "faults": dataclasses.asdict(self.faults)}


class FaultySensorSim(AntSim):
    """An AntSim whose frames carry `faults` (see the module docstring)."""

    def __init__(self, config: SimConfig | None = None, seed: int = 0,
                 faults: SensorFaults | None = None) -> None:
        super().__init__(config, seed)
        self.faults = faults or SensorFaults()
        self._fault_rng = np.random.default_rng(0)
        self._joint_bias = np.zeros(self.num_joints)
        self._gyro_bias = np.zeros(3)
        self._imu_queue: deque[TopicSample] = deque()
        self.dropped = {JOINT_STATES: 0, IMU: 0}   # messages lost this episode, per topic

    def reset(self, episode_seed: int | None = None) -> SensorFrame:
        if episode_seed is None:
            episode_seed = self.episode_seed(self.episode_id + 1)
        rng = np.random.default_rng([int(episode_seed), 2])   # apart from the sim's own streams
        f = self.faults
        self._joint_bias = rng.choice((-1.0, 1.0), self.num_joints) * f.joint_position_bias_rad
        self._gyro_bias = rng.choice((-1.0, 1.0), 3) * f.angular_velocity_bias_rps
        self._fault_rng = rng
        self._imu_queue.clear()
        self.dropped = {JOINT_STATES: 0, IMU: 0}
        return super().reset(episode_seed)

    def _make_frame(self, reward: float, terminated: bool, truncated: bool) -> SensorFrame:
        frame = super()._make_frame(reward, terminated, truncated)
        if not self.faults.enabled:
            return frame
        return dataclasses.replace(frame, topics=self._perturb(dict(frame.topics), frame.step))

    def _perturb(self, topics: dict[str, TopicSample], step: int) -> dict[str, TopicSample]:
        f = self.faults
        joints, imu = topics[JOINT_STATES], topics[IMU]
        if f.joint_position_bias_rad:
            fields_ = dict(joints.fields, position=joints.fields["position"] + self._joint_bias)
            joints = TopicSample(fields_, joints.names)
        if f.angular_velocity_bias_rps:
            fields_ = dict(imu.fields,
                           angular_velocity=imu.fields["angular_velocity"] + self._gyro_bias)
            imu = TopicSample(fields_, imu.names)
        if f.imu_delay_steps:
            if step == 0:   # a fresh episode: the buffer starts full of the first sample
                self._imu_queue = deque([imu] * (f.imu_delay_steps + 1),
                                        maxlen=f.imu_delay_steps + 1)
            else:
                self._imu_queue.append(imu)
            imu = self._imu_queue[0]
        topics[JOINT_STATES], topics[IMU] = joints, imu
        if f.drop_probability and step > 0:
            for topic in (JOINT_STATES, IMU):   # one draw per topic and step, always both
                if self._fault_rng.random() < f.drop_probability:
                    del topics[topic]
                    self.dropped[topic] += 1
        return topics


def default_scenarios(base: SimConfig) -> list[Scenario]:
    """The standard set: `base` (the training ranges) first, then one change per scenario. The
    changed values are fixed, chosen beyond the demo's ranges (config/sim.yaml: friction
    0.6-1.2, payload 0-0.3 kg, motor strength 0.8-1.2); with a wider `base`, check they still
    lie outside it."""
    def with_(**changes: Any) -> SimConfig:
        return dataclasses.replace(base, **changes)

    noise = {"joint_position_std": 0.05, "joint_velocity_std": 0.5,
             "angular_velocity_std": 0.2, "linear_acceleration_std": 1.0}
    def span(r: tuple) -> str:
        return f"{r[0]:g}-{r[1]:g}"
    out = [Scenario("nominal", f"training ranges (friction {span(base.friction_range)}, payload "
                               f"{span(base.payload_kg_range)} kg, motor "
                               f"{span(base.motor_strength_range)})", base)]
    out += [
        Scenario("friction_low", "friction 0.3-0.4 (ice-like; trained >= 0.6)",
                 with_(friction_range=(0.3, 0.4))),
        Scenario("friction_high", "friction 1.6-2.0 (trained <= 1.2)",
                 with_(friction_range=(1.6, 2.0))),
        Scenario("payload_heavy", "payload 0.6-0.8 kg (trained <= 0.3; torso 0.91 kg)",
                 with_(payload_kg_range=(0.6, 0.8))),
        Scenario("motor_weak", "motor strength 0.55-0.65 (trained >= 0.8)",
                 with_(motor_strength_range=(0.55, 0.65))),
        Scenario("motor_strong", "motor strength 1.4-1.5 (trained <= 1.2)",
                 with_(motor_strength_range=(1.4, 1.5))),
        Scenario("sensor_noise", "Gaussian noise: joints 0.05 rad, 0.5 rad/s; gyro 0.2 rad/s; "
                                 "accel 1 m/s^2 (trained without)",
                 with_(sensor_noise=dict(noise))),
        Scenario("sensor_bias", "bias: joint positions +-0.1 rad, gyro +-0.1 rad/s", base,
                 SensorFaults(joint_position_bias_rad=0.1, angular_velocity_bias_rps=0.1)),
        Scenario("imu_delay_2", "IMU 2 control steps late (100 ms at 20 Hz)", base,
                 SensorFaults(imu_delay_steps=2)),
        Scenario("imu_delay_5", "IMU 5 control steps late (250 ms)", base,
                 SensorFaults(imu_delay_steps=5)),
        Scenario("drop_20", "20 % of joint_states and imu messages lost (last value held)",
                 base, SensorFaults(drop_probability=0.2)),
        Scenario("drop_50", "50 % of sensor messages lost", base,
                 SensorFaults(drop_probability=0.5)),
    ]
    return out


def scenario_by_name(scenarios: Sequence[Scenario], names: Sequence[str]) -> list[Scenario]:
    """The scenarios named (in the order given); an unknown name is an error listing them."""
    index = {s.name: s for s in scenarios}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {list(index)}")
    return [index[n] for n in names]
