"""Policy file: metadata round trip, validation, mismatch refusal, recurrent state, atomic save."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from policy_distill_ros.core.policy_file import (
    FORMAT_KEY,
    OnnxPolicy,
    PolicyLoadError,
    PolicyMetadata,
    PolicyMismatchError,
    RecurrentState,
    read_metadata,
    save_policy,
)
from policy_distill_ros.core.spec import PolicySpec
from policy_models import make_linear_policy, make_recurrent_policy, recurrent_reference


def spec_dict(joints=("hip", "knee"), history=2, rate_hz=50.0) -> dict:
    return {
        "observation": {"history_length": history, "terms": [
            {"name": "joint_pos", "topic": "joint_states", "field": "position",
             "joints": list(joints), "offset": 0.1, "scale": [1.0, 2.0]},
            {"name": "gyro", "topic": "imu", "field": "angular_velocity", "size": 3,
             "clip": [-4.0, 4.0]},
            {"name": "last_action", "kind": "last_action"},
        ]},
        "action": {"joints": list(joints), "scale": 0.5, "offset": 0.0,
                   "lower": -1.0, "upper": [1.0] * len(joints)},
        "rate_hz": rate_hz,
    }


@pytest.fixture
def spec() -> PolicySpec:
    return PolicySpec.from_dict(spec_dict())


def test_metadata_props_round_trip(spec):
    meta = PolicyMetadata.from_spec(spec, [RecurrentState("h_in", "h_out", (1, 8))],
                                    {"teacher_hash": "abc", "metrics": {"mse": 0.01}})
    props = meta.to_props()
    assert props[FORMAT_KEY] == "1" and props["history_layout"] == "oldest_first_term_major"
    assert all(isinstance(v, str) for v in props.values())
    again = PolicyMetadata.from_props(props)
    assert again == meta and again.policy_spec == spec
    for key in props:
        broken = dict(props)
        del broken[key]
        with pytest.raises(PolicyLoadError, match=f"'{key}' is missing"):
            PolicyMetadata.from_props(broken)
    with pytest.raises(PolicyLoadError, match="'action_spec' is not valid JSON"):
        PolicyMetadata.from_props({**props, "action_spec": "{oops"})
    with pytest.raises(PolicyLoadError, match="'action_spec' is invalid"):
        PolicyMetadata.from_props({**props, "action_spec": '{"joints": []}'})


def test_onnx_equals_numpy_and_metadata_read_back(tmp_path, spec):
    path = tmp_path / "linear.onnx"
    w, b = make_linear_policy(path, spec, tanh=True, provenance={"dataset": "d1"})
    meta = read_metadata(path)
    assert meta.policy_spec == spec and meta.provenance == {"dataset": "d1"}
    policy = OnnxPolicy(path, expected=spec)
    rng = np.random.default_rng(1)
    for _ in range(5):
        obs = rng.standard_normal(spec.observation.size).astype(np.float32)
        out = policy(obs)
        assert out.dtype == np.float32 and out.shape == (spec.action.size,)
        np.testing.assert_allclose(out, np.tanh(obs @ w + b), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        policy(np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("change, field", [
    (dict(joints=("hip", "ankle")), "observation_spec.terms[0].joints"),
    (dict(history=3), "observation_spec.history_length"),
    (dict(rate_hz=100.0), "rate_hz"),
])
def test_mismatch_refused_naming_the_field(tmp_path, spec, change, field):
    path = tmp_path / "p.onnx"
    make_linear_policy(path, spec)
    other = PolicySpec.from_dict(spec_dict(**change))
    with pytest.raises(PolicyMismatchError) as info:
        OnnxPolicy(path, expected=other)
    assert info.value.field == field
    assert field in str(info.value) and str(path) in str(info.value)


def test_mismatch_in_action_limits_and_term_details(tmp_path, spec):
    path = tmp_path / "p.onnx"
    make_linear_policy(path, spec)
    policy = OnnxPolicy(path)
    d = spec_dict()
    d["action"]["lower"] = [-1.0, -0.5]
    with pytest.raises(PolicyMismatchError, match=r"action_spec\.lower.*-1\.0.*-0\.5") as info:
        policy.check_matches(PolicySpec.from_dict(d))
    assert info.value.field == "action_spec.lower"
    d = spec_dict()
    d["observation"]["terms"][1]["clip"] = [-5.0, 5.0]
    with pytest.raises(PolicyMismatchError) as info:
        policy.check_matches(PolicySpec.from_dict(d))
    assert info.value.field == "observation_spec.terms[1].clip"
    # scalar vs equal per-element list is the same configuration
    d = spec_dict()
    d["action"]["lower"] = [-1.0, -1.0]
    d["observation"]["terms"][0]["offset"] = [0.1, 0.1]
    policy.check_matches(PolicySpec.from_dict(d))


def test_corrupt_and_foreign_files_refused(tmp_path, spec):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00not an onnx model at all" * 10)
    with pytest.raises(PolicyLoadError, match="garbage.onnx"):
        OnnxPolicy(bad)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        OnnxPolicy(tmp_path / "missing.onnx")
    good = tmp_path / "good.onnx"
    make_linear_policy(good, spec)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PolicyLoadError, match="truncated.onnx"):
        OnnxPolicy(truncated)
    # a valid ONNX model without our metadata
    model = onnx.load(good)
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, plain)
    with pytest.raises(PolicyLoadError, match="plain.onnx.*'policy_distill_ros.format' is missing"):
        OnnxPolicy(plain)


def test_graph_width_must_match_metadata(tmp_path, spec):
    path = tmp_path / "wide.onnx"
    n = spec.observation.size  # (2 + 3 + 2) x history 2 = 14
    assert n == 14
    make_linear_policy(path, spec, obs_size=n + 1)
    with pytest.raises(PolicyLoadError, match=r"input 'obs' has shape \[1, 15\].*\[1, 14\]"):
        OnnxPolicy(path)
    model = onnx.load(path)
    meta = PolicyMetadata.from_spec(spec)
    with pytest.raises(ValueError, match="width 15"):
        save_policy(model, meta, tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()


def test_recurrent_state_carried_and_reset(tmp_path, spec):
    path = tmp_path / "rnn.onnx"
    weights = make_recurrent_policy(path, spec, hidden_size=5)
    policy = OnnxPolicy(path, expected=spec)
    assert policy.recurrent
    rng = np.random.default_rng(2)
    seq = rng.standard_normal((4, spec.observation.size)).astype(np.float32)
    expected = recurrent_reference(weights, seq)
    got = np.array([policy(o) for o in seq])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # same input again gives a different answer: the state moved on
    assert not np.allclose(policy(seq[0]), expected[0], atol=1e-4)
    policy.reset_state()
    np.testing.assert_allclose(policy(seq[0]), expected[0], atol=1e-5)


def test_recurrent_state_must_be_wired(tmp_path, spec):
    path = tmp_path / "rnn.onnx"
    make_recurrent_policy(path, spec, hidden_size=3)
    model = onnx.load(path)
    props = {p.key: p.value for p in model.metadata_props}
    props["recurrent_state"] = "[]"  # metadata forgets the state input
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    forgot = tmp_path / "forgot.onnx"
    onnx.save(model, forgot)
    with pytest.raises(PolicyLoadError, match=r"\['h_in'\].*recurrent"):
        OnnxPolicy(forgot)


def test_save_is_atomic_and_replaces(tmp_path, spec, monkeypatch):
    path = tmp_path / "models" / "student.onnx"
    w1, _ = make_linear_policy(path, spec, seed=1)
    w2, b2 = make_linear_policy(path, spec, seed=2)  # overwrite in place
    assert sorted(os.listdir(path.parent)) == ["student.onnx"]  # no temp files left
    assert not np.allclose(w1, w2)
    obs = np.ones(spec.observation.size, dtype=np.float32)
    np.testing.assert_allclose(OnnxPolicy(path)(obs), obs @ w2 + b2, atol=1e-5)
    # a failure at the last moment (e.g. disk full) leaves the old file whole, no temp files
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        make_linear_policy(path, spec, seed=3)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == ["student.onnx"]


def test_example_spec_file_policy(tmp_path):
    spec = PolicySpec.from_dict(__import__("yaml").safe_load(
        (Path(__file__).resolve().parents[1] / "config" / "robot_example.yaml").read_text()))
    path = tmp_path / "example.onnx"
    w, b = make_linear_policy(path, spec)
    policy = OnnxPolicy(path, expected=spec)
    obs = np.linspace(-1, 1, spec.observation.size, dtype=np.float32)
    np.testing.assert_allclose(policy(obs), obs @ w + b, atol=1e-5)


def test_policy_method_alias_and_list_input(tmp_path, spec):
    path = tmp_path / "p.onnx"
    w, b = make_linear_policy(path, spec_dict())  # a spec dict works too
    policy = OnnxPolicy(path)
    obs = [0.5] * spec.observation.size
    np.testing.assert_allclose(policy.policy(obs), np.asarray(obs, np.float32) @ w + b, atol=1e-5)
    assert policy.metadata.spec == spec and policy.metadata.recurrent_state == []
