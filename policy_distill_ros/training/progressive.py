"""Progressive distillation: teacher -> medium -> ... -> small, each student the next teacher.

A large gap in capacity (and in inputs: the teacher reads privileged state, the students only
robot sensors) can be easier to cross in steps. Stage 1 distills the teacher into the first
(widest) student exactly as `trainer.fit` always does. From stage 2 on, the previous stage's
student is the teacher: wrapped by `StudentAsTeacher` (frozen, its normalizer inside) it gives
`trainer.fit` what a `TeacherPolicy` gives (`config.obs_size/action_size`, `forward(obs,
return_features)` -> Gaussian mean, log std and named features, `feature_sizes()`,
`deterministic()`), and it reads the *student* observations, so the stage's dataset is the same
rows with `teacher_obs = student_obs`.

Per stage (`StageRecord`): parameters, action error against its own teacher and against the
original teacher on the validation episodes, and (optionally) the closed-loop return on
held-out seeds.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policy_distill_ros.core.spec import PolicySpec
from policy_distill_ros.sim.config import SimConfig

from .dataset import DistillDataset
from .evaluation import evaluate_policy, held_out_seeds
from .losses import LossConfig
from .networks import BasePolicy, PolicyOutput, StudentConfig, count_parameters
from .normalizer import EmpiricalNormalizer
from .rollout import student_actor
from .trainer import (
    TrainConfig,
    TrainResult,
    action_errors,
    episode_actions,
    executed_bounds,
    fit,
    teacher_outputs,
)

__all__ = ["StudentAsTeacher", "ProgressiveConfig", "StageRecord", "ProgressiveResult",
           "run_progressive", "as_student_teacher_dataset"]

LOG = logging.getLogger(__name__)


class StudentAsTeacher(BasePolicy):
    """A trained (non-recurrent) student, frozen, with its normalizer folded in, usable wherever
    a `TeacherPolicy` is (pass `teacher_normalizer=None`: it takes raw student observations)."""

    def __init__(self, student: BasePolicy, normalizer: EmpiricalNormalizer) -> None:
        super().__init__()
        if getattr(student, "is_recurrent", False):
            raise ValueError("StudentAsTeacher: a recurrent student cannot label single rows "
                             "(its action depends on the episode so far); use an mlp, "
                             "history_mlp or tcn stage as teacher")
        if normalizer.size != student.config.obs_size:
            raise ValueError(f"StudentAsTeacher: normalizer size {normalizer.size} != student "
                             f"obs_size {student.config.obs_size}")
        self.student = student
        self.normalizer = normalizer
        self.config = student.config
        self.squash_output = student.squash_output
        self.requires_grad_(False)
        self.eval()

    def forward(self, obs: torch.Tensor, return_features: bool = False) -> PolicyOutput:
        return self.student(self.normalizer(obs), return_features=return_features)

    def feature_sizes(self) -> dict[str, int]:
        return self.student.feature_sizes()


def as_student_teacher_dataset(dataset: DistillDataset) -> DistillDataset:
    """The same rows, with the student observations also as teacher observations."""
    return DistillDataset(dataset.student_obs, dataset.student_obs, dataset.actions,
                          dataset.episode_id, dataset.episode_return, dataset.sources)


@dataclass
class ProgressiveConfig:
    """The chain: one student architecture per stage, widest first.

    `stages` entries are StudentConfig dicts (obs_size / action_size / history_length default
    to the student spec) or StudentConfigs; `losses` optionally gives one LossConfig (dict) per
    stage (feature pairs name layers of that stage's teacher and student), else the
    TrainConfig's loss is used for every stage (then without feature matching from stage 2 on,
    since its layer names refer to the original teacher).
    """

    stages: Sequence[Any]
    losses: Sequence[Any] | None = None
    eval_episodes: int = 0
    sim_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.stages, (str, bytes)) or not len(self.stages):
            raise ValueError("ProgressiveConfig.stages must list at least one student")
        if self.losses is not None and len(self.losses) != len(self.stages):
            raise ValueError(f"ProgressiveConfig.losses has {len(self.losses)} entries for "
                             f"{len(self.stages)} stages")
        if isinstance(self.eval_episodes, bool) or not isinstance(self.eval_episodes, int) \
                or self.eval_episodes < 0:
            raise ValueError(f"ProgressiveConfig.eval_episodes must be an integer >= 0, got "
                             f"{self.eval_episodes!r}")

    def student_configs(self, student_spec: PolicySpec) -> list[StudentConfig]:
        out = []
        for i, stage in enumerate(self.stages):
            if isinstance(stage, StudentConfig):
                out.append(stage)
                continue
            if not isinstance(stage, dict):
                raise ValueError(f"ProgressiveConfig.stages[{i}] must be a mapping, got {stage!r}")
            d = dict(stage)
            d.setdefault("obs_size", student_spec.observation.size)
            d.setdefault("action_size", student_spec.action.size)
            d.setdefault("history_length", student_spec.observation.history_length)
            try:
                out.append(StudentConfig.from_dict(d))
            except ValueError as exc:
                raise ValueError(f"ProgressiveConfig.stages[{i}]: {exc}") from None
        return out

    def loss_for(self, stage: int, base: LossConfig) -> LossConfig:
        if self.losses is not None:
            loss = self.losses[stage]
            return loss if isinstance(loss, LossConfig) else LossConfig.from_dict(dict(loss))
        if stage == 0 or base.feature_weight == 0:
            return base
        return dataclasses.replace(base, feature_weight=0.0, feature_pairs=())


@dataclass
class StageRecord:
    stage: int
    params: int
    teacher_params: int
    val_error_vs_own_teacher: float | None
    val_error_vs_original_teacher: float | None
    eval_mean_return: float | None = None
    eval_mean_forward_distance_m: float | None = None
    train_time_s: float = 0.0
    student: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ProgressiveResult:
    results: list[TrainResult]
    stages: list[StageRecord]

    @property
    def final(self) -> TrainResult:
        return self.results[-1]

    def to_dict(self) -> dict:
        return {"stages": [s.to_dict() for s in self.stages]}


def run_progressive(teacher, teacher_normalizer: EmpiricalNormalizer | None,
                    dataset: DistillDataset, student_spec: PolicySpec,
                    sim_config: SimConfig | None, config: ProgressiveConfig,
                    train_config: TrainConfig, progress: bool = False,
                    on_stage: Callable[[StageRecord], Any] | None = None) -> ProgressiveResult:
    """Train the chain on `dataset` (see the module docstring). Every stage uses the same
    episode split (the TrainConfig's seed), so the validation errors are comparable."""
    students = config.student_configs(student_spec)
    train_set, val_set = dataset.split_by_episode(train_config.val_fraction, train_config.seed)
    if not len(val_set):
        val_set = train_set
    bounds = executed_bounds(student_spec.action)

    def executed(actions):   # the errors are those of the executed (clipped) actions
        return actions if bounds is None else np.clip(actions, bounds[0].numpy(),
                                                      bounds[1].numpy())
    with torch.no_grad():
        original = executed(teacher.deterministic(teacher_outputs(
            teacher, teacher_normalizer, val_set.teacher_obs)).numpy())
    current_teacher, current_norm = teacher, teacher_normalizer
    stage_train, stage_val = train_set, val_set
    results: list[TrainResult] = []
    records: list[StageRecord] = []
    for i, scfg in enumerate(students):
        cfg = dataclasses.replace(train_config, student=scfg,
                                  loss=config.loss_for(i, train_config.loss))
        t0 = time.perf_counter()
        result = fit(current_teacher, current_norm, stage_train, cfg, progress=progress,
                     val_dataset=stage_val, action_spec=student_spec.action)
        train_s = time.perf_counter() - t0
        predicted = executed(episode_actions(result.student, result.student_normalizer,
                                             val_set))
        with torch.no_grad():
            own = executed(current_teacher.deterministic(teacher_outputs(
                current_teacher, current_norm, stage_val.teacher_obs)).numpy())
        record = StageRecord(
            stage=i + 1, params=count_parameters(result.student),
            teacher_params=count_parameters(current_teacher),
            val_error_vs_own_teacher=action_errors(predicted, own)["mse"],
            val_error_vs_original_teacher=action_errors(predicted, original)["mse"],
            train_time_s=train_s, student=scfg.to_dict())
        if config.eval_episodes:
            ev = evaluate_policy(student_actor(result.student, result.student_normalizer),
                                 student_spec, sim_config, held_out_seeds(config.eval_episodes),
                                 sim_seed=config.sim_seed)
            record.eval_mean_return = ev.mean_return
            record.eval_mean_forward_distance_m = ev.mean_forward_distance_m
        LOG.info("progressive stage %d: %d params (teacher %d), val mse vs own teacher %.4g, "
                 "vs original %.4g", record.stage, record.params, record.teacher_params,
                 record.val_error_vs_own_teacher, record.val_error_vs_original_teacher)
        results.append(result)
        records.append(record)
        if on_stage is not None:
            on_stage(record)
        if i + 1 < len(students):
            current_teacher = StudentAsTeacher(result.student, result.student_normalizer)
            current_norm = None
            stage_train = as_student_teacher_dataset(train_set)
            stage_val = as_student_teacher_dataset(val_set)
    return ProgressiveResult(results, records)
