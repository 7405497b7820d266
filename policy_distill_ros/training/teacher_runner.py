"""A teacher directory as the teacher node runs it: observation vector in, deterministic action out.

The policy spec the teacher was trained with travels inside its directory (``teacher.json``
``info.policy_spec``, written by ``policy-distill import-teacher``); a spec given by the user is
checked against it, and against the network's input and output sizes, before anything runs.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policy_distill_ros.core.spec import PolicySpec, SpecError, load_policy_spec

from .teacher_io import TeacherInfo, load_teacher

__all__ = ["SPEC_INFO_KEY", "TeacherRunner", "spec_of_teacher", "spec_difference"]

SPEC_INFO_KEY = "policy_spec"   # teacher.json info key holding PolicySpec.to_dict()


def spec_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Path of the first difference between two plain spec dicts (None when equal)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in list(a) + [k for k in b if k not in a]:
            found = spec_difference(a.get(key), b.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where} (length {len(a)} vs {len(b)})"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = spec_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return None if float(a) == float(b) else f"{where} ({a!r} vs {b!r})"
    return None if a == b else f"{where} ({a!r} vs {b!r})"


def spec_of_teacher(info: TeacherInfo, spec: str | os.PathLike | Mapping | PolicySpec | None
                    = None) -> PolicySpec:
    """The teacher's PolicySpec: the one stored with it, checked against `spec` when given."""
    where = info.path or "teacher"
    stored = info.info.get(SPEC_INFO_KEY)
    given = None
    if spec is not None:
        given = spec if isinstance(spec, PolicySpec) else load_policy_spec(spec)
    if stored is None and given is None:
        raise SpecError(f"{where}: teacher.json has no info.{SPEC_INFO_KEY}; give the spec it "
                        f"was trained with (spec_path / --spec)")
    result = given if given is not None else load_policy_spec(stored)
    if stored is not None and given is not None:
        diff = spec_difference(load_policy_spec(stored).to_dict(), given.to_dict())
        if diff:
            raise SpecError(f"{where}: the given spec differs from the one stored with the "
                            f"teacher at {diff}")
    arch = info.architecture
    if result.observation.size != arch.obs_size:
        raise SpecError(f"{where}: the spec's observation has {result.observation.size} numbers, "
                        f"the teacher network takes {arch.obs_size}")
    if result.action.size != arch.action_size:
        raise SpecError(f"{where}: the spec's action has {result.action.size} joints, the "
                        f"teacher network outputs {arch.action_size}")
    return result


class TeacherRunner:
    """Loads a teacher directory (no pickle) and computes its deterministic raw action.

    `num_threads` sets torch's intra-op threads (1 on a shared machine: a [512, 512, 256] MLP
    gains nothing from more and would steal the simulator's core).
    """

    def __init__(self, path: str | os.PathLike,
                 spec: str | os.PathLike | Mapping | PolicySpec | None = None,
                 num_threads: int | None = 1) -> None:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        self.teacher, self.normalizer, self.info = load_teacher(path)
        self.spec = spec_of_teacher(self.info, spec)
        self.sha256 = self.info.sha256
        self._obs = torch.zeros(1, self.spec.observation.size)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1))
        if x.shape[1] != self._obs.shape[1]:
            raise ValueError(f"observation has {x.shape[1]} numbers, teacher takes "
                             f"{self._obs.shape[1]}")
        if self.normalizer is not None:
            x = self.normalizer(x)
        return self.teacher.act(x).numpy().astype(np.float64).reshape(-1)
