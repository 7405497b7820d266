"""Closed-loop evaluation on held-out randomized episodes: teacher vs student.

`evaluate_policy(policy, spec, sim_config, seeds)` runs one policy (an `rollout.Actor`: the torch
teacher, an ONNX student through `core.policy_file.OnnxPolicy`, anything callable) on the
embedded simulator, one episode per seed, and reports return, forward distance (privileged
odometry x, end minus start), episode length and the policy's inference latency per decision
(`core.timing.LatencyStats`, measured around the policy call only).

Held-out seeds: `held_out_seeds(n)` = `HELD_OUT_SEED_BASE + k` (1_000_000, 1_000_001, ...);
validation seeds (model selection) `validation_seeds(n)` = 900_000 + k. Training data collected
in-process (`rollout.collect`, DAgger) refuses both ranges, scripts/train_teacher.py evaluates
and selects through `evaluate_policy` on them too, and recorded bags use the simulator's
default episode seeds (32-bit hashes of (sim seed, episode id)), which hit the 20 evaluation
seeds with probability ~5e-9 per episode. Each seed fixes the episode's randomized dynamics
(friction, payload, motor strength, delay), initial state and sensor noise, so a result is a
deterministic function of (policy, seeds, sim config).
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policy_distill_ros.core.spec import PolicySpec
from policy_distill_ros.core.timing import LatencyStats
from policy_distill_ros.sim.config import SimConfig

from .rollout import HELD_OUT_SEED_BASE, VALIDATION_SEED_BASE, Actor, EpisodeStats, MultiViewSim

__all__ = ["HELD_OUT_SEED_BASE", "EvalResult", "held_out_seeds", "validation_seeds",
           "evaluate_policy",
           "policy_file_figures", "comparison", "format_table", "evaluate_teacher_and_student",
           "comparison_table", "COMPARISON_COLUMNS"]


def held_out_seeds(episodes: int, base: int = HELD_OUT_SEED_BASE) -> list[int]:
    """The first `episodes` held-out evaluation seeds."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if base < HELD_OUT_SEED_BASE:
        raise ValueError(f"evaluation seed base {base} is inside the training/validation range "
                         f"[0, {HELD_OUT_SEED_BASE}); use >= {HELD_OUT_SEED_BASE}")
    return [base + k for k in range(episodes)]


def validation_seeds(episodes: int) -> list[int]:
    """The first `episodes` validation seeds (model selection; never trained on, never the
    held-out test seeds)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if episodes > HELD_OUT_SEED_BASE - VALIDATION_SEED_BASE:
        raise ValueError(f"at most {HELD_OUT_SEED_BASE - VALIDATION_SEED_BASE} validation seeds")
    return [VALIDATION_SEED_BASE + k for k in range(episodes)]


@dataclass
class EvalResult:
    """One policy on a list of seeds."""

    name: str
    episodes: list[EpisodeStats]
    latency: dict[str, float]               # p50/p90/p99/max seconds per decision
    extra: dict = field(default_factory=dict)

    @property
    def returns(self) -> np.ndarray:
        return np.asarray([e.episode_return for e in self.episodes], dtype=np.float64)

    @property
    def mean_return(self) -> float:
        return float(self.returns.mean())

    @property
    def std_return(self) -> float:
        return float(self.returns.std())

    @property
    def mean_forward_distance_m(self) -> float:
        return float(np.mean([e.forward_distance_m for e in self.episodes]))

    def to_dict(self) -> dict:
        return {"name": self.name, "episodes": len(self.episodes),
                "seeds": [e.seed for e in self.episodes],
                "mean_return": self.mean_return, "std_return": self.std_return,
                "mean_forward_distance_m": self.mean_forward_distance_m,
                "std_forward_distance_m": float(np.std([e.forward_distance_m
                                                        for e in self.episodes])),
                "mean_episode_length": float(np.mean([e.length for e in self.episodes])),
                "terminated_episodes": int(sum(e.terminated for e in self.episodes)),
                "latency_p50_us": self.latency["p50"] * 1e6,
                "latency_p99_us": self.latency["p99"] * 1e6,
                "latency_max_us": self.latency["max"] * 1e6,
                "returns": self.returns.tolist(),
                "forward_distances_m": [e.forward_distance_m for e in self.episodes],
                **self.extra}


def evaluate_policy(policy: Actor, spec: PolicySpec, sim_config: SimConfig | None,
                    seeds: Sequence[int], sim_seed: int = 0, name: str | None = None,
                    progress: bool = False) -> EvalResult:
    """Run `policy` (reading observations of `spec`) for one episode per seed."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_policy: no seeds")
    sim = MultiViewSim({policy.view: spec}, sim_config, sim_seed)
    latency = LatencyStats(window=1000)
    episodes: list[EpisodeStats] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(seeds), desc=f"eval {name or policy.view}", unit="ep",
                   dynamic_ncols=True)
    try:
        for seed in seeds:
            episodes.append(sim.run_episode(seed, policy, record=False, latency=latency).stats)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ret=f"{episodes[-1].episode_return:.0f}")
    finally:
        if bar is not None:
            bar.close()
        sim.close()
    return EvalResult(name or policy.view, episodes, latency.total_percentiles())


def policy_file_figures(path: str | os.PathLike) -> dict[str, Any]:
    """Size on disk and parameter count of an exported policy file.

    `params` is the student's trained parameter count recorded by the trainer in the file's
    provenance (`metrics.student_params`); when absent, the number of elements of every graph
    initializer (which also counts the in-graph normalizer's statistics), marked as such.
    """
    from policy_distill_ros.core.policy_file import read_metadata
    path = Path(path)
    out: dict[str, Any] = {"onnx_bytes": path.stat().st_size}
    metrics = (read_metadata(path).provenance or {}).get("metrics") or {}
    params = metrics.get("student_params")
    if isinstance(params, int) and params > 0:
        out["params"], out["params_source"] = params, "provenance"
        return out
    import onnx
    model = onnx.load(str(path))
    out["params"] = int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
    out["params_source"] = "onnx initializers (normalizer included)"
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def comparison(teacher: EvalResult | None, student: EvalResult | None,
               teacher_params: int | None = None, student_params: int | None = None,
               student_onnx_bytes: int | None = None) -> dict:
    """Ratios of the student to the teacher: return (mean over the same seeds), forward
    distance, parameters."""
    out: dict[str, Any] = {}
    if teacher is not None:
        out["teacher"] = teacher.to_dict()
        out["teacher"]["params"] = teacher_params
    if student is not None:
        out["student"] = student.to_dict()
        out["student"]["params"] = student_params
        out["student"]["onnx_bytes"] = student_onnx_bytes
    if teacher is not None and student is not None:
        if [e.seed for e in teacher.episodes] != [e.seed for e in student.episodes]:
            raise ValueError("comparison: teacher and student were evaluated on different seeds")
        out["return_ratio"] = _ratio(student.mean_return, teacher.mean_return)
        out["forward_distance_ratio"] = _ratio(student.mean_forward_distance_m,
                                               teacher.mean_forward_distance_m)
        out["param_ratio"] = _ratio(student_params, teacher_params)
    return out


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, str):
        return value
    return format(value, fmt)


def format_table(rows: Iterable[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """A fixed-width text table; `columns` = (key, header, format spec) per column."""
    rows = list(rows)
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), fmt) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# teacher vs exported student (eval command, dagger command, benches)

COMPARISON_COLUMNS = (
    ("name", "policy", ""), ("mean_return", "return", ".1f"), ("std_return", "std", ".1f"),
    ("mean_forward_distance_m", "forward m", ".2f"), ("mean_episode_length", "ep len", ".0f"),
    ("params", "params", ",d"), ("onnx_bytes", "onnx B", ",d"),
    ("latency_p50_us", "p50 us", ".1f"), ("latency_p99_us", "p99 us", ".1f"))


def evaluate_teacher_and_student(teacher=None, teacher_normalizer=None,
                                 teacher_spec: PolicySpec | None = None,
                                 student_path: str | os.PathLike | None = None,
                                 student_spec: PolicySpec | None = None,
                                 sim_config: SimConfig | None = None,
                                 seeds: Sequence[int] = (), sim_seed: int = 0,
                                 progress: bool = False) -> dict:
    """The torch teacher and/or the ONNX student (through OnnxPolicy, checked against
    `student_spec` when given) on the same seeds; `comparison` figures plus the seeds."""
    from .networks import count_parameters
    from .rollout import OnnxActor, teacher_actor
    if teacher is None and student_path is None:
        raise ValueError("nothing to evaluate: give a teacher and/or a student")
    t_res = s_res = None
    t_params = s_params = onnx_bytes = None
    if teacher is not None:
        if teacher_spec is None:
            raise ValueError("evaluating a teacher needs its observation spec")
        t_res = evaluate_policy(teacher_actor(teacher, teacher_normalizer), teacher_spec,
                                sim_config, seeds, sim_seed, "teacher", progress)
        t_params = count_parameters(teacher)
    if student_path is not None:
        actor = OnnxActor(student_path, student_spec)
        actor.spec.observation.require_no_privileged()
        s_res = evaluate_policy(actor, actor.spec, sim_config, seeds, sim_seed, "student",
                                progress)
        figures = policy_file_figures(student_path)
        s_params, onnx_bytes = figures["params"], figures["onnx_bytes"]
        s_res.extra["params_source"] = figures["params_source"]
        s_res.extra["path"] = str(student_path)
    out = comparison(t_res, s_res, t_params, s_params, onnx_bytes)
    out["seeds"] = [int(s) for s in seeds]
    out["sim_seed"] = int(sim_seed)
    return out


def comparison_table(report: dict) -> str:
    """The text table (and ratio line) of an `evaluate_teacher_and_student` report."""
    rows = [report[k] for k in ("teacher", "student") if k in report]
    text = format_table(rows, COMPARISON_COLUMNS)
    if "return_ratio" in report:
        parts = [f"return ratio {_cell(report.get('return_ratio'), '.3f')}",
                 f"forward distance ratio {_cell(report.get('forward_distance_ratio'), '.3f')}",
                 f"param ratio {_cell(report.get('param_ratio'), '.4f')}"]
        text += "\nstudent / teacher: " + ", ".join(parts)
    seeds = report.get("seeds") or []
    if seeds:
        text += f"\nheld-out seeds {seeds[0]}..{seeds[-1]} ({len(seeds)} episodes)"
    return text
