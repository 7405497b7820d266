"""student_node end to end: a real process, real DDS, real ONNX Runtime.

The test publishes JointState (joint order shuffled, an extra joint) and Imu, assembles the
observation itself with numpy from what it sent, runs the same .onnx file in its own
onnxruntime session and compares with what the node published. Then it breaks things: stale and
non-finite input, a good and a corrupt hot reload, a model that does not match the robot spec,
time going backwards, lifecycle deactivation.
"""
from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest
import rclpy
import yaml
from lifecycle_msgs.srv import GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from std_msgs.msg import Float64MultiArray, MultiArrayDimension, String
from std_srvs.srv import Trigger

from node_process import node_process
from policy_models import make_linear_policy, make_recurrent_policy
from ros_harness import (
    RECORD,
    RobotPeer,
    echo_stamp,
    echo_stamp_s,
    is_fallback,
    wait_for_log,
    wait_until,
)

pytestmark = [pytest.mark.dds, pytest.mark.timeout(180)]

JOINTS = ["hip", "knee", "ankle"]
PUBLISHED_ORDER = ["ankle", "wheel", "hip", "knee"]    # shuffled, plus a joint the policy ignores
OFFSET = [0.1, -0.2, 0.3]
LOWER, UPPER = [-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]
SPEC = {
    "observation": {
        "history_length": 2,
        "terms": [
            {"name": "joint_pos", "topic": "joint_states", "field": "position", "joints": JOINTS,
             "offset": OFFSET, "scale": 2.0},
            {"name": "joint_vel", "topic": "joint_states", "field": "velocity", "joints": JOINTS,
             "scale": 0.5, "clip": [-1.0, 1.0]},
            {"name": "ang_vel", "topic": "imu", "field": "angular_velocity", "size": 3},
            {"name": "last_action", "kind": "last_action"},
        ],
    },
    "action": {"joints": JOINTS, "scale": 0.5, "offset": OFFSET, "lower": LOWER, "upper": UPPER},
    "rate_hz": 50.0,
}


class Reference:
    """The test's own assembly + an independent onnxruntime session on the same file."""

    def __init__(self, model_path: str) -> None:
        self.session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    @staticmethod
    def step(peer: RobotPeer, last_command: np.ndarray) -> np.ndarray:
        by_name = dict(zip(peer.joint_order, zip(peer.position, peer.velocity, strict=True),
                           strict=True))
        pos = np.array([by_name[j][0] for j in JOINTS])
        vel = np.array([by_name[j][1] for j in JOINTS])
        return np.concatenate([(pos - OFFSET) * 2.0, np.clip(vel * 0.5, -1, 1),
                               peer.angular_velocity, last_command])

    def command(self, obs: np.ndarray) -> np.ndarray:
        raw = self.session.run(["actions"], {"obs": obs.astype(np.float32)[None]})[0][0]
        return np.clip(raw.astype(np.float64) * 0.5 + OFFSET, LOWER, UPPER)

    def check_sequence(self, peer: RobotPeer, echoes, skip: int = 3) -> int:
        """Every policy echo c_k must equal policy([step(c_k-2), step(c_k-1)]) (history 2)."""
        checked = 0
        for k in range(2 + skip, len(echoes)):
            if is_fallback(echoes[k]) or is_fallback(echoes[k - 1]) or is_fallback(echoes[k - 2]):
                continue
            previous = [np.array(echoes[k - i].position) for i in (2, 1)]
            obs = np.concatenate([self.step(peer, previous[0]), self.step(peer, previous[1])])
            np.testing.assert_allclose(np.array(echoes[k].position), self.command(obs),
                                       atol=1e-5, err_msg=f"echo {k}")
            checked += 1
        return checked


@pytest.fixture(scope="module")
def peer():
    rclpy.init()
    robot = RobotPeer(PUBLISHED_ORDER, rate_hz=100.0)
    robot.position = np.array([0.4, 9.0, -0.3, 0.25])   # ankle, wheel, hip, knee
    robot.velocity = np.array([3.0, 9.0, -0.5, 0.1])    # ankle's 1.5 scaled -> clipped to 1
    robot.angular_velocity = np.array([0.05, -0.1, 0.2])
    yield robot
    robot.close()
    rclpy.try_shutdown()


@pytest.fixture()
def model(tmp_path):
    path = str(tmp_path / "student_a.onnx")
    make_linear_policy(path, SPEC, seed=1)
    return path


def student_params(model_path: str, **extra) -> dict:
    # No timing monitor in these tests: the policy commands from the first tick (the default
    # waits up to enforcement_wait_s for a monitor's state, commanding the fallback meanwhile).
    params = {"model_path": model_path, "rate_hz": 50.0, "max_input_age_s": 0.3,
              "enforcement_wait_s": 0.0}
    params.update(extra)
    return params


def policy_echoes(peer: RobotPeer, start: int, count: int, timeout_s: float = 20.0):
    wait_until(lambda: sum(not is_fallback(e) for e in peer.echoes_since(start)) >= count,
               timeout_s, f"{count} policy actions")
    return peer.echoes_since(start)


def test_commands_equal_onnxruntime_and_follow_stamp_rule(peer, model):
    reference = Reference(model)
    with node_process("student_node", "student_node", student_params(model)) as proc:
        wait_for_log(proc.node, "active", 15)
        echoes = policy_echoes(peer, peer.echo_count(), 40)
        assert reference.check_sequence(peer, echoes) >= 30
        commands = [c for _, c in peer.commands[-20:]]
        assert all(c.shape == (3,) and np.all(np.isfinite(c)) for c in commands)
        sent = set(peer.sent_stamps)
        for echo in echoes:
            assert echo.name == JOINTS
            if not is_fallback(echo):
                assert echo_stamp(echo) in sent, "echo stamp is not exactly an input stamp"


def test_stale_and_nan_input_fall_back_then_recover(peer, model):
    default_pose = np.clip(OFFSET, LOWER, UPPER)
    with node_process("student_node", "student_node", student_params(model)) as proc:
        policy_echoes(peer, peer.echo_count(), 10)
        # stale: the imu stops; within max_input_age_s the default pose goes out
        peer.publish_imu = False
        start = peer.echo_count()
        wait_until(lambda: any(is_fallback(e) for e in peer.echoes_since(start)), 5, "fallback")
        time.sleep(0.3)
        tail = peer.echoes_since(start)[-5:]
        assert all(is_fallback(e) for e in tail)
        for echo in tail:
            np.testing.assert_allclose(echo.position, default_pose)
            assert echo_stamp_s(echo) > 0, "fallback echo keeps the newest input stamp"
        peer.publish_imu = True
        policy_echoes(peer, peer.echo_count(), 10)
        # non-finite sensor data: a NaN in a joint the policy reads
        position = peer.position.copy()
        peer.position = position.copy()
        peer.position[2] = np.nan   # hip
        start = peer.echo_count()
        wait_until(lambda: sum(is_fallback(e) for e in peer.echoes_since(start)) >= 5, 5,
                   "fallback on NaN")
        peer.position = position
        policy_echoes(peer, peer.echo_count(), 5)
        # no NaN ever left the node
        assert all(np.all(np.isfinite(c)) for _, c in peer.commands)
        log = proc.node.read_log()
        # each fault logged exactly twice: once when it starts (ERROR), once when it clears
        stale = [line for line in log.splitlines() if "stale input: 'imu'" in line]
        assert len(stale) == 2 and "[ERROR]" in stale[0] and "[INFO]" in stale[1], log
        bad = [line for line in log.splitlines() if "non-finite" in line]
        assert len(bad) == 2 and "[ERROR]" in bad[0] and "[INFO]" in bad[1], log


def test_missing_joint_and_time_backwards(peer, model):
    with node_process("student_node", "student_node", student_params(model)) as proc:
        policy_echoes(peer, peer.echo_count(), 5)
        order = peer.joint_order
        peer.joint_order = ["ankle", "wheel", "hip", "kneee"]   # typo: 'knee' missing
        start = peer.echo_count()
        wait_until(lambda: sum(is_fallback(e) for e in peer.echoes_since(start)) >= 3, 5,
                   "fallback on missing joint")
        peer.joint_order = order
        policy_echoes(peer, peer.echo_count(), 5)
        assert any("[ERROR]" in line and "knee" in line
                   for line in proc.node.read_log().splitlines()), proc.node.read_log()
        peer.stamp_offset_s = -100.0   # sim reset: stamps jump back
        wait_for_log(proc.node, "time went backwards", 5)
        policy_echoes(peer, peer.echo_count(), 5)
        peer.stamp_offset_s = 0.0
        wait_until(lambda: proc.node.read_log().count("time went backwards") >= 1, 5, "log")


def _set_model_path(peer: RobotPeer, path: str) -> None:
    request = SetParameters.Request(parameters=[Parameter(
        name="model_path", value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                string_value=path))])
    result = peer.call(SetParameters, "/student_node/set_parameters", request)
    assert result.results[0].successful


def test_hot_reload_good_model_then_corrupt_model(peer, model, tmp_path):
    model_b = str(tmp_path / "student_b.onnx")
    make_linear_policy(model_b, SPEC, seed=2)
    with node_process("student_node", "student_node",
                      student_params(model, reload_on_announce=True)) as proc:
        policy_echoes(peer, peer.echo_count(), 10)
        # a good model via the parameter: outputs change to model B's
        _set_model_path(peer, model_b)
        wait_for_log(proc.node, f"reloaded model {model_b}", 10)
        time.sleep(0.1)
        echoes = policy_echoes(peer, peer.echo_count(), 20)
        assert Reference(model_b).check_sequence(peer, echoes) >= 10
        with pytest.raises(AssertionError):
            Reference(model).check_sequence(peer, echoes)
        # the same path overwritten with garbage, then ~/reload: refused, B keeps running
        reference_b = Reference(model_b)
        with open(model_b, "wb") as f:
            f.write(b"\x08\x07 definitely not an onnx protobuf")
        response = peer.call(Trigger, "/student_node/reload", Trigger.Request())
        assert not response.success
        assert model_b in response.message and "previous model keeps running" in response.message
        echoes = policy_echoes(peer, peer.echo_count(), 15)
        assert reference_b.check_sequence(peer, echoes) >= 5
        # an announcement on model_updated (trainer) reloads model A again
        announcer = peer.publisher(String, "model_updated")
        announcer.publish(String(data=model))
        wait_for_log(proc.node, f"reloaded model {model}", 10)
        time.sleep(0.1)
        echoes = policy_echoes(peer, peer.echo_count(), 15)
        assert Reference(model).check_sequence(peer, echoes) >= 5
        peer.node.destroy_publisher(announcer)
        assert all(np.all(np.isfinite(c)) for _, c in peer.commands)


def test_model_not_matching_robot_spec_is_refused(peer, model, tmp_path):
    robot_spec = dict(SPEC, action=dict(SPEC["action"], joints=["hip", "knee", "foot"]))
    spec_path = tmp_path / "robot.yaml"
    spec_path.write_text(yaml.safe_dump(robot_spec))
    with node_process("student_node", "student_node",
                      student_params(model, spec_path=str(spec_path))) as proc:
        wait_until(lambda: proc.poll() is not None, 20, "the student to exit")
        assert proc.returncode == 1
        log = proc.node.read_log()
        assert "configure failed" in log and "joints" in log, log


def test_deactivate_stops_publishing(peer, model):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    with node_process("student_node", "student_node", student_params(model)):
        policy_echoes(peer, peer.echo_count(), 5)
        request = ChangeState.Request()
        request.transition.id = Transition.TRANSITION_DEACTIVATE
        assert peer.call(ChangeState, "/student_node/change_state", request).success
        state = peer.call(GetState, "/student_node/get_state", GetState.Request())
        assert state.current_state.label == "inactive"
        time.sleep(0.2)
        start = peer.echo_count()
        time.sleep(0.5)
        assert peer.echo_count() == start, "an inactive student published"
        request.transition.id = Transition.TRANSITION_ACTIVATE
        assert peer.call(ChangeState, "/student_node/change_state", request).success
        policy_echoes(peer, peer.echo_count(), 5)


# ---- recurrent students: state carried from step to step, cleared on an episode reset --------
class RecurrentReference:
    """Numpy re-computation of the recurrent test policy from a reset at a given echo."""

    def __init__(self, weights) -> None:
        self.w = weights

    def commands_from(self, peer: RobotPeer, echoes) -> np.ndarray:
        """Commands the node must publish if its state and history were cleared just before
        echoes[0]: zero state, history padded with the first step, last action zero."""
        w, last, h, previous_step, out = self.w, np.zeros(3), np.zeros((1, 4), np.float32), \
            None, []
        for echo in echoes:
            step = Reference.step(peer, last)
            obs = np.concatenate([step if previous_step is None else previous_step, step])
            h = np.tanh(obs.astype(np.float32)[None] @ w["Wx"] + h @ w["Wh"] + w["bh"])
            raw = (h @ w["Wo"] + w["bo"])[0].astype(np.float64)
            out.append(np.clip(raw * 0.5 + OFFSET, LOWER, UPPER))
            previous_step, last = step, np.array(echo.position)
        return np.array(out)

    def reset_index(self, peer: RobotPeer, echoes, length: int = 8) -> int:
        """Index of the echo computed right after a reset (checked over `length` echoes)."""
        for i in range(len(echoes) - length):
            window = echoes[i:i + length]
            if any(is_fallback(e) for e in window):
                continue
            got = np.array([e.position for e in window])
            if np.allclose(got, self.commands_from(peer, window), atol=1e-5):
                return i
        raise AssertionError("no run of echoes matches the policy restarted from a zero state")


@pytest.fixture()
def recurrent_model(tmp_path):
    path = str(tmp_path / "student_gru.onnx")
    return path, make_recurrent_policy(path, SPEC, hidden_size=4, seed=5)


def _wait_reset_then_check(peer: RobotPeer, reference: RecurrentReference, start: int) -> None:
    """After a reset requested at echo `start`: one run of echoes restarts from zero state, and
    the state is then carried (the check spans 8 steps of a recurrence)."""
    echoes = policy_echoes(peer, start, 25)
    index = reference.reset_index(peer, echoes)
    assert index <= 10, f"reset seen only {index} echoes after it was requested"


def test_recurrent_state_carried_and_reset_by_service_episode_and_time(peer, recurrent_model):
    path, weights = recurrent_model
    reference = RecurrentReference(weights)
    with node_process("student_node", "student_node",
                      student_params(path, episode_topic="episode")) as proc:
        wait_for_log(proc.node, "active", 15)
        echoes = policy_echoes(peer, peer.echo_count(), 20)
        # carried: a stateless re-computation (zero state every step) does not explain them
        tail = [e for e in echoes[-6:] if not is_fallback(e)]
        stateless = [RecurrentReference(weights).commands_from(peer, [e])[0] for e in tail]
        assert not np.allclose([e.position for e in tail], stateless, atol=1e-5)

        # 1) the ~/reset service
        start = peer.echo_count()
        response = peer.call(Trigger, "/student_node/reset", Trigger.Request())
        assert response.success and "recurrent state" in response.message
        _wait_reset_then_check(peer, reference, start)

        # 2) a new episode id on episode_topic (labels as the simulator publishes them)
        episodes = peer.publisher(Float64MultiArray, "episode", RECORD)
        wait_until(lambda: episodes.get_subscription_count() >= 1, 10, "episode subscriber")
        episodes.publish(_episode_msg(7))
        time.sleep(0.3)  # the first id seen is only recorded
        assert "new episode" not in proc.node.read_log()
        start = peer.echo_count()
        episodes.publish(_episode_msg(8))
        wait_for_log(proc.node, "new episode 8 (was 7)", 5)
        _wait_reset_then_check(peer, reference, start)
        # a malformed episode array is reported, not fatal
        bad = Float64MultiArray(data=[9.0])
        episodes.publish(bad)
        wait_for_log(proc.node, "no 'episode_id' label", 5)

        # 3) time going backwards (a simulator reset that restarts time)
        start = peer.echo_count()
        peer.stamp_offset_s = -50.0
        wait_for_log(proc.node, "time went backwards", 5)
        _wait_reset_then_check(peer, reference, start)
        peer.stamp_offset_s = 0.0   # time jumping forward is not a reset
        policy_echoes(peer, peer.echo_count(), 5)
        assert proc.node.read_log().count("time went backwards") == 1
        peer.node.destroy_publisher(episodes)
        assert proc.poll() is None
        assert all(np.all(np.isfinite(c)) for _, c in peer.commands)


def _episode_msg(episode_id: int) -> Float64MultiArray:
    labels = "episode_id,step,stamp_s,reward,episode_return,terminated,truncated"
    msg = Float64MultiArray(data=[float(episode_id), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    msg.layout.dim = [MultiArrayDimension(label=labels, size=7, stride=7)]
    return msg
