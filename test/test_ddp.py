"""Data-parallel training under torchrun (2 processes, gloo on CPU): both ranks end with
identical parameters, the loss decreases, rank 0 alone writes the run directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.training.dataset import DistillDataset
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.teacher_io import save_teacher
from sim_bags import STUDENT_SPEC, TEACHER_SPEC

TORCHRUN = Path(sys.executable).with_name("torchrun")


def tiny_run(tmp_path: Path, epochs: int = 4) -> Path:
    rng = np.random.default_rng(0)
    n_episodes, per = 10, 40
    n = n_episodes * per
    size = load_policy_spec(TEACHER_SPEC).observation.size
    teacher_obs = rng.normal(size=(n, size)).astype(np.float32)
    student_obs = np.tile(teacher_obs[:, :34], (1, 3))
    DistillDataset(student_obs, teacher_obs, rng.normal(size=(n, 8)) * 0.1,
                   np.repeat(np.arange(n_episodes), per),
                   {i: float(i) for i in range(n_episodes)}).save(tmp_path / "data.npz")
    torch.manual_seed(0)
    teacher = TeacherPolicy(TeacherConfig(obs_size=size, action_size=8, hidden_sizes=(256, 256)))
    save_teacher(teacher, EmpiricalNormalizer(NormalizerConfig(size=size)), tmp_path / "teacher")
    config = {"teacher": str(tmp_path / "teacher"), "student_spec": str(STUDENT_SPEC),
              "teacher_spec": str(TEACHER_SPEC), "bags": ["unused"], "run_name": "ddp",
              "max_student_param_ratio": None,
              "train": {"student": {"kind": "history_mlp", "hidden_sizes": [32, 32]},
                        "epochs": epochs, "batch_size": 32, "lr": 3e-3, "val_fraction": 0.2,
                        "loss": {"bc_weight": 1.0, "feature_weight": 0.1,
                                 "feature_pairs": [["layer_1", "layer_1"]]}}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "train.yaml"


def run_torchrun(args, nproc: int, timeout_s: float = 300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1])] + sys.path[1:]))
    proc = subprocess.Popen([str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", "-m",
                             "policy_distill_ros.training.ddp"] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    return proc.returncode, out


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_two_processes_train_identical_parameters_and_loss_decreases(tmp_path):
    config = tiny_run(tmp_path)
    code, out = run_torchrun(["--config", str(config), "--dataset", str(tmp_path / "data.npz"),
                              "--out", str(tmp_path / "run"),
                              "--save-rank-state", str(tmp_path / "ranks")], nproc=2)
    assert code == 0, out
    r0 = load_file(str(tmp_path / "ranks/rank0.safetensors"))
    r1 = load_file(str(tmp_path / "ranks/rank1.safetensors"))
    assert r0.keys() == r1.keys() and any(k.startswith("loss.") for k in r0)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"{key} differs between ranks"
    summary = json.loads((tmp_path / "run/metrics.json").read_text())
    history = summary["history"]
    assert summary["metrics"]["world_size"] == 2
    # the action term halves; the total (with standardized teacher features, which a 32-unit
    # student reproduces only in part) falls more slowly
    assert history[-1]["train"]["bc"] < 0.5 * history[0]["train"]["bc"]
    assert history[-1]["train"]["total"] < 0.9 * history[0]["train"]["total"]
    assert history[-1]["val"]["total"] < history[0]["val"]["total"]
    assert (tmp_path / "run/student.onnx").is_file() and (tmp_path / "run/report.md").is_file()
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if not p.name.startswith(".")) == \
        ["config.yaml", "losses.png", "metrics.json", "per_joint_action_error.png", "report.md",
         "student.onnx"]
    # each rank saw half of the training rows per epoch
    train_rows = summary["metrics"]["train_samples"]
    assert summary["metrics"]["samples_per_s_all_ranks"] == pytest.approx(
        2 * summary["metrics"]["samples_per_s"])
    assert train_rows == 320


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_a_failing_rank_exits_non_zero_with_the_reason(tmp_path):
    config = tiny_run(tmp_path, epochs=1)
    code, out = run_torchrun(["--config", str(config), "--dataset", str(tmp_path / "nope.npz"),
                              "--out", str(tmp_path / "run")], nproc=2)
    assert code != 0
    assert "nope.npz" in out
    assert not (tmp_path / "run" / "student.onnx").exists()


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to python")
def test_two_processes_resume_to_the_straight_runs_parameters(tmp_path):
    """4 epochs straight vs epochs 3-4 resumed from the straight run's epoch-2 checkpoint, both
    on 2 processes: the same parameters; a 1-process resume of it is refused by process count."""
    from policy_distill_ros.training.checkpoint import load_checkpoint
    config = tiny_run(tmp_path)
    common = ["--config", str(config), "--dataset", str(tmp_path / "data.npz"),
              "--checkpoint-every", "2"]
    code, out = run_torchrun([*common, "--out", str(tmp_path / "straight")], nproc=2)
    assert code == 0, out
    ckpts = tmp_path / "straight" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0002.pt", "epoch_0004.pt"]
    code, out = run_torchrun([*common, "--out", str(tmp_path / "resumed"),
                              "--resume", str(ckpts / "epoch_0002.pt"),
                              "--save-rank-state", str(tmp_path / "ranks")], nproc=2)
    assert code == 0, out
    a = load_checkpoint(ckpts / "epoch_0004.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "epoch_0004.pt")
    assert b["identity"]["world_size"] == 2
    for key, value in a["algorithm"]["module"].items():
        torch.testing.assert_close(value, b["algorithm"]["module"][key], rtol=1e-6, atol=1e-7)
    r0 = load_file(str(tmp_path / "ranks/rank0.safetensors"))
    r1 = load_file(str(tmp_path / "ranks/rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    code, out = run_torchrun([*common, "--out", str(tmp_path / "one"),
                              "--resume", str(ckpts / "epoch_0002.pt")], nproc=1)
    assert code != 0 and "world_size is 2 in the checkpoint, 1 in this run" in out
