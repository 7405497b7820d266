"""DAgger in-process: data aggregates, the teacher labels the student's states, the student's
error on the states it visits drops; beta schedules; the `dagger` command end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from distill_fixtures import (
    STUDENT_SPEC,
    TEACHER_SPEC,
    make_teacher,
    save_random_teacher,
    sim_config,
    specs,
    train_config,
)
from policy_distill_ros import cli
from policy_distill_ros.core.policy_file import OnnxPolicy
from policy_distill_ros.training.dagger import DaggerConfig, beta_for_round, run_dagger
from policy_distill_ros.training.evaluation import (
    HELD_OUT_SEED_BASE,
    evaluate_policy,
    validation_seeds,
)
from policy_distill_ros.training.rollout import collect, student_actor, teacher_actor
from policy_distill_ros.training.trainer import action_errors, episode_actions


def test_beta_schedules():
    const = DaggerConfig(rounds=4, beta_schedule="constant", beta_start=0.3)
    assert [beta_for_round(const, r) for r in range(1, 5)] == [0.3] * 4
    lin = DaggerConfig(rounds=5, beta_schedule="linear", beta_start=0.8, beta_end=0.0)
    assert [beta_for_round(lin, r) for r in range(1, 6)] == pytest.approx([0.8, 0.6, 0.4, 0.2, 0])
    exp = DaggerConfig(rounds=3, beta_schedule="exponential", beta_start=0.5, beta_decay=0.5)
    assert [beta_for_round(exp, r) for r in range(1, 4)] == pytest.approx([0.5, 0.25, 0.125])
    with pytest.raises(ValueError, match="round 0"):
        beta_for_round(exp, 0)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="beta_schedule"):
        DaggerConfig(beta_schedule="cosine")
    with pytest.raises(ValueError, match="beta_start"):
        DaggerConfig(beta_start=1.5)
    with pytest.raises(ValueError, match="rounds"):
        DaggerConfig(rounds=0)
    with pytest.raises(ValueError, match="held-out"):
        DaggerConfig(seed_base=HELD_OUT_SEED_BASE - 5)
    with pytest.raises(ValueError, match="unknown keys"):
        DaggerConfig.from_dict({"round": 3})


def test_round_seeds_are_fresh_and_below_the_held_out_range():
    cfg = DaggerConfig(rounds=3, initial_episodes=4, episodes_per_round=2, seed_base=10)
    seeds = [cfg.round_seeds(r) for r in range(4)]
    flat = [s for part in seeds for s in part]
    assert seeds[0] == [10, 11, 12, 13] and seeds[1] == [14, 15]
    assert len(set(flat)) == len(flat) and max(flat) < HELD_OUT_SEED_BASE


def test_dagger_aggregates_labels_visited_states_and_closes_the_on_policy_gap():
    student_spec, teacher_spec = specs()
    teacher, normalizer = make_teacher(seed=2)
    cfg = sim_config(50)
    dagger = DaggerConfig(rounds=3, initial_episodes=4, episodes_per_round=4,
                          beta_schedule="exponential", beta_start=0.5, beta_decay=0.5,
                          round_epochs=10, val_episodes=1, select_best=False)
    records = []
    out = run_dagger(teacher, normalizer, student_spec, teacher_spec, cfg, dagger,
                     train_config(epochs=15), on_round=records.append)
    rounds = out.rounds
    assert records == rounds and [r.round for r in rounds] == [0, 1, 2, 3]
    assert [r.beta for r in rounds] == pytest.approx([1.0, 0.5, 0.25, 0.125])
    # aggregation: every round adds its samples, nothing is dropped
    sizes = [r.dataset_samples for r in rounds]
    assert sizes == list(np.cumsum([r.new_samples for r in rounds]))
    assert len(out.dataset) == sizes[-1] and len(out.dataset.episodes) == 4 + 3 * 4
    # the mixture: round 1 executes the teacher about half the time, round 3 rarely
    assert 0.3 < rounds[1].teacher_action_fraction < 0.7
    assert rounds[3].teacher_action_fraction < rounds[1].teacher_action_fraction
    # the student's error on the states it visits itself drops across rounds
    assert rounds[-1].on_policy_error_before < rounds[1].on_policy_error_before
    for r in rounds[1:]:
        assert r.on_policy_error_after < r.on_policy_error_before
        assert r.val_mean_return is not None and np.isfinite(r.val_mean_return)
    # the final student on fresh student-driven states, against the teacher's labels there:
    # better than the round-0 (behavioural cloning) student on the same states
    fresh = collect(student_spec, teacher_spec, cfg, [500, 501, 502],
                    student_actor(out.result.student, out.result.student_normalizer),
                    teacher_actor(teacher, normalizer))
    final_err = action_errors(episode_actions(out.result.student, out.result.student_normalizer,
                                              fresh.dataset), fresh.labels)["mse"]
    assert final_err < rounds[1].on_policy_error_before
    assert json.dumps(out.to_dict())


def test_select_best_keeps_the_round_with_the_best_validation_return():
    student_spec, teacher_spec = specs()
    teacher, normalizer = make_teacher(seed=6)
    cfg = sim_config(30)
    dagger = DaggerConfig(rounds=2, initial_episodes=3, episodes_per_round=3, round_epochs=3,
                          val_episodes=2, select_best=True)
    out = run_dagger(teacher, normalizer, student_spec, teacher_spec, cfg, dagger,
                     train_config(epochs=3))
    returns = [r.val_mean_return for r in out.rounds]
    assert out.selected_round == int(np.argmax(returns))
    again = evaluate_policy(student_actor(out.result.student, out.result.student_normalizer),
                            student_spec, cfg, validation_seeds(2))
    assert again.mean_return == pytest.approx(max(returns))
    assert out.last is not None
    assert out.to_dict()["selected_round"] == out.selected_round


def test_dagger_starts_from_given_data_without_teacher_episodes():
    student_spec, teacher_spec = specs()
    teacher, normalizer = make_teacher(seed=3)
    cfg = sim_config(20)
    initial = collect(student_spec, teacher_spec, cfg, [900, 901],
                      teacher_actor(teacher, normalizer)).dataset
    dagger = DaggerConfig(rounds=1, initial_episodes=0, episodes_per_round=2, round_epochs=2)
    out = run_dagger(teacher, normalizer, student_spec, teacher_spec, cfg, dagger,
                     train_config(epochs=2), initial_dataset=initial)
    assert out.rounds[0].dataset_samples == len(initial)
    assert len(out.dataset) == len(initial) + out.rounds[1].new_samples
    with pytest.raises(ValueError, match="initial data"):
        run_dagger(teacher, normalizer, student_spec, teacher_spec, cfg, dagger,
                   train_config(epochs=2))


def test_dagger_command_writes_student_and_report(tmp_path, capsys):
    teacher_dir = save_random_teacher(tmp_path / "teacher", seed=4)
    config = {"teacher": teacher_dir, "teacher_spec": str(TEACHER_SPEC),
              "student_spec": str(STUDENT_SPEC), "max_episode_steps": 20,
              "out": str(tmp_path / "run"), "eval_episodes": 2,
              "dagger": {"rounds": 2, "initial_episodes": 3, "episodes_per_round": 2,
                         "round_epochs": 2, "beta_schedule": "linear", "beta_start": 0.6,
                         "beta_end": 0.2, "val_episodes": 1},
              "train": {"student": {"kind": "history_mlp", "hidden_sizes": [16, 16]},
                        "epochs": 3, "batch_size": 64, "val_fraction": 0.3, "num_threads": 1}}
    path = tmp_path / "dagger.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["dagger", "--config", str(path), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "val return" in text and "return ratio" in text and "selected: round" in text
    report = json.loads((tmp_path / "run" / "dagger.json").read_text())
    assert [r["beta"] for r in report["rounds"]] == pytest.approx([1.0, 0.6, 0.2])
    assert report["dataset_samples"] == report["rounds"][-1]["dataset_samples"]
    assert len(report["evaluation"]["student"]["returns"]) == 2
    policy = OnnxPolicy(tmp_path / "run" / "student.onnx", specs()[0])
    assert policy.metadata.provenance["method"] == "dagger"
    assert np.isfinite(policy(np.zeros(policy.obs_size, np.float32))).all()


def test_dagger_command_refuses_bad_config(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"teacher": "x", "rounds": 3}))
    assert cli.main(["dagger", "--config", str(path)]) == 1
