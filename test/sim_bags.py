"""Demonstration bags for the trainer tests, written from the embedded simulator.

Each frame becomes the messages sim_node publishes (episode, privileged, imu, joint_states, in
that order, rclpy-serialized), then the policy's stamped echo on `policy_action`, as a policy
node answers in lockstep. Alongside, the expected samples are assembled in process the way
SpecEnv does (SensorFrame -> ObservationAssembler.on_sample), so a test compares the bag path
with an independent path through the same spec.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray, MultiArrayDimension

from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.spec import PolicySpec, load_policy_spec
from policy_distill_ros.recording.bag_writer import BagWriter, BagWriterConfig
from policy_distill_ros.sim import frame as topics
from policy_distill_ros.sim.ant import AntSim
from policy_distill_ros.sim.config import SimConfig

REPO = Path(__file__).resolve().parents[1]
STUDENT_SPEC = REPO / "config/specs/ant_student.yaml"
TEACHER_SPEC = REPO / "config/specs/ant_teacher.yaml"

TYPES = {topics.JOINT_STATES: "sensor_msgs/msg/JointState", topics.IMU: "sensor_msgs/msg/Imu",
         topics.ODOMETRY: "nav_msgs/msg/Odometry",
         topics.CONTACT_FORCES: "std_msgs/msg/Float64MultiArray",
         topics.DYNAMICS: "std_msgs/msg/Float64MultiArray",
         topics.EPISODE: "std_msgs/msg/Float64MultiArray",
         "policy_action": "sensor_msgs/msg/JointState"}


def specs() -> tuple[PolicySpec, PolicySpec]:
    return load_policy_spec(STUDENT_SPEC), load_policy_spec(TEACHER_SPEC)


def stamp(seconds: float) -> Time:
    sec = int(seconds // 1)
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def labelled(values, labels) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=",".join(labels), size=len(labels),
                                          stride=len(labels))]
    msg.data = [float(v) for v in values]
    return msg


def frame_messages(frame, rename_joint: str | None = None) -> list[tuple[str, object]]:
    """The messages sim_node publishes for one frame, in its publish order."""
    t = stamp(frame.stamp_s)
    out = [(topics.EPISODE, labelled(frame.episode_values(), topics.EPISODE_LABELS))]
    odom = Odometry()
    odom.header.stamp = t
    f = frame.topics[topics.ODOMETRY].fields
    p, q = odom.pose.pose.position, odom.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in f["pose.pose.position"])
    q.x, q.y, q.z, q.w = (float(v) for v in f["pose.pose.orientation"])
    lin, ang = odom.twist.twist.linear, odom.twist.twist.angular
    lin.x, lin.y, lin.z = (float(v) for v in f["twist.twist.linear"])
    ang.x, ang.y, ang.z = (float(v) for v in f["twist.twist.angular"])
    out.append((topics.ODOMETRY, odom))
    for topic in (topics.CONTACT_FORCES, topics.DYNAMICS):
        sample = frame.topics[topic]
        out.append((topic, labelled(sample.fields["data"], sample.names["data"])))
    imu = Imu()
    imu.header.stamp = t
    f = frame.topics[topics.IMU].fields
    o = imu.orientation
    o.x, o.y, o.z, o.w = (float(v) for v in f["orientation"])
    av, la = imu.angular_velocity, imu.linear_acceleration
    av.x, av.y, av.z = (float(v) for v in f["angular_velocity"])
    la.x, la.y, la.z = (float(v) for v in f["linear_acceleration"])
    out.append((topics.IMU, imu))
    js = JointState()
    js.header.stamp = t
    sample = frame.topics[topics.JOINT_STATES]
    names = list(sample.names["position"])
    if rename_joint is not None:
        names[names.index(rename_joint)] = rename_joint + "_renamed"
    js.name = names
    js.position, js.velocity, js.effort = (sample.fields[k].tolist()
                                           for k in ("position", "velocity", "effort"))
    out.append((topics.JOINT_STATES, js))
    return out


@dataclass
class Recording:
    path: Path
    student_obs: list = field(default_factory=list)
    teacher_obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)      # raw policy outputs
    commands: list = field(default_factory=list)     # executed (post-processed) commands
    episode_id: list = field(default_factory=list)
    episode_return: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)

    def arrays(self):
        return (np.asarray(self.student_obs, np.float32), np.asarray(self.teacher_obs, np.float32),
                np.asarray(self.actions, np.float32), np.asarray(self.episode_id, np.int64))


def record_sim_bag(path, episodes: int = 2, max_steps: int = 20, seed: int = 0,
                   policy: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                   late_echo: bool = False, reversed_echo_names: bool = False,
                   skip_topics: tuple[str, ...] = (), rename_joint: str | None = None,
                   fallback_every: int = 0, interleave_seed: int | None = None,
                   reset_time: bool = False, fallback_frame: str = "fallback") -> Recording:
    """Drive the sim `episodes` x up to `max_steps` with `policy(student_obs, teacher_obs) ->
    raw action` (default: a fixed random linear map of the teacher obs, tanh-squashed) and
    write the bag. `late_echo`: each echo is written after the next frame's messages (a slow
    policy). `fallback_every`: every n-th echo is a fallback (no sample expected).
    `interleave_seed`: log the topics in a random interleaving that keeps each topic's own
    order, as a recorder draining topic by topic does. `reset_time`: sim time restarts at 0
    every episode."""
    student_spec, teacher_spec = specs()
    action = student_spec.action
    rng = np.random.default_rng(seed)
    weights = rng.normal(scale=0.3, size=(action.size, teacher_spec.observation.size))
    if policy is None:
        def policy(_s, t):
            return np.tanh(weights @ t)
    sim = AntSim(SimConfig(max_episode_steps=max_steps, reset_time_on_episode=reset_time),
                 seed=seed)
    rec = Recording(Path(path))
    writer = BagWriter(BagWriterConfig(path=str(path))).open()
    channels: dict[str, int] = {}
    log: list[tuple[str, bytes]] = []

    def write(topic: str, msg) -> None:
        if topic not in skip_topics:
            log.append((topic, serialize_message(msg)))

    sim_index = [sim.joint_names.index(j) for j in action.joints]
    pending_echo = None
    decision = 0
    try:
        for _ in range(episodes):
            s_asm = ObservationAssembler(student_spec.observation, action.size)
            t_asm = ObservationAssembler(teacher_spec.observation, action.size)
            frame = sim.reset()
            while True:
                for topic, msg in frame_messages(frame, rename_joint):
                    write(topic, msg)
                if pending_echo is not None:
                    write("policy_action", pending_echo)
                    pending_echo = None
                frame.feed(s_asm)
                frame.feed(t_asm)
                s_obs = s_asm.build(frame.stamp_s)
                t_obs = t_asm.build(frame.stamp_s)
                assert s_obs.ok and t_obs.ok, (s_obs.problem, t_obs.problem)
                raw = np.asarray(policy(s_obs.vector, t_obs.vector), dtype=np.float64)
                command = action.postprocess(raw)
                decision += 1
                fallback = bool(fallback_every) and decision % fallback_every == 0
                if not fallback:
                    rec.student_obs.append(s_obs.vector)
                    rec.teacher_obs.append(t_obs.vector)
                    rec.actions.append((command - action._arrays["offset"])
                                       / action._arrays["scale"])
                    rec.commands.append(command)
                    rec.episode_id.append(frame.episode_id)
                rec.frames.append(frame)
                echo = JointState()
                echo.header.stamp = stamp(frame.stamp_s)
                echo.header.frame_id = fallback_frame if fallback else ""
                names = list(action.joints)
                values = command.tolist()
                if reversed_echo_names:
                    names, values = names[::-1], values[::-1]
                echo.name, echo.position = names, values
                if late_echo:
                    pending_echo = echo
                else:
                    write("policy_action", echo)
                s_asm.set_last_action(command)
                t_asm.set_last_action(command)
                rec.episode_return[frame.episode_id] = frame.episode_return
                if frame.done:
                    break
                sim_command = np.zeros(sim.num_joints)
                sim_command[sim_index] = command
                frame, *_ = sim.step(sim_command)
        if pending_echo is not None:
            write("policy_action", pending_echo)
    finally:
        sim.close()
        if interleave_seed is not None:
            log = _interleave(log, np.random.default_rng(interleave_seed))
        for i, (topic, data) in enumerate(log):
            if topic not in channels:
                channels[topic] = writer.add_topic("/" + topic, TYPES[topic])
            assert writer.write(channels[topic], 1_000_000_000 + 1000 * i, data)
            if i % 100 == 99:
                writer.flush()   # several chunks, as a live recording has
        writer.close()
    return rec


def _interleave(log, rng):
    """A random merge of the per-topic sequences (each topic keeps its order), drawn so that a
    message is delayed by at most a few positions, as a recorder's per-topic drain does."""
    queues: dict[str, list] = {}
    for topic, data in log:
        queues.setdefault(topic, []).append(data)
    heads = {t: 0 for t in queues}
    # each topic's messages keep their original positions plus a random lag (monotone per topic)
    keyed = []
    for topic, items in queues.items():
        lag = 0.0
        positions = [i for i, (t, _) in enumerate(log) if t == topic]
        for pos, data in zip(positions, items, strict=True):
            lag = max(0.0, lag + rng.uniform(-3.0, 3.0))
            keyed.append((pos + lag, topic, heads[topic], data))
            heads[topic] += 1
    keyed.sort(key=lambda k: (k[0], k[2]))
    return [(topic, data) for _, topic, _, data in keyed]
