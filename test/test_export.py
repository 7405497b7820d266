"""ONNX export: normalization inside the graph, torch vs ONNX Runtime parity, blocked bad
exports."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from policy_distill_ros.training.export import (
    ExportConfig,
    ExportParityError,
    check_parity,
    export_onnx,
    export_policy,
    inference_module,
    parity_inputs,
)
from policy_distill_ros.training.networks import MLPPolicy, StudentConfig, build_student
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig

OBS, ACT, HIST = 12, 3, 3


def make_student(kind: str, squash: bool = False):
    torch.manual_seed(7)
    cfg = StudentConfig(kind=kind, obs_size=OBS, action_size=ACT, hidden_sizes=(32, 32),
                        history_length=HIST, conv_channels=(8, 8), gru_hidden_size=16,
                        squash_output=squash)
    student = build_student(cfg)
    norm = EmpiricalNormalizer(NormalizerConfig(size=OBS))
    scale, shift = torch.linspace(0.1, 5.0, OBS), torch.linspace(-3.0, 3.0, OBS)
    norm.update(torch.randn(500, OBS) * scale + shift)
    return student, norm


def sample_obs(n: int = 32) -> torch.Tensor:
    torch.manual_seed(8)
    return torch.randn(n, OBS) * 2.0


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("kind", ["mlp", "history_mlp", "tcn", "gru"])
def test_exported_graph_matches_torch_with_normalization_inside(kind, exporter):
    student, norm = make_student(kind, squash=(kind == "tcn"))
    config = ExportConfig(exporter=exporter)
    module = inference_module(student, norm)
    model, _ = export_onnx(module, sample_obs()[:1], config)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if kind == "gru":
        assert inputs == ["obs", "h_in"] and outputs == ["actions", "h_out"]
    else:
        assert inputs == ["obs"] and outputs == ["actions"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, OBS]
    assert model.opset_import[0].version >= 17
    # the raw observation goes in: the normalizer's statistics are in the graph
    initializers = {tuple(np.round(onnx.numpy_helper.to_array(t).reshape(-1), 5))
                    for t in model.graph.initializer}
    assert tuple(np.round(norm.mean.numpy(), 5)) in initializers
    report = check_parity(module, model, parity_inputs(sample_obs(), norm, config), config)
    assert report.passed, report
    assert report.max_abs_error <= 1e-5 and report.samples == 31 + config.parity_random_samples
    if kind == "gru":
        assert report.max_abs_error_hidden is not None and report.max_abs_error_hidden <= 1e-5


def test_export_leaves_the_callers_modules_untouched():
    student, norm = make_student("mlp")
    student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    module = inference_module(student, norm)
    with torch.no_grad():
        module.student.mean_head.bias.add_(1.0)
    assert student.training and not norm.frozen
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]), key


class BranchyStudent(MLPPolicy):
    """Data-dependent Python control flow: tracing bakes in one branch (a classic export bug)."""

    def forward(self, obs, return_features=False):
        out = super().forward(obs, return_features)
        if float(obs.sum()) > 0:
            return out._replace(mean=out.mean + 1.0)
        return out


def test_parity_failure_blocks_the_export_and_writes_nothing(tmp_path):
    cfg = StudentConfig(kind="mlp", obs_size=OBS, action_size=ACT, hidden_sizes=(8,))
    student = BranchyStudent(cfg)
    norm = EmpiricalNormalizer(NormalizerConfig(size=OBS))
    target = tmp_path / "policy.onnx"
    target.write_bytes(b"previous good model")
    trace_row = torch.full((1, OBS), 1.0)  # positive sum: the +1 branch is traced
    with pytest.raises(ExportParityError, match="blocked") as info:
        export_policy(student, norm, meta=None, path=target,
                      sample_obs=torch.cat([trace_row, -trace_row]))
    assert "TracerWarning" in str(info.value)  # the exporter's hint is passed on
    assert info.value.report is not None and not info.value.report.passed
    assert info.value.report.max_abs_error == pytest.approx(1.0, abs=1e-5)
    assert target.read_bytes() == b"previous good model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.onnx"]


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(4, OBS + 1), r"\[N >= 1, 12\]"),
    (torch.full((2, OBS), float("nan")), "NaN"),
])
def test_export_rejects_bad_sample_obs(tmp_path, bad, match):
    student, norm = make_student("mlp")
    with pytest.raises(ValueError, match=match):
        export_policy(student, norm, meta=None, path=tmp_path / "p.onnx", sample_obs=bad)
    assert not list(tmp_path.iterdir())


def test_export_config_validation():
    with pytest.raises(ValueError, match="exporter"):
        ExportConfig(exporter="tflite")
    with pytest.raises(ValueError, match=">= 18"):
        ExportConfig(exporter="dynamo", opset=17)
    assert ExportConfig().opset == 17 and ExportConfig(exporter="dynamo").opset == 18


# ----------------------------------------------------------- full export with metadata (needs core)

SPEC = {
    "observation": {
        "history_length": 1,
        "terms": [
            {"name": "joint_pos", "topic": "joint_states", "field": "position",
             "joints": ["hip", "knee"]},
            {"name": "joint_vel", "topic": "joint_states", "field": "velocity",
             "joints": ["hip", "knee"], "scale": 0.1},
            {"name": "base_ang_vel", "topic": "imu", "field": "angular_velocity", "size": 3},
            {"name": "last_action", "kind": "last_action"},
        ],
    },
    "action": {"joints": ["hip", "knee"], "scale": 1.0, "offset": [0.0, 0.0], "lower": [-1.0, -1.0],
               "upper": [1.0, 1.0]},
    "rate_hz": 50.0,
}
SPEC_OBS, SPEC_ACT = 9, 2


def spec_metadata():
    from policy_distill_ros.core import policy_file
    return policy_file, policy_file.PolicyMetadata.from_props({
        "policy_distill_ros.format": "1",
        "observation_spec": json.dumps(SPEC["observation"]),
        "action_spec": json.dumps(SPEC["action"]),
        "rate_hz": json.dumps(SPEC["rate_hz"]),
        "history_layout": "oldest_first_term_major",
        "recurrent_state": json.dumps([]),
        "provenance": json.dumps({"teacher_hash": "abc123", "dataset": "unit-test",
                                  "losses": {"bc_weight": 1.0}, "metrics": {}}),
    })


@pytest.mark.parametrize("kind", ["mlp", "gru"])
def test_export_policy_writes_a_file_core_loads_with_parity_in_provenance(tmp_path, kind):
    policy_file, meta = spec_metadata()
    torch.manual_seed(9)
    student = build_student(StudentConfig(kind=kind, obs_size=SPEC_OBS, action_size=SPEC_ACT,
                                          hidden_sizes=(16,), gru_hidden_size=8))
    norm = EmpiricalNormalizer(NormalizerConfig(size=SPEC_OBS))
    norm.update(torch.randn(200, SPEC_OBS) * 2 + 1)
    samples = torch.randn(16, SPEC_OBS)
    report = export_policy(student, norm, meta, tmp_path / "student.onnx", samples)
    assert report.passed and report.max_abs_error <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student.onnx"]
    stored = policy_file.read_metadata(tmp_path / "student.onnx")
    parity = stored.provenance["metrics"]["onnx_parity"]
    assert parity["max_abs_error"] == pytest.approx(report.max_abs_error)
    assert stored.provenance["teacher_hash"] == "abc123"
    if kind == "gru":
        assert stored.recurrent_state == [{"input": "h_in", "output": "h_out", "shape": [1, 1, 8]}]
    policy = policy_file.OnnxPolicy(tmp_path / "student.onnx")
    module = inference_module(student, norm)
    hidden = module.student.initial_state(1) if kind == "gru" else None
    for row in torch.randn(5, SPEC_OBS) * 3:
        with torch.no_grad():
            if kind == "gru":
                expected, hidden = module(row.reshape(1, -1), hidden)
            else:
                expected = module(row.reshape(1, -1))
        got = np.asarray(policy.policy(row.numpy())).reshape(-1)
        np.testing.assert_allclose(got, expected.numpy().reshape(-1), atol=1e-5, rtol=0)


def test_attach_metadata_is_read_back_by_onnxruntime():
    import onnxruntime as ort

    from policy_distill_ros.training.export import attach_metadata

    class Props:
        def to_props(self):
            return {"policy_distill_ros.format": "1", "rate_hz": "50.0"}

    student, norm = make_student("mlp")
    model, _ = export_onnx(inference_module(student, norm), sample_obs()[:1], ExportConfig())
    entry = model.metadata_props.add()
    entry.key, entry.value = "rate_hz", "stale"
    tagged = attach_metadata(model, Props())
    session = ort.InferenceSession(tagged.SerializeToString(), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == {"policy_distill_ros.format": "1",
                                                          "rate_hz": "50.0"}
    assert len(model.metadata_props) == 1  # the input model is not modified
