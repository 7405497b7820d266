"""Teacher checkpoints: our safetensors format; importers that reproduce rsl_rl / SB3 actions."""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile

import numpy as np
import pytest
import torch

from policy_distill_ros.training.importers import (
    TeacherImportError,
    import_rsl_rl,
    import_sb3,
    load_vecnormalize,
)
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.teacher_io import (
    TeacherFormatError,
    load_teacher,
    save_teacher,
    teacher_hash,
)

ATOL = 1e-5


def act(teacher, normalizer, obs: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        return teacher.act(normalizer(x) if normalizer is not None else x).numpy()


# ------------------------------------------------------------------------------ own format

def make_teacher(seed: int = 0) -> tuple[TeacherPolicy, EmpiricalNormalizer]:
    torch.manual_seed(seed)
    teacher = TeacherPolicy(TeacherConfig(obs_size=7, action_size=2, hidden_sizes=(32, 16),
                                          activation="elu"))
    normalizer = EmpiricalNormalizer(NormalizerConfig(size=7))
    normalizer.update(torch.randn(100, 7) * 3 + 1)
    return teacher, normalizer.freeze()


def test_teacher_round_trip_reproduces_outputs_and_hash(tmp_path):
    teacher, normalizer = make_teacher()
    sha = save_teacher(teacher, normalizer, tmp_path / "t",
                       info={"env": "toy", "observation_spec": {"a": 1}})
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["model.safetensors",
                                                                 "teacher.json"]
    loaded, loaded_norm, info = load_teacher(tmp_path / "t")
    obs = np.random.default_rng(0).normal(size=(20, 7)) * 3
    np.testing.assert_array_equal(act(loaded, loaded_norm, obs), act(teacher, normalizer, obs))
    assert info.sha256 == sha == teacher_hash(loaded, loaded_norm)
    assert info.info["env"] == "toy" and info.architecture == teacher.config
    assert loaded_norm.frozen and not any(p.requires_grad for p in loaded.parameters())
    # same content, different free-form info -> same hash; different weights -> different hash
    assert save_teacher(teacher, normalizer, tmp_path / "t2", info={"env": "renamed"}) == sha
    other, _ = make_teacher(seed=1)
    assert teacher_hash(other, normalizer) != sha
    assert teacher_hash(teacher, None) != sha


def test_no_pickle_in_teacher_files(tmp_path):
    teacher, normalizer = make_teacher()
    save_teacher(teacher, normalizer, tmp_path)
    meta = json.loads((tmp_path / "teacher.json").read_text())
    assert (meta["format"] == "policy_distill_ros.teacher"
            and meta["architecture"]["hidden_sizes"] == [32, 16])
    header_len = int.from_bytes((tmp_path / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "model.safetensors").read_bytes()[8:8 + header_len])
    assert "policy.trunk.layers.0.weight" in header and "normalizer.mean" in header


def test_tampered_or_incomplete_teacher_is_refused(tmp_path):
    teacher, normalizer = make_teacher()
    save_teacher(teacher, normalizer, tmp_path / "t")
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(tmp_path / "t" / "model.safetensors"))
    tensors["policy.mean_head.bias"] = tensors["policy.mean_head.bias"] + 0.5
    save_file(tensors, str(tmp_path / "t" / "model.safetensors"))
    with pytest.raises(TeacherFormatError, match="hash mismatch"):
        load_teacher(tmp_path / "t")
    (tmp_path / "t" / "model.safetensors").unlink()
    with pytest.raises(TeacherFormatError, match="model.safetensors missing"):
        load_teacher(tmp_path / "t")
    with pytest.raises(TeacherFormatError, match="not a teacher directory"):
        load_teacher(tmp_path / "nowhere")


def test_teacher_json_with_wrong_architecture_names_the_key(tmp_path):
    teacher, normalizer = make_teacher()
    save_teacher(teacher, normalizer, tmp_path)
    meta = json.loads((tmp_path / "teacher.json").read_text())
    meta["architecture"]["hidden_sizes"] = [32, 17]
    (tmp_path / "teacher.json").write_text(json.dumps(meta))
    with pytest.raises(TeacherFormatError,
                       match=r"policy.trunk.layers.1.weight has shape \[16, 32\]"):
        load_teacher(tmp_path, verify_hash=False)


# ------------------------------------------------------------------------------ rsl_rl

def rsl_rl_runner(std_type: str = "scalar", obs_normalization: bool = True, activation: str = "elu",
                  **actor_overrides):
    """A real rsl_rl OnPolicyRunner on a tiny vectorized env, trained 2 iterations.
    `actor_overrides` change the actor config (e.g. class_name="RNNModel", rnn_type="gru")."""
    from rsl_rl.env import VecEnv
    from rsl_rl.runners import OnPolicyRunner
    from tensordict import TensorDict

    class DriftEnv(VecEnv):
        def __init__(self) -> None:
            self.num_envs, self.num_actions, self.max_episode_length = 4, 2, 20
            self.episode_length_buf = torch.zeros(4, dtype=torch.long)
            self.device, self.cfg = "cpu", {}
            self.gen = torch.Generator().manual_seed(0)
            self.obs = torch.randn(4, 5, generator=self.gen) * 3 + 1

        def get_observations(self):
            return TensorDict({"policy": self.obs.clone()}, batch_size=[self.num_envs])

        def step(self, actions):
            self.obs = 0.9 * self.obs + torch.randn(self.obs.shape, generator=self.gen) * 2 + 0.5
            self.episode_length_buf += 1
            dones = self.episode_length_buf >= self.max_episode_length
            self.episode_length_buf[dones] = 0
            return (self.get_observations(), -actions.square().sum(-1), dones.float(),
                    {"time_outs": dones.float()})

    cfg = {
        "algorithm": {"class_name": "PPO"},
        "actor": {"class_name": "MLPModel", "hidden_dims": [16, 8], "activation": activation,
                  "obs_normalization": obs_normalization,
                  "distribution_cfg": {"class_name": "GaussianDistribution", "init_std": 0.7,
                                       "std_type": std_type},
                  **actor_overrides},
        "critic": {"class_name": "MLPModel", "hidden_dims": [16], "activation": "elu",
                   "obs_normalization": obs_normalization},
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "num_steps_per_env": 8, "save_interval": 100,
    }
    torch.manual_seed(0)
    runner = OnPolicyRunner(DriftEnv(), cfg, log_dir=None, device="cpu")
    runner.learn(2)
    runner.test_cfg = cfg
    return runner


def save_run(runner, run_dir, iteration: int = 2, agent_yaml: str | None = "from_runner"):
    """Save like an Isaac Lab run: ``<run>/model_<it>.pt`` and the agent config in
    ``<run>/params/agent.yaml`` (written with yaml.dump, tuples tagged !!python/tuple as Isaac Lab's
    dumper does). Returns the checkpoint path."""
    import yaml
    run_dir.mkdir(parents=True, exist_ok=True)
    runner.save(str(run_dir / f"model_{iteration}.pt"))
    if agent_yaml is not None:
        (run_dir / "params").mkdir(exist_ok=True)
        if agent_yaml == "from_runner":
            cfg = {k: v for k, v in runner.test_cfg.items()}
            cfg["actor"] = dict(cfg["actor"], hidden_dims=tuple(cfg["actor"]["hidden_dims"]))
            agent_yaml = yaml.dump(cfg)
        (run_dir / "params" / "agent.yaml").write_text(agent_yaml)
    return run_dir / f"model_{iteration}.pt"


def save_legacy(runner, path, normalizer_location: str) -> None:
    """The ActorCritic / ActorCriticRecurrent checkpoint layout of rsl_rl 2.3.3 (normalizer in a
    top-level ``obs_norm_state_dict``) or 3.0.1 (``actor_obs_normalizer.*`` in the model), which
    rsl-rl-lib 5.5 no longer writes: a real runner's tensors under the legacy key names."""
    buffer = io.BytesIO()
    torch.save(runner.alg.save(), buffer)
    buffer.seek(0)
    actor = torch.load(buffer, weights_only=True)["actor_state_dict"]
    model = {k.replace("mlp.", "actor."): v for k, v in actor.items() if k.startswith("mlp.")}
    for memory in ("memory_a.rnn.", "memory_c.rnn."):
        model.update({k.replace("rnn.rnn.", memory): v for k, v in actor.items()
                      if k.startswith("rnn.")})
    model["std"] = actor["distribution.std_param"]
    model["critic.0.weight"] = torch.zeros(16, 5)
    norm = {k[len("obs_normalizer."):]: v for k, v in actor.items()
            if k.startswith("obs_normalizer.")}
    legacy = {"model_state_dict": model, "optimizer_state_dict": {}, "iter": 2, "infos": None}
    if normalizer_location == "in_model":
        model.update({f"actor_obs_normalizer.{k}": v for k, v in norm.items()})
    else:
        legacy["obs_norm_state_dict"] = norm
    torch.save(legacy, path)


def rsl_rl_reference(runner, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from tensordict import TensorDict
    policy = runner.get_inference_policy()
    x = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        actions = policy(TensorDict({"policy": x}, batch_size=[len(x)]))
        policy.distribution.update(policy.mlp(policy.obs_normalizer(x)))
        std = policy.distribution.std
    return actions.numpy(), std.numpy()


@pytest.mark.parametrize("std_type", ["scalar", "log"])
def test_rsl_rl_checkpoint_import_reproduces_actions(tmp_path, std_type):
    runner = rsl_rl_runner(std_type)
    teacher, normalizer, info = import_rsl_rl(save_run(runner, tmp_path))
    obs = np.random.default_rng(1).normal(size=(64, 5)) * 4 + 2
    ref_actions, ref_std = rsl_rl_reference(runner, obs)
    assert float(normalizer.count) > 0 and not torch.allclose(normalizer.mean, torch.zeros(5))
    np.testing.assert_allclose(act(teacher, normalizer, obs), ref_actions, atol=ATOL, rtol=0)
    with torch.no_grad():
        std = teacher(normalizer(torch.as_tensor(obs, dtype=torch.float32))).log_std.exp().numpy()
    np.testing.assert_allclose(std, ref_std, rtol=1e-5)
    assert info.info["source"] == "rsl_rl" and info.architecture.hidden_sizes == (16, 8)
    assert info.info["activation_from"] == "params/agent.yaml"
    assert (info.info["self_check"]["max_action_diff"] <= 1e-5
            and info.info["self_check"]["observations"] >= 200)
    # the imported teacher survives our own format
    save_teacher(teacher, normalizer, tmp_path / "own", info.info)
    again, again_norm, again_info = load_teacher(tmp_path / "own")
    np.testing.assert_array_equal(act(again, again_norm, obs), act(teacher, normalizer, obs))
    assert again_info.sha256 == info.sha256


def test_rsl_rl_without_normalizer(tmp_path):
    runner = rsl_rl_runner("scalar", obs_normalization=False)
    runner.save(str(tmp_path / "model.pt"))
    teacher, normalizer, _ = import_rsl_rl(tmp_path / "model.pt", activation="elu")
    assert normalizer is None
    obs = np.random.default_rng(2).normal(size=(16, 5))
    np.testing.assert_allclose(act(teacher, None, obs), rsl_rl_reference(runner, obs)[0],
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("normalizer_location", ["in_model", "top_level"])
def test_legacy_actor_critic_layout_is_imported(tmp_path, normalizer_location):
    """The older ActorCritic layout Isaac Lab checkpoints use. rsl-rl-lib 5.5 no longer writes it,
    so it is assembled from a real runner's tensors with the legacy key names."""
    runner = rsl_rl_runner("scalar")
    save_legacy(runner, tmp_path / "legacy.pt", normalizer_location)
    teacher, normalizer, info = import_rsl_rl(tmp_path / "legacy.pt", activation="elu")
    assert info.info["layout"] == "ActorCritic model_state_dict"
    obs = np.random.default_rng(3).normal(size=(32, 5)) * 4
    np.testing.assert_allclose(act(teacher, normalizer, obs), rsl_rl_reference(runner, obs)[0],
                               atol=ATOL, rtol=0)


class Payload:
    """An arbitrary object in a checkpoint: importing must refuse rather than unpickle it."""

    def __init__(self) -> None:
        self.note = "not a tensor"


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    torch.save({"actor_state_dict": {}, "infos": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(TeacherImportError, match="Payload.*refusing to unpickle") as refused:
        import_rsl_rl(tmp_path / "evil.pt")
    assert ("weights_only" not in str(refused.value)
            and str(tmp_path / "evil.pt") in str(refused.value))
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(TeacherImportError, match="actor_state_dict"):
        import_rsl_rl(tmp_path / "other.pt")
    with pytest.raises(TeacherImportError,
                       match="unknown rsl_rl activation .sin.; known: elu, selu"):
        import_rsl_rl(tmp_path / "other.pt", activation="sin")


# ------------------------------------------------------------------------------ Stable-Baselines3

def pendulum_obs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    theta = rng.uniform(-np.pi, np.pi, n)
    return np.stack([np.cos(theta), np.sin(theta), rng.uniform(-8, 8, n)],
                    axis=1).astype(np.float32)


def sb3_policy_actions(model, obs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.policy._predict(torch.as_tensor(obs), deterministic=True).numpy()


@pytest.mark.parametrize("policy_kwargs, activation", [
    (None, "tanh"),
    ({"net_arch": {"pi": [32, 16], "vf": [8]}, "activation_fn": torch.nn.ReLU}, "relu"),
])
def test_sb3_ppo_import_reproduces_actions(tmp_path, policy_kwargs, activation):
    from stable_baselines3 import PPO
    model = PPO("MlpPolicy", "Pendulum-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0,
                device="cpu", policy_kwargs=policy_kwargs)
    model.learn(64)
    model.save(tmp_path / "ppo.zip")
    teacher, normalizer, info = import_sb3(tmp_path / "ppo.zip")
    assert normalizer is None and info.architecture.activation == activation
    obs = pendulum_obs(64, seed=4)
    ours = act(teacher, None, obs)
    np.testing.assert_allclose(ours, sb3_policy_actions(model, obs), atol=ATOL, rtol=0)
    low, high = np.array(info.info["action_low"]), np.array(info.info["action_high"])
    assert info.info["sb3_action_postprocess"] == "clip"
    predicted, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(np.clip(ours, low, high), predicted, atol=ATOL, rtol=0)
    with torch.no_grad():
        std = teacher(torch.as_tensor(obs)).log_std.exp()
    np.testing.assert_allclose(std.numpy()[0], model.policy.log_std.exp().detach().numpy(),
                               rtol=1e-6)


def test_sb3_sac_import_reproduces_squashed_actions(tmp_path):
    from stable_baselines3 import SAC
    model = SAC("MlpPolicy", "Pendulum-v1", learning_starts=16, batch_size=16, seed=0, device="cpu",
                policy_kwargs={"net_arch": [24, 24]})
    model.learn(40)
    model.save(tmp_path / "sac.zip")
    teacher, _, info = import_sb3(tmp_path / "sac.zip")
    assert teacher.squash_output and info.info["algorithm"] == "sac"
    obs = pendulum_obs(64, seed=5)
    ours = act(teacher, None, obs)
    np.testing.assert_allclose(ours, sb3_policy_actions(model, obs), atol=ATOL, rtol=0)
    assert np.all(np.abs(ours) <= 1.0)
    low, high = np.array(info.info["action_low"]), np.array(info.info["action_high"])
    predicted, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(low + 0.5 * (ours + 1.0) * (high - low), predicted,
                               atol=2 * ATOL, rtol=0)
    with torch.no_grad():
        mean, log_std, _ = model.actor.get_action_dist_params(torch.as_tensor(obs))
        out = teacher(torch.as_tensor(obs))
    np.testing.assert_allclose(out.mean.numpy(), mean.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(out.log_std.numpy(), log_std.numpy(), atol=ATOL, rtol=0)


def test_sb3_vecnormalize_statistics_are_imported(tmp_path):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), clip_obs=2.5)
    venv.seed(0)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    model.save(tmp_path / "ppo.zip")
    venv.save(str(tmp_path / "vecnormalize.pkl"))
    teacher, normalizer, info = import_sb3(tmp_path / "ppo.zip",
                                           vecnormalize_path=tmp_path / "vecnormalize.pkl")
    assert normalizer.config.eps_placement == "var" and normalizer.config.clip == 2.5
    assert float(normalizer.count) > 100
    obs = pendulum_obs(64, seed=6)
    obs[:4, 2] = 50.0  # far out: exercises the clip
    expected = sb3_policy_actions(model, venv.normalize_obs(obs).astype(np.float32))
    np.testing.assert_allclose(act(teacher, normalizer, obs), expected, atol=ATOL, rtol=0)
    venv.close()


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_vecnormalize_loader_refuses_foreign_globals_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"obs_rms": _Exploit(str(marker))}))
    with pytest.raises(TeacherImportError,
                       match="builtins.open is not allowed|io.open is not allowed"):
        load_vecnormalize(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_sb3_bad_inputs_are_named(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(TeacherImportError, match="not a zip"):
        import_sb3(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("data", "{}")
    with pytest.raises(TeacherImportError, match="policy.pth"):
        import_sb3(tmp_path / "empty.zip")


# ------------------------------------------------------------------ rsl_rl: refused, never guessed

def recurrent_runner(rnn_type: str, rnn_hidden_dim: int):
    return rsl_rl_runner("scalar", class_name="RNNModel", rnn_type=rnn_type,
                         rnn_hidden_dim=rnn_hidden_dim, rnn_num_layers=1)


@pytest.mark.parametrize("rnn_type, width, kind", [("lstm", 5, "LSTM"), ("gru", 12, "GRU")])
def test_recurrent_rsl_rl_actor_is_refused_naming_the_recurrence(tmp_path, rnn_type, width, kind):
    """Real rsl-rl-lib RNNModel actors. Width 5 = the observation size: the MLP part alone would
    have fit the spec and imported silently wrong before."""
    runner = recurrent_runner(rnn_type, width)
    checkpoint = save_run(runner, tmp_path / "run")
    with pytest.raises(TeacherImportError,
                       match=rf"recurrent actor \({kind}, {width} units x 1 layer") as refused:
        import_rsl_rl(checkpoint)
    assert str(checkpoint) in str(refused.value)
    (tmp_path / "run" / "params" / "agent.yaml").unlink()   # the weights alone say it too
    with pytest.raises(TeacherImportError, match=rf"recurrent actor \({kind}"):
        import_rsl_rl(checkpoint, activation="elu")


@pytest.mark.parametrize("normalizer_location", ["top_level", "in_model"])   # rsl_rl 2.3.3 / 3.0.1
def test_recurrent_legacy_actor_critic_is_refused(tmp_path, normalizer_location):
    """ActorCriticRecurrent layout (memory_a.rnn.*, actor.* after it), assembled with the legacy key
    names from a real rsl-rl-lib 5.5 LSTM actor."""
    save_legacy(recurrent_runner("lstm", 5), tmp_path / "legacy.pt", normalizer_location)
    with pytest.raises(TeacherImportError, match=r"recurrent actor \(LSTM, 5 units.*memory_a"):
        import_rsl_rl(tmp_path / "legacy.pt", activation="elu")


def test_activation_comes_from_agent_yaml_or_is_asked_for(tmp_path):
    runner = rsl_rl_runner("scalar", activation="tanh")
    checkpoint = save_run(runner, tmp_path / "run")
    obs = np.random.default_rng(7).normal(size=(64, 5)) * 3
    teacher, normalizer, info = import_rsl_rl(checkpoint)
    assert info.architecture.activation == "tanh"
    np.testing.assert_allclose(act(teacher, normalizer, obs), rsl_rl_reference(runner, obs)[0],
                               atol=ATOL, rtol=0)
    with pytest.raises(TeacherImportError, match="--activation elu contradicts .*agent.yaml"):
        import_rsl_rl(checkpoint, activation="elu")
    # no agent config beside the checkpoint: refused, never assumed elu
    bare = tmp_path / "bare" / "model_2.pt"
    bare.parent.mkdir()
    bare.write_bytes(checkpoint.read_bytes())
    with pytest.raises(TeacherImportError,
                       match=r"do not record the actor's activation.*--activation"):
        import_rsl_rl(bare)
    # an older Isaac Lab 'policy' section (ActorCritic) is read too; widths must match the weights
    legacy_yaml = tmp_path / "legacy_agent.yaml"
    legacy_yaml.write_text("seed: 42\npolicy:\n  class_name: ActorCritic\n  activation: tanh\n"
                           "  actor_hidden_dims: !!python/tuple\n  - 16\n  - 8\n"
                           "  init_noise_std: 1.0\n")
    assert import_rsl_rl(bare, agent_config=legacy_yaml)[2].architecture.activation == "tanh"
    legacy_yaml.write_text("policy:\n  class_name: ActorCritic\n  activation: tanh\n"
                           "  actor_hidden_dims: [32, 8]\n")
    with pytest.raises(TeacherImportError,
                       match=r"hidden dims \[32, 8\].*\[16, 8\]: not this run's config"):
        import_rsl_rl(bare, agent_config=legacy_yaml)
    legacy_yaml.write_text("policy:\n  class_name: ActorCriticRecurrent\n  activation: elu\n"
                           "  rnn_type: lstm\n")
    with pytest.raises(TeacherImportError, match="describes a recurrent actor"):
        import_rsl_rl(bare, agent_config=legacy_yaml)
    # Python tags are read as plain data, never constructed or called
    marker = tmp_path / "ran"
    legacy_yaml.write_text(f"policy:\n"
                           f"  class_name: !!python/object/apply:os.system ['touch {marker}']\n"
                           f"  activation: tanh\n  actor_hidden_dims: [16, 8]\n")
    assert (import_rsl_rl(bare, agent_config=legacy_yaml)[2].info["activation_from"]
            == "legacy_agent.yaml")
    assert not marker.exists()
    legacy_yaml.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(TeacherImportError, match="legacy_agent.yaml: not a text file"):
        import_rsl_rl(bare, agent_config=legacy_yaml)


def test_self_check_refuses_a_conversion_that_drifts_from_rsl_rl(tmp_path, monkeypatch):
    """The self-check is no formality: make our normalizer convention wrong and the import stops."""
    import policy_distill_ros.training.importers as importers
    checkpoint = save_run(rsl_rl_runner("scalar"), tmp_path / "run")
    monkeypatch.setattr(importers, "RSL_RL_NORMALIZER_EPS", 1e-8)
    with pytest.raises(TeacherImportError,
                       match=r"differs from rsl_rl 5\.\d+\.\d+ MLPModel on 300 probe "
                             r"observations \(max action difference [0-9.e-]+"):
        import_rsl_rl(checkpoint)


@pytest.mark.parametrize("tensor", ["mlp.0.weight", "obs_normalizer._mean",
                                    "distribution.std_param", "critic_state_dict.mlp.0.bias"])
def test_non_finite_rsl_rl_tensor_is_refused_by_name(tmp_path, tensor):
    checkpoint = save_run(rsl_rl_runner("scalar"), tmp_path / "run")
    ckpt = torch.load(checkpoint, weights_only=True)
    part, name = (tensor.split(".", 1) if tensor.startswith("critic_state_dict.")
                  else ("actor_state_dict", tensor))
    ckpt[part][name].view(-1)[0] = float("nan")
    torch.save(ckpt, checkpoint)
    with pytest.raises(TeacherImportError, match=rf"tensor {re.escape(tensor)} holds 1 NaN/Inf"):
        import_rsl_rl(checkpoint)


def test_cnn_or_unknown_actor_tensors_are_refused(tmp_path):
    checkpoint = save_run(rsl_rl_runner("scalar"), tmp_path / "run")
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["actor_state_dict"]["cnn.0.weight"] = torch.zeros(4, 1, 3)
    torch.save(ckpt, checkpoint)
    with pytest.raises(TeacherImportError,
                       match=r"tensors an MLP Gaussian actor does not have \(cnn.0.weight\)"):
        import_rsl_rl(checkpoint)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (bytes(range(256)) * 4, "not a torch checkpoint"),
    (b"PK\x03\x04" + bytes(100), "truncated or corrupt"),
])
def test_unreadable_rsl_rl_checkpoint_is_one_clear_line(tmp_path, content, reason):
    (tmp_path / "model.pt").write_bytes(content)
    with pytest.raises(TeacherImportError) as refused:
        import_rsl_rl(tmp_path / "model.pt", activation="elu")
    message = str(refused.value)
    assert message.startswith(str(tmp_path / "model.pt")) and reason in message
    assert "weights_only" not in message and "\n" not in message


# ------------------------------------------------------------------ SB3: refused, one line each

@pytest.fixture(scope="module")
def ppo_with_vecnormalize(tmp_path_factory):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    out = tmp_path_factory.mktemp("ppo_vn")
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    venv.seed(0)
    model = PPO("MlpPolicy", venv, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    model.save(out / "ppo.zip")
    venv.save(str(out / "vecnormalize.pkl"))
    yield out, venv
    venv.close()


def rewrite_zip(src, dst, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w") as new:
        for name in old.namelist():
            new.writestr(name, replace.get(name, old.read(name)))


def test_non_finite_sb3_weights_are_refused_by_name(ppo_with_vecnormalize, tmp_path):
    import io
    src, _ = ppo_with_vecnormalize
    with zipfile.ZipFile(src / "ppo.zip") as archive:
        state = torch.load(io.BytesIO(archive.read("policy.pth")), weights_only=True)
    state["action_net.bias"][0] = float("inf")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    rewrite_zip(src / "ppo.zip", tmp_path / "nan.zip", {"policy.pth": buffer.getvalue()})
    with pytest.raises(TeacherImportError,
                       match=r"nan.zip: tensor policy.pth:action_net.bias holds 1 NaN/Inf"):
        import_sb3(tmp_path / "nan.zip")


@pytest.mark.parametrize("attribute, value, message", [
    ("mean", "nan", r"mean holds 1 NaN/Inf"),
    ("var", "nan", r"var holds 1 NaN/Inf"),
    ("mean", "dict", r"mean is not a numeric array \(dict\)"),
    ("mean", "delete", r"obs_rms has no mean"),
])
def test_bad_vecnormalize_statistics_are_one_clear_line(ppo_with_vecnormalize, tmp_path, attribute,
                                                        value, message):
    import copy
    src, venv = ppo_with_vecnormalize
    original, venv.obs_rms = venv.obs_rms, copy.deepcopy(venv.obs_rms)
    try:
        if value == "nan":
            getattr(venv.obs_rms, attribute)[1] = np.nan
        elif value == "dict":
            setattr(venv.obs_rms, attribute, {"a": 1.0})
        else:
            delattr(venv.obs_rms, attribute)
        venv.save(str(tmp_path / "vn.pkl"))
    finally:
        venv.obs_rms = original
    with pytest.raises(TeacherImportError, match=message) as refused:
        import_sb3(src / "ppo.zip", vecnormalize_path=tmp_path / "vn.pkl")
    assert str(refused.value).startswith(str(tmp_path / "vn.pkl"))


def test_vecnormalize_self_check_uses_sb3s_normalization(ppo_with_vecnormalize):
    src, _ = ppo_with_vecnormalize
    _, normalizer, info = import_sb3(src / "ppo.zip", vecnormalize_path=src / "vecnormalize.pkl")
    check = info.info["self_check"]
    assert normalizer.config.clip == 10.0 and check["reference"].startswith("stable-baselines3 ")
    assert check["max_action_diff"] <= 1e-5 and check["observations"] == 300


@pytest.mark.parametrize("case, reason", [
    ("data_binary", "its 'data' entry is not JSON"),
    ("truncated", "truncated"),
    ("torch_file", "not a zip file"),
])
def test_broken_sb3_zip_is_one_clear_line(ppo_with_vecnormalize, tmp_path, case, reason):
    src, _ = ppo_with_vecnormalize
    bad = tmp_path / "bad.zip"
    if case == "data_binary":
        rewrite_zip(src / "ppo.zip", bad, {"data": bytes(range(256))})
    elif case == "truncated":
        content = (src / "ppo.zip").read_bytes()
        bad.write_bytes(content[:len(content) * 2 // 3])
    else:
        torch.save({"a": torch.zeros(2)}, bad)   # a torch checkpoint is a zip too, of other entries
        reason = "not an SB3 model zip"
    with pytest.raises(TeacherImportError) as refused:
        import_sb3(bad)
    message = str(refused.value)
    assert message.startswith(str(bad)) and reason in message and "\n" not in message
    assert len(message) < 240, message   # no listing of an inner archive's entries


def test_sb3_td3_deterministic_actor_is_refused(tmp_path):
    from stable_baselines3 import TD3
    model = TD3("MlpPolicy", "Pendulum-v1", learning_starts=8, batch_size=8, seed=0, device="cpu",
                policy_kwargs={"net_arch": [8]})
    model.learn(16)
    model.save(tmp_path / "td3.zip")
    with pytest.raises(TeacherImportError,
                       match=r"td3.zip: a TD3/DDPG deterministic actor: not supported"):
        import_sb3(tmp_path / "td3.zip")


def test_non_finite_legacy_tensors_are_refused_by_name(tmp_path):
    save_legacy(rsl_rl_runner("scalar"), tmp_path / "legacy.pt", "top_level")
    ckpt = torch.load(tmp_path / "legacy.pt", weights_only=True)
    ckpt["obs_norm_state_dict"]["_std"].view(-1)[2] = float("inf")
    torch.save(ckpt, tmp_path / "legacy.pt")
    with pytest.raises(TeacherImportError,
                       match=r"legacy.pt: tensor obs_norm_state_dict._std holds 1 NaN/Inf"):
        import_rsl_rl(tmp_path / "legacy.pt", activation="elu")
    ckpt["obs_norm_state_dict"]["_std"].view(-1)[2] = 1.0
    ckpt["model_state_dict"]["critic.0.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "legacy.pt")
    with pytest.raises(TeacherImportError, match=r"tensor critic.0.weight holds 1 NaN/Inf"):
        import_rsl_rl(tmp_path / "legacy.pt", activation="elu")


def test_self_check_tolerance_is_relative_on_large_actions():
    """float32 rounding on an action mean of ~300 is ~1e-5 absolute: not a wrong conversion;
    a drift of 1e-3 of the value is one, at any scale."""
    from policy_distill_ros.training.import_selfcheck import compare, ours
    torch.manual_seed(0)
    teacher = TeacherPolicy(TeacherConfig(obs_size=6, action_size=3, hidden_sizes=(8,)))
    with torch.no_grad():
        teacher.mean_head.bias.fill_(300.0)
    obs = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    action, std = ours(teacher, None, obs)
    assert np.abs(action).min() > 250
    near = compare("t", "ref", lambda o: (action * (1 + 3e-7), std), teacher, None, obs)
    assert 1e-5 < np.max(np.abs(action * 3e-7)) and near["max_action_diff"] < 1e-6
    with pytest.raises(TeacherImportError, match=r"max action difference 0\.00(1|0999)"):
        compare("t", "ref", lambda o: (action * (1 + 1e-3), std), teacher, None, obs)
