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
so wall-clock runs use core's LoopTimer thread; subscription callbacks (on policy_io.PolicyIo's
own thread) only store messages. Under use_sim_time the loop must follow /clock, so it is an
rclpy timer on the ROS clock. With `trigger: on_message` inference runs in the trigger topic's
callback: the lowest sensor-to-action latency, without the 0..1 period sampling delay of a
timer (bench/student_latency.py measures both); a silent trigger topic is then caught by the
timing monitor, not by this node. In that mode every input is assembled as it arrives, on the
IO thread that also runs the tick, so the trigger message carries only its own work.
Hot path costs: message publishing from preallocated CDR buffers (policy_io), the system clock
read directly (no rclpy Time objects) unless use_sim_time, no per-tick logging (faults log
on change; deadline misses at most once a second). `realtime_priority` puts the whole process
under SCHED_FIFO, as a robot deployment would (bench/student_latency.py on_message_rt).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from policy_distill_ros.core.faults import FaultTracker
from policy_distill_ros.core.fields import layout_labels
from policy_distill_ros.core.loop_timer import LoopTimer
from policy_distill_ros.core.observation import ObservationAssembler
from policy_distill_ros.core.policy_file import OnnxPolicy
from policy_distill_ros.core.realtime import MAX_PRIORITY, set_realtime_priority
from policy_distill_ros.core.spec import PolicySpec, load_policy_spec
from policy_distill_ros.nodes.policy_io import (FALLBACK_MODES, ActionPublisher, FallbackCommand,
                                               HotPathLog, InputCache, InputStamps, LogThrottle,
                                               PolicyIo, input_fault, message_type_for,
                                               parse_topic_types, twist_command)
from policy_distill_ros.nodes.ros_common import (COMMAND_QOS, LATCHED_QOS, SENSOR_QOS, declare,
                                                 spin_node)

TRIGGERS = ("timer", "on_message")
COMMAND_TOPIC = "command"   # geometry_msgs/TwistStamped feeding `kind: command` terms


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
        if self.fallback_mode not in FALLBACK_MODES:
            raise ValueError(f"parameter 'fallback_mode' is {self.fallback_mode!r}; expected one "
                             f"of {', '.join(FALLBACK_MODES)}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"parameter 'trigger' is {self.trigger!r}; expected one of "
                             f"{', '.join(TRIGGERS)}")
        self.type_table = parse_topic_types([e for e in self.topic_types.split(",") if e.strip()])


class StudentNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("student_node")
        declare(self, "model_path", "", "student .onnx policy file; changing it hot-reloads")
        declare(self, "rate_hz", 0.0, "control rate; 0 = from the model metadata", min_value=0.0)
        declare(self, "max_input_age_s", 0.1, "an input older than this -> fallback",
                min_value=1e-4, max_value=3600.0)
        declare(self, "fallback_mode", "hold_default", "command when the policy cannot be used",
                choices=FALLBACK_MODES)
        declare(self, "deadline_s", 0.0, "an action later than this after its due time is a "
                "miss; 0 = one period",
                min_value=0.0)
        declare(self, "spec_path", "", "optional PolicySpec YAML the model must match")
        declare(self, "trigger", "timer", "timer: fixed-rate loop; on_message: run in the "
                "trigger topic's callback", choices=TRIGGERS)
        declare(self, "trigger_topic", "", "on_message: topic that triggers a tick; '' = first "
                "topic of the observation spec")
        declare(self, "topic_types", "", "extra comma-separated 'topic=pkg/msg/Type' entries")
        declare(self, "reload_on_announce", False, "reload from paths on `model_updated`")
        declare(self, "episode_topic", "", "Float64MultiArray with an 'episode_id' label (the "
                "simulator's `episode`): a new id resets history and recurrent state; '' = off")
        autostart = declare(self, "autostart", True, "configure + activate at start")
        priority = declare(self, "realtime_priority", 0, "SCHED_FIFO priority of the whole "
                           "process (1-99; needs permission); 0 = normal scheduling",
                           min_value=0, max_value=MAX_PRIORITY)
        if priority:  # before configure: the IO and loop threads inherit it
            problem = set_realtime_priority(priority)
            if problem:
                self.get_logger().warning(problem)
            else:
                self.get_logger().info(f"SCHED_FIFO priority {priority}")
        self._cfg: Optional[StudentConfig] = None
        self._spec: Optional[PolicySpec] = None
        self._policy: Optional[OnnxPolicy] = None
        self._asm: Optional[ObservationAssembler] = None
        self._inputs: Optional[InputCache] = None
        self._io: Optional[PolicyIo] = None
        self._out: Optional[ActionPublisher] = None
        self._fallback: Optional[FallbackCommand] = None
        self._faults = FaultTracker()
        self._subs: list = []
        self._loop: Optional[LoopTimer] = None
        self._timer = None
        self._active = False
        self._stamps = InputStamps()  # newest input stamp (echo stamp rule), time going back
        self._episode_problem: Optional[str] = None
        self._now_s = self._ros_now_s
        self._command_buf: Optional[np.ndarray] = None
        self._pending_command: Optional[np.ndarray] = None  # newest operator command term
        self._tick_lock = threading.Lock()
        self._miss_log = LogThrottle(1.0)
        self._log = HotPathLog(self.get_logger())  # for the IO / loop threads
        self.deadline_misses = 0
        self.ticks = 0
        self._reload_lock = threading.Lock()
        self.add_on_set_parameters_callback(self._on_set_parameters)
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
            f"{cfg.fallback_mode}, inputs {', '.join(self._inputs.topics)}")
        return TransitionCallbackReturn.SUCCESS

    def _build(self, cfg: StudentConfig, spec: PolicySpec, policy: OnnxPolicy) -> None:
        self._cfg, self._spec, self._policy = cfg, spec, policy
        self._rate_hz = cfg.rate_hz or float(spec.rate_hz)
        if self._rate_hz <= 0:
            raise ValueError("rate_hz is 0 and the model metadata has no control rate")
        self._deadline_s = cfg.deadline_s or 1.0 / self._rate_hz
        self._asm = ObservationAssembler(spec.observation, spec.action.size)
        topics = list(spec.observation.topics)
        self._trigger_topic = cfg.trigger_topic or (topics[0] if topics else "")
        if cfg.trigger == "on_message" and self._trigger_topic not in topics:
            raise ValueError(f"trigger_topic {self._trigger_topic!r} is not an input topic of "
                             f"the model ({', '.join(topics)})")
        self._inputs = InputCache(topics)
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
        self._io = PolicyIo(self, topics, self._on_input, action.joints, cfg.type_table,
                            events=events, decode_sensors=True)
        self._out = self._io.out

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._faults = FaultTracker()
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
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
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
        self._io = self._out = self._policy = self._asm = self._inputs = None

    def destroy_node(self) -> None:
        self._stop_loop()
        self._release()
        super().destroy_node()

    # ---- inputs ----------------------------------------------------------------------------
    def _ros_now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_input(self, topic: str, msg) -> None:
        """PolicyIo thread. on_message: assemble at once (this thread also runs the tick, so
        only the trigger topic's own work is on the message-to-action path); timer: store."""
        cfg = self._cfg
        if cfg is None:
            return
        now_s = self._now_s()
        if cfg.trigger == "timer":
            inputs = self._inputs
            if inputs is not None:
                inputs.store(topic, msg, now_s)
            return
        with self._tick_lock:
            if self._asm is None:
                return
            self._ingest(topic, msg, now_s)
        if topic == self._trigger_topic and self._active:
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

    def _feed_inputs(self) -> None:
        """Timer trigger: messages stored since the last tick into the assembler."""
        if self._cfg.trigger == "timer":
            for topic, entry in self._inputs.take_new():
                self._ingest(topic, entry.msg, entry.receive_s)
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
    def _tick(self, now_s: Optional[float] = None) -> None:
        """One control step; `now_s`: when the triggering message arrived (on_message)."""
        with self._tick_lock:
            if not self._active or self._out is None:
                return
            started = time.perf_counter()
            try:
                self._control_step(self._now_s() if now_s is None else now_s)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any bug
                self._report("policy", ("internal", f"control tick failed: {exc!r}"))
                try:
                    self._out.publish(self._fallback.command(), self._now_s(), fallback=True)
                except Exception:  # noqa: BLE001 - nothing safer left to do
                    pass
            self.ticks += 1
            took_s = time.perf_counter() - started
            # On the loop thread, lateness counts from the tick's due time: a thread starved by
            # other processes starts late and misses as surely as a slow tick. Misses are whole
            # deadlines of lateness, as the timing monitor counts whole deadlines of silence.
            loop = self._loop
            late_s = time.monotonic() - loop.due_s if loop is not None else took_s
            if late_s > self._deadline_s:  # counted always, logged at most once a second
                self.deadline_misses += max(1, int(late_s / self._deadline_s))
                if self._miss_log.due():
                    self._log.error(
                        f"action {late_s * 1e3:.2f} ms after its due time (tick took "
                        f"{took_s * 1e3:.2f} ms) > deadline {self._deadline_s * 1e3:.2f} ms "
                        f"({self.deadline_misses} misses in {self.ticks} ticks)")

    def _control_step(self, now_s: float) -> None:
        self._feed_inputs()
        obs = self._asm.build(now_s)
        policy = self._policy  # one read: a hot reload swaps this reference between ticks
        fault = input_fault(obs, self._cfg.max_input_age_s)
        command = None
        if fault is None:
            try:
                raw = policy(obs.vector)
            except Exception as exc:  # noqa: BLE001 - any runtime failure -> fallback
                fault = ("inference", f"inference failed: {exc}")
            else:
                try:
                    command = self._spec.action.postprocess(raw, out=self._command_buf)
                except ValueError as exc:
                    fault = ("action", f"policy output rejected: {exc}")
        if command is None:
            command = self._fallback.command()
        self._out.publish(command, self._echo_stamp(obs.stamp_s, now_s), fallback=fault is not None)
        # bookkeeping after the action is out
        if fault is None:
            self._fallback.remember_safe(command)
        self._report("policy", fault)
        self._asm.set_last_action(command)

    def _echo_stamp(self, stamp_s: Optional[float], now_s: float):
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
    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            if param.name == "model_path" and self._policy is not None:
                threading.Thread(target=self.reload, args=(param.value,), daemon=True,
                                 name="student_reload").start()
        return SetParametersResult(successful=True)

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

    def reload(self, path: Optional[str] = None) -> tuple[bool, str]:
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


def main(args=None) -> int:
    return spin_node(StudentNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
