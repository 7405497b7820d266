"""Random-weights teachers in the teacher_io format, for the teacher node and record tests."""
from __future__ import annotations

from pathlib import Path

import torch

from policy_distill_ros.core.spec import PolicySpec, load_policy_spec
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.teacher_io import save_teacher
from policy_distill_ros.training.teacher_runner import SPEC_INFO_KEY

REPO = Path(__file__).resolve().parents[1]
TEACHER_SPEC = REPO / "config/specs/ant_teacher.yaml"
STUDENT_SPEC = REPO / "config/specs/ant_student.yaml"


def make_random_teacher(directory, spec=TEACHER_SPEC, seed: int = 0,
                        hidden_sizes=(64, 64), store_spec: bool = True) -> str:
    """A teacher with random weights and a non-trivial normalizer; returns its sha256."""
    spec = spec if isinstance(spec, PolicySpec) else load_policy_spec(spec)
    torch.manual_seed(seed)
    obs_size, action_size = spec.observation.size, spec.action.size
    teacher = TeacherPolicy(TeacherConfig(obs_size=obs_size, action_size=action_size,
                                          hidden_sizes=tuple(hidden_sizes), activation="elu"))
    with torch.no_grad():   # big enough outputs that a wrong input shows in the action
        teacher.mean_head.weight.mul_(4.0)
    normalizer = EmpiricalNormalizer(NormalizerConfig(size=obs_size, eps=1e-8,
                                                      eps_placement="var", clip=10.0))
    normalizer.set_statistics(torch.randn(obs_size) * 0.1, torch.rand(obs_size) + 0.5, 100.0)
    info = {SPEC_INFO_KEY: spec.to_dict()} if store_spec else {}
    return save_teacher(teacher, normalizer.freeze(), directory, info=info)
