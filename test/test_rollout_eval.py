"""In-process rollouts (two views of one simulator) and closed-loop evaluation (`eval`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill_fixtures import make_teacher, save_random_teacher, sim_config, specs, train_config
from policy_distill_ros import cli
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.policy_file import read_metadata
from policy_distill_ros.sim.ant import AntSim
from policy_distill_ros.training.dataset import dataset_from_bag
from policy_distill_ros.training.evaluation import (
    HELD_OUT_SEED_BASE,
    evaluate_policy,
    held_out_seeds,
    policy_file_figures,
    validation_seeds,
)
from policy_distill_ros.training.networks import count_parameters
from policy_distill_ros.training.rollout import (
    STUDENT,
    TEACHER,
    VALIDATION_SEED_BASE,
    FunctionActor,
    MultiViewSim,
    OnnxActor,
    collect,
    student_actor,
    teacher_actor,
)
from policy_distill_ros.training.trainer import export_student, fit


@pytest.fixture(scope="module")
def teacher():
    return make_teacher(seed=1)


@pytest.fixture(scope="module")
def trained(teacher):
    """A small student distilled from the random teacher, and its exported policy file."""
    student_spec, teacher_spec = specs()
    data = collect(student_spec, teacher_spec, sim_config(30), range(6),
                   teacher_actor(*teacher)).dataset
    return fit(*teacher, data, train_config(epochs=3), progress=False)


def test_two_views_of_one_sim_equal_independent_assemblers_and_executed_actions(teacher):
    """Teacher rows = what SpecEnv gives on the teacher spec; student rows = an independent
    assembler on the student spec fed the same frames and executed commands."""
    student_spec, teacher_spec = specs()
    cfg = sim_config(25)
    rng = np.random.default_rng(0)
    noise = rng.normal(scale=2.0, size=(200, 8))   # large: some actions get clipped
    step = iter(range(200))
    driver = FunctionActor(lambda obs: noise[next(step)], TEACHER)
    res = collect(student_spec, teacher_spec, cfg, [5, 6], driver)
    ds = res.dataset
    n = sum(e.length for e in res.episodes)
    assert len(ds) == n and list(ds.episodes) == [0, 1]
    assert ds.student_obs.shape == (n, student_spec.observation.size)
    assert ds.teacher_obs.shape == (n, teacher_spec.observation.size)
    np.testing.assert_allclose(ds.actions, np.clip(noise[:n], -1, 1), atol=1e-6)
    np.testing.assert_allclose(res.driver_actions, noise[:n], atol=1e-6)

    sim = AntSim(cfg, seed=0)
    index = [sim.joint_names.index(j) for j in student_spec.action.joints]
    row = 0
    for episode, seed in enumerate([5, 6]):
        asms = {name: ObservationAssembler(spec.observation, spec.action.size)
                for name, spec in ((STUDENT, student_spec), (TEACHER, teacher_spec))}
        frame = sim.reset(episode_seed=seed)
        total = 0.0
        while True:
            for name, asm in asms.items():
                frame.feed(asm)
                vec = asm.build(frame.stamp_s).vector
                want = ds.student_obs[row] if name == STUDENT else ds.teacher_obs[row]
                np.testing.assert_array_equal(vec, want, err_msg=f"{name} row {row}")
            command = student_spec.action.postprocess(noise[row])
            for asm in asms.values():
                asm.set_last_action(command)
            sim_cmd = np.zeros(sim.num_joints)
            sim_cmd[index] = command
            frame, reward, terminated, truncated, _ = sim.step(sim_cmd)
            total += reward
            row += 1
            if terminated or truncated:
                break
        assert ds.episode_return[episode] == pytest.approx(total)
        assert res.episodes[episode].episode_return == pytest.approx(total)
    sim.close()


def test_rollout_rows_equal_the_recorded_bag_path(tmp_path):
    """The in-process rollout and the recorder -> bag -> dataset path give identical vectors."""
    from sim_bags import record_sim_bag
    rec = record_sim_bag(tmp_path / "bag", episodes=2, max_steps=12, seed=3)
    student_spec, teacher_spec = specs()
    from_bag, _ = dataset_from_bag(str(tmp_path / "bag"), student_spec, teacher_spec)
    # same episodes in process: the sim's default episode seeds, the bag's executed actions
    # (the bag has one more decision per episode: the policy also answers the terminal frame)
    seeds = [AntSim(seed=3).episode_seed(k) for k in range(2)]
    from policy_distill_ros.sim.config import SimConfig
    sim = MultiViewSim({TEACHER: teacher_spec, STUDENT: student_spec},
                       SimConfig(max_episode_steps=12), sim_seed=3)
    for k, seed in enumerate(seeds):
        rows = np.flatnonzero(from_bag.episode_id == k)
        commands = [c for c, e in zip(rec.commands, rec.episode_id, strict=True) if e == k]
        actions = iter(commands)   # float64, as executed (offset 0, scale 1: raw = command)
        replay = FunctionActor(lambda obs, actions=actions: next(actions), TEACHER)
        ep = sim.run_episode(seed, replay)
        n = len(ep.actions)
        assert n == len(rows) - 1
        np.testing.assert_array_equal(ep.obs[STUDENT], from_bag.student_obs[rows[:n]])
        np.testing.assert_array_equal(ep.obs[TEACHER], from_bag.teacher_obs[rows[:n]])
        assert ep.stats.episode_return == pytest.approx(rec.episode_return[k])
    sim.close()


def test_beta_mixes_teacher_actions_and_labels_every_state(teacher, trained):
    student_spec, teacher_spec = specs()
    cfg = sim_config(30)
    labeler = teacher_actor(*teacher)
    driver = student_actor(trained.student, trained.student_normalizer)
    all_teacher = collect(student_spec, teacher_spec, cfg, [1, 2], driver, labeler, beta=1.0)
    np.testing.assert_allclose(all_teacher.dataset.actions, np.clip(all_teacher.labels, -1, 1),
                               atol=1e-6)
    all_student = collect(student_spec, teacher_spec, cfg, [1, 2], driver, labeler, beta=0.0)
    np.testing.assert_allclose(all_student.dataset.actions,
                               np.clip(all_student.driver_actions, -1, 1), atol=1e-6)
    assert all_student.labels.shape == all_student.dataset.actions.shape
    # labels are the teacher's action on the visited teacher observation
    with torch.no_grad():
        t, n = teacher
        want = t.deterministic(t(n(torch.as_tensor(all_student.dataset.teacher_obs)))).numpy()
    np.testing.assert_allclose(all_student.labels, want, atol=1e-5)
    half = collect(student_spec, teacher_spec, cfg, [1, 2, 3, 4], driver, labeler, beta=0.5)
    fraction = np.mean([e.labeler_fraction for e in half.episodes])
    assert 0.3 < fraction < 0.7
    with pytest.raises(ValueError, match="labeler"):
        collect(student_spec, teacher_spec, cfg, [1], driver, None, beta=0.5)


def test_training_collection_refuses_held_out_seeds(teacher):
    student_spec, teacher_spec = specs()
    for seed in (HELD_OUT_SEED_BASE + 3, VALIDATION_SEED_BASE, -1):
        with pytest.raises(ValueError, match="held-out"):
            collect(student_spec, teacher_spec, sim_config(5), [seed], teacher_actor(*teacher))
    assert validation_seeds(2) == [VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + 1]
    assert VALIDATION_SEED_BASE + 99_999 < HELD_OUT_SEED_BASE
    with pytest.raises(ValueError, match="training/validation range"):
        held_out_seeds(3, base=10)
    assert held_out_seeds(3) == [HELD_OUT_SEED_BASE, HELD_OUT_SEED_BASE + 1,
                                 HELD_OUT_SEED_BASE + 2]


def test_privileged_student_spec_is_refused(teacher):
    _, teacher_spec = specs()
    with pytest.raises(ValueError, match="privileged"):
        collect(teacher_spec, teacher_spec, sim_config(5), [0], teacher_actor(*teacher))


def test_evaluation_is_deterministic_for_given_seeds(teacher):
    _, teacher_spec = specs()
    cfg = sim_config(40)
    actor = teacher_actor(*teacher)
    a = evaluate_policy(actor, teacher_spec, cfg, held_out_seeds(3))
    b = evaluate_policy(actor, teacher_spec, cfg, held_out_seeds(3))
    assert a.returns.tolist() == b.returns.tolist()
    assert [e.forward_distance_m for e in a.episodes] == [e.forward_distance_m for e in b.episodes]
    c = evaluate_policy(actor, teacher_spec, cfg, held_out_seeds(3, HELD_OUT_SEED_BASE + 50))
    assert c.returns.tolist() != a.returns.tolist()
    d = a.to_dict()
    assert d["episodes"] == 3 and d["seeds"] == held_out_seeds(3)
    assert d["latency_p50_us"] > 0 and d["latency_p99_us"] >= d["latency_p50_us"]


def test_onnx_student_in_closed_loop_equals_torch_student(tmp_path, trained):
    student_spec, _ = specs()
    path = tmp_path / "student.onnx"
    export_student(trained, student_spec, path)
    cfg = sim_config(40)
    seeds = held_out_seeds(2)
    onnx = evaluate_policy(OnnxActor(path, student_spec), student_spec, cfg, seeds)
    torch_ = evaluate_policy(student_actor(trained.student, trained.student_normalizer),
                             student_spec, cfg, seeds)
    np.testing.assert_allclose(onnx.returns, torch_.returns, rtol=1e-3)
    figures = policy_file_figures(path)
    assert figures["params"] == count_parameters(trained.student)
    assert figures["params_source"] == "provenance"
    assert figures["onnx_bytes"] == path.stat().st_size


def test_recurrent_student_state_is_reset_every_episode(tmp_path, teacher):
    """Seed b after seed a gives the same episode as seed b alone only if the GRU state and the
    observation history are cleared at the episode start."""
    student_spec, teacher_spec = specs()
    data = collect(student_spec, teacher_spec, sim_config(20), range(4),
                   teacher_actor(*teacher)).dataset
    result = fit(*teacher, data, train_config(epochs=1, kind="gru", hidden=(16,),
                                              student={"gru_hidden_size": 16},
                                              sequence_length=8),
                 progress=False)
    path = tmp_path / "gru.onnx"
    export_student(result, student_spec, path)
    assert read_metadata(path).recurrent_state
    cfg = sim_config(20)
    a, b = held_out_seeds(2)
    both = evaluate_policy(OnnxActor(path), student_spec, cfg, [a, b])
    alone = evaluate_policy(OnnxActor(path), student_spec, cfg, [b])
    assert both.returns[1] == alone.returns[0]


def test_eval_command_prints_table_and_writes_json(tmp_path, trained, capsys):
    student_spec, _ = specs()
    teacher_dir = save_random_teacher(tmp_path / "teacher", seed=1)
    student = tmp_path / "student.onnx"
    export_student(trained, student_spec, student)
    out = tmp_path / "eval.json"
    code = cli.main(["eval", "--teacher", teacher_dir, "--student", str(student),
                     "--episodes", "2", "--max-episode-steps", "30", "--json", str(out),
                     "--no-progress"])
    assert code == 0
    text = capsys.readouterr().out
    assert "teacher" in text and "student" in text and "return ratio" in text
    report = json.loads(out.read_text())
    assert report["seeds"] == held_out_seeds(2)
    t, s = report["teacher"], report["student"]
    assert report["return_ratio"] == pytest.approx(s["mean_return"] / t["mean_return"])
    assert report["param_ratio"] == pytest.approx(s["params"] / t["params"])
    assert s["params"] == count_parameters(trained.student)
    assert s["onnx_bytes"] == student.stat().st_size
    assert len(t["returns"]) == 2 and t["latency_p99_us"] > 0
    memory = s["inference_memory_mib"]
    assert memory["peak_mib"] >= memory["rss_mib"] > memory["session_mib"] > 0
    assert "student inference memory: RSS" in text
    # the same teacher evaluated directly gives the same returns (the command adds nothing)
    teacher, normalizer = make_teacher(seed=1)
    _, teacher_spec = specs()
    direct = evaluate_policy(teacher_actor(teacher, normalizer), teacher_spec, sim_config(30),
                             held_out_seeds(2))
    assert t["returns"] == pytest.approx(direct.returns.tolist())


def test_eval_command_names_bad_input(tmp_path, capsys):
    assert cli.main(["eval"]) == 2
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    assert cli.main(["eval", "--student", str(bad), "--episodes", "1", "--no-progress"]) == 1
    assert cli.main(["eval", "--teacher", str(tmp_path / "missing"), "--episodes", "1",
                     "--no-progress"]) == 1
