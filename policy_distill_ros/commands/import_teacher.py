"""`policy-distill import-teacher`: an rsl_rl / Stable-Baselines3 checkpoint -> teacher directory.

    policy-distill import-teacher --sb3 ppo.zip [--vecnormalize vecnormalize.pkl |
                                  --obs-norm-json obs_norm.json] --spec spec.yaml --out DIR
    policy-distill import-teacher --rsl-rl model_1500.pt [--activation elu] --spec spec.yaml
                                  --out DIR

The output is the teacher format of training/teacher_io.py (model.safetensors + teacher.json,
no pickle), with the policy spec stored in teacher.json (`info.policy_spec`), so the teacher
node and the trainer need nothing else. The spec must fit the network: observation size =
first layer input, action joints = outputs. Reading checkpoints never unpickles code
(training/importers.py). SB3 actions are the network's deterministic mean; SB3's own clip to the
action space is the action spec's job (its limits should equal the env's bounds, checked here).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "convert an rsl_rl / Stable-Baselines3 checkpoint to the teacher format"
LOG = logging.getLogger("policy-distill.import-teacher")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sb3", metavar="ZIP", help="Stable-Baselines3 PPO / A2C / SAC zip")
    source.add_argument("--rsl-rl", metavar="PT", help="rsl_rl / Isaac Lab checkpoint (.pt)")
    norm = parser.add_mutually_exclusive_group()
    norm.add_argument("--vecnormalize", metavar="PKL",
                      help="--sb3: VecNormalize statistics saved with vec_normalize.save()")
    norm.add_argument("--obs-norm-json", metavar="JSON",
                      help="--sb3: {mean, var, epsilon, clip_obs} (scripts/train_teacher.py)")
    parser.add_argument("--activation", default="elu",
                        help="--rsl-rl: hidden activation (not stored in rsl_rl checkpoints)")
    parser.add_argument("--spec", required=True, help="policy spec YAML the teacher was "
                        "trained with (observation terms, action joints, rate)")
    parser.add_argument("--out", required=True, help="teacher directory to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing teacher")


def import_checkpoint(args: argparse.Namespace):
    """(teacher, normalizer, TeacherInfo) from the checkpoint named by the arguments."""
    from policy_distill_ros.training import importers
    from policy_distill_ros.training.pipeline import load_teacher_any
    if args.rsl_rl:
        if args.vecnormalize or args.obs_norm_json:
            raise ValueError("--vecnormalize / --obs-norm-json are for --sb3; an rsl_rl "
                             "checkpoint carries its own normalizer")
        return importers.import_rsl_rl(args.rsl_rl, activation=args.activation)
    return load_teacher_any(args.sb3, args.vecnormalize or args.obs_norm_json)


def check_action_bounds(info: dict, spec) -> None:
    """SB3 clips (PPO) or rescales (SAC) to the env's action bounds; the spec must agree."""
    import numpy as np
    low, high = info.get("action_low"), info.get("action_high")
    if low is None or high is None or spec.action.lower is None:
        return
    action = spec.action.to_dict()
    scale = np.broadcast_to(np.asarray(action.get("scale", 1.0), float), (spec.action.size,))
    offset = np.broadcast_to(np.asarray(action.get("offset", 0.0), float), (spec.action.size,))
    raw_low = (np.asarray(spec.action.lower, float) - offset) / scale
    raw_high = (np.asarray(spec.action.upper, float) - offset) / scale
    if len(low) != spec.action.size or not (np.allclose(np.minimum(raw_low, raw_high), low)
                                            and np.allclose(np.maximum(raw_low, raw_high), high)):
        LOG.warning("the SB3 action space [%s, %s] differs from the spec's limits mapped to raw "
                    "actions [%s, %s]: the teacher node's actions will differ from SB3's "
                    "predict()", low, high, raw_low.tolist(), raw_high.tolist())
    if info.get("sb3_action_postprocess") == "rescale_from_unit":
        LOG.warning("SAC teacher: SB3 rescales tanh actions from [-1, 1] to the action bounds; "
                    "encode that in the action spec's scale/offset")


def run(args: argparse.Namespace) -> int:
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.teacher_io import save_teacher
    from policy_distill_ros.training.teacher_runner import SPEC_INFO_KEY, spec_of_teacher

    out = Path(args.out)
    if (out / "teacher.json").exists() and not args.force:
        raise SystemExit(f"policy-distill import-teacher: {out} already holds a teacher; "
                         f"--force overwrites it")
    try:
        spec = load_policy_spec(args.spec)
        teacher, normalizer, info = import_checkpoint(args)
        spec_of_teacher(info, spec)   # sizes: spec vs network, with the reason on failure
    except (OSError, ValueError) as exc:
        raise SystemExit(f"policy-distill import-teacher: {exc}") from None
    check_action_bounds(info.info, spec)
    source = args.sb3 or args.rsl_rl
    extra = {SPEC_INFO_KEY: spec.to_dict(), "spec_file": Path(args.spec).name,
             "imported_from": Path(source).name}
    if args.obs_norm_json:
        extra["obs_norm_json"] = Path(args.obs_norm_json).name
    sha = save_teacher(teacher, normalizer, out, info={**info.info, **extra})
    arch = teacher.config
    size_mb = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    print(f"teacher {sha}\n  from {source} ({info.info.get('source', '?')})\n  actor "
          f"{arch.obs_size} -> {list(arch.hidden_sizes)} -> {arch.action_size} "
          f"({arch.activation}), normalizer "
          f"{'yes (' + normalizer.config.eps_placement + ')' if normalizer is not None else 'no'}"
          f"\n  spec {args.spec}: {spec.observation.size} obs, {spec.action.size} actions, "
          f"{spec.rate_hz:g} Hz\n  written to {out} ({size_mb:.2f} MB)")
    return 0
