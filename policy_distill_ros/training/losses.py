"""Distillation losses, combinable with weights through one :class:`LossConfig`.

Terms (each a batch mean, so the weights are comparable across batch sizes):

- ``bc``: behavioural cloning on the Gaussian means, MSE or Huber, averaged over action dims.
  With ``action_bounds`` (raw-space limits of what the robot executes, from the action spec)
  the error is limit-aware (`limit_aware_error`): the target is the executed (clipped) action,
  and where the teacher's mean lies beyond a limit any student output at or beyond that limit
  is exact, since the robot executes the same command. A PPO teacher's unclipped mean (here
  mostly beyond +-1) is never a target.
  For discrete actions ``bc_kind="cross_entropy"`` uses the teacher's argmax as the label.
- ``kl``: continuous actions, analytic KL(teacher_T || student) between diagonal Gaussians, where
  the teacher's std is scaled by the temperature ``T`` (``sigma_T = T * sigma_teacher``)::

      KL = sum_i [ log(sigma_s,i / sigma_T,i)
                   + (sigma_T,i^2 + (mu_t,i - mu_s,i)^2) / (2 sigma_s,i^2) - 1/2 ]

  The student's optimal std is therefore ``T * sigma_teacher``: T > 1 asks for a wider, more
  exploratory student, T < 1 a sharper one; the optimal mean is always the teacher's.
  Discrete actions (``action_type="discrete"``, the ``mean`` fields hold logits): Hinton's
  softened categorical KL ``T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``; the ``T^2`` keeps
  gradient magnitudes comparable across temperatures, and ``T > 1`` spreads the teacher's
  probability mass over the non-argmax actions (its "dark knowledge").
- ``feature``: chosen teacher layers vs student layers through learned linear projections
  (student width -> teacher width), L2 (mean squared error) or cosine (1 - cosine similarity).
  The projections are parameters of :class:`DistillationLoss` and must be optimized with the
  student.

  With ``action_bounds`` the teacher's Gaussian is centred on its clipped mean.

The teacher is always treated as frozen: its outputs are detached here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys

from .networks import PolicyOutput

BC_KINDS = ("mse", "huber", "cross_entropy")
FEATURE_KINDS = ("l2", "cosine")
ACTION_TYPES = ("continuous", "discrete")


@dataclass
class LossConfig:
    """Weights and settings of every distillation term; a weight of 0 disables a term."""

    action_type: str = "continuous"
    bc_weight: float = 1.0
    bc_kind: str = "mse"
    huber_delta: float = 1.0
    kl_weight: float = 0.0
    temperature: float = 1.0
    feature_weight: float = 0.0
    feature_pairs: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (teacher, student)
    feature_kind: str = "l2"

    def __post_init__(self) -> None:
        if self.action_type not in ACTION_TYPES:
            raise ValueError(
                f"LossConfig.action_type must be one of {ACTION_TYPES}, got {self.action_type!r}"
            )
        for name in ("bc_weight", "kl_weight", "feature_weight"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"LossConfig.{name} must be a finite number >= 0, got {value!r}")
        if self.bc_weight == 0 and self.kl_weight == 0 and self.feature_weight == 0:
            raise ValueError(
                "LossConfig: every weight is 0; enable at least one of bc, kl, feature"
            )
        if self.bc_kind not in BC_KINDS:
            raise ValueError(f"LossConfig.bc_kind must be one of {BC_KINDS}, got {self.bc_kind!r}")
        if (self.bc_kind == "cross_entropy") != (
            self.action_type == "discrete"
        ) and self.bc_weight > 0:
            raise ValueError(f"LossConfig.bc_kind {self.bc_kind!r} does not fit action_type "
                             f"{self.action_type!r} (cross_entropy is for discrete actions only)")
        if not self.huber_delta > 0:
            raise ValueError(f"LossConfig.huber_delta must be > 0, got {self.huber_delta!r}")
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0
                and math.isfinite(self.temperature)):
            raise ValueError(
                f"LossConfig.temperature must be a finite number > 0, got {self.temperature!r}"
            )
        if self.feature_kind not in FEATURE_KINDS:
            raise ValueError(
                f"LossConfig.feature_kind must be one of {FEATURE_KINDS}, got {self.feature_kind!r}"
            )
        pairs = []
        for pair in self.feature_pairs:
            if len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
                raise ValueError(
                    f"LossConfig.feature_pairs entries must be [teacher_layer, student_layer], "
                    f"got {pair!r}"
                )
            pairs.append((pair[0], pair[1]))
        self.feature_pairs = tuple(pairs)
        if self.feature_weight > 0 and not self.feature_pairs:
            raise ValueError("LossConfig: feature_weight > 0 needs feature_pairs")

    def to_dict(self) -> dict:
        return {
            "action_type": self.action_type,
            "bc_weight": self.bc_weight,
            "bc_kind": self.bc_kind,
            "huber_delta": self.huber_delta,
            "kl_weight": self.kl_weight,
            "temperature": self.temperature,
            "feature_weight": self.feature_weight,
            "feature_pairs": [list(p) for p in self.feature_pairs],
            "feature_kind": self.feature_kind,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LossConfig:
        check_keys(d, dataclass_keys(cls), "LossConfig")
        d = dict(d)
        if "feature_pairs" in d:
            d["feature_pairs"] = tuple(tuple(p) for p in d["feature_pairs"])
        return cls(**d)


def bc_loss(student_mean: torch.Tensor, target: torch.Tensor, kind: str = "mse",
            huber_delta: float = 1.0) -> torch.Tensor:
    """Regression of the student's action means onto target actions (batch and dim mean)."""
    if student_mean.shape != target.shape:
        raise ValueError(
            f"bc_loss: student {list(student_mean.shape)} vs target {list(target.shape)}"
        )
    if kind == "mse":
        return F.mse_loss(student_mean, target)
    if kind == "huber":
        return F.huber_loss(student_mean, target, delta=huber_delta)
    raise ValueError(f"bc_loss: kind must be 'mse' or 'huber', got {kind!r}")


def limit_aware_error(student_mean: torch.Tensor, teacher_mean: torch.Tensor,
                      lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Per-element error of the executed action: s - clip(t) inside the limits; a hinge where
    the teacher saturates (t >= upper: only s < upper is wrong; t <= lower: only s > lower),
    so the gradient never vanishes for a student on the wrong side and never pulls a student
    that already saturates the same way."""
    target = torch.maximum(torch.minimum(teacher_mean, upper), lower)
    diff = student_mean - target
    diff = torch.where(teacher_mean >= upper, diff.clamp(max=0.0), diff)
    return torch.where(teacher_mean <= lower, diff.clamp(min=0.0), diff)


def gaussian_kl(mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor,
                log_std_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last axis (one value per sample)."""
    var_p = torch.exp(2.0 * log_std_p)
    var_q = torch.exp(2.0 * log_std_q)
    per_dim = log_std_q - log_std_p + (var_p + (mean_p - mean_q).square()) / (2.0 * var_q) - 0.5
    return per_dim.sum(dim=-1)


def teacher_student_kl(
    teacher_mean: torch.Tensor,
    teacher_log_std: torch.Tensor,
    student_mean: torch.Tensor,
    student_log_std: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Batch mean of KL(N(mu_t, (T sigma_t)^2) || N(mu_s, sigma_s^2)); see the module docstring."""
    if teacher_mean.shape != student_mean.shape:
        raise ValueError(f"teacher_student_kl: teacher {list(teacher_mean.shape)} vs student "
                         f"{list(student_mean.shape)}")
    scaled_log_std = teacher_log_std + math.log(temperature)
    return gaussian_kl(teacher_mean, scaled_log_std, student_mean, student_log_std).mean()


def categorical_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """Batch mean of T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) over the last axis."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"categorical_kl: teacher {list(teacher_logits.shape)} vs student "
                         f"{list(student_logits.shape)}")
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return kl.mean() * temperature ** 2


class FeatureMatching(nn.Module):
    """Learned linear projections student layer -> teacher layer, and the matching loss."""

    def __init__(self, pairs: tuple[tuple[str, str], ...], teacher_sizes: dict[str, int],
                 student_sizes: dict[str, int], kind: str = "l2") -> None:
        super().__init__()
        if kind not in FEATURE_KINDS:
            raise ValueError(f"FeatureMatching.kind must be one of {FEATURE_KINDS}, got {kind!r}")
        self.pairs = tuple(pairs)
        self.kind = kind
        self.projections = nn.ModuleDict()
        for teacher_layer, student_layer in self.pairs:
            if teacher_layer not in teacher_sizes:
                raise ValueError(f"feature pair: teacher has no layer {teacher_layer!r} "
                                 f"(has {sorted(teacher_sizes)})")
            if student_layer not in student_sizes:
                raise ValueError(f"feature pair: student has no layer {student_layer!r} "
                                 f"(has {sorted(student_sizes)})")
            self.projections[self._key(teacher_layer, student_layer)] = nn.Linear(
                student_sizes[student_layer], teacher_sizes[teacher_layer])

    @staticmethod
    def _key(teacher_layer: str, student_layer: str) -> str:
        return f"{teacher_layer}__from__{student_layer}".replace(".", "_")

    def forward(self, teacher_features: dict[str, torch.Tensor],
                student_features: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for teacher_layer, student_layer in self.pairs:
            if teacher_layer not in teacher_features or student_layer not in student_features:
                raise KeyError(
                    f"feature pair ({teacher_layer!r}, {student_layer!r}) missing from the "
                    f"outputs; call the networks with return_features=True"
                )
            target = teacher_features[teacher_layer].detach()
            projected = self.projections[self._key(teacher_layer, student_layer)](
                student_features[student_layer]
            )
            if self.kind == "l2":
                term = F.mse_loss(projected, target)
            else:
                term = (1.0 - F.cosine_similarity(projected, target, dim=-1, eps=1e-8)).mean()
            total = term if total is None else total + term
        assert total is not None
        return total / len(self.pairs)


class DistillationLoss(nn.Module):
    """Weighted sum of the enabled terms; returns ``(total, {term: value})``.

    Pass ``teacher_sizes``/``student_sizes`` (``net.feature_sizes()``) when feature matching is on;
    then include ``self.parameters()`` (the projections) in the student's optimizer.
    """

    def __init__(self, config: LossConfig, teacher_sizes: dict[str, int] | None = None,
                 student_sizes: dict[str, int] | None = None,
                 action_bounds: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.config = config
        self.limited = action_bounds is not None and config.action_type == "continuous"
        if self.limited:
            self.register_buffer("lower", torch.as_tensor(action_bounds[0], dtype=torch.float32))
            self.register_buffer("upper", torch.as_tensor(action_bounds[1], dtype=torch.float32))
        self.features: FeatureMatching | None = None
        if config.feature_weight > 0:
            if teacher_sizes is None or student_sizes is None:
                raise ValueError(
                    "DistillationLoss: feature matching needs teacher_sizes and student_sizes"
                )
            self.features = FeatureMatching(
                config.feature_pairs, teacher_sizes, student_sizes, config.feature_kind
            )

    @property
    def needs_features(self) -> bool:
        return self.features is not None

    def forward(
        self, student: PolicyOutput, teacher: PolicyOutput
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.config
        t_mean = teacher.mean.detach()
        t_log_std = teacher.log_std.detach()
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=student.mean.dtype, device=student.mean.device)
        if cfg.bc_weight > 0:
            if cfg.action_type == "discrete":
                terms["bc"] = F.cross_entropy(student.mean, t_mean.argmax(dim=-1))
            elif self.limited:
                diff = limit_aware_error(student.mean, t_mean, self.lower, self.upper)
                terms["bc"] = bc_loss(diff, torch.zeros_like(diff), cfg.bc_kind, cfg.huber_delta)
            else:
                terms["bc"] = bc_loss(student.mean, t_mean, cfg.bc_kind, cfg.huber_delta)
            total = total + cfg.bc_weight * terms["bc"]
        if cfg.kl_weight > 0:
            if cfg.action_type == "discrete":
                terms["kl"] = categorical_kl(t_mean, student.mean, cfg.temperature)
            else:
                centre = torch.maximum(torch.minimum(t_mean, self.upper), self.lower) \
                    if self.limited else t_mean
                terms["kl"] = teacher_student_kl(centre, t_log_std, student.mean, student.log_std,
                                                 cfg.temperature)
            total = total + cfg.kl_weight * terms["kl"]
        if self.features is not None:
            terms["feature"] = self.features(teacher.features, student.features)
            total = total + cfg.feature_weight * terms["feature"]
        terms["total"] = total
        return total, terms
