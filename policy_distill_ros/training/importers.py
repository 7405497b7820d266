"""Import teachers trained elsewhere: rsl_rl / Isaac Lab checkpoints and Stable-Baselines3 zips.

Each importer returns ``(TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo)`` that reproduces
the original library's deterministic action on the same raw observation; ``save_teacher`` then
stores it in our own format. Nothing is unpickled beyond tensors:

- rsl_rl: ``torch.load(weights_only=True)``. Both layouts are read: rsl-rl-lib >= 4
  (``actor_state_dict``: ``mlp.N.*``, ``distribution.std_param|log_std_param``,
  ``obs_normalizer._mean/_var/_std/count``) and the older ActorCritic one used by Isaac Lab
  (``model_state_dict``: ``actor.N.*``, ``std|log_std``, normalizer in ``actor_obs_normalizer.*`` or
  a top-level ``obs_norm_state_dict``). Activations are not saved in these checkpoints: pass
  ``activation`` (rsl_rl's default is ``"elu"``). Layer widths come from the weights. The rsl_rl
  normalizer is ``(x - mean) / (std + 1e-2)``, imported exactly (``eps_placement="std"``).
- Stable-Baselines3 (PPO / A2C ``MlpPolicy`` with a Gaussian head, SAC ``MlpPolicy``): the zip's
  ``policy.pth`` is a plain state dict (``weights_only=True``); ``data`` is JSON, whose
  ``policy_kwargs`` carries readable ``net_arch`` and ``activation_fn`` (as ``"<class '...ReLU'>"``)
  next to the pickled copy we never touch. SAC's deterministic action ``tanh(mu)`` is reproduced
  with ``squash_output=True``. SB3's ``predict`` additionally maps actions to the env's bounds
  (PPO: clip to [low, high]; SAC: rescale [-1, 1] -> [low, high]); that belongs to the action
  spec, so the bounds and the rule are returned in ``info`` (``action_low``, ``action_high``,
  ``sb3_action_postprocess``) instead of being baked into the network.
- SB3 ``VecNormalize`` statistics (``vec_normalize.save(path)`` writes a pickle of the wrapper):
  read with a restricted unpickler that only materialises numpy arrays/dtypes and replaces the
  SB3/Gymnasium classes by inert records; any other global in the file is refused before it can
  run. The normalizer is ``clip((x - mean) / sqrt(var + eps), -clip_obs, clip_obs)``, imported
  with ``eps_placement="var"``.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from .networks import ACTIVATIONS, TeacherConfig, TeacherPolicy
from .normalizer import EmpiricalNormalizer, NormalizerConfig
from .teacher_io import TeacherInfo, teacher_hash

RSL_RL_NORMALIZER_EPS = 1e-2
RSL_RL_STD_RANGE = (1e-6, 1e6)
SB3_SAC_LOG_STD_RANGE = (-20.0, 2.0)
SB3_PPO_LOG_STD_RANGE = (-30.0, 30.0)  # SB3 does not clamp PPO's log std; keep the bound out of the way

_TORCH_ACTIVATION_NAMES = {
    "ELU": "elu", "SELU": "selu", "ReLU": "relu", "CELU": "crelu", "LeakyReLU": "lrelu", "Tanh": "tanh",
    "Sigmoid": "sigmoid", "Softplus": "softplus", "GELU": "gelu", "SiLU": "silu", "Mish": "mish",
    "Identity": "identity",
}


class TeacherImportError(ValueError):
    """A checkpoint cannot be imported; the message names the file and what is wrong."""


def _safe_torch_load(source, where: str) -> dict:
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise TeacherImportError(f"{where}: holds more than tensors and plain containers, refusing to unpickle "
                                 f"it (weights_only=True failed: {str(exc).splitlines()[0]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise TeacherImportError(f"{where}: not a readable torch checkpoint ({exc})") from None
    if not isinstance(loaded, dict):
        raise TeacherImportError(f"{where}: expected a dict of tensors, got {type(loaded).__name__}")
    return loaded


def _linear_stack(state: dict[str, torch.Tensor], prefix: str, where: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Linear layers ``{prefix}{i}.weight/bias`` in index order (activations have no parameters)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    indices = sorted(int(m.group(1)) for k in state if (m := pattern.match(k)))
    if not indices:
        raise TeacherImportError(f"{where}: no linear layers under {prefix!r}")
    layers = []
    for i in indices:
        weight = state[f"{prefix}{i}.weight"]
        bias = state.get(f"{prefix}{i}.bias")
        if weight.dim() != 2 or bias is None:
            raise TeacherImportError(f"{where}: {prefix}{i} is not a Linear layer with bias")
        layers.append((weight.float(), bias.float()))
    for (w_prev, _), (w_next, _) in zip(layers, layers[1:]):
        if w_prev.shape[0] != w_next.shape[1]:
            raise TeacherImportError(f"{where}: layer widths under {prefix!r} do not chain "
                                     f"({list(w_prev.shape)} then {list(w_next.shape)})")
    return layers


def _fill_trunk(teacher: TeacherPolicy, hidden: list[tuple[torch.Tensor, torch.Tensor]],
                mean_head: tuple[torch.Tensor, torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, (w, b) in zip(teacher.trunk.layers, hidden):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        teacher.mean_head.weight.copy_(mean_head[0])
        teacher.mean_head.bias.copy_(mean_head[1])


def _check_activation(activation: str, where: str) -> str:
    if activation not in ACTIVATIONS:
        raise TeacherImportError(f"{where}: unknown activation {activation!r}; known: {sorted(ACTIVATIONS)}")
    return activation


def _finish(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None, info: dict, path: Path
            ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    teacher.eval()
    teacher.requires_grad_(False)
    if normalizer is not None:
        normalizer.freeze().eval()
    return teacher, normalizer, TeacherInfo(sha256=teacher_hash(teacher, normalizer), architecture=teacher.config,
                                            normalizer=normalizer.config if normalizer else None, info=info,
                                            path=str(path))


# ------------------------------------------------------------------------------------------ rsl_rl

def _rsl_rl_normalizer(state: dict[str, torch.Tensor], prefix: str, size: int, where: str
                       ) -> EmpiricalNormalizer | None:
    if f"{prefix}_mean" not in state:
        return None
    mean = state[f"{prefix}_mean"].reshape(-1)
    std = state.get(f"{prefix}_std")
    var = std.reshape(-1).square() if std is not None else state[f"{prefix}_var"].reshape(-1)
    if mean.numel() != size:
        raise TeacherImportError(f"{where}: normalizer has {mean.numel()} entries, actor input is {size}")
    normalizer = EmpiricalNormalizer(NormalizerConfig(size=size, eps=RSL_RL_NORMALIZER_EPS, eps_placement="std"))
    count = state.get(f"{prefix}count", torch.tensor(0))
    normalizer.set_statistics(mean, var, float(count))
    return normalizer


def import_rsl_rl(path: str | os.PathLike, activation: str = "elu"
                  ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """Import the actor (and its observation normalizer) of an rsl_rl / Isaac Lab checkpoint."""
    path = Path(path)
    where = str(path)
    activation = _check_activation(activation, where)
    ckpt = _safe_torch_load(path, where)
    if "actor_state_dict" in ckpt:
        state = ckpt["actor_state_dict"]
        layout = "rsl_rl>=4 actor_state_dict"
        layers = _linear_stack(state, "mlp.", where)
        std_param = state.get("distribution.std_param")
        log_std_param = state.get("distribution.log_std_param")
        normalizer_prefix = "obs_normalizer."
        top_norm = None
    elif "model_state_dict" in ckpt:
        state = ckpt["model_state_dict"]
        layout = "ActorCritic model_state_dict"
        layers = _linear_stack(state, "actor.", where)
        std_param = state.get("std")
        log_std_param = state.get("log_std")
        normalizer_prefix = "actor_obs_normalizer."
        top_norm = ckpt.get("obs_norm_state_dict")
    else:
        raise TeacherImportError(f"{where}: neither 'actor_state_dict' (rsl-rl-lib >= 4) nor 'model_state_dict' "
                                 f"(ActorCritic) found; keys: {sorted(ckpt)}")
    if std_param is None and log_std_param is None:
        raise TeacherImportError(f"{where}: no state-independent std parameter: only Gaussian actors with a "
                                 f"learned std are supported (not heteroscedastic or Beta distributions)")
    hidden, head = layers[:-1], layers[-1]
    if not hidden:
        raise TeacherImportError(f"{where}: actor has no hidden layer")
    obs_size = hidden[0][0].shape[1]
    action_size = head[0].shape[0]
    if std_param is not None:
        log_std = torch.log(std_param.float().clamp(*RSL_RL_STD_RANGE))
    else:
        log_std = log_std_param.float().clamp(math.log(RSL_RL_STD_RANGE[0]), math.log(RSL_RL_STD_RANGE[1]))
    if log_std.numel() != action_size:
        raise TeacherImportError(f"{where}: std has {log_std.numel()} entries, actor outputs {action_size}")
    info = {"source": "rsl_rl", "layout": layout, "checkpoint": path.name, "iteration": ckpt.get("iter"),
            "activation_assumed": activation}
    config = TeacherConfig(obs_size=obs_size, action_size=action_size,
                           hidden_sizes=tuple(w.shape[0] for w, _ in hidden), activation=activation,
                           std_mode="parameter", log_std_min=math.log(RSL_RL_STD_RANGE[0]),
                           log_std_max=math.log(RSL_RL_STD_RANGE[1]), extra={"source": "rsl_rl"})
    teacher = TeacherPolicy(config)
    _fill_trunk(teacher, hidden, head)
    with torch.no_grad():
        teacher.log_std.copy_(log_std)
    normalizer = _rsl_rl_normalizer(state, normalizer_prefix, obs_size, where)
    if normalizer is None and isinstance(top_norm, dict):
        normalizer = _rsl_rl_normalizer(top_norm, "", obs_size, where)
    return _finish(teacher, normalizer, info, path)


# ------------------------------------------------------------------------------ Stable-Baselines3

def _sb3_activation(policy_kwargs: dict, default: str, where: str) -> str:
    text = policy_kwargs.get("activation_fn")
    if text is None:
        return default
    match = re.search(r"\.(\w+)'>$", str(text))
    name = _TORCH_ACTIVATION_NAMES.get(match.group(1)) if match else None
    if name is None:
        raise TeacherImportError(f"{where}: unsupported policy_kwargs.activation_fn {text!r}")
    return name


def _parse_array_repr(text) -> list[float] | None:
    """``'[-2.  2.]'`` (numpy str of a Box bound, as SB3 writes it into ``data``) -> floats."""
    if not isinstance(text, str) or "..." in text:
        return None
    try:
        return [float(v) for v in text.replace("[", " ").replace("]", " ").split()]
    except ValueError:
        return None


def _sb3_space(data: dict, key: str, where: str) -> dict:
    space = data.get(key)
    if not isinstance(space, dict) or "Box" not in str(space.get(":type:", "")):
        raise TeacherImportError(f"{where}: {key} is not a gymnasium Box ({space.get(':type:') if isinstance(space, dict) else space!r}); "
                                 f"only flat Box observations/actions are supported")
    return space


def import_sb3(path: str | os.PathLike, vecnormalize_path: str | os.PathLike | None = None
               ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """Import the actor of a Stable-Baselines3 PPO / A2C / SAC ``MlpPolicy`` zip (continuous actions)."""
    path = Path(path)
    where = str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "policy.pth" not in names or "data" not in names:
                raise TeacherImportError(f"{where}: not an SB3 model zip (needs 'data' and 'policy.pth', has "
                                         f"{sorted(names)})")
            data = json.loads(archive.read("data"))
            state = _safe_torch_load(io.BytesIO(archive.read("policy.pth")), f"{where}:policy.pth")
            version = archive.read("_stable_baselines3_version").decode().strip() \
                if "_stable_baselines3_version" in names else None
    except zipfile.BadZipFile as exc:
        raise TeacherImportError(f"{where}: not a zip file ({exc})") from None
    except json.JSONDecodeError as exc:
        raise TeacherImportError(f"{where}: 'data' is not JSON ({exc})") from None
    policy_kwargs = data.get("policy_kwargs") or {}
    if not isinstance(policy_kwargs, dict):
        raise TeacherImportError(f"{where}: policy_kwargs is not readable JSON")
    if data.get("use_sde") or policy_kwargs.get("use_sde"):
        raise TeacherImportError(f"{where}: gSDE policies (use_sde=True) are not supported")
    extractor_keys = [k for k in state if "features_extractor" in k]
    if extractor_keys:
        raise TeacherImportError(f"{where}: custom features extractor with parameters ({extractor_keys[0]}...) "
                                 f"is not supported; only MlpPolicy (Flatten extractor)")
    obs_space = _sb3_space(data, "observation_space", where)
    act_space = _sb3_space(data, "action_space", where)
    if "actor.mu.weight" in state:
        algo = "sac"
        hidden = _linear_stack(state, "actor.latent_pi.", where)
        mean_head = (state["actor.mu.weight"].float(), state["actor.mu.bias"].float())
        log_std_head = (state["actor.log_std.weight"].float(), state["actor.log_std.bias"].float())
        activation = _sb3_activation(policy_kwargs, "relu", where)
        std_mode, squash, log_std_range = "state_dependent", True, SB3_SAC_LOG_STD_RANGE
        postprocess = "rescale_from_unit"
    elif "action_net.weight" in state:
        if "log_std" not in state:
            raise TeacherImportError(f"{where}: action_net without log_std: discrete or non-Gaussian action "
                                     f"distributions are not supported")
        algo = "ppo_a2c"
        hidden = _linear_stack(state, "mlp_extractor.policy_net.", where)
        mean_head = (state["action_net.weight"].float(), state["action_net.bias"].float())
        log_std_head = None
        activation = _sb3_activation(policy_kwargs, "tanh", where)
        std_mode, squash, log_std_range = "parameter", False, SB3_PPO_LOG_STD_RANGE
        postprocess = "clip"
    else:
        raise TeacherImportError(f"{where}: unrecognised SB3 policy (no actor.mu or action_net); supported: "
                                 f"PPO/A2C and SAC MlpPolicy")
    obs_size = hidden[0][0].shape[1]
    action_size = mean_head[0].shape[0]
    shape = obs_space.get("_shape")
    if shape is not None and int(np.prod(shape)) != obs_size:
        raise TeacherImportError(f"{where}: observation_space shape {shape} does not match the first layer "
                                 f"input {obs_size}")
    config = TeacherConfig(obs_size=obs_size, action_size=action_size,
                           hidden_sizes=tuple(w.shape[0] for w, _ in hidden), activation=activation,
                           std_mode=std_mode, log_std_min=log_std_range[0], log_std_max=log_std_range[1],
                           squash_output=squash, extra={"source": f"stable_baselines3/{algo}"})
    teacher = TeacherPolicy(config)
    _fill_trunk(teacher, hidden, mean_head)
    with torch.no_grad():
        if log_std_head is not None:
            teacher.log_std_head.weight.copy_(log_std_head[0])
            teacher.log_std_head.bias.copy_(log_std_head[1])
        else:
            teacher.log_std.copy_(state["log_std"].float())
    info = {"source": "stable_baselines3", "algorithm": algo, "checkpoint": path.name, "sb3_version": version,
            "activation": activation, "action_low": _parse_array_repr(act_space.get("low")),
            "action_high": _parse_array_repr(act_space.get("high")), "sb3_action_postprocess": postprocess,
            "num_timesteps": data.get("num_timesteps")}
    normalizer = None
    if vecnormalize_path is not None:
        normalizer = load_vecnormalize(vecnormalize_path, obs_size)
        info["vecnormalize"] = Path(vecnormalize_path).name
    return _finish(teacher, normalizer, info, path)


# ------------------------------------------------------------- SB3 VecNormalize (restricted unpickling)

class _InertRecord:
    """Stands in for an allowed SB3/Gymnasium class: keeps the pickled state, runs no code."""

    def __init__(self, *args) -> None:
        self.args = args
        self.state: dict = {}

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2 and all(isinstance(p, (dict, type(None))) for p in state):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slotstate)
        self.state = state if isinstance(state, dict) else {"value": state}


def _inert_factory(*args) -> _InertRecord:
    return _InertRecord(*args)


class _RestrictedUnpickler(pickle.Unpickler):
    _RECORDS = {
        ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"),
        ("stable_baselines3.common.running_mean_std", "RunningMeanStd"),
    }
    _NUMPY = {
        ("numpy", "dtype"), ("numpy", "ndarray"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._RECORDS or module.startswith("gymnasium.spaces") or module.startswith("gym.spaces"):
            return type(name, (_InertRecord,), {})
        if module.startswith("numpy.random"):  # spaces carry their RNG; we never need it
            return _inert_factory
        if (module, name) in self._NUMPY:
            import importlib
            return getattr(importlib.import_module(module), name)
        if module == "copyreg" and name == "_reconstructor":
            return _reconstruct_inert
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a VecNormalize file")


def _reconstruct_inert(cls, base, state):
    if isinstance(cls, type) and issubclass(cls, _InertRecord):
        return cls()
    raise pickle.UnpicklingError(f"copyreg reconstruction of {cls!r} is not allowed")


def load_vecnormalize(path: str | os.PathLike, obs_size: int | None = None) -> EmpiricalNormalizer | None:
    """Observation statistics of a saved SB3 ``VecNormalize``; None if it did not normalize observations."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            root = _RestrictedUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as exc:
        raise TeacherImportError(f"{path}: refused or unreadable VecNormalize file ({exc})") from None
    if not isinstance(root, _InertRecord) or type(root).__name__ != "VecNormalize":
        raise TeacherImportError(f"{path}: not a VecNormalize pickle")
    state = root.state
    if not state.get("norm_obs", True):
        return None
    if state.get("norm_obs_keys"):
        raise TeacherImportError(f"{path}: dict-observation VecNormalize (norm_obs_keys) is not supported")
    rms = state.get("obs_rms")
    if not isinstance(rms, _InertRecord):
        raise TeacherImportError(f"{path}: no obs_rms statistics")
    mean = np.asarray(rms.state["mean"], dtype=np.float64).reshape(-1)
    var = np.asarray(rms.state["var"], dtype=np.float64).reshape(-1)
    if obs_size is not None and mean.size != obs_size:
        raise TeacherImportError(f"{path}: statistics for {mean.size} observations, policy takes {obs_size}")
    clip_obs = state.get("clip_obs")
    normalizer = EmpiricalNormalizer(NormalizerConfig(size=int(mean.size), eps=float(state.get("epsilon", 1e-8)),
                                                      eps_placement="var",
                                                      clip=float(clip_obs) if clip_obs else None))
    normalizer.set_statistics(torch.from_numpy(mean), torch.from_numpy(var), float(rms.state.get("count", 0.0)))
    return normalizer.freeze()
