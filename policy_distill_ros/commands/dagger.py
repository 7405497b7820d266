"""`policy-distill dagger`: DAgger rounds in-process on the embedded simulator.

    policy-distill dagger --config config/dagger.yaml [--rounds 4] [--out runs/NAME]

Round 0 clones teacher-driven episodes (plus any `initial_data` bags / .npz); each later round
the student drives (the teacher's action executed with probability beta), the teacher labels
every visited state, the data aggregates and the student is retrained from its last weights
(`training/dagger.py`); with `select_best` the round with the best return on validation seeds
is kept. That student is exported (parity-checked ONNX) to
`<out>/student.onnx` and evaluated against the teacher on held-out seeds; every figure goes to
`<out>/dagger.json` and a per-round table is printed.

`--ros-rounds N`: the last N rounds run through the real nodes instead of the in-process
simulator (the round's student exported to ONNX and driving through student_node, sim_node in
lockstep, teacher_node labelling: `--mode label` when the round's beta is 0, `--mode mix --beta
B` otherwise, recorder_node writing the bag that is read back with the same spec code),
`--ros-episodes` episodes each. The other rounds use the in-process path: the same simulator,
specs and labels, ~10x faster.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from policy_distill_ros.core.config_keys import check_keys, read_yaml

HELP = "DAgger rounds in-process: the student drives, the teacher labels, data aggregates"
LOG = logging.getLogger("policy-distill.dagger")
ROUND_COLUMNS = (
    ("round", "round", "d"), ("beta", "beta", ".3f"), ("new_samples", "new", ",d"),
    ("dataset_samples", "total", ",d"), ("rollout_mean_return", "rollout return", ".1f"),
    ("teacher_action_fraction", "teacher acts", ".2f"),
    ("on_policy_error_before", "on-policy mse before", ".4g"),
    ("on_policy_error_after", "after", ".4g"), ("val_error", "val mse", ".4g"),
    ("val_mean_return", "val return", ".1f"), ("train_time_s", "train s", ".1f"),
    ("via", "via", ""))
_KEYS = ("teacher", "teacher_normalizer", "teacher_spec", "student_spec", "sim_config",
         "max_episode_steps", "initial_data", "out", "eval_episodes", "dagger", "train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="DAgger YAML (config/dagger.yaml)")
    parser.add_argument("--rounds", type=int, default=None, help="override dagger.rounds")
    parser.add_argument("--out", default=None, help="override the output directory")
    parser.add_argument("--max-episode-steps", type=int, default=None,
                        help="override the episode length")
    parser.add_argument("--initial-data", nargs="+", default=None, metavar="BAG_OR_NPZ",
                        help="override initial_data (bags, globs or dataset .npz)")
    parser.add_argument("--eval-episodes", type=int, default=None,
                        help="override eval_episodes (held-out seeds; 0 = no evaluation)")
    parser.add_argument("--ros-rounds", type=int, default=0,
                        help="the last N rounds drive the ROS nodes (see the module docstring)")
    parser.add_argument("--ros-episodes", type=int, default=6,
                        help="episodes of each round through the nodes (default 6)")
    parser.add_argument("--episodes-per-round", type=int, default=None,
                        help="override dagger.episodes_per_round")
    parser.add_argument("--val-episodes", type=int, default=None,
                        help="override dagger.val_episodes (validation seeds 900000+k)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override train.epochs and dagger.round_epochs")
    parser.add_argument("--teacher", default=None, help="override the teacher")
    parser.add_argument("--seed", type=int, default=None,
                        help="override train.seed and dagger.seed_base (x 1000)")
    parser.add_argument("--no-progress", action="store_true")


def _load_config(path: str) -> dict:
    data = read_yaml(path, "dagger config") or {}
    check_keys(data, _KEYS, path)
    for key in ("teacher", "student_spec", "teacher_spec"):
        if not data.get(key):
            raise ValueError(f"{path}: missing {key!r}")
    return data


def initial_dataset(items, config_dir: Path, student_spec, teacher_spec):
    """One dataset from bags, globs and dataset .npz files (relative to `config_dir` as in
    `pipeline.resolve_path`); None when `items` is empty. Shared by dagger, sweep and quantize."""
    from policy_distill_ros.training.dataset import (
        DistillDataset,
        dataset_from_bags,
        iter_bag_paths,
    )
    from policy_distill_ros.training.pipeline import resolve_path
    items = [items] if isinstance(items, str) else list(items or [])
    npz = [resolve_path(p, config_dir) for p in items if str(p).endswith(".npz")]
    bags = [resolve_path(p, config_dir) for p in items if not str(p).endswith(".npz")]
    parts = [DistillDataset.load(p) for p in npz]
    if bags:
        parts.append(dataset_from_bags(iter_bag_paths(bags), student_spec, teacher_spec))
    total = None
    for part in parts:
        total = part if total is None else total.concat(part)
    return total


def ros_round_collector(teacher_dir, student_spec, teacher_spec, out_dir: Path, episodes: int,
                        max_steps, progress: bool):
    """A `run_dagger` round collector that drives the real nodes (`policy-distill record
    --student`) and reads the bag back."""
    from policy_distill_ros.commands.demo import call
    from policy_distill_ros.training.dataset import DatasetError, dataset_from_bags
    from policy_distill_ros.training.rollout import EpisodeStats, RolloutResult
    from policy_distill_ros.training.trainer import export_student

    def collect_round(round_index: int, beta: float, result, seeds):
        driver = out_dir / f"round{round_index}_driver.onnx"
        export_student(result, student_spec, driver, {"method": "dagger",
                                                      "round": round_index})
        name = f"dagger_ros_{round_index}"
        mode = ["--mode", "label"] if beta == 0 else ["--mode", "mix", "--beta", beta]
        argv = ["--teacher", teacher_dir, "--student", driver, *mode, "--episodes", episodes,
                "--out", out_dir / "bags", "--bag-name", name, "--seed", seeds[0],
                "--json", out_dir / f"{name}.json", "--log-dir", out_dir / "logs" / name]
        argv += ["--max-episode-steps", max_steps] if max_steps else []
        argv += [] if progress else ["--no-progress"]
        if call("record", argv) != 0:
            raise DatasetError(f"DAgger round {round_index} through the nodes failed; logs in "
                               f"{out_dir / 'logs' / name}")
        dataset = dataset_from_bags([out_dir / "bags" / name], student_spec, teacher_spec)
        figures = json.loads((out_dir / f"{name}.json").read_text())["episodes"]
        stats = [EpisodeStats(seed=int(seeds[0]), episode_return=e["episode_return"],
                              length=e["steps"], forward_distance_m=e["forward_distance_m"],
                              terminated=e["terminated"], labeler_fraction=beta)
                 for e in figures]
        return RolloutResult(stats, dataset)
    return collect_round


def run(args: argparse.Namespace) -> int:
    import torch

    from policy_distill_ros.commands.evaluate import sim_config_from_args
    from policy_distill_ros.core.policy_file import PolicyFileError
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.dagger import DaggerConfig, run_dagger
    from policy_distill_ros.training.dataset import DatasetError
    from policy_distill_ros.training.evaluation import (
        comparison_table,
        evaluate_teacher_and_student,
        format_table,
        held_out_seeds,
    )
    from policy_distill_ros.training.pipeline import resolve_path
    from policy_distill_ros.training.teacher_loading import load_teacher_any
    from policy_distill_ros.training.trainer import TrainConfig, TrainingError, export_student

    try:
        config_path = Path(args.config)
        data = _load_config(args.config)
        cdir = config_path.resolve().parent
        student_spec = load_policy_spec(resolve_path(data["student_spec"], cdir))
        teacher_spec = load_policy_spec(resolve_path(data["teacher_spec"], cdir))
        norm_path = data.get("teacher_normalizer")
        teacher, normalizer, info = load_teacher_any(
            resolve_path(data["teacher"], cdir),
            resolve_path(norm_path, cdir) if norm_path else None)
        steps = args.max_episode_steps if args.max_episode_steps is not None \
            else data.get("max_episode_steps")
        sim_config = sim_config_from_args(
            resolve_path(data.get("sim_config") or "config/sim.yaml", cdir), steps)
        dagger_dict = dict(data.get("dagger") or {})
        if args.rounds is not None:
            dagger_dict["rounds"] = args.rounds
        train_dict = dict(data.get("train") or {})
        for key, value in (("episodes_per_round", args.episodes_per_round),
                           ("val_episodes", args.val_episodes), ("round_epochs", args.epochs)):
            if value is not None:
                dagger_dict[key] = value
        if args.epochs is not None:
            train_dict["epochs"] = args.epochs
        if args.seed is not None:
            dagger_dict["seed_base"] = 1000 * args.seed
            train_dict["seed"] = args.seed
        if args.initial_data is not None:
            data["initial_data"] = args.initial_data
        if args.eval_episodes is not None:
            data["eval_episodes"] = args.eval_episodes
        if args.teacher is not None:
            data["teacher"] = str(Path(args.teacher).resolve())
        dagger_config = DaggerConfig.from_dict(dagger_dict)
        train_config = TrainConfig.from_dict(train_dict, student_spec=student_spec)
        if not 0 <= args.ros_rounds <= dagger_config.rounds:
            raise ValueError(f"--ros-rounds must be in [0, {dagger_config.rounds}] (the rounds), "
                             f"got {args.ros_rounds}")
        if train_config.num_threads:
            torch.set_num_threads(train_config.num_threads)
        initial = initial_dataset(data.get("initial_data"), cdir, student_spec, teacher_spec)
        out_dir = Path(args.out or data.get("out") or "runs/dagger").resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        LOG.info("teacher %s (sha256 %s...), %d rounds", data["teacher"], info.sha256[:12],
                 dagger_config.rounds)
        collector, ros_rounds = None, ()
        if args.ros_rounds:
            teacher_dir = Path(resolve_path(data["teacher"], cdir))
            if not (teacher_dir / "teacher.json").is_file():
                raise ValueError(f"--ros-rounds: the nodes need a teacher directory, got "
                                 f"{teacher_dir}")
            collector = ros_round_collector(teacher_dir, student_spec, teacher_spec, out_dir,
                                            args.ros_episodes, steps, not args.no_progress)
            ros_rounds = range(dagger_config.rounds - args.ros_rounds + 1,
                               dagger_config.rounds + 1)
        result = run_dagger(teacher, normalizer, student_spec, teacher_spec, sim_config,
                            dagger_config, train_config, initial_dataset=initial,
                            progress=not args.no_progress,
                            on_round=lambda r: LOG.info("round %d done: %s", r.round,
                                                        json.dumps(r.to_dict())),
                            round_collector=collector, collector_rounds=ros_rounds)
        out_dir.mkdir(parents=True, exist_ok=True)
        onnx_path = out_dir / "student.onnx"
        provenance = {"teacher_sha256": info.sha256, "method": "dagger",
                      "dataset": {"samples": len(result.dataset),
                                  "episodes": int(len(result.dataset.episodes)),
                                  "sources": list(result.dataset.sources)[:50]},
                      "dagger": dagger_config.to_dict()}
        parity = export_student(result.result, student_spec, onnx_path, provenance)
        report = {"config": str(config_path), "teacher": data["teacher"],
                  "teacher_sha256": info.sha256, "onnx": str(onnx_path),
                  "parity_max_abs_error": parity.max_abs_error, **result.to_dict()}
        episodes = int(data.get("eval_episodes", 20) or 0)
        if episodes:
            report["evaluation"] = evaluate_teacher_and_student(
                teacher, normalizer, teacher_spec, onnx_path, student_spec, sim_config,
                held_out_seeds(episodes), sim_seed=dagger_config.sim_seed,
                progress=not args.no_progress)
    except (OSError, ValueError, DatasetError, TrainingError, PolicyFileError) as exc:
        LOG.error("%s", exc)
        return 1
    (out_dir / "dagger.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    print(format_table([r.to_dict() for r in result.rounds], ROUND_COLUMNS))
    print(f"selected: round {result.selected_round}")
    if "evaluation" in report:
        print()
        print(comparison_table(report["evaluation"]))
    print(f"\nstudent: {onnx_path}\nreport:  {out_dir / 'dagger.json'}")
    return 0
