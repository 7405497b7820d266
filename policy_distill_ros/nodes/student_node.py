"""student_node: runs a distilled ONNX student at the control rate, never silently.

Lifecycle node. configure: load + validate the policy file (and the robot spec, if given), build
the observation assembler, subscribe the spec's topics, create publishers. activate: start the
control loop. Every tick: assemble, check ages and input problems, infer, postprocess, publish
command + stamped echo; anything wrong -> the fallback command, logged once when it starts and
once when it clears. Hot reload (parameter `model_path`, service `~/reload`, topic
`model_updated`) loads in a background thread and swaps one reference.
Episode reset (input stamps going backwards, service `~/reset`, or a new `episode_id` on the
optional `episode_topic`): observation history, last action and recurrent state are cleared.

Loop choice, measured on this 2-core machine (500 Hz loop doing ~0.1 ms of numpy work, with
500 Hz JointState + Imu arriving in the same process, 10 s each):
  rclpy timer on the executor:      period std 0.159 ms, p99 |period - 2 ms| 0.61 ms, max 6.5 ms
  dedicated absolute-time thread:   period std 0.063 ms, p99 |period - 2 ms| 0.25 ms, max 3.5 ms
so wall-clock runs use core's LoopTimer thread, which takes the inputs itself at each due time
(no thread wakes per message; ages count from the rmw receive time). Under use_sim_time the
loop must follow /clock, so it is an rclpy timer on the ROS clock. With `trigger: on_message`
inference runs when the trigger topic arrives: the lowest sensor-to-action latency, without
the 0..1 period sampling delay of a timer (bench/student_latency.py measures both); a silent
trigger topic is then caught by the timing monitor, not by this node. In that mode the IO
thread (policy_io.PolicyIo) wakes for the trigger topic only and takes the frame's other
topics just before it: one wake-up per sensor frame.
Deadline enforcement (core.enforcement, docs/enforcement.md): the student counts its misses
with the timing monitor's definition (whole deadlines in the gap between two of its actions)
and withholds its commands (echoes only, flagged `withheld`) while the monitor's state on
`policy_enforcement` is not nominal, so the monitor's fallback holds without alternation. A
student that sees its own gap exceed the deadline, with a monitor watching, mutes itself at
once (the monitor is declaring the fallback meanwhile) until the monitor says nominal again.
Hot path costs: message publishing from preallocated CDR buffers (action_publisher), the
system clock read directly (no rclpy Time objects) unless use_sim_time, no per-tick logging
(faults log on change; deadline misses at most once a second), the heap built at start-up
frozen out of the collector's way (gc.freeze at activation), and per frame a handful of numpy
calls: each topic's terms gathered with one take from the decoded bytes (core.observation),
the observation built into the policy's bound input and run without copies (OnnxPolicy.act,
I/O binding), the action postprocessed in place. `realtime_priority` puts the
whole process under SCHED_FIFO, as a robot deployment would (bench/student_latency.py
on_message_rt).
"""
from __future__ import annotations

import gc
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from policy_distill_ros.core.contract import COMMAND, POLICY_ENFORCEMENT, ns_to_s
from policy_distill_ros.core.enforcement import (
    NOMINAL,
    STATES,
    TRIGGERS,
    DeadlineEnforcer,
    input_periods_for,
)
from policy_distill_ros.core.fallback import FALLBACK_MODES, FallbackCommand, input_fault
from policy_distill_ros.core.faults import FaultTracker
from policy_distill_ros.core.fields import layout_labels
from policy_distill_ros.core.log_throttle import LogThrottle
from policy_distill_ros.core.loop_timer import LoopTimer, lateness_line
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.policy_file import OnnxPolicy
from policy_distill_ros.core.realtime import MAX_PRIORITY, set_realtime_priority
from policy_distill_ros.core.spec import PolicySpec, load_policy_spec
from policy_distill_ros.core.timing import LogHistogram
from policy_distill_ros.nodes.action_publisher import ActionPublisher
from policy_distill_ros.nodes.inputs import InputStamps, twist_command
from policy_distill_ros.nodes.policy_io import PolicyIo
from policy_distill_ros.nodes.rclpy_internals import HotPathLog
from policy_distill_ros.nodes.ros_common import (
    COMMAND_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    add_parameter_check,
    declare,
    require_choice,
    spin_node,
    warn_unknown_parameters,
)
from policy_distill_ros.nodes.topic_types import message_type_for, parse_topic_types

COMMAND_TOPIC = COMMAND   # geometry_msgs/TwistStamped feeding `kind: command` terms


@dataclass
class StudentConfig:
    """The student's parameters, validated together so a bad combination fails at configure."""

    model_path: str
    rate_hz: float = 0.0
    max_input_age_s: float = 0.1
    fallback_mode: str = "hold_default"
    deadline_s: float = 0.0
    spec_path: str = ""
    trigger: str = "timer"
    trigger_topic: str = ""
    topic_types: str = ""
    reload_on_announce: bool = False
    episode_topic: str = ""

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("parameter 'model_path' is empty: give the student .onnx file")
        if not os.path.isfile(self.model_path):
            raise ValueError(f"parameter 'model_path': no such file {self.model_path!r}")
        if self.spec_path and not os.path.isfile(self.spec_path):
            raise ValueError(f"parameter 'spec_path': no such file {self.spec_path!r}")
        if self.rate_hz < 0 or self.max_input_age_s <= 0 or self.deadline_s < 0:
            raise ValueError("parameters rate_hz and deadline_s must be >= 0 and "
                             "max_input_age_s > 0")
        require_choice("fallback_mode", self.fallback_mode, FALLBACK_MODES)
        require_choice("trigger", self.trigger, TRIGGERS)
        self.type_table = parse_topic_types([e for e in self.topic_types.split(",") if e.strip()])


class StudentNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("student_node")
        declare(self, "model_path", "", "student .onnx policy file; changing it hot-reloads "
                "(a refused file is not set)")
        declare(self, "rate_hz", 0.0, "control rate; 0 = from the model metadata", min_value=0.0,
                max_value=100000.0)
        declare(self, "max_input_age_s", 0.1, "an input older than this -> fallback",
                min_value=1e-4, max_value=3600.0)
        declare(self, "fallback_mode", "hold_default", "command when the policy cannot be used",
                choices=FALLBACK_MODES)
        declare(self, "deadline_s", 0.0, "longest allowed gap between two actions (as the timing "
                "monitor counts); 0 = two control periods, on_message: raised to two input "
                "periods when the inputs are slower", min_value=0.0, max_value=3600.0)
        declare(self, "spec_path", "", "optional PolicySpec YAML the model must match")
        declare(self, "trigger", "timer", "timer: fixed-rate loop; on_message: run in the "
                "trigger topic's callback", choices=TRIGGERS)
        declare(self, "trigger_topic", "", "on_message: topic that triggers a tick; '' = first "
                "topic of the observation spec")
        declare(self, "topic_types", "", "extra comma-separated 'topic=pkg/msg/Type' entries")
        declare(self, "reload_on_announce", False, "reload from paths on `model_updated`")
        declare(self, "episode_topic", "", "Float64MultiArray with an 'episode_id' label (the "
                "simulator's `episode`): a new id resets history and recurrent state; '' = off")
        self._enforcement_wait_s = declare(
            self, "enforcement_wait_s", 5.0, "after activation, the fallback is commanded until "
            "the timing monitor's state is heard, for at most this long (longer while a "
            "discovered monitor's state is on its way): a restarted student must not interleave "
            "policy commands into the monitor's fallback, and DDS discovery took up to 2.9 s on "
            "a loaded 2-core machine; 0 = the policy commands at once",
            min_value=0.0, max_value=60.0)
        autostart = declare(self, "autostart", True, "configure + activate at start")
        priority = declare(self, "realtime_priority", 0, "SCHED_FIFO priority of the whole "
                           "process (1-99; needs permission); 0 = normal scheduling",
                           min_value=0, max_value=MAX_PRIORITY)
        add_parameter_check(self, "model_path", self._check_model_path)
        add_parameter_check(self, "topic_types", _check_topic_types)
        warn_unknown_parameters(self)
        if priority:  # before configure: the IO and loop threads inherit it
            problem = set_realtime_priority(priority)
            if problem:
                self.get_logger().warning(problem)
            else:
                self.get_logger().info(f"SCHED_FIFO priority {priority}")
        self._cfg: StudentConfig | None = None
        self._spec: PolicySpec | None = None
        self._policy: OnnxPolicy | None = None
        self._asm: ObservationAssembler | None = None
        self._topics: list = []
        self._io: PolicyIo | None = None
        self._out: ActionPublisher | None = None
        self._fallback: FallbackCommand | None = None
        self._faults = FaultTracker()
        self._subs: list = []
        self._loop: LoopTimer | None = None
        self._timer = None
        self._active = False
        self._stamps = InputStamps()  # newest input stamp (echo stamp rule), time going back
        self._episode_problem: str | None = None
        self._now_s = self._ros_now_s
        self._command_buf: np.ndarray | None = None
        self._pending_command: np.ndarray | None = None  # newest operator command term
        self._tick_lock = threading.Lock()
        self._miss_log = LogThrottle(1.0)
        self._deadline: DeadlineEnforcer | None = None
        self._monitor_state: str | None = None  # None: no monitor heard, never withhold
        self._self_muted = False   # own gap > deadline: muted until the monitor says nominal
        self._command_mode = "published"  # published | withheld | waiting: logged per change
        self._loop_started_s: float | None = None
        self._action_lateness = LogHistogram()  # timer: publish time - due time, seconds
        self._published_mono_s = 0.0
        self._next_monitor_lookup_s, self._monitor_discovered = 0.0, False
        self._log = HotPathLog(self.get_logger())  # for the IO / loop threads
        self.ticks = 0
        self._reload_lock = threading.Lock()
        self.create_subscription(String, POLICY_ENFORCEMENT, self._on_enforcement, LATCHED_QOS)
        # Sensor callbacks and the loop run on other threads (PolicyIo, LoopTimer), so a reload
        # served here never delays them; the load itself runs in a worker thread all the same.
        self.create_service(Trigger, "~/reload", self._on_reload)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if autostart:
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise SystemExit(1)  # a launch file / supervisor sees the failure
            self.trigger_activate()

    # ---- lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            cfg = StudentConfig(**{name: self.get_parameter(name).value for name in (
                "model_path", "rate_hz", "max_input_age_s", "fallback_mode", "deadline_s",
                "spec_path", "trigger", "trigger_topic", "topic_types", "reload_on_announce",
                "episode_topic")})
            expected = load_policy_spec(cfg.spec_path) if cfg.spec_path else None
            policy = OnnxPolicy(cfg.model_path, expected=expected)
            spec = policy.spec
            spec.observation.require_no_privileged()
            self._build(cfg, spec, policy)
        except Exception as exc:  # noqa: BLE001 - every cause is reported, none crash the node
            self.get_logger().error(f"configure failed: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(
            f"configured: model {cfg.model_path} (obs {spec.observation.size}, actions "
            f"{spec.action.size}), {self._rate_hz:g} Hz, trigger {cfg.trigger}, fallback "
            f"{cfg.fallback_mode}, inputs {', '.join(self._topics)}")
        return TransitionCallbackReturn.SUCCESS

    def _build(self, cfg: StudentConfig, spec: PolicySpec, policy: OnnxPolicy) -> None:
        self._cfg, self._spec, self._policy = cfg, spec, policy
        self._rate_hz = cfg.rate_hz or float(spec.rate_hz)
        if self._rate_hz <= 0:
            raise ValueError("rate_hz is 0 and the model metadata has no control rate")
        # on_message acts once per input: its deadline follows the input period (core)
        self._deadline = DeadlineEnforcer(
            cfg.deadline_s or 2.0 / self._rate_hz,
            input_periods=input_periods_for(cfg.trigger))
        self._asm = ObservationAssembler(spec.observation, spec.action.size)
        topics = list(spec.observation.topics)
        self._trigger_topic = cfg.trigger_topic or (topics[0] if topics else "")
        if cfg.trigger == "on_message" and self._trigger_topic not in topics:
            raise ValueError(f"trigger_topic {self._trigger_topic!r} is not an input topic of "
                             f"the model ({', '.join(topics)})")
        self._topics = topics
        for topic in topics:  # unknown topic types fail here, before anything is created
            message_type_for(topic, cfg.type_table)
        self._command_term = any(getattr(t, "kind", None) == "command"
                                 for t in spec.observation.terms)
        if self._command_term:
            from geometry_msgs.msg import TwistStamped
            self._subs.append(self.create_subscription(TwistStamped, COMMAND_TOPIC,
                                                       self._on_command, SENSOR_QOS))
        self._subs.append(self.create_subscription(String, "model_updated", self._on_announce,
                                                   LATCHED_QOS))
        action = spec.action
        self._fallback = FallbackCommand(cfg.fallback_mode, action.default_pose,
                                         getattr(action, "lower", None),
                                         getattr(action, "upper", None))
        events = [(cfg.episode_topic, Float64MultiArray, COMMAND_QOS, self._on_episode)] \
            if cfg.episode_topic else []
        self._command_buf = np.zeros(action.size, dtype=np.float64)
        self._stamps = InputStamps()
        # The node clock is the system clock unless use_sim_time: read it without rclpy's
        # Time objects (7 us -> 0.1 us per call, twice per tick).
        sim_time = bool(self.get_parameter("use_sim_time").value)
        self._now_s = self._ros_now_s if sim_time else time.time
        # One wake-up per sensor frame: on_message waits for the trigger topic only and takes
        # the other topics first when it arrives; the timer loop takes everything itself at
        # its due time, so no message wakes a thread at all (ages from the rmw receive time).
        wake_on = [self._trigger_topic] if cfg.trigger == "on_message" else []
        self._io = PolicyIo(self, topics, self._on_input, action.joints, cfg.type_table,
                            events=events, decode_sensors=True, wake_on=wake_on)
        self._out = self._io.out

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._faults = FaultTracker()
        self._deadline.restart_timing()  # the inactive time is no gap of the policy's
        self._loop_started_s = time.monotonic()
        self._action_lateness = LogHistogram()
        # Everything built so far lives until shutdown: out of the collector's way, so a
        # collection on the hot path walks only what the ticks allocate.
        gc.collect()
        gc.freeze()
        self._active = True
        if self._cfg.trigger == "timer":
            if self.get_parameter("use_sim_time").value:
                self._timer = self.create_timer(1.0 / self._rate_hz, self._tick)
            else:
                self._loop = LoopTimer(1.0 / self._rate_hz, self._tick, name="student_loop")
                self._loop.start()
        self.get_logger().info("active: publishing policy_command")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self.get_logger().info(f"inactive after {self.ticks} ticks, {self.deadline_misses} "
                               "deadline misses: publishing nothing")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_loop()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_loop(self) -> None:
        self._active = False
        loop = self._loop
        if loop is not None:
            loop.stop()
            self._loop = None
            self._log_loop_timing(loop)
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        with self._tick_lock:  # a tick in flight finishes before deactivate returns
            pass

    def _release(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self._io is not None:
            self._io.close()
        self._io = self._out = self._policy = self._asm = None

    def destroy_node(self) -> None:
        self._stop_loop()
        self._release()
        super().destroy_node()

    # ---- inputs ----------------------------------------------------------------------------
    def _ros_now_s(self) -> float:
        return ns_to_s(self.get_clock().now().nanoseconds)

    def _on_input(self, topic: str, msg, received_ns: int | None = None) -> None:
        """PolicyIo thread (on_message; the trigger topic last) or the loop's own thread (timer,
        from `take_inputs`): into the assembler; the trigger topic then runs the tick."""
        cfg = self._cfg
        if cfg is None:
            return
        now_s = self._now_s()
        # the age counts from the DDS receive time (system clock), also for a message taken
        # later; under use_sim_time ages are sim time, so from the take (at most a tick late)
        receive_s = now_s if received_ns is None or self._now_s is not time.time else \
            min(now_s, ns_to_s(received_ns))
        with self._tick_lock:
            if self._asm is None:
                return
            self._ingest(topic, msg, receive_s)
        if cfg.trigger == "on_message" and topic == self._trigger_topic and self._active:
            self._tick(now_s)

    def _on_command(self, msg) -> None:
        if self._asm is not None:
            self._pending_command = twist_command(msg)

    def _ingest(self, topic: str, msg, receive_s: float) -> None:
        """One message into the assembler (tick lock held); stamps going backwards = reset."""
        jump = self._stamps.on_message(topic, msg)
        if jump is not None:
            self._reset_episode(jump, keep_stamp=True)  # this message starts the new episode
        self._asm.on_message(topic, msg, receive_s)

    def _feed_command(self) -> None:
        command = self._pending_command
        if command is not None:
            self._asm.set_command(command)

    # ---- episodes --------------------------------------------------------------------------
    def _reset_episode(self, why: str, keep_stamp: bool = False) -> None:
        """Forget history, last action and recurrent state (tick lock held)."""
        self._asm.reset()
        if not keep_stamp:
            self._stamps.newest = None
        policy = self._policy
        if policy is not None:
            policy.reset_state()
        state = " and recurrent state" if policy and policy.recurrent else ""
        self._log.warning(f"{why}: episode reset, observation history{state} cleared")

    def _on_episode(self, msg: Float64MultiArray) -> None:
        """PolicyIo thread (served before the sensors of the same step)."""
        try:
            change = self._stamps.episodes.on_episode(layout_labels(msg), msg.data)
        except ValueError as exc:
            if str(exc) != self._episode_problem:
                self._episode_problem = str(exc)
                self._log.error(f"{self._cfg.episode_topic}: {exc}; episode resets "
                                "from this topic are off until it is fixed")
            return
        self._episode_problem = None
        if change is None:
            return
        with self._tick_lock:
            if self._asm is not None:
                self._stamps.episodes.forget_stamps()  # the new episode may restart at 0
                self._reset_episode(f"'{self._cfg.episode_topic}': {change}")

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._tick_lock:
            if self._asm is None:
                response.success, response.message = False, "not configured: nothing to reset"
                return response
            self._stamps.episodes.forget_stamps()
            self._reset_episode("reset requested")
        response.success = True
        response.message = "observation history, last action and recurrent state cleared"
        return response

    # ---- the control tick ------------------------------------------------------------------
    def _tick(self, now_s: float | None = None) -> None:
        """One control step; `now_s`: when the triggering message arrived (on_message)."""
        io = self._io
        if now_s is None and io is not None:
            io.take_inputs()  # timer: what arrived since the last tick, on this thread
        with self._tick_lock:
            if not self._active or self._out is None:
                return
            try:
                self._control_step(self._now_s() if now_s is None else now_s)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any bug
                if not self.context.ok():
                    return  # Ctrl-C shut the context down under a tick: nothing to report
                self._report("policy", ("internal", f"control tick failed: {exc!r}"))
                try:
                    self._out.publish(self._fallback.command(), self._now_s(), fallback=True)
                except Exception:  # noqa: BLE001 - nothing safer left to do
                    pass
            self.ticks += 1
            loop = self._loop
            if loop is not None:  # timer: when the action went out, against its due time
                self._action_lateness.add(self._published_mono_s - loop.due_s)

    def _control_step(self, now_s: float) -> None:
        self._feed_command()
        policy = self._policy  # one read: a hot reload swaps this reference between ticks
        obs = self._asm.build(now_s, out=policy.obs_row)  # straight into the bound input
        fault = input_fault(obs, self._cfg.max_input_age_s)
        command = None
        if fault is None:
            try:
                raw = policy.act()
            except Exception as exc:  # noqa: BLE001 - any runtime failure -> fallback
                fault = ("inference", f"inference failed: {exc}")
            else:
                try:
                    command = self._spec.action.postprocess(raw, out=self._command_buf)
                except ValueError as exc:
                    fault = ("action", f"policy output rejected: {exc}")
        if command is None:
            command = self._fallback.command()
        stamp = self._echo_stamp(obs.stamp_s, now_s)
        # The deadline is judged on the publish time, as the monitor judges the echo's.
        self._deadline.on_action(self._now_s(), obs.stamp_s, fault is None)
        if self._deadline.last_gap_misses:
            self._on_own_miss()
        withheld = self._self_muted or self._monitor_state not in (None, NOMINAL)
        waiting = self._monitor_state is None and self._monitor_may_exist()
        if waiting:  # a monitor may be in fallback: command what it would, the same pose
            self._out.publish(self._fallback.command(), stamp, fallback=True)
        else:
            self._out.publish(command, stamp, fallback=fault is not None, withheld=withheld)
        self._published_mono_s = time.monotonic()
        # bookkeeping after the action is out
        mode = "waiting" if waiting else ("withheld" if withheld else "published")
        if mode != self._command_mode:
            self._command_mode = mode
            self._log.warning(self._describe_command_mode(mode))
        if fault is None:
            self._fallback.remember_safe(command)
        self._report("policy", fault)
        self._asm.set_last_action(command)

    def _describe_command_mode(self, mode: str) -> str:
        if mode == "waiting":
            return (f"waiting up to {self._enforcement_wait_s:g} s for the timing monitor's "
                    "state: publishing the fallback meanwhile")
        if mode == "withheld":
            return (f"commands withheld: the timing monitor is in '{self._monitor_state}'"
                    + (" (own deadline missed)" if self._self_muted else ""))
        return "commands published: " + ("the timing monitor is nominal" if self._monitor_state
                                         else "no timing monitor heard")

    def _on_own_miss(self) -> None:
        """Tick lock held: this action came a whole deadline or more after the previous one."""
        d = self._deadline
        if self._monitor_state is not None:
            self._self_muted = True  # the monitor has declared (or is declaring) the fallback
        if self._miss_log.due():  # counted always, logged at most once a second
            self._log.error(f"deadline missed: {d.last_gap_misses} deadline(s) of "
                            f"{d.deadline_s * 1e3:.2f} ms without an action "
                            f"({d.misses} misses in {self.ticks} ticks)")

    def _log_loop_timing(self, loop: LoopTimer) -> None:
        """Timer trigger: how late actions went out against their due times, in one line."""
        if self._action_lateness.count:
            self.get_logger().info(lateness_line(self._action_lateness, loop))

    @property
    def deadline_misses(self) -> int:
        return 0 if self._deadline is None else self._deadline.misses

    def _monitor_may_exist(self) -> bool:
        """Before any state is heard: a monitor may be in fallback while discovery (its latched
        state on the way) still runs: wait `enforcement_wait_s` after activation, and longer
        while a discovered monitor's state is on its way."""
        if self._loop_started_s is None or not self._enforcement_wait_s:
            return False
        now = time.monotonic()
        if now - self._loop_started_s < self._enforcement_wait_s:
            return True
        if now >= self._next_monitor_lookup_s:  # a graph query: at most twice a second
            self._next_monitor_lookup_s = now + 0.5
            self._monitor_discovered = self.count_publishers(POLICY_ENFORCEMENT) > 0
        return self._monitor_discovered  # discovered, its latched state not yet here

    def _on_enforcement(self, msg: String) -> None:
        """Executor thread: the timing monitor's state (latched, and on every change)."""
        if msg.data not in STATES:
            return
        self._monitor_state = msg.data
        if msg.data == NOMINAL:
            self._self_muted = False

    def _echo_stamp(self, stamp_s: float | None, now_s: float):
        """The stamp rule: the newest input's own Time message (exact), else now."""
        if stamp_s is None:
            return now_s
        newest = self._stamps.newest
        if newest is not None and abs(newest[0] - stamp_s) < 1e-6:
            return newest[1]
        return float(stamp_s)

    def _report(self, channel: str, fault) -> None:
        """Log a fault once when it starts and once when it clears (core FaultTracker)."""
        if fault is None and not self._faults:
            return  # the common case, every tick: nothing active, nothing to clear
        for level, text in self._faults.update(channel, fault):
            if level == "error":
                self._log.error(text)
            else:
                self._log.info(text)

    # ---- hot reload ------------------------------------------------------------------------
    def _check_model_path(self, path: str) -> str | None:
        """A new `model_path` at run time: loaded and swapped in now, or refused with the
        reason (the parameter keeps its old value); unconfigured, the file must exist."""
        if self._spec is None:
            return None if os.path.isfile(path) else f"no such file {path!r}"
        ok, message = self.reload(path)
        return None if ok else message

    def _on_announce(self, msg: String) -> None:
        if self.get_parameter("reload_on_announce").value and self._policy is not None:
            self.get_logger().info(f"model announced: {msg.data}")
            threading.Thread(target=self.reload, args=(msg.data,), daemon=True,
                             name="student_reload").start()

    def _on_reload(self, request: Trigger.Request, response: Trigger.Response):
        result: list = []
        worker = threading.Thread(target=lambda: result.append(self.reload()), daemon=True,
                                  name="student_reload")
        worker.start()
        worker.join()
        response.success, response.message = result[0]
        return response

    def reload(self, path: str | None = None) -> tuple[bool, str]:
        """Load + validate `path` (default: model_path) and swap it in; never on the loop thread.

        The new model must match the running spec exactly (same observation layout, actions and
        rate): a different layout needs cleanup + configure. A bad file leaves the old running.
        """
        path = path or self.get_parameter("model_path").value
        if not self._reload_lock.acquire(blocking=False):
            return False, "a reload is already in progress"
        try:
            spec = self._spec
            if spec is None:
                return False, "not configured: nothing to reload into"
            try:
                new_policy = OnnxPolicy(path, expected=spec)
            except Exception as exc:  # noqa: BLE001 - the reason goes back to the caller
                text = f"reload of {path!r} refused, previous model keeps running: {exc}"
                self.get_logger().error(text)
                return False, text
            self._policy = new_policy  # the swap: one reference assignment
            self.get_logger().info(f"reloaded model {path}")
            return True, f"reloaded {path}"
        finally:
            self._reload_lock.release()


def _check_topic_types(value: str) -> str | None:
    try:
        parse_topic_types([e for e in value.split(",") if e.strip()])
    except ValueError as exc:
        return str(exc)
    return None


def main(args=None) -> int:
    return spin_node(StudentNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
