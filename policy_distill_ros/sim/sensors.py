"""Read a SensorFrame's topics out of MuJoCo's model/data (call after `mj_forward`).

Conventions, matching the ROS messages the node publishes:
- quaternions are (x, y, z, w) (MuJoCo stores w, x, y, z);
- IMU angular velocity and linear acceleration are in the torso (body) frame, acceleration is
  proper acceleration (gravity included);
- odometry linear velocity is in the world frame, angular velocity in the body frame (MuJoCo's
  free-joint convention; the node documents it in the message frame ids);
- joint effort is the actuator torque on that joint (N m), after motor-strength scaling.
"""
from __future__ import annotations

import mujoco
import numpy as np

from .config import SensorNoise
from .frame import CONTACT_FORCES, IMU, JOINT_STATES, ODOMETRY, TopicSample
from .model_xml import ACCEL_SENSOR, GYRO_SENSOR

HINGE = int(mujoco.mjtJoint.mjJNT_HINGE)


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """MuJoCo (w, x, y, z) -> ROS (x, y, z, w), normalized."""
    q = np.asarray(q, dtype=np.float64)
    out = np.array([q[1], q[2], q[3], q[0]])
    return out / np.linalg.norm(out)


class AntSensors:
    """Index tables computed once per model; `read()` is then a few array copies."""

    def __init__(self, model: mujoco.MjModel, base_body: str = "torso") -> None:
        self.model = model
        joints = [j for j in range(model.njnt) if model.jnt_type[j] == HINGE]
        self.joint_names = tuple(model.joint(j).name for j in joints)
        self.qpos_idx = np.array([model.jnt_qposadr[j] for j in joints])
        self.dof_idx = np.array([model.jnt_dofadr[j] for j in joints])
        self.base_id = model.body(base_body).id
        self.base_qpos = int(model.jnt_qposadr[model.body_jntadr[self.base_id]])
        self.base_dof = int(model.jnt_dofadr[model.body_jntadr[self.base_id]])
        gyro, accel = model.sensor(GYRO_SENSOR), model.sensor(ACCEL_SENSOR)
        self.gyro_slice = slice(int(gyro.adr[0]), int(gyro.adr[0]) + 3)
        self.accel_slice = slice(int(accel.adr[0]), int(accel.adr[0]) + 3)
        # Feet: the body each ankle joint moves; named foot_<n> after ankle_<n>.
        ankles = [j for j in joints if model.joint(j).name.startswith("ankle_")]
        self.foot_names = tuple("foot_" + model.joint(j).name.split("_", 1)[1] for j in ankles)
        foot_bodies = [int(model.jnt_bodyid[j]) for j in ankles]
        self.geom_foot = np.full(model.ngeom, -1, dtype=np.int64)
        for k, body in enumerate(foot_bodies):
            self.geom_foot[model.geom_bodyid == body] = k
        self._force6 = np.zeros(6)

    def contact_force_norms(self, data: mujoco.MjData) -> np.ndarray:
        """Norm of the total contact force on each foot (N), from the solver's contact forces."""
        total = np.zeros((len(self.foot_names), 3))
        for i in range(data.ncon):
            c = data.contact[i]
            f1, f2 = self.geom_foot[c.geom1], self.geom_foot[c.geom2]
            if f1 < 0 and f2 < 0:
                continue
            mujoco.mj_contactForce(self.model, data, i, self._force6)
            world = c.frame.reshape(3, 3).T @ self._force6[:3]  # force of geom1 on geom2
            if f2 >= 0:
                total[f2] += world
            if f1 >= 0:
                total[f1] -= world
        return np.linalg.norm(total, axis=1)

    def read(self, data: mujoco.MjData, noise: SensorNoise,
             rng: np.random.Generator) -> dict[str, TopicSample]:
        """The robot's sensors (with noise) and the privileged ground truth (never noisy)."""
        n = len(self.joint_names)
        position = data.qpos[self.qpos_idx].copy()
        velocity = data.qvel[self.dof_idx].copy()
        effort = data.qfrc_actuator[self.dof_idx].copy()
        gyro = data.sensordata[self.gyro_slice].copy()
        accel = data.sensordata[self.accel_slice].copy()
        if noise.enabled:  # always four draws, so noise on/off does not shift other streams
            position += rng.normal(0.0, 1.0, n) * noise.joint_position_std
            velocity += rng.normal(0.0, 1.0, n) * noise.joint_velocity_std
            gyro += rng.normal(0.0, 1.0, 3) * noise.angular_velocity_std
            accel += rng.normal(0.0, 1.0, 3) * noise.linear_acceleration_std
        orientation = wxyz_to_xyzw(data.xquat[self.base_id])
        names = self.joint_names
        q, v = self.base_qpos, self.base_dof
        return {
            JOINT_STATES: TopicSample(
                {"position": position, "velocity": velocity, "effort": effort},
                {"position": names, "velocity": names, "effort": names}),
            IMU: TopicSample(
                {"orientation": orientation, "angular_velocity": gyro,
                 "linear_acceleration": accel}, {}),
            ODOMETRY: TopicSample(
                {"pose.pose.position": data.qpos[q:q + 3].copy(),
                 "pose.pose.orientation": orientation.copy(),
                 "twist.twist.linear": data.qvel[v:v + 3].copy(),
                 "twist.twist.angular": data.qvel[v + 3:v + 6].copy()}, {}),
            CONTACT_FORCES: TopicSample({"data": self.contact_force_norms(data)},
                                        {"data": self.foot_names}),
        }
