"""teacher_node: ROS-free mode logic, then the node end to end (real process, DDS, torch).

The test plays a lockstep simulator: it publishes one frame (privileged topics included, joint
order shuffled, an extra joint and contact label), waits for the node's answer, and publishes
the next. It assembles every observation itself with numpy from what it sent, runs the same
teacher directory through the training library (load_teacher + normalizer + act) and compares
with what the node published, for drive, label and mix modes.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from nav_msgs.msg import Odometry
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from node_process import node_process
from policy_distill_ros.core.spec import SpecError, load_policy_spec
from policy_distill_ros.core.teacher_modes import OTHER, TEACHER, ActionMixer, LabelGate
from policy_distill_ros.training.teacher_io import load_teacher
from policy_distill_ros.training.teacher_runner import TeacherRunner, spec_of_teacher
from policy_models import make_linear_policy
from ros_harness import BEST_EFFORT, RECORD, wait_for_log, wait_until
from teacher_fixtures import make_random_teacher

JOINTS = ["hip", "knee", "ankle"]
PUBLISHED_ORDER = ["ankle", "wheel", "hip", "knee"]
OFFSET = np.array([0.1, -0.2, 0.3])
SPEC = {
    "observation": {"history_length": 1, "terms": [
        {"name": "joint_pos", "topic": "joint_states", "field": "position", "joints": JOINTS,
         "offset": OFFSET.tolist(), "scale": 2.0},
        {"name": "joint_vel", "topic": "joint_states", "field": "velocity", "joints": JOINTS,
         "scale": 0.5, "clip": [-1.0, 1.0]},
        {"name": "ang_vel", "topic": "imu", "field": "angular_velocity", "size": 3},
        {"name": "lin_vel", "topic": "privileged/odometry", "field": "twist.twist.linear",
         "size": 3},
        {"name": "contact", "topic": "privileged/contact_forces", "field": "data",
         "labels": ["foot_b", "foot_a"], "scale": 0.1},
        {"name": "last_action", "kind": "last_action"},
    ]},
    "action": {"joints": JOINTS, "scale": 0.5, "offset": OFFSET.tolist(),
               "lower": [-1.0] * 3, "upper": [1.0] * 3},
    "rate_hz": 20.0,
}


# ------------------------------------------------------------------ ROS-free: the mode logic

def test_mixer_beta_one_and_zero():
    always = ActionMixer(1.0, seed=3)
    for key in range(20):
        got = always.on_observation(key, np.full(2, key))
        assert got.source == TEACHER and got.values.tolist() == [key, key]
    never = ActionMixer(0.0)
    assert never.offer(5, [1.0, 2.0]) is None            # the other's action came first
    got = never.on_observation(5, np.zeros(2))
    assert got.source == OTHER and got.values.tolist() == [1.0, 2.0]
    assert never.on_observation(6, np.zeros(2)) is None   # not yet: pending
    got = never.offer(6, [3.0, 4.0], fallback=True)
    assert (got.key, got.source, got.fallback) == (6, OTHER, True)
    assert never.on_observation(7, np.ones(2)) is None    # unanswered ...
    got = never.on_observation(7, np.ones(2))             # ... and re-sent: teacher acts
    assert got.source == TEACHER and never.other_late == 1
    assert never.on_observation(8, np.ones(2)) is None
    assert never.on_observation(9, np.ones(2)) is None    # a newer frame: 8 is dropped
    assert never.other_missed == 1 and never.pending_key == 9
    with pytest.raises(ValueError, match="beta"):
        ActionMixer(1.5)


def test_mixer_beta_is_the_teacher_fraction():
    mixer = ActionMixer(0.3, seed=0)
    sources = [mixer.on_observation(k, np.zeros(1)) for k in range(4000)]
    fraction = sum(s is not None for s in sources) / len(sources)
    assert abs(fraction - 0.3) < 0.03


def test_label_gate_holds_until_the_executed_action():
    gate = LabelGate()
    assert gate.offer("a", False) == [("a", False)]       # not waiting: straight through
    gate.labelled(10)
    assert gate.offer("imu", False) is None and gate.offer("js", True) is None
    assert not gate.executed(9)                           # an older echo does not release
    assert gate.executed(10)
    assert gate.release() == [("imu", False), ("js", True)]
    gate.labelled(11)
    assert gate.offer("js", True) is None
    released = gate.offer("js2", True)                    # a second frame, still no echo
    assert released == [("js", True), ("js2", True)] and gate.gave_up == 1
    gate.labelled(12)
    gate.cancel()
    assert not gate.waiting


def test_teacher_spec_is_checked_against_the_stored_one(tmp_path):
    make_random_teacher(tmp_path / "t", SPEC)
    runner = TeacherRunner(tmp_path / "t")
    assert runner.spec.to_dict() == load_policy_spec(SPEC).to_dict()
    other = dict(SPEC, rate_hz=50.0)
    with pytest.raises(SpecError, match=r"differs .* at rate_hz \(20.0 vs 50.0\)"):
        TeacherRunner(tmp_path / "t", other)
    make_random_teacher(tmp_path / "bare", SPEC, store_spec=False)
    _, _, info = load_teacher(tmp_path / "bare")
    with pytest.raises(SpecError, match="no info.policy_spec"):
        spec_of_teacher(info)
    bigger = load_policy_spec(SPEC).to_dict()
    bigger["observation"]["terms"].insert(2, {"name": "acc", "topic": "imu",
                                              "field": "linear_acceleration", "size": 3})
    with pytest.raises(SpecError, match="observation has 20 numbers, the teacher network "
                                        "takes 17"):
        spec_of_teacher(info, bigger)


def test_student_spec_naming_a_privileged_topic_is_refused():
    spec = load_policy_spec(SPEC)
    with pytest.raises(SpecError, match="lin_vel.*privileged/odometry"):
        spec.observation.require_no_privileged()


# ------------------------------------------------------------------ end to end over DDS

class LockstepPeer:
    """Publishes frames like sim_node (privileged first, joint_states last) and records the
    node's outputs; plays the driver or the student where a mode needs one."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("lockstep_peer")
        pub = self.node.create_publisher
        self.js = pub(JointState, "joint_states", BEST_EFFORT)
        self.imu = pub(Imu, "imu", BEST_EFFORT)
        self.odom = pub(Odometry, "privileged/odometry", BEST_EFFORT)
        self.contact = pub(Float64MultiArray, "privileged/contact_forces", BEST_EFFORT)
        self.driver_echo = pub(JointState, "policy_action", RECORD)
        self.student_echo = pub(JointState, "student/policy_action", RECORD)
        self.lock = threading.Lock()
        self.out = {"policy_command": [], "policy_action": [], "teacher_label": []}
        sub = self.node.create_subscription
        sub(Float64MultiArray, "policy_command", lambda m: self._keep("policy_command", m),
            RECORD)
        sub(JointState, "policy_action", lambda m: self._keep("policy_action", m), RECORD)
        sub(JointState, "teacher_label", lambda m: self._keep("teacher_label", m), RECORD)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.rng = np.random.default_rng(7)

    def _keep(self, topic, msg) -> None:
        with self.lock:
            self.out[topic].append(msg)

    def outputs(self, topic):
        with self.lock:
            return list(self.out[topic])

    def clear(self) -> None:
        with self.lock:
            for v in self.out.values():
                v.clear()

    def new_frame(self, k: int) -> dict:
        r = self.rng
        return {"stamp": (100 + k, 1000 * k + 7), "pos": r.uniform(-1, 1, 4),
                "vel": r.uniform(-3, 3, 4), "ang": r.uniform(-1, 1, 3),
                "lin": r.uniform(-2, 2, 3), "contact": r.uniform(0, 50, 3)}

    def publish_frame(self, f: dict, trigger_first_s: float | None = None) -> None:
        """trigger_first_s: publish joint_states first and the rest that much later (DDS
        does not order messages across topics: a node may take them in this order)."""
        sec, nanosec = f["stamp"]
        js = JointState(name=PUBLISHED_ORDER, position=f["pos"].tolist(),
                        velocity=f["vel"].tolist())
        js.header.stamp.sec, js.header.stamp.nanosec = sec, nanosec
        if trigger_first_s is not None:
            self.js.publish(js)
            time.sleep(trigger_first_s)
        odom = Odometry()
        odom.header.stamp.sec, odom.header.stamp.nanosec = sec, nanosec
        v = odom.twist.twist.linear
        v.x, v.y, v.z = (float(x) for x in f["lin"])
        self.odom.publish(odom)
        contact = Float64MultiArray(data=[float(x) for x in f["contact"]])
        contact.layout.dim = [MultiArrayDimension(label="foot_a,foot_b,foot_c", size=3,
                                                  stride=3)]
        self.contact.publish(contact)
        imu = Imu()
        imu.header.stamp.sec, imu.header.stamp.nanosec = sec, nanosec
        imu.orientation.w = 1.0
        a = imu.angular_velocity
        a.x, a.y, a.z = (float(x) for x in f["ang"])
        self.imu.publish(imu)
        if trigger_first_s is None:
            self.js.publish(js)

    def echo(self, publisher, f: dict, values, joints=JOINTS) -> None:
        msg = JointState(name=list(joints), position=[float(v) for v in values])
        msg.header.stamp.sec, msg.header.stamp.nanosec = f["stamp"]
        publisher.publish(msg)

    def answer(self, topic: str, f: dict, timeout_s: float = 15.0) -> JointState:
        """The node's message on `topic` for frame f (re-sends the frame if best effort lost
        it, as sim_node's lockstep timeout does)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            sent = time.monotonic()
            while time.monotonic() - sent < 1.0:
                for msg in self.outputs(topic):
                    if (msg.header.stamp.sec, msg.header.stamp.nanosec) == f["stamp"]:
                        return msg
                time.sleep(0.002)
            self.publish_frame(f)
        raise AssertionError(f"no {topic} for stamp {f['stamp']}")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=2.0)
        self.node.destroy_node()


class Reference:
    """Observation assembled with numpy from the frame; the teacher through training code."""

    def __init__(self, teacher_dir) -> None:
        self.teacher, self.normalizer, _ = load_teacher(teacher_dir)

    @staticmethod
    def obs(f: dict, last: np.ndarray) -> np.ndarray:
        by_name = dict(zip(PUBLISHED_ORDER, zip(f["pos"], f["vel"], strict=True), strict=True))
        pos = np.array([by_name[j][0] for j in JOINTS])
        vel = np.array([by_name[j][1] for j in JOINTS])
        contact = dict(zip(["foot_a", "foot_b", "foot_c"], f["contact"], strict=True))
        return np.concatenate([(pos - OFFSET) * 2.0, np.clip(vel * 0.5, -1, 1), f["ang"],
                               f["lin"], [contact["foot_b"] * 0.1, contact["foot_a"] * 0.1],
                               last])

    def command(self, f: dict, last: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(self.obs(f, last), dtype=torch.float32)[None]
        with torch.no_grad():
            raw = self.teacher.act(self.normalizer(x))[0].numpy().astype(np.float64)
        return np.clip(raw * 0.5 + OFFSET, -1.0, 1.0)


@pytest.fixture(scope="module")
def peer():
    rclpy.init()
    p = LockstepPeer()
    yield p
    p.close()
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "t"
    make_random_teacher(path, SPEC, seed=3)
    return path


def start_teacher(teacher_dir, **params):
    return node_process("teacher_node", "teacher_node",
                        {"teacher_path": str(teacher_dir), "max_input_age_s": 2.0, **params})


def stamp_of(msg) -> tuple:
    return (msg.header.stamp.sec, msg.header.stamp.nanosec)


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_drive_commands_equal_the_torch_teacher(peer, teacher_dir):
    reference = Reference(teacher_dir)
    peer.clear()
    with start_teacher(teacher_dir) as proc:
        wait_for_log(proc.node, "mode drive", 60)
        last = np.zeros(3)
        checked = 0
        for k in range(25):
            f = peer.new_frame(k)
            peer.publish_frame(f)
            echo = peer.answer("policy_action", f)
            assert echo.name == JOINTS and echo.header.frame_id == ""
            expected = reference.command(f, last)
            np.testing.assert_allclose(np.array(echo.position), expected, atol=1e-5,
                                       err_msg=f"frame {k}")
            last = np.array(echo.position)
            checked += 1
        wait_until(lambda: len(peer.outputs("policy_command")) >= checked, 5, "commands")
        commands = [np.array(m.data) for m in peer.outputs("policy_command")]
        echoes = [np.array(m.position) for m in peer.outputs("policy_action")]
        assert np.array_equal(commands[-1], echoes[-1])
        assert peer.outputs("teacher_label") == []
        log = proc.node.read_log()
    assert "fault 'policy'" not in log, log


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_drive_waits_for_the_rest_of_a_frame_that_arrives_after_its_trigger(peer, teacher_dir):
    """The trigger taken before the IMU, odometry and contacts of its own frame: the teacher
    acts on the complete frame, not on this frame's joints with the previous frame's IMU."""
    reference = Reference(teacher_dir)
    peer.clear()
    with start_teacher(teacher_dir) as proc:
        wait_for_log(proc.node, "mode drive", 60)
        last = np.zeros(3)
        first = peer.new_frame(0)
        peer.publish_frame(first)
        last = np.array(peer.answer("policy_action", first).position)
        for k in range(1, 6):
            f = peer.new_frame(k)
            peer.publish_frame(f, trigger_first_s=0.2)
            echo = peer.answer("policy_action", f)
            np.testing.assert_allclose(np.array(echo.position), reference.command(f, last),
                                       atol=1e-5, err_msg=f"frame {k}")
            last = np.array(echo.position)
        assert len([m for m in peer.outputs("policy_action")
                    if (m.header.stamp.sec, m.header.stamp.nanosec) == f["stamp"]]) == 1


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_an_incomplete_frame_is_acted_on_at_the_next_trigger_with_a_warning(peer, teacher_dir):
    """Only joint_states arrives for a frame (the IMU and privileged topics went silent): the
    teacher waits, acts at the next trigger on the newest inputs and says which topics were
    missing, instead of stalling."""
    peer.clear()
    with start_teacher(teacher_dir) as proc:
        wait_for_log(proc.node, "mode drive", 60)
        first = peer.new_frame(0)
        peer.publish_frame(first)
        peer.answer("policy_action", first)
        f = peer.new_frame(1)
        js = JointState(name=PUBLISHED_ORDER, position=f["pos"].tolist(),
                        velocity=f["vel"].tolist())
        js.header.stamp.sec, js.header.stamp.nanosec = f["stamp"]
        peer.js.publish(js)
        time.sleep(0.3)
        assert not [m for m in peer.outputs("policy_action") if stamp_of(m) == f["stamp"]]
        for _ in range(20):   # best effort: repeat the trigger until the action comes
            peer.js.publish(js)
            time.sleep(0.3)
            if [m for m in peer.outputs("policy_action") if stamp_of(m) == f["stamp"]]:
                break
        else:
            raise AssertionError("no action for a frame whose trigger came twice")
        wait_for_log(proc.node, "frame incomplete at the next trigger", 10)
        log = proc.node.read_log()
    assert "privileged/contact_forces" in log and "Traceback" not in log


@pytest.mark.dds
@pytest.mark.timeout(180)
def test_label_mode_labels_from_the_executed_action_and_never_commands(peer, teacher_dir):
    reference = Reference(teacher_dir)
    peer.clear()
    rng = np.random.default_rng(11)
    with start_teacher(teacher_dir, mode="label") as proc:
        wait_for_log(proc.node, "mode label", 60)
        assert peer.node.count_publishers("policy_command") == 0
        last = np.zeros(3)
        f = peer.new_frame(0)
        peer.publish_frame(f)
        for k in range(20):
            label = peer.answer("teacher_label", f)
            assert label.name == JOINTS
            np.testing.assert_allclose(np.array(label.position), reference.command(f, last),
                                       atol=1e-5, err_msg=f"label {k}")
            executed = rng.uniform(-1, 1, 3)          # the driver does its own thing
            nxt = peer.new_frame(k + 1)
            if k % 2:   # the next frame overtakes the driver's echo: the node must hold it
                peer.publish_frame(nxt)
                time.sleep(0.05)
                peer.echo(peer.driver_echo, f, executed)
            else:
                peer.echo(peer.driver_echo, f, executed)
                peer.publish_frame(nxt)
            last, f = executed, nxt
        assert peer.outputs("policy_command") == []
        assert peer.node.count_publishers("policy_command") == 0


@pytest.mark.dds
@pytest.mark.timeout(180)
@pytest.mark.parametrize("beta", [1.0, 0.0])
def test_mix_mode_executes_teacher_or_forwards_the_student(peer, teacher_dir, beta):
    reference = Reference(teacher_dir)
    peer.clear()
    rng = np.random.default_rng(5)
    with start_teacher(teacher_dir, mode="mix", beta=beta) as proc:
        wait_for_log(proc.node, "mode mix", 60)
        # An echo published before discovery matched the node's subscription is lost (volatile
        # QoS): the node would then execute its own action for that frame, as it should.
        wait_until(lambda: peer.student_echo.get_subscription_count() >= 1, 30,
                   "the teacher's subscription to student/policy_action")
        last = np.zeros(3)
        for k in range(15):
            f = peer.new_frame(k)
            student = rng.uniform(-1, 1, 3)
            if k % 2:   # the student may answer before or after the teacher sees the frame
                peer.echo(peer.student_echo, f, student)
                time.sleep(0.02)
            peer.publish_frame(f)
            if not k % 2:
                peer.echo(peer.student_echo, f, student)
            label = peer.answer("teacher_label", f)
            executed = peer.answer("policy_action", f)
            teacher_action = reference.command(f, last)
            np.testing.assert_allclose(np.array(label.position), teacher_action, atol=1e-5)
            expected = teacher_action if beta == 1.0 else student
            np.testing.assert_allclose(np.array(executed.position), expected, atol=1e-5,
                                       err_msg=f"frame {k}, beta {beta}")
            last = np.array(executed.position)
        proc.node.stop()
        log = proc.node.read_log()
    side = "teacher executed 15, other 0" if beta == 1.0 else "teacher executed 0, other 15"
    assert side in log, log


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_student_node_refuses_a_privileged_spec(tmp_path):
    model = str(tmp_path / "privileged_student.onnx")
    make_linear_policy(model, SPEC, seed=1)
    with node_process("student_node", "student_node", {"model_path": model}) as proc:
        wait_for_log(proc.node, "configure failed", 30)
        wait_until(lambda: proc.poll() is not None, 15, "student_node exit")
        log = proc.node.read_log()
    assert "lin_vel" in log and "privileged/odometry" in log, log


@pytest.mark.dds
@pytest.mark.timeout(120)
def test_teacher_node_bad_parameters_are_named(tmp_path, teacher_dir):
    with start_teacher(tmp_path / "missing") as proc:
        wait_until(lambda: proc.poll() is not None, 30, "teacher_node exit")
        assert "no such directory" in proc.node.read_log()
    with start_teacher(teacher_dir, trigger_topic="imu_typo") as proc:
        wait_until(lambda: proc.poll() is not None, 60, "teacher_node exit")
        assert "trigger_topic 'imu_typo' is not an input topic" in proc.node.read_log()
        assert proc.returncode != 0
