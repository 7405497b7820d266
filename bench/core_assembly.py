"""Time the observation hot path (per-message extraction and build) with real rclpy messages.

Run: .venv/bin/python bench/core_assembly.py [--iterations N]
Prints median / p99 microseconds per call; the target is build() < 20 us.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sensor_msgs.msg import Imu, JointState

from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.spec import load_policy_spec

REPO = Path(__file__).resolve().parents[1]


def time_calls(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return out / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    spec = load_policy_spec(REPO / "config" / "robot_example.yaml")
    asm = ObservationAssembler(spec.observation, spec.action.size)
    joints = list(spec.action.joints)
    js = JointState(name=joints[::-1] + ["extra_joint"],
                    position=list(np.linspace(-1, 1, 13)), velocity=list(np.linspace(-2, 2, 13)))
    imu = Imu()
    imu.orientation.w = 1.0
    action = np.zeros(spec.action.size, dtype=np.float32)
    asm.set_command([0.5, 0.0, 0.1])
    for i in range(1000):  # warm-up
        asm.on_message("joint_states", js, i * 0.002)
        asm.on_message("imu", imu, i * 0.002)
        asm.build(i * 0.002)
    results = {
        "on_message(joint_states, 13 joints shuffled -> 2 terms x 12)":
            time_calls(lambda i: asm.on_message("joint_states", js, i * 0.002), args.iterations),
        "on_message(imu -> 2 terms)":
            time_calls(lambda i: asm.on_message("imu", imu, i * 0.002), args.iterations),
        "set_last_action(12)":
            time_calls(lambda i: asm.set_last_action(action), args.iterations),
        f"build(obs {spec.observation.size} = {spec.observation.step_size} x history "
        f"{spec.observation.history_length})":
            time_calls(lambda i: asm.build(i * 0.002), args.iterations),
    }
    assert asm.build(1e9).problem is None
    print(f"observation assembly, {args.iterations} calls each (microseconds)")
    for name, us in results.items():
        print(f"  {name:70s} p50 {np.percentile(us, 50):6.1f}  p99 {np.percentile(us, 99):6.1f}")


if __name__ == "__main__":
    main()
