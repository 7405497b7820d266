"""`policy-distill import-teacher`: an rsl_rl / Stable-Baselines3 checkpoint -> teacher directory.

    policy-distill import-teacher --sb3 ppo.zip [--vecnormalize vecnormalize.pkl |
                                  --obs-norm-json obs_norm.json] --spec spec.yaml --out DIR
    policy-distill import-teacher --rsl-rl logs/run/model_1500.pt [--activation elu |
                                  --agent-config agent.yaml] --spec spec.yaml --out DIR

The output is the teacher format of training/teacher_io.py (model.safetensors + teacher.json,
no pickle), with the policy spec stored in teacher.json (`info.policy_spec`), so the teacher
node and the trainer need nothing else. Exact or refused (training/importers.py): the import
ends with a self-check against the source library's own policy, and is refused, exit 1 with one
line naming the file, when anything is off: the spec must fit the network (observation size =
first layer input, action joints = outputs) and, for SB3, map raw actions exactly as SB3's
`predict()` does (PPO/A2C clip to the action space, SAC rescales [-1, 1] to it). Flags that do
not apply to the chosen library are refused, not ignored.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

HELP = "convert an rsl_rl / Stable-Baselines3 checkpoint to the teacher format"
LOG = logging.getLogger("policy-distill.import-teacher")
BOUNDS_RTOL = 1e-6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sb3", metavar="ZIP", help="Stable-Baselines3 PPO / A2C / SAC zip")
    source.add_argument("--rsl-rl", metavar="PT", help="rsl_rl / Isaac Lab checkpoint (.pt)")
    norm = parser.add_mutually_exclusive_group()
    norm.add_argument("--vecnormalize", metavar="PKL",
                      help="--sb3: VecNormalize statistics saved with vec_normalize.save()")
    norm.add_argument("--obs-norm-json", metavar="JSON",
                      help="--sb3: {mean, var, epsilon, clip_obs} (scripts/train_teacher.py)")
    parser.add_argument("--activation", default=None,
                        help="--rsl-rl: hidden activation, when the run's params/agent.yaml is not "
                        "beside the checkpoint (rsl_rl checkpoints do not store it)")
    parser.add_argument("--agent-config", metavar="YAML", default=None,
                        help="--rsl-rl: the run's agent config (default: params/agent.yaml beside "
                        "the checkpoint)")
    parser.add_argument("--spec", required=True, help="policy spec YAML the teacher was "
                        "trained with (observation terms, action joints, rate)")
    parser.add_argument("--out", required=True, help="teacher directory to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing teacher")


def import_checkpoint(args: argparse.Namespace):
    """(teacher, normalizer, TeacherInfo) from the checkpoint named by the arguments."""
    from policy_distill_ros.training.teacher_loading import load_teacher_any
    if args.rsl_rl:
        if args.vecnormalize or args.obs_norm_json:
            raise ValueError("--vecnormalize / --obs-norm-json are for --sb3; an rsl_rl "
                             "checkpoint carries its own normalizer")
        return load_teacher_any(args.rsl_rl, kind="rsl_rl", activation=args.activation,
                                agent_config=args.agent_config)
    if args.activation or args.agent_config:
        raise ValueError("--activation / --agent-config are for --rsl-rl; an SB3 zip records "
                         "its own activation and layer sizes")
    if args.obs_norm_json:
        return load_teacher_any(args.sb3, args.obs_norm_json, kind="sb3",
                                normalizer_format="json")
    return load_teacher_any(args.sb3, args.vecnormalize, kind="sb3")


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in np.asarray(values, float).reshape(-1)) + "]"


def check_action_bounds(info: dict, spec, spec_path: str) -> None:
    """The spec's command must equal SB3's predict(): PPO/A2C clip the mean to the action space,
    SAC rescales tanh(mean) from [-1, 1] to it. Probed on raw actions across (and past) the
    bounds."""
    low, high, rule = (
        info.get("action_low"),
        info.get("action_high"),
        info.get("sb3_action_postprocess"),
    )
    if low is None or high is None or rule is None:
        return
    low, high = np.asarray(low, float), np.asarray(high, float)
    if rule == "clip":
        lo = np.where(np.isfinite(low), low, -1e3)
        hi = np.where(np.isfinite(high), high, 1e3)
        raw = np.stack([lo - 1.0, lo, 0.5 * (lo + hi), hi, hi + 1.0, np.zeros_like(lo)])
        expected = np.clip(raw, low, high)
        want = (f"scale 1, offset 0, lower {_fmt(low)}, upper {_fmt(high)} (PPO/A2C clip to the "
                f"action space)")
    else:
        raw = np.repeat(np.linspace(-1.0, 1.0, 9)[:, None], low.size, axis=1)
        expected = low + 0.5 * (raw + 1.0) * (high - low)
        want = (
            f"scale {_fmt((high - low) / 2)}, offset {_fmt((high + low) / 2)}, limits no tighter "
            f"than [{_fmt(low)}, {_fmt(high)}] (SAC rescales tanh from [-1, 1] to the action space)"
        )
    commands = np.stack([spec.action.postprocess(r) for r in raw])
    diff = float(np.max(np.abs(commands - expected)))
    if diff > BOUNDS_RTOL * max(1.0, float(np.max(np.abs(expected)))):
        raise ValueError(
            f"{spec_path}: the action spec turns raw actions into commands that differ from "
            f"SB3's predict() by up to {diff:.3g}; with action_space [{_fmt(low)}, "
            f"{_fmt(high)}] it needs {want}"
        )


def _load_spec(path: str):
    """The policy spec; every failure is one line naming the file (core.spec)."""
    from policy_distill_ros.core.spec import load_policy_spec
    return load_policy_spec(path)


def run(args: argparse.Namespace) -> int:
    from policy_distill_ros.training.teacher_io import save_teacher
    from policy_distill_ros.training.teacher_runner import SPEC_INFO_KEY, spec_of_teacher

    out = Path(args.out)
    if (out / "teacher.json").exists() and not args.force:
        raise SystemExit(f"policy-distill import-teacher: {out} already holds a teacher; "
                         f"--force overwrites it")
    try:
        spec = _load_spec(args.spec)
        teacher, normalizer, info = import_checkpoint(args)
        spec_of_teacher(info, spec)   # sizes: spec vs network, with the reason on failure
        check_action_bounds(info.info, spec, args.spec)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"policy-distill import-teacher: {exc}") from None
    source = args.sb3 or args.rsl_rl
    extra = {SPEC_INFO_KEY: spec.to_dict(), "spec_file": Path(args.spec).name,
             "imported_from": Path(source).name}
    if args.obs_norm_json:
        extra["obs_norm_json"] = Path(args.obs_norm_json).name
    sha = save_teacher(teacher, normalizer, out, info={**info.info, **extra})
    arch = teacher.config
    check = info.info["self_check"]
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"teacher {sha}\n  from {source} ({info.info.get('source', '?')})\n  actor "
          f"{arch.obs_size} -> {list(arch.hidden_sizes)} -> {arch.action_size} "
          f"({arch.activation}), normalizer "
          f"{'yes (' + normalizer.config.eps_placement + ')' if normalizer is not None else 'no'}"
          f"\n  spec {args.spec}: {spec.observation.size} obs, {spec.action.size} actions, "
          f"{spec.rate_hz:g} Hz\n  self-check: max action difference "
          f"{check['max_action_diff']:.2g} against {check['reference']} on "
          f"{check['observations']} observations\n  written to {out} ({size_mb:.2f} MB)")
    return 0
