"""`policy-distill record` end to end: sim_node (lockstep) -> teacher_node -> recorder_node as
real processes over DDS, then the bag is read back with the package's ROS-free reader."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from policy_distill_ros.recording.bag_reader import bag_info, read_bag
from policy_distill_ros.recording.join import join_by_stamp
from policy_distill_ros.training.teacher_io import read_teacher_info
from policy_distill_ros.training.teacher_runner import TeacherRunner
from teacher_fixtures import STUDENT_SPEC, TEACHER_SPEC, make_random_teacher

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.dds, pytest.mark.timeout(300)]
PRIVILEGED = ["/privileged/odometry", "/privileged/contact_forces", "/privileged/dynamics"]


def run_record(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    figures = tmp_path / "figures.json"
    cmd = [sys.executable, "-m", "policy_distill_ros.cli", "record", "--no-progress",
           "--out", str(tmp_path), "--bag-name", "bag", "--log-dir", str(tmp_path / "logs"),
           "--json", str(figures), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        str(REPO), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=280,
                         env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out, json.loads(figures.read_text())


def frame_counts(bag: Path, counts: dict) -> tuple[int, int]:
    """(distinct frames, re-published frames). In lockstep the simulator re-publishes a frame
    that got no command within lockstep_timeout_s (e.g. the first one, when the teacher's reader
    matched the simulator's writer only after it was sent); a re-published frame carries its
    original stamp on every sensor topic, and the bag must hold the copy too."""
    joined = join_by_stamp(read_bag(str(bag), ["/joint_states"]), "joint_states", "-")
    republished = joined.duplicate_stamps
    for topic in ["/imu", "/episode", *PRIVILEGED]:
        assert counts[topic] == counts["/joint_states"], (topic, counts)
    assert republished <= 2, f"{republished} frames re-published: the teacher stalled"
    return counts["/joint_states"] - republished, republished


def test_record_two_short_episodes_reads_back_completely(tmp_path):
    teacher = tmp_path / "teacher"
    sha = make_random_teacher(teacher, TEACHER_SPEC, seed=2)
    out, figures = run_record(tmp_path, "--teacher", str(teacher), "--episodes", "2",
                              "--max-episode-steps", "50", "--seed", "3")
    bag = tmp_path / "bag"
    assert str(bag.resolve()) in out.stdout and "steps/s" in out.stdout

    info = bag_info(str(bag))
    assert info.complete and not info.problems
    counts = {t: i.message_count for t, i in info.topics.items()}
    frames, republished = frame_counts(bag, counts)
    # 2 episodes x (reset frame + 50 steps), every frame answered (terminal ones too)
    assert frames == 2 * 51
    for topic in ["/policy_command", "/policy_action"]:
        assert frames <= counts[topic] <= frames + republished, (topic, counts)
    assert figures["message_counts"] == counts

    # specs and the teacher's content hash travel with the data
    assert info.custom_data["teacher_sha256"] == sha == read_teacher_info(teacher)["sha256"]
    assert yaml.safe_load(info.custom_data["teacher_spec"]) == \
        read_teacher_info(teacher)["info"]["policy_spec"]
    assert info.custom_data["student_spec"] == STUDENT_SPEC.read_text()

    # every echo joins a joint_states message by exact stamp, none is a fallback
    joined = join_by_stamp(read_bag(str(bag), ["/joint_states", "/policy_action"]),
                           "joint_states", "policy_action")
    assert joined.unmatched_actions == 0 and joined.unmatched_states == 0
    assert len({key for key, _, _ in joined.pairs}) == frames
    assert joined.duplicate_stamps == republished
    assert all(action.header.frame_id == "" for _, _, action in joined.pairs)

    # episodes: ids 0 and 1, steps 0..50, returns as printed
    episodes = [dict(zip(m.message.layout.dim[0].label.split(","), m.message.data, strict=True))
                for m in read_bag(str(bag), ["/episode"])]
    assert sorted({int(e["episode_id"]) for e in episodes}) == [0, 1]
    finals = list({(int(e["episode_id"]), int(e["step"])): e for e in episodes
                   if e["truncated"] or e["terminated"]}.values())
    assert [int(e["step"]) for e in finals] == [50, 50]
    np.testing.assert_allclose([e["episode_return"] for e in finals],
                               [e["episode_return"] for e in figures["episodes"]])

    # the recorded command is the teacher's action for the recorded observation: the trainer's
    # own bag reader rebuilds the teacher's view (last action = previous recorded command)
    from policy_distill_ros.core.spec import load_policy_spec
    from policy_distill_ros.training.dataset import dataset_from_bag
    runner = TeacherRunner(teacher)
    dataset, stats = dataset_from_bag(bag, load_policy_spec(STUDENT_SPEC), runner.spec)
    assert frames <= len(dataset.actions) <= counts["/policy_action"], stats
    assert sorted(set(dataset.episode_id.tolist())) == [0, 1]
    expected = np.stack([runner.spec.action.postprocess(runner(obs))
                         for obs in dataset.teacher_obs])
    np.testing.assert_allclose(dataset.actions, expected, atol=1e-5)


def test_record_dagger_mix_with_a_student(tmp_path):
    """--student --mode mix: the student proposes on student/*, the teacher labels every frame
    and executes its own action or forwards the student's, for the same stamp."""
    from policy_distill_ros.core.demo_policy import make_demo_policy
    from policy_distill_ros.core.spec import load_policy_spec
    teacher = tmp_path / "teacher"
    make_random_teacher(teacher, TEACHER_SPEC, seed=4)
    student = make_demo_policy(tmp_path / "student.onnx", load_policy_spec(STUDENT_SPEC))
    _, figures = run_record(tmp_path, "--teacher", str(teacher), "--student", str(student),
                            "--mode", "mix", "--beta", "0.5", "--episodes", "1",
                            "--max-episode-steps", "30")
    bag = str(tmp_path / "bag")
    counts = figures["message_counts"]
    frames, republished = frame_counts(tmp_path / "bag", counts)
    assert frames == 31
    for topic in ("/policy_action", "/policy_command", "/teacher_label",
                  "/student/policy_action"):
        assert frames <= counts[topic] <= frames + republished, (topic, counts)
    # stamp -> every action seen for it: a frame the simulator re-sent (no action came in time,
    # a loaded machine) is answered again, and with a history in the observation differently
    by_topic: dict = {"/teacher_label": {}, "/student/policy_action": {}, "/policy_action": {}}
    for item in read_bag(bag, list(by_topic)):
        stamp = (item.message.header.stamp.sec, item.message.header.stamp.nanosec)
        by_topic[item.topic].setdefault(stamp, []).append(np.array(item.message.position))
    executed = by_topic["/policy_action"]
    assert (
        set(executed) == set(by_topic["/teacher_label"]) == set(by_topic["/student/policy_action"])
    )
    sources = []
    for stamp, actions in executed.items():
        for action in actions:
            if any(np.array_equal(action, a) for a in by_topic["/teacher_label"][stamp]):
                sources.append("teacher")
            elif any(np.array_equal(action, a) for a in by_topic["/student/policy_action"][stamp]):
                sources.append("student")
            else:
                raise AssertionError(f"executed action at {stamp} is neither the teacher's nor "
                                     f"the student's (republished frames: {republished})")
    assert 0 < sources.count("teacher") < len(sources), sources
