"""The distillation algorithm: teacher targets, student, loss, optimizer, one epoch of updates.

`Distillation` owns what the math needs and nothing about the loop (the runner, `runner.py`,
owns epochs, logging, best-epoch tracking and checkpoints), the split rsl_rl makes between an
algorithm (`update`, `save`/`load`) and its runner. Built once per run, it re-evaluates the frozen
teacher on the recorded teacher observations (no_grad batches: its Gaussian mean, log std and the
hidden features the loss matches), fits the student's in-graph normalizer on the training student
observations (frozen after) and trains the student and the feature projections with
`losses.DistillationLoss`, AdamW, an optional cosine schedule and gradient clipping.

Data parallel: when `torch.distributed` is initialised (torchrun, see `ddp.py`) the module is
wrapped in DistributedDataParallel and a DistributedSampler shards each epoch; gradients are
averaged, so every rank holds identical parameters.
"""
from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from .dataset import DistillDataset
from .losses import DistillationLoss
from .networks import BasePolicy, PolicyOutput, TeacherPolicy, build_student
from .normalizer import EmpiricalNormalizer, NormalizerConfig
from .trainer import TrainConfig, TrainingError, executed_bounds, teacher_outputs

__all__ = ["Distillation", "distributed_world", "training_device"]

EVAL_BATCH = 4096


def training_device(name: str) -> torch.device:
    """The torch device of `TrainConfig.device` (under DDP on CUDA: this rank's GPU)."""
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("TrainConfig.device is 'cuda' but no CUDA device is available")
    else:
        device = torch.device(name)
    if distributed_world()[0] > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def distributed_world() -> tuple[int, int]:
    """(world_size, rank) of an initialised process group, else (1, 0)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


FeatureStats = dict[str, tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def _standardize_features(train: PolicyOutput, val: PolicyOutput, eps: float = 1e-3
                          ) -> tuple[PolicyOutput, PolicyOutput, FeatureStats]:
    """Teacher features per unit, standardized with the training rows' statistics: the matching
    loss then weighs every unit alike whatever its scale (raw ELU units of a 512-wide layer span
    orders of magnitude, and a few large or constant ones dominated the L2 term), and its value
    is comparable to the BC term's across teachers. Returns the statistics too (checkpoints)."""
    if not train.features:
        return train, val, {}
    stats = {k: (f.mean(0), f.std(0) + eps) for k, f in train.features.items()}

    def scale(out: PolicyOutput) -> PolicyOutput:
        return out._replace(features={k: (f - stats[k][0]) / stats[k][1]
                                      for k, f in out.features.items()})
    return scale(train), scale(val) if val.features else val, stats


class TrainModule(nn.Module):
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
    for lo, hi in zip(np.r_[0, boundaries], np.r_[boundaries, len(episode_id)], strict=True):
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
        teacher = PolicyOutput(t.mean[rows], t.log_std[rows],
                               {k: v[rows] for k, v in t.features.items()})
        return self.obs[rows], teacher, rows.shape[0] if self.recurrent else len(rows)


def _iterate(count: int, batch_size: int, sampler: DistributedSampler | None, epoch: int,
             generator: torch.Generator) -> list[torch.Tensor]:
    if sampler is not None:
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(iter(sampler)), dtype=torch.long)
    else:
        order = torch.randperm(count, generator=generator)
    return list(torch.split(order, batch_size))


def _freeze_unused(module: TrainModule, batches: _Batches, n: int) -> list[nn.Parameter]:
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
def _evaluate(module: TrainModule, batches: _Batches, batch_size: int) -> dict[str, float]:
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
    return {k: float(v) / world_size for k, v in zip(keys, t.tolist(), strict=True)}



class Distillation:
    """Teacher targets, student, loss and optimizer of one run; `update` trains one epoch.

    `student` / `student_normalizer` continue an existing network (progressive distillation,
    DAgger rounds); otherwise a student is built from `config.student` and its normalizer fitted
    on `train_set`. `action_spec` makes the targets the executed (clipped) actions."""

    def __init__(self, teacher: TeacherPolicy, teacher_normalizer: EmpiricalNormalizer | None,
                 train_set: DistillDataset, val_set: DistillDataset, config: TrainConfig,
                 device: torch.device, student: BasePolicy | None = None,
                 student_normalizer: EmpiricalNormalizer | None = None, action_spec=None) -> None:
        self.config = config
        self.device = device
        self.world_size, self.rank = distributed_world()
        layers = tuple(dict.fromkeys(t for t, _ in config.loss.feature_pairs)) \
            if config.loss.feature_weight > 0 else ()
        started = time.perf_counter()
        t_train = teacher_outputs(teacher, teacher_normalizer, train_set.teacher_obs, layers,
                                  config.teacher_batch_size)
        t_val = teacher_outputs(teacher, teacher_normalizer, val_set.teacher_obs, layers,
                                config.teacher_batch_size)
        self.teacher_train, self.teacher_val, self.feature_stats = \
            _standardize_features(t_train, t_val)
        # a squashed (SAC) teacher's mean is pre-tanh: its targets stay in that space
        self.bounds = None if teacher.squash_output else executed_bounds(action_spec)
        self.teacher_pass_s = time.perf_counter() - started

        self.student = student if student is not None else build_student(config.student)
        scfg = self.student.config
        if student_normalizer is None:
            student_normalizer = EmpiricalNormalizer(NormalizerConfig(
                size=scfg.obs_size, eps=config.normalizer_eps, clip=config.normalizer_clip))
            student_normalizer.update(torch.as_tensor(train_set.student_obs))
        student_normalizer.freeze()
        self.student_normalizer = student_normalizer
        self.loss = DistillationLoss(config.loss, teacher.feature_sizes(),
                                     self.student.feature_sizes(), action_bounds=self.bounds) \
            if config.loss.feature_weight > 0 \
            else DistillationLoss(config.loss, action_bounds=self.bounds)
        self.module = TrainModule(self.student, student_normalizer, self.loss).to(device)
        self.module.train()
        self.recurrent = self.student.is_recurrent
        self.train_batches = _Batches(train_set, self.teacher_train, device, self.recurrent,
                                      config.sequence_length)
        self.val_batches = _Batches(val_set, self.teacher_val, device, self.recurrent,
                                    config.sequence_length)
        self.batch_size = max(1, config.batch_size // config.sequence_length) \
            if self.recurrent else config.batch_size
        self._unused = _freeze_unused(self.module, self.train_batches,
                                      min(self.batch_size, self.train_batches.count))
        self._trained: nn.Module = self.module
        self._sampler = None
        if self.world_size > 1:
            self._trained = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[device.index] if device.type == "cuda" else None)
            self._sampler = DistributedSampler(range(self.train_batches.count),
                                               num_replicas=self.world_size, rank=self.rank,
                                               shuffle=True, seed=config.seed)
        self._params = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._params, lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=config.epochs, eta_min=config.lr * config.min_lr_ratio) \
            if config.lr_schedule == "cosine" else None
        self.generator = torch.Generator().manual_seed(config.seed)

    def update(self, epoch: int) -> tuple[dict[str, float], int, float]:
        """One epoch (0-based `epoch`) of minibatch updates. Returns the mean loss terms (over
        all ranks), the time steps this rank trained on, and the learning rate used."""
        sums: dict[str, float] = {}
        seen = 0
        for index in _iterate(self.train_batches.count, self.batch_size, self._sampler, epoch,
                              self.generator):
            obs, teacher_batch, n = self.train_batches.get(index.to(self.device))
            total, terms = self._trained(obs, teacher_batch)
            if not torch.isfinite(total):
                raise TrainingError(f"loss became {float(total)} at epoch {epoch + 1}: lower lr "
                                    f"({self.config.lr:g}) or enable grad_clip")
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if self.config.grad_clip is not None:
                nn.utils.clip_grad_norm_(self._params, self.config.grad_clip)
            self.optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
            seen += n
        lr = self.optimizer.param_groups[0]["lr"]
        if self.scheduler is not None:
            self.scheduler.step()
        means = _all_reduce_mean({k: v / max(seen, 1) for k, v in sums.items()},
                                 self.world_size, self.device)
        steps = seen * (self.config.sequence_length if self.recurrent else 1)
        return means, steps, lr

    def evaluate(self) -> dict[str, float]:
        """Mean loss terms on the validation rows ({} without any)."""
        return _evaluate(self.module, self.val_batches, EVAL_BATCH) \
            if self.val_batches.count else {}

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A copy of the trained parameters (student, normalizer, projections)."""
        return copy.deepcopy(self.module.state_dict())

    def finish(self, parameters: dict[str, torch.Tensor] | None = None) -> None:
        """End of training: load `parameters` (the best epoch's) if given, CPU, eval mode."""
        for p in self._unused:
            p.requires_grad_(True)
        if parameters is not None:
            self.module.load_state_dict(parameters)
        self.module.to("cpu").eval()
        self.student.eval()

    def state_dict(self) -> dict:
        """What resuming needs besides the data: parameters, optimizer, schedule, sampler
        generator and the teacher-feature statistics the targets were standardized with."""
        return {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "generator": self.generator.get_state(),
                "feature_stats": {k: [m, s] for k, (m, s) in self.feature_stats.items()}}

    def load_state_dict(self, state: dict, where: str) -> None:
        """Continue from `state_dict()`; `where` names the checkpoint in errors."""
        stats = state["feature_stats"]
        if sorted(stats) != sorted(self.feature_stats) or not all(
                torch.allclose(stats[k][i], self.feature_stats[k][i], rtol=1e-6, atol=1e-7)
                for k in stats for i in (0, 1)):
            raise TrainingError(f"{where}: cannot resume: the teacher-feature statistics differ "
                                f"from this run's (another teacher or dataset)")
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
