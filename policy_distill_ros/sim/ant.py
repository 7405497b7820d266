"""The Ant quadruped (Gymnasium Ant-v5 on MuJoCo) with domain randomization, as SensorFrames.

ROS-free. Commands are given in `joint_names` order (the model's hinge order: hip_1, ankle_1,
..., hip_4, ankle_4) and mapped to MuJoCo's actuator order (which starts at hip_4) by name.
Everything random (dynamics, initial state, sensor noise) derives from `(seed, episode_id)` or an
explicit episode seed, so a run is reproducible step for step.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from .config import SimConfig
from .frame import DYNAMICS, EPISODE, EPISODE_LABELS, SensorFrame, TopicSample
from .model_xml import ant_with_imu_path
from .randomization import DYNAMICS_LABELS, Dynamics, ModelRandomizer, sample_dynamics
from .sensors import AntSensors


class AntSim:
    """`reset(episode_seed=None) -> SensorFrame`; `step(command) -> (frame, reward, terminated,
    truncated, info)`. Sim time (`frame.stamp_s`) continues across episodes unless
    `config.reset_time_on_episode`."""

    def __init__(self, config: SimConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else SimConfig()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"AntSim seed must be an integer >= 0, got {seed!r}")
        self.seed = int(seed)
        c = self.config
        self._env = gym.make("Ant-v5", xml_file=ant_with_imu_path(), frame_skip=c.frame_skip,
                             reset_noise_scale=c.reset_noise_scale,
                             ctrl_cost_weight=c.ctrl_cost_weight,
                             healthy_z_range=tuple(c.healthy_z_range),
                             terminate_when_unhealthy=c.terminate_when_unhealthy).unwrapped
        self.model: mujoco.MjModel = self._env.model
        self.data: mujoco.MjData = self._env.data
        self._sensors = AntSensors(self.model)
        self._randomizer = ModelRandomizer(self.model, payload_body="torso")
        self.joint_names: tuple[str, ...] = self._sensors.joint_names
        self.foot_names: tuple[str, ...] = self._sensors.foot_names
        index = {name: i for i, name in enumerate(self.joint_names)}
        # gym action[a] = command[_to_actuator[a]]
        self._to_actuator = np.array(
            [index[self.model.joint(int(self.model.actuator_trnid[a, 0])).name]
             for a in range(self.model.nu)])
        self.ctrl_low = self.model.actuator_ctrlrange[self._inverse_order(), 0].copy()
        self.ctrl_high = self.model.actuator_ctrlrange[self._inverse_order(), 1].copy()
        self.dt_s = c.control_dt_s
        self.episode_id = -1
        self.dynamics: Dynamics | None = None
        self._step = 0
        self._return = 0.0
        self._done = True
        self._time_base_steps = 0      # control steps of sim time before this episode
        self._pending: deque[np.ndarray] = deque()
        self._noise_rng = np.random.default_rng(0)
        self._frame: SensorFrame | None = None
        self._applied = np.zeros(len(DYNAMICS_LABELS))

    def _inverse_order(self) -> np.ndarray:
        """actuator index of each command element."""
        inv = np.empty_like(self._to_actuator)
        inv[self._to_actuator] = np.arange(len(self._to_actuator))
        return inv

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def last_frame(self) -> SensorFrame | None:
        return self._frame

    def episode_seed(self, episode_id: int) -> int:
        """The default seed of an episode: a pure function of (sim seed, episode id)."""
        return int(np.random.SeedSequence([self.seed, episode_id]).generate_state(1)[0])

    def reset(self, episode_seed: int | None = None) -> SensorFrame:
        """Start the next episode: new dynamics, new initial state, episode id + 1."""
        if self._frame is not None and not self.config.reset_time_on_episode:
            self._time_base_steps += self._step + 1   # the reset takes one control period
        elif self.config.reset_time_on_episode:
            self._time_base_steps = 0
        self.episode_id += 1
        if episode_seed is None:
            episode_seed = self.episode_seed(self.episode_id)
        rng = np.random.default_rng(episode_seed)
        self.dynamics = sample_dynamics(self.config, rng)
        self._randomizer.apply(self.dynamics, self.data)
        self._applied = self._randomizer.read_applied().as_array()  # fixed for the episode
        self._env.reset(seed=int(episode_seed))
        self._noise_rng = np.random.default_rng([int(episode_seed), 1])
        delay = self.dynamics.action_delay_steps
        self._pending = deque(np.zeros(self.num_joints) for _ in range(delay))
        self._step, self._return, self._done = 0, 0.0, False
        self._frame = self._make_frame(0.0, False, False)
        return self._frame

    def step(self, command: Any) -> tuple[SensorFrame, float, bool, bool, dict]:
        """Apply one command (held for one control period) and return the next frame."""
        if self._done:
            raise RuntimeError("AntSim.step called on a finished episode (or before the first "
                               "reset); call reset() first")
        cmd = np.asarray(command, dtype=np.float64)
        if cmd.shape != (self.num_joints,):
            raise ValueError(f"AntSim.step: command must have shape ({self.num_joints},) in "
                             f"joint order {list(self.joint_names)}, got shape {cmd.shape}")
        if not np.all(np.isfinite(cmd)):
            bad = [self.joint_names[i] for i in np.flatnonzero(~np.isfinite(cmd))]
            raise ValueError(f"AntSim.step: non-finite command for joint(s) {bad}")
        self._pending.append(np.clip(cmd, self.ctrl_low, self.ctrl_high))
        applied = self._pending.popleft()
        _, reward, terminated, _, info = self._env.step(applied[self._to_actuator])
        reward -= self._shaping_cost(terminated, float(info["x_velocity"]))
        self._step += 1
        truncated = (not terminated) and self._step >= self.config.max_episode_steps
        self._return += float(reward)
        self._done = bool(terminated or truncated)
        self._frame = self._make_frame(float(reward), bool(terminated), truncated)
        info = dict(info, applied_command=applied, episode_id=self.episode_id)
        return self._frame, float(reward), bool(terminated), truncated, info

    def _shaping_cost(self, terminated: bool, forward_velocity_mps: float) -> float:
        """The config's costs beyond Ant-v5's reward for the state just reached: vertical
        velocity, tilt, the fall when this step ended the episode, and the forward reward above
        the speed cap (Ant-v5's x velocity over the step, the term its reward pays)."""
        c = self.config
        cost = c.fall_cost if terminated else 0.0
        if c.forward_speed_cap_mps > 0.0:
            cost += self._env._forward_reward_weight * max(
                0.0, forward_velocity_mps - c.forward_speed_cap_mps)
        if not (c.vertical_velocity_cost_weight or c.tilt_cost_weight):
            return cost
        vz = float(self.data.qvel[2])                  # free joint: world-frame linear velocity
        _, qx, qy, _ = self.data.qpos[3:7]             # torso orientation, w x y z
        up_z = 1.0 - 2.0 * float(qx * qx + qy * qy)
        return cost + c.vertical_velocity_cost_weight * vz * vz \
            + c.tilt_cost_weight * (1.0 - up_z)

    def _make_frame(self, reward: float, terminated: bool, truncated: bool) -> SensorFrame:
        # Gymnasium leaves sensors/contacts from the start of the last physics step; recompute
        # them for the current state (does not alter the trajectory).
        mujoco.mj_forward(self.model, self.data)
        topics = self._sensors.read(self.data, self.config.sensor_noise, self._noise_rng)
        stamp_s = (self._time_base_steps + self._step) * self.dt_s
        topics[DYNAMICS] = TopicSample({"data": self._applied.copy()},
                                       {"data": DYNAMICS_LABELS})
        episode = np.array([self.episode_id, self._step, stamp_s, reward, self._return,
                            float(terminated), float(truncated)])
        topics[EPISODE] = TopicSample({"data": episode}, {"data": EPISODE_LABELS})
        return SensorFrame(stamp_s=stamp_s, episode_id=self.episode_id, step=self._step,
                           reward=reward, episode_return=self._return, terminated=terminated,
                           truncated=truncated, topics=topics)

    def close(self) -> None:
        self._env.close()
