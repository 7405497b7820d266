"""timing_monitor_node: the watchdog that enforces the policy's deadline (docs/enforcement.md).

It times the policy's stamped echo (`policy_action`) with one definition shared with the student
(core.enforcement): the deadline is the longest allowed gap between two actions (two control
periods, or two input periods when the inputs are slower), every whole deadline in a gap is a
miss. The first miss moves it from `nominal` to `fallback`: it publishes the fallback command on
`policy_command` on every watchdog tick and the student, hearing the state on
`policy_enforcement`, withholds its commands (echoes only), so the fallback holds without
alternation. `recovery_periods` consecutive on-time actions from good input return control to
the policy. With `escalation: latch` a fallback that reaches `max_consecutive_misses` misses
latches until `~/reset` is called (an e-stop); with `recover` it never latches.

The state is on `policy_enforcement` (std_msgs/String, latched), on `/diagnostics` (1 Hz, for
rqt_robot_monitor) and in the log, once per change. Numbers for rqt_plot: `~/latency_ms` per
action, `~/latency_p50_ms`, `~/latency_p99_ms`, `~/jitter_ms` at 1 Hz.

Its own stalls are not the student's misses: echoes are timed by their DDS source timestamp
(when the student published them), and before a silence is declared every echo that has arrived
is taken first (the watchdog runs on the echo thread after the reads, and drains again just
before it declares). A time jump (sim reset, stamps or /clock going back) restarts the
statistics. Cost matters (it shares the robot computer): echoes and watchdog share one
`TakeLoop` thread (its subscription sits on this node, out of the executor's wait set); under
use_sim_time the watchdog is an rclpy timer.
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger

from policy_distill_ros.core.contract import (
    POLICY_ACTION,
    POLICY_ENFORCEMENT,
    header_stamp_s,
    is_fallback_frame,
    is_withheld_frame,
    ns_to_s,
)
from policy_distill_ros.core.enforcement import (
    ESCALATIONS,
    LATCHED,
    NOMINAL,
    TIME_JUMP_S,
    TRIGGERS,
    DeadlineEnforcer,
    StateChange,
    input_periods_for,
)
from policy_distill_ros.core.fallback import FALLBACK_MODES, FallbackCommand
from policy_distill_ros.core.policy_file import read_metadata
from policy_distill_ros.core.spec import ActionSpec, load_policy_spec
from policy_distill_ros.core.timing import LatencyStats, PeriodStats
from policy_distill_ros.nodes.action_publisher import ActionPublisher
from policy_distill_ros.nodes.rclpy_internals import HotPathLog, LoopServed, TakeLoop
from policy_distill_ros.nodes.ros_common import (
    LATCHED_QOS,
    SENSOR_QOS,
    add_parameter_check,
    declare,
    require_choice,
    spin_node,
    stamp_to_s,
    warn_unknown_parameters,
)
from policy_distill_ros.nodes.topic_types import message_type_for

# Every echo counts (a dropped echo would look like a miss): reliable, and deep enough to hold
# 2 s of echoes at 500 Hz while this process is starved (the newest would push out the oldest).
ECHO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                      reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTICS_PERIOD_S = 1.0
# A latency further off than this is a clock mismatch (sim time against wall stamps), not a
# measurement: counted, not added to the statistics.
LATENCY_SANE_S = 60.0


@dataclass
class MonitorConfig:
    """Monitor parameters, validated together; the action spec comes from a model or a spec."""

    model_path: str = ""
    spec_path: str = ""
    expected_rate_hz: float = 0.0
    deadline_s: float = 0.0
    fallback_mode: str = "hold_default"
    publish_fallback: bool = True
    recovery_periods: int = 10
    escalation: str = "recover"
    max_consecutive_misses: int = 50
    student_node: str = "student_node"
    window_size: int = 1000
    latency_warn_ms: float = 5.0
    latency_error_ms: float = 20.0
    input_topics: str = ""
    trigger: str = "timer"

    def __post_init__(self) -> None:
        for name in ("model_path", "spec_path"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ValueError(f"parameter '{name}': no such file {path!r}")
        require_choice("fallback_mode", self.fallback_mode, FALLBACK_MODES)
        require_choice("trigger", self.trigger, TRIGGERS)
        require_choice("escalation", self.escalation, ESCALATIONS)
        if self.expected_rate_hz < 0 or self.deadline_s < 0:
            raise ValueError("parameters expected_rate_hz and deadline_s must be >= 0")
        if min(self.max_consecutive_misses, self.window_size, self.recovery_periods) < 1:
            raise ValueError("parameters max_consecutive_misses, window_size and "
                             "recovery_periods must be >= 1")
        if not 0 < self.latency_warn_ms <= self.latency_error_ms:
            raise ValueError("need 0 < latency_warn_ms <= latency_error_ms")
        self.topics = [t.strip() for t in self.input_topics.split(",") if t.strip()]


def load_action_spec(cfg: MonitorConfig) -> tuple[ActionSpec | None, float]:
    """Action spec and control rate from the policy file's metadata, else from a spec YAML."""
    if cfg.model_path:
        meta = read_metadata(cfg.model_path)
        return meta.action_spec, float(meta.rate_hz)
    if cfg.spec_path:
        spec = load_policy_spec(cfg.spec_path)
        return spec.action, float(spec.rate_hz)
    return None, 0.0


class TimingMonitorNode(Node):
    def __init__(self) -> None:
        super().__init__("timing_monitor_node")
        self._echo_loop = None
        fixed = {"read_only": True}  # read once at start: a change could only mislead
        values = {
            "model_path": declare(self, "model_path", "", "policy file: action spec + rate",
                                  **fixed),
            "spec_path": declare(self, "spec_path", "", "PolicySpec YAML, if no model_path",
                                 **fixed),
            "expected_rate_hz": declare(self, "expected_rate_hz", 0.0, "control rate; 0 = from "
                                        "the model", min_value=0.0, max_value=100000.0, **fixed),
            "deadline_s": declare(self, "deadline_s", 0.0, "longest allowed gap between two "
                                  "actions; 0 = two control periods (raised to two input "
                                  "periods when the inputs are slower)", min_value=0.0,
                                  max_value=3600.0, **fixed),
            "fallback_mode": declare(self, "fallback_mode", "hold_default",
                                     "command published in fallback", choices=FALLBACK_MODES,
                                     **fixed),
            "publish_fallback": declare(self, "publish_fallback", True,
                                        "publish the fallback command in fallback", **fixed),
            "recovery_periods": declare(self, "recovery_periods", 10, "consecutive on-time "
                                        "actions from good input that end a fallback",
                                        min_value=1, max_value=100000, **fixed),
            "escalation": declare(self, "escalation", "recover", "recover: a fallback always "
                                  "ends by itself once the policy is on time; latch: after "
                                  "max_consecutive_misses it latches until ~/reset",
                                  choices=ESCALATIONS, **fixed),
            "max_consecutive_misses": declare(self, "max_consecutive_misses", 50,
                                              "escalation latch: misses in one fallback that "
                                              "latch it", min_value=1, max_value=10_000_000,
                                              **fixed),
            "student_node": declare(self, "student_node", "student_node", "lifecycle node "
                                    "deactivated when the stop latches, activated on ~/reset "
                                    "(relative or absolute)", **fixed),
            "window_size": declare(self, "window_size", 1000, "latency window (actions)",
                                   min_value=1, max_value=1_000_000, **fixed),
            "latency_warn_ms": declare(self, "latency_warn_ms", 5.0, "p99 above -> WARN",
                                       min_value=0.001, max_value=1e6),
            "latency_error_ms": declare(self, "latency_error_ms", 20.0, "p99 above -> ERROR",
                                        min_value=0.001, max_value=1e6),
            "input_topics": declare(self, "input_topics", "", "comma-separated sensor topics "
                                    "whose age is reported", **fixed),
            "trigger": declare(self, "trigger", "timer", "the student's trigger: on_message "
                               "acts once per input, so the deadline follows the input period "
                               "(two input periods when slower than two control periods)",
                               choices=TRIGGERS, **fixed),
        }
        self.cfg = MonitorConfig(**values)
        add_parameter_check(self, "latency_warn_ms", lambda v: None if v <= self.get_parameter(
            "latency_error_ms").value else "must be <= latency_error_ms")
        add_parameter_check(self, "latency_error_ms", lambda v: None if v >= self.get_parameter(
            "latency_warn_ms").value else "must be >= latency_warn_ms")
        warn_unknown_parameters(self)
        try:
            action, model_rate_hz = load_action_spec(self.cfg)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: one line, exit 1
            raise ValueError(str(exc)) from None
        self.rate_hz = self.cfg.expected_rate_hz or model_rate_hz
        if self.rate_hz <= 0:
            raise ValueError("no control rate: set expected_rate_hz or model_path/spec_path")
        cfg = self.cfg
        self.enforcer = DeadlineEnforcer(cfg.deadline_s or 2.0 / self.rate_hz,
                                         input_periods=input_periods_for(cfg.trigger),
                                         recovery_periods=cfg.recovery_periods,
                                         escalation=cfg.escalation,
                                         latch_after_misses=cfg.max_consecutive_misses)
        self.latency = LatencyStats(window=cfg.window_size)
        self.period = PeriodStats(window=cfg.window_size)
        self._fallback = self._out = None
        if action is not None and cfg.publish_fallback:
            self._fallback = FallbackCommand(cfg.fallback_mode, action.default_pose,
                                             getattr(action, "lower", None),
                                             getattr(action, "upper", None))
            self._out = ActionPublisher(self, action.joints, echo_topic="~/fallback_action")
        elif cfg.publish_fallback:
            self.get_logger().warning("no model_path/spec_path: misses are reported but no "
                                      "fallback command can be published")
        self._ages: dict[str, float] = {}
        self._misses_reported = 0    # deadline misses already summarised on /diagnostics
        self.student_fallbacks = 0   # echoes flagged `fallback`: the student's own
        self.withheld = 0            # echoes flagged `withheld`: the student muted meanwhile
        self.monitor_fallbacks = 0   # fallback commands published here
        self.clock_mismatches = 0    # latencies beyond LATENCY_SANE_S, not in the statistics
        self.time_jumps = 0
        self.late_deliveries = 0     # declared silences that were echoes delivered late
        self._delivery_max_s = 0.0   # longest send-to-take delay since the last report
        self._silence_declared_s: float | None = None  # when the open silence fallback began
        self._last_stamp_s = -math.inf
        self._lock = threading.Lock()
        sim_time = bool(self.get_parameter("use_sim_time").value)
        self._sim_time = sim_time
        self._now_s = self._ros_now_s if sim_time else time.time
        self._latency_msg = Float64()
        self._log = HotPathLog(self.get_logger())  # logging from the echo/watchdog thread
        for topic in cfg.topics:
            self.create_subscription(message_type_for(topic), topic,
                                     lambda msg, t=topic: self._on_input(t, msg), SENSOR_QOS)
        self._latency_pub = self.create_publisher(Float64, "~/latency_ms", 10)
        self._p50_pub = self.create_publisher(Float64, "~/latency_p50_ms", 10)
        self._p99_pub = self.create_publisher(Float64, "~/latency_p99_ms", 10)
        self._jitter_pub = self.create_publisher(Float64, "~/jitter_ms", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Only a monitor that commands the fallback asks the student to give way: with
        # publish_fallback false (recording in a lockstep simulation) it only reports.
        self._state_pub = self.create_publisher(String, POLICY_ENFORCEMENT, LATCHED_QOS) \
            if self._out is not None else None
        self._state_msg = String(data=NOMINAL)
        if self._state_pub is not None:
            self._state_pub.publish(self._state_msg)
        self._last_state_publish = 0.0
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._lifecycle = self.create_client(
            ChangeState, f"{cfg.student_node.rstrip('/')}/change_state")
        # On this node (`ros2 node info` lists it), served by the echo thread, not the executor.
        echo_group = LoopServed()
        self._echo_sub = self.create_subscription(JointState, POLICY_ACTION, self._on_action,
                                                  ECHO_QOS, callback_group=echo_group)
        # The promise: the fallback starts within deadline + watchdog period (half the deadline)
        # of the last action. Half of that period is the margin for an echo still in flight (a
        # student sending just within the deadline sees no miss of its own: a fallback then
        # would be a monitor command on a healthy stream; delivery took >2.7 ms here under
        # load), the tick is the other half.
        self.watchdog_period_s = 0.5 * self.enforcer.base_deadline_s
        tick_s = 0.5 * self.watchdog_period_s
        self._last_tick_s, self._deferred = time.monotonic(), False
        self._tick_s = tick_s
        if sim_time:
            self.create_timer(tick_s, self._watchdog)
        self._echo_loop = TakeLoop(
            self, [self._echo_sub], f"{self.get_name()}_echo",
            periodic=None if sim_time else (tick_s, self._watchdog), group=echo_group).start()
        # Reported on the steady clock: a simulation whose time restarts every episode (or
        # pauses) must not silence /diagnostics.
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        follows = " (two input periods when slower)" if cfg.trigger == "on_message" else ""
        self.get_logger().info(
            f"watching policy_action: {self.rate_hz:g} Hz, deadline "
            f"{self.enforcer.base_deadline_s * 1e3:.1f} ms{follows}, fallback "
            f"{'on' if self._out else 'off'}, control back after {cfg.recovery_periods} on-time "
            f"actions, escalation {cfg.escalation}")

    def _ros_now_s(self) -> float:
        return ns_to_s(self.get_clock().now().nanoseconds)

    def destroy_node(self) -> None:
        if self._echo_loop is not None:
            self._echo_loop.close()
        super().destroy_node()

    # ---- inputs ----------------------------------------------------------------------------
    def _on_action(self, msg: JointState, info=None) -> None:
        """Echo thread (TakeLoop; `info`: the rmw message info with the source timestamp)."""
        now_s = self._now_s()
        sent_s = now_s
        source_ns = info.get("source_timestamp", 0) if isinstance(info, dict) else 0
        if source_ns > 0 and not self._sim_time:
            sent_s = ns_to_s(source_ns)  # when the student published: our stalls do not count
        stamp_s = stamp_to_s(msg.header.stamp)
        latency_s = now_s - stamp_s
        frame = msg.header.frame_id
        with self._lock:
            if stamp_s < self._last_stamp_s - TIME_JUMP_S:
                self._time_jump(f"echo stamps went back ({self._last_stamp_s:.3f} -> "
                                f"{stamp_s:.3f} s)")
            self._last_stamp_s = stamp_s
            if abs(latency_s) <= LATENCY_SANE_S:
                self.latency.add(latency_s)
            else:
                self.clock_mismatches += 1
            self.period.add(sent_s)
            self._delivery_max_s = max(self._delivery_max_s, now_s - sent_s)
            if self._silence_declared_s is not None and sent_s < self._silence_declared_s:
                self._late_delivery(sent_s, now_s, info)
            good = not is_fallback_frame(frame)
            if not good:
                self.student_fallbacks += 1
            is_withheld = is_withheld_frame(frame)
            self.withheld += is_withheld
            change = self.enforcer.on_action(sent_s, stamp_s, good)
            self._apply(change)
            if change is None and is_withheld and self.enforcer.state == NOMINAL:
                self._republish_state(now_s)  # a student that muted itself: tell it again
        if abs(latency_s) <= LATENCY_SANE_S:
            self._latency_msg.data = latency_s * 1e3
            self._latency_pub.publish(self._latency_msg)

    def _late_delivery(self, sent_s: float, now_s: float, info: dict | None) -> None:
        """Lock held. An echo sent before the silence fallback was declared is taken only now:
        what the watchdog saw as a silence was (at least partly) a delivery held up between
        the student and this node. Nothing here could have known sooner; the fallback ends by
        itself once enough on-time echoes are in. Said once per fallback, with the figures that
        tell where it was held (DDS's own reception time against the send time)."""
        self._silence_declared_s = None
        self.late_deliveries += 1
        received_ns = info.get("received_timestamp", 0) if isinstance(info, dict) else 0
        held = (f" (DDS received it after {(ns_to_s(received_ns) - sent_s) * 1e3:.1f} ms)"
                if received_ns > 0 else "")
        self._log.warning(f"late delivery: an echo sent before this fallback was declared was "
                          f"taken {(now_s - sent_s) * 1e3:.1f} ms after it was sent{held}; the "
                          "silence was (at least partly) in delivery, not in the policy")

    def _time_jump(self, why: str) -> None:
        """Lock held. Statistics restart: a sim reset must not leave absurd figures."""
        self.time_jumps += 1
        self.latency.reset()
        self.period = PeriodStats(window=self.cfg.window_size)
        self.enforcer.restart_timing()
        self._log.warning(f"time jump: {why}; latency and period statistics restarted")

    def _on_input(self, topic: str, msg) -> None:
        stamp = header_stamp_s(msg)
        if stamp is not None:
            self._ages[topic] = stamp

    # ---- the deadline ----------------------------------------------------------------------
    def _watchdog(self) -> None:
        """Echo thread (TakeLoop periodic, after every arrived echo was taken); the executor
        under use_sim_time."""
        now_s = self._now_s()
        tick_s = time.monotonic()
        late = tick_s - self._last_tick_s > 2.0 * self._tick_s
        self._last_tick_s = tick_s
        with self._lock:
            e = self.enforcer
            suspicious = e.state == NOMINAL and \
                e.silence_s(now_s - self._margin_s()) > e.deadline_s
        if suspicious:  # rare: take the echoes that arrived since the wait before declaring
            if late and not self._deferred:
                # This process was stalled itself: echoes sent meanwhile may still sit in the
                # socket; judge at the next tick, once DDS has delivered them.
                self._deferred = True
                return
            self._drain_echoes()
            now_s = self._now_s()
        self._deferred = False
        with self._lock:
            jumps = self.enforcer.time_jumps
            # A silence is judged half a watchdog period late: an echo sent just within the
            # deadline may still be in flight, and the student would not see its own miss.
            change = self.enforcer.check(now_s, self._margin_s())
            if change is not None and change.old == NOMINAL and not self._sim_time:
                self._silence_declared_s = now_s - self._margin_s()  # the silence judged to here
            self._apply(change)
            if self.enforcer.time_jumps != jumps:
                self._time_jump("the clock went back")
            if self.enforcer.state != NOMINAL and self._out is not None:
                self._out.publish(self._fallback.command(), now_s, fallback=True)
                self.monitor_fallbacks += 1

    def _margin_s(self) -> float:
        """How long an echo may be in flight: a quarter of the deadline in force."""
        return 0.25 * self.enforcer.deadline_s

    def _drain_echoes(self) -> None:
        if self._sim_time:
            return  # the executor thread: the echo thread takes them
        handle = self._echo_sub.handle
        try:
            taken = handle.take_message(JointState, False)
            while taken is not None:
                self._on_action(*taken)
                taken = handle.take_message(JointState, False)
        except Exception:  # noqa: BLE001 - shutting down: the watchdog check decides alone
            pass

    def _apply(self, change: StateChange | None) -> None:
        """Lock held: publish and log a state change, once."""
        if change is None:
            return
        self._state_msg = String(data=change.new)
        if self._state_pub is not None:
            self._state_pub.publish(self._state_msg)
        self._last_state_publish = time.monotonic()
        text = change.describe()
        if change.new == NOMINAL:
            self._silence_declared_s = None
            self._log.info(text)
        elif change.new == LATCHED:
            self._log.error(text + "; call ~/reset to release")
            self._change_student(Transition.TRANSITION_DEACTIVATE, "deactivate")
        else:
            self._log.error(text + ("; publishing the fallback, the policy is muted"
                                    if self._out is not None else ""))

    def _republish_state(self, now_s: float) -> None:
        if self._state_pub is not None and \
                time.monotonic() - self._last_state_publish >= self.enforcer.deadline_s:
            self._last_state_publish = time.monotonic()
            self._state_pub.publish(self._state_msg)

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        with self._lock:
            change = self.enforcer.reset()
            self._apply(change)
            state = self.enforcer.state
        if change is not None:
            self._change_student(Transition.TRANSITION_ACTIVATE, "activate")
        response.success = change is not None
        response.message = (f"released: {state} until the policy is on time for "
                            f"{self.cfg.recovery_periods} actions" if change is not None else
                            f"nothing to reset: the state is {state}")
        return response

    def _change_student(self, transition: int, what: str) -> None:
        """Ask the student's lifecycle to `what` (an e-stop stops the policy; a reset starts it
        muted). Best effort: a dead student is answered by the fallback anyway."""
        if not self._lifecycle.service_is_ready():
            self._log.warning(f"cannot {what} the student: {self._lifecycle.srv_name} is not "
                              "available")
            return
        request = ChangeState.Request()
        request.transition.id = transition
        future = self._lifecycle.call_async(request)
        future.add_done_callback(lambda f: self._on_student_changed(f, what))

    def _on_student_changed(self, future, what: str) -> None:
        try:
            ok = future.result().success
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            self.get_logger().warning(f"{what} request failed: {exc}")
            return
        if ok:
            self.get_logger().info(f"student {what}d")
        else:
            self.get_logger().warning(f"student refused to {what} (already in that state?)")

    # ---- reporting -------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        with self._lock:
            array = self._diagnostics()
            p50_ms, p99_ms = self._p50_ms, self._p99_ms
            jitter_ms, count = self._jitter_ms, self.latency.count
        self._diag_pub.publish(array)
        if count:
            self._p50_pub.publish(Float64(data=p50_ms))
            self._p99_pub.publish(Float64(data=p99_ms))
        if math.isfinite(jitter_ms):
            self._jitter_pub.publish(Float64(data=jitter_ms))

    def _diagnostics(self) -> DiagnosticArray:
        now_s = self._now_s()
        window = self.latency.window_percentiles()
        total = self.latency.total_percentiles()
        period = self.period.summary()
        level, message = self._status(window)
        e = self.enforcer
        values = {"state": e.state, "actions": self.latency.count, "rate_hz": period["rate_hz"],
                  "period_mean_ms": period["mean_s"] * 1e3,
                  "jitter_ms": period["jitter_s"] * 1e3,
                  "deadline_ms": e.deadline_s * 1e3, "deadline_misses": e.misses,
                  "consecutive_misses": e.open_misses, "fallback_misses": e.fallback_misses,
                  "on_time_streak": e.on_time_streak,
                  "student_fallbacks": self.student_fallbacks, "withheld": self.withheld,
                  "monitor_fallbacks": self.monitor_fallbacks, "time_jumps": self.time_jumps,
                  "late_deliveries": self.late_deliveries,
                  "delivery_delay_max_ms": self._delivery_max_s * 1e3,
                  "clock_mismatches": self.clock_mismatches}
        for key, value in window.items():
            values[f"latency_{key}_ms_window"] = value * 1e3
        for key, value in total.items():
            values[f"latency_{key}_ms_total"] = value * 1e3
        for topic, stamp in sorted(self._ages.items()):
            values[f"input_age_ms:{topic}"] = (now_s - stamp) * 1e3
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: policy timing",
                                  message=message, hardware_id="policy_distill_ros")
        status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._p50_ms, self._p99_ms = window["p50"] * 1e3, window["p99"] * 1e3
        self._delivery_max_s = 0.0  # a maximum per report, not since start
        self._jitter_ms = period["jitter_s"] * 1e3
        return array

    def _status(self, window) -> tuple[bytes, str]:
        # Misses since the previous report count too: a 1 Hz status that only sampled the state
        # could show OK throughout periodic blackouts that each recovered before the sample.
        e = self.enforcer
        recent = e.misses - self._misses_reported
        self._misses_reported = e.misses
        if e.state == LATCHED:
            return DiagnosticStatus.ERROR, ("latched: fallback held until ~/reset "
                                            f"({e.fallback_misses} misses)")
        if e.state != NOMINAL:
            return DiagnosticStatus.ERROR, (f"fallback: deadline missed ({e.fallback_misses} "
                                            f"misses), policy on time for {e.on_time_streak}/"
                                            f"{e.recovery_periods} actions")
        if recent > 0:
            return DiagnosticStatus.ERROR, (f"{recent} deadline misses since the last report "
                                            f"({DIAGNOSTICS_PERIOD_S:g} s)")
        if not self.latency.count:
            return DiagnosticStatus.WARN, "no action received yet"
        p99_ms = window["p99"] * 1e3
        text = f"nominal, latency p99 {p99_ms:.2f} ms"
        error_ms = self.get_parameter("latency_error_ms").value
        warn_ms = self.get_parameter("latency_warn_ms").value
        if p99_ms > error_ms:
            return DiagnosticStatus.ERROR, text + f" > {error_ms:g} ms"
        if p99_ms > warn_ms:
            return DiagnosticStatus.WARN, text + f" > {warn_ms:g} ms"
        return DiagnosticStatus.OK, text


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main(args=None) -> int:
    return spin_node(TimingMonitorNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
