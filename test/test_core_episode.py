"""EpisodeBoundary: when a policy node must forget its history and recurrent state."""
from __future__ import annotations

import math

import pytest

from policy_distill_ros.core.episode import EpisodeBoundary

LABELS = ["episode_id", "step", "stamp_s", "reward", "episode_return", "terminated", "truncated"]


def test_time_backwards_per_topic_then_all_topics_restart():
    b = EpisodeBoundary()
    assert b.on_stamp("imu", 10.0) is None
    assert b.on_stamp("joint_states", 10.0) is None
    assert b.on_stamp("imu", 10.0) is None          # the same stamp again is not a jump
    assert b.on_stamp("imu", 10.0 - 5e-7) is None   # within the tolerance
    jump = b.on_stamp("imu", 0.5)
    assert jump is not None and "'imu'" in jump and "9.999999 -> 0.500000" in jump
    # the other topic restarts too: its first stamp of the new episode is not a second jump
    assert b.on_stamp("joint_states", 0.5) is None
    assert b.on_stamp("joint_states", 0.6) is None
    assert b.on_stamp("imu", 100.0) is None          # forward jumps are not resets


def test_new_episode_id_by_label_first_only_recorded():
    b = EpisodeBoundary()
    assert b.on_episode(LABELS, [3, 0, 0.0, 0, 0, 0, 0]) is None
    assert b.on_episode(LABELS, [3, 1, 0.05, 1, 1, 0, 0]) is None
    change = b.on_episode(LABELS, [4, 0, 0.1, 0, 0, 0, 0])
    assert change == "new episode 4 (was 3)"
    # labels in another order are followed by name
    assert b.on_episode(["step", "episode_id"], [0, 4]) is None
    assert b.on_episode(["step", "episode_id"], [0, 5]) == "new episode 5 (was 4)"


@pytest.mark.parametrize("labels, values, match", [
    (None, [1.0], "no 'episode_id' label"),
    (["step", "reward"], [1.0, 2.0], r"labels: \['step', 'reward'\]"),
    (LABELS, [], "0 values"),
    (LABELS, [math.nan], "'episode_id' is nan"),
])
def test_bad_episode_arrays_are_named(labels, values, match):
    with pytest.raises(ValueError, match=match):
        EpisodeBoundary().on_episode(labels, values)


def test_forget_stamps_and_config_checks():
    b = EpisodeBoundary()
    b.on_stamp("imu", 5.0)
    b.forget_stamps()
    assert b.on_stamp("imu", 0.0) is None
    with pytest.raises(ValueError, match="id_label"):
        EpisodeBoundary(id_label="")
    with pytest.raises(ValueError, match="tolerance_s"):
        EpisodeBoundary(tolerance_s=-1.0)
