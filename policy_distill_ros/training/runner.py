"""The distillation runner: the epoch loop around `Distillation`, logging, checkpoints, resume.

`DistillRunner(...).learn()` is what `trainer.fit` runs: it splits the dataset by whole episodes,
builds the algorithm, and per epoch calls `update` and `evaluate`, records the history, keeps the
best-validation parameters, stops early or on request, and every `checkpoint_every` epochs (and
at its last epoch) writes a checkpoint (`checkpoint.py`) that `resume` continues bit-for-bit on
the same process count. At the end it checks the teacher is unchanged and measures the student
against the teacher on the validation episodes. Under torch.distributed every rank runs the same
loop; rank 0 alone reports and writes checkpoints, every rank reads the one it resumes from.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import (
    CheckpointError,
    CheckpointOptions,
    checkpoint_path,
    dataset_digest,
    identity_difference,
    load_checkpoint,
    resolve_resume,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .dataset import DistillDataset
from .distillation import Distillation, distributed_world, training_device
from .networks import BasePolicy, PolicyOutput, TeacherPolicy, count_parameters
from .normalizer import EmpiricalNormalizer
from .teacher_io import teacher_hash
from .trainer import (
    TrainConfig,
    TrainingError,
    TrainResult,
    action_errors,
    episode_actions,
    executed_targets,
)

__all__ = ["DistillRunner"]

LOG = logging.getLogger(__name__)


class DistillRunner:
    """One training run: see the module docstring; the arguments are `trainer.fit`'s."""

    def __init__(self, teacher: TeacherPolicy, teacher_normalizer: EmpiricalNormalizer | None,
                 dataset: DistillDataset, config: TrainConfig, student: BasePolicy | None = None,
                 progress: bool = True, on_epoch: Callable[[dict], Any] | None = None,
                 val_dataset: DistillDataset | None = None,
                 student_normalizer: EmpiricalNormalizer | None = None, action_spec=None,
                 checkpoints: CheckpointOptions | None = None) -> None:
        if not isinstance(dataset, DistillDataset):
            raise TypeError(f"fit: dataset must be a DistillDataset, got {type(dataset).__name__}")
        scfg = student.config if student is not None else config.student
        if dataset.student_obs.shape[1] != scfg.obs_size or \
                dataset.action_size != scfg.action_size:
            raise TrainingError(
                f"dataset student obs/actions are {dataset.student_obs.shape[1]}/"
                f"{dataset.action_size} wide; the student config expects {scfg.obs_size}/"
                f"{scfg.action_size} (was the dataset built with another student spec?)")
        if teacher.config.action_size != scfg.action_size:
            raise TrainingError(f"teacher has {teacher.config.action_size} actions, student "
                                f"{scfg.action_size}")
        self.checkpoints = checkpoints or CheckpointOptions()
        resume = resolve_resume(self.checkpoints.resume) \
            if self.checkpoints.resume is not None else None   # a wrong path fails before work
        self.config = config
        self.teacher, self.teacher_normalizer = teacher, teacher_normalizer
        self.progress, self.on_epoch = progress, on_epoch
        self.world_size, self.rank = distributed_world()
        self.device = training_device(config.device)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        if val_dataset is None:
            self.train_set, self.val_set = dataset.split_by_episode(config.val_fraction,
                                                                    config.seed)
        else:
            self.train_set, self.val_set = dataset, val_dataset
        if not len(self.train_set):
            raise TrainingError("no training samples")
        self._teacher_before = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
        self.alg = Distillation(teacher, teacher_normalizer, self.train_set, self.val_set, config,
                                self.device, student, student_normalizer, action_spec)
        self.history: list[dict] = []
        self.epoch = 0                      # epochs completed
        self.early_stopped = False
        self.best_val, self.best_epoch = math.inf, -1
        self.best_state: dict | None = None
        self.samples_done, self.train_time_s = 0, 0.0
        self._identity: dict | None = None
        if resume is not None:
            self.load(resume)

    # -- checkpoints ------------------------------------------------------------------------

    def identity(self) -> dict:
        """What makes a checkpoint this run's: config, student, teacher, data, process count."""
        if self._identity is None:
            self._identity = {
                "train": self.config.to_dict(), "student": self.alg.student.config.to_dict(),
                "teacher_sha256": teacher_hash(self.teacher, self.teacher_normalizer),
                "data_sha256": dataset_digest(self.train_set, self.val_set),
                "world_size": self.world_size}
        return self._identity

    def save(self, path: Path) -> Path:
        """Write the run's state after `self.epoch` epochs (rank 0 only)."""
        return save_checkpoint(path, {
            "epoch": self.epoch, "early_stopped": self.early_stopped,
            "identity": self.identity(), "algorithm": self.alg.state_dict(),
            "best": {"val": self.best_val, "epoch": self.best_epoch, "state": self.best_state},
            "history": self.history, "samples_done": self.samples_done,
            "train_time_s": self.train_time_s, "rng": rng_state()})

    def load(self, path: Path) -> None:
        """Continue from the checkpoint at `path`; refused when it belongs to another run."""
        data = load_checkpoint(path)
        difference = identity_difference(data["identity"], self.identity())
        if difference is not None:
            raise CheckpointError(f"{path}: cannot resume: {difference}")
        self.alg.load_state_dict(data["algorithm"], str(path))
        self.epoch, self.early_stopped = int(data["epoch"]), bool(data["early_stopped"])
        best = data["best"]
        self.best_val, self.best_epoch, self.best_state = best["val"], best["epoch"], best["state"]
        self.history = list(data["history"])
        self.samples_done, self.train_time_s = data["samples_done"], data["train_time_s"]
        set_rng_state(data["rng"])
        LOG.info("resuming from %s after epoch %d of %d", path, self.epoch, self.config.epochs)

    def _checkpoint_due(self, stopping: bool) -> bool:
        every = self.checkpoints.every_epochs
        return bool(every) and self.rank == 0 and (
            self.epoch % every == 0 or stopping or self.epoch == self.config.epochs)

    # -- the loop ---------------------------------------------------------------------------

    def learn(self) -> TrainResult:
        """Train the remaining epochs, then finish (see the module docstring)."""
        config = self.config
        bar = None
        if self.progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=config.epochs, initial=self.epoch, desc="distill", unit="epoch",
                       dynamic_ncols=True)
        try:
            while self.epoch < config.epochs and not self.early_stopped:
                stop = self._one_epoch(bar)
                if self._checkpoint_due(stop):
                    self.save(checkpoint_path(self.checkpoints.directory, self.epoch))
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        return self._finish()

    def _one_epoch(self, bar) -> bool:
        """Train, evaluate and record one epoch; True when training should stop."""
        config = self.config
        t0 = time.perf_counter()
        train_terms, steps, lr = self.alg.update(self.epoch)
        epoch_s = time.perf_counter() - t0
        self.train_time_s += epoch_s
        self.samples_done += steps
        val_terms = self.alg.evaluate()
        self.epoch += 1
        record = {"epoch": self.epoch, "lr": lr, "time_s": epoch_s, "train": train_terms,
                  "val": val_terms}
        self.history.append(record)
        monitored = val_terms.get("total", train_terms.get("total", math.inf))
        if monitored < self.best_val:
            self.best_val, self.best_epoch = monitored, self.epoch
            if config.restore_best:
                self.best_state = self.alg.snapshot()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{train_terms.get('total', float('nan')):.4g}",
                            val=f"{val_terms.get('total', float('nan')):.4g}")
        stop = False
        if self.on_epoch is not None and self.rank == 0:
            stop = self.on_epoch(record) is False
        if config.early_stop_patience and \
                self.epoch - self.best_epoch >= config.early_stop_patience:
            LOG.info("early stop at epoch %d (best %d)", self.epoch, self.best_epoch)
            self.early_stopped = stop = True
        if self.world_size > 1:  # every rank stops together
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            torch.distributed.all_reduce(flag)
            stop = bool(flag.item() > 0)
        return stop

    def _finish(self) -> TrainResult:
        alg = self.alg
        alg.finish(self.best_state)
        for name, before in self._teacher_before.items():  # frozen: check, never assume
            if not torch.equal(before, self.teacher.state_dict()[name]):
                raise TrainingError(f"teacher parameter {name} changed during training")
        evaluated, targets, on = (self.val_set, alg.teacher_val, "val") if len(self.val_set) \
            else (self.train_set, alg.teacher_train, "train")
        metrics = _final_metrics(self.teacher, alg.student, alg.student_normalizer, evaluated,
                                 targets, on, alg.bounds)
        train_time_s = self.train_time_s
        metrics.update({
            "epochs_run": len(self.history), "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
            "train_samples": len(self.train_set), "val_samples": len(self.val_set),
            "train_episodes": int(len(self.train_set.episodes)),
            "val_episodes": int(len(self.val_set.episodes)),
            "teacher_pass_s": alg.teacher_pass_s, "train_time_s": train_time_s,
            "epoch_time_s": train_time_s / max(len(self.history), 1),
            "samples_per_s": self.samples_done / train_time_s if train_time_s > 0 else None,
            "samples_per_s_all_ranks": self.samples_done * self.world_size / train_time_s
            if train_time_s > 0 else None,
            "world_size": self.world_size, "device": str(self.device),
            "targets": "executed (limit-aware: teacher mean clipped to the action limits)"
            if alg.bounds is not None else "teacher mean (no action limits given)",
        })
        return TrainResult(alg.student, alg.student_normalizer, self.history, metrics,
                           self.config, alg.loss.cpu(),
                           self.val_set if len(self.val_set) else None)


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
