"""`policy-distill robustness`: teacher vs student outside the training ranges.

    policy-distill robustness --teacher models/ant_teacher --student models/ant_student.onnx \
        [--episodes 10] [--scenarios nominal,friction_low,...] [--out runs/robustness]

Scenarios (`sim/scenarios.py`, `--list` prints them): the training ranges (`nominal`, the
reference), friction, payload and motor strength beyond them, sensor noise, sensor bias, an IMU
delayed by k control steps, lost sensor messages. Both policies run the same held-out seeds
(1000000+k) in every scenario. Writes `<out>/robustness.json` (every episode), `robustness.md`
(the table and the command) and `robustness.png` (returns with 95 % intervals and falls), and
prints the table: where the student degrades before the teacher, and by how much.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

HELP = "teacher vs student in scenarios outside the training ranges: returns, falls, plot"
LOG = logging.getLogger("policy-distill.robustness")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluate import add_sim_arguments
    parser.add_argument("--teacher", default="models/ant_teacher",
                        help="teacher directory or SB3 .zip")
    parser.add_argument("--teacher-normalizer", default=None)
    parser.add_argument("--teacher-spec", default=None)
    parser.add_argument("--student", default="models/ant_student.onnx",
                        help="student policy file (.onnx)")
    parser.add_argument("--episodes", type=int, default=10, help="held-out episodes per "
                                                                "scenario and policy")
    parser.add_argument("--scenarios", default="all", help="comma-separated names, or all")
    parser.add_argument("--list", action="store_true", help="print the scenarios and exit")
    parser.add_argument("--margin", type=float, default=0.10,
                        help="flag a scenario when the student keeps this much less of its "
                             "nominal return than the teacher does (and the interval agrees)")
    parser.add_argument("--out", default="runs/robustness")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the teacher")
    add_sim_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from policy_distill_ros.sim.scenarios import default_scenarios, scenario_by_name

    from .evaluate import sim_config_from_args
    try:
        base = sim_config_from_args(args.sim_config, args.max_episode_steps)
        scenarios = default_scenarios(base)
        if args.list:
            for s in scenarios:
                print(f"{s.name:<16}{s.description}")
            return 0
        if args.scenarios != "all":
            names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
            if "nominal" not in names:
                names.insert(0, "nominal")   # the reference every ratio needs
            scenarios = scenario_by_name(scenarios, names)
    except (OSError, ValueError) as exc:
        LOG.error("%s", exc)
        return 1
    import torch

    from policy_distill_ros.core.policy_file import PolicyFileError
    from policy_distill_ros.training.evaluation import held_out_seeds
    from policy_distill_ros.training.robustness import (
        degradation,
        plot_robustness,
        robustness_table,
        run_scenario_episodes,
    )
    from policy_distill_ros.training.rollout import OnnxActor, teacher_actor

    from .evaluate import load_teacher_and_spec
    torch.set_num_threads(max(1, args.threads))
    try:
        seeds = held_out_seeds(args.episodes)
        teacher, tnorm, info, teacher_spec = load_teacher_and_spec(
            args.teacher, args.teacher_spec, args.teacher_normalizer)
        student = OnnxActor(args.student)
        student.spec.observation.require_no_privileged()
    except (OSError, ValueError, PolicyFileError) as exc:
        LOG.error("%s", exc)
        return 1
    t_actor = teacher_actor(teacher, tnorm)
    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=2 * len(scenarios) * len(seeds), unit="ep", dynamic_ncols=True)
    results = []
    started = time.perf_counter()
    try:
        for scenario in scenarios:
            for name, actor, spec in (("teacher", t_actor, teacher_spec),
                                      ("student", student, student.spec)):
                if bar is not None:
                    bar.set_description(f"{scenario.name} {name}")
                results.append(run_scenario_episodes(
                    actor, spec, scenario, seeds, args.sim_seed, name,
                    on_episode=(lambda _r: bar.update(1)) if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
    rows = degradation(results, margin=args.margin)
    wall_s = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = robustness_table(rows)
    command = "policy-distill robustness " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "robustness" else "policy-distill robustness"
    flagged = [r for r in rows if r["student_degrades_first"]]
    summary = _summary(rows, flagged)
    load = f"{os.getloadavg()[0]:.1f}"
    (out / "robustness.json").write_text(json.dumps(
        {"rows": rows, "episodes": [r.to_dict() for r in results],
         "scenarios": [s.to_dict() for s in scenarios], "seeds": seeds,
         "teacher": args.teacher, "teacher_sha256": info.sha256, "student": args.student,
         "margin": args.margin, "wall_s": wall_s, "command": command}, indent=2) + "\n")
    plot_robustness(rows, out / "robustness.png")
    (out / "robustness.md").write_text(
        f"# Robustness: teacher vs student outside the training ranges\n\n`{command}`\n\n"
        f"{len(seeds)} held-out episodes (seeds {seeds[0]}..{seeds[-1]}) per scenario and "
        f"policy, {wall_s / 60:.1f} min, 1-minute load {load} on {os.cpu_count()} cores.\n\n"
        "| scenario | what changes |\n| --- | --- |\n"
        + "".join(f"| {s.name} | {s.description} |\n" for s in scenarios)
        + f"\n```\n{table}\n```\n\n{summary}\n\n![robustness](robustness.png)\n")
    print(table)
    print(f"\n{summary}")
    print(f"{len(seeds)} held-out episodes per scenario and policy (seeds {seeds[0]}.."
          f"{seeds[-1]}), {wall_s / 60:.1f} min; kept = return / own nominal return; "
          f"student first? = kept(student) - kept(teacher) [95 % bootstrap interval]")
    print(f"report: {out / 'robustness.md'}, plot: {out / 'robustness.png'}")
    return 0


def _summary(rows: list[dict], flagged: list[dict]) -> str:
    if not flagged:
        text = ("The student never degrades before the teacher beyond the margin: in every "
                "scenario it keeps at least as much of its nominal return (within the margin "
                "or the interval).")
    else:
        parts = [f"{r['scenario']} (student keeps {r['student_kept']:.0%} of its nominal "
                 f"return, the teacher {r['teacher_kept']:.0%}; falls {r['student_falls']} vs "
                 f"{r['teacher_falls']})" for r in flagged]
        text = "The student degrades before the teacher in: " + "; ".join(parts) + "."
    falls = [r for r in rows if r["student_falls_more"]]
    if falls:
        text += " It falls significantly more often than the teacher in: " + "; ".join(
            f"{r['scenario']} ({r['student_falls']} vs {r['teacher_falls']} of "
            f"{r['episodes']})" for r in falls) + "."
    return text
