"""Small teachers, students and simulator configs for the closed-loop tests (rollout, eval,
DAgger, progressive): random-weight teachers on the real specs, episodes of a few dozen steps."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.sim.config import load_sim_config
from policy_distill_ros.training.networks import TeacherConfig, TeacherPolicy
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.teacher_io import save_teacher
from policy_distill_ros.training.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
STUDENT_SPEC = REPO / "config/specs/ant_student.yaml"
TEACHER_SPEC = REPO / "config/specs/ant_teacher.yaml"
SIM_CONFIG = REPO / "config/sim.yaml"


def specs():
    """(student spec, teacher spec) of the demo robot."""
    return load_policy_spec(STUDENT_SPEC), load_policy_spec(TEACHER_SPEC)


def sim_config(steps: int = 40):
    """The demo simulator (randomized dynamics), with short episodes."""
    return dataclasses.replace(load_sim_config(SIM_CONFIG), max_episode_steps=steps)


def make_teacher(seed: int = 0, hidden=(64, 64), normalized: bool = True):
    """A random-weight teacher on the teacher spec, with a non-trivial frozen normalizer."""
    _, teacher_spec = specs()
    size = teacher_spec.observation.size
    torch.manual_seed(seed)
    teacher = TeacherPolicy(TeacherConfig(obs_size=size, action_size=teacher_spec.action.size,
                                          hidden_sizes=hidden, init_std=0.3)).eval()
    teacher.requires_grad_(False)
    normalizer = None
    if normalized:
        normalizer = EmpiricalNormalizer(NormalizerConfig(size=size, eps=1e-8,
                                                          eps_placement="var", clip=10.0))
        gen = torch.Generator().manual_seed(seed)
        normalizer.set_statistics(torch.randn(size, generator=gen) * 0.1,
                                  torch.rand(size, generator=gen) + 0.5, 100.0)
        normalizer.freeze()
    return teacher, normalizer


def save_random_teacher(directory, seed: int = 0, hidden=(64, 64)) -> str:
    teacher, normalizer = make_teacher(seed, hidden)
    save_teacher(teacher, normalizer, directory, info={"source": "test: random weights"})
    return str(directory)


def train_config(epochs: int = 10, hidden=(32, 32), kind: str = "mlp", student=None,
                 **kw) -> TrainConfig:
    student_spec, _ = specs()
    d = {"student": {"kind": kind, "hidden_sizes": list(hidden), **(student or {})},
         "epochs": epochs,
         "batch_size": 64, "lr": 3e-3, "val_fraction": 0.25}
    d.update(kw)
    return TrainConfig.from_dict(d, student_spec=student_spec)
