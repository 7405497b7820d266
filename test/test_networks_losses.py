"""Networks, normalizer and distillation losses: shapes, layouts and behaviour under training."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from policy_distill_ros.training.losses import (
    DistillationLoss,
    LossConfig,
    bc_loss,
    categorical_kl,
    gaussian_kl,
    teacher_student_kl,
)
from policy_distill_ros.training.networks import (
    GRUPolicy,
    PolicyOutput,
    StudentConfig,
    TeacherConfig,
    TeacherPolicy,
    build_student,
    count_parameters,
)
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig

OBS, ACT, HIST = 12, 3, 4


def student_config(kind: str, **overrides) -> StudentConfig:
    base = dict(kind=kind, obs_size=OBS, action_size=ACT, hidden_sizes=(16, 8), history_length=HIST,
                conv_channels=(5, 6), gru_hidden_size=7)
    base.update(overrides)
    return StudentConfig(**base)


# ---------------------------------------------------------------- normalizer

def test_normalizer_running_update_equals_full_batch_statistics():
    torch.manual_seed(0)
    scale = torch.tensor([1.0, 2.0, 0.5, 10.0, 3.0])
    shift = torch.tensor([0.0, 1.0, -2.0, 5.0, 7.0])
    data = torch.randn(300, 5) * scale + shift
    norm = EmpiricalNormalizer(NormalizerConfig(size=5))
    for chunk in torch.split(data, [1, 17, 82, 200]):
        norm.update(chunk)
    assert float(norm.count) == 300
    torch.testing.assert_close(norm.mean, data.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm.var, data.var(0, unbiased=False), atol=1e-4, rtol=1e-5)


def test_normalizer_formulas_clip_and_freeze():
    x = torch.tensor([[3.0, -1.0]])
    std_eps = EmpiricalNormalizer(NormalizerConfig(size=2, eps=0.5, eps_placement="std"))
    std_eps.set_statistics(torch.tensor([1.0, 0.0]), torch.tensor([4.0, 1.0]), count=10)
    torch.testing.assert_close(std_eps(x), torch.tensor([[2.0 / 2.5, -1.0 / 1.5]]))
    var_eps = EmpiricalNormalizer(NormalizerConfig(size=2, eps=0.5, eps_placement="var", clip=0.9))
    var_eps.set_statistics(torch.tensor([1.0, 0.0]), torch.tensor([4.0, 1.0]), count=10)
    torch.testing.assert_close(var_eps(x), torch.tensor([[0.9, -1.0 / math.sqrt(1.5)]]))
    var_eps.freeze()
    var_eps.update(torch.randn(10, 2) * 100)
    torch.testing.assert_close(var_eps.mean, torch.tensor([1.0, 0.0]))
    assert float(var_eps.count) == 10


@pytest.mark.parametrize("bad", [dict(size=0), dict(size=3, eps=0.0),
                                 dict(size=3, eps_placement="both"), dict(size=3, clip=-1.0)])
def test_normalizer_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="NormalizerConfig"):
        NormalizerConfig(**bad)


def test_normalizer_rejects_wrong_shape_and_nan():
    norm = EmpiricalNormalizer(NormalizerConfig(size=3))
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        norm.update(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="NaN"):
        norm.update(torch.tensor([[0.0, float("nan"), 1.0]]))


# ---------------------------------------------------------------- networks

@pytest.mark.parametrize("kind", ["mlp", "history_mlp", "tcn", "gru"])
def test_student_outputs_and_named_features(kind):
    net = build_student(student_config(kind))
    obs = torch.randn(5, OBS)
    out = net(obs, return_features=True)
    assert isinstance(out, PolicyOutput)
    assert out.mean.shape == (5, ACT) and out.log_std.shape == (5, ACT)
    assert set(out.features) == set(net.feature_sizes())
    for name, size in net.feature_sizes().items():
        assert out.features[name].shape == (5, size), name
    assert net(obs).features == {}
    torch.testing.assert_close(net.act(obs), out.mean)


def test_tcn_follows_oldest_first_term_major_layout():
    """With kernel 1 a conv output at time t depends only on obs[t*step:(t+1)*step]."""
    net = build_student(student_config("tcn", conv_kernel_size=1, conv_channels=(4,)))
    step = OBS // HIST
    obs = torch.randn(1, OBS)
    changed = obs.clone()
    changed[0, 2 * step:3 * step] += 1.0  # time step 2 of 0..3 (oldest first)
    a = net(obs, return_features=True).features["conv_0"].reshape(4, HIST)
    b = net(changed, return_features=True).features["conv_0"].reshape(4, HIST)
    moved = (a - b).abs().sum(dim=0) > 1e-6
    assert moved.tolist() == [False, False, True, False]


def test_gru_sequence_equals_steps_and_episode_starts_reset_state():
    torch.manual_seed(1)
    net = build_student(student_config("gru"))
    assert isinstance(net, GRUPolicy) and net.is_recurrent
    seq = torch.randn(2, 6, OBS)
    whole = net(seq)
    assert whole.mean.shape == (2, 6, ACT) and whole.hidden.shape == (1, 2, 7)
    hidden = None
    for t in range(6):
        step = net(seq[:, t], hidden)
        hidden = step.hidden
        torch.testing.assert_close(step.mean, whole.mean[:, t], atol=1e-6, rtol=1e-6)
    starts = torch.zeros(2, 6, dtype=torch.bool)
    starts[:, 3] = True
    reset = net(seq, episode_starts=starts)
    fresh = net(seq[:, 3:])
    torch.testing.assert_close(reset.mean[:, 3:], fresh.mean, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(reset.mean[:, 3:], whole.mean[:, 3:])


def test_teacher_state_dependent_std_is_clamped_and_squash_applies_tanh():
    cfg = TeacherConfig(obs_size=4, action_size=2, hidden_sizes=(8,), activation="relu",
                        std_mode="state_dependent", log_std_min=-1.0, log_std_max=0.5,
                        squash_output=True)
    teacher = TeacherPolicy(cfg)
    with torch.no_grad():
        teacher.log_std_head.bias.fill_(100.0)
    out = teacher(torch.randn(3, 4), return_features=True)
    assert torch.all(out.log_std == 0.5)
    assert set(out.features) == {"layer_0"}
    ones = torch.ones(1, 4)
    torch.testing.assert_close(teacher.act(ones), torch.tanh(teacher(ones).mean))


def test_count_parameters_matches_layer_arithmetic():
    net = build_student(student_config("mlp", hidden_sizes=(16, 8)))
    expected = (OBS * 16 + 16) + (16 * 8 + 8) + (8 * ACT + ACT) + ACT  # + log_std
    assert count_parameters(net) == expected
    net.log_std.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == expected - ACT


@pytest.mark.parametrize("bad, match", [
    (dict(kind="transformer"), "kind"),
    (dict(kind="tcn", obs_size=13), "multiple of history_length"),
    (dict(kind="tcn", conv_kernel_size=2), "odd"),
    (dict(kind="mlp", activation="relu6"), "activation"),
    (dict(kind="mlp", hidden_sizes=(16, -1)), "hidden_sizes"),
    (dict(kind="mlp", init_std=0.0), "init_std"),
])
def test_student_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        student_config(**bad)


def test_configs_round_trip_through_dicts_and_reject_unknown_keys():
    cfg = student_config("tcn")
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="hiden_sizes"):
        StudentConfig.from_dict({**cfg.to_dict(), "hiden_sizes": [3]})
    tcfg = TeacherConfig(obs_size=3, action_size=1, extra={"source": "test"})
    assert TeacherConfig.from_dict(tcfg.to_dict()) == tcfg


# ---------------------------------------------------------------- losses: functions

def test_gaussian_kl_matches_monte_carlo():
    torch.manual_seed(2)
    mu_p, ls_p = torch.randn(4), torch.randn(4) * 0.3
    mu_q, ls_q = torch.randn(4), torch.randn(4) * 0.3
    p = torch.distributions.Normal(mu_p, ls_p.exp())
    q = torch.distributions.Normal(mu_q, ls_q.exp())
    x = p.sample((200_000,))
    mc = (p.log_prob(x) - q.log_prob(x)).sum(-1).mean()
    analytic = gaussian_kl(mu_p, ls_p, mu_q, ls_q)
    assert abs(float(analytic) - float(mc)) < 0.03 * max(1.0, float(analytic))
    torch.testing.assert_close(analytic, torch.distributions.kl_divergence(p, q).sum())


def test_gaussian_temperature_moves_the_optimal_student_std():
    mu, ls = torch.randn(8, 2), torch.randn(8, 2) * 0.2
    for temperature in (0.5, 1.0, 2.0):
        at_optimum = teacher_student_kl(mu, ls, mu, ls + math.log(temperature), temperature)
        assert abs(float(at_optimum)) < 1e-6
        student_ls = (ls + math.log(temperature)).clone().requires_grad_(True)
        teacher_student_kl(mu, ls, mu, student_ls, temperature).backward()
        assert student_ls.grad.abs().max() < 1e-6
        if temperature != 1.0:
            assert float(teacher_student_kl(mu, ls, mu, ls, temperature)) > 1e-3


def test_categorical_kl_temperature_softens_teacher_and_scales_by_t_squared():
    teacher = torch.tensor([[4.0, 1.0, 0.0]])
    student = torch.tensor([[2.0, 2.0, 0.0]])
    for temperature in (1.0, 3.0):
        p = torch.softmax(teacher / temperature, -1)
        q = torch.softmax(student / temperature, -1)
        manual = (p * (p.log() - q.log())).sum() * temperature ** 2
        torch.testing.assert_close(categorical_kl(teacher, student, temperature), manual)
    entropy = [float(torch.distributions.Categorical(logits=teacher / t).entropy())
               for t in (0.5, 1.0, 4.0)]
    assert entropy[0] < entropy[1] < entropy[2]
    assert float(categorical_kl(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_bc_loss_kinds_and_shape_check():
    a, b = torch.zeros(4, 2), torch.full((4, 2), 3.0)
    assert float(bc_loss(a, b, "mse")) == pytest.approx(9.0)
    assert float(bc_loss(a, b, "huber", huber_delta=1.0)) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="student"):
        bc_loss(a, torch.zeros(4, 3))


# ------------------------------------------------------------- losses: behaviour on a toy problem

TERM_CONFIGS = {
    "bc_mse": LossConfig(bc_weight=1.0, bc_kind="mse"),
    "bc_huber": LossConfig(bc_weight=1.0, bc_kind="huber"),
    "kl": LossConfig(bc_weight=0.0, kl_weight=1.0, temperature=1.5),
    "feature_l2": LossConfig(bc_weight=0.0, feature_weight=1.0,
                             feature_pairs=(("layer_0", "layer_0"),)),
    "feature_cosine": LossConfig(bc_weight=0.0, feature_weight=1.0, feature_kind="cosine",
                                 feature_pairs=(("layer_1", "layer_1"),)),
    "feature_cross_width": LossConfig(bc_weight=0.0, feature_weight=1.0,
                                      feature_pairs=(("layer_1", "layer_0"),)),
    "categorical": LossConfig(action_type="discrete", bc_weight=0.0, kl_weight=1.0,
                              temperature=2.0),
    "cross_entropy": LossConfig(action_type="discrete", bc_weight=1.0, bc_kind="cross_entropy"),
}


def toy_pair(seed: int = 3) -> tuple[TeacherPolicy, TeacherPolicy]:
    torch.manual_seed(seed)
    cfg = TeacherConfig(obs_size=6, action_size=3, hidden_sizes=(16, 12), activation="tanh",
                        init_std=0.5)
    return TeacherPolicy(cfg), TeacherPolicy(cfg)


@pytest.mark.parametrize("name", sorted(set(TERM_CONFIGS)
                                        - {"cross_entropy", "feature_cross_width"}))
def test_each_loss_is_zero_for_identical_nets_and_positive_otherwise(name):
    teacher, student = toy_pair()
    cfg = TERM_CONFIGS[name]
    loss = DistillationLoss(cfg, teacher.feature_sizes(), student.feature_sizes())
    if loss.features is not None:  # identity projections (equal widths in these pairs)
        for proj in loss.features.projections.values():
            with torch.no_grad():
                proj.weight.copy_(torch.eye(proj.weight.shape[0]))
                proj.bias.zero_()
    identical = copy.deepcopy(teacher)
    if cfg.kl_weight > 0 and cfg.action_type == "continuous":
        with torch.no_grad():  # the documented optimum: student std = T * teacher std
            identical.log_std += math.log(cfg.temperature)
    key = {"bc_mse": "bc", "bc_huber": "bc", "kl": "kl", "categorical": "kl"}.get(name, "feature")
    obs = torch.randn(64, 6)
    with torch.no_grad():
        _, same = loss(identical(obs, True), teacher(obs, True))
        _, other = loss(student(obs, True), teacher(obs, True))
    assert abs(float(same[key])) < 1e-6, same
    assert float(other[key]) > 1e-4, other


@pytest.mark.parametrize("name", sorted(TERM_CONFIGS))
def test_gradient_descent_reduces_each_loss_and_leaves_teacher_frozen(name):
    teacher, student = toy_pair(seed=4)
    teacher.requires_grad_(False)
    teacher_before = copy.deepcopy(teacher.state_dict())
    loss = DistillationLoss(TERM_CONFIGS[name], teacher.feature_sizes(), student.feature_sizes())
    opt = torch.optim.Adam(list(student.parameters()) + list(loss.parameters()), lr=1e-2)
    obs = torch.randn(256, 6)
    with torch.no_grad():
        teacher_out = teacher(obs, True)
    first = loss(student(obs, True), teacher_out)[0].item()
    for _ in range(150):
        opt.zero_grad()
        total, _ = loss(student(obs, True), teacher_out)
        total.backward()
        opt.step()
    last = loss(student(obs, True), teacher_out)[0].item()
    assert last < 0.5 * first, (first, last)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key


def test_teacher_gets_no_gradient_even_when_not_marked_frozen():
    teacher, student = toy_pair(seed=5)
    loss = DistillationLoss(LossConfig(bc_weight=1.0, kl_weight=1.0))
    total, _ = loss(student(torch.randn(8, 6)), teacher(torch.randn(8, 6)))
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_combined_total_is_weighted_sum_of_terms():
    teacher, student = toy_pair(seed=6)
    cfg = LossConfig(bc_weight=2.0, kl_weight=0.5, feature_weight=3.0,
                     feature_pairs=(("layer_1", "layer_1"),))
    loss = DistillationLoss(cfg, teacher.feature_sizes(), student.feature_sizes())
    obs = torch.randn(16, 6)
    total, terms = loss(student(obs, True), teacher(obs, True))
    expected = 2.0 * terms["bc"] + 0.5 * terms["kl"] + 3.0 * terms["feature"]
    torch.testing.assert_close(total, expected)
    assert terms["total"] is total


@pytest.mark.parametrize("bad, match", [
    (dict(bc_weight=0.0), "every weight is 0"),
    (dict(kl_weight=-1.0), "kl_weight"),
    (dict(temperature=0.0), "temperature"),
    (dict(feature_weight=1.0), "feature_pairs"),
    (dict(bc_kind="l1"), "bc_kind"),
    (dict(bc_kind="cross_entropy"), "does not fit"),
    (dict(feature_weight=1.0, feature_pairs=(("layer_0",),)), "feature_pairs"),
])
def test_loss_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        LossConfig(**bad)


def test_feature_matching_names_a_missing_layer():
    teacher, student = toy_pair()
    with pytest.raises(ValueError, match="layer_7"):
        DistillationLoss(LossConfig(feature_weight=1.0, feature_pairs=(("layer_7", "layer_0"),)),
                         teacher.feature_sizes(), student.feature_sizes())
    cosine = TERM_CONFIGS["feature_cosine"]
    assert LossConfig.from_dict(cosine.to_dict()) == cosine


def test_limit_aware_error_is_the_error_of_the_executed_action():
    from policy_distill_ros.training.losses import limit_aware_error
    lo, hi = torch.full((5,), -1.0), torch.full((5,), 1.0)
    teacher = torch.tensor([[0.5, 3.0, 3.0, -2.0, -2.0]])
    student = torch.tensor([[0.2, 1.5, 0.4, -1.0, 2.0]], requires_grad=True)
    diff = limit_aware_error(student, teacher, lo, hi)
    # inside: plain error; saturated the same way: exact; short of the limit: the gap
    assert torch.allclose(diff, torch.tensor([[-0.3, 0.0, -0.6, 0.0, 3.0]]))
    diff.square().sum().backward()
    assert student.grad[0, 1] == 0 and student.grad[0, 3] == 0 and student.grad[0, 2] < 0
    loss = DistillationLoss(LossConfig(bc_weight=1.0, kl_weight=1.0), action_bounds=(lo, hi))
    s_out = PolicyOutput(student.detach(), torch.zeros(1, 5), {})
    t_out = PolicyOutput(teacher, torch.zeros(1, 5), {})
    _, terms = loss(s_out, t_out)
    assert float(terms["bc"]) == pytest.approx(float(diff.detach().square().mean()))
    clipped = PolicyOutput(teacher.clamp(-1, 1), torch.zeros(1, 5), {})
    assert float(terms["kl"]) == pytest.approx(float(DistillationLoss(LossConfig(
        bc_weight=0.0, kl_weight=1.0))(s_out, clipped)[1]["kl"]))   # KL centred on the clip
