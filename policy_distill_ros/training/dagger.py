"""DAgger in-process: the student drives the simulator, the teacher labels every visited state.

Round 0 is behavioural cloning on teacher-driven episodes (or on a dataset given by the caller,
e.g. from recorded bags, and/or a student trained already). Each later round r = 1..R:

1. the current student drives `episodes_per_round` fresh training episodes; at every step the
   teacher's action is executed instead with probability `beta_r` (schedule below), and the
   teacher is queried on every visited state (its label);
2. the new rows (student obs, teacher obs, executed action) are appended to the aggregate;
3. the student is retrained on the whole aggregate with `trainer.fit`, warm-started from the
   previous round's parameters and normalizer (the teacher is re-evaluated on every teacher obs,
   so the BC/KL/feature targets are the teacher's on the states the *student* visited).

Beta schedules (round r = 1..R): `constant` beta_r = beta_start; `linear` from beta_start at
r = 1 to beta_end at r = R; `exponential` beta_r = beta_start * beta_decay ** (r - 1).

Per-round figures (`RoundRecord`): beta, new samples, aggregate size, the mixed rollout's
return, the student's action error against the teacher on the states it just visited (before
and after retraining on them: the gap DAgger closes), the trainer's validation error, and with
`val_episodes` the student's own closed-loop return on validation seeds
(`evaluation.validation_seeds`, 900_000 + k). With `select_best` the result is the student of
the round with the best validation return (round 0, plain cloning, included), as DAgger's
analysis prescribes (Ross et al. 2011: return the best policy of the sequence on validation);
the held-out test seeds (1_000_000 + k) are never used for any decision.

Training seeds: round 0 uses seed_base + [0, initial_episodes), round r the next
episodes_per_round seeds, all below the validation range.

Rounds in `collector_rounds` get their data from `round_collector(round, beta, result, seeds)`
instead of the in-process rollout: `policy-distill dagger --ros-rounds N` drives the real nodes
there (sim_node, student_node, teacher_node labelling, recorder) and reads the bag back; labels
are then the teacher's executed actions re-evaluated on the recorded teacher observations, as
`fit` computes them.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy_distill_ros.core.config_keys import check_keys, dataclass_keys
from policy_distill_ros.core.spec import PolicySpec
from policy_distill_ros.sim.config import SimConfig

from .dataset import DistillDataset
from .evaluation import evaluate_policy, validation_seeds
from .normalizer import EmpiricalNormalizer
from .rollout import VALIDATION_SEED_BASE, RolloutResult, collect, student_actor, teacher_actor
from .trainer import (
    TrainConfig,
    TrainResult,
    action_errors,
    episode_actions,
    executed_bounds,
    executed_targets,
    fit,
    json_metrics,
    teacher_outputs,
)

__all__ = ["BETA_SCHEDULES", "DaggerConfig", "RoundRecord", "DaggerResult", "beta_for_round",
           "run_dagger"]

LOG = logging.getLogger(__name__)
BETA_SCHEDULES = ("constant", "linear", "exponential")


def _fraction(owner: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{owner}.{name} must be a number in [0, 1], got {value!r}")


def _count(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class DaggerConfig:
    """DAgger rounds; training itself is configured by a `TrainConfig` next to it."""

    rounds: int = 4
    episodes_per_round: int = 8
    initial_episodes: int = 8          # teacher-driven episodes of round 0 (0: caller's data only)
    beta_schedule: str = "exponential"
    beta_start: float = 0.5            # beta of round 1
    beta_end: float = 0.0              # linear: beta of the last round
    beta_decay: float = 0.5            # exponential: factor per round
    round_epochs: int | None = None    # epochs of each retraining (None: the TrainConfig's)
    round_lr: float | None = None      # learning rate of each retraining (None: the TrainConfig's)
    val_episodes: int = 0              # validation episodes per round: the student's own return
    select_best: bool = True           # keep the round with the best validation return
    seed_base: int = 0                 # first training episode seed
    sim_seed: int = 0

    def __post_init__(self) -> None:
        owner = "DaggerConfig"
        _count(owner, "rounds", self.rounds, 1)
        _count(owner, "episodes_per_round", self.episodes_per_round, 1)
        _count(owner, "initial_episodes", self.initial_episodes, 0)
        _count(owner, "val_episodes", self.val_episodes, 0)
        _count(owner, "seed_base", self.seed_base, 0)
        _count(owner, "sim_seed", self.sim_seed, 0)
        if self.round_epochs is not None:
            _count(owner, "round_epochs", self.round_epochs, 1)
        if self.round_lr is not None and (isinstance(self.round_lr, bool) or not isinstance(
                self.round_lr, (int, float)) or not 0 < self.round_lr < math.inf):
            raise ValueError(f"{owner}.round_lr must be a number > 0 or null, got "
                             f"{self.round_lr!r}")
        if not isinstance(self.select_best, bool):
            raise ValueError(f"{owner}.select_best must be true or false, got "
                             f"{self.select_best!r}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"{owner}.beta_schedule must be one of {BETA_SCHEDULES}, got "
                             f"{self.beta_schedule!r}")
        for name in ("beta_start", "beta_end", "beta_decay"):
            _fraction(owner, name, getattr(self, name))
        last = self.seed_base + self.initial_episodes + self.rounds * self.episodes_per_round
        if last > VALIDATION_SEED_BASE:
            raise ValueError(f"{owner}: training seeds would reach {last - 1}, inside the "
                             f"validation/held-out range from {VALIDATION_SEED_BASE}; lower "
                             f"seed_base or the episode counts")

    def round_seeds(self, round_index: int) -> list[int]:
        """Training episode seeds of a round (0 = the teacher-driven initial round)."""
        if round_index == 0:
            return [self.seed_base + k for k in range(self.initial_episodes)]
        start = self.seed_base + self.initial_episodes + (round_index - 1) * self.episodes_per_round
        return list(range(start, start + self.episodes_per_round))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DaggerConfig:
        check_keys(d, dataclass_keys(cls), "DaggerConfig")
        return cls(**d)


def beta_for_round(config: DaggerConfig, round_index: int) -> float:
    """Probability of executing the teacher's action in round `round_index` (>= 1)."""
    if round_index < 1 or round_index > config.rounds:
        raise ValueError(f"round {round_index} outside 1..{config.rounds}")
    if config.beta_schedule == "constant":
        return float(config.beta_start)
    if config.beta_schedule == "linear":
        if config.rounds == 1:
            return float(config.beta_start)
        t = (round_index - 1) / (config.rounds - 1)
        return float(config.beta_start + (config.beta_end - config.beta_start) * t)
    return float(config.beta_start * config.beta_decay ** (round_index - 1))


@dataclass
class RoundRecord:
    """What one round did and measured (errors are mean squared raw-action errors)."""

    round: int
    beta: float
    episodes: int
    new_samples: int
    dataset_samples: int
    rollout_mean_return: float | None
    teacher_action_fraction: float
    on_policy_error_before: float | None     # student vs teacher on the states just visited
    on_policy_error_after: float | None      # same states, after retraining
    val_error: float | None                  # trainer's validation error vs the teacher
    val_mean_return: float | None = None     # student alone, validation seeds
    val_mean_forward_distance_m: float | None = None
    rollout_time_s: float = 0.0
    train_time_s: float = 0.0
    via: str = "in-process"                  # where the round's data came from ("ros": nodes)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DaggerResult:
    result: TrainResult                       # the selected student (see select_best)
    dataset: DistillDataset                   # the aggregate
    rounds: list[RoundRecord] = field(default_factory=list)
    selected_round: int = -1                  # round whose student `result` is
    last: TrainResult | None = None           # the last round's student

    def to_dict(self) -> dict:
        return {"rounds": [r.to_dict() for r in self.rounds], "final_metrics": json_metrics(
            self.result.metrics), "dataset_samples": len(self.dataset),
            "selected_round": self.selected_round}


def _mse_on(result: TrainResult, dataset: DistillDataset, labels: np.ndarray,
            student_spec: PolicySpec) -> float:
    """Executed-action error of the student vs the labels (both clipped to the limits)."""
    predicted = episode_actions(result.student, result.student_normalizer, dataset)
    bounds = executed_bounds(student_spec.action)
    if bounds is not None:
        predicted = np.clip(predicted, bounds[0].numpy(), bounds[1].numpy())
    return action_errors(predicted, labels)["mse"]


def _val_error(result: TrainResult) -> float | None:
    err = result.metrics.get("val_action_error_vs_teacher") or {}
    value = err.get("mse")
    return float(value) if value is not None and math.isfinite(value) else None


def executed_labels(teacher, teacher_normalizer, dataset: DistillDataset,
                    student_spec: PolicySpec) -> np.ndarray:
    """The teacher's deterministic action on every row, as the robot would execute it."""
    out = teacher_outputs(teacher, teacher_normalizer, dataset.teacher_obs)
    bounds = None if teacher.squash_output else executed_bounds(student_spec.action)
    return teacher.deterministic(executed_targets(out, bounds)).numpy()


RoundCollector = Callable[[int, float, TrainResult, list], RolloutResult]


def run_dagger(teacher, teacher_normalizer: EmpiricalNormalizer | None, student_spec: PolicySpec,
               teacher_spec: PolicySpec, sim_config: SimConfig | None, config: DaggerConfig,
               train_config: TrainConfig, initial_dataset: DistillDataset | None = None,
               initial: TrainResult | None = None, progress: bool = False,
               on_round: Callable[[RoundRecord], Any] | None = None,
               round_collector: RoundCollector | None = None,
               collector_rounds: Collection[int] = ()) -> DaggerResult:
    """Round 0 (BC on teacher data and/or `initial_dataset`, skipped as training when `initial`
    is given) then `config.rounds` DAgger rounds; see the module docstring."""
    labeler = teacher_actor(teacher, teacher_normalizer)
    rounds: list[RoundRecord] = []
    dataset = initial_dataset
    t0 = time.perf_counter()
    rollout_summary: dict = {}
    if config.initial_episodes:
        seeds = config.round_seeds(0)
        demo = collect(student_spec, teacher_spec, sim_config, seeds, labeler, labeler, beta=0.0,
                       sim_seed=config.sim_seed, source="dagger/round0")
        rollout_summary = demo.summary()
        dataset = demo.dataset if dataset is None else dataset.concat(demo.dataset)
    if dataset is None or not len(dataset):
        raise ValueError("DAgger needs initial data: initial_episodes > 0 or an initial_dataset")
    rollout_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = initial if initial is not None else fit(teacher, teacher_normalizer, dataset,
                                                     train_config, progress=progress,
                                                     action_spec=student_spec.action)
    train_s = time.perf_counter() - t0 if initial is None else 0.0
    record = RoundRecord(0, 1.0, len(config.round_seeds(0)), len(dataset), len(dataset),
                         rollout_summary.get("mean_return"), 1.0, None, None, _val_error(result),
                         rollout_time_s=rollout_s, train_time_s=train_s)
    _validate_round(record, result, student_spec, sim_config, config)
    rounds.append(record)
    best = (record.val_mean_return, 0, result)
    if on_round is not None:
        on_round(record)
    changes: dict[str, Any] = {}
    if config.round_epochs is not None:
        changes["epochs"] = config.round_epochs
    if config.round_lr is not None:
        changes["lr"] = float(config.round_lr)
    round_train = dataclasses.replace(train_config, **changes) if changes else train_config

    for r in range(1, config.rounds + 1):
        beta = beta_for_round(config, r)
        t0 = time.perf_counter()
        if r in collector_rounds:
            if round_collector is None:
                raise ValueError(f"round {r} is a collector round but no round_collector given")
            new = round_collector(r, beta, result, config.round_seeds(r))
            if new.labels is None:
                new.labels = executed_labels(teacher, teacher_normalizer, new.dataset,
                                             student_spec)
        else:
            driver = student_actor(result.student, result.student_normalizer)
            new = collect(student_spec, teacher_spec, sim_config, config.round_seeds(r), driver,
                          labeler, beta=beta, sim_seed=config.sim_seed, rng_seed=r,
                          source=f"dagger/round{r}")
            bounds = None if teacher.squash_output else executed_bounds(student_spec.action)
            if bounds is not None:   # the labeler's raw mean -> the action executed
                new.labels = np.clip(new.labels, bounds[0].numpy(), bounds[1].numpy())
        rollout_s = time.perf_counter() - t0
        assert new.dataset is not None and new.labels is not None
        before = _mse_on(result, new.dataset, new.labels, student_spec)
        dataset = dataset.concat(new.dataset)
        t0 = time.perf_counter()
        warm = copy.deepcopy(result.student)
        warm_norm = copy.deepcopy(result.student_normalizer)
        result = fit(teacher, teacher_normalizer, dataset, round_train, student=warm,
                     student_normalizer=warm_norm, progress=progress,
                     action_spec=student_spec.action)
        train_s = time.perf_counter() - t0
        after = _mse_on(result, new.dataset, new.labels, student_spec)
        summary = new.summary()
        fraction = float(np.mean([e.labeler_fraction for e in new.episodes]))
        record = RoundRecord(r, beta, len(new.episodes), len(new.dataset), len(dataset),
                             summary["mean_return"], fraction, before, after, _val_error(result),
                             rollout_time_s=rollout_s, train_time_s=train_s,
                             via="ros" if r in collector_rounds else "in-process")
        _validate_round(record, result, student_spec, sim_config, config)
        if record.val_mean_return is not None and record.val_mean_return > best[0]:
            best = (record.val_mean_return, r, result)
        LOG.info("DAgger round %d: beta %.3f, +%d samples (total %d), rollout return %.1f, "
                 "on-policy mse %.4g -> %.4g", r, beta, record.new_samples,
                 record.dataset_samples, record.rollout_mean_return, before, after)
        rounds.append(record)
        if on_round is not None:
            on_round(record)
    if config.select_best and config.val_episodes:
        LOG.info("DAgger: keeping round %d (validation return %.1f)", best[1], best[0])
        return DaggerResult(best[2], dataset, rounds, best[1], result)
    return DaggerResult(result, dataset, rounds, config.rounds, result)


def _validate_round(record: RoundRecord, result: TrainResult, student_spec: PolicySpec,
                    sim_config: SimConfig | None, config: DaggerConfig) -> None:
    if not config.val_episodes:
        return
    ev = evaluate_policy(student_actor(result.student, result.student_normalizer), student_spec,
                         sim_config, validation_seeds(config.val_episodes),
                         sim_seed=config.sim_seed)
    record.val_mean_return = ev.mean_return
    record.val_mean_forward_distance_m = ev.mean_forward_distance_m
