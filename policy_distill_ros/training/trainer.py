"""The distillation loop: a frozen teacher, a dataset of recorded states, a small student.

`fit(teacher, teacher_normalizer, dataset, config)`:

1. splits the dataset by whole episodes (train / validation);
2. re-evaluates the teacher once on the recorded *teacher* observations (no_grad batches; its
   Gaussian mean, log std and the hidden features the loss matches), teacher frozen throughout;
3. fits the student's in-graph normalizer on the training *student* observations (frozen after);
4. trains the student (and the feature projections) with `losses.DistillationLoss`, AdamW,
   optional cosine schedule and gradient clipping, keeping the best-validation parameters;
5. returns a `TrainResult` whose student + normalizer go to `export_student` (ONNX, parity
   checked, metadata from the spec, provenance).

Data parallel: when `torch.distributed` is initialised (torchrun, see `training/ddp.py`) the
same function trains with DistributedDataParallel: a DistributedSampler shards each epoch, the
gradients are averaged, every rank ends with identical parameters and only rank 0 reports.

Recurrent students (`kind: gru`) train on windows of `sequence_length` consecutive steps of one
episode, the hidden state starting at zero at each window.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys

from .dataset import DistillDataset
from .losses import DistillationLoss, LossConfig
from .networks import BasePolicy, PolicyOutput, StudentConfig, TeacherPolicy, build_student, \
    count_parameters
from .normalizer import EmpiricalNormalizer, NormalizerConfig

__all__ = ["TrainConfig", "TrainResult", "fit", "teacher_outputs", "student_actions",
           "action_errors", "export_student", "TrainingError", "executed_bounds",
           "executed_targets"]

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
            raise ValueError(f"{owner}.student must be a StudentConfig, got {type(self.student).__name__}")
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
            raise ValueError(f"{owner}.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.device not in DEVICES:
            raise ValueError(f"{owner}.device must be one of {DEVICES}, got {self.device!r}")
        if not isinstance(self.restore_best, bool):
            raise ValueError(f"{owner}.restore_best must be true or false, got {self.restore_best!r}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["student"] = self.student.to_dict()
        d["loss"] = self.loss.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, student_spec=None) -> "TrainConfig":
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


# ---------------------------------------------------------------------------------------------
# helpers

def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("TrainConfig.device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def _dist():
    """(world_size, rank) of an initialised process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


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


@torch.no_grad()
def _standardize_features(train: PolicyOutput, val: PolicyOutput,
                          eps: float = 1e-3) -> tuple[PolicyOutput, PolicyOutput]:
    """Teacher features per unit, standardized with the training rows' statistics: the matching
    loss then weighs every unit alike whatever its scale (raw ELU units of a 512-wide layer span
    orders of magnitude, and a few large or constant ones dominated the L2 term), and its value
    is comparable to the BC term's across teachers."""
    if not train.features:
        return train, val
    stats = {k: (f.mean(0), f.std(0) + eps) for k, f in train.features.items()}
    scale = lambda out: out._replace(features={   # noqa: E731
        k: (f - stats[k][0]) / stats[k][1] for k, f in out.features.items()})
    return scale(train), scale(val) if val.features else val


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


class _TrainModule(nn.Module):
    """Student + loss (projections) in one module, so DDP averages every trained gradient."""

    def __init__(self, student: BasePolicy, normalizer: EmpiricalNormalizer,
                 loss: DistillationLoss) -> None:
        super().__init__()
        self.student = student
        self.normalizer = normalizer
        self.loss = loss

    def forward(self, obs: torch.Tensor, teacher: PolicyOutput, episode_starts=None):
        x = self.normalizer(obs)
        if self.student.is_recurrent:
            out = self.student(x, return_features=self.loss.needs_features,
                               episode_starts=episode_starts)
        else:
            out = self.student(x, return_features=self.loss.needs_features)
        return self.loss(out, teacher)


def _windows(episode_id: np.ndarray, length: int) -> np.ndarray:
    """Start rows of non-overlapping windows of `length` consecutive rows of one episode (plus
    the last full window of each episode, so every row is covered); episodes shorter than the
    window give one window from their start (padded by repeating the last row)."""
    starts = []
    boundaries = np.flatnonzero(np.diff(episode_id)) + 1
    for lo, hi in zip(np.r_[0, boundaries], np.r_[boundaries, len(episode_id)]):
        if hi - lo <= length:
            starts.append(lo)
            continue
        s = list(range(lo, hi - length + 1, length))
        if s[-1] != hi - length:
            s.append(hi - length)
        starts.extend(s)
    return np.asarray(starts, dtype=np.int64)


def _window_rows(starts: np.ndarray, length: int, episode_id: np.ndarray) -> np.ndarray:
    """[W, length] row indices; a window running past its episode repeats the last row."""
    rows = starts[:, None] + np.arange(length)[None, :]
    rows = np.minimum(rows, len(episode_id) - 1)
    same = episode_id[rows] == episode_id[starts][:, None]
    last = np.maximum.accumulate(np.where(same, rows, 0), axis=1)
    return np.where(same, rows, last)


class _Batches:
    """Tensors on the device and the rows (or windows) each step draws."""

    def __init__(self, dataset: DistillDataset, teacher_out: PolicyOutput, device: torch.device,
                 recurrent: bool, sequence_length: int) -> None:
        self.obs = torch.as_tensor(dataset.student_obs, device=device)
        self.teacher = PolicyOutput(teacher_out.mean.to(device), teacher_out.log_std.to(device),
                                    {k: v.to(device) for k, v in teacher_out.features.items()})
        self.recurrent = recurrent
        if recurrent:
            starts = _windows(dataset.episode_id, sequence_length)
            self.units = torch.as_tensor(_window_rows(starts, sequence_length,
                                                      dataset.episode_id), device=device)
        else:
            self.units = None
        self.count = len(self.units) if recurrent else len(dataset)

    def get(self, index: torch.Tensor):
        rows = self.units[index] if self.recurrent else index
        t = self.teacher
        teacher = PolicyOutput(t.mean[rows], t.log_std[rows], {k: v[rows] for k, v in t.features.items()})
        return self.obs[rows], teacher, rows.shape[0] if self.recurrent else len(rows)


def _iterate(count: int, batch_size: int, sampler: DistributedSampler | None, epoch: int,
             generator: torch.Generator) -> list[torch.Tensor]:
    if sampler is not None:
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(iter(sampler)), dtype=torch.long)
    else:
        order = torch.randperm(count, generator=generator)
    return list(torch.split(order, batch_size))


def _freeze_unused(module: _TrainModule, batches: "_Batches", n: int) -> list[nn.Parameter]:
    """Parameters no loss term reaches (e.g. log_std when only BC is on) are frozen for the
    run: DDP requires every trained parameter to get a gradient. Returns them (to unfreeze)."""
    module.zero_grad(set_to_none=True)
    obs, teacher, _ = batches.get(torch.arange(n, device=batches.obs.device))
    total, _ = module(obs, teacher)
    total.backward()
    unused = [p for p in module.parameters() if p.requires_grad and p.grad is None]
    module.zero_grad(set_to_none=True)
    for p in unused:
        p.requires_grad_(False)
    return unused


@torch.no_grad()
def _evaluate(module: _TrainModule, batches: _Batches, batch_size: int) -> dict[str, float]:
    module.eval()
    totals: dict[str, float] = {}
    seen = 0
    try:
        for index in torch.split(torch.arange(batches.count), batch_size):
            obs, teacher, n = batches.get(index.to(batches.obs.device))
            _, terms = module(obs, teacher)
            for name, value in terms.items():
                totals[name] = totals.get(name, 0.0) + float(value) * n
            seen += n
    finally:
        module.train()
    return {k: v / seen for k, v in totals.items()} if seen else {}


def _all_reduce_mean(values: dict[str, float], world_size: int, device) -> dict[str, float]:
    if world_size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / world_size for k, v in zip(keys, t.tolist())}


# ---------------------------------------------------------------------------------------------
# fit

def fit(teacher: TeacherPolicy, teacher_normalizer: EmpiricalNormalizer | None,
        dataset: DistillDataset, config: TrainConfig, student: BasePolicy | None = None,
        progress: bool = True, on_epoch: Callable[[dict], Any] | None = None,
        val_dataset: DistillDataset | None = None,
        student_normalizer: EmpiricalNormalizer | None = None,
        action_spec=None) -> TrainResult:
    """Distill `teacher` into a student on `dataset` (see the module docstring).

    `student` (optional) continues training an existing network (progressive distillation,
    DAgger rounds); its `student_normalizer` is kept when given, else one is fitted.
    `val_dataset` overrides the episode split. `on_epoch(record)` is called after every epoch
    on rank 0; returning False stops training. The teacher's parameters are never changed.
    `action_spec` (the student's `core.spec.ActionSpec`): the targets are what the robot
    executes: the loss is limit-aware (`losses.limit_aware_error`: where the teacher's mean is
    beyond a limit, any student output at or beyond it is exact) and the KL's teacher Gaussian is
    centred on the clipped mean; without it the raw mean is the target (no limits known).
    """
    if not isinstance(dataset, DistillDataset):
        raise TypeError(f"fit: dataset must be a DistillDataset, got {type(dataset).__name__}")
    scfg = config.student
    if student is not None:
        scfg = student.config
    if dataset.student_obs.shape[1] != scfg.obs_size or dataset.action_size != scfg.action_size:
        raise TrainingError(
            f"dataset student obs/actions are {dataset.student_obs.shape[1]}/"
            f"{dataset.action_size} wide; the student config expects {scfg.obs_size}/"
            f"{scfg.action_size} (was the dataset built with another student spec?)")
    if teacher.config.action_size != scfg.action_size:
        raise TrainingError(f"teacher has {teacher.config.action_size} actions, student "
                            f"{scfg.action_size}")
    world_size, rank = _dist()
    device = _device(config.device)
    if world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    if val_dataset is None:
        train_set, val_set = dataset.split_by_episode(config.val_fraction, config.seed)
    else:
        train_set, val_set = dataset, val_dataset
    if not len(train_set):
        raise TrainingError("no training samples")

    teacher_before = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    layers = tuple(dict.fromkeys(t for t, _ in config.loss.feature_pairs)) \
        if config.loss.feature_weight > 0 else ()
    started = time.perf_counter()
    t_train = teacher_outputs(teacher, teacher_normalizer, train_set.teacher_obs, layers,
                              config.teacher_batch_size)
    t_val = teacher_outputs(teacher, teacher_normalizer, val_set.teacher_obs, layers,
                            config.teacher_batch_size)
    t_train, t_val = _standardize_features(t_train, t_val)
    # a squashed (SAC) teacher's mean is pre-tanh: its targets stay in that space
    bounds = None if teacher.squash_output else executed_bounds(action_spec)
    teacher_pass_s = time.perf_counter() - started

    if student is None:
        student = build_student(scfg)
    if student_normalizer is None:
        student_normalizer = EmpiricalNormalizer(NormalizerConfig(
            size=scfg.obs_size, eps=config.normalizer_eps, clip=config.normalizer_clip))
        student_normalizer.update(torch.as_tensor(train_set.student_obs))
    student_normalizer.freeze()
    loss = DistillationLoss(config.loss, teacher.feature_sizes(), student.feature_sizes(),
                            action_bounds=bounds) if config.loss.feature_weight > 0 \
        else DistillationLoss(config.loss, action_bounds=bounds)
    module = _TrainModule(student, student_normalizer, loss).to(device)
    module.train()
    trained: nn.Module = module
    sampler = None
    recurrent = student.is_recurrent
    train_batches = _Batches(train_set, t_train, device, recurrent, config.sequence_length)
    val_batches = _Batches(val_set, t_val, device, recurrent, config.sequence_length)
    batch_size = max(1, config.batch_size // config.sequence_length) if recurrent \
        else config.batch_size
    unused = _freeze_unused(module, train_batches, min(batch_size, train_batches.count))
    if world_size > 1:
        trained = nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
        sampler = DistributedSampler(range(train_batches.count), num_replicas=world_size,
                                     rank=rank, shuffle=True, seed=config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs, eta_min=config.lr * config.min_lr_ratio) \
        if config.lr_schedule == "cosine" else None
    generator = torch.Generator().manual_seed(config.seed)

    history: list[dict] = []
    best_val, best_epoch, best_state = math.inf, -1, None
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.epochs, desc="distill", unit="epoch", dynamic_ncols=True)
    samples_done, train_time_s = 0, 0.0
    try:
        for epoch in range(config.epochs):
            t0 = time.perf_counter()
            sums: dict[str, float] = {}
            seen = 0
            for index in _iterate(train_batches.count, batch_size, sampler, epoch, generator):
                obs, teacher_batch, n = train_batches.get(index.to(device))
                total, terms = trained(obs, teacher_batch)
                if not torch.isfinite(total):
                    raise TrainingError(f"loss became {float(total)} at epoch {epoch + 1}: "
                                        f"lower lr ({config.lr:g}) or enable grad_clip")
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                if config.grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
                seen += n
            epoch_s = time.perf_counter() - t0
            train_time_s += epoch_s
            steps_per_sample = config.sequence_length if recurrent else 1
            samples_done += seen * steps_per_sample
            lr_now = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            train_terms = _all_reduce_mean({k: v / max(seen, 1) for k, v in sums.items()},
                                           world_size, device)
            val_terms = _evaluate(module, val_batches, 4096) if val_batches.count else {}
            record = {"epoch": epoch + 1, "lr": lr_now, "time_s": epoch_s,
                      "train": train_terms, "val": val_terms}
            history.append(record)
            monitored = val_terms.get("total", train_terms.get("total", math.inf))
            if monitored < best_val:
                best_val, best_epoch = monitored, epoch + 1
                if config.restore_best:
                    best_state = copy.deepcopy(module.state_dict())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{train_terms.get('total', float('nan')):.4g}",
                                val=f"{val_terms.get('total', float('nan')):.4g}")
            stop = False
            if on_epoch is not None and rank == 0:
                stop = on_epoch(record) is False
            if config.early_stop_patience and epoch + 1 - best_epoch >= config.early_stop_patience:
                LOG.info("early stop at epoch %d (best %d)", epoch + 1, best_epoch)
                stop = True
            if world_size > 1:  # every rank stops together
                flag = torch.tensor([1.0 if stop else 0.0], device=device)
                torch.distributed.all_reduce(flag)
                stop = bool(flag.item() > 0)
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
    for p in unused:
        p.requires_grad_(True)
    if best_state is not None:
        module.load_state_dict(best_state)
    module.to("cpu").eval()
    student.eval()

    for name, before in teacher_before.items():   # the teacher is frozen: check, never assume
        if not torch.equal(before, teacher.state_dict()[name]):
            raise TrainingError(f"teacher parameter {name} changed during training")

    if len(val_set):
        metrics = _final_metrics(teacher, student, student_normalizer, val_set, t_val, "val",
                                 bounds)
    else:
        metrics = _final_metrics(teacher, student, student_normalizer, train_set, t_train,
                                 "train", bounds)
    metrics.update({
        "epochs_run": len(history), "best_epoch": best_epoch,
        "best_val_loss": best_val if math.isfinite(best_val) else None,
        "train_samples": len(train_set), "val_samples": len(val_set),
        "train_episodes": int(len(train_set.episodes)), "val_episodes": int(len(val_set.episodes)),
        "teacher_pass_s": teacher_pass_s, "train_time_s": train_time_s,
        "epoch_time_s": train_time_s / max(len(history), 1),
        "samples_per_s": samples_done / train_time_s if train_time_s > 0 else None,
        "samples_per_s_all_ranks": samples_done * world_size / train_time_s
        if train_time_s > 0 else None,
        "world_size": world_size, "device": str(device),
        "targets": "executed (limit-aware: teacher mean clipped to the action limits)"
        if bounds is not None else "teacher mean (no action limits given)",
    })
    return TrainResult(student, student_normalizer, history, metrics, config, loss.cpu(),
                       val_set if len(val_set) else None)


def _final_metrics(teacher, student, normalizer, evaluated: DistillDataset, t_out: PolicyOutput,
                   on: str, bounds=None) -> dict:
    """Action errors of the student vs the teacher's deterministic action and vs the recorded
    action, on the validation set (the training set when there is none); with action limits
    both sides are what the robot executes (clipped)."""
    with torch.no_grad():
        teacher_action = teacher.deterministic(executed_targets(t_out, bounds)).numpy()
    predicted = episode_actions(student, normalizer, evaluated)
    if bounds is not None:
        predicted = np.clip(predicted, bounds[0].numpy(), bounds[1].numpy())
    return {"evaluated_on": on,
            "student_params": count_parameters(student),
            "teacher_params": count_parameters(teacher),
            "val_action_error_vs_teacher": action_errors(predicted, teacher_action),
            "val_action_error_vs_recorded": action_errors(predicted, evaluated.actions),
            "val_teacher_error_vs_recorded": action_errors(teacher_action, evaluated.actions)}


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
    for lo, hi in zip(np.r_[0, boundaries], np.r_[boundaries, len(dataset)]):
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
    metrics.update(_json_metrics(result.metrics))
    prov["metrics"] = metrics
    prov.setdefault("student", result.student.config.to_dict())
    prov.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta = PolicyMetadata.from_spec(student_spec, provenance=prov)
    return export_policy(result.student, result.student_normalizer, meta, path, sample_obs,
                         export_config or ExportConfig())


def _json_metrics(metrics: dict) -> dict:
    """The scalar training figures (per-joint lists kept short enough for metadata)."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float, str)) or value is None:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if isinstance(v, (int, float))}
    return out
