"""timing_monitor_node: watches the policy's stamped echo and answers a missed deadline.

Latency = now - echo.header.stamp (sensor stamp -> action seen here); period and jitter from
echo arrival times; a watchdog (every min(control period, deadline / 2)) flags a deadline miss
when no action arrived within `deadline_s`, publishes the fallback command on `policy_command`
itself (the student's command topic) on every watchdog tick while the silence lasts, and after
`max_consecutive_misses` asks the student (`<student_node>/change_state`) to DEACTIVATE, once.
When actions resume it stops publishing and reports OK again. Fallbacks are counted both ways:
echoes the student flagged `fallback` (bad or stale input) and commands the monitor sent.

Outputs: `/diagnostics` (1 Hz, for rqt_robot_monitor) and numbers for rqt_plot: `~/latency_ms`
per action, `~/latency_p50_ms`, `~/latency_p99_ms`, `~/jitter_ms` at 1 Hz.

Cost matters: the monitor shares the robot computer with the student. Echoes (up to 500 Hz) and
the watchdog share one `TakeLoop` thread of a hidden helper node, so neither pays rclpy's
executor per wake-up, and the watchdog always looks after every echo that has arrived is read:
a monitor that was itself starved of CPU does not mistake its unread echoes for a silent
student. (Under use_sim_time the watchdog is an rclpy timer on the ROS clock.) One lock guards
the statistics shared with the 1 Hz diagnostics.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64

from policy_distill_ros.core.policy_file import read_metadata
from policy_distill_ros.core.spec import ActionSpec, load_policy_spec
from policy_distill_ros.core.timing import DeadlineCounter, LatencyStats, PeriodStats
from policy_distill_ros.nodes.policy_io import (FALLBACK_MODES, ActionPublisher, FallbackCommand,
                                               HotPathLog, LogThrottle, TakeLoop, header_stamp_s,
                                               hidden_helper_node, message_type_for)
from policy_distill_ros.nodes.ros_common import SENSOR_QOS, declare, spin_node, stamp_to_s

# Every echo counts (a dropped echo would look like a miss): reliable, a little depth.
ECHO_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=20,
                      reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTICS_PERIOD_S = 1.0
# A SIGKILLed student's service still looks ready until its DDS lease expires: bound the wait.
DEACTIVATE_TIMEOUT_S = 2.0


@dataclass
class MonitorConfig:
    """Monitor parameters, validated together; the action spec comes from a model or a spec."""

    model_path: str = ""
    spec_path: str = ""
    expected_rate_hz: float = 0.0
    deadline_s: float = 0.0
    fallback_mode: str = "hold_default"
    publish_fallback: bool = True
    max_consecutive_misses: int = 50
    student_node: str = "student_node"
    window_size: int = 1000
    latency_warn_ms: float = 5.0
    latency_error_ms: float = 20.0
    input_topics: str = ""

    def __post_init__(self) -> None:
        for name in ("model_path", "spec_path"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ValueError(f"parameter '{name}': no such file {path!r}")
        if self.fallback_mode not in FALLBACK_MODES:
            raise ValueError(f"parameter 'fallback_mode' is {self.fallback_mode!r}; expected one "
                             f"of {', '.join(FALLBACK_MODES)}")
        if self.expected_rate_hz < 0 or self.deadline_s < 0:
            raise ValueError("parameters expected_rate_hz and deadline_s must be >= 0")
        if self.max_consecutive_misses < 1 or self.window_size < 1:
            raise ValueError("parameters max_consecutive_misses and window_size must be >= 1")
        if not 0 < self.latency_warn_ms <= self.latency_error_ms:
            raise ValueError("need 0 < latency_warn_ms <= latency_error_ms")
        self.topics = [t.strip() for t in self.input_topics.split(",") if t.strip()]


def load_action_spec(cfg: MonitorConfig) -> tuple[Optional[ActionSpec], float]:
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
        values = {
            "model_path": declare(self, "model_path", "", "policy file: action spec + rate"),
            "spec_path": declare(self, "spec_path", "", "PolicySpec YAML, if no model_path"),
            "expected_rate_hz": declare(self, "expected_rate_hz", 0.0,
                                        "control rate; 0 = from the model", min_value=0.0),
            "deadline_s": declare(self, "deadline_s", 0.0, "no action for this long is a miss; "
                                  "0 = two control periods", min_value=0.0),
            "fallback_mode": declare(self, "fallback_mode", "hold_default",
                                     "command published on a miss", choices=FALLBACK_MODES),
            "publish_fallback": declare(self, "publish_fallback", True,
                                        "publish the fallback command on a miss"),
            "max_consecutive_misses": declare(self, "max_consecutive_misses", 50,
                                              "then deactivate the student once", min_value=1),
            "student_node": declare(self, "student_node", "student_node",
                                    "lifecycle node to deactivate (relative or absolute)"),
            "window_size": declare(self, "window_size", 1000, "latency window (actions)",
                                   min_value=1),
            "latency_warn_ms": declare(self, "latency_warn_ms", 5.0, "p99 above -> WARN",
                                       min_value=0.0),
            "latency_error_ms": declare(self, "latency_error_ms", 20.0, "p99 above -> ERROR",
                                        min_value=0.0),
            "input_topics": declare(self, "input_topics", "",
                                    "comma-separated sensor topics whose age is reported"),
        }
        self.cfg = MonitorConfig(**values)
        action, model_rate_hz = load_action_spec(self.cfg)
        self.rate_hz = self.cfg.expected_rate_hz or model_rate_hz
        if self.rate_hz <= 0:
            raise ValueError("no control rate: set expected_rate_hz or model_path/spec_path")
        self.deadline_s = self.cfg.deadline_s or 2.0 / self.rate_hz
        self.latency = LatencyStats(window=self.cfg.window_size)
        self.period = PeriodStats(window=self.cfg.window_size)
        self.deadline = DeadlineCounter(self.deadline_s)
        self._fallback = self._out = None
        if action is not None and self.cfg.publish_fallback:
            self._fallback = FallbackCommand(self.cfg.fallback_mode, action.default_pose,
                                             getattr(action, "lower", None),
                                             getattr(action, "upper", None))
            self._out = ActionPublisher(self, action.joints, echo_topic="~/fallback_action")
        elif self.cfg.publish_fallback:
            self.get_logger().warning("no model_path/spec_path: misses are reported but no "
                                      "fallback command can be published")
        self._ages: Dict[str, float] = {}
        self._misses_reported = 0    # deadline misses already summarised on /diagnostics
        self.student_fallbacks = 0   # echoes with frame_id "fallback": the student's own
        self.monitor_fallbacks = 0   # fallback commands published here on a missed deadline
        # True until the first action: a student still starting (its lifecycle service up, no
        # action yet) must not be deactivated for the misses counted before it began.
        self._deactivate_requested = True
        self._pending_deactivate = None  # (future, sent_s)
        self._lock = threading.Lock()
        sim_time = bool(self.get_parameter("use_sim_time").value)
        self._now_s = self._ros_now_s if sim_time else time.time
        self._latency_msg = Float64()
        self._log = HotPathLog(self.get_logger())  # logging from the echo/watchdog thread
        self._miss_log, self._resumed_log = LogThrottle(1.0), LogThrottle(1.0)
        for topic in self.cfg.topics:
            self.create_subscription(message_type_for(topic), topic,
                                     lambda msg, t=topic: self._on_input(t, msg), SENSOR_QOS)
        self._latency_pub = self.create_publisher(Float64, "~/latency_ms", 10)
        self._p50_pub = self.create_publisher(Float64, "~/latency_p50_ms", 10)
        self._p99_pub = self.create_publisher(Float64, "~/latency_p99_ms", 10)
        self._jitter_pub = self.create_publisher(Float64, "~/jitter_ms", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        student = self.cfg.student_node
        self._lifecycle = self.create_client(ChangeState, f"{student.rstrip('/')}/change_state")
        self._io = hidden_helper_node(self)
        echoes = self._io.create_subscription(JointState, self.resolve_topic_name("policy_action"),
                                              self._on_action, ECHO_QOS)
        watchdog_period_s = min(1.0 / self.rate_hz, 0.5 * self.deadline_s)
        if sim_time:
            self.create_timer(watchdog_period_s, self._watchdog)
        self._echo_loop = TakeLoop(
            self._io, [echoes], f"{self.get_name()}_echo",
            periodic=None if sim_time else (watchdog_period_s, self._watchdog)).start()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)
        self.get_logger().info(
            f"watching policy_action: {self.rate_hz:g} Hz, deadline {self.deadline_s * 1e3:.1f} "
            f"ms, fallback {'on' if self._out else 'off'}, deactivate '{student}' after "
            f"{self.cfg.max_consecutive_misses} consecutive misses")

    def _ros_now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def destroy_node(self) -> None:
        self._echo_loop.close()
        self._io.destroy_node()
        super().destroy_node()

    # ---- inputs ----------------------------------------------------------------------------
    def _on_action(self, msg: JointState) -> None:
        """Echo thread (TakeLoop)."""
        now_s = self._now_s()
        latency_s = now_s - stamp_to_s(msg.header.stamp)
        with self._lock:
            self.latency.add(latency_s)
            self.period.add(now_s)
            recovered = self.deadline.on_event(now_s)
            pending = self._pending_deactivate
            if pending is None or pending[0].done():  # not an echo in flight when we asked
                self._deactivate_requested = False
            if msg.header.frame_id == ActionPublisher.FALLBACK_FRAME:
                self.student_fallbacks += 1
        if recovered and self._resumed_log.due():
            self._log.info("actions resumed: deadline met again, fallback stopped")
        self._latency_msg.data = latency_s * 1e3
        self._latency_pub.publish(self._latency_msg)

    def _on_input(self, topic: str, msg) -> None:
        stamp = header_stamp_s(msg)
        if stamp is not None:
            self._ages[topic] = stamp

    # ---- the deadline ----------------------------------------------------------------------
    def _watchdog(self) -> None:
        """Echo thread (TakeLoop periodic; the executor under use_sim_time)."""
        with self._lock:
            now_s = self._now_s()
            new_miss = self.deadline.check(now_s)
            if not self.deadline.in_miss:
                return
            self._answer_miss(now_s, new_miss)

    def _answer_miss(self, now_s: float, new_miss: bool) -> None:
        if new_miss and self._miss_log.due():
            self._log.error(
                f"deadline miss: no action for {self.deadline.silence_s(now_s) * 1e3:.1f} ms "
                f"(deadline {self.deadline_s * 1e3:.1f} ms); consecutive "
                f"{self.deadline.consecutive}, total {self.deadline.misses}")
        if self._out is not None:
            self._out.publish(self._fallback.command(), now_s, fallback=True)
            self.monitor_fallbacks += 1
        if self.deadline.consecutive >= self.cfg.max_consecutive_misses \
                and not self._deactivate_requested:
            self._deactivate_requested = True
            self._request_deactivate()
        self._expire_deactivate_request()

    def _request_deactivate(self) -> None:
        name = self._lifecycle.srv_name
        if not self._lifecycle.service_is_ready():
            self._log.error(f"{self.deadline.consecutive} consecutive misses; could not "
                            f"deactivate the student: service {name} is not available")
            return
        self._log.error(f"{self.deadline.consecutive} consecutive misses: asking "
                        f"{name} to DEACTIVATE")
        request = ChangeState.Request()
        request.transition.id = Transition.TRANSITION_DEACTIVATE
        future = self._lifecycle.call_async(request)
        future.add_done_callback(self._on_deactivate_done)
        self._pending_deactivate = (future, time.monotonic())

    def _expire_deactivate_request(self) -> None:
        if self._pending_deactivate is None:
            return
        future, sent_s = self._pending_deactivate
        if future.done():
            self._pending_deactivate = None
        elif time.monotonic() - sent_s > DEACTIVATE_TIMEOUT_S:
            self._pending_deactivate = None
            self._lifecycle.remove_pending_request(future)
            future.cancel()
            self._log.error(f"could not deactivate the student: no answer from "
                                    f"{self._lifecycle.srv_name} within {DEACTIVATE_TIMEOUT_S:g} s")

    def _on_deactivate_done(self, future) -> None:
        if future.cancelled():
            return
        try:
            ok = future.result().success
        except Exception as exc:  # noqa: BLE001 - reported, never fatal
            self.get_logger().error(f"deactivate request failed: {exc}")
            return
        if ok:
            self.get_logger().warning("student deactivated")
        else:
            self.get_logger().error("student refused to deactivate")

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
        self._jitter_pub.publish(Float64(data=jitter_ms))

    def _diagnostics(self) -> DiagnosticArray:
        now_s = self._now_s()
        window = self.latency.window_percentiles()
        total = self.latency.total_percentiles()
        period = self.period.summary()
        level, message = self._status(window)
        values = {"actions": self.latency.count, "rate_hz": period["rate_hz"],
                  "period_mean_ms": period["mean_s"] * 1e3,
                  "jitter_ms": period["jitter_s"] * 1e3,
                  "deadline_ms": self.deadline_s * 1e3, "deadline_misses": self.deadline.misses,
                  "consecutive_misses": self.deadline.consecutive,
                  "student_fallbacks": self.student_fallbacks,
                  "monitor_fallbacks": self.monitor_fallbacks}
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
        self._jitter_ms = period["jitter_s"] * 1e3
        return array

    def _status(self, window) -> tuple[bytes, str]:
        # Misses since the previous report count too: a 1 Hz status that only sampled `in_miss`
        # could show OK throughout periodic blackouts (a CPU hog starving the student ~0.95 s
        # of every second, test_faults) because each sample fell into a short recovery.
        recent = self.deadline.misses - self._misses_reported
        self._misses_reported = self.deadline.misses
        if self.deadline.in_miss:
            return DiagnosticStatus.ERROR, (f"deadline missed: {self.deadline.consecutive} "
                                            "consecutive, fallback active")
        if recent:
            return DiagnosticStatus.ERROR, (f"{recent} deadline misses since the last report "
                                            f"({DIAGNOSTICS_PERIOD_S:g} s)")
        if not self.latency.count:
            return DiagnosticStatus.WARN, "no action received yet"
        p99_ms = window["p99"] * 1e3
        text = f"latency p99 {p99_ms:.2f} ms"
        if p99_ms > self.cfg.latency_error_ms:
            return DiagnosticStatus.ERROR, text + f" > {self.cfg.latency_error_ms:g} ms"
        if p99_ms > self.cfg.latency_warn_ms:
            return DiagnosticStatus.WARN, text + f" > {self.cfg.latency_warn_ms:g} ms"
        return DiagnosticStatus.OK, text


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main(args=None) -> int:
    return spin_node(TimingMonitorNode, args=args)


if __name__ == "__main__":
    sys.exit(main())
