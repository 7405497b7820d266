"""Quantized students: int8 (static, dynamic) and fp16 variants keep the policy-file contract,
stay within their parity bound of the fp32 student, are refused (nothing written) beyond it, and
run in the real student node."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from distill_fixtures import specs
from policy_distill_ros.core.policy_file import OnnxPolicy, PolicyMetadata, read_metadata
from policy_distill_ros.core.spec import PolicySpec
from policy_distill_ros.training.export import export_policy
from policy_distill_ros.training.networks import StudentConfig, build_student
from policy_distill_ros.training.normalizer import EmpiricalNormalizer, NormalizerConfig
from policy_distill_ros.training.quantize import (
    DEFAULT_PARITY_ATOL,
    QuantizationParityError,
    quantize_policy,
    variant_path,
)

VARIANTS = ("int8", "int8_dynamic", "fp16")


def make_student(path, spec: PolicySpec, kind: str = "history_mlp", seed: int = 0):
    """A random-weight student of `kind` on `spec`, exported as the trainer does; returns
    observations drawn around its normalizer (calibration / parity inputs)."""
    torch.manual_seed(seed)
    size = spec.observation.size
    student = build_student(StudentConfig(
        kind=kind, obs_size=size, action_size=spec.action.size, hidden_sizes=(32, 32),
        history_length=spec.observation.history_length, conv_channels=(8, 8),
        gru_hidden_size=16))
    norm = EmpiricalNormalizer(NormalizerConfig(size=size, clip=10.0))
    scale = torch.linspace(0.05, 2.0, size)
    norm.update(torch.randn(2000, size) * scale + torch.linspace(-1.0, 1.0, size))
    norm.freeze()
    export_policy(student, norm, PolicyMetadata.from_spec(spec, provenance={"maker": "test"}),
                  path, torch.randn(8, size) * scale)
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((600, size)) * scale.numpy() + np.linspace(-1.0, 1.0, size)
    return obs.astype(np.float32)


@pytest.fixture(scope="module")
def ant_student(tmp_path_factory):
    student_spec, _ = specs()
    path = tmp_path_factory.mktemp("q") / "student.onnx"
    obs = make_student(path, student_spec)
    return path, obs


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_keeps_contract_and_parity(ant_student, variant):
    src, obs = ant_student
    dst, parity = quantize_policy(src, variant, obs[:300], obs[300:])
    assert dst == variant_path(src, variant) and dst.is_file()
    assert parity.passed and parity.max_abs_error <= DEFAULT_PARITY_ATOL[variant]
    assert parity.samples == 300
    # the same contract: specs, rate, layout (only provenance grows), float32 I/O
    a, b = read_metadata(src).to_props(), read_metadata(dst).to_props()
    assert {k: v for k, v in a.items() if k != "provenance"} == \
        {k: v for k, v in b.items() if k != "provenance"}
    quant = read_metadata(dst).provenance["quantization"]
    assert quant["variant"] == variant and quant["parity"]["passed"]
    assert read_metadata(dst).provenance["maker"] == "test"
    model = onnx.load(str(dst))
    assert [(i.name, i.type.tensor_type.elem_type) for i in model.graph.input] == \
        [("obs", onnx.TensorProto.FLOAT)]
    assert [(o.name, o.type.tensor_type.elem_type) for o in model.graph.output] == \
        [("actions", onnx.TensorProto.FLOAT)]
    ops = {n.op_type for n in model.graph.node}
    if variant == "int8":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    elif variant == "int8_dynamic":
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    else:
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    if variant == "fp16":   # int8 keeps the (here largest) first layer float by default
        assert dst.stat().st_size < 0.7 * src.stat().st_size   # metadata: ~4 KB
    # the node's loader, checked against the fp32 file's spec, gives the bounded commands
    fp32, quantized = OnnxPolicy(src), OnnxPolicy(dst, expected=read_metadata(src).policy_spec)
    action = fp32.spec.action
    worst = max(np.abs(action.postprocess(fp32(r).astype(np.float64))
                       - action.postprocess(quantized(r).astype(np.float64))).max()
                for r in obs[300:400])
    assert worst <= parity.max_abs_error + 1e-6


def test_int8_all_layers_quantizes_the_first_layer_too(ant_student, tmp_path):
    src, obs = ant_student
    default, _ = quantize_policy(src, "int8_dynamic", None, obs[300:], tmp_path / "a.onnx")
    full, _ = quantize_policy(src, "int8_dynamic", None, obs[300:], tmp_path / "b.onnx",
                              float_first_layer=False)
    count = [sum(n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")
                 for n in onnx.load(str(p)).graph.node) for p in (default, full)]
    assert count == [2, 3]   # 3 layers; the first stays float32 by default
    assert full.stat().st_size < 0.7 * src.stat().st_size < default.stat().st_size


def test_parity_beyond_bound_blocks_and_writes_nothing(ant_student, tmp_path):
    src, obs = ant_student
    dst = tmp_path / "blocked.onnx"
    with pytest.raises(QuantizationParityError, match="blocked: command error") as err:
        quantize_policy(src, "int8", obs[:300], obs[300:], dst, parity_atol=1e-7)
    assert err.value.parity.max_abs_error > 1e-7 and not err.value.parity.passed
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_refused(ant_student, tmp_path):
    src, obs = ant_student
    with pytest.raises(ValueError, match="variant must be one of"):
        quantize_policy(src, "int4", obs, obs)
    with pytest.raises(ValueError, match="needs calibration"):
        quantize_policy(src, "int8", None, obs)
    with pytest.raises(ValueError, match=r"parity_obs must be \[N >= 1, 102\]"):
        quantize_policy(src, "fp16", None, obs[:, :5])


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_recurrent_student_variant_carries_state(tmp_path, variant):
    student_spec, _ = specs()
    src = tmp_path / "gru.onnx"
    obs = make_student(src, student_spec, kind="gru")
    dst, parity = quantize_policy(src, variant, obs[:200], obs[200:])
    assert parity.passed
    policy = OnnxPolicy(dst)
    assert policy.recurrent
    first = [policy(r).copy() for r in obs[:5]]
    policy.reset_state()
    again = [policy(r).copy() for r in obs[:5]]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[0], policy(obs[0]))   # state moved on: not a fresh start


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_student_node_runs_the_int8_student(tmp_path):
    """The real student node process loads the int8 file unchanged and publishes exactly what
    an independent ONNX Runtime session computes from the same inputs."""
    import rclpy

    from node_process import node_process
    from ros_harness import RobotPeer, is_fallback, wait_for_log, wait_until
    from test_student_node import PUBLISHED_ORDER, SPEC, Reference, student_params

    spec = PolicySpec.from_dict(SPEC)
    src = tmp_path / "student.onnx"
    obs = make_student(src, spec, kind="mlp")
    dst, _ = quantize_policy(src, "int8", obs[:300], obs[300:])
    rclpy.init()
    peer = RobotPeer(PUBLISHED_ORDER, rate_hz=100.0)
    peer.position = np.array([0.4, 9.0, -0.3, 0.25])
    peer.velocity = np.array([3.0, 9.0, -0.5, 0.1])
    peer.angular_velocity = np.array([0.05, -0.1, 0.2])
    try:
        with node_process("student_node", "student_node", student_params(str(dst))) as proc:
            wait_for_log(proc.node, "active", 15)
            start = peer.echo_count()
            wait_until(lambda: sum(not is_fallback(e) for e in peer.echoes_since(start)) >= 30,
                       20.0, "30 policy actions from the int8 student")
            assert Reference(str(dst)).check_sequence(peer, peer.echoes_since(start)) >= 20
    finally:
        peer.close()
        rclpy.try_shutdown()


@pytest.mark.timeout(300)
def test_quantize_command_calibrates_on_recorded_data_and_reports(tmp_path, capsys):
    import json

    from distill_fixtures import sim_config
    from policy_distill_ros.cli import main as cli_main
    from policy_distill_ros.training.dataset import DistillDataset
    from policy_distill_ros.training.inference_bench import student_observations
    student_spec, teacher_spec = specs()
    model = tmp_path / "student.onnx"
    make_student(model, student_spec)
    obs = student_observations(model, sim_config(20), [0, 1, 2, 3])   # as a bag would hold
    data = DistillDataset(obs, np.zeros((len(obs), teacher_spec.observation.size), np.float32),
                          np.zeros((len(obs), 8), np.float32), np.zeros(len(obs), np.int64),
                          {0: 0.0}, ("test",)).save(tmp_path / "recorded.npz")
    out = tmp_path / "report.json"
    code = cli_main(["quantize", "--model", str(model), "--calibration", str(data),
                     "--variants", "int8,fp16", "--parity-episodes", "1",
                     "--max-episode-steps", "20", "--eval-episodes", "2", "--latency-rows", "20",
                     "--out-dir", str(tmp_path / "q"), "--json", str(out), "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "int8" in text and "fp16" in text and "p99/fp32" in text
    report = json.loads(out.read_text())
    assert report["calibration"] == f"{len(obs)} recorded observations"
    assert set(report["variants"]) == {"fp32", "int8", "fp16"}
    for name, row in report["variants"].items():
        assert len(row["returns"]) == 2 and row["p99_us"] > 0, name
    assert (tmp_path / "q" / "student_int8.onnx").is_file()
    assert read_metadata(tmp_path / "q" / "student_int8.onnx").provenance["quantization"][
        "calibration_samples"] == len(obs)
    # a bound no variant can meet: refused, named, exit 1, the rest still reported
    assert cli_main(["quantize", "--model", str(model), "--variants", "fp16",
                     "--parity-atol", "fp16=1e-9", "--parity-episodes", "1",
                     "--max-episode-steps", "20", "--eval-episodes", "0",
                     "--out-dir", str(tmp_path / "q2"), "--no-progress"]) == 1
    assert not (tmp_path / "q2" / "student_fp16.onnx").exists()
