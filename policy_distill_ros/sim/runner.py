"""Episode bookkeeping and command checking for anything that drives the sim step by step.

ROS-free, so the node stays thin and this logic is testable without DDS. Episode boundary rule:
the terminal frame (terminated or truncated) is delivered like any other; the next `advance`
starts the following episode instead of stepping, so in lockstep the policy's answer to a
terminal frame acknowledges it and every frame gets exactly one answer.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ant import AntSim
from .frame import SensorFrame


class CommandError(ValueError):
    """A command that cannot be applied; the message says what is wrong."""


class CommandMapper:
    """Turn a received command into the sim's joint order.

    Labelled commands (Float64MultiArray layout labels) are matched by joint name; unlabelled
    ones must have exactly `len(command_joints)` values in `command_joints` order.
    """

    def __init__(self, sim_joints: Sequence[str], command_joints: Sequence[str] | None = None):
        self.sim_joints = tuple(sim_joints)
        self.command_joints = tuple(command_joints) if command_joints else self.sim_joints
        self._index = {name: i for i, name in enumerate(self.sim_joints)}
        unknown = [j for j in self.command_joints if j not in self._index]
        if unknown or sorted(self.command_joints) != sorted(self.sim_joints):
            raise ValueError(f"command joints {list(self.command_joints)} must name each sim "
                             f"joint {list(self.sim_joints)} exactly once"
                             + (f"; unknown: {unknown}" if unknown else ""))
        self._default_order = np.array([self._index[j] for j in self.command_joints])

    def to_sim_order(self, values: Sequence[float], labels: Sequence[str] | None = None
                     ) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64).ravel()
        if labels:
            labels = [s.strip() for s in labels]
            if len(labels) != len(values):
                raise CommandError(f"command has {len(values)} values but {len(labels)} labels")
            unknown = [j for j in labels if j not in self._index]
            missing = [j for j in self.sim_joints if j not in labels]
            if unknown or missing or len(set(labels)) != len(labels):
                raise CommandError(f"command labels {labels} do not match the joints "
                                   f"{list(self.sim_joints)} (unknown: {unknown}, missing: "
                                   f"{missing})")
            order = np.array([self._index[j] for j in labels])
            names = labels
        else:
            if len(values) != len(self.command_joints):
                raise CommandError(f"command has {len(values)} values, expected "
                                   f"{len(self.command_joints)} in joint order "
                                   f"{list(self.command_joints)}")
            order = self._default_order
            names = self.command_joints
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(values))]
        if bad:
            raise CommandError(f"command is not finite for joint(s) {bad}")
        out = np.empty(len(self.sim_joints))
        out[order] = values
        return out


class SimRunner:
    """Steps the sim with the held command, resets after terminal frames, stops after
    `num_episodes` (0 = run forever)."""

    def __init__(self, sim: AntSim, num_episodes: int = 0) -> None:
        if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) \
                or num_episodes < 0:
            raise ValueError(f"num_episodes must be an integer >= 0, got {num_episodes!r}")
        self.sim = sim
        self.num_episodes = num_episodes
        self.episodes_done = 0
        self.frame: SensorFrame | None = None
        self.finished = False

    def start(self) -> SensorFrame:
        self.frame = self.sim.reset()
        return self.frame

    def advance(self, command: np.ndarray) -> SensorFrame | None:
        """The next frame; None once `finished` (the last episode's terminal frame was given)."""
        if self.finished:
            return None
        if self.frame is None:
            return self.start()
        if self.frame.done:
            self.frame = self.sim.reset()
            return self.frame
        self.frame, *_ = self.sim.step(command)
        if self.frame.done:
            self.episodes_done += 1
            # Set with the last terminal frame, so a caller can publish it and then stop.
            self.finished = bool(self.num_episodes) and self.episodes_done >= self.num_episodes
        return self.frame
