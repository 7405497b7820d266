"""teacher_node: the torch teacher on ROS topics, in simulation (privileged topics allowed).

Loads a teacher directory (training/teacher_io format: safetensors + teacher.json, no pickle;
its policy spec is stored with it, `spec_path` is checked against it), assembles the teacher
observation with core's ObservationAssembler from the spec's topics, and runs the deterministic
action on every message of `trigger_topic` (default `joint_states`, the last topic the simulator
publishes per frame), so it works in the simulator's lockstep mode. The stamp rule holds for
everything it publishes: stamp = the newest observation's own stamp, copied exactly.

Modes (parameter `mode`):
  drive  `policy_command` (Float64MultiArray) + stamped echo `policy_action` (JointState), exactly
         like the student node; bad input -> the fallback command, echo flagged `fallback`.
  label  publishes its action for each observation on `teacher_label` (JointState, same stamp
         rule) and never commands. Its `last_action` term is the action the *driver* executed,
         read from the driver's echo on `executed_action_topic` (`policy_action`); inputs are
         held after each label until that echo arrives (core.teacher_modes.LabelGate). The
         simulator then follows the driver, not the teacher, so sensors are queued (depth 50)
         instead of newest-only: a momentarily slower teacher still labels every frame.
  mix    DAgger's mixture, the teacher in the middle: the other policy (the student node, its
         outputs remapped to `student/policy_command` + `student/policy_action`) proposes, the
         teacher publishes its label, then executes its own action with probability `beta`, else
         forwards the other policy's action for the same stamp (read from its stamped echo
         `other_action_topic`) onto `policy_command` + `policy_action`. So the simulator and the
         recorder see one executed action per observation, and the teacher's last_action term is
         always the executed one (core.teacher_modes.ActionMixer). Note the student node's own
         last_action term is its own proposal, not the executed action, on teacher steps.

Until every input topic has been heard once the node stays silent (a lockstep simulator
re-sends its frame), so no startup fallback is recorded as a demonstration.
Episode resets (new `episode_id` on `episode_topic`, or input stamps going backwards) clear the
observation history and last action. Inference and all subscriptions share one thread (the
policy_io.PolicyIo helper), so there are no locks; torch runs on `num_threads` threads (1).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray

from policy_distill_ros.core.contract import POLICY_ACTION, is_fallback_frame, ns_to_s, stamp_ns
from policy_distill_ros.core.fallback import FALLBACK_MODES, FallbackCommand, input_fault
from policy_distill_ros.core.faults import FaultTracker
from policy_distill_ros.core.fields import layout_labels
from policy_distill_ros.core.log_throttle import LogThrottle
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.teacher_modes import ActionMixer, LabelGate
from policy_distill_ros.nodes.inputs import InputStamps
from policy_distill_ros.nodes.policy_io import PolicyIo
from policy_distill_ros.nodes.ros_common import (
    SENSOR_QOS,
    declare,
    log_fault_lines,
    require_choice,
    s_to_stamp,
    spin_node,
    warn_unknown_parameters,
)
from policy_distill_ros.nodes.topic_types import message_type_for, parse_topic_types

MODES = ("drive", "label", "mix")
# Echoes of other policies and episode events: reliable, with depth (in label mode the
# simulator follows the driver, so several frames may queue up while the teacher computes).
ECHO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                      reliability=ReliabilityPolicy.RELIABLE)
# label mode: every frame gets a label, so sensors queue instead of newest-only.
LABEL_SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                              reliability=ReliabilityPolicy.BEST_EFFORT)


@dataclass
class TeacherNodeConfig:
    """The teacher node's parameters, validated together before anything is created."""

    teacher_path: str
    spec_path: str = ""
    mode: str = "drive"
    beta: float = 0.0
    seed: int = 0
    trigger_topic: str = "joint_states"
    wait_for_frame: bool = True
    max_input_age_s: float = 0.5
    fallback_mode: str = "hold_default"
    episode_topic: str = "episode"
    executed_action_topic: str = POLICY_ACTION
    other_action_topic: str = "student/policy_action"
    label_topic: str = "teacher_label"
    topic_types: str = ""
    num_threads: int = 1
    type_table: dict = field(init=False)

    def __post_init__(self) -> None:
        if not self.teacher_path:
            raise ValueError("parameter 'teacher_path' is empty: give the teacher directory "
                             "(model.safetensors + teacher.json)")
        if not os.path.isdir(self.teacher_path):
            raise ValueError(f"parameter 'teacher_path': no such directory {self.teacher_path!r}")
        if self.spec_path and not os.path.isfile(self.spec_path):
            raise ValueError(f"parameter 'spec_path': no such file {self.spec_path!r}")
        require_choice("mode", self.mode, MODES)
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"parameter 'beta' is {self.beta}; expected a probability in [0, 1]")
        require_choice("fallback_mode", self.fallback_mode, FALLBACK_MODES)
        if not self.max_input_age_s > 0 or self.num_threads < 1:
            raise ValueError("parameters max_input_age_s must be > 0 and num_threads >= 1")
        for name in ("trigger_topic", "label_topic", "executed_action_topic",
                     "other_action_topic"):
            if not getattr(self, name):
                raise ValueError(f"parameter '{name}' is empty")
        self.type_table = parse_topic_types([e for e in self.topic_types.split(",") if e.strip()])


class TeacherNode(Node):
    def __init__(self) -> None:
        super().__init__("teacher_node")
        names = {
            "teacher_path": declare(self, "teacher_path", "", "teacher directory (model."
                                    "safetensors + teacher.json)", read_only=True),
            "spec_path": declare(self, "spec_path", "", "policy spec YAML the teacher must match; "
                                 "'' = the spec stored with the teacher", read_only=True),
            "mode": declare(self, "mode", "drive", "drive: command the robot; label: publish "
                            "teacher_label only; mix: execute the teacher's action with "
                            "probability beta, else forward the other policy's", read_only=True,
                            choices=MODES),
            "beta": declare(self, "beta", 0.0, "mix: probability of executing the teacher's "
                            "action", read_only=True, min_value=0.0, max_value=1.0),
            "seed": declare(self, "seed", 0, "mix: seed of the per-observation coin",
                            read_only=True, min_value=0),
            "trigger_topic": declare(self, "trigger_topic", "joint_states", "one action per "
                                     "message on this input topic", read_only=True),
            "wait_for_frame": declare(self, "wait_for_frame", True, "act on a trigger only once "
                                      "every input topic has delivered a message since the "
                                      "last action (a simulator's frame is complete; DDS does "
                                      "not order messages across topics); a second trigger "
                                      "acts at once", read_only=True),
            "max_input_age_s": declare(self, "max_input_age_s", 0.5, "an input older than this "
                                       "-> fallback", read_only=True, min_value=1e-4,
                                       max_value=3600.0),
            "fallback_mode": declare(self, "fallback_mode", "hold_default", "command when the "
                                     "teacher cannot act", read_only=True, choices=FALLBACK_MODES),
            "episode_topic": declare(self, "episode_topic", "episode", "Float64MultiArray with "
                                     "an 'episode_id' label: a new id resets history; '' = off",
                                     read_only=True),
            "executed_action_topic": declare(self, "executed_action_topic", POLICY_ACTION,
                                             "label: the driver's stamped echo (executed "
                                             "action)", read_only=True),
            "other_action_topic": declare(self, "other_action_topic", "student/policy_action",
                                          "mix: the other policy's stamped echo",
                                          read_only=True),
            "label_topic": declare(self, "label_topic", "teacher_label", "label and mix: the "
                                   "teacher's action (JointState, stamp rule)", read_only=True),
            "topic_types": declare(self, "topic_types", "", "extra comma-separated "
                                   "'topic=pkg/msg/Type' entries", read_only=True),
            "num_threads": declare(self, "num_threads", 1, "torch intra-op threads",
                                   read_only=True, min_value=1, max_value=64),
        }
        warn_unknown_parameters(self)
        self.ticks = self.labels = self.fallbacks = self.incomplete_frames = 0
        self._io: PolicyIo | None = None
        try:
            self._configure(TeacherNodeConfig(**names))
        except Exception as exc:  # noqa: BLE001 - every cause is reported the same way
            self.get_logger().error(f"configure failed: {exc}")
            self._close_io()
            raise SystemExit(1) from None

    def _configure(self, cfg: TeacherNodeConfig) -> None:
        from policy_distill_ros.training.teacher_runner import TeacherRunner  # torch: slow import
        self._cfg = cfg
        self._teacher = TeacherRunner(cfg.teacher_path, cfg.spec_path or None, cfg.num_threads)
        spec = self._spec = self._teacher.spec
        action = spec.action
        topics = list(spec.observation.topics)
        if cfg.trigger_topic not in topics:
            raise ValueError(f"trigger_topic {cfg.trigger_topic!r} is not an input topic of the "
                             f"teacher ({', '.join(topics)})")
        for topic in topics:  # unknown topic types fail here, before anything is created
            message_type_for(topic, cfg.type_table)
        if any(t.kind == "command" for t in spec.observation.terms):
            raise ValueError("the teacher spec has a 'command' term; the teacher node does not "
                             "take velocity commands yet")
        self._asm = ObservationAssembler(spec.observation, action.size)
        self._fallback = FallbackCommand(cfg.fallback_mode, action.default_pose, action.lower,
                                         action.upper)
        self._faults = FaultTracker()
        self._stamps = InputStamps()
        self._acted = False    # a first complete observation was seen
        self._topics = frozenset(topics)
        self._fresh: set[str] = set()   # input topics heard since the last action
        self._pending_s: float | None = None   # a trigger waiting for the rest of its frame
        self._incomplete_log = LogThrottle(5.0)
        self._mixer = ActionMixer(cfg.beta, cfg.seed) if cfg.mode == "mix" else None
        self._gate = LabelGate() if cfg.mode == "label" else None
        sim_time = bool(self.get_parameter("use_sim_time").value)
        self._now_s = self._ros_now_s if sim_time else time.time
        events = []
        if cfg.episode_topic:
            events.append((cfg.episode_topic, Float64MultiArray, ECHO_QOS,
                           lambda msg: self._feed(("episode", msg), False)))
        if cfg.mode == "label":
            events.append((cfg.executed_action_topic, JointState, ECHO_QOS, self._on_executed))
        if cfg.mode == "mix":
            events.append((cfg.other_action_topic, JointState, ECHO_QOS, self._on_other))
        self._label_pub = None
        if cfg.mode in ("label", "mix"):
            self._label_pub = self.create_publisher(JointState, cfg.label_topic, ECHO_QOS)
            self._label = JointState(name=list(action.joints))
        # Served in this order when several are ready at once: the trigger last, so a frame's
        # other messages (published before it by the simulator) are in when the tick runs.
        ordered = [t for t in topics if t != cfg.trigger_topic] + [cfg.trigger_topic]
        self._io = PolicyIo(self, ordered, self._on_input, action.joints, cfg.type_table,
                            events=events,
                            sensor_qos=LABEL_SENSOR_QOS if cfg.mode == "label" else SENSOR_QOS)
        self._out = self._io.out
        if cfg.mode == "label":  # label mode never commands: no publisher on policy_command
            self._out.destroy()
            self._out = None
        self.get_logger().info(
            f"teacher {self._teacher.sha256[:12]} from {cfg.teacher_path}: obs "
            f"{spec.observation.size} ({', '.join(topics)}), actions {action.size}, mode "
            f"{cfg.mode}{f' beta {cfg.beta:g}' if cfg.mode == 'mix' else ''}, trigger "
            f"{cfg.trigger_topic}")

    # ---- inputs (all on the PolicyIo thread) -----------------------------------------------
    def _ros_now_s(self) -> float:
        return ns_to_s(self.get_clock().now().nanoseconds)

    def _on_input(self, topic: str, msg, received_ns=None) -> None:
        self._feed(("input", topic, msg, self._now_s()), topic == self._cfg.trigger_topic)

    def _feed(self, item, is_trigger: bool) -> None:
        """Process an input now, or hold it while label mode waits for an executed action."""
        gate = self._gate
        items = [(item, is_trigger)] if gate is None else gate.offer(item, is_trigger)
        for i, (entry, trigger) in enumerate(items or ()):
            if gate is not None and gate.waiting:   # a label was just computed: hold the rest
                for rest in items[i:]:
                    self._feed(*rest)
                return
            try:
                if entry[0] == "episode":
                    self._on_episode(entry[1])
                else:
                    self._ingest(*entry[1:])
                    if trigger or self._pending_s is not None:
                        self._on_frame_input(entry[3], trigger)
            except Exception as exc:  # noqa: BLE001 - the IO thread must outlive any bug
                self._report("internal", ("internal", f"processing {entry[0]} failed: "
                                                      f"{exc!r}"))

    def _on_frame_input(self, receive_s: float, trigger: bool) -> None:
        """Tick once the trigger's frame is complete. The simulator publishes a frame's topics
        before its trigger, but each topic is its own DDS reader: the trigger can be taken while
        the IMU of the same frame is still in flight, and acting then would pair this frame's
        joints with the previous frame's IMU."""
        superseded = trigger and self._pending_s is not None
        if trigger:
            self._pending_s = receive_s
        if (self._cfg.wait_for_frame and not superseded
                and not self._fresh.issuperset(self._topics)):
            return
        if superseded:
            self.incomplete_frames += 1
            if self._incomplete_log.due():
                missing = ", ".join(sorted(self._topics - self._fresh))
                self.get_logger().warning(
                    f"frame incomplete at the next trigger (no new message on {missing}); "
                    f"acting on the newest inputs ({self.incomplete_frames} so far; set "
                    f"wait_for_frame false if these topics publish slower than "
                    f"{self._cfg.trigger_topic})")
        now_s, self._pending_s = self._pending_s, None
        self._fresh.clear()
        self._tick(now_s)

    def _ingest(self, topic: str, msg, receive_s: float) -> None:
        self._fresh.add(topic)
        jump = self._stamps.on_message(topic, msg)
        if jump is not None:
            self._reset_episode(jump, keep_stamp=True)
        self._asm.on_message(topic, msg, receive_s)

    def _on_episode(self, msg) -> None:
        try:
            change = self._stamps.episodes.on_episode(layout_labels(msg), msg.data)
        except ValueError as exc:
            self._report("episode", ("episode", f"{self._cfg.episode_topic}: {exc}"))
            return
        self._report("episode", None)
        if change is not None:
            self._stamps.episodes.forget_stamps()  # the new episode's stamps may restart at 0
            self._reset_episode(f"'{self._cfg.episode_topic}': {change}")

    def _reset_episode(self, why: str, keep_stamp: bool = False) -> None:
        self._asm.reset()
        if not keep_stamp:   # a jump back already holds the new episode's first stamp
            self._stamps.newest = None
        if self._mixer is not None:
            self._mixer.reset()
        if self._gate is not None:
            self._gate.cancel()
        self.get_logger().debug(f"{why}: episode reset, observation history cleared")

    def _on_executed(self, msg: JointState) -> None:
        """label: the driver's echo; the one for our last label releases the held inputs."""
        if self._gate.executed(stamp_ns(msg.header.stamp)):
            self._set_last_action(msg.position)
            for entry, trigger in self._gate.release():
                self._feed(entry, trigger)

    def _on_other(self, msg: JointState) -> None:
        """mix: the other policy's echo = its action for the observation of that stamp."""
        execute = self._mixer.offer(stamp_ns(msg.header.stamp), msg.position,
                                    is_fallback_frame(msg.header.frame_id))
        if execute is not None:
            self._execute(execute, msg.header.stamp)

    def _set_last_action(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.shape == (self._spec.action.size,) and np.all(np.isfinite(values)):
            self._asm.set_last_action(values)
        else:
            self._report("executed", ("executed", f"executed action {values.tolist()} has "
                                      f"the wrong size or is not finite; last_action kept"))

    # ---- the tick --------------------------------------------------------------------------
    def _tick(self, now_s: float) -> None:
        obs = self._asm.build(now_s)
        if not self._acted:   # silent until every input was heard once (a lockstep simulator
            missing = [t for t, age in obs.ages_s.items() if math.isinf(age)]  # re-sends its
            if missing:                                                        # frame)
                self._report("startup", ("startup", f"waiting for a first message on "
                                         f"{', '.join(missing)}; no action until then"))
                return
            self._acted = True
            self._report("startup", None)
        self.ticks += 1
        stamp = self._echo_stamp(now_s)
        fault = input_fault(obs, self._cfg.max_input_age_s)
        command = None
        if fault is None:
            try:
                command = self._spec.action.postprocess(self._teacher(obs.vector))
            except Exception as exc:  # noqa: BLE001 - any failure -> fallback, reported once
                fault = ("inference", f"teacher action rejected: {exc}")
        self._report("policy", fault)
        mode = self._cfg.mode
        if command is not None and mode != "drive":
            self._publish_label(command, stamp)
        if mode == "label":
            if command is not None:
                self._gate.labelled(stamp_ns(stamp))
            return
        if command is None:
            self.fallbacks += 1
            command = self._fallback.command()
        else:
            self._fallback.remember_safe(command)
        if mode == "drive":
            self._publish(command, stamp, fault is not None)
            return
        execute = self._mixer.on_observation(stamp_ns(stamp), command, fault is not None)
        if execute is not None:
            self._execute(execute, stamp)

    def _execute(self, execute, stamp) -> None:
        """mix: command the executed action (teacher's or the other's) with the stamp rule."""
        self._publish(execute.values, stamp, execute.fallback)

    def _publish(self, command: np.ndarray, stamp, fallback: bool) -> None:
        try:
            self._out.publish(command, stamp, fallback=fallback)
        except ValueError as exc:  # non-finite or wrong size: publish the fallback instead
            self._report("output", ("output", str(exc)))
            command = self._fallback.command()
            self._out.publish(command, stamp, fallback=True)
        self._asm.set_last_action(command)

    def _publish_label(self, command: np.ndarray, stamp) -> None:
        label = self._label
        label.header.stamp = stamp
        label.position = [float(v) for v in command]
        self._label_pub.publish(label)
        self.labels += 1

    def _echo_stamp(self, now_s: float):
        """The stamp rule: the newest input header stamp, its own Time message (exact), else
        now. Headerless inputs (Float64MultiArray) carry no stamp and do not count: their
        receive time is on another clock than the simulator's stamps."""
        newest = self._stamps.newest
        return newest[1] if newest is not None else s_to_stamp(now_s)

    def _report(self, channel: str, fault) -> None:
        """Log a fault once when it starts and once when it clears."""
        log_fault_lines(self.get_logger(), self._faults.update(channel, fault))

    # ---- shutdown --------------------------------------------------------------------------
    def _close_io(self) -> None:
        if self._io is not None:
            self._io.close()
            self._io = None

    def destroy_node(self) -> None:
        self._close_io()
        summary = f"{self.ticks} observations, {self.labels} labels, {self.fallbacks} fallbacks"
        if getattr(self, "_mixer", None) is not None:
            m = self._mixer
            summary += (f"; mix: teacher executed {m.teacher_steps}, other {m.other_steps}, "
                        f"other missing {m.other_missed} (+{m.other_late} replaced by teacher)")
        if getattr(self, "_gate", None) is not None:
            summary += f"; labels without the executed action: {self._gate.gave_up}"
        if hasattr(self, "_cfg"):
            self.get_logger().info(f"teacher_node done: {summary}")
        super().destroy_node()


def main(args=None) -> int:
    return spin_node(TeacherNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
