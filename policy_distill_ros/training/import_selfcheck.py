"""The last step of every teacher import: run the source library's own policy next to ours.

An importer reads weights by key names and rebuilds the network in our format; a wrong guess (an
activation, a key layout, a normalizer convention) would otherwise import silently wrong. Here the
same checkpoint tensors are loaded into the library's own model class (rsl_rl's ``MLPModel``,
Stable-Baselines3's ``ActorCriticPolicy`` / ``SACPolicy``, strict key matching) and both are run on
a few hundred observations: typical ones, wide ones and ones far enough out to hit the normalizer's
clip. The import is refused above ``SELF_CHECK_ATOL`` with the largest difference printed; a
difference counts relative to the value where that is above 1, since two float32
implementations of one network differ by a few ulps of a large action mean.
Nothing here unpickles: the libraries' classes are built from shapes and fed the tensors.
"""
from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import torch

from .import_errors import TeacherImportError
from .networks import ACTIVATIONS, TeacherPolicy
from .normalizer import EmpiricalNormalizer

SELF_CHECK_ATOL = 1e-5
SELF_CHECK_OBSERVATIONS = 300

# a reference maps raw observations [N, obs] to (deterministic action, std), both [N, act]
Reference = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def probe_observations(
    obs_size: int,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    clip: float | None,
    n: int = SELF_CHECK_OBSERVATIONS,
    seed: int = 0,
) -> np.ndarray:
    """Typical (2/3), wide (1/6) and far-out (1/6, past the normalizer clip) observations."""
    rng = np.random.default_rng(seed)
    mean = np.zeros(obs_size) if mean is None else np.asarray(mean, float)
    std = np.ones(obs_size) if std is None else np.sqrt(np.asarray(std, float) ** 2 + 1e-6)
    n_typ, n_wide = 2 * n // 3, n // 6
    z = rng.normal(size=(n, obs_size))
    z[n_typ:n_typ + n_wide] *= 4.0
    far = (clip or 5.0) + 3.0
    z[n_typ + n_wide:] = rng.choice([-far, far], size=(n - n_typ - n_wide, obs_size))
    return (mean + z * std).astype(np.float32)


def ours(teacher: TeacherPolicy, normalizer: EmpiricalNormalizer | None, obs: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    x = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        out = teacher(normalizer(x) if normalizer is not None else x)
        return teacher.deterministic(out).numpy(), out.log_std.exp().numpy()


def compare(where: str, reference_name: str, reference: Reference, teacher: TeacherPolicy,
            normalizer: EmpiricalNormalizer | None, obs: np.ndarray) -> dict:
    """Raise :class:`TeacherImportError` unless actions and stds agree within SELF_CHECK_ATOL."""
    ref_action, ref_std = reference(obs)
    our_action, our_std = ours(teacher, normalizer, obs)
    if not np.isfinite(ref_action).all():
        raise TeacherImportError(
            f"{where}: {reference_name} itself outputs non-finite actions on the probe "
            f"observations; refusing the checkpoint"
        )
    action_diff = _scaled_max_diff(our_action, ref_action)
    std_diff = _scaled_max_diff(our_std, ref_std)
    if not action_diff <= SELF_CHECK_ATOL or not std_diff <= SELF_CHECK_ATOL:
        raise TeacherImportError(
            f"{where}: the imported teacher differs from {reference_name} "
            f"on {len(obs)} probe observations "
            f"(max action difference {action_diff:.3g}, max std difference {std_diff:.3g}, "
            f"allowed {SELF_CHECK_ATOL:g}); refusing"
        )
    return {
        "reference": reference_name,
        "observations": int(len(obs)),
        "max_action_diff": action_diff,
        "max_std_diff": std_diff,
    }


def _scaled_max_diff(ours_: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max(1, |ref|): absolute near zero, relative on large values."""
    return float(np.max(np.abs(ours_ - ref) / np.maximum(1.0, np.abs(ref))))


# ------------------------------------------------------------------------------------------ rsl_rl

def rsl_rl_reference(
    actor_state: dict[str, torch.Tensor],
    obs_size: int,
    action_size: int,
    hidden_sizes: tuple[int, ...],
    activation: str,
    std_type: str,
    where: str,
) -> Reference:
    """rsl_rl's own ``MLPModel`` + ``GaussianDistribution`` holding the checkpoint's actor tensors
    (rsl-rl-lib >= 4 key names; older layouts are renamed to them by the importer)."""
    from importlib.metadata import version

    from rsl_rl.models import MLPModel
    from tensordict import TensorDict

    normalized = any(k.startswith("obs_normalizer.") for k in actor_state)
    torch.manual_seed(0)  # the constructor initialises weights that load_state_dict then replaces
    model = MLPModel(
        TensorDict({"policy": torch.zeros(1, obs_size)}, batch_size=[1]),
        {"actor": ["policy"]},
        "actor",
        action_size,
        hidden_dims=list(hidden_sizes),
        activation=activation,
        obs_normalization=normalized,
        distribution_cfg={"class_name": "GaussianDistribution", "std_type": std_type},
    )
    try:
        model.load_state_dict(actor_state, strict=True)
    except RuntimeError as exc:
        raise TeacherImportError(f"{where}: rsl_rl's MLPModel does not accept the actor tensors "
                             f"({' '.join(str(exc).split())[:300]})") from None
    model.eval()

    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(obs)
        with torch.no_grad():
            action = model(TensorDict({"policy": x}, batch_size=[len(x)]))
            model.distribution.update(model.mlp(model.obs_normalizer(x)))
            return action.numpy(), model.distribution.std.expand_as(action).numpy()

    run.name = f"rsl_rl {version('rsl-rl-lib')} MLPModel"
    return run


# ------------------------------------------------------------------------------ Stable-Baselines3

def _sb3_arch(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """Widths of the Linear layers of an SB3 ``nn.Sequential`` (``{prefix}{i}.weight``)."""
    indices = sorted(int(k[len(prefix):].split(".")[0]) for k in state
                     if k.startswith(prefix) and k.endswith(".weight"))
    return [int(state[f"{prefix}{i}.weight"].shape[0]) for i in indices]


def sb3_reference(algorithm: str, state: dict[str, torch.Tensor], obs_size: int, low: list[float],
                  high: list[float], activation: str, stats: dict | None, where: str) -> Reference:
    """SB3's own policy class holding policy.pth's tensors; with VecNormalize statistics, SB3's own
    ``VecNormalize._normalize_obs`` formula in front."""
    import gymnasium as gym
    import stable_baselines3
    from stable_baselines3.common.running_mean_std import RunningMeanStd
    from stable_baselines3.common.vec_env import VecNormalize

    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), np.float32)
    act_space = gym.spaces.Box(
        np.asarray(low, np.float32), np.asarray(high, np.float32), dtype=np.float32
    )
    activation_fn = ACTIVATIONS[activation]
    torch.manual_seed(0)
    if algorithm == "sac":
        from stable_baselines3.sac.policies import SACPolicy
        n_critics = len({k.split(".")[1] for k in state if k.startswith("critic.qf")})
        policy = SACPolicy(
            obs_space,
            act_space,
            lambda _: 0.0,
            activation_fn=activation_fn,
            net_arch={
                "pi": _sb3_arch(state, "actor.latent_pi."),
                "qf": _sb3_arch(state, "critic.qf0.")[:-1],
            },
            n_critics=max(n_critics, 1),
        )
    else:
        from stable_baselines3.common.policies import ActorCriticPolicy

        policy = ActorCriticPolicy(
            obs_space,
            act_space,
            lambda _: 0.0,
            activation_fn=activation_fn,
            ortho_init=False,
            net_arch={
                "pi": _sb3_arch(state, "mlp_extractor.policy_net."),
                "vf": _sb3_arch(state, "mlp_extractor.value_net."),
            },
        )
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TeacherImportError(
            f"{where}: SB3's {type(policy).__name__} does not accept policy.pth "
            f"({' '.join(str(exc).split())[:300]})"
        ) from None
    policy.set_training_mode(False)
    rms = None
    if stats is not None:
        rms = RunningMeanStd(shape=(obs_size,))
        rms.mean, rms.var = (
            np.asarray(stats["mean"], np.float64),
            np.asarray(stats["var"], np.float64),
        )
        fake_wrapper = SimpleNamespace(
            epsilon=stats["epsilon"], clip_obs=stats["clip_obs"] or np.inf
        )

    def run(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = (
            obs
            if rms is None
            else VecNormalize._normalize_obs(fake_wrapper, obs, rms).astype(np.float32)
        )
        with torch.no_grad():
            t = torch.as_tensor(x)
            action = policy._predict(t, deterministic=True)
            if algorithm == "sac":
                std = policy.actor.get_action_dist_params(t)[1].exp()
            else:
                std = policy.log_std.exp().expand_as(action)
        return action.numpy(), std.numpy()

    run.name = f"stable-baselines3 {stable_baselines3.__version__} {type(policy).__name__}"
    return run
