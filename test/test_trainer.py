"""fit(): the loss decreases, the teacher stays frozen, every loss combination trains, the
exported student passes parity and loads in the student node's OnnxPolicy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from policy_distill_ros.core.policy_file import OnnxPolicy, read_metadata
from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.training.dataset import DistillDataset, dataset_from_bags
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy, count_parameters
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.trainer import (
    TrainConfig,
    TrainingError,
    export_student,
    fit,
    teacher_outputs,
)
from sim_bags import record_sim_bag, specs


def make_teacher(obs_size: int, action_size: int = 8, seed: int = 0, hidden=(64, 64)):
    torch.manual_seed(seed)
    teacher = TeacherPolicy(TeacherConfig(obs_size=obs_size, action_size=action_size,
                                          hidden_sizes=hidden, init_std=0.5))
    normalizer = EmpiricalNormalizer(NormalizerConfig(size=obs_size))
    return teacher, normalizer


def toy_dataset(n_episodes=24, per=50, obs=12, seed=0) -> DistillDataset:
    """Student obs = teacher obs (the student can match the teacher exactly)."""
    rng = np.random.default_rng(seed)
    n = n_episodes * per
    x = rng.normal(size=(n, obs)).astype(np.float32)
    return DistillDataset(x, x * 1.0, rng.normal(size=(n, 8)) * 0.1,
                          np.repeat(np.arange(n_episodes), per),
                          {i: float(i) for i in range(n_episodes)})


def config(loss=None, **kw) -> TrainConfig:
    d = {"student": {"kind": "mlp", "obs_size": 12, "action_size": 8, "hidden_sizes": [32, 32]},
         "epochs": 8, "batch_size": 64, "lr": 3e-3, "val_fraction": 0.25}
    if loss is not None:
        d["loss"] = loss
    d.update(kw)
    return TrainConfig.from_dict(d)


def test_loss_decreases_teacher_frozen_and_student_matches_teacher():
    ds = toy_dataset()
    teacher, norm = make_teacher(12)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    norm_before = {k: v.clone() for k, v in norm.state_dict().items()}
    untrained_err = None
    seen = []
    result = fit(teacher, norm, ds, config(epochs=15), progress=False, on_epoch=seen.append)
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher parameter {k} changed"
    for k, v in norm.state_dict().items():
        assert torch.equal(v, norm_before[k])
    hist = result.history
    assert len(hist) == len(seen) == 15
    assert hist[-1]["train"]["total"] < 0.2 * hist[0]["train"]["total"]
    assert hist[-1]["val"]["total"] < 0.2 * hist[0]["val"]["total"]
    # held-out episodes: the student's action is close to the teacher's
    _, val = ds.split_by_episode(0.25, 0)
    t_act = teacher_outputs(teacher, norm, val.teacher_obs).mean.numpy()
    s_act = result.inference(val.student_obs)
    untrained_err = float(np.mean(t_act ** 2))
    err = float(np.mean((s_act - t_act) ** 2))
    assert err < 0.1 * untrained_err
    m = result.metrics
    assert m["val_action_error_vs_teacher"]["mse"] == pytest.approx(err, rel=1e-4)
    assert m["val_samples"] == len(val) and m["train_samples"] == len(ds) - len(val)
    assert m["student_params"] == count_parameters(result.student)
    assert m["samples_per_s"] > 0


def test_targets_are_the_executed_actions_when_the_action_limits_are_known():
    """A teacher whose mean lies far outside the limits: with the action spec the student
    learns the clipped (executed) action, and the figures compare executed actions."""
    from policy_distill_ros.core.spec import ActionSpec
    from policy_distill_ros.training.trainer import executed_bounds
    ds = toy_dataset(n_episodes=12, per=50)
    teacher, norm = make_teacher(12)
    with torch.no_grad():
        teacher.mean_head.weight.mul_(20.0)    # |mean| mostly >> 1
    spec = ActionSpec(joints=tuple(f"j{i}" for i in range(8)), scale=0.5, offset=0.1,
                      lower=-0.4, upper=0.6)
    lo, hi = executed_bounds(spec)
    assert torch.allclose(lo, torch.full((8,), -1.0)) and torch.allclose(hi, torch.full((8,), 1.0))
    _, val = ds.split_by_episode(0.25, 0)
    raw = teacher_outputs(teacher, norm, val.teacher_obs).mean.numpy()
    assert np.mean(np.abs(raw) > 1.0) > 0.5
    executed = np.clip(raw, -1.0, 1.0)
    result = fit(teacher, norm, ds, config(epochs=20), progress=False, action_spec=spec)
    s_act = np.clip(result.inference(val.student_obs), -1.0, 1.0)
    err = float(np.mean((s_act - executed) ** 2))
    assert err < 0.2 * float(np.mean(executed ** 2))
    assert result.metrics["val_action_error_vs_teacher"]["mse"] == pytest.approx(err, rel=1e-3)
    assert result.metrics["targets"].startswith("executed")
    # the same command for the robot: postprocess(student) vs postprocess(teacher)
    cmd_s = np.stack([spec.postprocess(a) for a in result.inference(val.student_obs)[:50]])
    cmd_t = np.stack([spec.postprocess(a) for a in raw[:50]])
    assert float(np.mean(np.abs(cmd_s - cmd_t))) < 0.1
    assert executed_bounds(ActionSpec(joints=("a",))) is None   # no limits: raw mean


@pytest.mark.parametrize("loss", [
    {"bc_weight": 1.0, "bc_kind": "mse"},
    {"bc_weight": 1.0, "bc_kind": "huber", "huber_delta": 0.1},
    {"bc_weight": 0.0, "kl_weight": 1.0, "temperature": 1.5},
    {"bc_weight": 0.0, "feature_weight": 1.0, "feature_pairs": [["layer_1", "layer_1"]]},
    {"bc_weight": 1.0, "kl_weight": 0.1, "feature_weight": 0.1,
     "feature_pairs": [["layer_0", "layer_0"], ["layer_1", "layer_1"]], "feature_kind": "cosine"},
], ids=["mse", "huber", "kl", "feature", "all"])
def test_each_loss_combination_trains(loss):
    ds = toy_dataset(n_episodes=12, per=40)
    teacher, norm = make_teacher(12, hidden=(48, 48))
    result = fit(teacher, norm, ds, config(loss, epochs=6), progress=False)
    first, last = result.history[0], result.history[-1]
    for term in first["val"]:
        assert last["val"][term] < first["val"][term], (term, first["val"], last["val"])
    if loss.get("feature_weight"):
        assert len(list(result.loss_module.parameters())) > 0   # learned projections
        assert result.loss_module.features is not None


def test_kl_temperature_sets_the_student_std():
    ds = toy_dataset(n_episodes=8, per=50)
    teacher, norm = make_teacher(12)
    result = fit(teacher, norm, ds, config({"bc_weight": 0.0, "kl_weight": 1.0, "temperature": 2.0},
                                           epochs=30, lr=1e-2), progress=False)
    student_std = torch.exp(result.student.log_std).detach()
    teacher_std = torch.exp(teacher.log_std).detach()
    torch.testing.assert_close(student_std, 2.0 * teacher_std, rtol=0.1, atol=0.0)


def test_export_passes_parity_and_loads_in_the_student_node_loader(tmp_path):
    rec = record_sim_bag(tmp_path / "bag", episodes=4, max_steps=25)
    student_spec, teacher_spec = specs()
    ds = dataset_from_bags(str(tmp_path / "bag"), student_spec, teacher_spec)
    teacher, norm = make_teacher(teacher_spec.observation.size)
    norm.update(torch.as_tensor(ds.teacher_obs))
    cfg = TrainConfig.from_dict({"student": {"kind": "history_mlp", "hidden_sizes": [48, 48]},
                                 "epochs": 3, "val_fraction": 0.25}, student_spec=student_spec)
    assert cfg.student.obs_size == 102 and cfg.student.history_length == 3
    result = fit(teacher, norm, ds, cfg, progress=False)
    path = tmp_path / "out" / "student.onnx"
    report = export_student(result, student_spec, path,
                            provenance={"teacher_hash": "abc", "dataset": list(ds.sources)})
    assert report.passed and report.max_abs_error <= 1e-5
    policy = OnnxPolicy(str(path), expected=student_spec)
    s, *_ = rec.arrays()
    for row in s[:20]:
        np.testing.assert_allclose(policy(row), result.inference(row[None])[0], atol=1e-5)
    meta = read_metadata(str(path))
    assert meta.provenance["teacher_hash"] == "abc"
    assert meta.provenance["dataset"] == [str(tmp_path / "bag")]
    assert meta.provenance["losses"]["bc_weight"] == 1.0
    assert "val_action_error_vs_teacher" in meta.provenance["metrics"]
    assert meta.provenance["metrics"]["onnx_parity"]["passed"] is True


def test_recurrent_student_trains_on_episode_windows_and_exports(tmp_path):
    ds = toy_dataset(n_episodes=10, per=30)
    teacher, norm = make_teacher(12)
    cfg = config(student={"kind": "gru", "obs_size": 12, "action_size": 8, "hidden_sizes": [16],
                          "gru_hidden_size": 16}, epochs=6, sequence_length=8, batch_size=64)
    result = fit(teacher, norm, ds, cfg, progress=False)
    assert result.history[-1]["val"]["total"] < result.history[0]["val"]["total"]
    from policy_distill_ros.core.spec import ObservationSpec, ObsTerm, PolicySpec
    student_spec, _ = specs()
    spec = PolicySpec(ObservationSpec((ObsTerm("x", topic="imu", field="data", size=12),)),
                      student_spec.action, 20.0)
    report = export_student(result, spec, tmp_path / "gru.onnx")
    assert report.passed and report.max_abs_error_hidden is not None
    assert OnnxPolicy(str(tmp_path / "gru.onnx")).recurrent


def test_on_epoch_false_stops_and_restore_best():
    ds = toy_dataset(n_episodes=6, per=20)
    teacher, norm = make_teacher(12)
    result = fit(teacher, norm, ds, config(epochs=50), progress=False,
                 on_epoch=lambda rec: rec["epoch"] < 3)
    assert len(result.history) == 3
    # a learning rate so high that validation gets worse: the best epoch's parameters come back
    result = fit(teacher, norm, ds, config(epochs=6, lr=0.5, grad_clip=None), progress=False)
    vals = [h["val"]["total"] for h in result.history]
    best = int(np.argmin(vals))
    assert result.metrics["best_epoch"] == best + 1
    _, val = ds.split_by_episode(0.25, 0)
    t_out = teacher_outputs(teacher, norm, val.teacher_obs)
    with torch.no_grad():
        out = result.student(result.student_normalizer(torch.as_tensor(val.student_obs)))
        total, _ = result.loss_module(out, t_out)
    assert float(total) == pytest.approx(vals[best], rel=1e-4)


def test_config_is_validated_and_round_trips():
    cfg = config(grad_clip=None, lr_schedule="constant")
    assert TrainConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    for bad, match in (({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
                       ({"val_fraction": 0.95}, "val_fraction"),
                       ({"lr_schedule": "step"}, "lr_schedule"),
                       ({"batch_size": 2.5}, "batch_size"), ({"epoch": 3}, "unknown keys")):
        with pytest.raises(ValueError, match=match):
            config(**bad)
    with pytest.raises(ValueError, match="obs_size"):
        TrainConfig.from_dict({"student": {"kind": "mlp"}})


def test_mismatched_dataset_is_refused():
    ds = toy_dataset(obs=10)
    teacher, norm = make_teacher(10)
    with pytest.raises(TrainingError, match="student config expects 12"):
        fit(teacher, norm, ds, config(), progress=False)
    teacher, norm = make_teacher(11)
    ds = toy_dataset(obs=12)
    with pytest.raises(TrainingError, match="teacher expects"):
        fit(teacher, norm, ds, config(), progress=False)


def test_cli_train_writes_the_run_directory_and_report(tmp_path):
    """`policy-distill train` end to end on a recorded bag; then closed-loop figures are added
    to the report without retraining."""
    import json
    import subprocess
    import sys

    import yaml

    from policy_distill_ros.training.report import update_report
    from policy_distill_ros.training.teacher_io import save_teacher
    from sim_bags import STUDENT_SPEC, TEACHER_SPEC
    record_sim_bag(tmp_path / "bag", episodes=5, max_steps=20)
    teacher, norm = make_teacher(load_policy_spec(TEACHER_SPEC).observation.size,
                                 hidden=(512, 512, 256))
    save_teacher(teacher, norm, tmp_path / "teacher")
    config = yaml.safe_load((STUDENT_SPEC.parents[2] / "config/train.yaml").read_text())
    config.update(teacher=str(tmp_path / "teacher"), teacher_normalizer=None,
                  student_spec=str(STUDENT_SPEC), teacher_spec=str(TEACHER_SPEC))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "runs" / "cli"
    proc = subprocess.run([sys.executable, "-m", "policy_distill_ros.cli", "train", "--config",
                           str(tmp_path / "train.yaml"), "--bags", str(tmp_path / "bag"),
                           "--out", str(out), "--epochs", "3", "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "student" in proc.stderr and "report" in proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.yaml", "losses.png", "metrics.json", "per_joint_action_error.png",
                     "report.md", "student.onnx"]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["metrics"]["student_params"] == 7696            # the default Ant student
    assert summary["metrics"]["teacher_params"] == 419600   # 45-512-512-256-8 + log std
    assert summary["student"]["onnx_bytes"] < summary["teacher"]["onnx_bytes"] / 20
    assert len(summary["history"]) == 3
    report = (out / "report.md").read_text()
    assert "| parameters | 419,600 | 7,696 | 1.83 % of teacher |" in report
    assert "val action MSE vs teacher" in report and "closed-loop return" not in report
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 3
    OnnxPolicy(str(out / "student.onnx"), expected=specs()[0])
    update_report(out, {"teacher": {"mean_return": 800.0, "episodes": 10},
                        "student": {"mean_return": 780.0, "episodes": 10}})
    report = (out / "report.md").read_text()
    assert "| closed-loop return (mean) | 800 | 780 | 97.5 % of teacher |" in report
    assert json.loads((out / "metrics.json").read_text())["evaluation"]["student"][
        "mean_return"] == 780.0
    bad = subprocess.run([sys.executable, "-m", "policy_distill_ros.cli", "train", "--config",
                          str(tmp_path / "train.yaml"), "--bags", str(tmp_path / "nobag"),
                          "--out", str(tmp_path / "runs/bad"), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "nobag" in bad.stderr
