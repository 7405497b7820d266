"""In-process rollouts on the embedded simulator, seen through several observation specs at once.

One `AntSim` drives a `sim.spec_env.SpecEnv` built on the first spec (the env the teacher was
trained in, so its vector is exactly the one it learned on); every other spec gets its own
`core.observation.ObservationAssembler` fed from the *same* `SensorFrame`s and the same executed
command (`last_action`). One rollout therefore yields, per policy decision, the student's
observation, the teacher's observation, the executed action and (optionally) the teacher's
label, exactly as `training/dataset.py` rebuilds them from a recorded bag.

Who acts: a *driver* (any `Actor`: torch teacher, torch student, ONNX student, a plain function)
proposes an action from the view it reads; with probability `beta` the *labeler*'s action is
executed instead (DAgger's mixture). The labeler (the teacher) is queried on every visited state.

Seeds: every episode is started with an explicit episode seed (dynamics, initial state, sensor
noise all derive from it), so a rollout is a pure function of (policies, seeds). Three disjoint
ranges: training data [0, 900_000); validation (model selection, e.g. DAgger's best round)
[`VALIDATION_SEED_BASE` = 900_000, 1_000_000); held-out test from `HELD_OUT_SEED_BASE` =
1_000_000 (`training/evaluation.py`). Data collection refuses seeds outside the training range,
so no validation or evaluation episode is ever trained on.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.spec import PolicySpec, SpecError
from policy_distill_ros.core.timing import LatencyStats
from policy_distill_ros.sim.config import SimConfig
from policy_distill_ros.sim.frame import ODOMETRY
from policy_distill_ros.sim.spec_env import make_spec_env

from .dataset import DistillDataset
from .networks import BasePolicy
from .normalizer import EmpiricalNormalizer

__all__ = ["HELD_OUT_SEED_BASE", "VALIDATION_SEED_BASE", "STUDENT", "TEACHER", "Actor",
           "TorchActor", "OnnxActor", "FunctionActor", "EpisodeStats", "Episode", "RolloutResult",
           "MultiViewSim", "collect", "check_training_seeds", "teacher_actor", "student_actor"]

VALIDATION_SEED_BASE = 900_000   # validation episode seeds (model selection) start here
HELD_OUT_SEED_BASE = 1_000_000   # held-out evaluation episode seeds start here
STUDENT = "student"
TEACHER = "teacher"


class Actor(Protocol):
    """A policy as the rollout sees it: reads the observation of spec `view`, returns a raw
    action (policy output space); `reset()` at every episode start (recurrent state)."""

    view: str

    def reset(self) -> None: ...

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


class TorchActor:
    """Deterministic action of a torch policy (teacher or student) behind its normalizer; a
    recurrent student carries its hidden state through the episode."""

    def __init__(self, policy: torch.nn.Module, normalizer: EmpiricalNormalizer | None,
                 view: str) -> None:
        self.policy = policy
        self.normalizer = normalizer
        self.view = view
        self.recurrent = bool(getattr(policy, "is_recurrent", False))
        self._hidden: torch.Tensor | None = None
        policy.eval()

    def reset(self) -> None:
        self._hidden = None

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32)).reshape(1, -1)
        if self.normalizer is not None:
            x = self.normalizer(x)
        if self.recurrent:
            out = self.policy(x, self._hidden)
            self._hidden = out.hidden
        else:
            out = self.policy(x)
        return self.policy.deterministic(out).numpy().reshape(-1)


class OnnxActor:
    """An exported policy file through `core.policy_file.OnnxPolicy`, the class the student node
    runs (one intra-op thread, recurrent state reset per episode)."""

    def __init__(self, path, expected: PolicySpec | None = None, view: str = STUDENT) -> None:
        from policy_distill_ros.core.policy_file import OnnxPolicy
        self.policy = OnnxPolicy(path, expected)
        self.spec = self.policy.spec
        self.view = view

    def reset(self) -> None:
        self.policy.reset_state()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.policy(np.asarray(obs, dtype=np.float32))


class FunctionActor:
    """Any `fn(obs) -> raw action` (e.g. another library's policy) as an Actor."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], view: str,
                 reset: Callable[[], None] | None = None) -> None:
        self.fn = fn
        self.view = view
        self._reset = reset

    def reset(self) -> None:
        if self._reset is not None:
            self._reset()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(obs), dtype=np.float64).reshape(-1)


def check_training_seeds(seeds: Iterable[int], what: str = "training") -> list[int]:
    """Seeds as ints; refuses negative values and the validation / held-out ranges."""
    out = [int(s) for s in seeds]
    bad = [s for s in out if s < 0 or s >= VALIDATION_SEED_BASE]
    if bad:
        raise ValueError(f"{what} episode seeds must be in [0, {VALIDATION_SEED_BASE}) (seeds from "
                         f"{VALIDATION_SEED_BASE} are reserved for validation, from "
                         f"{HELD_OUT_SEED_BASE} for held-out evaluation), got {bad[:5]}")
    return out


@dataclass
class EpisodeStats:
    """Figures of one episode."""

    seed: int
    episode_return: float
    length: int
    forward_distance_m: float       # privileged odometry x at the end minus at the start
    terminated: bool
    labeler_fraction: float = 0.0   # share of steps that executed the labeler's action

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Episode:
    """One episode's rows (one per policy decision) and its figures."""

    stats: EpisodeStats
    obs: dict[str, np.ndarray]      # view -> [T, spec size]
    actions: np.ndarray             # [T, A] executed, raw policy output space (after clipping)
    labels: np.ndarray | None       # [T, A] labeler's raw action on every visited state
    driver_actions: np.ndarray      # [T, A] what the driver proposed


@dataclass
class RolloutResult:
    """Episodes of a collection run and their rows as a `DistillDataset` (episode id = index
    of the episode in this run)."""

    episodes: list[EpisodeStats]
    dataset: DistillDataset | None
    labels: np.ndarray | None = None            # [N, A] aligned with dataset rows
    driver_actions: np.ndarray | None = None    # [N, A]
    latency: LatencyStats = field(default_factory=LatencyStats)

    @property
    def returns(self) -> np.ndarray:
        return np.asarray([e.episode_return for e in self.episodes], dtype=np.float64)

    def summary(self) -> dict:
        r = self.returns
        return {"episodes": len(self.episodes), "mean_return": float(r.mean()) if r.size else None,
                "std_return": float(r.std()) if r.size else None,
                "mean_forward_distance_m": float(np.mean([e.forward_distance_m
                                                          for e in self.episodes]))
                if self.episodes else None,
                "mean_length": float(np.mean([e.length for e in self.episodes]))
                if self.episodes else None,
                "samples": len(self.dataset) if self.dataset is not None else 0}


def _check_same_action(specs: Mapping[str, PolicySpec]) -> None:
    items = list(specs.items())
    first_name, first = items[0]
    for name, spec in items[1:]:
        a, b = first.action.to_dict(), spec.action.to_dict()
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ValueError(f"the {name} and {first_name} action specs differ in {diff}: every "
                             f"view of one rollout must command the same joints the same way")


class MultiViewSim:
    """One simulator, one observation vector per named spec (see the module docstring).

    `specs` maps a view name to its PolicySpec; the first one drives the `SpecEnv`.
    """

    def __init__(self, specs: Mapping[str, PolicySpec], sim_config: SimConfig | None = None,
                 sim_seed: int = 0) -> None:
        if not specs:
            raise ValueError("MultiViewSim needs at least one spec")
        for name, spec in specs.items():
            if not isinstance(spec, PolicySpec):
                raise TypeError(f"spec of view {name!r} must be a core.spec.PolicySpec, got "
                                f"{type(spec).__name__}")
        _check_same_action(specs)
        self.specs = dict(specs)
        self.views = tuple(self.specs)
        self.primary = self.views[0]
        self.env = make_spec_env(self.specs[self.primary], sim_config, seed=sim_seed)
        self.action_spec = self.specs[self.primary].action
        self._extra = {name: ObservationAssembler(spec.observation, spec.action.size)
                       for name, spec in self.specs.items() if name != self.primary}
        n = self.action_spec.size
        self._scale = np.broadcast_to(np.asarray(self.action_spec.scale, np.float64), (n,))
        self._offset = np.broadcast_to(np.asarray(self.action_spec.offset, np.float64), (n,))

    @property
    def sim(self):
        return self.env.sim

    def _observe_extra(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        frame = self.env.frame
        out = {self.primary: obs}
        for name, asm in self._extra.items():
            frame.feed(asm)   # only the topics its spec names: a student never sees privileged data
            result = asm.build(frame.stamp_s)
            if result.problem:
                raise RuntimeError(f"{name} observation problem at sim time {frame.stamp_s:.3f} s "
                                   f"(episode seed, step {frame.step}): {result.problem}")
            out[name] = np.asarray(result.vector, dtype=np.float32)
        return out

    def forward_position_m(self) -> float:
        return float(self.env.frame.field(ODOMETRY, "pose.pose.position")[0])

    def reset(self, episode_seed: int) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=int(episode_seed))
        zeros = np.zeros(self.action_spec.size)
        for asm in self._extra.values():   # as SpecEnv and the policy node: fresh history, zero
            asm.reset()                     # last action
            asm.set_last_action(zeros)
        return self._observe_extra(obs)

    def step(self, raw_action: np.ndarray):
        """Execute one raw action; returns (views, reward, terminated, truncated, executed raw)."""
        command = self.action_spec.postprocess(np.asarray(raw_action, dtype=np.float64))
        obs, reward, terminated, truncated, _ = self.env.step(raw_action)
        for asm in self._extra.values():
            asm.set_last_action(command)
        executed = (command - self._offset) / self._scale
        return self._observe_extra(obs), float(reward), bool(terminated), bool(truncated), executed

    def run_episode(self, seed: int, driver: Actor, labeler: Actor | None = None,
                    beta: float = 0.0, rng: np.random.Generator | None = None,
                    record: bool = True, latency: LatencyStats | None = None) -> Episode:
        """One episode from `seed`. `latency` (optional) receives the driver's inference time."""
        for who, actor in (("driver", driver), ("labeler", labeler)):
            if actor is not None and actor.view not in self.specs:
                raise ValueError(f"{who} reads view {actor.view!r}; this rollout has "
                                 f"{list(self.views)}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        if beta > 0 and labeler is None:
            raise ValueError("beta > 0 mixes in the labeler's actions: give a labeler")
        rng = rng if rng is not None else np.random.default_rng(seed)
        views = self.reset(seed)
        x0 = self.forward_position_m()
        driver.reset()
        if labeler is not None and labeler is not driver:
            labeler.reset()
        rows: dict[str, list] = {name: [] for name in self.views}
        actions, labels, proposed = [], [], []
        total, steps, from_labeler = 0.0, 0, 0
        terminated = truncated = False
        while not (terminated or truncated):
            t0 = time.perf_counter()
            action = np.asarray(driver(views[driver.view]), dtype=np.float64)
            if latency is not None:
                latency.add(time.perf_counter() - t0)
            label = None
            if labeler is driver:
                label = action
            elif labeler is not None:
                label = np.asarray(labeler(views[labeler.view]), dtype=np.float64)
            execute = action
            if beta > 0 and (beta >= 1.0 or rng.random() < beta):
                execute = label
                from_labeler += 1
            if record:
                for name in self.views:
                    rows[name].append(views[name])
                proposed.append(action)
                if label is not None:
                    labels.append(label)
            views, reward, terminated, truncated, executed = self.step(execute)
            if record:
                actions.append(executed)
            total += reward
            steps += 1
        stats = EpisodeStats(seed=int(seed), episode_return=total, length=steps,
                             forward_distance_m=self.forward_position_m() - x0,
                             terminated=terminated, labeler_fraction=from_labeler / max(steps, 1))
        a = self.action_spec.size
        obs = {name: np.asarray(rows[name], dtype=np.float32).reshape(
            len(rows[name]), self.specs[name].observation.size) for name in self.views}
        return Episode(stats, obs, np.asarray(actions, dtype=np.float32).reshape(-1, a),
                       np.asarray(labels, dtype=np.float32).reshape(-1, a) if labels else None,
                       np.asarray(proposed, dtype=np.float32).reshape(-1, a))

    def close(self) -> None:
        self.env.close()


def collect(student_spec: PolicySpec, teacher_spec: PolicySpec, sim_config: SimConfig | None,
            seeds: Sequence[int], driver: Actor, labeler: Actor | None = None,
            beta: float = 0.0, sim_seed: int = 0, rng_seed: int = 0,
            progress: Callable[[EpisodeStats], None] | None = None,
            source: str = "rollout") -> RolloutResult:
    """Episodes from training seeds (see `check_training_seeds`) -> a DistillDataset.

    Student observations, teacher observations and executed actions per step; episode ids are
    0..len(seeds)-1 in seed order, returns per episode. `labels` holds the labeler's action on
    every row when a labeler is given. `progress(stats)` is called after each episode.
    """
    seeds = check_training_seeds(seeds)
    if not seeds:
        raise ValueError("collect: no seeds")
    try:
        student_spec.observation.require_no_privileged()
    except SpecError as exc:
        raise ValueError(f"student spec: {exc}") from None
    sim = MultiViewSim({TEACHER: teacher_spec, STUDENT: student_spec}, sim_config, sim_seed)
    rng = np.random.default_rng(rng_seed)
    latency = LatencyStats()
    episodes: list[Episode] = []
    try:
        for seed in seeds:
            episode = sim.run_episode(seed, driver, labeler, beta, rng, True, latency)
            episodes.append(episode)
            if progress is not None:
                progress(episode.stats)
    finally:
        sim.close()
    ids = np.concatenate([np.full(len(e.actions), i, dtype=np.int64)
                          for i, e in enumerate(episodes)])
    dataset = DistillDataset(
        np.concatenate([e.obs[STUDENT] for e in episodes]),
        np.concatenate([e.obs[TEACHER] for e in episodes]),
        np.concatenate([e.actions for e in episodes]), ids,
        {i: e.stats.episode_return for i, e in enumerate(episodes)}, (source,))
    labels = np.concatenate([e.labels for e in episodes]) if labeler is not None else None
    return RolloutResult([e.stats for e in episodes], dataset, labels,
                         np.concatenate([e.driver_actions for e in episodes]), latency)


def teacher_actor(teacher: BasePolicy, normalizer: EmpiricalNormalizer | None) -> TorchActor:
    return TorchActor(teacher, normalizer, TEACHER)


def student_actor(student: BasePolicy, normalizer: EmpiricalNormalizer | None) -> TorchActor:
    return TorchActor(student, normalizer, STUDENT)
