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
    with pytest.raises(SystemExit, match="missing.zip: no such file"):
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


def test_rsl_rl_checkpoint_through_the_command(tmp_path, capsys):
    """An Isaac Lab style run directory: the activation comes from params/agent.yaml."""
    from test_importers import rsl_rl_reference, rsl_rl_runner, save_run
    runner = rsl_rl_runner("log", activation="tanh")
    checkpoint = save_run(runner, tmp_path / "run")
    spec = {"observation": {"history_length": 1, "terms": [
        {"name": "state", "topic": "privileged/state", "field": "data", "size": 5}]},
        "action": {"joints": ["a", "b"], "lower": [-5.0, -5.0], "upper": [5.0, 5.0]},
        "rate_hz": 50.0}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert cli_main(["import-teacher", "--rsl-rl", str(checkpoint), "--spec",
                     str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr().out
    assert "(tanh)" in printed and "self-check: max action difference" in printed
    teacher = TeacherRunner(tmp_path / "t")
    assert teacher.info.info["activation_from"] == "params/agent.yaml"
    obs = np.random.default_rng(2).normal(size=(32, 5)) * 4 + 2
    expected, _ = rsl_rl_reference(runner, obs)
    np.testing.assert_allclose(np.stack([teacher(o) for o in obs]), expected, atol=1e-5, rtol=0)
    with pytest.raises(SystemExit, match="already holds a teacher"):
        cli_main(["import-teacher", "--rsl-rl", str(checkpoint), "--spec",
                  str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "t")])


@pytest.fixture(scope="module")
def sac_model(tmp_path_factory):
    """SAC on Pendulum with its torque rescaled to the asymmetric Box [-1, 3]."""
    import gymnasium as gym
    from gymnasium.wrappers import RescaleAction
    from stable_baselines3 import SAC
    out = tmp_path_factory.mktemp("sac")
    env = RescaleAction(gym.make("Pendulum-v1"), min_action=np.float32([-1.0]),
                        max_action=np.float32([3.0]))
    model = SAC("MlpPolicy", env, learning_starts=16, batch_size=16, seed=0, device="cpu",
                policy_kwargs={"net_arch": [24, 24]})
    model.learn(40)
    model.save(out / "sac.zip")
    return model, out


def _spec_file(path: Path, **action) -> Path:
    spec = dict(PENDULUM_SPEC, action={"joints": ["pivot"], **action})
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sac_commands_equal_sb3_predict_on_asymmetric_bounds(sac_model, tmp_path):
    model, src = sac_model
    spec = _spec_file(tmp_path / "spec.yaml", scale=2.0, offset=1.0, lower=[-1.0], upper=[3.0])
    assert cli_main(["import-teacher", "--sb3", str(src / "sac.zip"), "--spec", str(spec),
                     "--out", str(tmp_path / "t")]) == 0
    runner = TeacherRunner(tmp_path / "t")
    rng = np.random.default_rng(3)
    theta = rng.uniform(-np.pi, np.pi, 200)
    obs = np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, 200)], 1).astype(np.float32)
    raw = np.stack([runner(o) for o in obs])
    commands = np.stack([runner.spec.action.postprocess(a) for a in raw])
    predicted, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(commands, predicted, atol=1e-5, rtol=0)
    assert np.abs(commands - raw).max() > 0.5   # the rescale matters on these observations


@pytest.mark.parametrize("action, needs", [
    ({"scale": 1.0, "lower": [-1.0], "upper": [3.0]}, r"needs scale \[2\], offset \[1\]"),
    ({"scale": 2.0, "offset": 1.0, "lower": [-1.0], "upper": [2.0]},
     r"needs .*limits no tighter than \[\[-1\], \[3\]\]"),
])
def test_sac_spec_that_differs_from_predict_is_refused(sac_model, tmp_path, action, needs):
    _, src = sac_model
    spec = _spec_file(tmp_path / "spec.yaml", **action)
    refusal = (rf"spec.yaml: the action spec .* differ from SB3's predict\(\) by "
               rf"up to [0-9.]+; with action_space \[\[-1\], \[3\]\] it {needs}")
    with pytest.raises(SystemExit, match=refusal):
        cli_main(["import-teacher", "--sb3", str(src / "sac.zip"), "--spec", str(spec),
                  "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()


def test_ppo_spec_must_clip_to_the_action_space(sb3_model, tmp_path):
    _, _, src = sb3_model
    spec = _spec_file(tmp_path / "spec.yaml", scale=1.0, lower=[-1.0], upper=[1.0])
    with pytest.raises(SystemExit, match=r"needs scale 1, offset 0, lower \[-2\], upper \[2\]"):
        cli_main(["import-teacher", "--sb3", str(src / "ppo.zip"), "--spec", str(spec),
                  "--out", str(tmp_path / "t")])


def _one_line_refusal(argv, *fragments):
    with pytest.raises(SystemExit) as refused:
        cli_main(argv)
    message = str(refused.value.code)
    assert message.startswith("policy-distill import-teacher: ") and "\n" not in message, message
    assert "Traceback" not in message and "weights_only" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_flags_of_the_other_library_are_refused(sb3_model, tmp_path):
    """--sb3 with a .pt used to go to the rsl_rl importer by suffix, dropping --vecnormalize and
    --activation silently."""
    _, _, src = sb3_model
    torch.save({"actor_state_dict": {}}, tmp_path / "model.pt")
    (tmp_path / "vn.pkl").write_bytes(b"")
    spec = str(src / "spec.yaml")
    _one_line_refusal(["import-teacher", "--sb3", str(tmp_path / "model.pt"), "--vecnormalize",
                       str(tmp_path / "vn.pkl"), "--activation", "tanh", "--spec", spec, "--out",
                       str(tmp_path / "t")], "--activation / --agent-config are for --rsl-rl")
    _one_line_refusal(["import-teacher", "--sb3", str(tmp_path / "model.pt"), "--spec", spec,
                       "--out", str(tmp_path / "t")], str(tmp_path / "model.pt"),
                      "not an SB3 model zip")
    _one_line_refusal(["import-teacher", "--rsl-rl", str(tmp_path / "model.pt"), "--obs-norm-json",
                       str(src / "obs_norm.json"), "--spec", spec, "--out", str(tmp_path / "t")],
                      "--vecnormalize / --obs-norm-json are for --sb3")


def test_bad_inputs_through_the_command_are_one_line(sb3_model, tmp_path):
    _, _, src = sb3_model
    spec = str(src / "spec.yaml")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    _one_line_refusal(["import-teacher", "--sb3", str(src / "ppo.zip"), "--spec",
                       str(tmp_path / "binary.yaml"), "--out", str(tmp_path / "t")],
                      "binary.yaml: not a text file")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    _one_line_refusal(["import-teacher", "--rsl-rl", str(tmp_path / "random.pt"), "--activation",
                       "elu", "--spec", spec, "--out", str(tmp_path / "t")],
                      "random.pt: not a torch checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    _one_line_refusal(["import-teacher", "--rsl-rl", str(tmp_path / "empty.pt"), "--activation",
                       "elu", "--spec", spec, "--out", str(tmp_path / "t")], "empty.pt: empty file")
    (tmp_path / "vn.pkl").write_bytes(np.random.default_rng(1).bytes(512))
    _one_line_refusal(["import-teacher", "--sb3", str(src / "ppo.zip"), "--vecnormalize",
                       str(tmp_path / "vn.pkl"), "--spec", spec, "--out", str(tmp_path / "t")],
                      "vn.pkl: refused or unreadable VecNormalize file")
    stats = {"mean": [0.0, float("nan"), 0.0], "var": [1, 1, 1]}
    (tmp_path / "norm.json").write_text(json.dumps(stats))
    _one_line_refusal(["import-teacher", "--sb3", str(src / "ppo.zip"), "--obs-norm-json",
                       str(tmp_path / "norm.json"), "--spec", spec, "--out", str(tmp_path / "t")],
                      "norm.json: mean holds 1 NaN/Inf")
    assert not (tmp_path / "t").exists()
    (tmp_path / "broken.yaml").write_text("observation: [1, 2\n")
    _one_line_refusal(["import-teacher", "--sb3", str(src / "ppo.zip"), "--spec",
                       str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "t")],
                      "broken.yaml", "not valid YAML", "(line 2")
    _one_line_refusal(["import-teacher", "--sb3", str(src / "ppo.zip"), "--obs-norm-json", spec,
                       "--spec", spec, "--out", str(tmp_path / "t")], "spec.yaml: not JSON")
    _one_line_refusal(["import-teacher", "--rsl-rl", str(src / "ppo.zip"), "--activation", "elu",
                       "--spec", spec, "--out", str(tmp_path / "t")],
                      "ppo.zip: a zip archive but not a torch checkpoint (an SB3 model: use --sb3)")
    assert not (tmp_path / "t").exists()
