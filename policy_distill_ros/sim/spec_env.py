"""A gymnasium.Env whose observation is a policy spec's vector and whose action goes through the
spec's ActionSpec, both computed by core: the teacher trained with RL here sees exactly the
vector the teacher node assembles from ROS topics, and its actions mean what they mean there.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.spec import PolicySpec, load_policy_spec

from .ant import AntSim
from .config import SimConfig
from .frame import SensorFrame


def _per_joint(value: Any, size: int, what: str) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (size,))
    if arr.shape != (size,):
        raise ValueError(f"action spec '{what}' must be a scalar or {size} values")
    return arr.copy()


class SpecEnv(gym.Env):
    """`reset(seed=)` starts a sim episode (seed = episode seed); `step(raw_action)`.

    The action space is the raw policy output range that maps onto the spec's limits
    ((limit - offset) / scale). Sim joints the action spec does not name get 0.
    """

    metadata = {"render_modes": []}

    def __init__(self, sim: AntSim, policy_spec: PolicySpec) -> None:
        super().__init__()
        self.sim = sim
        self.spec_ = policy_spec
        action = policy_spec.action
        self.assembler = ObservationAssembler(policy_spec.observation, action.size)
        d = action.to_dict()
        joints = list(d["joints"])
        unknown = [j for j in joints if j not in sim.joint_names]
        if unknown:
            raise ValueError(f"action spec joint(s) {unknown} are not sim joints "
                             f"{list(sim.joint_names)}")
        self._sim_index = np.array([sim.joint_names.index(j) for j in joints])
        n = len(joints)
        scale = _per_joint(d.get("scale", 1.0), n, "scale")
        offset = _per_joint(d.get("offset", 0.0), n, "offset")
        lower = _per_joint(d["lower"], n, "lower")
        upper = _per_joint(d["upper"], n, "upper")
        if np.any(scale == 0):
            raise ValueError("action spec 'scale' must not be 0")
        a, b = (lower - offset) / scale, (upper - offset) / scale
        self.action_space = gym.spaces.Box(np.minimum(a, b).astype(np.float32),
                                           np.maximum(a, b).astype(np.float32))
        size = policy_spec.observation.size
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.frame: SensorFrame | None = None

    def _observe(self, frame: SensorFrame) -> np.ndarray:
        self.frame = frame
        frame.feed(self.assembler)
        result = self.assembler.build(frame.stamp_s)
        if result.problem:
            raise RuntimeError(f"SpecEnv: observation problem at sim time {frame.stamp_s:.3f} s "
                               f"(episode {frame.episode_id}, step {frame.step}): "
                               f"{result.problem}")
        return np.asarray(result.vector, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.assembler.reset()
        self.assembler.set_last_action(np.zeros(self.spec_.action.size))
        frame = self.sim.reset(episode_seed=seed)
        return self._observe(frame), {"episode_id": frame.episode_id}

    def step(self, action):
        command = self.spec_.action.postprocess(np.asarray(action, dtype=np.float64))
        sim_command = np.zeros(self.sim.num_joints)
        sim_command[self._sim_index] = command
        frame, reward, terminated, truncated, info = self.sim.step(sim_command)
        self.assembler.set_last_action(command)
        return self._observe(frame), reward, terminated, truncated, info

    def close(self) -> None:
        self.sim.close()


def make_spec_env(spec: str | dict | PolicySpec, config: SimConfig | None = None,
                  seed: int = 0) -> SpecEnv:
    """SpecEnv from a spec file / dict / PolicySpec and a sim config."""
    policy_spec = spec if isinstance(spec, PolicySpec) else load_policy_spec(spec)
    return SpecEnv(AntSim(config, seed), policy_spec)
