"""The control loop's fast paths equal the checked reference paths they shortcut.

- `ObservationAssembler.on_message` gathers a topic's terms at once (`_TopicGather`): one take
  for core.cdr's flat form, one per term for other array-backed messages (ndarray,
  array.array fields); list-backed messages take the per-term path. Three assemblers see the
  same random frames (shuffled joint order, extra joints, values beyond the clip, bad frames
  in between) and must build the same vectors (within 1e-12) and report the same problems.
- `ActionSpec.postprocess(raw, out=)` with a float32 array: the same command as from a list.
- `OnnxPolicy.act()` (I/O binding) against a plain ONNX Runtime session, recurrent too.
- `InputPeriod`'s median, sorted out when read, equals the median of the last gaps.
"""
from __future__ import annotations

import array
import math
from types import SimpleNamespace as NS

import numpy as np
import onnxruntime as ort
import pytest

from policy_distill_ros.core import observation
from policy_distill_ros.core.cdr import DecodedImu, DecodedJointState, Header, Stamp
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.policy_file import OnnxPolicy
from policy_distill_ros.core.spec import ActionSpec, PolicySpec, load_policy_spec
from policy_models import make_linear_policy, make_recurrent_policy, recurrent_reference

LEGS = [f"{leg}_{part}_joint" for leg in ("FL", "FR", "RL", "RR")
        for part in ("hip", "thigh", "calf")]


def robot_spec() -> PolicySpec:
    from pathlib import Path
    return load_policy_spec(Path(__file__).resolve().parents[1] / "config"
                            / "robot_example.yaml")


def interleaved_spec() -> PolicySpec:
    """A topic's terms apart in the step (joint_states, imu, joint_states): the gather then
    scatters into the step by index instead of one slice."""
    legs = LEGS[:4]
    return PolicySpec.from_dict({
        "observation": {"history_length": 2, "terms": [
            {"name": "q", "topic": "joint_states", "field": "position", "joints": legs,
             "offset": [0.1, -0.2, 0.3, 0.0], "scale": [1.0, 2.0, 0.5, 1.0]},
            {"name": "gyro", "topic": "imu", "field": "angular_velocity", "size": 3,
             "clip": [-0.5, 0.5]},
            {"name": "dq", "topic": "joint_states", "field": "velocity", "joints": legs,
             "scale": 0.05, "clip": [-1.0, 1.0]},
            {"name": "quat", "topic": "imu", "field": "orientation", "size": 4},
            {"name": "last_action", "kind": "last_action"}]},
        "action": {"joints": legs, "scale": 0.25},
        "rate_hz": 100.0})


def stamp(t: float) -> Stamp:
    sec = math.floor(t)
    return Stamp(sec, round((t - sec) * 1e9))


def frame(rng: np.random.Generator, t: float, joints: list[str]) -> dict:
    n = len(joints)
    return {"t": t, "names": list(joints), "pos": rng.standard_normal(n) * 2.0,
            "vel": rng.standard_normal(n) * 150.0,  # past joint_vel's clip after scaling
            "gyro": rng.standard_normal(3), "quat": rng.standard_normal(4)}


def decoded_joint_state(header: Header, names: list, pos, vel, eff) -> DecodedJointState:
    """A JointState in core.cdr's flat form: the doubles in one payload, a count slot apart."""
    pos, vel, eff = (np.asarray(a, dtype=np.float64) for a in (pos, vel, eff))
    payload = np.concatenate([pos, [7.0], vel, [7.0], eff])
    layout = (0, pos.size, pos.size + 1, vel.size, pos.size + vel.size + 2, eff.size)
    return DecodedJointState(header, names, payload, layout)


def fast_messages(f: dict) -> tuple:
    """What core.cdr decodes: flat form (one take per topic)."""
    header = Header(stamp(f["t"]), "")
    js = decoded_joint_state(header, list(f["names"]), f["pos"], f["vel"], np.zeros(2))
    values = np.zeros(37)
    values[0:4], values[13:16] = f["quat"], f["gyro"]
    return js, DecodedImu(header, values)


def array_messages(f: dict) -> tuple:
    """ndarray fields without the flat form (one take or copy per term)."""
    header = Header(stamp(f["t"]), "")
    js = NS(header=header, name=list(f["names"]), position=np.array(f["pos"]),
            velocity=np.array(f["vel"]), effort=np.zeros(0))
    return js, NS(header=header, orientation=np.array(f["quat"]),
                  angular_velocity=np.array(f["gyro"]))


def reference_messages(f: dict) -> tuple:
    """List fields and Vector3/Quaternion-like objects: the per-term path."""
    header = NS(stamp=NS(sec=stamp(f["t"]).sec, nanosec=stamp(f["t"]).nanosec), frame_id="")
    js = NS(header=header, name=list(f["names"]), position=list(f["pos"]),
            velocity=list(f["vel"]), effort=[])
    q, g = f["quat"], f["gyro"]
    imu = NS(header=header, orientation=NS(x=q[0], y=q[1], z=q[2], w=q[3]),
             angular_velocity=NS(x=g[0], y=g[1], z=g[2]))
    return js, imu


def spoil(rng: np.random.Generator, f: dict, kind: str) -> dict:
    f = dict(f, names=list(f["names"]), pos=f["pos"].copy(), vel=f["vel"].copy())
    if kind == "nan":
        f["pos"][rng.integers(len(f["pos"]))] = np.nan
    elif kind == "inf":
        f["gyro"] = np.array([0.0, np.inf, 0.0])
    elif kind == "missing":
        f["names"][int(np.flatnonzero([n in LEGS for n in f["names"]])[0])] = "unknown_joint"
    elif kind == "duplicate":
        f["names"][-1] = f["names"][0]
    elif kind == "short":
        f["vel"] = f["vel"][:-1]
    return f


@pytest.mark.parametrize("make_spec", [robot_spec, interleaved_spec])
def test_gather_equals_per_term_path_on_random_frames(make_spec, monkeypatch):
    spec = make_spec()
    fast = ObservationAssembler(spec.observation, spec.action.size)
    arrays = ObservationAssembler(spec.observation, spec.action.size)
    reference = ObservationAssembler(spec.observation, spec.action.size)
    spec_joints = [t for t in spec.observation.terms if t.joints is not None][0].joints
    per_term_loads = []
    load = observation._TermState.load

    def counting_load(self, raw, names):
        per_term_loads.append(self.term.name)
        return load(self, raw, names)
    monkeypatch.setattr(observation._TermState, "load", counting_load)
    rng = np.random.default_rng(15)
    bad_kinds = ["nan", "inf", "missing", "duplicate", "short"]
    gathered = 0
    for k in range(400):
        joints = list(spec_joints) + [f"extra_{i}" for i in range(rng.integers(0, 3))]
        order = list(rng.permutation(joints)) if k % 50 else joints  # shuffled, and not
        f = frame(rng, 100.0 + 0.002 * k, order)
        if k % 7 == 3:
            f = spoil(rng, f, bad_kinds[(k // 7) % len(bad_kinds)])
        js_ref, imu_ref = reference_messages(f)
        want_problems = [reference.on_message("imu", imu_ref, f["t"]),
                         reference.on_message("joint_states", js_ref, f["t"])]
        for asm, (js, imu) in ((fast, fast_messages(f)), (arrays, array_messages(f))):
            before = len(per_term_loads)
            problems = [asm.on_message("imu", imu, f["t"]),
                        asm.on_message("joint_states", js, f["t"])]
            if problems == [None, None]:
                assert len(per_term_loads) == before, "a healthy frame took the per-term path"
                gathered += asm is fast
            assert problems == want_problems
        action = rng.standard_normal(spec.action.size)
        for asm in (fast, arrays, reference):
            asm.set_last_action(action)
        want = reference.build(f["t"] + 1e-3)
        for asm in (fast, arrays):
            out = np.zeros(spec.observation.size, dtype=np.float32)
            got = asm.build(f["t"] + 1e-3, out=out)
            assert got.vector is out
            assert np.abs(got.vector.astype(np.float64) - want.vector).max() <= 1e-12
            assert (got.problem, got.stamp_s, got.ages_s) == \
                (want.problem, want.stamp_s, want.ages_s)
    assert gathered > 300
    assert fast._topics["joint_states"].gather.flat_index is not None  # the one-take path ran


def test_gather_takes_array_array_fields_and_refuses_other_types():
    spec = robot_spec()
    asm = ObservationAssembler(spec.observation, spec.action.size)
    gather = asm._topics["joint_states"].gather
    f = frame(np.random.default_rng(3), 1.0, list(reversed(LEGS)) + ["extra"])
    js, _ = array_messages(f)
    js.position = array.array("d", f["pos"])  # rclpy's sequence<double>
    assert gather.load(js)
    js.position = f["pos"].astype(np.float32)  # converted by the per-term path only
    assert not gather.load(js)
    js.position = f["pos"].reshape(1, -1)
    assert not gather.load(js)
    assert asm.on_message("joint_states", js, 1.0) is None  # the per-term path handles it


def test_postprocess_fast_path_equals_reference():
    spec = robot_spec().action
    rng = np.random.default_rng(4)
    out = np.empty(spec.size)
    for _ in range(500):
        raw = (rng.standard_normal(spec.size) * 8.0).astype(np.float32)  # often past limits
        reference = spec.postprocess(raw.tolist())
        assert spec.postprocess(raw, out=out) is out
        assert np.abs(out - reference).max() <= 1e-12
    for bad in (np.nan, np.inf, -np.inf):
        raw = np.zeros(spec.size, dtype=np.float32)
        raw[5] = bad
        with pytest.raises(ValueError, match=f"not finite.*'{spec.joints[5]}'"):
            spec.postprocess(raw, out=out)
    huge = ActionSpec(joints=("a", "b"), scale=1e300, lower=-1.0, upper=1.0)
    raw = np.array([1e10, -1e10])  # finite, overflows to +-inf before the clip
    with np.errstate(over="ignore", invalid="ignore"):
        np.testing.assert_array_equal(huge.postprocess(raw, out=np.empty(2)), [1.0, -1.0])
        np.testing.assert_array_equal(huge.postprocess(raw.tolist()), [1.0, -1.0])


def test_act_equals_plain_session_and_call(tmp_path):
    spec = robot_spec()
    path = tmp_path / "linear.onnx"
    make_linear_policy(path, spec, tanh=True)
    policy = OnnxPolicy(path, expected=spec)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for _ in range(50):
        obs = rng.standard_normal(spec.observation.size).astype(np.float32)
        want = session.run(["actions"], {"obs": obs[None]})[0][0]
        policy.obs_row[:] = obs
        got = policy.act()
        np.testing.assert_array_equal(got, want)
        called = policy(obs)
        np.testing.assert_array_equal(called, want)
        assert called is not got and not np.shares_memory(called, got)


def test_act_carries_recurrent_state_like_call(tmp_path):
    spec = robot_spec()
    path = tmp_path / "rnn.onnx"
    weights = make_recurrent_policy(path, spec, hidden_size=6)
    policy = OnnxPolicy(path, expected=spec)
    seq = np.random.default_rng(6).standard_normal((6, spec.observation.size)).astype(np.float32)
    expected = recurrent_reference(weights, seq)
    for _ in range(2):  # reset_state zeroes the bound state in place
        policy.reset_state()
        got = []
        for obs in seq:
            policy.obs_row[:] = obs
            got.append(policy.act().copy())
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(policy.state_feeds()["h_in"]).max() > 0
    policy.reset_state()
    assert not policy.state_feeds()["h_in"].any()


def test_input_period_median_sorted_when_read_equals_per_stamp_median():
    from policy_distill_ros.core.enforcement import InputPeriod
    rng = np.random.default_rng(7)
    period = InputPeriod(window=8)
    t, last, gaps = 0.0, None, []
    for k in range(300):
        t += 0.0 if k % 17 == 5 else float(rng.uniform(0.001, 0.004))  # a repeat: ignored
        if k == 150:
            t, last, gaps = t - 1.0, None, []  # stamps went back: start again
        if last is not None and t > last:
            gaps = (gaps + [t - last])[-8:]
        last = t
        period.add(t)
        if gaps:
            assert period.period_s == pytest.approx(sorted(gaps)[(len(gaps) - 1) // 2],
                                                    abs=1e-12)
        else:
            assert period.period_s is None
