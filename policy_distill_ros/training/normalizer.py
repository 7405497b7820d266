"""Empirical observation normalizer that lives inside the policy graph.

Normalization is a module (not a preprocessing step in Python) so that the exported ONNX file
contains it: the robot feeds raw observation vectors and can never apply stale statistics.

Two placements of the stability epsilon are supported because the checkpoints we import differ:

- ``eps_placement="std"`` (rsl_rl, the default):  ``y = (x - mean) / (sqrt(var) + eps)``
- ``eps_placement="var"`` (Stable-Baselines3 VecNormalize): ``y = (x - mean) / sqrt(var + eps)``

then, when ``clip`` is set, ``y = clamp(y, -clip, clip)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys

EPS_PLACEMENTS = ("std", "var")


@dataclass
class NormalizerConfig:
    """Shape and formula of an :class:`EmpiricalNormalizer`."""

    size: int
    eps: float = 1e-2
    eps_placement: str = "std"
    clip: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size <= 0:
            raise ValueError(f"NormalizerConfig.size must be a positive int, got {self.size!r}")
        if not self.eps > 0.0:
            raise ValueError(f"NormalizerConfig.eps must be > 0, got {self.eps!r}")
        if self.eps_placement not in EPS_PLACEMENTS:
            raise ValueError(
                f"NormalizerConfig.eps_placement must be one of {EPS_PLACEMENTS}, "
                f"got {self.eps_placement!r}"
            )
        if self.clip is not None and not self.clip > 0.0:
            raise ValueError(f"NormalizerConfig.clip must be > 0 or None, got {self.clip!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> NormalizerConfig:
        check_keys(d, dataclass_keys(cls), "NormalizerConfig")
        return cls(**d)


class EmpiricalNormalizer(nn.Module):
    """Running mean/variance over a batch axis; ``freeze()`` stops updates (for export).

    Buffers ``mean``, ``var`` (population variance) and ``count`` are saved in ``state_dict``.
    A fresh normalizer is the identity map up to ``eps`` (mean 0, var 1).
    """

    def __init__(self, config: NormalizerConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.zeros(config.size))
        self.register_buffer("var", torch.ones(config.size))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.frozen = False

    @property
    def size(self) -> int:
        return self.config.size

    def freeze(self) -> EmpiricalNormalizer:
        """Stop statistics updates; ``update`` becomes a no-op. Returns self."""
        self.frozen = True
        return self

    def unfreeze(self) -> EmpiricalNormalizer:
        self.frozen = False
        return self

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge the batch statistics of ``x`` ([B, size]) into the running ones (Chan et al.)."""
        if self.frozen:
            return
        if x.dim() != 2 or x.shape[1] != self.size:
            raise ValueError(
                f"EmpiricalNormalizer.update: expected [B, {self.size}], got {list(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise ValueError("EmpiricalNormalizer.update: batch contains NaN or Inf")
        n_b = x.shape[0]
        if n_b == 0:
            return
        x64 = x.to(torch.float64)
        mean_b = x64.mean(dim=0)
        var_b = x64.var(dim=0, unbiased=False)
        n_a = float(self.count)
        total = n_a + n_b
        delta = mean_b - self.mean.to(torch.float64)
        new_mean = self.mean.to(torch.float64) + delta * (n_b / total)
        m2 = self.var.to(torch.float64) * n_a + var_b * n_b + delta.square() * (n_a * n_b / total)
        self.mean.copy_(new_mean.to(self.mean.dtype))
        self.var.copy_((m2 / total).to(self.var.dtype))
        self.count.fill_(total)

    def set_statistics(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        """Load statistics computed elsewhere (importers)."""
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        var = torch.as_tensor(var, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.size or var.numel() != self.size:
            raise ValueError(
                f"EmpiricalNormalizer.set_statistics: expected {self.size} values, "
                f"got mean {mean.numel()} and var {var.numel()}"
            )
        if (var < 0).any():
            raise ValueError("EmpiricalNormalizer.set_statistics: negative variance")
        with torch.no_grad():
            self.mean.copy_(mean)
            self.var.copy_(var)
            self.count.fill_(float(count))

    def denominator(self) -> torch.Tensor:
        if self.config.eps_placement == "std":
            return torch.sqrt(self.var) + self.config.eps
        return torch.sqrt(self.var + self.config.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) / self.denominator()
        if self.config.clip is not None:
            y = torch.clamp(y, -self.config.clip, self.config.clip)
        return y

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, eps={self.config.eps}, "
            f"eps_placement={self.config.eps_placement!r}, "
            f"clip={self.config.clip}, frozen={self.frozen}"
        )
