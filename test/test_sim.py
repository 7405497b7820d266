"""The embedded simulator (ROS-free): reproducibility, randomization, sensor conventions."""
from __future__ import annotations

import math
from itertools import pairwise

import mujoco
import numpy as np
import pytest

from policy_distill_ros.sim.ant import AntSim
from policy_distill_ros.sim.config import SensorNoise, SimConfig
from policy_distill_ros.sim.frame import (
    CONTACT_FORCES,
    DYNAMICS,
    EPISODE,
    EPISODE_LABELS,
    IMU,
    JOINT_STATES,
    ODOMETRY,
)
from policy_distill_ros.sim.randomization import DYNAMICS_LABELS

ANT_HINGES = ("hip_1", "ankle_1", "hip_2", "ankle_2", "hip_3", "ankle_3", "hip_4", "ankle_4")
NOMINAL_GEAR = 150.0


def commands(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, 8))


def rollout(sim: AntSim, cmds: np.ndarray) -> list:
    frames = [sim.reset()]
    for c in cmds:
        frame, _, terminated, truncated, _ = sim.step(c)
        frames.append(frame)
        if terminated or truncated:
            frames.append(sim.reset())
    return frames


def assert_frames_equal(a, b) -> None:
    assert a.stamp_s == b.stamp_s and a.episode_id == b.episode_id and a.step == b.step
    assert a.topics.keys() == b.topics.keys()
    for topic in a.topics:
        for field, value in a.topics[topic].fields.items():
            np.testing.assert_array_equal(value, b.topics[topic].fields[field],
                                          err_msg=f"{topic}/{field}")


def settle(sim: AntSim, steps: int = 60):
    frame = sim.reset()
    for _ in range(steps):
        frame, *_ = sim.step(np.zeros(8))
    return frame


def test_same_seed_same_commands_give_identical_frames():
    config = SimConfig(max_episode_steps=40, action_delay_steps_range=(0, 2),
                       sensor_noise=SensorNoise(0.01, 0.1, 0.02, 0.2))
    cmds = commands(100)
    a, b = rollout(AntSim(config, seed=7), cmds), rollout(AntSim(config, seed=7), cmds)
    assert len(a) == len(b) > 100  # crossed episode boundaries
    for fa, fb in zip(a, b, strict=True):
        assert_frames_equal(fa, fb)


def test_different_seeds_randomize_dynamics_and_trajectories():
    cmds = commands(30)
    a, b = AntSim(SimConfig(), seed=1), AntSim(SimConfig(), seed=2)
    fa, fb = rollout(a, cmds), rollout(b, cmds)
    da, db = (f.field(DYNAMICS, "data") for f in (fa[-1], fb[-1]))
    assert da[0] != db[0] and da[1] != db[1] and da[2] != db[2]
    assert not np.allclose(fa[-1].field(ODOMETRY, "pose.pose.position"),
                           fb[-1].field(ODOMETRY, "pose.pose.position"))
    # Successive episodes of one sim draw fresh dynamics too.
    d0 = a.reset().field(DYNAMICS, "data")
    d1 = a.reset().field(DYNAMICS, "data")
    assert not np.array_equal(d0, d1)


@pytest.mark.parametrize("seed", [3, 4])
def test_dynamics_topic_reports_what_the_model_uses(seed):
    config = SimConfig(friction_range=(0.4, 1.4), payload_kg_range=(0.05, 0.5),
                       motor_strength_range=(0.6, 1.4), action_delay_steps_range=(0, 3))
    sim = AntSim(config, seed=seed)
    frame = sim.reset()
    labels = frame.topics[DYNAMICS].names["data"]
    assert tuple(labels) == DYNAMICS_LABELS
    values = dict(zip(labels, frame.field(DYNAMICS, "data"), strict=True))
    m = sim.model
    floor = m.geom("floor").id
    torso = m.body("torso").id
    fresh = AntSim(SimConfig.nominal(), seed=0).model  # the unmodified model, for reference
    assert values["friction"] == pytest.approx(m.geom_friction[floor, 0])
    assert np.allclose(m.geom_friction[:, 0], values["friction"])  # robot geoms too (max rule)
    assert values["payload_kg"] == pytest.approx(m.body_mass[torso] - fresh.body_mass[torso])
    assert np.allclose(m.actuator_gear[:, 0], NOMINAL_GEAR * values["motor_strength"])
    assert 0.4 <= values["friction"] <= 1.4 and 0.05 <= values["payload_kg"] <= 0.5
    assert values["action_delay_steps"] in (0, 1, 2, 3)
    assert m.body_subtreemass[torso] == pytest.approx(fresh.body_subtreemass[torso]
                                                      + values["payload_kg"])


def test_joint_names_come_from_the_model_in_model_order():
    sim = AntSim(SimConfig.nominal(), seed=0)
    m = sim.model
    hinges = tuple(m.joint(j).name for j in range(m.njnt)
                   if m.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE)
    assert sim.joint_names == hinges == ANT_HINGES
    frame = sim.reset()
    for field in ("position", "velocity", "effort"):
        assert tuple(frame.topics[JOINT_STATES].names[field]) == ANT_HINGES
        assert frame.field(JOINT_STATES, field).shape == (8,)
    assert tuple(frame.topics[CONTACT_FORCES].names["data"]) == ("foot_1", "foot_2", "foot_3",
                                                                  "foot_4")


def test_commands_reach_the_joint_of_the_same_name():
    """MuJoCo's actuator order starts at hip_4; the command is in joint-name order."""
    strength = 1.2
    sim = AntSim(SimConfig.nominal(motor_strength_range=(strength, strength)), seed=0)
    sim.reset()
    for i, name in enumerate(ANT_HINGES):
        cmd = np.zeros(8)
        cmd[i] = 0.5
        frame, *_ = sim.step(cmd)
        effort = frame.field(JOINT_STATES, "effort")
        expected = np.zeros(8)
        expected[i] = 0.5 * NOMINAL_GEAR * strength
        np.testing.assert_allclose(effort, expected, atol=1e-9, err_msg=name)


def test_commands_are_clipped_to_the_actuator_range():
    sim = AntSim(SimConfig.nominal(), seed=0)
    sim.reset()
    frame, *_ = sim.step(np.full(8, 5.0))
    np.testing.assert_allclose(frame.field(JOINT_STATES, "effort"), NOMINAL_GEAR)


def test_action_delay_shifts_commands_by_whole_steps():
    sim = AntSim(SimConfig.nominal(action_delay_steps_range=(2, 2)), seed=0)
    sim.reset()
    cmds = [np.full(8, v) for v in (0.1, 0.2, 0.3, 0.4)]
    applied = [sim.step(c)[4]["applied_command"][0] for c in cmds]
    assert applied == pytest.approx([0.0, 0.0, 0.1, 0.2])


def test_orientation_is_xyzw_identity_at_reset_without_noise():
    sim = AntSim(SimConfig.nominal(reset_noise_scale=0.0), seed=0)
    frame = sim.reset()
    np.testing.assert_allclose(frame.field(IMU, "orientation"), [0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(frame.field(ODOMETRY, "pose.pose.orientation"), [0, 0, 0, 1],
                               atol=1e-12)


def test_orientation_of_a_known_yaw_is_xyzw():
    sim = AntSim(SimConfig.nominal(reset_noise_scale=0.0), seed=0)
    sim.reset()
    yaw = math.radians(90.0)
    sim.data.qpos[3:7] = [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]  # MuJoCo w, x, y, z
    frame = sim._make_frame(0.0, False, False)
    np.testing.assert_allclose(frame.field(IMU, "orientation"),
                               [0, 0, math.sin(yaw / 2), math.cos(yaw / 2)], atol=1e-12)


def test_imu_measures_gravity_at_rest():
    sim = AntSim(SimConfig.nominal(reset_noise_scale=0.0), seed=0)
    frame = settle(sim)
    assert np.linalg.norm(frame.field(ODOMETRY, "twist.twist.linear")) < 0.05  # really at rest
    acc = frame.field(IMU, "linear_acceleration")
    assert acc[2] == pytest.approx(9.81, abs=0.15)
    assert abs(acc[0]) < 0.15 and abs(acc[1]) < 0.15
    np.testing.assert_allclose(frame.field(IMU, "angular_velocity"), 0.0, atol=0.05)


def test_payload_shows_in_foot_contact_forces():
    light = settle(AntSim(SimConfig.nominal(reset_noise_scale=0.0), seed=0))
    payload = 0.4
    heavy = settle(AntSim(SimConfig.nominal(reset_noise_scale=0.0,
                                            payload_kg_range=(payload, payload)), seed=0))
    f_light = light.field(CONTACT_FORCES, "data").sum()
    f_heavy = heavy.field(CONTACT_FORCES, "data").sum()
    assert f_light > 0.9 * 0.911 * 9.81   # the feet carry the robot's weight (0.911 kg)
    assert f_heavy - f_light == pytest.approx(payload * 9.81, rel=0.25)


def test_sensor_noise_touches_sensors_but_not_physics_or_privileged_data():
    noise = SensorNoise(joint_position_std=0.02, joint_velocity_std=0.0,
                        angular_velocity_std=0.0, linear_acceleration_std=0.0)
    cmds = commands(40)
    clean = rollout(AntSim(SimConfig(), seed=5), cmds)
    noisy = rollout(AntSim(SimConfig(sensor_noise=noise), seed=5), cmds)
    diff = np.array([n.field(JOINT_STATES, "position") - c.field(JOINT_STATES, "position")
                     for n, c in zip(noisy, clean, strict=True)])
    assert diff.std() == pytest.approx(0.02, rel=0.2)
    for n, c in zip(noisy, clean, strict=True):
        np.testing.assert_array_equal(n.field(ODOMETRY, "pose.pose.position"),
                                      c.field(ODOMETRY, "pose.pose.position"))
        np.testing.assert_array_equal(n.field(JOINT_STATES, "velocity"),
                                      c.field(JOINT_STATES, "velocity"))


def test_episodes_count_up_and_sim_time_continues_across_resets():
    sim = AntSim(SimConfig.nominal(max_episode_steps=5), seed=0)
    stamps, episodes = [], []
    for episode in range(3):
        frame = sim.reset()
        stamps.append(frame.stamp_s)
        episodes.append(frame.episode_id)
        truncated = False
        while not truncated:
            frame, _, terminated, truncated, _ = sim.step(np.zeros(8))
            assert not terminated
            stamps.append(frame.stamp_s)
            episodes.append(frame.episode_id)
        assert frame.step == 5
        values = dict(zip(EPISODE_LABELS, frame.field(EPISODE, "data"), strict=True))
        assert values["truncated"] == 1.0 and values["step"] == 5
        assert values["episode_id"] == episode and values["stamp_s"] == frame.stamp_s
        assert values["episode_return"] == pytest.approx(frame.episode_return)
        with pytest.raises(RuntimeError, match="reset"):
            sim.step(np.zeros(8))
    assert episodes == [0] * 6 + [1] * 6 + [2] * 6
    np.testing.assert_allclose(np.diff(stamps), 0.05)


def test_reset_time_on_episode_restarts_sim_time():
    sim = AntSim(SimConfig.nominal(max_episode_steps=3, reset_time_on_episode=True), seed=0)
    for _ in range(2):
        assert sim.reset().stamp_s == 0.0
        for _ in range(3):
            frame, *_ = sim.step(np.zeros(8))
        assert frame.stamp_s == pytest.approx(0.15)


def test_explicit_episode_seed_reproduces_an_episode():
    sim = AntSim(SimConfig(), seed=0)
    first = sim.reset(episode_seed=1234)
    sim.reset()
    again = sim.reset(episode_seed=1234)
    for topic in (JOINT_STATES, DYNAMICS):
        for field, value in first.topics[topic].fields.items():
            np.testing.assert_array_equal(value, again.topics[topic].fields[field])


def test_bad_commands_are_refused_with_a_clear_error():
    sim = AntSim(SimConfig.nominal(), seed=0)
    sim.reset()
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        sim.step(np.zeros(7))
    bad = np.zeros(8)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="ankle_2"):
        sim.step(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(friction_range=(1.2, 0.5)), "friction_range"),
    (dict(payload_kg_range=(-0.1, 0.2)), "payload_kg_range"),
    (dict(motor_strength_range="strong"), "motor_strength_range"),
    (dict(action_delay_steps_range=(0, 1.5)), "action_delay_steps_range"),
    (dict(max_episode_steps=0), "max_episode_steps"),
    (dict(robot="spot"), "robot"),
    (dict(sensor_noise=dict(joint_position_std=-1.0)), "joint_position_std"),
    (dict(sensor_noise=dict(gyro_std=0.1)), "gyro_std"),
])
def test_config_rejects_bad_values_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="fricton_range"):
        SimConfig.from_dict({"fricton_range": [0.5, 1.0]})
    config = SimConfig.from_dict(SimConfig().to_dict())
    assert config == SimConfig()


def test_command_mapper_orders_by_label_or_by_configured_joints():
    from policy_distill_ros.sim.runner import CommandError, CommandMapper
    mapper = CommandMapper(ANT_HINGES)
    values = np.arange(8.0)
    np.testing.assert_array_equal(mapper.to_sim_order(values), values)
    reversed_labels = list(reversed(ANT_HINGES))
    np.testing.assert_array_equal(mapper.to_sim_order(values, reversed_labels), values[::-1])
    with pytest.raises(CommandError, match="7 values, expected 8"):
        mapper.to_sim_order(np.zeros(7))
    with pytest.raises(CommandError, match="unknown: \\['knee_1'\\]"):
        mapper.to_sim_order(values, ["knee_1"] + list(ANT_HINGES[1:]))
    bad = values.copy()
    bad[2] = np.inf
    with pytest.raises(CommandError, match="hip_2"):
        mapper.to_sim_order(bad)
    custom = CommandMapper(ANT_HINGES, reversed_labels)
    np.testing.assert_array_equal(custom.to_sim_order(values), values[::-1])
    with pytest.raises(ValueError, match="exactly once"):
        CommandMapper(ANT_HINGES, ANT_HINGES[:7])


def test_runner_resets_after_terminal_frames_and_stops_after_num_episodes():
    from policy_distill_ros.sim.runner import SimRunner
    runner = SimRunner(AntSim(SimConfig.nominal(max_episode_steps=3), seed=0), num_episodes=2)
    frames = [runner.start()]
    while (frame := runner.advance(np.zeros(8))) is not None:
        frames.append(frame)
    assert [(f.episode_id, f.step) for f in frames] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert runner.finished and runner.episodes_done == 2
    assert all(b.stamp_s > a.stamp_s for a, b in pairwise(frames))


def test_sim_yaml_is_the_default_config():
    from pathlib import Path

    from policy_distill_ros.sim.config import load_sim_config
    path = Path(__file__).resolve().parents[1] / "config" / "sim.yaml"
    assert load_sim_config(path) == SimConfig()


# --- SpecEnv: the in-process path through core's spec and assembler --------------------------

SPECS = __import__("pathlib").Path(__file__).resolve().parents[1] / "config" / "specs"


def _spec_env(name: str, config: SimConfig | None = None, spec_dict: dict | None = None):
    import yaml

    from policy_distill_ros.sim.spec_env import make_spec_env
    spec = spec_dict if spec_dict is not None else yaml.safe_load((SPECS / name).read_text())
    return make_spec_env(spec, config or SimConfig.nominal(reset_noise_scale=0.0), seed=0)


def test_spec_env_teacher_vector_is_the_spec_applied_to_the_frame():
    env = _spec_env("ant_teacher.yaml")
    obs, _ = env.reset(seed=1)
    assert obs.shape == env.observation_space.shape == (45,)
    action = np.linspace(-1.5, 1.5, 8)
    obs, *_ = env.step(action)
    frame = env.frame
    np.testing.assert_allclose(obs[:8], frame.field(JOINT_STATES, "position"), atol=1e-6)
    np.testing.assert_allclose(obs[8:16], np.clip(0.1 * frame.field(JOINT_STATES, "velocity"),
                                                  -10, 10), atol=1e-5)
    np.testing.assert_allclose(obs[16:20], frame.field(IMU, "orientation"), atol=1e-6)
    np.testing.assert_allclose(obs[26:34], np.clip(action, -1, 1), atol=1e-6)  # last action
    np.testing.assert_allclose(obs[34:37], frame.field(ODOMETRY, "twist.twist.linear"),
                               atol=1e-6)
    np.testing.assert_allclose(obs[37], frame.field(ODOMETRY, "pose.pose.position")[2] - 0.55,
                               atol=1e-6)   # base height, one component of a vector field
    np.testing.assert_allclose(obs[42:45], frame.field(DYNAMICS, "data")[:3]
                               - [0.9, 0.15, 1.0], atol=1e-6)


def test_spec_env_student_has_history_and_no_privileged_input():
    env = _spec_env("ant_student.yaml")
    assert not env.spec_.observation.privileged_topics
    obs, _ = env.reset(seed=2)
    assert obs.shape == (102,)
    first, *_ = env.step(np.zeros(8))
    second, *_ = env.step(np.zeros(8))
    np.testing.assert_allclose(second[34:68], first[68:102], atol=1e-6)  # oldest-first history


def test_spec_env_is_reproducible_and_clips_to_the_action_limits():
    config = SimConfig()
    a, b = _spec_env("ant_teacher.yaml", config), _spec_env("ant_teacher.yaml", config)
    np.testing.assert_array_equal(a.reset(seed=9)[0], b.reset(seed=9)[0])
    out_a, out_b = a.step(np.full(8, 3.0)), b.step(np.full(8, 3.0))
    np.testing.assert_array_equal(out_a[0], out_b[0])
    np.testing.assert_array_equal(out_a[4]["applied_command"], np.ones(8))
    assert a.action_space.low.tolist() == [-1.0] * 8 and a.action_space.high.tolist() == [1.0] * 8


def test_spec_env_maps_actions_to_joints_by_name():
    import yaml
    spec = yaml.safe_load((SPECS / "ant_student.yaml").read_text())
    spec["action"]["joints"] = list(reversed(ANT_HINGES))
    env = _spec_env("", SimConfig.nominal(reset_noise_scale=0.0), spec_dict=spec)
    env.reset(seed=0)
    env.step(np.array([0.5] + [0.0] * 7))  # first action element = ankle_4
    effort = dict(zip(ANT_HINGES, env.frame.field(JOINT_STATES, "effort"), strict=True))
    assert effort.pop("ankle_4") == pytest.approx(75.0)
    assert all(v == 0.0 for v in effort.values())


def test_healthy_height_range_ends_episodes_outside_it():
    """The standing torso (~0.55 m) is healthy in Ant-v5's [0.2, 1.0] and unhealthy in a range
    above it: the episode then ends on the first step, costing `fall_cost`; a bad range is
    refused by name."""
    zero = np.zeros(8)
    sim = AntSim(SimConfig.nominal(reset_noise_scale=0.0), seed=0)
    sim.reset()
    assert not sim.step(zero)[2]
    high = AntSim(SimConfig.nominal(reset_noise_scale=0.0, healthy_z_range=(0.9, 2.0)), seed=0)
    high.reset()
    _, reward, terminated, *_ = high.step(zero)
    assert terminated
    costly = AntSim(SimConfig.nominal(reset_noise_scale=0.0, healthy_z_range=(0.9, 2.0),
                                      fall_cost=25.0), seed=0)
    costly.reset()
    assert costly.step(zero)[1] == pytest.approx(reward - 25.0)   # the fall costs, once
    with pytest.raises(ValueError, match="healthy_z_range"):
        SimConfig(healthy_z_range=(1.0, 0.2))


def test_shaping_costs_lower_the_reward_by_their_terms_and_leave_the_physics_alone():
    """Same seed and commands with and without the vertical-velocity and tilt costs: identical
    trajectories, and each reward lower by w_vz * vz^2 + w_tilt * (1 - up_z), both read from the
    privileged odometry (world-frame twist, xyzw orientation)."""
    w_vz, w_tilt = 0.7, 1.3
    plain = AntSim(SimConfig.nominal(terminate_when_unhealthy=False), seed=4)
    shaped = AntSim(SimConfig.nominal(terminate_when_unhealthy=False, tilt_cost_weight=w_tilt,
                                      vertical_velocity_cost_weight=w_vz), seed=4)
    plain.reset(), shaped.reset()
    rng = np.random.default_rng(0)
    costs = []
    for _ in range(40):
        command = rng.uniform(-1.0, 1.0, 8)
        a, reward_a, *_ = plain.step(command)
        b, reward_b, *_ = shaped.step(command)
        np.testing.assert_array_equal(a.field(ODOMETRY, "pose.pose.position"),
                                      b.field(ODOMETRY, "pose.pose.position"))
        vz = b.field(ODOMETRY, "twist.twist.linear")[2]
        qx, qy = b.field(ODOMETRY, "pose.pose.orientation")[:2]
        cost = w_vz * vz ** 2 + w_tilt * 2.0 * (qx ** 2 + qy ** 2)
        assert reward_a - reward_b == pytest.approx(cost, abs=1e-9)
        costs.append(cost)
    assert max(costs) > 0.05, "random commands should move the torso"
    with pytest.raises(ValueError, match="tilt_cost_weight"):
        SimConfig(tilt_cost_weight=-1.0)


def test_forward_speed_cap_pays_no_forward_reward_above_the_cap():
    """Same seed and commands with and without a speed cap: identical trajectories, and the
    capped reward lower by exactly the x velocity that Ant-v5's forward reward pays (its
    `info["x_velocity"]`, ~ the odometry's displacement over the step) above the cap; steps
    below the cap are paid the same."""
    cap = 0.05
    plain = AntSim(SimConfig.nominal(terminate_when_unhealthy=False), seed=4)
    capped = AntSim(SimConfig.nominal(terminate_when_unhealthy=False, forward_speed_cap_mps=cap),
                    seed=4)
    x = [plain.reset().field(ODOMETRY, "pose.pose.position")[0]]
    capped.reset()
    dt_s = plain.config.frame_skip * plain.model.opt.timestep
    rng = np.random.default_rng(1)
    above = below = 0
    for _ in range(60):
        command = rng.uniform(-1.0, 1.0, 8)
        a, reward_a, _, _, info = plain.step(command)
        b, reward_b, *_ = capped.step(command)
        np.testing.assert_array_equal(a.field(ODOMETRY, "pose.pose.position"),
                                      b.field(ODOMETRY, "pose.pose.position"))
        x.append(b.field(ODOMETRY, "pose.pose.position")[0])
        vx = info["x_velocity"]
        assert vx == pytest.approx((x[-1] - x[-2]) / dt_s, abs=0.05)
        assert reward_a - reward_b == pytest.approx(max(0.0, vx - cap), abs=1e-9)
        above, below = above + (vx > cap), below + (vx < cap)
    assert above and below, "random commands should move the torso both ways"
    with pytest.raises(ValueError, match="forward_speed_cap_mps"):
        SimConfig(forward_speed_cap_mps=-1.0)
