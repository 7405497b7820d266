"""Dataset from bags: the exact vectors the nodes would assemble, episodes kept whole, bad bags
refused with the file and topic named."""
from __future__ import annotations

import os

import numpy as np
import pytest

from policy_distill_ros.recording.recover import recover
from policy_distill_ros.training.dataset import (
    DatasetError,
    DistillDataset,
    dataset_from_bag,
    dataset_from_bags,
)
from sim_bags import record_sim_bag, specs


def _check_equal(ds: DistillDataset, rec) -> None:
    s, t, a, e = rec.arrays()
    assert len(ds) == len(e)
    np.testing.assert_array_equal(ds.student_obs, s)   # bit-exact: same spec code, same numbers
    np.testing.assert_array_equal(ds.teacher_obs, t)
    np.testing.assert_allclose(ds.actions, a, atol=1e-7)


def test_bag_gives_the_exact_vectors_of_the_in_process_path(tmp_path):
    rec = record_sim_bag(tmp_path / "bag", episodes=3, max_steps=15)
    student_spec, teacher_spec = specs()
    ds, stats = dataset_from_bag(str(tmp_path / "bag"), student_spec, teacher_spec)
    _check_equal(ds, rec)
    n = 3 * 16   # reset frame + 15 steps per (truncated) episode, one decision each
    assert stats.samples == len(ds) == stats.echoes == n and stats.episodes == 3
    assert ds.student_obs.shape == (n, student_spec.observation.size)
    assert ds.teacher_obs.shape == (n, teacher_spec.observation.size)
    # episodes: ids of the sim, returns = the terminal frame's episode_return
    assert sorted(ds.episode_return) == sorted(set(rec.episode_id))
    for ep, ret in rec.episode_return.items():
        assert ds.episode_return[ep] == pytest.approx(ret)


def test_layout_by_hand_history_last_action_and_scaling(tmp_path):
    """Independent of the assembler: the joint_vel term, the history shift and last_action."""
    rec = record_sim_bag(tmp_path / "bag", episodes=2, max_steps=6)
    student_spec, teacher_spec = specs()
    ds = dataset_from_bags([str(tmp_path / "bag")], student_spec, teacher_spec)
    step = student_spec.observation.step_size            # 34
    sl = student_spec.observation.term_slices()
    hist = student_spec.observation.history_length        # 3
    joints = list(student_spec.action.joints)
    for row, frame in enumerate(rec.frames):
        newest = ds.student_obs[row, (hist - 1) * step:]
        js = frame.topics["joint_states"]
        order = [list(js.names["velocity"]).index(j) for j in joints]
        vel = np.clip(js.fields["velocity"][order] * 0.1, -10, 10).astype(np.float32)
        np.testing.assert_array_equal(newest[sl["joint_vel"]], vel)
        first_of_episode = row == 0 or ds.episode_id[row] != ds.episode_id[row - 1]
        expected_last = np.zeros(8) if first_of_episode else rec.commands[row - 1]
        np.testing.assert_allclose(newest[sl["last_action"]], expected_last, atol=1e-7)
        if first_of_episode:   # history padded with the first step
            for h in range(hist - 1):
                np.testing.assert_array_equal(ds.student_obs[row, h * step:(h + 1) * step], newest)
        elif ds.episode_id[row - 1] == ds.episode_id[row]:  # shifted by one step
            np.testing.assert_array_equal(ds.student_obs[row, (hist - 2) * step:(hist - 1) * step],
                                          ds.student_obs[row - 1, (hist - 1) * step:])
    # the teacher sees the privileged terms, the student does not
    t_sl = teacher_spec.observation.term_slices()
    dyn = rec.frames[0].topics["privileged/dynamics"]
    labels = list(dyn.names["data"])
    raw = [
        dyn.fields["data"][labels.index(k)] for k in ("friction", "payload_kg", "motor_strength")
    ]
    np.testing.assert_allclose(ds.teacher_obs[0, t_sl["dynamics"]],
                               np.asarray(raw) - [0.9, 0.15, 1.0], atol=1e-6)


def test_slow_echo_and_reversed_joint_order_give_the_same_samples(tmp_path):
    """An echo recorded after the next frame's messages still joins its own state; echo joints
    are matched by name."""
    rec = record_sim_bag(tmp_path / "bag", episodes=2, max_steps=10, late_echo=True,
                         reversed_echo_names=True)
    ds = dataset_from_bags(str(tmp_path / "bag"), *specs())
    _check_equal(ds, rec)


@pytest.mark.parametrize("frame", ["fallback", "withheld,fallback"])   # published or not
def test_fallback_echoes_feed_last_action_but_give_no_sample(tmp_path, frame):
    rec = record_sim_bag(tmp_path / "bag", episodes=1, max_steps=12, fallback_every=4,
                         fallback_frame=frame)
    ds, stats = dataset_from_bag(str(tmp_path / "bag"), *specs())
    assert stats.echoes == 13 and stats.fallback_echoes == 3 and stats.samples == 10
    _check_equal(ds, rec)


def test_several_bags_get_unique_episode_ids(tmp_path):
    a = record_sim_bag(tmp_path / "a", episodes=2, max_steps=5, seed=1)
    b = record_sim_bag(tmp_path / "b", episodes=2, max_steps=5, seed=2)
    ds = dataset_from_bags([str(tmp_path / "a"), str(tmp_path / "b")], *specs())
    assert len(ds) == len(a.episode_id) + len(b.episode_id)
    assert len(ds.episodes) == 4 and len(ds.episode_return) == 4
    assert ds.sources == (str(tmp_path / "a"), str(tmp_path / "b"))
    first = dataset_from_bags(str(tmp_path / "a"), *specs())
    np.testing.assert_array_equal(ds.student_obs[:len(first)], first.student_obs)


def _toy(n_episodes=10, per=7, seed=0) -> DistillDataset:
    rng = np.random.default_rng(seed)
    n = n_episodes * per
    return DistillDataset(rng.normal(size=(n, 4)), rng.normal(size=(n, 6)), rng.normal(size=(n, 2)),
                          np.repeat(np.arange(n_episodes) * 3, per),
                          {i * 3: float(i) for i in range(n_episodes)})


def test_split_keeps_episodes_whole_and_is_seeded():
    ds = _toy()
    train, val = ds.split_by_episode(0.3, seed=4)
    assert len(train) + len(val) == len(ds)
    assert not set(train.episode_id) & set(val.episode_id)
    assert len(val.episodes) == 3
    for part in (train, val):   # every episode complete
        for ep in part.episodes:
            assert (part.episode_id == ep).sum() == 7
    again, _ = ds.split_by_episode(0.3, seed=4)
    np.testing.assert_array_equal(again.student_obs, train.student_obs)
    other, _ = ds.split_by_episode(0.3, seed=5)
    assert set(other.episodes) != set(train.episodes)
    with pytest.raises(ValueError, match="at least 2"):
        _toy(n_episodes=1).split_by_episode(0.2, 0)


def test_filter_concat_save_load(tmp_path):
    ds = _toy()
    good = ds.filter_episodes(min_return=5.0)
    assert sorted(good.episode_return) == [15, 18, 21, 24, 27]
    assert len(good) == 5 * 7
    assert ds.filter_episodes(None) is ds
    both = ds.concat(good)
    assert len(both) == len(ds) + len(good)
    assert len(both.episodes) == 15
    assert both.episode_id[len(ds):].min() > ds.episode_id.max()
    assert sorted(both.episode_return.values()) == sorted(list(ds.episode_return.values())
                                                          + list(good.episode_return.values()))
    path = both.save(tmp_path / "d.npz")
    back = DistillDataset.load(path)
    for name in ("student_obs", "teacher_obs", "actions", "episode_id"):
        np.testing.assert_array_equal(getattr(back, name), getattr(both, name))
    assert back.episode_return == both.episode_return
    with pytest.raises(ValueError, match="NaN"):
        DistillDataset(np.full((2, 3), np.nan), np.zeros((2, 3)), np.zeros((2, 1)), [0, 0])
    with pytest.raises(ValueError, match="widths differ"):
        ds.concat(DistillDataset(np.zeros((1, 5)), np.zeros((1, 6)), np.zeros((1, 2)), [0]))


def test_missing_topic_is_named_with_the_bag(tmp_path):
    record_sim_bag(tmp_path / "bag", episodes=1, max_steps=3,
                   skip_topics=("privileged/dynamics",))
    with pytest.raises(DatasetError) as err:
        dataset_from_bags(str(tmp_path / "bag"), *specs())
    assert "privileged/dynamics" in str(err.value) and str(tmp_path / "bag") in str(err.value)
    assert "dynamics" in str(err.value)   # the term that needs it


def test_missing_joint_is_named_with_the_topic(tmp_path):
    record_sim_bag(tmp_path / "bag", episodes=1, max_steps=3, rename_joint="ankle_3")
    with pytest.raises(DatasetError) as err:
        dataset_from_bags(str(tmp_path / "bag"), *specs())
    text = str(err.value)
    assert "joint_states" in text and "ankle_3" in text and str(tmp_path / "bag") in text


def test_no_echo_topic_or_privileged_student_spec(tmp_path):
    record_sim_bag(tmp_path / "bag", episodes=1, max_steps=3, skip_topics=("policy_action",))
    with pytest.raises(DatasetError, match="policy_action"):
        dataset_from_bags(str(tmp_path / "bag"), *specs())
    student, teacher = specs()
    with pytest.raises(DatasetError, match="privileged"):
        dataset_from_bags(str(tmp_path / "bag"), teacher, teacher)


def test_half_written_bag_is_refused_until_recovered(tmp_path):
    rec = record_sim_bag(tmp_path / "bag", episodes=2, max_steps=20)
    mcap = [os.path.join(tmp_path / "bag", f) for f in os.listdir(tmp_path / "bag")
            if f.endswith(".mcap")][0]
    os.truncate(mcap, int(os.path.getsize(mcap) * 0.7))    # killed mid-write: no summary
    with pytest.raises(DatasetError) as err:
        dataset_from_bags(str(tmp_path / "bag"), *specs())
    assert "half-written" in str(err.value) and "recover" in str(err.value)
    assert mcap in str(err.value) or str(tmp_path / "bag") in str(err.value)
    recover(str(tmp_path / "bag"))
    ds = dataset_from_bags(str(tmp_path / "bag"), *specs())
    s, *_ = rec.arrays()
    assert 0 < len(ds) < len(s)
    np.testing.assert_array_equal(ds.student_obs, s[:len(ds)])


@pytest.mark.dds
def test_bag_recorded_from_the_real_nodes_replays_what_the_student_node_saw(tmp_path):
    """sim_node (lockstep) driven by student_node running a known linear ONNX policy, recorded by
    recorder_node: for every sample, policy(dataset student_obs) is the action the node sent,
    so the dataset holds exactly the vectors the node assembled (last_action and history
    included). The spec reads one sensor topic: with two, which of a frame's messages reached
    the node before its trigger is a DDS delivery race the bag cannot record."""
    import threading
    import time

    import rclpy
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from node_process import node_process, read_log
    from policy_distill_ros.recording.bag_reader import bag_info
    from policy_models import make_linear_policy
    from ros_harness import wait_until

    full, _ = specs()
    d = full.to_dict()
    d["observation"]["terms"] = [t for t in d["observation"]["terms"]
                                 if t.get("topic") in (None, "joint_states")]
    from policy_distill_ros.core.spec import load_policy_spec
    student_spec = load_policy_spec(d)
    assert student_spec.observation.topics == ("joint_states",)
    model = tmp_path / "linear.onnx"
    w, b = make_linear_policy(model, student_spec, seed=3)
    bag = str(tmp_path / "bag")
    rclpy.init()
    node = rclpy.create_node("recording_placeholder")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def transition(transition_id: int) -> None:
        client = node.create_client(ChangeState, "/student_node/change_state")
        wait_until(client.service_is_ready, 20, "the student's lifecycle service")
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        wait_until(future.done, 20, "a lifecycle transition")
        assert future.result().success
        node.destroy_client(client)

    try:
        # A publisher on policy_action so the recorder subscribes it before the student exists
        # (it subscribes a topic once it has a publisher).
        holder = node.create_publisher(JointState, "policy_action", 10)
        recorder_params = {"topics": ["joint_states", "imu", "episode", "policy_action"],
                           "bag_path": bag, "flush_period_s": 0.1}
        student_params = {"model_path": str(model), "trigger": "on_message",
                          "trigger_topic": "joint_states", "episode_topic": "episode",
                          "max_input_age_s": 600.0, "autostart": False,
                          "enforcement_wait_s": 0.0}   # no timing monitor here: act at once
        sim_params = {"mode": "lockstep", "num_episodes": 2, "max_episode_steps": 30, "seed": 5,
                      "lockstep_timeout_s": 0.5}
        with node_process("recorder_node", "recorder_node", recorder_params) as recorder, \
                node_process("student_node", "student_node", student_params) as student:
            wait_until(lambda: holder.get_subscription_count() >= 1, 20, "recorder subscription")
            transition(Transition.TRANSITION_CONFIGURE)   # publishers up, not answering yet
            # Lockstep: until the student is active the sim re-publishes its first frame every
            # 0.5 s; once the recorder has stored it (and had time to match the student's echo
            # publisher), the student is activated and drives the episodes.
            with node_process("sim_node", "sim_node", sim_params) as sim:
                wait_until(lambda: _count(bag, "/joint_states") >= 2, 30, "frames on disk")
                wait_until(lambda: len(node.get_publishers_info_by_topic("policy_action")) >= 2,
                           20, "the student's echo publisher")
                time.sleep(2.0)
                transition(Transition.TRANSITION_ACTIVATE)
                wait_until(lambda: sim.poll() is not None, 120, "the simulator to finish")
                assert sim.returncode == 0, read_log(sim)
            time.sleep(0.5)
            student.node.stop()
            recorder.node.stop()
            assert recorder.returncode == 0, read_log(recorder)
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()

    info = bag_info(bag)
    counts = {t.lstrip("/"): i.message_count for t, i in info.topics.items()}
    ds, stats = dataset_from_bag(bag, student_spec, student_spec)   # the student's view only
    assert len(ds.episodes) == 2 and stats.samples >= 50, (stats, counts)
    expected = np.clip(ds.student_obs.astype(np.float64) @ w + b, -1.0, 1.0)
    match = np.all(np.abs(expected - ds.actions) <= 1e-5, axis=1)
    if counts["joint_states"] == counts["imu"] == counts["episode"]:   # nothing dropped
        assert match.all(), np.flatnonzero(~match)
    else:
        assert match.mean() >= 0.9, (counts, np.flatnonzero(~match))


def _count(bag: str, topic: str) -> int:
    from policy_distill_ros.recording.bag_reader import BagError, bag_info
    try:
        info = bag_info(bag)
    except BagError:
        return 0
    return info.topics[topic].message_count if topic in info.topics else 0


def test_cross_topic_log_order_does_not_matter(tmp_path):
    """A recorder keeps each topic's order but logs topics interleaved as it drains them (echo
    before its state, contact forces after the next frame): same samples."""
    rec = record_sim_bag(tmp_path / "bag", episodes=3, max_steps=20, interleave_seed=7)
    ds, stats = dataset_from_bag(str(tmp_path / "bag"), *specs())
    assert stats.headerless_by_log_order == []
    _check_equal(ds, rec)


def test_headerless_topic_with_drops_falls_back_to_log_order(tmp_path):
    rec = record_sim_bag(tmp_path / "bag", episodes=1, max_steps=10)
    # drop one contact message by rewriting the bag without it
    from policy_distill_ros.recording.bag_reader import read_bag_raw
    from policy_distill_ros.recording.bag_writer import BagWriter, BagWriterConfig
    writer = BagWriter(BagWriterConfig(path=str(tmp_path / "dropped"))).open()
    channels, dropped = {}, False
    for m in read_bag_raw(str(tmp_path / "bag")):
        if m.topic == "/privileged/contact_forces" and not dropped:
            dropped = True
            continue
        if m.topic not in channels:
            channels[m.topic] = writer.add_topic(m.topic, m.msgtype)
        writer.write(channels[m.topic], m.log_time_ns, bytes(m.message))
    writer.close()
    ds, stats = dataset_from_bag(str(tmp_path / "dropped"), *specs())
    assert stats.headerless_by_log_order == ["privileged/contact_forces"]
    s, t, *_ = rec.arrays()
    # frame 0 has no contact reading: no sample, but its build still entered the history
    assert stats.early_echoes == 1 and len(ds) == len(s) - 1
    np.testing.assert_array_equal(ds.student_obs, s[1:])
    np.testing.assert_array_equal(ds.teacher_obs, t[1:])


def test_time_reset_without_episode_topic_splits_episodes(tmp_path):
    rec = record_sim_bag(tmp_path / "bag", episodes=3, max_steps=8, reset_time=True,
                         skip_topics=("episode",))
    ds, stats = dataset_from_bag(str(tmp_path / "bag"), *specs())
    assert stats.episodes == 3 and len(ds.episodes) == 3
    assert all(np.isnan(v) for v in ds.episode_return.values())
    _check_equal(ds, rec)
