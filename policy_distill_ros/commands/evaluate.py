"""`policy-distill eval`: teacher vs student in closed loop on held-out randomized episodes.

    policy-distill eval --teacher models/ant_teacher --student models/ant_student.onnx \
        --episodes 20 --json eval.json

The teacher runs in torch (`training/teacher_io.load_teacher`), the student through
`core.policy_file.OnnxPolicy`, the class the student node uses (recurrent state reset per
episode). Both run on the same episode seeds, `--seed-base` (default 1_000_000) + k: a range no
training episode uses (see `training/evaluation.py`). Prints a table (return, forward distance,
episode length, parameters, ONNX size, inference latency p50/p99) and the student/teacher
ratios; `--json` writes every figure, per episode too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

HELP = ("closed-loop teacher vs student on held-out randomized episodes "
        "(return, distance, size, latency)")
LOG = logging.getLogger("policy-distill.eval")
DEFAULT_SIM_CONFIG = "config/sim.yaml"
DEFAULT_TEACHER_SPEC = "config/specs/ant_teacher.yaml"


def add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    """Simulator options shared by the in-process commands (eval, dagger)."""
    parser.add_argument("--sim-config", default=DEFAULT_SIM_CONFIG,
                        help="simulator params file (config/sim.yaml format)")
    parser.add_argument("--max-episode-steps", type=int, default=None,
                        help="override the sim config's episode length")
    parser.add_argument("--sim-seed", type=int, default=0, help="AntSim seed")


def sim_config_from_args(path: str, max_episode_steps: int | None):
    from policy_distill_ros.sim.config import load_sim_config
    config = load_sim_config(path)
    if max_episode_steps is not None:
        config = dataclasses.replace(config, max_episode_steps=max_episode_steps)
    return config


def load_teacher_and_spec(teacher_dir: str, spec_path: str | None,
                          normalizer_path: str | None = None):
    """(teacher, normalizer, TeacherInfo, teacher PolicySpec) from a teacher directory or an
    SB3 zip (+ normalizer statistics). The spec is `spec_path` when given, else the one the
    teacher records (info `policy_spec` or `observation_spec`+`action_spec`), else
    config/specs/ant_teacher.yaml."""
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.teacher_loading import load_teacher_any, recorded_spec
    teacher, normalizer, info = load_teacher_any(teacher_dir, normalizer_path)
    spec = load_policy_spec(spec_path) if spec_path is not None else recorded_spec(info)
    if spec is None:
        spec = load_policy_spec(DEFAULT_TEACHER_SPEC)
    if spec.observation.size != teacher.config.obs_size:
        raise ValueError(f"teacher {teacher_dir} takes {teacher.config.obs_size} observations but "
                         f"its spec gives {spec.observation.size}; pass the right --teacher-spec")
    return teacher, normalizer, info, spec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", help="teacher directory (policy-distill import-teacher) or "
                                          "an SB3 .zip")
    parser.add_argument("--teacher-normalizer", default=None,
                        help="with an SB3 .zip: VecNormalize .pkl or statistics .json")
    parser.add_argument("--teacher-spec", default=None,
                        help=f"teacher observation spec (default: from the teacher, else "
                             f"{DEFAULT_TEACHER_SPEC})")
    parser.add_argument("--student", help="student policy file (.onnx)")
    parser.add_argument("--student-spec", default=None,
                        help="refuse a student whose metadata differs from this spec")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed-base", type=int, default=None,
                        help="first held-out episode seed (default 1000000; must be >= 1000000)")
    add_sim_arguments(parser)
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the teacher")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if not args.teacher and not args.student:
        LOG.error("give --teacher and/or --student")
        return 2
    import torch

    from policy_distill_ros.core.policy_file import PolicyFileError
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.evaluation import (
        HELD_OUT_SEED_BASE,
        comparison_table,
        evaluate_teacher_and_student,
        held_out_seeds,
    )
    torch.set_num_threads(max(1, args.threads))
    try:
        seeds = held_out_seeds(args.episodes, HELD_OUT_SEED_BASE if args.seed_base is None
                               else args.seed_base)
        sim_config = sim_config_from_args(args.sim_config, args.max_episode_steps)
        teacher = normalizer = spec = None
        if args.teacher:
            teacher, normalizer, info, spec = load_teacher_and_spec(
                args.teacher, args.teacher_spec, args.teacher_normalizer)
            LOG.info("teacher %s (sha256 %s...)", args.teacher, info.sha256[:12])
        student_spec = load_policy_spec(args.student_spec) if args.student_spec else None
        report = evaluate_teacher_and_student(
            teacher, normalizer, spec, args.student, student_spec, sim_config, seeds,
            args.sim_seed, progress=not args.no_progress)
    except (OSError, ValueError, PolicyFileError) as exc:
        LOG.error("%s", exc)
        return 1
    report["sim_config"] = sim_config.to_dict()
    report["teacher_path"] = args.teacher
    print(comparison_table(report))
    if args.student:
        from policy_distill_ros.training.inference_bench import inference_memory
        memory = report["student"]["inference_memory_mib"] = inference_memory(args.student, 1)
        print(f"student inference memory: RSS {memory['rss_mib']:.1f} MiB, peak "
              f"{memory['peak_mib']:.1f} MiB, of which the session {memory['session_mib']:.2f} "
              f"MiB (a fresh process: numpy + onnxruntime + this file, 1000 runs)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        LOG.info("report written to %s", args.json)
    return 0
