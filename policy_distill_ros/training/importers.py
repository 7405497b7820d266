"""Import teachers trained elsewhere: rsl_rl / Isaac Lab checkpoints and Stable-Baselines3 zips.

Each importer returns ``(TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo)`` that reproduces
the source library's deterministic action on the same raw observation; ``save_teacher`` then
stores it in our own format. Exact or refused: every import ends with a self-check against the
source library's own policy class (``import_selfcheck.py``), a non-finite tensor is refused by
name, and anything the importer does not understand (a recurrent or convolutional actor, an
unknown key, an activation nobody recorded) is refused rather than guessed. Nothing is unpickled
beyond tensors:

- rsl_rl: ``torch.load(weights_only=True)``. Both layouts are read: rsl-rl-lib >= 4
  (``actor_state_dict``: ``mlp.N.*``, ``distribution.std_param|log_std_param``,
  ``obs_normalizer._mean/_var/_std/count``) and the older ActorCritic one used by Isaac Lab with
  rsl_rl 2.x / 3.x (``model_state_dict``: ``actor.N.*``, ``std|log_std``, normalizer in
  ``actor_obs_normalizer.*`` or a top-level ``obs_norm_state_dict``). Recurrent actors (``rnn.*``,
  ``memory_a.*``) are refused: the teacher format and the trainer evaluate the teacher one
  observation at a time, without memory. The activation is not saved in these checkpoints: it is
  read from the run's ``params/agent.yaml`` beside the checkpoint (``rsl_rl_config.py``), which must
  also agree with the layer widths, or given explicitly; with neither the import is refused. The
  rsl_rl normalizer is ``(x - mean) / (std + 1e-2)``, imported exactly (``eps_placement="std"``).
- Stable-Baselines3 (PPO / A2C ``MlpPolicy`` with a Gaussian head, SAC ``MlpPolicy``): the zip's
  ``policy.pth`` is a plain state dict (``weights_only=True``); ``data`` is JSON, whose
  ``policy_kwargs`` carries readable ``net_arch`` and ``activation_fn`` (as ``"<class '...ReLU'>"``)
  next to the pickled copy we never touch. SAC's deterministic action ``tanh(mu)`` is reproduced
  with ``squash_output=True``. SB3's ``predict`` additionally maps actions to the env's bounds
  (PPO: clip to [low, high]; SAC: rescale [-1, 1] -> [low, high]); that belongs to the action
  spec, so the bounds and the rule are returned in ``info`` (``action_low``, ``action_high``,
  ``sb3_action_postprocess``) and checked against the spec by ``policy-distill import-teacher``.
- SB3 ``VecNormalize`` statistics (a pickle, or its JSON form): ``sb3_normalizer.py``, which
  never runs the pickle.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import pickle
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .import_errors import TeacherImportError, first_sentence
from .import_selfcheck import (
    Reference,
    compare,
    probe_observations,
    rsl_rl_reference,
    sb3_reference,
)
from .networks import ACTIVATIONS, TeacherConfig, TeacherPolicy
from .normalizer import EmpiricalNormalizer, NormalizerConfig
from .rsl_rl_config import AGENT_CONFIG_RELPATH, find_agent_config, read_actor_config
from .sb3_normalizer import load_vecnormalize, read_normalizer_stats, stats_normalizer
from .teacher_io import TeacherInfo, teacher_hash

__all__ = ["TeacherImportError", "import_rsl_rl", "import_sb3", "load_vecnormalize",
           "read_normalizer_stats"]

RSL_RL_NORMALIZER_EPS = 1e-2
RSL_RL_STD_RANGE = (1e-6, 1e6)
SB3_SAC_LOG_STD_RANGE = (-20.0, 2.0)
SB3_PPO_LOG_STD_RANGE = (-30.0, 30.0)  # SB3 does not clamp PPO's log std; bound out of the way

_TORCH_ACTIVATION_NAMES = {
    "ELU": "elu", "SELU": "selu", "ReLU": "relu", "CELU": "crelu", "LeakyReLU": "lrelu",
    "Tanh": "tanh", "Sigmoid": "sigmoid", "Softplus": "softplus", "GELU": "gelu", "SiLU": "silu",
    "Mish": "mish", "Identity": "identity",
}


def _safe_torch_load(source, where: str) -> dict:
    if (isinstance(source, (str, os.PathLike)) and Path(source).is_file()
            and Path(source).stat().st_size == 0):
        raise TeacherImportError(f"{where}: empty file (0 bytes), not a torch checkpoint")
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TeacherImportError(f"{where}: no such file") from None
    except OSError as exc:
        raise TeacherImportError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except pickle.UnpicklingError as exc:
        # torch's own message advises loading with weights_only=False: never repeat that.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise TeacherImportError(f"{where}: holds a Python object ({found.group(1)}), not "
                                     f"only tensors and plain containers; refusing to unpickle "
                                     f"it") from None
        raise TeacherImportError(f"{where}: not a torch checkpoint (no torch zip archive, and "
                                 f"not a tensor-only pickle)") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        if isinstance(source, (str, os.PathLike)) and zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                sb3 = {"data", "policy.pth"} <= set(archive.namelist())
            raise TeacherImportError(f"{where}: a zip archive but not a torch checkpoint"
                                     f"{' (an SB3 model: use --sb3)' if sb3 else ''}"
                                     ) from None
        reason = first_sentence(exc) or type(exc).__name__
        raise TeacherImportError(f"{where}: not a readable torch checkpoint, truncated or "
                                 f"corrupt ({reason})") from None
    if not isinstance(loaded, dict):
        raise TeacherImportError(f"{where}: expected a dict of tensors, "
                                 f"got {type(loaded).__name__}")
    return loaded


def _tensor_dict(value, where: str, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict):
        raise TeacherImportError(f"{where}: {what} is a {type(value).__name__}, "
                                 f"expected a dict of tensors")
    for key, tensor in value.items():
        if not isinstance(tensor, torch.Tensor):
            raise TeacherImportError(f"{where}: {what}[{key!r}] is a "
                                     f"{type(tensor).__name__}, not a tensor")
    return value


def _refuse_non_finite(tensors: dict[str, torch.Tensor], where: str, what: str = "") -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise TeacherImportError(f"{where}: tensor {what}{name} holds {bad} NaN/Inf "
                                     f"value(s) of {tensor.numel()}; refusing a teacher that "
                                     f"would command NaN")


def _linear_stack(state: dict[str, torch.Tensor], prefix: str, where: str
                  ) -> list[tuple[torch.Tensor, torch.Tensor]]:
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
    for (w_prev, _), (w_next, _) in itertools.pairwise(layers):
        if w_prev.shape[0] != w_next.shape[1]:
            raise TeacherImportError(f"{where}: layer widths under {prefix!r} do not chain "
                                     f"({list(w_prev.shape)} then {list(w_next.shape)})")
    return layers


def _fill_trunk(teacher: TeacherPolicy, hidden: list[tuple[torch.Tensor, torch.Tensor]],
                mean_head: tuple[torch.Tensor, torch.Tensor]) -> None:
    with torch.no_grad():
        for layer, (w, b) in zip(teacher.trunk.layers, hidden, strict=True):
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        teacher.mean_head.weight.copy_(mean_head[0])
        teacher.mean_head.bias.copy_(mean_head[1])


# rsl_rl's activation names (rsl_rl.utils.resolve_nn_activation, lower-cased there too)
RSL_RL_ACTIVATIONS = ("elu", "selu", "relu", "crelu", "lrelu", "tanh", "sigmoid", "softplus",
                      "gelu", "swish", "mish", "identity")


def _check_activation(activation: str, where: str) -> str:
    name = str(activation).lower()
    if name not in RSL_RL_ACTIVATIONS or name not in ACTIVATIONS:
        raise TeacherImportError(f"{where}: unknown rsl_rl activation {activation!r}; known: "
                                 f"{', '.join(RSL_RL_ACTIVATIONS)}")
    return name


def _finish(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None, info: dict,
            path: Path, make_reference: Callable[[], Reference]
            ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """Freeze, refuse non-finite modules, then the self-check against the source library."""
    teacher.eval()
    teacher.requires_grad_(False)
    if normalizer is not None:
        normalizer.freeze().eval()
        _refuse_non_finite(dict(normalizer.named_buffers()), str(path), "normalizer.")
    _refuse_non_finite(dict(teacher.named_parameters()), str(path), "policy.")
    try:
        reference = make_reference()
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:  # the library cannot build it
        if isinstance(exc, TeacherImportError):
            raise
        raise TeacherImportError(f"{path}: the source library cannot rebuild this policy for the "
                                 f"self-check ({first_sentence(exc)})") from None
    info["self_check"] = compare(str(path), reference.name, reference, teacher, normalizer,
                                 _probe_for(normalizer, teacher.config.obs_size))
    return teacher, normalizer, TeacherInfo(sha256=teacher_hash(teacher, normalizer),
                                            architecture=teacher.config,
                                            normalizer=normalizer.config if normalizer else None,
                                            info=info, path=str(path))


def _probe_for(normalizer: EmpiricalNormalizer | None, obs_size: int) -> np.ndarray:
    if normalizer is None:
        return probe_observations(obs_size, None, None, None)
    return probe_observations(obs_size, normalizer.mean.double().numpy(),
                              normalizer.var.double().sqrt().numpy(), normalizer.config.clip)


# ------------------------------------------------------------------------------------------ rsl_rl

_RSL_RL_LAYOUTS = {
    # checkpoint key: (layout name, recurrent-memory prefix, known prefixes, known exact keys)
    "actor_state_dict": ("rsl_rl>=4 actor_state_dict", "rnn.",
                         ("mlp.", "obs_normalizer."),
                         ("distribution.std_param", "distribution.log_std_param")),
    "model_state_dict": ("ActorCritic model_state_dict", "memory_a.",
                         ("actor.", "critic.", "actor_obs_normalizer.", "critic_obs_normalizer.",
                          "memory_c."),
                         ("std", "log_std")),
}


def _refuse_recurrent(state: dict[str, torch.Tensor], prefix: str, where: str) -> None:
    w_hh = next((v for k, v in state.items()
                 if k.startswith(prefix) and k.endswith("weight_hh_l0")), None)
    if w_hh is None and not any(k.startswith(prefix) for k in state):
        return
    kind, size = "RNN", "?"
    if w_hh is not None and w_hh.dim() == 2 and w_hh.shape[1] > 0:
        size = int(w_hh.shape[1])
        kind = {4: "LSTM", 3: "GRU"}.get(int(w_hh.shape[0]) // size, "RNN")
    layers = sum(1 for k in state if k.startswith(prefix) and re.search(r"weight_ih_l\d+$", k))
    raise TeacherImportError(
        f"{where}: recurrent actor ({kind}, {size} units x {layers} layer(s), "
        f"tensors '{prefix}*'): recurrent teachers are not supported - the teacher node and the "
        f"trainer evaluate the teacher one observation at a time without memory, so its actions "
        f"would differ from rsl_rl's act_inference; use an MLP actor")


def _refuse_unknown(state: dict[str, torch.Tensor], prefixes: tuple[str, ...],
                    exact: tuple[str, ...], where: str, what: str) -> None:
    unknown = sorted(k for k in state if k not in exact and not k.startswith(prefixes))
    if unknown:
        shown = (", ".join(unknown[:4])
                 + (f" (+{len(unknown) - 4} more)" if len(unknown) > 4 else ""))
        raise TeacherImportError(f"{where}: {what} has tensors an MLP Gaussian actor does not "
                                 f"have ({shown}): a CNN or custom actor is not supported")


def _rsl_rl_actor(ckpt: dict, where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The actor's tensors under rsl-rl-lib >= 4 names, whatever the checkpoint's layout."""
    key = next((k for k in _RSL_RL_LAYOUTS if k in ckpt), None)
    if key is None:
        raise TeacherImportError(f"{where}: neither 'actor_state_dict' (rsl-rl-lib >= 4) nor "
                                 f"'model_state_dict' (ActorCritic) found; "
                                 f"keys: {sorted(map(str, ckpt))[:8]}")
    layout, memory, prefixes, exact = _RSL_RL_LAYOUTS[key]
    state = _tensor_dict(ckpt[key], where, key)
    _refuse_recurrent(state, memory, where)
    _refuse_unknown(state, prefixes, exact, where, key)
    _refuse_non_finite(state, where)   # critic included: a checkpoint with NaN anywhere is broken
    if key == "actor_state_dict":
        if isinstance(ckpt.get("critic_state_dict"), dict):
            _refuse_non_finite(_tensor_dict(ckpt["critic_state_dict"], where, "critic_state_dict"),
                               where, "critic_state_dict.")
        return layout, dict(state)
    actor = {"mlp." + k[len("actor."):]: v for k, v in state.items() if k.startswith("actor.")}
    for old, new in (("std", "distribution.std_param"),
                     ("log_std", "distribution.log_std_param")):
        if old in state:
            actor[new] = state[old]
    norm = {k[len("actor_obs_normalizer."):]: v for k, v in state.items()
            if k.startswith("actor_obs_normalizer.")}
    if not norm and ckpt.get("obs_norm_state_dict") is not None:
        norm = _tensor_dict(ckpt["obs_norm_state_dict"], where, "obs_norm_state_dict")
        _refuse_non_finite(norm, where, "obs_norm_state_dict.")
    actor.update({"obs_normalizer." + k: v for k, v in norm.items()})
    return layout, actor


def _rsl_rl_activation(path: Path, activation: str | None,
                       agent_config: str | os.PathLike | None, hidden_sizes: tuple[int, ...],
                       where: str) -> tuple[str, str]:
    """(activation, its source): the run's agent config when present, else the caller's."""
    config_path = Path(agent_config) if agent_config is not None else find_agent_config(path)
    if config_path is None:
        if activation is None:
            raise TeacherImportError(
                f"{where}: rsl_rl checkpoints do not record the actor's activation and there is "
                f"no {AGENT_CONFIG_RELPATH} beside it; import it with "
                f"`policy-distill import-teacher --activation NAME` (rsl_rl's default is elu) or "
                f"--agent-config")
        return activation, "--activation"
    try:
        config = read_actor_config(config_path)
    except ValueError as exc:
        raise TeacherImportError(str(exc)) from None
    if config.recurrent:
        raise TeacherImportError(f"{config_path}: describes a recurrent actor "
                                 f"({config.class_name}, {config.recurrent}) but {where} holds an "
                                 f"MLP: not this run's config")
    if config.hidden_dims is not None and config.hidden_dims != hidden_sizes:
        raise TeacherImportError(f"{config_path}: actor hidden dims {list(config.hidden_dims)}, "
                                 f"but {where} has {list(hidden_sizes)}: not this run's config")
    if config.activation is None:
        if activation is None:
            raise TeacherImportError(f"{config_path}: no actor activation; give --activation")
        return activation, "--activation"
    from_config = _check_activation(config.activation, str(config_path))
    if activation is not None and activation != from_config:
        raise TeacherImportError(f"{where}: --activation {activation} contradicts {config_path} "
                                 f"(activation: {config.activation})")
    # provenance for teacher.json without the user's directories
    return from_config, str(AGENT_CONFIG_RELPATH) if agent_config is None else config_path.name


def _rsl_rl_normalizer(actor: dict[str, torch.Tensor], size: int, where: str
                       ) -> EmpiricalNormalizer | None:
    mean, std, var = (actor.get(f"obs_normalizer.{k}") for k in ("_mean", "_std", "_var"))
    if mean is None:
        return None
    if std is None and var is None:
        raise TeacherImportError(f"{where}: observation normalizer has _mean but neither _std "
                                 f"nor _var")
    var = std.reshape(-1).double().square() if std is not None else var.reshape(-1).double()
    if mean.numel() != size or var.numel() != size:
        raise TeacherImportError(f"{where}: observation normalizer has {mean.numel()} entries, "
                                 f"actor input is {size}")
    normalizer = EmpiricalNormalizer(NormalizerConfig(size=size, eps=RSL_RL_NORMALIZER_EPS,
                                                      eps_placement="std"))
    count = actor.get("obs_normalizer.count", torch.tensor(0))
    normalizer.set_statistics(mean.reshape(-1), var, float(count))
    return normalizer


def import_rsl_rl(path: str | os.PathLike, activation: str | None = None,
                  agent_config: str | os.PathLike | None = None
                  ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """Import the actor (and its observation normalizer) of an rsl_rl / Isaac Lab checkpoint.

    The activation comes from ``agent_config`` (default: ``params/agent.yaml`` beside the
    checkpoint) or, without one, from ``activation``; with neither the import is refused.
    """
    path = Path(path)
    where = str(path)
    if activation is not None:
        activation = _check_activation(activation, where)
    ckpt = _safe_torch_load(path, where)
    layout, actor = _rsl_rl_actor(ckpt, where)
    std_param, log_std_param = (actor.get("distribution.std_param"),
                                actor.get("distribution.log_std_param"))
    if std_param is None and log_std_param is None:
        raise TeacherImportError(f"{where}: no state-independent std parameter: only Gaussian "
                                 f"actors with a learned std are supported (not heteroscedastic "
                                 f"or Beta distributions)")
    layers = _linear_stack(actor, "mlp.", where)
    hidden, head = layers[:-1], layers[-1]
    if not hidden:
        raise TeacherImportError(f"{where}: actor has no hidden layer")
    obs_size, action_size = hidden[0][0].shape[1], head[0].shape[0]
    hidden_sizes = tuple(int(w.shape[0]) for w, _ in hidden)
    activation, activation_source = _rsl_rl_activation(path, activation, agent_config,
                                                       hidden_sizes, where)
    if std_param is not None:
        log_std = torch.log(std_param.float().clamp(*RSL_RL_STD_RANGE))
    else:
        log_std = log_std_param.float().clamp(math.log(RSL_RL_STD_RANGE[0]),
                                              math.log(RSL_RL_STD_RANGE[1]))
    if log_std.numel() != action_size:
        raise TeacherImportError(f"{where}: std has {log_std.numel()} entries, "
                                 f"actor outputs {action_size}")
    iteration = ckpt.get("iter") if isinstance(ckpt.get("iter"), int) else None
    info = {"source": "rsl_rl", "layout": layout, "checkpoint": path.name,
            "iteration": iteration, "activation": activation,
            "activation_from": activation_source}
    config = TeacherConfig(obs_size=obs_size, action_size=action_size, hidden_sizes=hidden_sizes,
                           activation=activation, std_mode="parameter",
                           log_std_min=math.log(RSL_RL_STD_RANGE[0]),
                           log_std_max=math.log(RSL_RL_STD_RANGE[1]), extra={"source": "rsl_rl"})
    teacher = TeacherPolicy(config)
    _fill_trunk(teacher, hidden, head)
    with torch.no_grad():
        teacher.log_std.copy_(log_std.reshape(-1))
    normalizer = _rsl_rl_normalizer(actor, obs_size, where)
    std_type = "scalar" if std_param is not None else "log"
    return _finish(teacher, normalizer, info, path, lambda: rsl_rl_reference(
        actor, obs_size, action_size, hidden_sizes, activation, std_type, where))


# ------------------------------------------------------------------------------ Stable-Baselines3

def _sb3_activation(policy_kwargs: dict, default: str, where: str) -> str:
    text = policy_kwargs.get("activation_fn")
    if text is None:
        return default
    match = re.search(r"\.(\w+)'>$", str(text))
    name = _TORCH_ACTIVATION_NAMES.get(match.group(1)) if match else None
    if name is None:
        raise TeacherImportError(f"{where}: unsupported policy_kwargs.activation_fn "
                                 f"{text!r}")
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
        raise TeacherImportError(f"{where}: {key} is not a gymnasium Box "
                                 f"({space.get(':type:') if isinstance(space, dict) else space!r}"
                                 f"); only flat Box observations/actions are supported")
    return space


def _sb3_bounds(act_space: dict, action_size: int, where: str
                ) -> tuple[list[float], list[float]]:
    low, high = _parse_array_repr(act_space.get("low")), _parse_array_repr(act_space.get("high"))
    if low is None or high is None:
        raise TeacherImportError(f"{where}: cannot read action_space low/high from 'data' "
                                 f"({act_space.get('low')!r}, {act_space.get('high')!r})")
    if len(low) == 1 and action_size > 1:
        low, high = low * action_size, high * action_size
    if len(low) != action_size or len(high) != action_size:
        raise TeacherImportError(f"{where}: action_space bounds have {len(low)} entries, the "
                                 f"actor outputs {action_size}")
    return low, high


def _read_sb3_zip(path: Path, where: str
                  ) -> tuple[dict, dict[str, torch.Tensor], str | None]:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "policy.pth" not in names or "data" not in names:
                raise TeacherImportError(f"{where}: not an SB3 model zip (no 'data' and "
                                         f"'policy.pth' entries among its {len(names)}; "
                                         f"truncated, or another kind of archive)")
            raw_data = archive.read("data")
            state = _safe_torch_load(io.BytesIO(archive.read("policy.pth")),
                                     f"{where}:policy.pth")
            version = (archive.read("_stable_baselines3_version").decode(errors="replace").strip()
                       if "_stable_baselines3_version" in names else None)
    except FileNotFoundError:
        raise TeacherImportError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise TeacherImportError(f"{where}: is a directory, expected an SB3 .zip") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise TeacherImportError(f"{where}: not a zip file, or a truncated/corrupt one "
                                 f"({first_sentence(exc)})") from None
    try:
        data = json.loads(raw_data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TeacherImportError(f"{where}: its 'data' entry is not JSON (not an SB3 model zip, "
                                 f"or a corrupt one)") from None
    if not isinstance(data, dict):
        raise TeacherImportError(f"{where}: its 'data' entry is a JSON {type(data).__name__}, "
                                 f"expected an object")
    return data, _tensor_dict(state, f"{where}:policy.pth", "policy.pth"), version


def _require(state: dict[str, torch.Tensor], keys: tuple[str, ...], where: str,
             what: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise TeacherImportError(f"{where}: {what} without {', '.join(missing)} in policy.pth")


def import_sb3(path: str | os.PathLike, vecnormalize_path: str | os.PathLike | None = None,
               normalizer_format: str | None = None
               ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """Import the actor of an SB3 PPO / A2C / SAC ``MlpPolicy`` zip (continuous actions).

    ``vecnormalize_path``: a ``VecNormalize.save()`` pickle, or the same statistics as JSON
    (``normalizer_format``: "pickle" or "json"; by default ``.json`` files are JSON).
    """
    path = Path(path)
    where = str(path)
    data, state, version = _read_sb3_zip(path, where)
    policy_kwargs = data.get("policy_kwargs") or {}
    if not isinstance(policy_kwargs, dict):
        raise TeacherImportError(f"{where}: policy_kwargs is not readable JSON")
    if data.get("use_sde") or policy_kwargs.get("use_sde"):
        raise TeacherImportError(f"{where}: gSDE policies (use_sde=True) are not supported")
    extractor_keys = [k for k in state if "features_extractor" in k]
    if extractor_keys:
        raise TeacherImportError(f"{where}: custom features extractor with parameters "
                                 f"({extractor_keys[0]}...) is not supported; only MlpPolicy "
                                 f"(Flatten extractor)")
    _refuse_non_finite(state, where, "policy.pth:")
    obs_space = _sb3_space(data, "observation_space", where)
    act_space = _sb3_space(data, "action_space", where)
    if "actor.mu.weight" in state:
        algo = "sac"
        _require(state, ("actor.mu.bias", "actor.log_std.weight", "actor.log_std.bias"), where,
                 "SAC actor")
        hidden = _linear_stack(state, "actor.latent_pi.", where)
        mean_head = (state["actor.mu.weight"].float(), state["actor.mu.bias"].float())
        log_std_head = (state["actor.log_std.weight"].float(),
                        state["actor.log_std.bias"].float())
        activation = _sb3_activation(policy_kwargs, "relu", where)
        std_mode, squash, log_std_range = "state_dependent", True, SB3_SAC_LOG_STD_RANGE
        postprocess = "rescale_from_unit"
    elif "action_net.weight" in state:
        if "log_std" not in state:
            raise TeacherImportError(f"{where}: action_net without log_std: discrete or "
                                     f"non-Gaussian action distributions are not supported")
        algo = "ppo_a2c"
        _require(state, ("action_net.bias",), where, "PPO/A2C actor")
        hidden = _linear_stack(state, "mlp_extractor.policy_net.", where)
        mean_head = (state["action_net.weight"].float(), state["action_net.bias"].float())
        log_std_head = None
        activation = _sb3_activation(policy_kwargs, "tanh", where)
        std_mode, squash, log_std_range = "parameter", False, SB3_PPO_LOG_STD_RANGE
        postprocess = "clip"
    elif "actor.mu.0.weight" in state:
        raise TeacherImportError(f"{where}: a TD3/DDPG deterministic actor: not supported (the "
                                 f"teacher must be a Gaussian policy: PPO/A2C or SAC MlpPolicy)")
    else:
        raise TeacherImportError(f"{where}: unrecognised SB3 policy (no actor.mu or action_net); "
                                 f"supported: PPO/A2C and SAC MlpPolicy")
    obs_size = int(hidden[0][0].shape[1])
    action_size = int(mean_head[0].shape[0])
    shape = obs_space.get("_shape")
    if shape is not None and int(np.prod(shape)) != obs_size:
        raise TeacherImportError(f"{where}: observation_space shape {shape} does not match the "
                                 f"first layer input {obs_size}")
    low, high = _sb3_bounds(act_space, action_size, where)
    config = TeacherConfig(obs_size=obs_size, action_size=action_size,
                           hidden_sizes=tuple(w.shape[0] for w, _ in hidden),
                           activation=activation, std_mode=std_mode,
                           log_std_min=log_std_range[0], log_std_max=log_std_range[1],
                           squash_output=squash, extra={"source": f"stable_baselines3/{algo}"})
    teacher = TeacherPolicy(config)
    _fill_trunk(teacher, hidden, mean_head)
    with torch.no_grad():
        if log_std_head is not None:
            teacher.log_std_head.weight.copy_(log_std_head[0])
            teacher.log_std_head.bias.copy_(log_std_head[1])
        else:
            teacher.log_std.copy_(state["log_std"].float().reshape(-1))
    info = {"source": "stable_baselines3", "algorithm": algo, "checkpoint": path.name,
            "sb3_version": version, "activation": activation, "action_low": low,
            "action_high": high, "sb3_action_postprocess": postprocess,
            "num_timesteps": data.get("num_timesteps")}
    normalizer, stats = None, None
    if vecnormalize_path is not None:
        stats = read_normalizer_stats(vecnormalize_path, normalizer_format)
        if stats is not None:
            normalizer = stats_normalizer(stats, Path(vecnormalize_path), obs_size)
        info["vecnormalize"] = Path(vecnormalize_path).name
    return _finish(teacher, normalizer, info, path, lambda: sb3_reference(
        algo, state, obs_size, low, high, activation, stats, where))
