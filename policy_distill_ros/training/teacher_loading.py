"""Load any teacher with one call: our teacher directory, an SB3 zip or an rsl_rl checkpoint.

`load_teacher_any` is the one entry every command uses (train, dagger, evaluate, sweep,
robustness, import-teacher): it picks the reader from the path and returns the same triple
`(TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo)`. A teacher directory is read by
`teacher_io.load_teacher` (content hash verified); a checkpoint from elsewhere goes through
`importers`, whose imports end with the self-check against the source library's own policy
(`import_selfcheck.py`) and are refused rather than guessed. `recorded_spec` is the policy spec
stored with a teacher, when it has one.
"""
from __future__ import annotations

import os
from pathlib import Path

from policy_distill_ros.core.spec import PolicySpec, load_policy_spec

from .importers import import_rsl_rl, import_sb3
from .networks import TeacherPolicy
from .normalizer import EmpiricalNormalizer
from .teacher_io import META_FILE, TeacherInfo, load_teacher
from .teacher_runner import SPEC_INFO_KEY

__all__ = ["load_teacher_any", "recorded_spec", "TEACHER_KINDS"]

TEACHER_KINDS = ("auto", "directory", "sb3", "rsl_rl")
SUFFIX_KINDS = {".zip": "sb3", ".pt": "rsl_rl", ".pth": "rsl_rl"}


def load_teacher_any(path: str | os.PathLike, normalizer_path: str | os.PathLike | None = None,
                     *, kind: str = "auto", activation: str | None = None,
                     agent_config: str | os.PathLike | None = None,
                     normalizer_format: str | None = None
                     ) -> tuple[TeacherPolicy, EmpiricalNormalizer | None, TeacherInfo]:
    """A teacher directory (or its teacher.json), an SB3 .zip (+ `normalizer_path`: VecNormalize
    .pkl or statistics .json, `normalizer_format` "pickle" | "json" to force one) or an rsl_rl
    .pt (`activation` / `agent_config` when the run's params/agent.yaml is not beside it).
    `kind` ("auto": by the path; "directory" | "sb3" | "rsl_rl") names the reader when the user
    did (a wrong file is then refused by that reader, with its reason). Options that do not
    apply to the kind of teacher are refused, not ignored."""
    if kind not in TEACHER_KINDS:
        raise ValueError(f"teacher kind must be one of {TEACHER_KINDS}, got {kind!r}")
    path = Path(path)
    if kind == "auto":
        kind = "directory" if path.is_dir() or path.name == META_FILE else \
            SUFFIX_KINDS.get(path.suffix, "unknown")
    if kind == "directory":
        if normalizer_path or activation or agent_config:
            raise ValueError(f"teacher {path}: a teacher directory carries its own normalizer "
                             f"and architecture; remove teacher_normalizer / activation")
        return load_teacher(path)
    if kind == "sb3":   # a .json normalizer is read as JSON (checked, never unpickled)
        if activation or agent_config:
            raise ValueError(f"teacher {path}: activation / agent config are for rsl_rl; an "
                             f"SB3 zip records its own activation and layer sizes")
        return import_sb3(path, normalizer_path, normalizer_format=normalizer_format)
    if kind == "rsl_rl":
        if normalizer_path:
            raise ValueError(f"teacher {path}: an rsl_rl checkpoint carries its own normalizer; "
                             f"remove teacher_normalizer")
        return import_rsl_rl(path, activation=activation, agent_config=agent_config)
    raise ValueError(f"teacher {path}: expected a teacher directory, an SB3 .zip or an rsl_rl .pt")


def recorded_spec(info: TeacherInfo) -> PolicySpec | None:
    """The spec stored with the teacher (`info.policy_spec`, or the older `observation_spec` +
    `action_spec` pair), None when it has none (a fresh import)."""
    stored = info.info.get(SPEC_INFO_KEY)
    if isinstance(stored, dict):
        return load_policy_spec(stored)
    observation, action = info.info.get("observation_spec"), info.info.get("action_spec")
    if isinstance(observation, dict) and isinstance(action, dict):
        return PolicySpec.from_dict({"observation": observation, "action": action,
                                     "rate_hz": info.info.get("rate_hz", 20.0)})
    return None
