"""Checkpoints and resume: N epochs straight equal N/2 + resume N/2 (same process count), a run
killed mid-way resumes from its last checkpoint, a checkpoint of another run is refused by field."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from policy_distill_ros.training.checkpoint import (
    CheckpointError,
    CheckpointOptions,
    latest_checkpoint,
    load_checkpoint,
)
from policy_distill_ros.training.trainer import TrainingError, fit
from test_ddp import tiny_run
from test_trainer import config, make_teacher, toy_dataset

LOSS = {"bc_weight": 1.0, "kl_weight": 0.1, "feature_weight": 0.1,
        "feature_pairs": [["layer_1", "layer_1"]]}
STUDENTS = {"mlp": {"kind": "mlp", "obs_size": 12, "action_size": 8, "hidden_sizes": [32, 32]},
            "gru": {"kind": "gru", "obs_size": 12, "action_size": 8, "hidden_sizes": [16]}}


def assert_same_parameters(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)


@pytest.mark.parametrize("kind", sorted(STUDENTS))
def test_straight_run_equals_half_then_resume(tmp_path, kind):
    """Cosine schedule, best-epoch restore, feature projections: every piece of state counts."""
    ds = toy_dataset(n_episodes=12, per=40)
    loss = LOSS if kind == "mlp" else {"bc_weight": 1.0, "kl_weight": 0.1}
    cfg = config(loss, epochs=6, student=STUDENTS[kind], sequence_length=8)
    teacher, norm = make_teacher(12)
    straight = fit(teacher, norm, ds, cfg, progress=False)

    first = fit(teacher, norm, ds, cfg, progress=False, on_epoch=lambda r: r["epoch"] < 3,
                checkpoints=CheckpointOptions(tmp_path / "ckpt", every_epochs=3))
    assert len(first.history) == 3
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch_0003.pt"]
    resumed = fit(teacher, norm, ds, cfg, progress=False,
                  checkpoints=CheckpointOptions(tmp_path / "ckpt", every_epochs=3,
                                                resume=tmp_path / "ckpt"))
    assert [r["epoch"] for r in resumed.history] == list(range(1, 7))
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert a["train"] == pytest.approx(b["train"], rel=1e-6) and a["lr"] == b["lr"]
        assert a["val"] == pytest.approx(b["val"], rel=1e-6)
    assert_same_parameters(straight.student.state_dict(), resumed.student.state_dict())
    assert_same_parameters(straight.loss_module.state_dict(), resumed.loss_module.state_dict())
    assert resumed.metrics["best_epoch"] == straight.metrics["best_epoch"]
    assert resumed.metrics["val_action_error_vs_teacher"]["mse"] == pytest.approx(
        straight.metrics["val_action_error_vs_teacher"]["mse"], rel=1e-5)
    last = load_checkpoint(latest_checkpoint(tmp_path / "ckpt"))
    assert last["epoch"] == 6 and set(last["algorithm"]) >= {
        "module", "optimizer", "scheduler", "generator", "feature_stats"}
    assert set(last["rng"]) >= {"torch", "numpy"} and last["identity"]["world_size"] == 1


def test_a_checkpoint_of_another_run_is_refused_naming_the_field(tmp_path):
    ds = toy_dataset(n_episodes=8, per=40)
    teacher, norm = make_teacher(12)
    fit(teacher, norm, ds, config(epochs=2), progress=False,
        checkpoints=CheckpointOptions(tmp_path, every_epochs=1))
    ckpt = tmp_path / "epoch_0001.pt"
    with pytest.raises(TrainingError, match=r"cannot resume: train\.lr is 0\.003 in the "
                                            r"checkpoint, 0\.001 in this run"):
        fit(teacher, norm, ds, config(epochs=2, lr=1e-3), progress=False,
            checkpoints=CheckpointOptions(resume=ckpt))
    with pytest.raises(TrainingError, match=r"cannot resume: data_sha256 is"):
        fit(teacher, norm, toy_dataset(n_episodes=8, per=40, seed=1), config(epochs=2),
            progress=False, checkpoints=CheckpointOptions(resume=ckpt))
    other, other_norm = make_teacher(12, seed=1)
    with pytest.raises(TrainingError, match=r"cannot resume: teacher_sha256 is"):
        fit(other, other_norm, ds, config(epochs=2), progress=False,
            checkpoints=CheckpointOptions(resume=ckpt))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: not a readable training checkpoint"):
        fit(teacher, norm, ds, config(epochs=2), progress=False,
            checkpoints=CheckpointOptions(resume=tmp_path / "bad.pt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty holds no checkpoint"):
        fit(teacher, norm, ds, config(epochs=2), progress=False,
            checkpoints=CheckpointOptions(resume=tmp_path / "empty"))


def _train(args, log: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1])] + sys.path[1:]))
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "policy_distill_ros.cli", "train",
                                 "--no-progress", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    """SIGKILL while training (no chance to clean up): --resume DIR picks the newest complete
    checkpoint and ends with the straight run's parameters."""
    config_path = tiny_run(tmp_path, epochs=40)
    common = ["--config", str(config_path), "--dataset", str(tmp_path / "data.npz"),
              "--checkpoint-every", "2"]
    straight = _train([*common, "--out", str(tmp_path / "straight")], tmp_path / "straight.log")
    assert straight.wait(timeout=600) == 0, (tmp_path / "straight.log").read_text()

    killed = _train([*common, "--out", str(tmp_path / "killed")], tmp_path / "killed.log")
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 300
    while latest_checkpoint(ckpts) is None:
        assert killed.poll() is None, (tmp_path / "killed.log").read_text()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    at_kill = latest_checkpoint(ckpts)
    assert at_kill.name < "epoch_0040.pt", "the run finished before the kill"
    assert not (tmp_path / "killed" / "student.onnx").exists()

    resumed = _train([*common, "--out", str(tmp_path / "killed"), "--resume", str(ckpts)],
                     tmp_path / "resumed.log")
    assert resumed.wait(timeout=600) == 0, (tmp_path / "resumed.log").read_text()
    assert f"resuming from {at_kill}" in (tmp_path / "resumed.log").read_text()
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "epoch_0040.pt")
    b = load_checkpoint(ckpts / "epoch_0040.pt")
    assert_same_parameters(a["algorithm"]["module"], b["algorithm"]["module"])
    assert_same_parameters(a["best"]["state"], b["best"]["state"])
    assert (tmp_path / "killed" / "student.onnx").is_file()


def test_cli_names_a_missing_checkpoint_before_reading_any_data(tmp_path):
    config_path = tiny_run(tmp_path, epochs=2)
    proc = subprocess.run([sys.executable, "-m", "policy_distill_ros.cli", "train", "--config",
                           str(config_path), "--dataset", str(tmp_path / "missing.npz"),
                           "--resume", str(tmp_path / "nope"), "--no-progress"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"[ERROR] policy-distill.train: resume: no such checkpoint file or "
                     f"directory {tmp_path / 'nope'}"], proc.stderr


def test_a_single_process_run_never_imports_the_data_parallel_module(tmp_path):
    config_path = tiny_run(tmp_path, epochs=1)
    probe = ("import sys; from policy_distill_ros.cli import main; "
             f"code = main(['train', '--config', {str(config_path)!r}, '--dataset', "
             f"{str(tmp_path / 'data.npz')!r}, '--no-progress']); "
             "print('DDP_IMPORTED', 'policy_distill_ros.training.ddp' in sys.modules, code)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert "DDP_IMPORTED False 0" in proc.stdout, proc.stdout + proc.stderr
