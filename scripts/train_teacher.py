#!/usr/bin/env python3
"""Train the demo teacher with PPO on the embedded simulator, from privileged observations.

The teacher sees exactly the vector the teacher node assembles from ROS topics (SpecEnv runs the
same core spec code), so the policy trained here is the one the node runs. Reproducible from
`--seed`: same seed, same machine -> same teacher.

Writes into --out (default models/):
  ant_teacher_sb3.zip             Stable-Baselines3 checkpoint (the importer's input)
  ant_teacher_obs_norm.json       observation normalizer of VecNormalize (no pickle)
  ant_teacher_curve.csv / .png    training curve: mean episode return per rollout
  ant_teacher_eval.json           teacher vs random policy on held-out seeds

    .venv/bin/python scripts/train_teacher.py --timesteps 1000000 --seed 0
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.sim.config import load_sim_config
from policy_distill_ros.sim.spec_env import make_spec_env

REPO = Path(__file__).resolve().parents[1]
TEACHER_SPEC = REPO / "config/specs/ant_teacher.yaml"
SIM_CONFIG = REPO / "config/sim.yaml"
# Actor [512, 512, 256]: a teacher of the size used for legged robots; the student must fit in 2%.
NET_ARCH = [512, 512, 256]
EVAL_SEED_BASE = 1_000_000  # held-out episode seeds, never used in training


class CurveLogger(BaseCallback):
    """Mean return of the episodes finished in each rollout, with a tqdm-free one-line log."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.rows: list[tuple[int, float, float]] = []
        self.start = time.monotonic()

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        infos = list(self.model.ep_info_buffer)
        if not infos:
            return
        mean_return = float(np.mean([i["r"] for i in infos]))
        mean_len = float(np.mean([i["l"] for i in infos]))
        self.rows.append((self.num_timesteps, mean_return, mean_len))
        rate = self.num_timesteps / max(time.monotonic() - self.start, 1e-9)
        print(f"[teacher] {self.num_timesteps:>9d}/{self.total} steps  return {mean_return:8.1f}"
              f"  ep_len {mean_len:6.1f}  {rate:6.0f} steps/s", flush=True)


def make_vec_env(n_envs: int, seed: int):
    spec = load_policy_spec(TEACHER_SPEC)
    config = load_sim_config(SIM_CONFIG)

    def factory(rank: int):
        return lambda: make_spec_env(spec, config, seed=seed * 1000 + rank)

    return VecMonitor(DummyVecEnv([factory(r) for r in range(n_envs)]))


def evaluate(policy_fn, episodes: int, seed_base: int) -> dict:
    """Returns and forward distance on held-out randomized episodes."""
    spec = load_policy_spec(TEACHER_SPEC)
    env = make_spec_env(spec, load_sim_config(SIM_CONFIG), seed=seed_base)
    returns, distances, lengths = [], [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=seed_base + k)
        x0 = float(env.frame.field("privileged/odometry", "pose.pose.position")[0])
        done, total, steps = False, 0.0, 0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy_fn(obs))
            total += reward
            steps += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
        distances.append(float(env.frame.field("privileged/odometry", "pose.pose.position")[0])
                         - x0)
    env.close()
    return {"episodes": episodes, "mean_return": float(np.mean(returns)),
            "std_return": float(np.std(returns)), "mean_forward_distance_m": float(np.mean(distances)),
            "mean_episode_length": float(np.mean(lengths)), "returns": [float(r) for r in returns]}


def plot_curve(rows, random_return: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, returns = [r[0] for r in rows], [r[1] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, returns, label="teacher (PPO, privileged obs)")
    ax.axhline(random_return, color="gray", linestyle="--", label="random policy")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean episode return")
    ax.set_title("Ant teacher training on the embedded simulator")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    venv = VecNormalize(make_vec_env(args.n_envs, args.seed), norm_obs=True, norm_reward=True,
                        clip_obs=10.0, gamma=0.99)
    model = PPO("MlpPolicy", venv, seed=args.seed, n_steps=256, batch_size=256, n_epochs=10,
                learning_rate=3e-4, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, device="cpu", verbose=0,
                policy_kwargs=dict(net_arch=dict(pi=NET_ARCH, vf=NET_ARCH),
                                   activation_fn=torch.nn.ELU, log_std_init=-1.0))
    curve = CurveLogger(args.timesteps)
    model.learn(total_timesteps=args.timesteps, callback=curve)

    model.save(args.out / "ant_teacher_sb3.zip")
    rms = venv.obs_rms
    (args.out / "ant_teacher_obs_norm.json").write_text(json.dumps({
        "mean": rms.mean.tolist(), "var": rms.var.tolist(), "epsilon": float(venv.epsilon),
        "clip_obs": float(venv.clip_obs), "source": "stable_baselines3 VecNormalize"}))

    def teacher_fn(obs):
        normed = venv.normalize_obs(obs[None].astype(np.float32))
        return model.predict(normed, deterministic=True)[0][0]

    rng = np.random.default_rng(args.seed)
    action_space = venv.action_space

    def random_fn(_obs):
        return rng.uniform(action_space.low, action_space.high).astype(np.float32)

    teacher = evaluate(teacher_fn, args.eval_episodes, EVAL_SEED_BASE)
    random = evaluate(random_fn, args.eval_episodes, EVAL_SEED_BASE)
    with open(args.out / "ant_teacher_curve.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timesteps", "mean_return", "mean_episode_length"])
        writer.writerows(curve.rows)
    plot_curve(curve.rows, random["mean_return"], args.out / "ant_teacher_curve.png")
    report = {"seed": args.seed, "timesteps": args.timesteps, "net_arch": NET_ARCH,
              "wall_time_s": time.monotonic() - curve.start, "teacher": teacher,
              "random": random}
    (args.out / "ant_teacher_eval.json").write_text(json.dumps(report, indent=2))
    print(f"[teacher] teacher mean return {teacher['mean_return']:.1f} "
          f"(forward {teacher['mean_forward_distance_m']:.2f} m) vs random "
          f"{random['mean_return']:.1f} (forward {random['mean_forward_distance_m']:.2f} m)")


if __name__ == "__main__":
    main()
