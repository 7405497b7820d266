"""Simulator throughput: in-process steps/s (raw Ant-v5 vs AntSim with frames) and lockstep
steps/s over DDS (sim_node as a process, answered by a driver here, one command per frame).

    .venv/bin/python bench/sim_steps.py [--steps 3000] [--dds-steps 400]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from policy_distill_ros.sim.ant import AntSim
from policy_distill_ros.sim.config import SimConfig


def raw_gym_steps_per_s(steps: int) -> float:
    import gymnasium as gym
    env = gym.make("Ant-v5").unwrapped
    env.reset(seed=0)
    cmds = np.random.default_rng(0).uniform(-1, 1, (steps, 8))
    start = time.perf_counter()
    for c in cmds:
        _, _, terminated, _, _ = env.step(c)
        if terminated:
            env.reset()
    return steps / (time.perf_counter() - start)


def antsim_steps_per_s(steps: int) -> float:
    sim = AntSim(SimConfig(), seed=0)
    sim.reset()
    cmds = np.random.default_rng(0).uniform(-1, 1, (steps, 8))
    start = time.perf_counter()
    for c in cmds:
        _, _, terminated, truncated, _ = sim.step(c)
        if terminated or truncated:
            sim.reset()
    return steps / (time.perf_counter() - start)


def lockstep_dds_steps_per_s(steps: int) -> tuple[float, float]:
    """(steps/s, median command->next-frame round trip in ms)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from policy_distill_ros.nodes.ros_common import COMMAND_QOS, SENSOR_QOS, stamp_to_s
    from policy_distill_ros.processes import NodeProcess

    rclpy.init()
    node = rclpy.create_node("sim_bench_driver")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    latest: list[JointState] = []
    node.create_subscription(JointState, "joint_states", latest.append, SENSOR_QOS)
    pub = node.create_publisher(Float64MultiArray, "policy_command", COMMAND_QOS)
    params = dict(mode="lockstep", seed=0, max_episode_steps=1000, lockstep_timeout_s=0.5)
    sim = NodeProcess("sim_node", "sim_node", params).start()
    try:
        deadline = time.monotonic() + 30.0
        while not (latest and pub.get_subscription_count() > 0):
            if time.monotonic() > deadline or not sim.alive():
                raise RuntimeError("sim_node did not come up:\n" + sim.read_log())
            executor.spin_once(timeout_sec=0.05)
        rng = np.random.default_rng(0)
        msg = Float64MultiArray()
        last_stamp = stamp_to_s(latest[-1].header.stamp)
        round_trips = []
        start = time.perf_counter()
        for _ in range(steps):
            msg.data = rng.uniform(-1, 1, 8).tolist()
            sent = time.perf_counter()
            pub.publish(msg)
            while stamp_to_s(latest[-1].header.stamp) == last_stamp:
                executor.spin_once(timeout_sec=1.0)
            round_trips.append(time.perf_counter() - sent)
            last_stamp = stamp_to_s(latest[-1].header.stamp)
            del latest[:-1]
        rate = steps / (time.perf_counter() - start)
        return rate, 1e3 * float(np.median(round_trips))
    finally:
        sim.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="in-process steps")
    parser.add_argument("--dds-steps", type=int, default=400, help="lockstep steps over DDS")
    args = parser.parse_args()
    print(f"raw gymnasium Ant-v5          : {raw_gym_steps_per_s(args.steps):8.0f} steps/s")
    print(f"AntSim (randomized, frames)   : {antsim_steps_per_s(args.steps):8.0f} steps/s")
    rate, rtt_ms = lockstep_dds_steps_per_s(args.dds_steps)
    print(f"sim_node lockstep over DDS    : {rate:8.0f} steps/s "
          f"(median command -> next frame {rtt_ms:.2f} ms)")
    print("(control dt 0.05 s: real time needs 20 steps/s)")


if __name__ == "__main__":
    main()
