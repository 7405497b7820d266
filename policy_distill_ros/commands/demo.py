"""`policy-distill demo`: the whole pipeline on the embedded simulator, ending in one report.

    policy-distill demo [--out runs/demo] [--episodes 12] [--dagger-episodes 20]
                        [--ros-episodes 6] [--eval-episodes 50] [--deploy-s 15] [--seed 0]
                        [--quick]

Stages, each the same code a user runs by hand (the subcommands named in brackets):
  1. teacher      models/ant_teacher, imported from the shipped SB3 checkpoint if needed
                  [import-teacher]
  2. record       teacher demonstrations through the ROS nodes, simulator in lockstep [record]
  3. distill      history MLP student by behavioural cloning on the executed actions, ONNX +
                  parity [train]: the "BC only" column
  4. dagger       DAgger from the recorded demonstrations (config/demo_dagger.yaml): rounds of
                  student-driven episodes labelled by the teacher, data aggregated, beta from
                  0.5 down to 0; the rounds in-process, the last one through the ROS nodes
                  (student_node drives, teacher_node labels, recorder_node writes the bag); the
                  round with the best return on validation seeds is the final student [dagger]
  5. deploy       student node + timing monitor, in closed loop with the simulator and
                  against a 500 Hz sensor stream [deploy]
  6. evaluate     teacher vs both students on held-out randomized episodes [eval]
  7. report       <out>/report.md + returns.png + dagger_rounds.png

`--quick` shrinks every stage (short episodes, few epochs) for a smoke run in about two minutes.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policy_distill_ros.processes import REPO_ROOT

HELP = "whole pipeline on the embedded simulator: record, distill, DAgger, deploy, report"
LOG = logging.getLogger("policy-distill.demo")
TEACHER_DIR = "models/ant_teacher"
TEACHER_SB3 = "models/ant_teacher_sb3.zip"
TEACHER_NORM = "models/ant_teacher_obs_norm.json"
TEACHER_SPEC = "config/specs/ant_teacher.yaml"
STUDENT_SPEC = "config/specs/ant_student.yaml"
TRAIN_CONFIG = "config/demo_train.yaml"
DAGGER_CONFIG = "config/demo_dagger.yaml"
STAGES = ("teacher", "record", "distill", "dagger", "deploy", "evaluate", "report")


class DemoError(RuntimeError):
    """A stage failed; the message names the stage and where its logs are."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--episodes", type=int, default=12,
                        help="teacher demonstration episodes (default 12)")
    parser.add_argument("--dagger-episodes", type=int, default=None,
                        help="student-driven episodes per in-process DAgger round (default: "
                             "the DAgger config's, 20)")
    parser.add_argument("--dagger-rounds", type=int, default=None,
                        help="DAgger rounds (default: the DAgger config's, 5)")
    parser.add_argument("--ros-episodes", type=int, default=6,
                        help="episodes of the DAgger round through the ROS nodes (default 6)")
    parser.add_argument("--eval-episodes", type=int, default=50,
                        help="held-out evaluation episodes (default 50)")
    parser.add_argument("--max-episode-steps", type=int, default=None,
                        help="shorter episodes than config/sim.yaml's 1000 steps")
    parser.add_argument("--epochs", type=int, default=None, help="override training epochs")
    parser.add_argument("--deploy-s", type=float, default=15.0,
                        help="seconds of each closed-loop deployment (default 15)")
    parser.add_argument("--config", default=TRAIN_CONFIG, help="training YAML (BC stage)")
    parser.add_argument("--dagger-config", default=DAGGER_CONFIG, help="DAgger YAML")
    parser.add_argument("--teacher", default=TEACHER_DIR, help="teacher directory")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the recordings, the DAgger episodes and the training")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 short episodes per stage, 3 epochs, 3 s deployments")
    parser.add_argument("--resume-from", choices=STAGES[1:], default=None,
                        help="keep the outputs of the stages before this one (same --out) and "
                             "run from it, e.g. a new DAgger config on the same recording")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def call(command: str, argv: Sequence[str]) -> int:
    """Run one `policy-distill` subcommand in this process, as the user would type it."""
    from policy_distill_ros.cli import load_command
    module = load_command(command)
    parser = argparse.ArgumentParser(prog=f"policy-distill {command}")
    module.add_arguments(parser)
    args = [str(a) for a in argv]
    LOG.info("policy-distill %s %s", command, " ".join(args))
    return int(module.run(parser.parse_args(args)) or 0)


def _stage(index: int, name: str, text: str) -> float:
    print(f"\n=== [{index}/{len(STAGES)}] {name}: {text}", flush=True)
    return time.monotonic()


def _check(rc: int, stage: str, where: Path) -> None:
    if rc != 0:
        raise DemoError(f"stage '{stage}' failed (exit {rc}); its logs and outputs are in {where}")


def ensure_teacher(teacher: Path) -> None:
    """The shipped teacher directory, or one imported from the shipped SB3 checkpoint."""
    if (teacher / "teacher.json").is_file():
        return
    sb3, norm = REPO_ROOT / TEACHER_SB3, REPO_ROOT / TEACHER_NORM
    if not sb3.is_file():
        raise DemoError(f"no teacher at {teacher} and no {TEACHER_SB3} to import; train one "
                        f"with `.venv/bin/python scripts/train_teacher.py --seed 0`")
    _check(call("import-teacher", ["--sb3", sb3, "--obs-norm-json", norm, "--spec",
                                   REPO_ROOT / TEACHER_SPEC, "--out", teacher]),
           "teacher", teacher)


def plan_sizes(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return {"episodes": 2, "dagger_episodes": 2, "dagger_rounds": 2, "ros_episodes": 2,
                "val_episodes": 1, "eval_episodes": 2, "max_steps": 100, "epochs": 3,
                "deploy_s": 3.0}
    return {"episodes": args.episodes, "dagger_episodes": args.dagger_episodes,
            "dagger_rounds": args.dagger_rounds, "ros_episodes": args.ros_episodes,
            "val_episodes": None, "eval_episodes": args.eval_episodes,
            "max_steps": args.max_episode_steps, "epochs": args.epochs,
            "deploy_s": args.deploy_s}


def _with_steps(argv: list[Any], max_steps: int | None) -> list[Any]:
    return argv + (["--max-episode-steps", max_steps] if max_steps else [])


def _train(args, sizes, bags: Sequence[Path], out: Path, teacher: Path, progress: bool) -> None:
    argv: list[Any] = ["--config", args.config, "--bags", *bags, "--out", out,
                       "--teacher", teacher]
    if sizes["epochs"]:
        argv += ["--epochs", sizes["epochs"]]
    if not progress:
        argv.append("--no-progress")
    _check(call("train", argv), "distill", out)


def _dagger(args, sizes, bag: Path, out: Path, teacher: Path, progress: bool) -> None:
    argv: list[Any] = ["--config", args.dagger_config, "--initial-data", bag, "--out", out,
                       "--teacher", teacher, "--seed", args.seed, "--eval-episodes", 0,
                       "--ros-rounds", 1, "--ros-episodes", sizes["ros_episodes"]]
    for flag, key in (("--rounds", "dagger_rounds"), ("--episodes-per-round", "dagger_episodes"),
                      ("--val-episodes", "val_episodes"), ("--epochs", "epochs"),
                      ("--max-episode-steps", "max_steps")):
        if sizes[key]:
            argv += [flag, sizes[key]]
    if not progress:
        argv.append("--no-progress")
    _check(call("dagger", argv), "dagger", out)


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    out = Path(args.out).resolve()
    first = STAGES.index(args.resume_from) if args.resume_from else 0
    if first and not (out / "record.json").is_file():
        LOG.error("--resume-from %s: %s holds no earlier demo run", args.resume_from, out)
        return 1
    if out.exists() and not first:
        shutil.rmtree(out)  # a demo run is reproducible; stale stages must not mix in
    (out / "bags").mkdir(parents=True, exist_ok=True)

    def skip(stage: str) -> bool:
        return STAGES.index(stage) < first

    logs = out / "logs"
    sizes = plan_sizes(args)
    progress = not args.no_progress
    teacher = Path(args.teacher)
    if not teacher.is_absolute():
        teacher = (REPO_ROOT / teacher) if not teacher.exists() else teacher.resolve()
    timings: dict[str, float] = {}
    try:
        t = _stage(1, "teacher", f"{teacher}")
        ensure_teacher(teacher)
        timings["teacher"] = time.monotonic() - t

        demo_bag = out / "bags" / "teacher"
        student = out / "dagger" / "student.onnx"
        if not skip("record"):
            t = _stage(2, "record", f"{sizes['episodes']} teacher episodes through the ROS nodes "
                                    "(simulator in lockstep)")
            argv = ["--teacher", teacher, "--episodes", sizes["episodes"], "--out", out / "bags",
                    "--bag-name", "teacher", "--seed", args.seed, "--json", out / "record.json",
                    "--log-dir", logs / "record"]
            argv += [] if progress else ["--no-progress"]
            _check(call("record", _with_steps(argv, sizes["max_steps"])), "record",
                   logs / "record")
            timings["record"] = time.monotonic() - t

        if not skip("distill"):
            t = _stage(3, "distill", "history MLP student: behavioural cloning on the executed "
                                     "actions, ONNX export with parity check")
            _train(args, sizes, [demo_bag], out / "bc", teacher, progress)
            timings["distill"] = time.monotonic() - t

        if not skip("dagger"):
            t = _stage(4, "dagger", "the student drives, the teacher labels, the data "
                                    "aggregates; rounds in-process, the last through the nodes")
            shutil.rmtree(out / "dagger", ignore_errors=True)   # no stale round bags
            _dagger(args, sizes, demo_bag, out / "dagger", teacher, progress)
            timings["dagger"] = time.monotonic() - t

        if not skip("deploy"):
            t = _stage(5, "deploy", "student node + timing monitor: closed loop with the "
                                    "simulator, then a 500 Hz sensor stream")
            for source in ("sim", "stream"):
                rc = call("deploy", ["--model", student, "--source", source, "--duration-s",
                                     sizes["deploy_s"], "--json", out / f"deploy_{source}.json",
                                     "--log-dir", logs / f"deploy_{source}"])
                if rc != 0 and not (out / f"deploy_{source}.json").is_file():
                    _check(rc, "deploy", logs / f"deploy_{source}")
                if rc != 0:  # measured, but unhealthy (e.g. deactivated on a loaded machine):
                    LOG.warning("deploy (%s) ended unhealthy; the report shows what the monitor "
                                "measured; logs in %s", source, logs / f"deploy_{source}")
            timings["deploy"] = time.monotonic() - t

        if not skip("evaluate"):
            t = _stage(6, "evaluate", f"teacher vs students on {sizes['eval_episodes']} "
                                      "held-out randomized episodes")
            for name, argv in (("final", ["--teacher", teacher, "--student", student]),
                               ("bc", ["--student", out / "bc" / "student.onnx"])):
                argv = argv + ["--episodes", sizes["eval_episodes"], "--json",
                               out / f"eval_{name}.json"]
                argv += [] if progress else ["--no-progress"]
                _check(call("eval", _with_steps(argv, sizes["max_steps"])), "evaluate", out)
            timings["evaluate"] = time.monotonic() - t

        t = _stage(7, "report", str(out / "report.md"))
        from policy_distill_ros.training.demo_report import write_demo_report
        timings["report"] = time.monotonic() - t
        timings["total"] = time.monotonic() - started
        report = write_demo_report(out, timings)
    except DemoError as err:
        LOG.error("%s", err)
        return 1
    print("\n" + report.read_text())
    print(f"demo finished in {timings['total'] / 60:.1f} min: {report}")
    return 0
