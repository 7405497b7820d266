"""`policy-distill import-teacher`: a real SB3 model in, a teacher directory out that reproduces
SB3's deterministic actions (on VecNormalize-normalized observations) within 1e-5."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from policy_distill_ros.cli import main as cli_main
from policy_distill_ros.training.teacher_io import read_teacher_info
from policy_distill_ros.training.teacher_runner import TeacherRunner

REPO = Path(__file__).resolve().parents[1]
# Pendulum-v1: obs [cos, sin, theta_dot] (3), action torque in [-2, 2] (1 joint).
PENDULUM_SPEC = {
    "observation": {"history_length": 1, "terms": [
        {"name": "state", "topic": "privileged/pendulum", "field": "data", "size": 3}]},
    "action": {"joints": ["pivot"], "scale": 1.0, "offset": 0.0, "lower": [-2.0],
               "upper": [2.0]},
    "rate_hz": 20.0,
}


@pytest.fixture(scope="module")
def sb3_model(tmp_path_factory):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    out = tmp_path_factory.mktemp("sb3")
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=3.0)
    venv.seed(0)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": [32, 32], "vf": [16]},
                               "activation_fn": torch.nn.ELU})
    model.learn(192)
    model.save(out / "ppo.zip")
    rms = venv.obs_rms   # what scripts/train_teacher.py writes, no pickle
    (out / "obs_norm.json").write_text(json.dumps({
        "mean": rms.mean.tolist(), "var": rms.var.tolist(), "epsilon": float(venv.epsilon),
        "clip_obs": float(venv.clip_obs)}))
    (out / "spec.yaml").write_text(yaml.safe_dump(PENDULUM_SPEC))
    yield model, venv, out
    venv.close()


def test_sb3_with_json_normalizer_reproduces_deterministic_actions(sb3_model, tmp_path):
    model, venv, src = sb3_model
    out = tmp_path / "teacher"
    assert cli_main(["import-teacher", "--sb3", str(src / "ppo.zip"), "--obs-norm-json",
                     str(src / "obs_norm.json"), "--spec", str(src / "spec.yaml"),
                     "--out", str(out)]) == 0
    meta = read_teacher_info(out)
    assert meta["info"]["policy_spec"]["action"]["joints"] == ["pivot"]
    runner = TeacherRunner(out)
    rng = np.random.default_rng(1)
    theta = rng.uniform(-np.pi, np.pi, 200)
    obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, 200)], 1).astype(np.float32)
    obs[:5, 2] = 60.0   # far outside the statistics: exercises the clip
    with torch.no_grad():
        expected = model.policy._predict(torch.as_tensor(venv.normalize_obs(obs)),
                                         deterministic=True).numpy()
    ours = np.stack([runner(o) for o in obs])
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    # and what the node commands equals SB3's predict(): clip to the action space = spec limits
    predicted, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
    commands = np.stack([runner.spec.action.postprocess(a) for a in ours])
    np.testing.assert_allclose(commands, predicted, atol=1e-5, rtol=0)


def test_import_refuses_a_spec_of_the_wrong_size(sb3_model, tmp_path, capsys):
    _, _, src = sb3_model
    wrong = dict(PENDULUM_SPEC, observation={"history_length": 2,
                                             "terms": PENDULUM_SPEC["observation"]["terms"]})
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(wrong))
    with pytest.raises(SystemExit, match="observation has 6 numbers, the teacher network "
                                         "takes 3"):
        cli_main(["import-teacher", "--sb3", str(src / "ppo.zip"), "--spec",
                  str(tmp_path / "wrong.yaml"), "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()
    with pytest.raises(SystemExit, match="not found|No such file|teacher 'missing.zip'"):
        cli_main(["import-teacher", "--sb3", "missing.zip", "--spec",
                  str(src / "spec.yaml"), "--out", str(tmp_path / "t")])


def test_shipped_teacher_matches_its_sb3_checkpoint():
    """When both the training output and the converted teacher are present (a developer
    machine after scripts/train_teacher.py + import-teacher), they must act the same."""
    teacher_dir, zip_path = REPO / "models/ant_teacher", REPO / "models/ant_teacher_sb3.zip"
    norm_path = REPO / "models/ant_teacher_obs_norm.json"
    if not (teacher_dir / "teacher.json").exists() or not zip_path.exists():
        pytest.skip("needs models/ant_teacher and models/ant_teacher_sb3.zip")
    meta = read_teacher_info(teacher_dir)
    if meta["info"].get("imported_from") != zip_path.name:
        pytest.skip("models/ant_teacher was not imported from the SB3 checkpoint")
    from stable_baselines3 import PPO
    from policy_distill_ros.training.pipeline import load_teacher_any
    from policy_distill_ros.training.teacher_io import teacher_hash
    teacher, normalizer, _ = load_teacher_any(zip_path, norm_path)
    if teacher_hash(teacher, normalizer) != meta["sha256"]:
        pytest.skip("the SB3 checkpoint moved on since models/ant_teacher was imported")
    model = PPO.load(zip_path, device="cpu")
    stats = json.loads(norm_path.read_text())
    runner = TeacherRunner(teacher_dir)
    rng = np.random.default_rng(0)
    obs = (np.asarray(stats["mean"]) + rng.normal(size=(64, len(stats["mean"])))
           * np.sqrt(stats["var"])).astype(np.float32)
    normed = np.clip((obs - stats["mean"]) / np.sqrt(np.asarray(stats["var"]) + stats["epsilon"]),
                     -stats["clip_obs"], stats["clip_obs"]).astype(np.float32)
    with torch.no_grad():
        expected = model.policy._predict(torch.as_tensor(normed), deterministic=True).numpy()
    np.testing.assert_allclose(np.stack([runner(o) for o in obs]), expected, atol=1e-5, rtol=0)


def test_rsl_rl_checkpoint_through_the_command(tmp_path):
    from test_importers import rsl_rl_reference, rsl_rl_runner
    runner = rsl_rl_runner("log")
    runner.save(str(tmp_path / "model_2.pt"))
    spec = {"observation": {"history_length": 1, "terms": [
        {"name": "state", "topic": "privileged/state", "field": "data", "size": 5}]},
        "action": {"joints": ["a", "b"], "lower": [-5.0, -5.0], "upper": [5.0, 5.0]},
        "rate_hz": 50.0}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert cli_main(["import-teacher", "--rsl-rl", str(tmp_path / "model_2.pt"), "--spec",
                     str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "t")]) == 0
    teacher = TeacherRunner(tmp_path / "t")
    obs = np.random.default_rng(2).normal(size=(32, 5)) * 4 + 2
    expected, _ = rsl_rl_reference(runner, obs)
    np.testing.assert_allclose(np.stack([teacher(o) for o in obs]), expected, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit, match="already holds a teacher"):
        cli_main(["import-teacher", "--rsl-rl", str(tmp_path / "model_2.pt"), "--spec",
                  str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "t")])
