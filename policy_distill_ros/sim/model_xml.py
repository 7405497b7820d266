"""Gymnasium's Ant model plus an IMU: a site at the torso origin carrying gyro and accelerometer.

Why MuJoCo sensors rather than numbers derived from qacc: the accelerometer sensor reports
proper acceleration in the site frame (gravity included, +9.81 on z at rest, about 0 in free
fall), with the Coriolis and centripetal terms of the site offset handled by MuJoCo itself,
which is exactly what a real IMU measures. The model file is generated from the installed
Gymnasium asset (not copied into this repo) and cached by content hash.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

IMU_SITE = "imu"
GYRO_SENSOR = "imu_gyro"
ACCEL_SENSOR = "imu_accel"


def gymnasium_asset(name: str) -> Path:
    """Path of a model file shipped with gymnasium's MuJoCo environments."""
    import gymnasium.envs.mujoco as mj_envs
    path = Path(mj_envs.__file__).parent / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(f"gymnasium model asset {name!r} not found at {path}")
    return path


def add_imu(xml_text: str, body: str) -> str:
    """Return the model with an IMU site on `body` and gyro + accelerometer sensors on it."""
    root = ET.fromstring(xml_text)
    target = next((b for b in root.iter("body") if b.get("name") == body), None)
    if target is None:
        raise ValueError(f"model has no body named {body!r} to carry the IMU")
    ET.SubElement(target, "site", name=IMU_SITE, pos="0 0 0", size="0.01")
    sensor = root.find("sensor")
    if sensor is None:
        sensor = ET.SubElement(root, "sensor")
    ET.SubElement(sensor, "gyro", name=GYRO_SENSOR, site=IMU_SITE)
    ET.SubElement(sensor, "accelerometer", name=ACCEL_SENSOR, site=IMU_SITE)
    return ET.tostring(root, encoding="unicode")


def ant_with_imu_path() -> str:
    """Write (once) the Ant model with an IMU on the torso and return its file path."""
    text = add_imu(gymnasium_asset("ant.xml").read_text(), body="torso")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"policy_distill_ros_ant_imu_{digest}.xml"
    if not path.is_file():
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: concurrent processes never read a half-written file
    return str(path)
