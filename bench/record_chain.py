"""Recording throughput: lockstep steps/s through the whole node chain (`policy-distill record`:
sim_node -> teacher_node -> sim_node, recorder_node and timing monitor listening) against the
same simulator + teacher in one process (SpecEnv + TeacherRunner, no ROS), same teacher, run
after each other on this machine.

    .venv/bin/python bench/record_chain.py [--teacher models/ant_teacher] [--steps 400]

Without a teacher directory, a random teacher of the demo's size ([512, 512, 256] actor) is used.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from policy_distill_ros.cli import main as cli_main
from policy_distill_ros.sim.config import SimConfig
from policy_distill_ros.sim.spec_env import make_spec_env
from policy_distill_ros.training.teacher_runner import TeacherRunner


def in_process_steps_per_s(teacher: Path, steps: int) -> float:
    runner = TeacherRunner(teacher)
    env = make_spec_env(runner.spec, SimConfig(max_episode_steps=steps), seed=0)
    obs, _ = env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(runner(obs))
        if terminated or truncated:
            obs, _ = env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def chain_steps_per_s(teacher: Path, steps: int, workdir: Path) -> dict:
    figures = workdir / "record.json"
    code = cli_main(["record", "--teacher", str(teacher), "--episodes", "1",
                     "--max-episode-steps", str(steps), "--out", str(workdir), "--bag-name",
                     "bag", "--no-progress", "--json", str(figures), "--log-dir",
                     str(workdir / "logs")])
    if code != 0:
        raise SystemExit(f"record failed ({code}); logs in {workdir / 'logs'}")
    return json.loads(figures.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default=str(REPO / "models/ant_teacher"))
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_record_"))
    teacher = Path(args.teacher)
    if not (teacher / "teacher.json").exists():
        from teacher_fixtures import make_random_teacher
        teacher = workdir / "random_teacher"
        make_random_teacher(teacher, hidden_sizes=(512, 512, 256))
        print(f"no teacher at {args.teacher}: random [512, 512, 256] teacher")
    baseline = in_process_steps_per_s(teacher, args.steps)
    chain = chain_steps_per_s(teacher, args.steps, workdir)
    rate = chain["steps_per_s"]
    print(f"\nin-process (SpecEnv + torch teacher):        {baseline:8.1f} steps/s")
    print(f"record chain (sim/teacher/recorder over DDS): {rate:8.1f} steps/s  "
          f"({rate / baseline:.2f} x in-process)")
    print(f"bag: {chain['message_counts']}")


if __name__ == "__main__":
    main()
