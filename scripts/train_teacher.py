#!/usr/bin/env python3
"""Train the demo teacher with PPO on the embedded simulator, from privileged observations.

The teacher sees exactly the vector the teacher node assembles from ROS topics (SpecEnv runs the
same core spec code), so the policy trained here is the one the node runs. Reproducible from
`--seed`: same seed, same machine -> same teacher.

Writes into --out (default models/):
  ant_teacher_sb3.zip             Stable-Baselines3 checkpoint (the importer's input)
  ant_teacher_obs_norm.json       observation normalizer of VecNormalize (no pickle)
  ant_teacher_curve.csv / .png    training curve: mean episode return and length per rollout
  ant_teacher_eval.json           teacher vs random policy on held-out seeds

The shipped teacher (models/) was trained in four stages, each continuing the previous one
(`--resume`: weights, optimizer, step count, curve, normalizer) with more reward terms on top of
config/sim.yaml's Ant-v5 reward (`--sim-set`; evaluation always uses the plain reward):

    T=".venv/bin/python scripts/train_teacher.py --seed 0 --eval-episodes 0 --keep-checkpoints"
    SHAPE="--sim-set vertical_velocity_cost_weight=0.5 --sim-set tilt_cost_weight=1.0"
    $T --out /tmp/s1                                      # 1,404,928 steps: runs, hops, flips
    $T --resume /tmp/s1 $SHAPE --timesteps 2809856 --out /tmp/s2      # hops less, walks further
    $T --resume /tmp/s2 $SHAPE --sim-set fall_cost=200 --timesteps 2910208 --out /tmp/s3
    $T --resume /tmp/s3 $SHAPE --sim-set fall_cost=200 --sim-set forward_speed_cap_mps=0.8 \
        --learning-rate 1e-4 --timesteps 3110912 --out /tmp/s4  # no reward for running faster
    .venv/bin/python scripts/train_teacher.py --out /tmp/s4 --validate-checkpoints 30

The last command ranks the kept checkpoints on validation seeds (900,000+); the chosen one is
evaluated on the held-out seeds with `--evaluate-only --out DIR` and imported with
`policy-distill import-teacher --sb3 DIR/ant_teacher_sb3.zip --obs-norm-json ...`. Stages 1-2
run ~50 min each at ~470 steps/s on one core, stages 3-4 minutes. Checkpoints are written every
100,352 steps with a constant learning rate, so a run stopped at a checkpoint equals a shorter
run with the same seed, and a stage re-run with the same seed gives the same weights
(test/test_train_teacher_script.py). The default sim config is config/sim.yaml (randomization
and reward weights).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.sim.config import SimConfig, load_sim_config
from policy_distill_ros.sim.spec_env import make_spec_env
from policy_distill_ros.training.evaluation import evaluate_policy, held_out_seeds, validation_seeds
from policy_distill_ros.training.rollout import TEACHER, FunctionActor

REPO = Path(__file__).resolve().parents[1]
TEACHER_SPEC = REPO / "config/specs/ant_teacher.yaml"
SIM_CONFIG = REPO / "config/sim.yaml"
# Actor [512, 512, 256]: a teacher of the size used for legged robots; the student must fit in 2%.
NET_ARCH = [512, 512, 256]
# The critic is not part of the teacher: a smaller one halves the update cost on a CPU.
CRITIC_ARCH = [256, 256]


class CurveLogger(BaseCallback):
    """Mean return of the episodes finished in each rollout, with a tqdm-free one-line log."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.rows: list[tuple[int, float, float]] = []
        self.start = time.monotonic()
        self.start_steps = 0  # a resumed run measures its rate from where it resumed

    def _on_step(self) -> bool:
        return True

    def save_checkpoint(self, out: Path, keep: bool = False) -> None:
        """Latest model, normalizer and curve, so a long run leaves a usable teacher at every
        checkpoint (`--evaluate-only` then evaluates and plots it); with `keep`, also a copy in
        out/checkpoints/<steps>/ to choose from on validation seeds afterwards."""
        dirs = [out] + ([out / "checkpoints" / str(self.num_timesteps)] if keep else [])
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
            self.model.save(d / "ant_teacher_sb3.zip")
            save_obs_norm(self.model.get_env(), d / "ant_teacher_obs_norm.json")
            write_curve(self.rows, d / "ant_teacher_curve.csv")

    def _on_rollout_end(self) -> None:
        infos = list(self.model.ep_info_buffer)
        if not infos:
            return
        mean_return = float(np.mean([i["r"] for i in infos]))
        mean_len = float(np.mean([i["l"] for i in infos]))
        self.rows.append((self.num_timesteps, mean_return, mean_len))
        rate = (self.num_timesteps - self.start_steps) / max(time.monotonic() - self.start, 1e-9)
        print(f"[teacher] {self.num_timesteps:>9d}/{self.total} steps  return {mean_return:8.1f}"
              f"  ep_len {mean_len:6.1f}  {rate:6.0f} steps/s", flush=True)


def save_obs_norm(venv: VecNormalize, path: Path) -> None:
    rms = venv.obs_rms
    path.write_text(json.dumps({
        "mean": rms.mean.tolist(), "var": rms.var.tolist(), "epsilon": float(venv.epsilon),
        "clip_obs": float(venv.clip_obs), "source": "stable_baselines3 VecNormalize"}))


def write_curve(rows, path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timesteps", "mean_return", "mean_episode_length"])
        writer.writerows(rows)


def read_curve(path: Path) -> list[tuple[int, float, float]]:
    with open(path, newline="") as f:
        return [(int(r["timesteps"]), float(r["mean_return"]), float(r["mean_episode_length"]))
                for r in csv.DictReader(f)]


def make_vec_env(n_envs: int, seed: int, config: SimConfig):
    spec = load_policy_spec(TEACHER_SPEC)

    def factory(rank: int):
        return lambda: make_spec_env(spec, config, seed=seed * 1000 + rank)

    return VecMonitor(DummyVecEnv([factory(r) for r in range(n_envs)]))


def plot_curve(rows, random_return: float, path: Path) -> None:
    """Return and episode length per rollout: in a staged run the return's scale changes with
    the reward terms of each stage, while the episode length (falls end episodes early) reads
    the same across stages."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r[0] for r in rows]
    fig, (ax_return, ax_length) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax_return.plot(steps, [r[1] for r in rows], label="teacher (PPO, privileged obs)")
    ax_return.axhline(random_return, color="gray", linestyle="--", label="random policy")
    ax_return.set_ylabel("mean episode return\n(training reward)")
    ax_return.set_title("Ant teacher training on the embedded simulator")
    ax_return.legend()
    ax_length.plot(steps, [r[2] for r in rows], color="tab:green")
    ax_length.set_ylabel("mean episode length\n(steps, 1,000 = no fall)")
    ax_length.set_xlabel("environment steps")
    for ax in (ax_return, ax_length):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(args) -> tuple[list, float]:
    venv = VecNormalize(make_vec_env(args.n_envs, args.seed, args.config), norm_obs=True,
                        norm_reward=True, clip_obs=10.0, gamma=0.99)
    # 8 envs x 256 steps per rollout, 16 minibatches x 5 epochs: the update of the 419k-parameter
    # actor costs about as much as the simulation on one CPU core at this setting; the teacher
    # sees its height (the episode ends outside the sim config's healthy_z_range).
    model = PPO("MlpPolicy", venv, seed=args.seed, n_steps=256, batch_size=128, n_epochs=5,
                learning_rate=args.learning_rate, gamma=0.99, gae_lambda=0.95, clip_range=0.2,
                ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, device="cpu", verbose=0,
                policy_kwargs=dict(net_arch=dict(pi=NET_ARCH, vf=CRITIC_ARCH),
                                   activation_fn=torch.nn.ELU, log_std_init=-0.5))
    curve = CurveLogger(args.timesteps)
    if args.resume:
        model = resume(model, venv, curve, args.resume)
    # Chunks of --checkpoint-steps: the constant learning rate and clip range make the state at
    # a checkpoint identical to the end of a shorter run with the same seed.
    chunk = max(args.checkpoint_steps, 1)
    while model.num_timesteps < args.timesteps:
        model.learn(total_timesteps=min(chunk, args.timesteps - model.num_timesteps),
                    callback=curve, reset_num_timesteps=False)
        curve.save_checkpoint(args.out, keep=args.keep_checkpoints)
    return curve.rows, time.monotonic() - curve.start


def resume(model: PPO, venv: VecNormalize, curve: CurveLogger, source: Path) -> PPO:
    """Continue from a checkpoint written by this script: weights, optimizer, step count, curve
    and observation normalizer (its count taken as the checkpoint's steps). The return
    normalizer is measured afresh over one rollout of the loaded policy, because a resumed stage
    may change the reward (the shaping terms) and PPO's value targets are scaled by it."""
    loaded = PPO.load(source / "ant_teacher_sb3.zip", env=venv, device="cpu")
    loaded.set_random_seed(model.seed)
    loaded.learning_rate = model.learning_rate   # a later stage may anneal it
    loaded._setup_lr_schedule()
    curve.rows = read_curve(source / "ant_teacher_curve.csv")
    curve.start_steps = loaded.num_timesteps
    norm = json.loads((source / "ant_teacher_obs_norm.json").read_text())
    obs_rms = venv.obs_rms
    obs_rms.mean, obs_rms.var = np.asarray(norm["mean"]), np.asarray(norm["var"])
    obs_rms.count = float(loaded.num_timesteps)
    kept = obs_rms.copy()
    obs = venv.reset()
    for _ in range(model.n_steps):
        obs, *_ = venv.step(loaded.predict(obs, deterministic=False)[0])
    venv.obs_rms = kept  # the rollout only measures the return scale
    loaded._last_obs = venv.reset()
    print(f"[teacher] resumed from {source} at {loaded.num_timesteps} steps", flush=True)
    return loaded


def with_overrides(config: SimConfig, assignments: list[str]) -> SimConfig:
    """`KEY=VALUE` strings applied to a SimConfig (validated by it, unknown keys refused)."""
    changes = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not hasattr(config, key.strip()):
            raise SystemExit(f"--sim-set {item!r}: expected KEY=VALUE with KEY a sim config "
                             f"field ({', '.join(sorted(config.to_dict()))})")
        changes[key.strip()] = yaml.safe_load(value)
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"--sim-set: {exc}") from None


def load_teacher(directory: Path) -> tuple[FunctionActor, PPO]:
    """The teacher saved in `directory` (SB3 zip + JSON normalizer) as a deterministic actor."""
    model = PPO.load(directory / "ant_teacher_sb3.zip", device="cpu")
    norm = json.loads((directory / "ant_teacher_obs_norm.json").read_text())
    mean, std = np.asarray(norm["mean"]), np.sqrt(np.asarray(norm["var"]) + norm["epsilon"])

    def act(obs):
        normed = np.clip((obs - mean) / std, -norm["clip_obs"], norm["clip_obs"])
        return model.predict(normed[None].astype(np.float32), deterministic=True)[0][0]

    return FunctionActor(act, TEACHER), model


def evaluate(actor: FunctionActor, seeds: list[int], config: SimConfig, name: str) -> dict:
    """Return, forward distance, length and falls (`terminated_episodes`: ended unhealthy) per
    seed, through the evaluation every other figure of the package uses."""
    spec = load_policy_spec(TEACHER_SPEC)
    return evaluate_policy(actor, spec, config, seeds, name=name).to_dict()


def evaluate_saved(out: Path, eval_episodes: int, seed: int,
                   config: SimConfig) -> tuple[dict, dict]:
    """Teacher (as saved) and a uniform random policy on the held-out seeds."""
    teacher, model = load_teacher(out)
    rng = np.random.default_rng(seed)
    low, high = model.action_space.low, model.action_space.high
    random = FunctionActor(lambda _obs: rng.uniform(low, high), TEACHER)
    seeds = held_out_seeds(eval_episodes)
    return (evaluate(teacher, seeds, config, "teacher"),
            evaluate(random, seeds, config, "uniform random actions"))


def validate_checkpoints(run: Path, episodes: int, config: SimConfig) -> list[dict]:
    """Every checkpoint kept in run/checkpoints/ on the validation seeds (model selection; the
    held-out seeds stay unseen), most fall-free episodes first, then the longest distance."""
    kept = run / "checkpoints"
    directories = sorted((d for d in kept.iterdir() if d.name.isdigit()),
                         key=lambda d: int(d.name)) if kept.is_dir() else []
    if not directories:
        raise SystemExit(f"--validate-checkpoints: no checkpoints in {kept} (train with "
                         f"--keep-checkpoints --out {run})")
    rows = []
    seeds = validation_seeds(episodes)
    for directory in directories:
        r = evaluate(load_teacher(directory)[0], seeds, config, directory.name)
        rows.append({"checkpoint": str(directory), "steps": int(directory.name),
                     "fall_free": episodes - r["terminated_episodes"],
                     "mean_return": r["mean_return"],
                     "mean_forward_distance_m": r["mean_forward_distance_m"],
                     "min_forward_distance_m": min(r["forward_distances_m"])})
        print(f"[teacher] {directory.name:>9}: fall-free {rows[-1]['fall_free']:>3d}/{episodes}"
              f"  return {r['mean_return']:7.1f}  forward {r['mean_forward_distance_m']:5.1f} m"
              f" (min {rows[-1]['min_forward_distance_m']:5.1f})", flush=True)
    rows.sort(key=lambda r: (-r["fall_free"], -r["mean_forward_distance_m"]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=1_404_928)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--eval-episodes", type=int, default=10,
                        help="held-out episodes (seeds 1,000,000+) to evaluate on; 0: none")
    parser.add_argument("--out", type=Path, default=REPO / "models")
    parser.add_argument("--checkpoint-steps", type=int, default=100_000,
                        help="save the latest teacher every this many steps")
    parser.add_argument("--sim-config", type=Path, default=SIM_CONFIG,
                        help="simulator params file (randomization, reward weights)")
    parser.add_argument("--learning-rate", type=float, default=3e-4,
                        help="Adam step size (constant within a run; a resumed stage may lower it)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="continue training from a checkpoint directory of this script")
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="keep every checkpoint in --out/checkpoints/<steps>/")
    parser.add_argument("--sim-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one sim config value (YAML syntax), e.g. "
                             "fall_cost=200; repeatable (a resumed stage may change the reward)")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training: evaluate and plot the teacher saved in --out")
    parser.add_argument("--validate-checkpoints", type=int, default=0, metavar="EPISODES",
                        help="skip training: evaluate every checkpoint kept in --out/checkpoints "
                             "on this many validation seeds (900,000+) and rank them")
    args = parser.parse_args()
    args.config = with_overrides(load_sim_config(args.sim_config), args.sim_set)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    if args.validate_checkpoints:
        rows = validate_checkpoints(args.out, args.validate_checkpoints, args.config)
        (args.out / "checkpoint_validation.json").write_text(json.dumps(rows, indent=2))
        print(f"[teacher] best: {rows[0]['checkpoint']}")
        return
    wall_time_s = None
    if args.evaluate_only:
        rows = read_curve(args.out / "ant_teacher_curve.csv")
    else:
        rows, wall_time_s = train(args)
    if args.eval_episodes < 1:
        return
    teacher, random = evaluate_saved(args.out, args.eval_episodes, args.seed, args.config)
    plot_curve(rows, random["mean_return"], args.out / "ant_teacher_curve.png")
    report = {"seed": args.seed, "timesteps": rows[-1][0] if rows else 0, "net_arch": NET_ARCH,
              "critic_arch": CRITIC_ARCH, "wall_time_s": wall_time_s,
              "teacher": teacher, "random": random}
    (args.out / "ant_teacher_eval.json").write_text(json.dumps(report, indent=2))
    for name, r in (("teacher", teacher), ("random", random)):
        print(f"[teacher] {name}: mean return {r['mean_return']:.1f} +- {r['std_return']:.1f}, "
              f"forward {r['mean_forward_distance_m']:.2f} m, fell in {r['terminated_episodes']}/"
              f"{r['episodes']} episodes")


if __name__ == "__main__":
    main()
