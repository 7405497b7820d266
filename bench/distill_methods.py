"""Distillation methods side by side: same demonstrations, same student size, one run.

Run: .venv/bin/python bench/distill_methods.py [--teacher models/ant_teacher] [--seed 0]
         [--demo-episodes 30] [--eval-episodes 20] [--epochs 60] [--json out.json]
     .venv/bin/python bench/distill_methods.py --combine s0.json s1.json s2.json
         (the table over seeds: mean of the per-seed mean returns and a 95 % t interval)

`--seed S` changes everything a seed decides: the demonstration episodes (training seeds
S * 1000 + k), the DAgger rounds' episodes after them, the students' initialization and the
episode split; the held-out evaluation seeds (1_000_000 + k) are the same for every seed, so
the teacher's figure is shared. Run one process per seed (in parallel if cores allow), then
`--combine` their JSON files.

1. The teacher drives `--demo-episodes` training episodes (seeds 0..N-1) in-process; every
   method learns from these rows (student obs without privileged terms, teacher obs, teacher
   actions). DAgger additionally collects its own student-driven rounds, as it must.
2. Methods, all with the same student (history MLP, `--hidden`, default 48x48 = 7,696
   parameters) and the same epochs / batch size / learning rate:
   - bc: behavioural cloning on the executed action (limit-aware MSE, `losses.limit_aware_error`);
   - bc_kl: + KL(teacher_T || student) of the Gaussians, centred on the executed action
     (`--kl-weight`, `--temperature`);
   - bc_kl_t2: the same at twice the temperature (a wider student Gaussian, the mean's
     weight in the KL divided by 4);
   - bc_feat: + the teacher's last hidden layer (standardized per unit) matched through a
     learned projection (`--feature-weight`);
   - dagger: bc's student, then `--dagger-rounds` in-process DAgger rounds (warm start); the
     round with the best return on validation seeds (900_000 + k) is kept (round 0 = bc);
   - progressive: teacher -> `--medium` student -> the small student;
   - imitation_bc: the `imitation` library's BC (SB3 ActorCriticPolicy with the same actor
     layers; its inputs normalized with the same statistics as ours), when importable.
3. Every student runs in closed loop on `--eval-episodes` held-out seeds (1_000_000 + k) next to
   the teacher: ours as exported ONNX through core.OnnxPolicy (the node's path), imitation's
   through its torch `policy.predict`.

Printed: return (mean, std), return ratio vs the teacher, parameters, parameter ratio, training
wall-clock, wall-clock ratio vs imitation's BC (same run, same machine), and the targets of
DESIGN.md (student <= 2% of the teacher's parameters, no privileged input, >= 95% of the
teacher's return). Times are wall-clock on a shared machine: compare ratios, not seconds.

`imitation` (1.0.1, the latest release) requires gymnasium~=0.29 and stable-baselines3~=2.2.1,
which cannot coexist with the gymnasium>=1.0 (Ant-v5) this project uses, so it is not in
requirements/. Its BC code runs on the installed versions; point `--imitation-path` at an
unpacked `imitation` wheel (`pip download imitation==1.0.1 --no-deps`, unzip) to include it.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from policy_distill_ros.commands.evaluate import load_teacher_and_spec, sim_config_from_args
from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.training.dagger import DaggerConfig, run_dagger
from policy_distill_ros.training.evaluation import (
    evaluate_policy,
    format_table,
    held_out_seeds,
    policy_file_figures,
)
from policy_distill_ros.training.networks import count_parameters
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.progressive import ProgressiveConfig, run_progressive
from policy_distill_ros.training.rollout import (
    STUDENT,
    FunctionActor,
    OnnxActor,
    collect,
    teacher_actor,
)
from policy_distill_ros.training.trainer import TrainConfig, executed_bounds, export_student, fit

METHODS = ("bc", "bc_kl", "bc_kl_t2", "bc_feat", "dagger", "progressive", "imitation_bc")
COLUMNS = (("method", "method", ""), ("mean_return", "return", ".1f"), ("std_return", "std", ".1f"),
           ("return_ratio", "ret/teacher", ".3f"),
           ("mean_forward_distance_m", "forward m", ".2f"), ("params", "params", ",d"),
           ("param_ratio", "params/teacher", ".4f"), ("train_s", "train s", ".1f"),
           ("wall_ratio_vs_imitation", "time/imitation", ".2f"),
           ("train_samples", "samples", ",d"), ("note", "note", ""))


def _train_config(args, loss: dict, hidden) -> dict:
    return {"student": {"kind": "history_mlp", "hidden_sizes": list(hidden)}, "loss": loss,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "val_fraction": 0.1, "seed": args.seed, "num_threads": 1}


T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262}   # Student's t, 97.5 % quantile, by degrees of freedom


def interval95(values) -> tuple[float, float]:
    """Mean and half-width of the 95 % t interval of the mean (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float(v.mean()), 0.0
    t = T_975.get(v.size - 1, 1.96)
    return float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(v.size))


def combine(paths) -> int:
    """The methods table over seeds from per-seed JSON files."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    teacher = runs[0]["teacher"]
    by_method: dict[str, list[dict]] = {}
    for run in runs:
        for row in run["methods"]:
            by_method.setdefault(row["method"], []).append(row)
    print(f"{len(runs)} seeds ({', '.join(str(r['args'].get('seed')) for r in runs)}); teacher "
          f"{teacher['mean_return']:.1f} on {len(teacher['returns'])} held-out episodes, "
          f"{teacher['mean_forward_distance_m']:.1f} m")
    print("| method | seeds | mean return | 95 % interval | return / teacher | forward m | "
          "per-seed returns | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, rows in by_method.items():
        mean, half = interval95([r["mean_return"] for r in rows])
        fwd = float(np.mean([r["mean_forward_distance_m"] for r in rows]))
        per = ", ".join(f"{r['mean_return']:.0f}" for r in rows)
        train = float(np.mean([r["train_s"] for r in rows]))
        print(f"| {method} | {len(rows)} | {mean:.1f} | ± {half:.1f} | "
              f"{mean / teacher['mean_return']:.2f} ({(mean - half) / teacher['mean_return']:.2f}"
              f" - {(mean + half) / teacher['mean_return']:.2f}) | {fwd:.1f} | {per} | "
              f"{train:.1f} |")
    return 0


def _imitation_bc(args, dataset, labels, student_spec, hidden):
    """(wall-clock s, actor fn, actor params) of imitation's BC on the same rows."""
    import gymnasium as gym
    from imitation.algorithms import bc
    from imitation.data import types
    from imitation.util import logger as imitation_logger
    from stable_baselines3.common.policies import ActorCriticPolicy

    norm = EmpiricalNormalizer(NormalizerConfig(size=student_spec.observation.size, eps=1e-2,
                                                clip=10.0))
    norm.update(torch.as_tensor(dataset.student_obs))
    norm.freeze()
    with torch.no_grad():
        obs = norm(torch.as_tensor(dataset.student_obs)).numpy()
    # BC reads obs and acts only; Transitions also wants next_obs / dones (episode ends)
    last = np.r_[dataset.episode_id[1:] != dataset.episode_id[:-1], True]
    next_obs = np.where(last[:, None], obs, np.roll(obs, -1, axis=0))
    size = student_spec.observation.size
    obs_space = gym.spaces.Box(-np.inf, np.inf, (size,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (student_spec.action.size,), np.float32)
    torch.manual_seed(0)
    started = time.perf_counter()
    policy = ActorCriticPolicy(obs_space, act_space, lambda _: args.lr,
                               net_arch=dict(pi=list(hidden), vf=[]),
                               activation_fn=torch.nn.ELU)
    trainer = bc.BC(observation_space=obs_space, action_space=act_space,
                    rng=np.random.default_rng(0), policy=policy,
                    demonstrations=types.Transitions(
                        obs=obs, acts=labels.astype(np.float32),
                        infos=np.array([{}] * len(obs)), next_obs=next_obs, dones=last),
                    batch_size=args.batch_size, optimizer_kwargs={"lr": args.lr}, device="cpu",
                    custom_logger=imitation_logger.configure(format_strs=[]))
    trainer.train(n_epochs=args.epochs, progress_bar=False, log_interval=10 ** 9)
    train_s = time.perf_counter() - started
    policy = trainer.policy.eval()
    actor_params = sum(p.numel() for name, p in policy.named_parameters()
                       if name.startswith(("mlp_extractor.policy_net", "action_net", "log_std")))

    @torch.no_grad()
    def act(raw_obs):
        x = norm(torch.as_tensor(np.asarray(raw_obs, np.float32)).reshape(1, -1)).numpy()
        return policy.predict(x, deterministic=True)[0].reshape(-1)

    return train_s, act, actor_params


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=str(REPO / "models/ant_teacher"))
    p.add_argument("--teacher-normalizer", default=None)
    p.add_argument("--teacher-spec", default=str(REPO / "config/specs/ant_teacher.yaml"))
    p.add_argument("--student-spec", default=str(REPO / "config/specs/ant_student.yaml"))
    p.add_argument("--sim-config", default=str(REPO / "config/sim.yaml"))
    p.add_argument("--max-episode-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0,
                   help="training seeds, initialization and split (see the module docstring)")
    p.add_argument("--combine", nargs="+", default=None, metavar="JSON",
                   help="print the table over seeds from per-seed --json files and exit")
    p.add_argument("--kl-weight", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--feature-weight", type=float, default=0.1)
    p.add_argument("--demo-episodes", type=int, default=30)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, nargs="+", default=[48, 48])
    p.add_argument("--medium", type=int, nargs="+", default=[256, 256],
                   help="progressive: the intermediate student's layers")
    p.add_argument("--dagger-rounds", type=int, default=4)
    p.add_argument("--dagger-episodes", type=int, default=20, help="per round")
    p.add_argument("--dagger-epochs", type=int, default=20, help="retraining epochs per round")
    p.add_argument("--dagger-val-episodes", type=int, default=5,
                   help="validation episodes per round (seeds 900000+k) to keep the best round; "
                        "0: keep the last round")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--imitation-path", default=None,
                   help="directory holding the `imitation` package (added to sys.path)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.combine:
        return combine(args.combine)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; known {list(METHODS)}")
    if args.imitation_path:
        sys.path.insert(0, args.imitation_path)
    torch.set_num_threads(1)

    teacher, tnorm, info, teacher_spec = load_teacher_and_spec(args.teacher, args.teacher_spec,
                                                               args.teacher_normalizer)
    student_spec = load_policy_spec(args.student_spec)
    student_spec.observation.require_no_privileged()
    sim_config = sim_config_from_args(args.sim_config, args.max_episode_steps)
    seeds = held_out_seeds(args.eval_episodes)
    t_params = count_parameters(teacher)
    labeler = teacher_actor(teacher, tnorm)
    print(f"teacher {args.teacher} ({t_params:,} params, sha256 {info.sha256[:12]}...); "
          f"student spec {student_spec.observation.size} inputs, no privileged terms", flush=True)

    t0 = time.perf_counter()
    first = args.seed * 1000
    demo = collect(student_spec, teacher_spec, sim_config,
                   range(first, first + args.demo_episodes), labeler, labeler,
                   source="bench/teacher-demos")
    print(f"demonstrations: {len(demo.dataset):,} samples, {args.demo_episodes} episodes, "
          f"mean return {demo.summary()['mean_return']:.1f} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    teacher_eval = evaluate_policy(labeler, teacher_spec, sim_config, seeds, name="teacher")
    print(f"teacher held-out: {teacher_eval.mean_return:.1f} +- {teacher_eval.std_return:.1f}",
          flush=True)

    rows, results, tmp = [], {}, Path(tempfile.mkdtemp(prefix="distill_methods_"))

    def closed_loop(method, result, train_s, samples, extra=None):
        path = tmp / f"{method}.onnx"
        export_student(result, student_spec, path, {"teacher_sha256": info.sha256,
                                                    "method": method})
        ev = evaluate_policy(OnnxActor(path, student_spec), student_spec, sim_config, seeds,
                             name=method)
        row = {"method": method, "mean_return": ev.mean_return, "std_return": ev.std_return,
               "mean_forward_distance_m": ev.mean_forward_distance_m,
               "params": count_parameters(result.student), "train_s": train_s,
               "train_samples": samples, "onnx_bytes": policy_file_figures(path)["onnx_bytes"],
               "latency_p50_us": ev.latency["p50"] * 1e6, "latency_p99_us": ev.latency["p99"] * 1e6,
               "returns": ev.returns.tolist(), **(extra or {})}
        rows.append(row)
        print(f"  {method}: return {row['mean_return']:.1f}, train {train_s:.1f} s", flush=True)
        return row

    losses = {"bc": {"bc_weight": 1.0},
              "bc_kl": {"bc_weight": 1.0, "kl_weight": args.kl_weight,
                        "temperature": args.temperature},
              "bc_kl_t2": {"bc_weight": 1.0, "kl_weight": args.kl_weight,
                           "temperature": 2.0 * args.temperature},
              "bc_feat": {"bc_weight": 1.0, "feature_weight": args.feature_weight,
                          "feature_pairs": [[f"layer_{len(teacher.config.hidden_sizes) - 1}",
                                             f"layer_{len(args.hidden) - 1}"]]}}
    # warm-up (first-call costs of torch) so that no timed method pays them
    fit(teacher, tnorm, demo.dataset, TrainConfig.from_dict(
        dict(_train_config(args, losses["bc"], args.hidden), epochs=1, val_fraction=0.0),
        student_spec=student_spec), progress=False, action_spec=student_spec.action)
    need_bc = any(m in methods for m in ("bc", "dagger"))
    for method in ("bc", "bc_kl", "bc_kl_t2", "bc_feat"):
        if method not in methods and not (method == "bc" and need_bc):
            continue
        cfg = TrainConfig.from_dict(_train_config(args, losses[method], args.hidden),
                                    student_spec=student_spec)
        t0 = time.perf_counter()
        results[method] = fit(teacher, tnorm, demo.dataset, cfg, progress=False,
                              action_spec=student_spec.action)
        train_s = time.perf_counter() - t0
        if method in methods:
            closed_loop(method, results[method], train_s, len(demo.dataset))
        results[method + "_s"] = train_s

    if "dagger" in methods:
        dcfg = DaggerConfig(rounds=args.dagger_rounds, initial_episodes=0,
                            episodes_per_round=args.dagger_episodes,
                            round_epochs=args.dagger_epochs,
                            seed_base=first + args.demo_episodes,
                            beta_schedule="exponential", beta_start=0.5, beta_decay=0.5,
                            val_episodes=args.dagger_val_episodes,
                            select_best=args.dagger_val_episodes > 0)
        cfg = TrainConfig.from_dict(_train_config(args, losses["bc"], args.hidden),
                                    student_spec=student_spec)
        start = copy.deepcopy(results["bc"])
        t0 = time.perf_counter()
        out = run_dagger(teacher, tnorm, student_spec, teacher_spec, sim_config, dcfg, cfg,
                         initial_dataset=demo.dataset, initial=start)
        dagger_s = time.perf_counter() - t0
        closed_loop("dagger", out.result, results["bc_s"] + dagger_s, len(out.dataset),
                    {"rounds": [r.to_dict() for r in out.rounds], "dagger_only_s": dagger_s,
                     "note": f"round {out.selected_round}", "selected_round": out.selected_round})

    if "progressive" in methods:
        pcfg = ProgressiveConfig(stages=[{"kind": "history_mlp", "hidden_sizes": args.medium},
                                         {"kind": "history_mlp", "hidden_sizes": args.hidden}])
        cfg = TrainConfig.from_dict(_train_config(args, losses["bc"], args.hidden),
                                    student_spec=student_spec)
        t0 = time.perf_counter()
        out = run_progressive(teacher, tnorm, demo.dataset, student_spec, sim_config, pcfg, cfg)
        prog_s = time.perf_counter() - t0
        closed_loop("progressive", out.final, prog_s, len(demo.dataset),
                    {"stages": [s.to_dict() for s in out.stages]})

    imitation_s = None
    if "imitation_bc" in methods:
        try:
            import imitation
            bounds = executed_bounds(student_spec.action)   # the same executed targets
            labels = demo.labels if bounds is None else np.clip(
                demo.labels, bounds[0].numpy(), bounds[1].numpy())
            train_s, act, params = _imitation_bc(args, demo.dataset, labels, student_spec,
                                                 args.hidden)
        except ImportError as exc:
            print(f"  imitation_bc: skipped ({exc}); see the module docstring", flush=True)
        else:
            imitation_s = train_s
            ev = evaluate_policy(FunctionActor(act, STUDENT), student_spec, sim_config, seeds,
                                 name="imitation_bc")
            rows.append({"method": f"imitation_bc ({imitation.__version__})",
                         "mean_return": ev.mean_return, "std_return": ev.std_return,
                         "mean_forward_distance_m": ev.mean_forward_distance_m, "params": params,
                         "train_s": train_s, "train_samples": len(demo.dataset),
                         "returns": ev.returns.tolist()})
            print(f"  imitation_bc: return {ev.mean_return:.1f}, train {train_s:.1f} s",
                  flush=True)

    for row in rows:
        row["return_ratio"] = row["mean_return"] / teacher_eval.mean_return
        row["param_ratio"] = row["params"] / t_params
        row["wall_ratio_vs_imitation"] = row["train_s"] / imitation_s if imitation_s else None
    teacher_row = {"method": "teacher", "mean_return": teacher_eval.mean_return,
                   "std_return": teacher_eval.std_return, "return_ratio": 1.0,
                   "mean_forward_distance_m": teacher_eval.mean_forward_distance_m,
                   "params": t_params, "param_ratio": 1.0}
    print()
    print(format_table([teacher_row] + rows, COLUMNS))
    print(f"held-out seeds {seeds[0]}..{seeds[-1]}; targets: params/teacher <= 0.02, "
          f"ret/teacher >= 0.95, student inputs without privileged terms")
    for row in rows:
        met = row["param_ratio"] <= 0.02 and row["return_ratio"] >= 0.95
        print(f"  {row['method']}: {'MET' if met else 'not met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"teacher": teacher_row | {"returns": teacher_eval.returns.tolist()}, "methods": rows,
             "seeds": seeds, "demo_samples": len(demo.dataset), "args": vars(args)},
            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
