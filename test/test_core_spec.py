"""Spec validation, sizes, privileged refusal, action postprocessing, YAML round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from policy_distill_ros.core.spec import (
    ActionSpec,
    ObservationSpec,
    ObsTerm,
    PolicySpec,
    SpecError,
    dump_policy_spec,
    load_policy_spec,
)

REPO = Path(__file__).resolve().parents[1]


def spec_dict() -> dict:
    return {
        "observation": {
            "history_length": 2,
            "terms": [
                {"name": "joint_pos", "topic": "joint_states", "field": "position",
                 "joints": ["a", "b"], "offset": [0.1, 0.2], "scale": 2.0, "clip": [-5, 5]},
                {"name": "gyro", "topic": "imu", "field": "angular_velocity", "size": 3},
                {"name": "contact", "topic": "privileged/contact_forces", "field": "data",
                 "labels": ["f1", "f2", "f3"]},
                {"name": "cmd", "kind": "command", "size": 2},
                {"name": "last_action", "kind": "last_action"},
            ],
        },
        "action": {"joints": ["a", "b"], "scale": 0.5, "offset": [1.0, -1.0],
                   "lower": [-1.0, -2.0], "upper": [1.5, 2.0]},
        "rate_hz": 50,
    }


def test_sizes_and_topics():
    spec = PolicySpec.from_dict(spec_dict())
    obs = spec.observation
    assert [t.size for t in obs.terms] == [2, 3, 3, 2, 2]  # last_action sized by the action
    assert obs.step_size == 12 and obs.size == 24
    assert obs.topics == ("joint_states", "imu", "privileged/contact_forces")
    assert obs.privileged_topics == ("privileged/contact_forces",)
    assert obs.term_slices()["gyro"] == slice(2, 5)
    assert spec.rate_hz == 50.0 and spec.period_s == pytest.approx(0.02)


def test_require_no_privileged_names_the_term():
    spec = PolicySpec.from_dict(spec_dict())
    with pytest.raises(SpecError, match="'contact'.*privileged/contact_forces"):
        spec.observation.require_no_privileged()
    d = spec_dict()
    d["observation"]["terms"].pop(2)
    PolicySpec.from_dict(d).observation.require_no_privileged()  # now fine
    d["observation"]["terms"][1]["privileged"] = True
    with pytest.raises(SpecError, match="'gyro'.*privileged: true"):
        PolicySpec.from_dict(d).observation.require_no_privileged()


def test_yaml_round_trip(tmp_path):
    spec = PolicySpec.from_dict(spec_dict())
    path = dump_policy_spec(spec, tmp_path / "spec.yaml")
    again = load_policy_spec(path)
    assert again == spec
    assert again.to_dict() == spec.to_dict()
    assert load_policy_spec(yaml.safe_load(spec.to_yaml())) == spec


def test_example_config_loads():
    spec = load_policy_spec(REPO / "config" / "robot_example.yaml")
    assert spec.observation.size == 138
    spec.observation.require_no_privileged()


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["observation"]["terms"][0].update(joints=["a", "a"]), r"joint_pos'\.joints.*'a'"),
    (lambda d: d["observation"]["terms"][0].update(offset=[1, 2, 3]), r"joint_pos'\.offset.*3"),
    (lambda d: d["observation"]["terms"][0].update(scale=float("nan")), r"joint_pos'\.scale"),
    (lambda d: d["observation"]["terms"][0].update(clip=[1, -1]), r"joint_pos'\.clip"),
    (lambda d: d["observation"]["terms"][0].update(scael=1), r"unknown key.*scael"),
    (lambda d: d["observation"]["terms"][1].pop("size"), r"'gyro'.*joints, labels or size"),
    (lambda d: d["observation"]["terms"][1].pop("field"), r"'gyro'\.field"),
    (lambda d: d["observation"]["terms"][1].update(size=4, labels=["x"]), r"'gyro'\.size is 4"),
    (lambda d: d["observation"]["terms"][3].pop("size"), r"'cmd'.*needs a size"),
    (lambda d: d["observation"]["terms"][4].update(size=5), r"'last_action'.*size 5.*2 joints"),
    (lambda d: d["observation"]["terms"][4].update(topic="x"), r"'last_action'.*topic"),
    (lambda d: d["observation"]["terms"].append({"name": "gyro", "kind": "command", "size": 1}),
     r"'gyro' is used twice"),
    (lambda d: d["observation"].update(history_length=0), r"history_length"),
    (lambda d: d["action"].update(lower=[-1.0]), r"action\.lower has 1 values"),
    (lambda d: d["action"].update(lower=[3.0, -2.0]), r"joint 'a': lower 3.0"),
    (lambda d: d.update(rate_hz=-1), r"rate_hz"),
    (lambda d: d.pop("action"), r"no 'action'"),
])
def test_bad_specs_are_refused_with_the_place(mutate, match):
    d = spec_dict()
    mutate(d)
    with pytest.raises(SpecError, match=match):
        PolicySpec.from_dict(d)


def test_bad_yaml_file_names_the_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("observation: [1, 2\n")
    with pytest.raises(SpecError, match="bad.yaml"):
        load_policy_spec(p)
    with pytest.raises(SpecError, match="cannot read"):
        load_policy_spec(tmp_path / "missing.yaml")


def test_action_postprocess_scales_offsets_and_clips():
    act = ActionSpec.from_dict(spec_dict()["action"])
    np.testing.assert_allclose(act.postprocess([0.0, 0.0]), [1.0, -1.0])
    np.testing.assert_allclose(act.postprocess([0.4, 2.0]), [1.2, 0.0])
    np.testing.assert_allclose(act.postprocess([10.0, -10.0]), [1.5, -2.0])  # clipped
    np.testing.assert_allclose(act.default_pose, [1.0, -1.0])
    out = np.empty(2)
    assert act.postprocess([0.0, 0.0], out=out) is out
    with pytest.raises(ValueError, match="not finite.*'b'"):
        act.postprocess([0.0, np.nan])
    with pytest.raises(ValueError, match="shape"):
        act.postprocess([0.0, 0.0, 0.0])


def test_scalar_or_per_element_scale_and_unbounded_action():
    act = ActionSpec(joints=("x", "y", "z"), scale=(1.0, 2.0, 3.0))
    np.testing.assert_allclose(act.postprocess([1e6, 1.0, 1.0]), [1e6, 2.0, 3.0])
    term = ObsTerm(
        name="t", topic="imu", field="orientation", size=4, offset=1.0, scale=[1, 2, 3, 4]
    )
    np.testing.assert_allclose(term.offset_array(), [1, 1, 1, 1])
    np.testing.assert_allclose(term.scale_array(), [1, 2, 3, 4])


def test_last_action_size_needs_the_action():
    obs = ObservationSpec.from_dict({"terms": [{"name": "la", "kind": "last_action"}]})
    with pytest.raises(SpecError, match="'la'.*size unknown"):
        _ = obs.size
    assert obs.with_action_size(4).size == 4
