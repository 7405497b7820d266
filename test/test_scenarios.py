"""Robustness scenarios: every knob changes the simulation the way it says, faults are
reproducible per episode seed, and the teacher-vs-student report flags a student that degrades
first (and only then)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from distill_fixtures import specs
from policy_distill_ros.cli import main as cli_main
from policy_distill_ros.sim.ant import AntSim
from policy_distill_ros.sim.config import SimConfig
from policy_distill_ros.sim.frame import IMU, JOINT_STATES, ODOMETRY
from policy_distill_ros.sim.scenarios import (
    FaultySensorSim,
    SensorFaults,
    default_scenarios,
    scenario_by_name,
)
from policy_distill_ros.training.robustness import (
    ScenarioResult,
    degradation,
    plot_robustness,
    robustness_table,
    run_scenario_episodes,
)
from policy_distill_ros.training.rollout import FunctionActor

SEED = 1_000_003
BASE = SimConfig(max_episode_steps=40)


def frames(sim: AntSim, steps: int = 12, seed: int = SEED):
    """Frames of one episode under a fixed open-loop gait (same commands for every sim)."""
    out = [sim.reset(seed)]
    for t in range(steps):
        command = 0.6 * np.sin(0.7 * t + np.arange(sim.num_joints))
        out.append(sim.step(command)[0])
        if out[-1].done:
            break
    return out


def field(frame, topic, name):
    return np.asarray(frame.topics[topic].fields[name])


@pytest.fixture(scope="module")
def clean():
    sim = AntSim(BASE)
    yield frames(sim)
    sim.close()


def test_bias_shifts_only_the_sensors_by_the_bias(clean):
    sim = FaultySensorSim(BASE, faults=SensorFaults(joint_position_bias_rad=0.1,
                                                    angular_velocity_bias_rps=0.05))
    biased = frames(sim)
    sim.close()
    for a, b in zip(clean, biased, strict=True):
        dq = field(b, JOINT_STATES, "position") - field(a, JOINT_STATES, "position")
        np.testing.assert_allclose(np.abs(dq), 0.1, atol=1e-12)
        dw = field(b, IMU, "angular_velocity") - field(a, IMU, "angular_velocity")
        np.testing.assert_allclose(np.abs(dw), 0.05, atol=1e-12)
        np.testing.assert_array_equal(field(a, ODOMETRY, "pose.pose.position"),
                                      field(b, ODOMETRY, "pose.pose.position"))
    signs = np.sign(field(biased[0], JOINT_STATES, "position")
                    - field(clean[0], JOINT_STATES, "position"))
    assert len(set(signs)) == 2, "bias signs are drawn per joint"


def test_imu_delay_serves_the_sample_k_steps_old(clean):
    sim = FaultySensorSim(BASE, faults=SensorFaults(imu_delay_steps=2))
    delayed = frames(sim)
    sim.close()
    for t, frame in enumerate(delayed):
        source = clean[max(0, t - 2)]
        for name in ("orientation", "angular_velocity", "linear_acceleration"):
            np.testing.assert_array_equal(field(frame, IMU, name), field(source, IMU, name))
        np.testing.assert_array_equal(field(frame, JOINT_STATES, "position"),
                                      field(clean[t], JOINT_STATES, "position"))


def test_drops_remove_messages_reproducibly_never_the_first():
    def pattern():
        sim = FaultySensorSim(BASE, faults=SensorFaults(drop_probability=0.5))
        got = [(JOINT_STATES in f.topics, IMU in f.topics, ODOMETRY in f.topics)
               for f in frames(sim, steps=39)]
        assert len(got) >= 30
        dropped = dict(sim.dropped)
        sim.close()
        return got, dropped
    first, dropped = pattern()
    assert first == pattern()[0], "the same episode seed drops the same messages"
    assert first[0][:2] == (True, True)
    assert all(odometry for _, _, odometry in first), "privileged topics are never dropped"
    lost_joints = sum(not j for j, _, _ in first)
    assert lost_joints == dropped[JOINT_STATES] and 0.2 < lost_joints / len(first) < 0.8
    assert dropped[IMU] / len(first) > 0.2


def test_dynamics_scenarios_leave_the_training_ranges_and_change_the_motion(clean):
    by_name = {s.name: s for s in default_scenarios(BASE)}
    end = field(clean[-1], ODOMETRY, "pose.pose.position")
    for name, attr, low, high in (("friction_low", "friction", 0.3, 0.4),
                                  ("payload_heavy", "payload_kg", 0.6, 0.8),
                                  ("motor_weak", "motor_strength", 0.55, 0.65),
                                  ("motor_strong", "motor_strength", 1.4, 1.5)):
        sim = FaultySensorSim(by_name[name].sim_config, faults=by_name[name].faults)
        moved = frames(sim)
        applied = getattr(sim.dynamics, attr)
        sim.close()
        assert low <= applied <= high, name
        assert not np.allclose(field(moved[-1], ODOMETRY, "pose.pose.position"), end), name


def test_sensor_noise_scenario_adds_noise(clean):
    scenario = scenario_by_name(default_scenarios(BASE), ["sensor_noise"])[0]
    sim = FaultySensorSim(scenario.sim_config, faults=scenario.faults)
    noisy = frames(sim, steps=1)
    sim.close()
    diff = field(noisy[0], JOINT_STATES, "position") - field(clean[0], JOINT_STATES, "position")
    assert 0.005 < np.std(diff) < 0.2


def test_bad_faults_and_names_are_refused():
    with pytest.raises(ValueError, match="drop_probability"):
        SensorFaults(drop_probability=1.0)
    with pytest.raises(ValueError, match="imu_delay_steps"):
        SensorFaults(imu_delay_steps=-1)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_by_name(default_scenarios(BASE), ["lava"])


def _result(scenario, policy, returns, falls=None):
    n = len(returns)
    return ScenarioResult(scenario, policy, list(range(n)), list(returns),
                          falls or [False] * n, [0.0] * n, [10] * n, 0.1)


def test_degradation_flags_only_a_student_that_degrades_first():
    rng = np.random.default_rng(0)
    def around(mean):
        return (mean + rng.normal(0, 10, 10)).tolist()
    results = [_result("nominal", "teacher", around(1000)),
               _result("nominal", "student", around(1000)),
               _result("ice", "teacher", around(900)),
               _result("ice", "student", around(450), [True] * 8 + [False] * 2),
               _result("bias", "teacher", around(600)), _result("bias", "student", around(620))]
    rows = {r["scenario"]: r for r in degradation(results)}
    assert rows["ice"]["student_degrades_first"] and rows["ice"]["kept_diff"] < -0.4
    assert not rows["bias"]["student_degrades_first"]
    assert rows["ice"]["student_falls_more"] and not rows["bias"]["student_falls_more"]
    assert not rows["nominal"]["student_degrades_first"]
    table = robustness_table(list(rows.values()))
    assert "YES" in table.splitlines()[3] and "reference" in table


def test_scenario_episodes_and_plot_at_tiny_size(tmp_path):
    student_spec, _ = specs()
    scenarios = scenario_by_name(default_scenarios(dataclasses.replace(BASE,
                                                                       max_episode_steps=15)),
                                 ["nominal", "drop_50", "imu_delay_2"])
    rng = np.random.default_rng(0)
    actors = {"teacher": FunctionActor(lambda obs: 0.3 * np.tanh(obs[:8]), "student"),
              "student": FunctionActor(lambda obs: rng.uniform(-1, 1, 8), "student")}
    results = [run_scenario_episodes(actor, student_spec, s, [SEED, SEED + 1], name=name)
               for s in scenarios for name, actor in actors.items()]
    assert all(len(r.returns) == 2 and all(n <= 15 for n in r.lengths) for r in results)
    again = run_scenario_episodes(actors["teacher"], student_spec, scenarios[1], [SEED, SEED + 1],
                                  name="teacher")
    assert again.returns == results[2].returns, "a scenario episode is a function of its seed"
    rows = degradation(results)
    png = plot_robustness(rows, tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lists_scenarios(capsys):
    assert cli_main(["robustness", "--list"]) == 0
    out = capsys.readouterr().out
    assert "friction_low" in out and "imu_delay_5" in out and "drop_50" in out
