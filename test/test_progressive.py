"""Progressive distillation: a chain of shrinking students, each the next one's teacher."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distill_fixtures import make_teacher, sim_config, specs, train_config
from policy_distill_ros.training.networks import StudentConfig, build_student, count_parameters
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.progressive import (
    ProgressiveConfig,
    StudentAsTeacher,
    run_progressive,
)
from policy_distill_ros.training.rollout import collect, teacher_actor
from policy_distill_ros.training.trainer import fit, teacher_outputs


@pytest.fixture(scope="module")
def data():
    student_spec, teacher_spec = specs()
    teacher = make_teacher(seed=5)
    dataset = collect(student_spec, teacher_spec, sim_config(40), range(10),
                      teacher_actor(*teacher)).dataset
    return teacher, dataset


def test_student_as_teacher_gives_the_students_gaussian_and_features_and_stays_frozen():
    student = build_student(StudentConfig(kind="mlp", obs_size=6, action_size=2,
                                          hidden_sizes=(8, 4)))
    norm = EmpiricalNormalizer(NormalizerConfig(size=6))
    norm.update(torch.randn(50, 6) * 3 + 1)
    norm.freeze()
    wrapped = StudentAsTeacher(student, norm)
    x = torch.randn(5, 6)
    out = wrapped(x, return_features=True)
    ref = student(norm(x), return_features=True)
    assert torch.equal(out.mean, ref.mean) and torch.equal(out.log_std, ref.log_std)
    assert set(out.features) == {"layer_0", "layer_1"}
    assert wrapped.feature_sizes() == {"layer_0": 8, "layer_1": 4}
    assert wrapped.config.obs_size == 6 and wrapped.config.action_size == 2
    assert not any(p.requires_grad for p in wrapped.parameters())
    with pytest.raises(ValueError, match="recurrent"):
        StudentAsTeacher(build_student(StudentConfig(kind="gru", obs_size=6, action_size=2)),
                         norm)


def test_fit_accepts_a_wrapped_student_as_teacher_and_leaves_it_unchanged(data):
    teacher, dataset = data
    first = fit(*teacher, dataset, train_config(epochs=3, hidden=(32, 32)), progress=False)
    wrapped = StudentAsTeacher(first.student, first.student_normalizer)
    before = {k: v.clone() for k, v in wrapped.state_dict().items()}
    second_data = type(dataset)(dataset.student_obs, dataset.student_obs, dataset.actions,
                                dataset.episode_id, dataset.episode_return)
    second = fit(wrapped, None, second_data, train_config(epochs=6, hidden=(8,)), progress=False)
    for k, v in wrapped.state_dict().items():
        assert torch.equal(v, before[k]), k
    hist = second.history
    assert hist[-1]["train"]["total"] < hist[0]["train"]["total"]
    # its targets were the wrapped student's actions
    target = wrapped.deterministic(teacher_outputs(wrapped, None, dataset.student_obs[:5]))
    with torch.no_grad():
        want = first.student.deterministic(first.student(
            first.student_normalizer(torch.as_tensor(dataset.student_obs[:5]))))
    assert torch.allclose(target, want)


def test_chain_produces_stages_with_decreasing_params_and_figures(data):
    teacher, dataset = data
    student_spec, _ = specs()
    config = ProgressiveConfig(
        stages=[{"kind": "mlp", "hidden_sizes": [96, 96]},
                {"kind": "history_mlp", "hidden_sizes": [32, 32]},
                {"kind": "history_mlp", "hidden_sizes": [12]}],
        eval_episodes=1)
    base = train_config(epochs=6, loss={"bc_weight": 1.0, "feature_weight": 0.1,
                                        "feature_pairs": [["layer_1", "layer_1"]]})
    seen = []
    out = run_progressive(*teacher, dataset, student_spec, sim_config(30), config, base,
                          on_stage=seen.append)
    stages = out.stages
    assert seen == stages and [s.stage for s in stages] == [1, 2, 3]
    params = [s.params for s in stages]
    assert params == sorted(params, reverse=True) and len(set(params)) == 3
    assert stages[0].teacher_params == count_parameters(teacher[0])
    assert [s.teacher_params for s in stages[1:]] == params[:-1]   # each student teaches next
    assert [count_parameters(r.student) for r in out.results] == params
    for s in stages:
        assert np.isfinite(s.val_error_vs_own_teacher) and np.isfinite(
            s.val_error_vs_original_teacher)
        assert s.eval_mean_return is not None
    # stage 1's own teacher is the original one
    assert stages[0].val_error_vs_own_teacher == pytest.approx(
        stages[0].val_error_vs_original_teacher)
    assert out.final is out.results[-1] and out.to_dict()["stages"][2]["params"] == params[2]


def test_config_validation():
    with pytest.raises(ValueError, match="at least one"):
        ProgressiveConfig(stages=[])
    with pytest.raises(ValueError, match="losses"):
        ProgressiveConfig(stages=[{"kind": "mlp"}], losses=[{}, {}])
    student_spec, _ = specs()
    with pytest.raises(ValueError, match=r"stages\[0\]"):
        ProgressiveConfig(stages=[{"kind": "transformer"}]).student_configs(student_spec)
