"""Teacher and student policy networks with a common Gaussian output and feature API.

Every network maps an (already normalized, see ``normalizer.py``) observation batch to a diagonal
Gaussian over raw actions: ``PolicyOutput(mean, log_std, features, hidden)``. With
``return_features=True`` the named intermediate activations are filled in so losses can match
teacher layers against student layers:

- ``layer_{i}``: output of the i-th hidden layer (after its activation) of the MLP part;
- ``conv_{i}``: output of the i-th Conv1d block of the temporal encoder, flattened ``[B, C*H]``;
- ``gru``: the recurrent output fed to the MLP head ``[B, gru_hidden_size]`` (``[B, T, ...]``
  for sequences).

``feature_sizes()`` returns the width of every named feature (to size learned projections).

Observation history: the observation vector built by ``core/observation.py`` already holds the
last ``history_length`` steps, flattened oldest-first and term-major inside a step, i.e.
``obs[t * step_size + j]`` is term element ``j`` of step ``t`` (``t = history_length - 1`` is the
newest). ``history_mlp`` consumes that vector whole; ``tcn`` reshapes it to
``[B, history_length, step_size]`` and transposes to ``[B, step_size, history_length]`` so the
terms are Conv1d channels and time is the convolved axis.

When ``squash_output`` is set (SAC-style), the Gaussian is over pre-squash actions and the
deterministic action is ``tanh(mean)``; otherwise it is ``mean``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU,
    "selu": nn.SELU,
    "relu": nn.ReLU,
    "crelu": nn.CELU,  # rsl_rl's name for CELU
    "lrelu": nn.LeakyReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "identity": nn.Identity,
}

STUDENT_KINDS = ("mlp", "history_mlp", "tcn", "gru")
STD_MODES = ("parameter", "state_dependent")


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


class PolicyOutput(NamedTuple):
    """Diagonal Gaussian over raw actions plus optional named features and recurrent state."""

    mean: torch.Tensor
    log_std: torch.Tensor
    features: dict[str, torch.Tensor]
    hidden: torch.Tensor | None = None


def _positive_int(owner: str, name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive int, got {value!r}")


def _int_tuple(owner: str, name: str, value: object, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{owner}.{name} must be a list of positive ints, got {value!r}")
    out = tuple(value)  # type: ignore[arg-type]
    if not out and not allow_empty:
        raise ValueError(f"{owner}.{name} must not be empty")
    for v in out:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{owner}.{name} must hold positive ints, got {value!r}")
    return out


def _from_dict(cls, d: dict):
    check_keys(d, dataclass_keys(cls), cls.__name__)
    return cls(**d)


@dataclass
class StudentConfig:
    """Architecture of a student. ``obs_size`` = ``history_length * step_size`` for history
    kinds."""

    kind: str
    obs_size: int
    action_size: int
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "elu"
    history_length: int = 1
    conv_channels: tuple[int, ...] = (16, 16)
    conv_kernel_size: int = 3
    gru_hidden_size: int = 64
    gru_num_layers: int = 1
    init_std: float = 1.0
    squash_output: bool = False

    def __post_init__(self) -> None:
        owner = "StudentConfig"
        if self.kind not in STUDENT_KINDS:
            raise ValueError(f"{owner}.kind must be one of {STUDENT_KINDS}, got {self.kind!r}")
        for name in ("obs_size", "action_size", "history_length", "conv_kernel_size",
                     "gru_hidden_size", "gru_num_layers"):
            _positive_int(owner, name, getattr(self, name))
        self.hidden_sizes = _int_tuple(owner, "hidden_sizes", self.hidden_sizes, allow_empty=True)
        self.conv_channels = _int_tuple(
            owner, "conv_channels", self.conv_channels, allow_empty=False
        )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"{owner}.activation {self.activation!r} unknown; known: {sorted(ACTIVATIONS)}"
            )
        if not (
            isinstance(self.init_std, (int, float))
            and self.init_std > 0
            and math.isfinite(self.init_std)
        ):
            raise ValueError(f"{owner}.init_std must be a finite number > 0, got {self.init_std!r}")
        if self.kind in ("history_mlp", "tcn") and self.obs_size % self.history_length != 0:
            raise ValueError(
                f"{owner}: obs_size {self.obs_size} is not a multiple of history_length "
                f"{self.history_length} (kind {self.kind!r} needs whole time steps)"
            )
        if self.kind == "tcn":
            if self.history_length < 2:
                raise ValueError(
                    f"{owner}: kind 'tcn' needs history_length >= 2, got {self.history_length}"
                )
            if self.conv_kernel_size % 2 == 0:
                raise ValueError(f"{owner}.conv_kernel_size must be odd (length-preserving), "
                                 f"got {self.conv_kernel_size}")

    @property
    def step_size(self) -> int:
        return self.obs_size // self.history_length

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        d["conv_channels"] = list(self.conv_channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        return _from_dict(cls, d)


@dataclass
class TeacherConfig:
    """MLP Gaussian actor. ``std_mode``: a learned per-action parameter (PPO, rsl_rl) or a
    state-dependent head on the last hidden layer (SAC), log std clamped to
    ``[log_std_min, log_std_max]``."""

    obs_size: int
    action_size: int
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    activation: str = "elu"
    std_mode: str = "parameter"
    init_std: float = 1.0
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    squash_output: bool = False
    extra: dict = field(default_factory=dict)  # free-form provenance (source library, env id)

    def __post_init__(self) -> None:
        owner = "TeacherConfig"
        _positive_int(owner, "obs_size", self.obs_size)
        _positive_int(owner, "action_size", self.action_size)
        self.hidden_sizes = _int_tuple(owner, "hidden_sizes", self.hidden_sizes, allow_empty=False)
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"{owner}.activation {self.activation!r} unknown; known: {sorted(ACTIVATIONS)}"
            )
        if self.std_mode not in STD_MODES:
            raise ValueError(f"{owner}.std_mode must be one of {STD_MODES}, got {self.std_mode!r}")
        if not (self.init_std > 0 and math.isfinite(self.init_std)):
            raise ValueError(f"{owner}.init_std must be a finite number > 0, got {self.init_std!r}")
        if not self.log_std_min < self.log_std_max:
            raise ValueError(
                f"{owner}: log_std_min {self.log_std_min} must be < log_std_max {self.log_std_max}"
            )
        if not isinstance(self.extra, dict):
            raise ValueError(f"{owner}.extra must be a dict, got {type(self.extra).__name__}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden_sizes"] = list(self.hidden_sizes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TeacherConfig:
        return _from_dict(cls, d)


class MLPTrunk(nn.Module):
    """Linear + activation layers; records each layer's output as ``{prefix}{i}``."""

    def __init__(
        self, in_size: int, hidden_sizes: tuple[int, ...], activation: str, prefix: str = "layer_"
    ):
        super().__init__()
        self.prefix = prefix
        self.layers = nn.ModuleList()
        self.activations = nn.ModuleList()
        size = in_size
        for width in hidden_sizes:
            self.layers.append(nn.Linear(size, width))
            self.activations.append(make_activation(activation))
            size = width
        self.out_size = size
        self.sizes = tuple(hidden_sizes)

    def forward(self, x: torch.Tensor, features: dict[str, torch.Tensor] | None) -> torch.Tensor:
        for i, (layer, act) in enumerate(zip(self.layers, self.activations, strict=True)):
            x = act(layer(x))
            if features is not None:
                features[f"{self.prefix}{i}"] = x
        return x

    def feature_sizes(self) -> dict[str, int]:
        return {f"{self.prefix}{i}": w for i, w in enumerate(self.sizes)}


class BasePolicy(nn.Module):
    """Common helpers: deterministic action, std parameter, feature sizes."""

    is_recurrent = False
    squash_output = False

    def _init_std_param(self, action_size: int, init_std: float) -> None:
        self.log_std = nn.Parameter(torch.full((action_size,), math.log(init_std)))

    def deterministic(self, out: PolicyOutput) -> torch.Tensor:
        """The action the policy takes at test time (what the exported graph outputs)."""
        return torch.tanh(out.mean) if self.squash_output else out.mean

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return self.deterministic(self(obs))

    def feature_sizes(self) -> dict[str, int]:
        raise NotImplementedError


class MLPPolicy(BasePolicy):
    """Plain MLP student; also the base of the history MLP (same network, validated layout)."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.squash_output = config.squash_output
        self.trunk = MLPTrunk(config.obs_size, config.hidden_sizes, config.activation)
        self.mean_head = nn.Linear(self.trunk.out_size, config.action_size)
        self._init_std_param(config.action_size, config.init_std)

    def forward(self, obs: torch.Tensor, return_features: bool = False) -> PolicyOutput:
        features: dict[str, torch.Tensor] | None = {} if return_features else None
        latent = self.trunk(obs, features)
        mean = self.mean_head(latent)
        return PolicyOutput(mean, self.log_std.expand_as(mean), features or {})

    def feature_sizes(self) -> dict[str, int]:
        return self.trunk.feature_sizes()


class HistoryMLPPolicy(MLPPolicy):
    """MLP over the stacked history vector (oldest-first, term-major; see module docstring)."""


class TCNPolicy(BasePolicy):
    """Temporal convolution over the history axis, then an MLP head."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.squash_output = config.squash_output
        self.history_length = config.history_length
        self.step_size = config.step_size
        self.convs = nn.ModuleList()
        self.conv_acts = nn.ModuleList()
        channels = self.step_size
        for width in config.conv_channels:
            self.convs.append(nn.Conv1d(channels, width, config.conv_kernel_size,
                                        padding=config.conv_kernel_size // 2))
            self.conv_acts.append(make_activation(config.activation))
            channels = width
        self.encoded_size = channels * self.history_length
        self.trunk = MLPTrunk(self.encoded_size, config.hidden_sizes, config.activation)
        self.mean_head = nn.Linear(self.trunk.out_size, config.action_size)
        self._init_std_param(config.action_size, config.init_std)

    def forward(self, obs: torch.Tensor, return_features: bool = False) -> PolicyOutput:
        features: dict[str, torch.Tensor] | None = {} if return_features else None
        x = obs.reshape(obs.shape[0], self.history_length, self.step_size).transpose(1, 2)
        for i, (conv, act) in enumerate(zip(self.convs, self.conv_acts, strict=True)):
            x = act(conv(x))
            if features is not None:
                features[f"conv_{i}"] = x.flatten(1)
        latent = self.trunk(x.flatten(1), features)
        mean = self.mean_head(latent)
        return PolicyOutput(mean, self.log_std.expand_as(mean), features or {})

    def feature_sizes(self) -> dict[str, int]:
        sizes = {
            f"conv_{i}": c * self.history_length for i, c in enumerate(self.config.conv_channels)
        }
        sizes.update(self.trunk.feature_sizes())
        return sizes


class GRUPolicy(BasePolicy):
    """GRU over time with explicit hidden state ``[num_layers, B, gru_hidden_size]``.

    ``obs`` is one step ``[B, obs_size]`` or a sequence ``[B, T, obs_size]``. ``episode_starts``
    (``[B, T]`` bool, sequences only) zeroes the state before the marked steps so one batch may
    span episode boundaries.
    """

    is_recurrent = True

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.squash_output = config.squash_output
        self.gru = nn.GRU(
            config.obs_size, config.gru_hidden_size, config.gru_num_layers, batch_first=True
        )
        self.trunk = MLPTrunk(config.gru_hidden_size, config.hidden_sizes, config.activation)
        self.mean_head = nn.Linear(self.trunk.out_size, config.action_size)
        self._init_std_param(config.action_size, config.init_std)

    @property
    def hidden_shape(self) -> tuple[int, int]:
        """(num_layers, hidden_size); the batch axis goes in the middle."""
        return (self.config.gru_num_layers, self.config.gru_hidden_size)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(self.config.gru_num_layers, batch_size, self.config.gru_hidden_size)

    def forward(
        self,
        obs: torch.Tensor,
        hidden: torch.Tensor | None = None,
        return_features: bool = False,
        episode_starts: torch.Tensor | None = None,
    ) -> PolicyOutput:
        single_step = obs.dim() == 2
        seq = obs.unsqueeze(1) if single_step else obs
        if seq.dim() != 3 or seq.shape[-1] != self.config.obs_size:
            raise ValueError(f"GRUPolicy: obs must be [B, {self.config.obs_size}] or "
                             f"[B, T, {self.config.obs_size}], got {list(obs.shape)}")
        if hidden is None:
            hidden = self.initial_state(seq.shape[0]).to(seq)
        if episode_starts is None:
            rnn_out, hidden = self.gru(seq, hidden)
        else:
            if single_step or episode_starts.shape != seq.shape[:2]:
                raise ValueError(
                    f"GRUPolicy: episode_starts must be [B, T] = {list(seq.shape[:2])} "
                    f"for a sequence, got {list(episode_starts.shape)}"
                )
            outs = []
            for t in range(seq.shape[1]):
                keep = (~episode_starts[:, t]).to(seq.dtype).view(1, -1, 1)
                step_out, hidden = self.gru(seq[:, t:t + 1], hidden * keep)
                outs.append(step_out)
            rnn_out = torch.cat(outs, dim=1)
        if single_step:
            rnn_out = rnn_out.squeeze(1)
        features: dict[str, torch.Tensor] | None = {"gru": rnn_out} if return_features else None
        latent = self.trunk(rnn_out, features)
        mean = self.mean_head(latent)
        return PolicyOutput(mean, self.log_std.expand_as(mean), features or {}, hidden)

    def feature_sizes(self) -> dict[str, int]:
        sizes = {"gru": self.config.gru_hidden_size}
        sizes.update(self.trunk.feature_sizes())
        return sizes


class TeacherPolicy(BasePolicy):
    """MLP Gaussian actor used as teacher (own format and imported rsl_rl / SB3 actors)."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.config = config
        self.squash_output = config.squash_output
        self.trunk = MLPTrunk(config.obs_size, config.hidden_sizes, config.activation)
        self.mean_head = nn.Linear(self.trunk.out_size, config.action_size)
        if config.std_mode == "parameter":
            self._init_std_param(config.action_size, config.init_std)
            self.log_std_head = None
        else:
            self.log_std_head = nn.Linear(self.trunk.out_size, config.action_size)

    def forward(self, obs: torch.Tensor, return_features: bool = False) -> PolicyOutput:
        features: dict[str, torch.Tensor] | None = {} if return_features else None
        latent = self.trunk(obs, features)
        mean = self.mean_head(latent)
        if self.log_std_head is None:
            log_std = self.log_std.expand_as(mean)
        else:
            log_std = self.log_std_head(latent)
        log_std = torch.clamp(log_std, self.config.log_std_min, self.config.log_std_max)
        return PolicyOutput(mean, log_std, features or {})

    def feature_sizes(self) -> dict[str, int]:
        return self.trunk.feature_sizes()


def build_student(config: StudentConfig) -> BasePolicy:
    if config.kind == "mlp":
        return MLPPolicy(config)
    if config.kind == "history_mlp":
        return HistoryMLPPolicy(config)
    if config.kind == "tcn":
        return TCNPolicy(config)
    return GRUPolicy(config)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (buffers such as normalizer statistics are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
