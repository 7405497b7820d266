"""make_demo_policy: a real policy file for a spec, without torch, loadable by OnnxPolicy."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from policy_distill_ros.core.demo_policy import make_demo_policy
from policy_distill_ros.core.policy_file import OnnxPolicy, read_metadata
from policy_distill_ros.core.spec import load_policy_spec
from policy_distill_ros.processes import REPO_ROOT

SPEC_PATH = REPO_ROOT / "config" / "specs" / "ant_student.yaml"


def test_demo_policy_matches_its_spec_and_numpy(tmp_path):
    import onnx
    from onnx import numpy_helper

    spec = load_policy_spec(str(SPEC_PATH))
    path = make_demo_policy(tmp_path / "demo.onnx", spec, hidden_sizes=(16, 8), seed=2)
    policy = OnnxPolicy(path, expected=spec)  # refuses a file that differs from the spec
    meta = read_metadata(path)
    assert meta.provenance["kind"] == "demo" and "random" in meta.provenance["weights"]
    w = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    obs = np.random.default_rng(0).standard_normal(spec.observation.size).astype(np.float32)
    x = obs[None]
    for i in range(3):
        x = np.tanh(x @ w[f"w{i}"] + w[f"b{i}"])
    expected = (0.5 * x)[0]
    np.testing.assert_allclose(policy(obs), expected, atol=1e-5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, spec.observation.size]
    assert np.all(np.abs(policy(obs * 100)) <= 0.5)  # bounded by the gain
    other = make_demo_policy(tmp_path / "other.onnx", spec, hidden_sizes=(16, 8), seed=3)
    assert not np.allclose(OnnxPolicy(other)(obs), expected)


def test_bad_arguments_are_named(tmp_path):
    spec = load_policy_spec(str(SPEC_PATH))
    with pytest.raises(ValueError, match="hidden_sizes"):
        make_demo_policy(tmp_path / "x.onnx", spec, hidden_sizes=(0,))
    with pytest.raises(ValueError, match="output_gain"):
        make_demo_policy(tmp_path / "x.onnx", spec, output_gain=0.0)
