"""Distillation throughput: dataset from a bag, training samples/s, epoch time, DDP scaling.

    .venv/bin/python bench/train_throughput.py [--samples 20000] [--epochs 5] [--bag-steps 2000]

Ant widths (student 102 inputs, teacher from its spec: 45) and the default config/train.yaml
student (history MLP [48, 48], 7,696 parameters) against a [512, 512, 256] teacher (419,600),
BC + KL. Figures:
- bag -> dataset: a simulator bag of `--bag-steps` decisions replayed through the assemblers;
- single process, 1 and 2 torch threads (the baseline is 1 thread);
- torchrun 2 processes (gloo, 1 thread each), same data and config;
- checkpoints: the single-process run with a checkpoint after every epoch vs without (wall time
  per checkpoint, file size), and a resume from the middle checkpoint vs the straight run.
Every ratio is against the baseline measured in the same run (the machine is shared).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "test")]

from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.training.dataset import DistillDataset, dataset_from_bag
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.teacher_io import save_teacher
from policy_distill_ros.training.trainer import TrainConfig, fit

STUDENT = REPO / "config/specs/ant_student.yaml"
TEACHER = REPO / "config/specs/ant_teacher.yaml"
TEACHER_OBS = load_policy_spec(TEACHER).observation.size   # read, not assumed: the spec evolves


def bag_rate(tmp: Path, steps: int) -> dict:
    from sim_bags import record_sim_bag
    episodes = max(1, steps // 200)
    t0 = time.perf_counter()
    record_sim_bag(tmp / "bag", episodes=episodes, max_steps=199)
    record_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds, stats = dataset_from_bag(str(tmp / "bag"), load_policy_spec(STUDENT),
                                 load_policy_spec(TEACHER))
    build_s = time.perf_counter() - t0
    return {"decisions": len(ds), "messages": stats.echoes * 7, "build_s": build_s,
            "samples_per_s": len(ds) / build_s, "messages_per_s": stats.echoes * 7 / build_s,
            "record_s": record_s}


def synthetic(n: int, seed: int = 0) -> DistillDataset:
    rng = np.random.default_rng(seed)
    per = 500
    teacher_obs = rng.normal(size=(n, TEACHER_OBS)).astype(np.float32)
    student_obs = np.tile(teacher_obs[:, :34], (1, 3))
    return DistillDataset(student_obs, teacher_obs, rng.normal(size=(n, 8)) * 0.1,
                          np.arange(n) // per, {i: 0.0 for i in range((n + per - 1) // per)})


def config_dict(epochs: int, threads: int) -> dict:
    base = yaml.safe_load((REPO / "config/train.yaml").read_text())["train"]
    base.update(epochs=epochs, num_threads=threads)
    return base


def single(ds: DistillDataset, teacher, norm, epochs: int, threads: int) -> dict:
    cfg = TrainConfig.from_dict(config_dict(epochs, threads),
                                student_spec=load_policy_spec(STUDENT))
    result = fit(teacher, norm, ds, cfg, progress=False)
    m = result.metrics
    return {"samples_per_s": m["samples_per_s"], "epoch_time_s": m["epoch_time_s"],
            "teacher_pass_s": m["teacher_pass_s"], "final_val": result.history[-1]["val"]["total"]}


def checkpointing(tmp: Path, ds: DistillDataset, teacher, norm, epochs: int) -> dict:
    """Cost of a checkpoint every epoch, and whether a mid-run resume ends where straight does."""
    from policy_distill_ros.training.checkpoint import CheckpointOptions
    cfg = TrainConfig.from_dict(config_dict(epochs, 1), student_spec=load_policy_spec(STUDENT))
    t0 = time.perf_counter()
    plain = fit(teacher, norm, ds, cfg, progress=False)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit(teacher, norm, ds, cfg, progress=False,
        checkpoints=CheckpointOptions(tmp / "ckpt", every_epochs=1))
    every_s = time.perf_counter() - t0
    files = sorted((tmp / "ckpt").glob("epoch_*.pt"))
    middle = files[len(files) // 2 - 1] if len(files) > 1 else files[0]
    resumed = fit(teacher, norm, ds, cfg, progress=False,
                  checkpoints=CheckpointOptions(resume=middle))
    a, b = plain.student.state_dict(), resumed.student.state_dict()
    return {"wall_s_no_checkpoints": plain_s, "wall_s_checkpoint_every_epoch": every_s,
            "ms_per_checkpoint": 1e3 * (every_s - plain_s) / len(files),
            "checkpoint_bytes": files[-1].stat().st_size, "resumed_from": middle.name,
            "resume_max_abs_param_diff": max(float((a[k] - b[k]).abs().max()) for k in a)}


def ddp(tmp: Path, ds: DistillDataset, teacher, norm, epochs: int, nproc: int) -> dict:
    ds.save(tmp / "data.npz")
    save_teacher(teacher, norm, tmp / "teacher")
    run = {"teacher": str(tmp / "teacher"), "student_spec": str(STUDENT),
           "teacher_spec": str(TEACHER), "bags": ["unused"], "out": str(tmp / "run"),
           "train": config_dict(epochs, 1)}
    (tmp / "train.yaml").write_text(yaml.safe_dump(run))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run([str(torchrun), "--standalone", f"--nproc-per-node={nproc}", "-m",
                           "policy_distill_ros.training.ddp", "--config", str(tmp / "train.yaml"),
                           "--dataset", str(tmp / "data.npz")], env=env, capture_output=True,
                          text=True, timeout=1800)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    m = json.loads((tmp / "run/metrics.json").read_text())
    return {"samples_per_s_per_process": m["metrics"]["samples_per_s"],
            "samples_per_s_total": m["metrics"]["samples_per_s_all_ranks"],
            "epoch_time_s": m["metrics"]["epoch_time_s"], "wall_s_incl_startup": wall_s,
            "final_val": m["history"][-1]["val"]["total"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--bag-steps", type=int, default=2000)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = TeacherPolicy(TeacherConfig(obs_size=TEACHER_OBS, action_size=8,
                                          hidden_sizes=(512, 512, 256)))
    norm = EmpiricalNormalizer(NormalizerConfig(size=TEACHER_OBS)).freeze()
    ds = synthetic(args.samples)
    out = {"samples": args.samples, "epochs": args.epochs, "cpus": os.cpu_count(),
           "load_avg_1m": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.bag_steps:
            out["bag_to_dataset"] = bag_rate(tmp, args.bag_steps)
        out["single_1_thread"] = base = single(ds, teacher, norm, args.epochs, 1)
        out["single_2_threads"] = two = single(ds, teacher, norm, args.epochs, 2)
        out["checkpoints"] = ckpt = checkpointing(tmp, ds, teacher, norm, args.epochs)
        out[f"ddp_{args.nproc}_processes"] = dist = ddp(tmp, ds, teacher, norm, args.epochs,
                                                         args.nproc)
    out["ratios_vs_1_thread"] = {
        "2_threads_samples_per_s": two["samples_per_s"] / base["samples_per_s"],
        f"ddp_{args.nproc}_total_samples_per_s": (dist["samples_per_s_total"]
                                                  / base["samples_per_s"]),
        f"ddp_{args.nproc}_epoch_time": dist["epoch_time_s"] / base["epoch_time_s"],
        "checkpoint_every_epoch_wall": (ckpt["wall_s_checkpoint_every_epoch"]
                                        / ckpt["wall_s_no_checkpoints"]),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
