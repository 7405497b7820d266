"""`policy-distill sweep`: a ladder of student sizes and kinds from the same data, with held-out
return against parameters, ONNX Runtime latency and memory, and the Pareto front.

    policy-distill sweep [--teacher models/ant_teacher] [--ladder default]
        [--demo-episodes 20] [--driver models/ant_student.onnx --driven-episodes 20]
        [--eval-episodes 10] [--epochs 40] [--out runs/sweep]

Data, shared by every rung: `--demo-episodes` teacher-driven episodes, plus `--driven-episodes`
episodes driven by `--driver` (a policy file, e.g. a DAgger student) with the teacher labelling
every state it visits, so the ladder also sees the states a student reaches and a teacher never
does (training seeds only; the student targets are always the teacher's actions). Or
`--data` bags / .npz. Ladder: `training.sweep.DEFAULT_LADDER` (history MLPs 8x8 .. 256x256, a
progressive 8x8 through 128x128, a TCN, a GRU) or `--ladder` names / `kind:sizes`.
Writes `<out>/sweep.json`, `sweep.md`, `sweep.png` and `<out>/students/*.onnx`.
`--measure-only DIR` re-times and re-measures an earlier sweep's students (on the robot's own
computer, say) and rewrites its table and plot; it needs neither the simulator nor torch.
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

HELP = "ladder of student sizes/kinds from the same data: return vs params, latency, memory"
LOG = logging.getLogger("policy-distill.sweep")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .evaluate import DEFAULT_TEACHER_SPEC, add_sim_arguments
    parser.add_argument("--teacher", default="models/ant_teacher")
    parser.add_argument("--teacher-normalizer", default=None)
    parser.add_argument("--teacher-spec", default=DEFAULT_TEACHER_SPEC)
    parser.add_argument("--student-spec", default="config/specs/ant_student.yaml")
    parser.add_argument("--ladder", default="default",
                        help="comma-separated rung names or kind:sizes (see training/sweep.py)")
    parser.add_argument("--data", nargs="*", default=None,
                        help="bags (globs) or DistillDataset .npz instead of collecting")
    parser.add_argument("--demo-episodes", type=int, default=20)
    parser.add_argument("--driver", default=None,
                        help="policy file that drives --driven-episodes (teacher labels)")
    parser.add_argument("--driven-episodes", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--kl-weight", type=float, default=0.05)
    parser.add_argument("--latency-rows", type=int, default=2000,
                        help="validation-seed observations timed per file, interleaved")
    parser.add_argument("--latency-repeats", type=int, default=3,
                        help="passes over those rows (more passes: a steadier p99)")
    parser.add_argument("--measure-only", default=None, metavar="DIR",
                        help="only re-time / re-measure the students of an earlier sweep in "
                             "DIR (e.g. copied to the robot's computer; no simulator needed)")
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--out", default="runs/sweep")
    add_sim_arguments(parser)
    parser.add_argument("--no-progress", action="store_true")


def _dataset(args, teacher, tnorm, student_spec, teacher_spec, sim_config):
    from policy_distill_ros.training.rollout import OnnxActor, collect, teacher_actor
    if args.data:
        from .dagger import initial_dataset
        return initial_dataset(args.data, Path.cwd(), student_spec, teacher_spec), \
            f"{' '.join(args.data)}"
    labeler = teacher_actor(teacher, tnorm)
    parts, notes = [], []
    if args.demo_episodes > 0:
        demo = collect(student_spec, teacher_spec, sim_config, range(args.demo_episodes),
                       labeler, labeler, sim_seed=args.sim_seed, source="sweep/teacher")
        parts.append(demo.dataset)
        notes.append(f"{args.demo_episodes} teacher-driven episodes (seeds 0..)")
    if args.driver and args.driven_episodes > 0:
        first = max(args.demo_episodes, 0)
        driven = collect(student_spec, teacher_spec, sim_config,
                         range(first, first + args.driven_episodes),
                         OnnxActor(args.driver, student_spec), labeler, sim_seed=args.sim_seed,
                         source=f"sweep/driver:{Path(args.driver).name}")
        parts.append(driven.dataset)
        notes.append(f"{args.driven_episodes} episodes driven by {args.driver} (seeds "
                     f"{first}..), teacher-labelled")
    if not parts:
        raise ValueError("no data: give --demo-episodes, --driver with --driven-episodes, or "
                         "--data")
    data = parts[0]
    for part in parts[1:]:
        data = data.concat(part)
    return data, " + ".join(notes)


def run(args: argparse.Namespace) -> int:
    if args.measure_only:
        return _measure_only(args)
    import numpy as np
    import torch

    from policy_distill_ros.core.policy_file import PolicyFileError
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.evaluation import (
        evaluate_policy,
        held_out_seeds,
        validation_seeds,
    )
    from policy_distill_ros.training.inference_bench import student_observations
    from policy_distill_ros.training.networks import count_parameters
    from policy_distill_ros.training.rollout import OnnxActor, teacher_actor
    from policy_distill_ros.training.sweep import parse_ladder, train_rung
    from policy_distill_ros.training.trainer import TrainingError, export_student

    from .evaluate import load_teacher_and_spec, sim_config_from_args
    torch.set_num_threads(1)
    started = time.perf_counter()
    say = (lambda m: None) if args.no_progress else (lambda m: print(m, flush=True))
    out = Path(args.out)
    try:
        ladder = parse_ladder(args.ladder)
        teacher, tnorm, info, teacher_spec = load_teacher_and_spec(
            args.teacher, args.teacher_spec, args.teacher_normalizer)
        student_spec = load_policy_spec(args.student_spec)
        student_spec.observation.require_no_privileged()
        sim_config = sim_config_from_args(args.sim_config, args.max_episode_steps)
        seeds = held_out_seeds(args.eval_episodes)
        dataset, data_note = _dataset(args, teacher, tnorm, student_spec, teacher_spec,
                                      sim_config)
    except (OSError, ValueError, PolicyFileError) as exc:
        LOG.error("%s", exc)
        return 1
    say(f"data: {len(dataset):,} samples from {data_note} "
        f"({time.perf_counter() - started:.0f} s)")
    teacher_eval = evaluate_policy(teacher_actor(teacher, tnorm), teacher_spec, sim_config,
                                   seeds, args.sim_seed, "teacher")
    t_params = count_parameters(teacher)
    say(f"teacher: {teacher_eval.mean_return:.1f} on {len(seeds)} held-out episodes")
    train = {"loss": {"bc_weight": 1.0, "kl_weight": args.kl_weight}, "epochs": args.epochs,
             "batch_size": args.batch_size, "lr": args.lr, "val_fraction": 0.1, "seed": 0,
             "num_threads": 1}
    (out / "students").mkdir(parents=True, exist_ok=True)
    rows, files = [], {}
    for rung in ladder:
        path = out / "students" / (rung.name.replace(" ", "_").replace("/", "-") + ".onnx")
        try:
            result, train_s = train_rung(rung, teacher, tnorm, dataset, student_spec,
                                         sim_config, train)
            export_student(result, student_spec, path,
                           {"teacher_sha256": info.sha256, "method": "sweep",
                            "rung": rung.to_dict()})
        except (TrainingError, ValueError, PolicyFileError) as exc:
            LOG.error("%s: %s", rung.name, exc)
            continue
        ev = evaluate_policy(OnnxActor(path, student_spec), student_spec, sim_config, seeds,
                             args.sim_seed, rung.name).to_dict()
        n = len(seeds)
        ci = 1.96 * float(np.std(ev["returns"], ddof=1)) / n ** 0.5 if n > 1 else 0.0
        rows.append({"name": rung.name, "kind": rung.student["kind"],
                     "progressive": rung.medium is not None, "rung": rung.to_dict(),
                     "params": count_parameters(result.student), "file": path.name,
                     "onnx_bytes": path.stat().st_size, "mean_return": ev["mean_return"],
                     "std_return": ev["std_return"], "ci95": ci, "returns": ev["returns"],
                     "return_pct": 100 * ev["mean_return"] / teacher_eval.mean_return,
                     "ci95_pct": 100 * ci / teacher_eval.mean_return,
                     "falls": ev["terminated_episodes"],
                     "forward_m": ev["mean_forward_distance_m"], "train_s": train_s})
        files[rung.name] = path
        say(f"  {rung.name}: {rows[-1]['params']:,} params, return {ev['mean_return']:.0f} "
            f"({rows[-1]['return_pct']:.0f} % of the teacher), trained in {train_s:.0f} s")
    if not rows:
        LOG.error("no rung was trained")
        return 1
    obs = student_observations(next(iter(files.values())), sim_config, validation_seeds(2),
                               args.sim_seed)[:args.latency_rows]
    np.save(out / LATENCY_OBS, obs)
    command = "policy-distill sweep " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 1 and sys.argv[1] == "sweep" else "policy-distill sweep"
    report = {"rows": rows, "seeds": seeds, "command": command,
              "teacher": {"mean_return": teacher_eval.mean_return,
                          "returns": teacher_eval.returns.tolist(), "params": t_params,
                          "sha256": info.sha256},
              "training": (f"{len(dataset):,} samples ({data_note}); {args.epochs} epochs, "
                           f"BC + KL {args.kl_weight}; {len(seeds)} held-out episodes per "
                           f"student (seeds {seeds[0]}..{seeds[-1]}), teacher "
                           f"{teacher_eval.mean_return:.1f} ({t_params:,} params) on the same "
                           f"seeds"),
              "train_wall_s": time.perf_counter() - started}
    return _measure_and_write(report, out, args)


LATENCY_OBS = "latency_obs.npy"


def _measure_and_write(report: dict, out: Path, args: argparse.Namespace) -> int:
    """Latency (interleaved, one thread) and memory of every student file of `report`, the
    Pareto fronts, then sweep.json / sweep.md / sweep.png."""
    import numpy as np

    from policy_distill_ros.training.evaluation import format_table
    from policy_distill_ros.training.inference_bench import (
        inference_memory,
        interleaved_latency,
        machine_load,
    )
    from policy_distill_ros.training.sweep import SWEEP_COLUMNS, plot_pareto, rows_with_front
    rows = report["rows"]
    files = {r["name"]: out / "students" / r["file"] for r in rows}
    obs = np.load(out / LATENCY_OBS)
    started = time.perf_counter()
    load = machine_load()
    latency = interleaved_latency({k: str(v) for k, v in files.items()}, obs,
                                  repeats=args.latency_repeats)
    for row in rows:
        row.update(latency[row["name"]])
        row.update(inference_memory(files[row["name"]], args.memory_repeats))
    rows_with_front(rows)
    calls = latency[rows[0]["name"]]["calls"]
    report["measured"] = (f"latency: OnnxPolicy, 1 intra-op thread, {calls} calls per file "
                          f"interleaved, {load} at the start; memory: median of "
                          f"{args.memory_repeats} fresh processes (numpy + onnxruntime + the "
                          f"file, 1000 runs); {os.cpu_count()} cores")
    report["wall_s"] = report.get("train_wall_s", 0.0) + time.perf_counter() - started
    facts = f"{report['training']}; {report['measured']}; {report['wall_s'] / 60:.1f} min"
    table = format_table(rows, SWEEP_COLUMNS)
    episodes = len(report["seeds"])
    plot_pareto(rows, out / "sweep.png",
                f"student trade-off: {episodes} held-out episodes each, teacher = 100 %")
    (out / "sweep.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "sweep.md").write_text(
        f"# Student size trade-off\n\n`{report['command']}`\n\n{facts}.\n\n```\n{table}\n"
        "```\n\nPareto: P = on the front of return vs parameters, L = vs p99 latency, M = vs "
        "session memory.\n\n![sweep](sweep.png)\n")
    print(table)
    print(f"\nPareto: P params, L p99 latency, M session memory. {facts}")
    print(f"report: {out / 'sweep.md'}, plot: {out / 'sweep.png'}")
    return 0


def _measure_only(args: argparse.Namespace) -> int:
    """Re-time and re-measure the students of an earlier sweep (e.g. copied to the robot's
    computer): no simulator, no torch needed."""
    out = Path(args.measure_only)
    try:
        report = json.loads((out / "sweep.json").read_text())
        missing = [r["file"] for r in report["rows"]
                   if not (out / "students" / r["file"]).is_file()]
        if missing or not (out / LATENCY_OBS).is_file():
            raise ValueError(f"{out}: missing {missing or [LATENCY_OBS]}")
    except (OSError, ValueError, KeyError) as exc:
        LOG.error("--measure-only: %s", exc)
        return 1
    report.pop("train_wall_s", None)
    report["command"] += f"; re-measured: policy-distill sweep --measure-only {out} " \
        f"--latency-repeats {args.latency_repeats}"
    return _measure_and_write(report, out, args)
