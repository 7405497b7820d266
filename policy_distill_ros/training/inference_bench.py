"""Inference latency of several policy files side by side, and the observations to feed them.

`interleaved_latency` times `OnnxPolicy.__call__` (the node's inference path, one intra-op
thread) for every file on the same observation rows, round-robin per row, so load changes on a
shared machine hit every file alike and the ratios stay meaningful even when the microseconds
do not. `inference_memory` is the resident memory of a fresh process running one file (what
the model and ONNX Runtime add to the student node). `student_observations` rolls a policy
file out on the embedded simulator and returns the observations it saw (calibration and
parity inputs, from seeds the caller chooses).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from policy_distill_ros.core.policy_file import OnnxPolicy

__all__ = ["interleaved_latency", "student_observations", "machine_load", "inference_memory"]


def interleaved_latency(paths: Mapping[str, str | os.PathLike], obs: np.ndarray,
                        repeats: int = 1, warmup: int = 50) -> dict[str, dict]:
    """{name: {p50_us, p99_us, mean_us, calls}} of each policy on `obs` rows, round-robin.

    The order of the files rotates per row so none is always first after a cache-cold switch.
    Recurrent policies carry their state through the rows (as along an episode).
    """
    policies = {name: OnnxPolicy(path) for name, path in paths.items()}
    names = list(policies)
    obs = np.asarray(obs, dtype=np.float32)
    for name in names:
        for row in obs[:warmup]:
            policies[name](row)
        policies[name].reset_state()
    times: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for r in range(max(1, repeats)):
        for i, row in enumerate(obs):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                policy = policies[name]
                t0 = clock()
                policy(row)
                times[name].append(clock() - t0)
    out = {}
    for name in names:
        us = np.asarray(times[name], dtype=np.float64) / 1e3
        out[name] = {"p50_us": float(np.percentile(us, 50)), "p99_us": float(np.percentile(us, 99)),
                     "mean_us": float(us.mean()), "calls": int(us.size)}
    return out


def student_observations(path: str | os.PathLike, sim_config, seeds: Sequence[int],
                         sim_seed: int = 0) -> np.ndarray:
    """[N, obs] observations of the policy file driving the simulator on `seeds`, in order."""
    from .rollout import STUDENT, MultiViewSim, OnnxActor
    actor = OnnxActor(path)
    sim = MultiViewSim({STUDENT: actor.spec}, sim_config, sim_seed)
    try:
        rows = [sim.run_episode(int(s), actor, record=True).obs[STUDENT] for s in seeds]
    finally:
        sim.close()
    return np.concatenate(rows).astype(np.float32)


def machine_load() -> str:
    """'load 3.9 / 2 cores' (1-minute load average), to print next to timing figures."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"load {one:.1f} / {os.cpu_count()} cores"


_MEMORY_SCRIPT = r"""
import json, sys
import numpy as np
import onnxruntime
from policy_distill_ros.core.memory import process_memory_mib
from policy_distill_ros.core.policy_file import OnnxPolicy
before = process_memory_mib()['rss_mib']
policy = OnnxPolicy(sys.argv[1])
obs = np.zeros(policy.obs_size, np.float32)
for _ in range(1000):
    policy(obs)
after = process_memory_mib()
print(json.dumps(dict(after, session_mib=after['rss_mib'] - before)))
"""


def inference_memory(path: str | Path, repeats: int = 3) -> dict[str, float]:
    """Median over fresh processes of: RSS and peak (MiB) of a process that imported numpy and
    onnxruntime, loaded the file through OnnxPolicy and ran it 1000 times; `session_mib` is
    what the model's session added (ONNX Runtime arena and weights included)."""
    rows = []
    for _ in range(max(1, repeats)):
        res = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
