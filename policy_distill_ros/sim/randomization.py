"""Per-episode domain randomization: sample parameters, write them into the MuJoCo model, read
them back.

The values reported on `privileged/dynamics` are read back from the model (`read_applied`), not
echoed from the sample, so a teacher is conditioned on what the physics actually used.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from .config import SimConfig

DYNAMICS_LABELS = ("friction", "payload_kg", "motor_strength", "action_delay_steps")


@dataclass(frozen=True)
class Dynamics:
    """One episode's physical parameters."""

    friction: float          # sliding friction coefficient of every contact
    payload_kg: float        # mass added to the torso
    motor_strength: float    # actuator gear scale (1 = nominal torque)
    action_delay_steps: int  # commands take effect this many control steps late

    def as_array(self) -> np.ndarray:
        return np.array([self.friction, self.payload_kg, self.motor_strength,
                         float(self.action_delay_steps)])


def sample_dynamics(config: SimConfig, rng: np.random.Generator) -> Dynamics:
    """Draw every parameter uniformly from its configured range (always the same draw order)."""
    def uniform(r: tuple) -> float:
        return float(rng.uniform(r[0], r[1]))

    friction = uniform(config.friction_range)
    payload = uniform(config.payload_kg_range)
    strength = uniform(config.motor_strength_range)
    lo, hi = config.action_delay_steps_range
    delay = int(rng.integers(lo, hi + 1))
    return Dynamics(friction, payload, strength, delay)


class ModelRandomizer:
    """Remembers the nominal model values and applies a `Dynamics` on top of them."""

    def __init__(self, model: mujoco.MjModel, payload_body: str) -> None:
        self.model = model
        self.body_id = model.body(payload_body).id
        self.nominal_friction = model.geom_friction[:, 0].copy()
        self.nominal_mass = float(model.body_mass[self.body_id])
        self.nominal_inertia = model.body_inertia[self.body_id].copy()
        self.nominal_gear = model.actuator_gear[:, 0].copy()
        self.action_delay_steps = 0

    def apply(self, dynamics: Dynamics, data: mujoco.MjData) -> None:
        """Write `dynamics` into the model; call before resetting the episode's state."""
        m = self.model
        # MuJoCo combines two geoms' friction with max(), so setting only the floor would leave
        # every robot-floor contact at the robot's 1.0: set every geom.
        m.geom_friction[:, 0] = dynamics.friction
        # A payload spread like the torso itself: mass and inertia scale together.
        ratio = (self.nominal_mass + dynamics.payload_kg) / self.nominal_mass
        m.body_mass[self.body_id] = self.nominal_mass * ratio
        m.body_inertia[self.body_id] = self.nominal_inertia * ratio
        m.actuator_gear[:, 0] = self.nominal_gear * dynamics.motor_strength
        self.action_delay_steps = dynamics.action_delay_steps
        # Recompute what MuJoCo derives from masses (subtree masses, inverse weights used by the
        # constraint solver); it overwrites `data`, which the episode reset sets afterwards.
        mujoco.mj_setConst(m, data)

    def read_applied(self) -> Dynamics:
        """The parameters as the model holds them now."""
        m = self.model
        return Dynamics(
            friction=float(m.geom_friction[:, 0].mean()),
            payload_kg=float(m.body_mass[self.body_id] - self.nominal_mass),
            motor_strength=float(np.mean(m.actuator_gear[:, 0] / self.nominal_gear)),
            action_delay_steps=self.action_delay_steps,
        )
