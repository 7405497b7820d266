"""Simulator configuration: one dataclass per concern, validated on construction.

Every randomized quantity is a closed range `(low, high)` sampled uniformly once per episode;
`low == high` pins it. Bad values fail here, naming the field, instead of producing a silently
odd robot later.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys, read_yaml

ROBOTS = ("ant",)


def _range(name: str, value: Any, *, minimum: float, integer: bool = False) -> tuple:
    """Validate a `(low, high)` pair and return it as a tuple."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"sim config '{name}' must be a [low, high] pair, got {value!r}") from None
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"sim config '{name}' must hold finite numbers, got {value!r}")
        if integer and int(v) != v:
            raise ValueError(f"sim config '{name}' must hold integers, got {value!r}")
    if low > high:
        raise ValueError(f"sim config '{name}': low {low} > high {high}")
    if low < minimum:
        raise ValueError(f"sim config '{name}': low {low} is below the minimum {minimum}")
    return (int(low), int(high)) if integer else (float(low), float(high))


def _from_mapping(cls, data: Mapping[str, Any], where: str):
    """Build a dataclass from a mapping, refusing unknown keys (typos) with the allowed ones."""
    check_keys(data, dataclass_keys(cls), where)
    return cls(**dict(data))


@dataclass
class SensorNoise:
    """Gaussian noise (standard deviations) on the robot's own sensors, never on privileged data."""

    joint_position_std: float = 0.0        # rad
    joint_velocity_std: float = 0.0        # rad/s
    angular_velocity_std: float = 0.0      # rad/s
    linear_acceleration_std: float = 0.0   # m/s^2

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise ValueError(f"sim config 'sensor_noise.{f.name}' must be a finite number "
                                 f">= 0, got {v!r}")
            setattr(self, f.name, float(v))

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) > 0 for f in fields(self))


@dataclass
class SimConfig:
    """The embedded simulator.

    Control runs at 1 / (0.01 s * frame_skip): 20 Hz by default, Ant-v5's own rate. It is kept
    because Ant's reward scale, gear and damping were tuned for it (teachers train in far fewer
    samples), and 20 Hz leaves every consumer on a loaded 2-core machine ample headroom; the
    student's real-time deadline is exercised by the deployment benchmarks, not by the sim rate.
    """

    robot: str = "ant"
    max_episode_steps: int = 1000
    frame_skip: int = 5                                  # physics steps (0.01 s) per control step
    friction_range: tuple = (0.6, 1.2)                   # sliding friction of every contact
    payload_kg_range: tuple = (0.0, 0.3)                 # mass added to the torso (robot: 0.91 kg)
    motor_strength_range: tuple = (0.8, 1.2)             # actuator gear scale
    action_delay_steps_range: tuple = (0, 0)             # commands applied this many steps late
    sensor_noise: SensorNoise = field(default_factory=SensorNoise)
    reset_noise_scale: float = 0.1                       # Ant-v5's initial-state noise
    # Reward: Ant-v5's terms, with a lighter action cost. At Ant-v5's 0.5 (and at 0.25), PPO on
    # this CPU budget settled on standing still (measured: 0.1 m/s after 740k steps); at 0.05 and
    # 0.1 it runs within 500k steps.
    ctrl_cost_weight: float = 0.1
    # Torso height (m) outside which the ant is unhealthy (episode ends). Ant-v5's [0.2, 1.0] ended
    # most running episodes in a bounce above 1 m, and a torso at 0.2-0.3 m is an ant on its back
    # collecting the alive bonus: [0.3, 2.0] ends a flip and lets a gait bounce.
    healthy_z_range: tuple = (0.3, 2.0)
    terminate_when_unhealthy: bool = True
    # Shaping added to Ant-v5's reward, per control step: w_vz * vz^2 (torso vertical velocity,
    # m/s) and w_tilt * (1 - up_z) (up_z: z of the torso's up axis, 1 = level, -1 = on its back).
    # They penalise the hopping gait in which PPO's ant flips over (legged_gym penalises the same).
    vertical_velocity_cost_weight: float = 0.0
    tilt_cost_weight: float = 0.0
    fall_cost: float = 0.0  # once, on the step an episode ends unhealthy
    # > 0: the forward reward stops growing at this speed (m/s), so a faster, bouncier gait
    # earns nothing more than a steady walk at the cap (0: Ant-v5's uncapped reward).
    forward_speed_cap_mps: float = 0.0
    reset_time_on_episode: bool = False                  # True: sim time restarts at 0 each reset

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise ValueError(f"sim config 'robot' is {self.robot!r}; supported: {list(ROBOTS)}")
        for name, minimum in (("max_episode_steps", 1), ("frame_skip", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise ValueError(f"sim config '{name}' must be an integer >= {minimum}, got {v!r}")
        self.friction_range = _range("friction_range", self.friction_range, minimum=1e-3)
        self.payload_kg_range = _range("payload_kg_range", self.payload_kg_range, minimum=0.0)
        self.motor_strength_range = _range("motor_strength_range", self.motor_strength_range,
                                           minimum=1e-3)
        self.healthy_z_range = _range("healthy_z_range", self.healthy_z_range, minimum=0.0)
        self.action_delay_steps_range = _range("action_delay_steps_range",
                                               self.action_delay_steps_range, minimum=0,
                                               integer=True)
        if isinstance(self.sensor_noise, Mapping):
            self.sensor_noise = _from_mapping(SensorNoise, self.sensor_noise,
                                              "sim config 'sensor_noise'")
        if not isinstance(self.sensor_noise, SensorNoise):
            raise ValueError("sim config 'sensor_noise' must be a SensorNoise or a mapping")
        for name in ("reset_noise_scale", "ctrl_cost_weight", "vertical_velocity_cost_weight",
                     "tilt_cost_weight", "fall_cost", "forward_speed_cap_mps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0:
                raise ValueError(f"sim config '{name}' must be a finite number >= 0, got {v!r}")
            setattr(self, name, float(v))
        for name in ("terminate_when_unhealthy", "reset_time_on_episode"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"sim config '{name}' must be true or false")

    @property
    def control_dt_s(self) -> float:
        return 0.01 * self.frame_skip

    @property
    def rate_hz(self) -> float:
        return 1.0 / self.control_dt_s

    @classmethod
    def nominal(cls, **overrides: Any) -> SimConfig:
        """No randomization, no noise: the robot exactly as modelled (tests, evaluation)."""
        base = dict(friction_range=(1.0, 1.0), payload_kg_range=(0.0, 0.0),
                    motor_strength_range=(1.0, 1.0))
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimConfig:
        return _from_mapping(cls, data, "sim config")

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d


# sim_node parameters that configure the node, not the simulator (see nodes/sim_node.py).
NODE_PARAMS = frozenset({"seed", "mode", "num_episodes", "lockstep_timeout_s", "real_time_factor",
                         "command_joints", "publish_privileged", "world_frame_id",
                         "base_frame_id", "use_sim_time"})
# Parameter names that differ from the SimConfig field they set.
_PARAM_TO_FIELD = {"action_delay_steps": "action_delay_steps_range"}


def sim_config_from_params(params: Mapping[str, Any]) -> SimConfig:
    """SimConfig from sim_node parameters (flat `sensor_noise.x` keys or nested), so the node
    and in-process users read `config/sim.yaml` identically. Node-only keys are skipped."""
    data: dict[str, Any] = {}
    noise: dict[str, Any] = {}
    for key, value in params.items():
        if key in NODE_PARAMS:
            continue
        if key.startswith("sensor_noise."):
            noise[key.split(".", 1)[1]] = value
        elif key == "sensor_noise" and isinstance(value, Mapping):
            noise.update(value)
        else:
            data[_PARAM_TO_FIELD.get(key, key)] = value
    if noise:
        data["sensor_noise"] = noise
    return SimConfig.from_dict(data)


def load_sim_config(path: str | Path, node_name: str = "sim_node") -> SimConfig:
    """Read a SimConfig from a ROS params file (`{node_name: {ros__parameters: ...}}`, the format
    of config/sim.yaml) or from a bare mapping of the same keys."""
    data = _params_or_mapping(path, node_name)
    try:
        return sim_config_from_params(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _params_or_mapping(path: str | Path, node_name: str) -> Mapping:
    """`node_name`'s parameters when the file is a ROS params file, else its bare mapping."""
    from policy_distill_ros.params_file import node_blocks, node_params
    data = read_yaml(path, "simulator config") or {}
    if isinstance(data, Mapping) and any(True for _ in node_blocks(data)):
        return node_params(data, node_name)
    return data
