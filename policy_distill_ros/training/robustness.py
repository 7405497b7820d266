"""Teacher vs student outside the training ranges: returns and falls per scenario, and where the
student degrades before the teacher.

Each policy drives `sim.scenarios.FaultySensorSim` through a `SpecEnv` of its own spec, one
episode per held-out seed, the same seeds in every scenario (so a scenario differs from
`nominal` only by what it changes). The teacher keeps its privileged inputs (ground truth in
every scenario); both read the same faulty `joint_states` / `imu`.

Degradation of a policy in a scenario = its mean return there / its mean return in `nominal`.
The student "degrades before the teacher" where its retained fraction is lower than the
teacher's by more than `margin` (default 0.10) and the difference of the two retained fractions
is outside its 95 % bootstrap interval (episodes resampled per policy). Falls are judged apart:
the student "falls more" where its fall rate exceeds the teacher's beyond the normal 95 %
interval of the difference of two proportions.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policy_distill_ros.core.spec import PolicySpec
from policy_distill_ros.sim.frame import ODOMETRY
from policy_distill_ros.sim.scenarios import FaultySensorSim, Scenario
from policy_distill_ros.sim.spec_env import SpecEnv

from .rollout import Actor

__all__ = ["ScenarioResult", "run_scenario_episodes", "degradation", "robustness_table",
           "plot_robustness", "TABLE_COLUMNS"]


@dataclass
class ScenarioResult:
    """One policy in one scenario."""

    scenario: str
    policy: str
    seeds: list[int]
    returns: list[float]
    falls: list[bool]
    forward_m: list[float]
    lengths: list[int]
    wall_s: float

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    def ci95(self) -> float:
        """Half-width of the normal 95 % interval of the mean return."""
        n = len(self.returns)
        return float(1.96 * np.std(self.returns, ddof=1) / math.sqrt(n)) if n > 1 else 0.0

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "policy": self.policy, "seeds": self.seeds,
                "returns": self.returns, "falls": [bool(f) for f in self.falls],
                "forward_m": self.forward_m, "lengths": self.lengths,
                "mean_return": self.mean_return, "ci95": self.ci95(),
                "fall_count": int(sum(self.falls)),
                "mean_forward_m": float(np.mean(self.forward_m)),
                "wall_s": self.wall_s}


def run_scenario_episodes(actor: Actor, spec: PolicySpec, scenario: Scenario,
                          seeds: Sequence[int], sim_seed: int = 0, name: str | None = None,
                          on_episode: Callable[[float], None] | None = None) -> ScenarioResult:
    """`actor` (reading observations of `spec`) for one episode per seed in `scenario`."""
    env = SpecEnv(FaultySensorSim(scenario.sim_config, sim_seed, scenario.faults), spec)
    returns, falls, forward, lengths = [], [], [], []
    started = time.perf_counter()
    try:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            x0 = float(env.frame.field(ODOMETRY, "pose.pose.position")[0])
            actor.reset()
            total, steps, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                obs, reward, terminated, truncated, _ = env.step(actor(obs))
                total += float(reward)
                steps += 1
            returns.append(total)
            falls.append(bool(terminated))
            forward.append(float(env.frame.field(ODOMETRY, "pose.pose.position")[0]) - x0)
            lengths.append(steps)
            if on_episode is not None:
                on_episode(total)
    finally:
        env.close()
    return ScenarioResult(scenario.name, name or actor.view, [int(s) for s in seeds], returns,
                          falls, forward, lengths, time.perf_counter() - started)


def _bootstrap_ratio_diff(s: np.ndarray, s0: np.ndarray, t: np.ndarray, t0: np.ndarray,
                          rng: np.random.Generator, draws: int = 2000) -> tuple[float, float]:
    """95 % interval of (student retained) - (teacher retained), episodes resampled."""
    def pick(x):
        return x[rng.integers(0, len(x), (draws, len(x)))].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = pick(s) / pick(s0) - pick(t) / pick(t0)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        return float("nan"), float("nan")
    return float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))


def degradation(results: Sequence[ScenarioResult], teacher: str = "teacher",
                student: str = "student", margin: float = 0.10, seed: int = 0) -> list[dict]:
    """One row per scenario: both policies' returns, falls, retained fractions, and whether the
    student degrades before the teacher (see the module docstring)."""
    by = {(r.scenario, r.policy): r for r in results}
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    if "nominal" not in scenarios:
        raise ValueError("degradation needs the 'nominal' scenario as the reference")
    t0, s0 = by[("nominal", teacher)], by[("nominal", student)]
    rng = np.random.default_rng(seed)
    rows = []
    for name in scenarios:
        t, s = by[(name, teacher)], by[(name, student)]
        t_kept = t.mean_return / t0.mean_return if t0.mean_return else float("nan")
        s_kept = s.mean_return / s0.mean_return if s0.mean_return else float("nan")
        low, high = _bootstrap_ratio_diff(np.asarray(s.returns), np.asarray(s0.returns),
                                          np.asarray(t.returns), np.asarray(t0.returns), rng)
        worse = name != "nominal" and (s_kept < t_kept - margin) and high < 0
        n = len(s.falls)
        ps, pt = float(np.mean(s.falls)), float(np.mean(t.falls))
        falls_more = ps - pt - 1.96 * math.sqrt((ps * (1 - ps) + pt * (1 - pt)) / n) > 0
        rows.append({"scenario": name, "teacher_return": t.mean_return,
                     "teacher_ci95": t.ci95(), "teacher_falls": int(sum(t.falls)),
                     "student_return": s.mean_return, "student_ci95": s.ci95(),
                     "student_falls": int(sum(s.falls)), "episodes": len(t.returns),
                     "teacher_kept": t_kept, "student_kept": s_kept,
                     "kept_diff": s_kept - t_kept, "kept_diff_ci95": [low, high],
                     "student_vs_teacher": s.mean_return / t.mean_return
                     if t.mean_return else float("nan"),
                     "student_degrades_first": bool(worse),
                     "student_falls_more": bool(falls_more)})
    return rows


TABLE_COLUMNS = (("scenario", "scenario", ""), ("teacher_return", "teacher", ".0f"),
                 ("teacher_ci95", "+-", ".0f"), ("teacher_falls", "falls", "d"),
                 ("student_return", "student", ".0f"), ("student_ci95", "+-", ".0f"),
                 ("student_falls", "falls", "d"), ("teacher_kept", "teacher kept", ".2f"),
                 ("student_kept", "student kept", ".2f"),
                 ("student_vs_teacher", "student/teacher", ".2f"), ("flag", "student first?", ""))


def robustness_table(rows: Sequence[dict]) -> str:
    from .evaluation import format_table
    shown = []
    for row in rows:
        low, high = row["kept_diff_ci95"]
        flag = "YES" if row["student_degrades_first"] else "no"
        if row["scenario"] != "nominal":
            flag += f" ({row['kept_diff']:+.2f} [{low:+.2f}, {high:+.2f}])"
        else:
            flag = "reference"
        shown.append(dict(row, flag=flag))
    return format_table(shown, TABLE_COLUMNS)


def plot_robustness(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """Grouped bars: mean return (95 % interval) per scenario, teacher vs student; falls on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import save_figure

    names = [r["scenario"] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(8.0, 0.9 * len(names)), 4.6))
    for offset, who, color in ((-0.2, "teacher", "#4c72b0"), (0.2, "student", "#dd8452")):
        means = [r[f"{who}_return"] for r in rows]
        bars = ax.bar(x + offset, means, 0.4, yerr=[r[f"{who}_ci95"] for r in rows],
                      capsize=3, color=color, label=who)
        for bar, r in zip(bars, rows, strict=True):   # falls, above the interval's cap
            top = max(bar.get_height(), 0) + r[f"{who}_ci95"]
            ax.annotate(f"{r[f'{who}_falls']}", (bar.get_x() + bar.get_width() / 2, top),
                        ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                        textcoords="offset points")
    for i, r in enumerate(rows):
        if r["student_degrades_first"]:
            ax.axvspan(i - 0.5, i + 0.5, color="#c44e52", alpha=0.12, lw=0)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("mean return (95 % interval); falls on top")
    episodes = rows[0]["episodes"] if rows else 0
    ax.set_title(title or f"teacher vs student per scenario, {episodes} held-out episodes each "
                          f"(shaded: student degrades first)", fontsize=10)
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(loc="upper right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
