"""Distillation's public face: its config, its result, `fit`, and the figures around them.

`fit(teacher, teacher_normalizer, dataset, config)` trains a small student to act like a frozen
teacher on recorded states and returns a `TrainResult` whose student + normalizer go to
`export_student` (ONNX, parity checked, metadata from the spec, provenance). The work is split
the way rsl_rl splits PPO from its runner: `distillation.py` is the algorithm (teacher targets,
loss, one epoch of updates, its state), `runner.py` the loop (epochs, logging, best epoch, early
stop, checkpoints every N epochs and resume, `checkpoint.py`). The same code trains one process
or, under torchrun (`ddp.py`), several with DistributedDataParallel.

Recurrent students (`kind: gru`) train on windows of `sequence_length` consecutive steps of one
episode, the hidden state starting at zero at each window.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys

from .dataset import DistillDataset
from .losses import DistillationLoss, LossConfig
from .networks import BasePolicy, PolicyOutput, StudentConfig, TeacherPolicy
from .normalizer import EmpiricalNormalizer

__all__ = ["TrainConfig", "TrainResult", "fit", "teacher_outputs", "student_actions",
           "action_errors", "export_student", "TrainingError", "executed_bounds",
           "executed_targets", "episode_actions", "json_metrics"]

LOG = logging.getLogger(__name__)
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")


class TrainingError(RuntimeError):
    """Training cannot start or diverged; the message says why."""


def _number(owner: str, name: str, value: Any, low: float | None = None,
            high: float | None = None, low_open: bool = False, integer: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{owner}.{name} must be {kind}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{owner}.{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{owner}.{name} must be <= {high}, got {value!r}")


@dataclass
class TrainConfig:
    """Everything `fit` needs besides the data and the teacher. `student.obs_size` and
    `student.action_size` must match the dataset (`from_dict(..., student_spec=)` fills them
    from the student's PolicySpec when the dict omits them)."""

    student: StudentConfig
    loss: LossConfig = field(default_factory=LossConfig)
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    min_lr_ratio: float = 0.05          # cosine ends at lr * min_lr_ratio
    val_fraction: float = 0.1
    seed: int = 0
    grad_clip: float | None = 1.0       # max global gradient norm; None = off
    normalizer_eps: float = 1e-2        # student normalizer: (x - mean) / (std + eps)
    normalizer_clip: float | None = 10.0
    teacher_batch_size: int = 4096      # no_grad batches for the teacher pass
    restore_best: bool = True           # keep the parameters of the best validation epoch
    early_stop_patience: int = 0        # epochs without val improvement before stopping; 0 = off
    sequence_length: int = 16           # recurrent students: window length in steps
    device: str = "auto"
    num_threads: int = 1                # torch intra-op threads (0 = torch's default); small
                                        # students: 1 thread measured ~8x faster than 2 here

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        if isinstance(self.student, dict):
            self.student = StudentConfig.from_dict(self.student)
        if isinstance(self.loss, dict):
            self.loss = LossConfig.from_dict(self.loss)
        if not isinstance(self.student, StudentConfig):
            raise ValueError(f"{owner}.student must be a StudentConfig, got "
                             f"{type(self.student).__name__}")
        if not isinstance(self.loss, LossConfig):
            raise ValueError(f"{owner}.loss must be a LossConfig, got {type(self.loss).__name__}")
        for name in ("epochs", "batch_size", "teacher_batch_size", "sequence_length"):
            _number(owner, name, getattr(self, name), low=1, integer=True)
        _number(owner, "seed", self.seed, low=0, integer=True)
        _number(owner, "early_stop_patience", self.early_stop_patience, low=0, integer=True)
        _number(owner, "num_threads", self.num_threads, low=0, integer=True)
        _number(owner, "lr", self.lr, low=0, low_open=True)
        _number(owner, "weight_decay", self.weight_decay, low=0)
        _number(owner, "min_lr_ratio", self.min_lr_ratio, low=0, high=1)
        _number(owner, "val_fraction", self.val_fraction, low=0, high=0.9)
        _number(owner, "normalizer_eps", self.normalizer_eps, low=0, low_open=True)
        for name in ("grad_clip", "normalizer_clip"):
            if getattr(self, name) is not None:
                _number(owner, name, getattr(self, name), low=0, low_open=True)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"{owner}.lr_schedule must be one of {LR_SCHEDULES}, got "
                             f"{self.lr_schedule!r}")
        if self.device not in DEVICES:
            raise ValueError(f"{owner}.device must be one of {DEVICES}, got {self.device!r}")
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"{owner}.restore_best must be true or false, got "
                             f"{self.restore_best!r}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["student"] = self.student.to_dict()
        d["loss"] = self.loss.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, student_spec=None) -> TrainConfig:
        """From a plain dict (YAML); unknown keys are an error. With `student_spec` (a core
        PolicySpec) the student's obs_size, action_size and history_length default to it."""
        if not isinstance(d, dict):
            raise ValueError(f"TrainConfig: expected a mapping, got {type(d).__name__}")
        check_keys(d, dataclass_keys(cls), "TrainConfig")
        if "student" not in d:
            raise ValueError("TrainConfig: missing 'student' (the student architecture)")
        d = dict(d)
        student = d["student"]
        if isinstance(student, dict):
            student = dict(student)
            if student_spec is not None:
                student.setdefault("obs_size", student_spec.observation.size)
                student.setdefault("action_size", student_spec.action.size)
                student.setdefault("history_length", student_spec.observation.history_length)
            missing = [k for k in ("kind", "obs_size", "action_size") if k not in student]
            if missing:
                raise ValueError(f"TrainConfig.student: missing {missing} (give them or the "
                                 f"student spec)")
            d["student"] = StudentConfig.from_dict(student)
        if isinstance(d.get("loss"), dict):
            d["loss"] = LossConfig.from_dict(d["loss"])
        return cls(**d)


@dataclass
class TrainResult:
    """The trained student (eval mode, CPU) and everything measured on the way."""

    student: BasePolicy
    student_normalizer: EmpiricalNormalizer
    history: list[dict]                 # per epoch: epoch, lr, time_s, train {term}, val {term}
    metrics: dict                       # final figures (see fit)
    config: TrainConfig
    loss_module: DistillationLoss       # holds the trained feature projections
    val_dataset: DistillDataset | None = None

    def inference(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic raw actions for raw student observations [N, obs_size] (numpy)."""
        return student_actions(self.student, self.student_normalizer, obs)


@torch.no_grad()
def teacher_outputs(teacher: TeacherPolicy, teacher_normalizer: EmpiricalNormalizer | None,
                    teacher_obs: np.ndarray | torch.Tensor, layers: tuple[str, ...] = (),
                    batch_size: int = 4096) -> PolicyOutput:
    """The teacher's Gaussian (and the named hidden features) for every row, in no_grad
    batches; the teacher is neither trained nor switched out of its current mode."""
    obs = torch.as_tensor(np.asarray(teacher_obs, dtype=np.float32))
    if obs.dim() != 2 or obs.shape[1] != teacher.config.obs_size:
        raise TrainingError(f"teacher observations are {list(obs.shape)}; the teacher expects "
                            f"[N, {teacher.config.obs_size}] (teacher spec and teacher disagree)")
    was_training = teacher.training
    teacher.eval()
    means, log_stds, feats = [], [], {name: [] for name in layers}
    try:
        for start in range(0, obs.shape[0], batch_size):
            x = obs[start:start + batch_size]
            if teacher_normalizer is not None:
                x = teacher_normalizer(x)
            out = teacher(x, return_features=bool(layers))
            means.append(out.mean)
            log_stds.append(out.log_std)
            for name in layers:
                if name not in out.features:
                    raise TrainingError(f"teacher has no feature {name!r} "
                                        f"(has {sorted(out.features)})")
                feats[name].append(out.features[name])
    finally:
        teacher.train(was_training)
    empty = torch.zeros(0, teacher.config.action_size)
    return PolicyOutput(torch.cat(means) if means else empty,
                        torch.cat(log_stds) if log_stds else empty,
                        {k: torch.cat(v) for k, v in feats.items() if v})


def executed_bounds(action_spec) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Raw-space bounds of what the robot executes: `ActionSpec.postprocess` computes
    clip(raw * scale + offset, lower, upper), which equals (clip(raw, lo, hi)) * scale + offset
    with lo, hi = (limits - offset) / scale (swapped where scale < 0). None: no spec, no limits."""
    if action_spec is None:
        return None
    scale = np.broadcast_to(np.asarray(action_spec.scale, np.float64), (action_spec.size,))
    offset = np.broadcast_to(np.asarray(action_spec.offset, np.float64), (action_spec.size,))
    lower, upper = action_spec.lower_array, action_spec.upper_array
    with np.errstate(divide="ignore", invalid="ignore"):
        a, b = (lower - offset) / scale, (upper - offset) / scale
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    lo[~np.isfinite(lo) | (scale == 0)] = -np.inf   # a zero scale executes the offset whatever
    hi[~np.isfinite(hi) | (scale == 0)] = np.inf    # the raw value: nothing to bound
    if np.isinf(lo).all() and np.isinf(hi).all():
        return None
    return torch.as_tensor(lo, dtype=torch.float32), torch.as_tensor(hi, dtype=torch.float32)


def executed_targets(out: PolicyOutput, bounds) -> PolicyOutput:
    """The teacher's Gaussian centred on the action the robot would execute: its mean clipped to
    the raw-space action limits (`executed_bounds`). A PPO teacher's mean often lies far outside
    the limits (the clip makes those values equivalent for the robot); regressing onto the
    unclipped mean spends a small student's capacity on differences nobody executes."""
    if bounds is None or out.mean.numel() == 0:
        return out
    lo, hi = bounds
    return out._replace(mean=torch.maximum(torch.minimum(out.mean, hi), lo))


@torch.no_grad()
def student_actions(student: BasePolicy, normalizer: EmpiricalNormalizer, obs: np.ndarray,
                    batch_size: int = 8192) -> np.ndarray:
    """Deterministic raw actions (what the exported graph computes) for rows of raw obs.
    Recurrent students run each row from a zero state (use `episode_actions` for rollouts)."""
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
    was_training = student.training
    student.eval()
    try:
        out = [student.deterministic(student(normalizer(x[i:i + batch_size])))
               for i in range(0, x.shape[0], batch_size)]
    finally:
        student.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, student.config.action_size), np.float32)


def action_errors(predicted: np.ndarray, target: np.ndarray) -> dict:
    """MSE, MAE and per-joint MAE / RMSE between two action arrays."""
    if predicted.shape != target.shape:
        raise ValueError(f"action_errors: {predicted.shape} vs {target.shape}")
    if not len(target):
        return {"mse": float("nan"), "mae": float("nan"), "per_joint_mae": [], "per_joint_rmse": []}
    diff = predicted.astype(np.float64) - target.astype(np.float64)
    return {"mse": float(np.mean(diff ** 2)), "mae": float(np.mean(np.abs(diff))),
            "per_joint_mae": np.mean(np.abs(diff), axis=0).tolist(),
            "per_joint_rmse": np.sqrt(np.mean(diff ** 2, axis=0)).tolist()}


# ---------------------------------------------------------------------------------------------
# fit

def fit(teacher: TeacherPolicy, teacher_normalizer: EmpiricalNormalizer | None,
        dataset: DistillDataset, config: TrainConfig, student: BasePolicy | None = None,
        progress: bool = True, on_epoch: Callable[[dict], Any] | None = None,
        val_dataset: DistillDataset | None = None,
        student_normalizer: EmpiricalNormalizer | None = None,
        action_spec=None, checkpoints=None) -> TrainResult:
    """Distill `teacher` into a student on `dataset` (see the module docstring).

    `student` (optional) continues training an existing network (progressive distillation,
    DAgger rounds); its `student_normalizer` is kept when given, else one is fitted.
    `val_dataset` overrides the episode split. `on_epoch(record)` is called after every epoch
    on rank 0; returning False stops training. The teacher's parameters are never changed.
    `action_spec` (the student's `core.spec.ActionSpec`): the targets are what the robot
    executes: the loss is limit-aware (`losses.limit_aware_error`: where the teacher's mean is
    beyond a limit, any student output at or beyond it is exact) and the KL's teacher Gaussian is
    centred on the clipped mean; without it the raw mean is the target (no limits known).
    `checkpoints` (`checkpoint.CheckpointOptions`): write checkpoints every N epochs and/or
    resume from one.
    """
    from .runner import DistillRunner  # the runner builds on this module's types
    return DistillRunner(teacher, teacher_normalizer, dataset, config, student, progress,
                         on_epoch, val_dataset, student_normalizer, action_spec,
                         checkpoints).learn()


@torch.no_grad()
def episode_actions(student: BasePolicy, normalizer: EmpiricalNormalizer,
                    dataset: DistillDataset) -> np.ndarray:
    """Deterministic actions for every row, recurrent students carrying their state through
    each episode as on the robot (non-recurrent: same as `student_actions`)."""
    if not student.is_recurrent:
        return student_actions(student, normalizer, dataset.student_obs)
    out = np.zeros((len(dataset), student.config.action_size), np.float32)
    boundaries = np.flatnonzero(np.diff(dataset.episode_id)) + 1
    obs = torch.as_tensor(dataset.student_obs)
    for lo, hi in zip(np.r_[0, boundaries], np.r_[boundaries, len(dataset)], strict=True):
        seq = normalizer(obs[lo:hi]).unsqueeze(0)
        res = student(seq)
        out[lo:hi] = student.deterministic(res).squeeze(0).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# export

def export_student(result: TrainResult, student_spec, path, provenance: dict | None = None,
                   export_config=None, sample_obs: np.ndarray | None = None):
    """ONNX policy file for the student node: normalization in the graph, the student's spec
    in the metadata, provenance (teacher hash, dataset, losses, metrics) merged with the
    training figures; parity vs ONNX Runtime <= 1e-5 or nothing is written. Returns the
    ParityReport."""
    from policy_distill_ros.core.policy_file import PolicyMetadata

    from .export import ExportConfig, export_policy
    if student_spec.observation.size != result.student_normalizer.size:
        raise TrainingError(f"student spec observation size {student_spec.observation.size} != "
                            f"trained student's {result.student_normalizer.size}")
    student_spec.observation.require_no_privileged()
    if sample_obs is None:
        sample_obs = result.val_dataset.student_obs[:256] if result.val_dataset is not None \
            else None
    if sample_obs is None or len(sample_obs) < 2:
        sample_obs = np.vstack([result.student_normalizer.mean.numpy()[None, :]] * 2)
    prov = dict(provenance or {})
    prov.setdefault("losses", result.config.loss.to_dict())
    metrics = dict(prov.get("metrics") or {})
    metrics.update(json_metrics(result.metrics))
    prov["metrics"] = metrics
    prov.setdefault("student", result.student.config.to_dict())
    prov.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta = PolicyMetadata.from_spec(student_spec, provenance=prov)
    return export_policy(result.student, result.student_normalizer, meta, path, sample_obs,
                         export_config or ExportConfig())


def json_metrics(metrics: dict) -> dict:
    """The scalar training figures (per-joint lists kept short enough for metadata)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float, str)) or value is None:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if isinstance(v, (int, float))}
    return out
